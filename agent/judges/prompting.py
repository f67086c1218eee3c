"""Prompt rendering, untrusted-text containment, the answer JSON schemas and answer parsing.

Prompts are the files `prompts/{label,detect}_{system,user}.md`, filled with `string.Template`
(`$name` placeholders; substituted values are never re-interpreted, so corpus text containing `$`
or braces is inert). Corpus text is untrusted: each example goes inside its own
`<example id=N>` ... `</example>` block, and `contain()` first defuses anything inside it that
could pass for a delimiter or a chat-template control token.
"""

from __future__ import annotations

import copy
import json
import re
import string
from functools import cache
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from latentdiff.agent.judges.taxonomy import Taxonomy
from latentdiff.prompts import read_prompt
from latentdiff.records import ExampleText, LatentLabel

MAX_EXAMPLE_CHARS = 2000
# Tags we use as delimiters (and chat-ish role tags) in any case/spacing, with look-alike brackets.
_TAG_RE = re.compile(
    r"[<\uff1c\u2039\u27e8]\s*(/?)\s*(examples?|explanation|system|user|assistant)\b", re.IGNORECASE
)
_SPECIAL_RE = re.compile(r"<\|([^|<>\n]{0,40})\|>")  # chat special tokens such as <|end|>
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MARK_RE = re.compile(r"<<(.+?)>>", re.DOTALL)


# --------------------------------------------------------------------------- containment


def contain(text: str, limit: int = MAX_EXAMPLE_CHARS) -> str:
    """Make untrusted text safe to place inside an `<example>` block.

    `<example`, `</example>`, `<system>`... become `&lt;example`, ... (so the only real delimiters
    in a prompt are ours); chat special tokens `<|x|>` become `‹|x|›` (readable, but no tokenizer
    parses them as control tokens); control characters other than tab/newline are dropped; the
    text is cut at `limit` characters.
    """
    text = _CONTROL_RE.sub("", text)
    text = _SPECIAL_RE.sub(lambda m: f"\u2039|{m.group(1)}|\u203a", text)
    text = _TAG_RE.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}", text)
    if len(text) > limit:
        text = text[:limit] + " [...]"
    return text


def unmark(text: str) -> str:
    """Remove delphi `<<...>>` activation marks."""
    return _MARK_RE.sub(r"\1", text)


def marked_spans(text: str) -> list[str]:
    """The `<<...>>`-marked spans of an example, in order."""
    return [m.strip() for m in _MARK_RE.findall(text) if m.strip()]


def example_blocks(texts: list[str], start: int = 1) -> str:
    """Number and wrap texts as `<example id=N>` blocks; '(none)' when empty."""
    if not texts:
        return "(none)"
    return "\n".join(f"<example id={i}>\n{contain(t)}\n</example>" for i, t in enumerate(texts, start))


# --------------------------------------------------------------------------- rendering


@cache
def _template(name: str) -> string.Template:
    return string.Template(read_prompt(name).rstrip("\n"))


def render(name: str, **values: object) -> str:
    """Fill the bundled prompt `name` (e.g. 'label_user.md'); a missing value is a KeyError."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})


def render_taxonomy(taxonomy: Taxonomy) -> str:
    """The taxonomy as a bullet list for the system prompt."""
    lines = []
    for c in taxonomy.categories:
        subs = f" Subcategories: {', '.join(c.subcategories)}." if c.subcategories else ""
        lines.append(f"- {c.name}: {' '.join(c.description.split())}{subs}")
    return "\n".join(lines)


def label_messages(
    top: list[ExampleText],
    quantile: list[ExampleText],
    negative: list[ExampleText],
    taxonomy: Taxonomy,
    contrast: str | None = None,
    hard_negatives: bool = False,
) -> list[dict[str, str]]:
    """System + user chat messages asking for a label (examples keep their <<marks>>).

    `contrast` (refinement rounds only) is latentdiff's own per-model numbers for the latent; it is
    appended in a `<model_contrast>` block with its explanation (prompts/label_contrast.md).
    """
    system = render(
        "label_system.md",
        taxonomy=render_taxonomy(taxonomy),
        category_names=", ".join(f'"{n}"' for n in taxonomy.names),
    )
    n_top, n_q = len(top), len(quantile)
    user = render(
        "label_user.md",
        top=example_blocks([e.text for e in top], 1),
        quantile=example_blocks([e.text for e in quantile], n_top + 1),
        # negatives never fire: show them unmarked
        negative=example_blocks([unmark(e.plain or e.text) for e in negative], n_top + n_q + 1),
    )
    if hard_negatives:
        user += "\n\n" + render("label_hard_negatives.md")
    if contrast:
        user += "\n\n" + render("label_contrast.md", contrast=contrast)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def explanation_text(label: LatentLabel) -> str:
    """What a detection judge is told about the latent."""
    return contain(f"{label.name}: {label.description}", limit=1500)


def detect_messages(label: LatentLabel, examples: list[ExampleText]) -> list[dict[str, str]]:
    """System + user messages for delphi detection over UNMARKED example texts."""
    n = len(examples)
    system = render("detect_system.md", n=n)
    user = render(
        "detect_user.md",
        explanation=explanation_text(label),
        examples=example_blocks([unmark(e.plain or e.text) for e in examples]),
        n=n,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------- schemas + parsing

_ANSWER_FIELDS = [n for n in LatentLabel.model_fields if n != "judge"]

# What a judge may answer: LatentLabel without `judge`, unknown keys rejected.
LabelAnswer = create_model(  # type: ignore[call-overload]
    "LabelAnswer",
    __config__=ConfigDict(extra="forbid"),
    **{n: (LatentLabel.model_fields[n].annotation, LatentLabel.model_fields[n]) for n in _ANSWER_FIELDS},
)


def _strip_meta(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_meta(v) for k, v in node.items() if k not in ("title", "default")}
    if isinstance(node, list):
        return [_strip_meta(v) for v in node]
    return node


def label_schema(taxonomy: Taxonomy, budget_chars: int | None = None) -> dict[str, Any]:
    """JSON schema of a label answer, derived from `LatentLabel` (minus `judge`).

    Every key is required (`subcategory` may be null), unknown keys are forbidden, `category` is
    an enum of the taxonomy names and evidence items get a length cap. `budget_chars` shrinks the
    string caps so that a complete answer fits the judge's token budget: the HTTP judge passes
    2 x max_tokens, so a grammar-constrained decoder closes the object in time whenever its
    tokens average >= 2 characters (real models: ~4; checked with the 4.5M organism on vLLM).
    """
    base = _strip_meta(copy.deepcopy(LabelAnswer.model_json_schema()))
    props = base["properties"]
    props["category"] = {"type": "string", "enum": list(taxonomy.names), "description": "Category."}
    props["evidence"]["items"] = {"type": "string", "minLength": 1, "maxLength": 80}
    if budget_chars is not None:
        b = max(budget_chars, 160)
        props["name"]["maxLength"] = min(80, max(16, b // 10))
        props["description"]["maxLength"] = min(1200, max(40, b // 3))
        props["subcategory"]["anyOf"][0]["maxLength"] = min(80, max(16, b // 10))
        props["evidence"]["maxItems"] = min(12, max(1, b // 240))
        props["evidence"]["items"]["maxLength"] = min(80, max(8, b // 24))
    return {
        "type": "object",
        "properties": {k: props[k] for k in _ANSWER_FIELDS},
        "required": list(_ANSWER_FIELDS),
        "additionalProperties": False,
    }


def detect_schema(n: int) -> dict[str, Any]:
    """JSON schema of a detection answer: exactly `n` 0/1 integers."""
    return {
        "type": "object",
        "properties": {
            "answers": {
                "type": "array",
                "items": {"type": "integer", "enum": [0, 1]},
                "minItems": n,
                "maxItems": n,
            }
        },
        "required": ["answers"],
        "additionalProperties": False,
    }


class AnswerError(ValueError):
    """An answer that is not valid JSON of the expected shape (the message is one line)."""


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "<root>"
    return f"{loc}: {e['msg']}"


def load_json_object(text: str, *, search: bool = False) -> dict[str, Any]:
    """Parse a JSON object (raw control characters allowed inside strings, as xgrammar emits).

    With `search`, the first `{...}` object anywhere in the text is taken (chatty local models).
    """
    start = 0
    if search:
        start = text.find("{")
        if start < 0:
            raise AnswerError("no JSON object in the answer")
    try:
        if search:
            obj, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
        else:
            obj = json.loads(text, strict=False)
    except json.JSONDecodeError as err:
        raise AnswerError(f"unparseable JSON: {err.msg} at char {err.pos}") from None
    if not isinstance(obj, dict):
        raise AnswerError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_label(data: dict[str, Any], taxonomy: Taxonomy, spec: str) -> LatentLabel:
    """Validate a parsed answer into a LatentLabel (extra keys, bad category: AnswerError)."""
    try:
        answer = LabelAnswer.model_validate(data)
    except ValidationError as err:
        raise AnswerError(_first_error(err)) from None
    fields = answer.model_dump()
    fields["evidence"] = [e.strip() for e in fields["evidence"] if e.strip()]
    label = LatentLabel(**fields, judge=spec)
    try:
        return taxonomy.check(label)  # accepts 'Self Reference', 'instruction-following', ...
    except ValueError:
        raise AnswerError(f"category {label.category!r} not in taxonomy") from None


def parse_detection(data: dict[str, Any], n: int) -> list[bool]:
    """Validate `{"answers": [0/1 x n]}` into booleans."""
    if set(data) != {"answers"}:
        raise AnswerError(f"expected exactly the key 'answers', got {sorted(data)}")
    answers = data["answers"]
    if not isinstance(answers, list) or len(answers) != n:
        got = len(answers) if isinstance(answers, list) else type(answers).__name__
        raise AnswerError(f"expected {n} answers, got {got}")
    out = []
    for a in answers:
        if a not in (0, 1) or isinstance(a, float):
            raise AnswerError(f"answers must be 0 or 1, got {a!r}")
        out.append(bool(a))
    return out
