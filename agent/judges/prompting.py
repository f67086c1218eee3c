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
# chat special tokens such as <|end|>, <|im_start|>, <|eot_id|>, DeepSeek's <｜begin▁of▁sentence｜>
_SPECIAL_RE = re.compile(r"<[|\uff5c]([^|\uff5c<>\n]{0,40})[|\uff5c]>")
# bare tag-like template tokens: <start_of_turn>, </s>, <s>, <bos>, <eos>, <think> ... (with the brackets
# around them: exactly `<<word>>` is an activation mark, `<<<s>>>` a marked `<s>`)
_ANGLE_TOKEN_RE = re.compile(r"(<*)<(/?[A-Za-z_][\w.\-]{0,40})>(>*)")
# bracketed upper-case control tokens (Mistral, Llama 2): [INST], [/INST], [SYSTEM_PROMPT], [TOOL_CALLS] ...
_BRACKET_TOKEN_RE = re.compile(r"\[(/?[A-Z][A-Z_]{1,30})\]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MARK_RE = re.compile(r"<<(.+?)>>", re.DOTALL)
_LITERAL_MARKS = re.compile(r"<{2,}|>{2,}")
MARK_OPEN, MARK_CLOSE = "<<", ">>"


# --------------------------------------------------------------------------- containment


def _defuse(text: str) -> str:
    """Control characters dropped, our delimiters escaped, chat-template tokens given look-alike brackets."""
    text = _CONTROL_RE.sub("", text)
    text = _SPECIAL_RE.sub(lambda m: f"\u2039|{m.group(1)}|\u203a", text)
    text = _TAG_RE.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}", text)
    text = _ANGLE_TOKEN_RE.sub(
        lambda m: m.group(0) if (m.group(1), m.group(3)) == ("<", ">")
        else f"{m.group(1)}\u2039{m.group(2)}\u203a{m.group(3)}",
        text,
    )
    return _BRACKET_TOKEN_RE.sub(lambda m: f"\uff3b{m.group(1)}\uff3d", text)


def _literal_marks(text: str) -> str:
    """`<<` / `>>` that are not ours (corpus text) as `‹‹` / `››`, so they cannot pass for a highlight."""
    return _LITERAL_MARKS.sub(lambda m: ("\u2039" if m.group(0)[0] == "<" else "\u203a") * len(m.group(0)), text)


def _split_marks(text: str, plain: str) -> list[tuple[bool, str]] | None:
    """`text` (= `plain` with `<<`/`>>` activation marks inserted) as [(is_mark, piece)], or None if it is not.

    Greedy: a character that continues `plain` is plain text, otherwise `<<`/`>>` must be a mark. Runs of
    `<`/`>` are all alike, so taking plain characters first still finds the right number of marks."""
    out: list[tuple[bool, str]] = []
    i = j = 0
    lit: list[str] = []
    while i < len(text):
        if j < len(plain) and text[i] == plain[j]:
            lit.append(text[i])
            i, j = i + 1, j + 1
        elif text.startswith(MARK_OPEN, i) or text.startswith(MARK_CLOSE, i):
            out.append((False, "".join(lit)))
            out.append((True, text[i : i + 2]))
            lit, i = [], i + 2
        else:
            return None
    if j != len(plain):
        return None
    out.append((False, "".join(lit)))
    return out


def contain(text: str, limit: int = MAX_EXAMPLE_CHARS, plain: str | None = None) -> str:
    """Make untrusted text safe to place inside an `<example>` block.

    `<example`, `</example>`, `<system>`... become `&lt;example`, ... (so the only real delimiters
    in a prompt are ours); chat special and template tokens (`<|x|>`, `<start_of_turn>`, `</s>`,
    `<<SYS>>`, `[INST]`, ...) get look-alike brackets (`‹|x|›`, `‹start_of_turn›`, `［INST］`: readable, but
    no tokenizer parses them as control tokens); control characters other than tab/newline are dropped;
    the text is cut at `limit` characters.

    `plain`: the text without activation marks. Then only the marks latentdiff inserted stay `<<`/`>>`;
    a literal `<<` or `>>` of the corpus becomes `‹‹`/`››`, so it cannot fake a highlight (pass the plain
    text itself for an unmarked example). Without `plain`, every `<<`/`>>` is taken as a mark.
    """
    text = _defuse(text)
    if plain is not None:
        pieces = _split_marks(text, _defuse(plain))
        if pieces is not None:  # else not plain + marks: every << >> is kept as a mark
            text = "".join(p if is_mark else _literal_marks(p) for is_mark, p in pieces)
    if len(text) > limit:
        text = text[:limit] + " [...]"
    return text


def unmark(text: str) -> str:
    """Remove delphi `<<...>>` activation marks."""
    return _MARK_RE.sub(r"\1", text)


def marked_spans(text: str) -> list[str]:
    """The `<<...>>`-marked spans of an example, in order."""
    return [m.strip() for m in _MARK_RE.findall(text) if m.strip()]


def example_blocks(texts: list[str], start: int = 1, plains: list[str] | None = None) -> str:
    """Number and wrap texts as `<example id=N>` blocks; '(none)' when empty.

    `plains`: each text without marks (see `contain`); literal `<<`/`>>` in the corpus are then neutralised."""
    if not texts:
        return "(none)"
    plain = plains or [None] * len(texts)
    return "\n".join(
        f"<example id={i}>\n{contain(t, plain=p)}\n</example>" for i, (t, p) in enumerate(zip(texts, plain), start)
    )


def _unmarked(e: ExampleText) -> str:
    """An example's text without activation marks (its `plain` text when known)."""
    return e.plain or unmark(e.text)


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
        top=example_blocks([e.text for e in top], 1, [_unmarked(e) for e in top]),
        quantile=example_blocks([e.text for e in quantile], n_top + 1, [_unmarked(e) for e in quantile]),
        # negatives never fire: show them unmarked (every << >> in them is the corpus's own)
        negative=example_blocks([_unmarked(e) for e in negative], n_top + n_q + 1, [_unmarked(e) for e in negative]),
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
        examples=example_blocks([_unmarked(e) for e in examples], 1, [_unmarked(e) for e in examples]),
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
