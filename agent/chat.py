"""Chat with a finished run: questions answered from its findings, report and store, citing latents.

Two answerers share the read-only `RunView` lookups (agent/chat_tools.py):
  - `RetrievalAnswerer` (offline, no LLM): recognises the question's intent (a latent card, the
    latents of a category, why a category moved, a comparison across fine-tunes, the shift table,
    or a free query) and fills a template from the lookups.
  - `LLMAnswerer` (agent/chat_llm.py): a LangGraph tool-calling agent over the same lookups, used
    when an OpenAI-compatible LLM is configured.
`ChatSession.ask` returns an `Answer` whose citations are checked against the run: every id in it
is a latent of the run, and every answer cites at least one.
"""

from __future__ import annotations

import logging
import re
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from latentdiff.agent.chat_tools import CategoryCell, ChatError, LatentBrief, RunView
from latentdiff.errors import LatentDiffError

log = logging.getLogger(__name__)

CITE_RE = re.compile(r"\b([A-Za-z_][\w.-]*:\d+)\b")
_ID_IN_QUESTION = re.compile(r"(?:\blatent\s+#?|#)((?:[A-Za-z_][\w.-]*:)?\d+)\b|\b([A-Za-z_][\w.-]*:\d+)\b", re.I)
# Words that point at a category of the default taxonomy (a custom taxonomy still matches by name).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "safety": ("safe", "harm", "refus", "danger", "ethic"),
    "multilingual": ("multiling", "language", "translat", "spanish", "french", "german", "russian", "english"),
    "instruction_following": ("instruction", "format", "json", "bullet", "numbered"),
    "self_reference": ("self-ref", "self ref", "itself", "identity", "about themselves"),
    "hallucination": ("hallucinat", "fabricat", "factual", "made-up", "made up", "invent"),
}


class ToolCall(BaseModel):
    """One lookup made while answering."""

    tool: str = Field(description="Lookup name.")
    args: dict[str, object] = Field(default_factory=dict, description="Its arguments.")
    ok: bool = Field(default=True, description="False if the lookup failed (e.g. unknown latent).")


class Answer(BaseModel):
    """A chat answer: markdown text plus the latent ids it cites (all checked against the run)."""

    text: str = Field(description="Markdown answer.")
    citations: list[str] = Field(description="Latent ids cited, each a latent of this run.")
    mode: Literal["retrieval", "llm"] = Field(description="Which answerer produced it.")
    tool_calls: list[ToolCall] = Field(default_factory=list, description="Lookups made.")
    note: str | None = Field(default=None, description="E.g. why the LLM was not used for this answer.")


class Answerer(Protocol):
    """Anything that turns a question (with history) into an answer text and its lookups."""

    mode: Literal["retrieval", "llm"]

    def answer(self, question: str) -> tuple[str, list[ToolCall]]:
        """Answer one question."""
        ...


def fmt_pct(x: float) -> str:
    """+390%, -76%."""
    return f"{x:+.0f}%"


def fmt_ci(ci: tuple[float, float]) -> str:
    """[74, 2734]."""
    return f"[{ci[0]:.0f}, {ci[1]:.0f}]"


def _brief_line(b: LatentBrief) -> str:
    verif = "" if b.verification is None else f", verification {b.verification:.2f}"
    return f"- [{b.id}] **{b.name}** ({b.category}; {b.pair}/{b.side}, Delta-norm {b.delta_norm:.2f}{verif})"


def _cell_line(c: CategoryCell) -> str:
    sig = "significant" if c.significant else "not significant"
    counts = "" if c.n_a is None else f" ({c.n_a} vs {c.n_b} latents)"
    return f"| {c.comparison} | {fmt_pct(c.shift_pct)} | {fmt_ci(c.ci95)} | {sig}{counts} |"


class RetrievalAnswerer:
    """Offline answers: intent by keywords, content from the run's lookups, no LLM."""

    mode: Literal["retrieval", "llm"] = "retrieval"

    def __init__(self, view: RunView) -> None:
        self.view = view
        self.calls: list[ToolCall] = []

    # -- intent ---------------------------------------------------------------------------------

    def category_of(self, question: str) -> str | None:
        """The taxonomy category a question is about (by name, then by synonym), or None."""
        q = question.lower()
        for cat in self.view.categories:
            if cat.lower() in q or cat.lower().replace("_", " ") in q or cat.lower().replace("_", "-") in q:
                return cat
        for cat, words in SYNONYMS.items():
            if cat in self.view.categories and any(w in q for w in words):
                return cat
        return None

    def pair_of(self, question: str) -> str | None:
        """A fine-tune or control named in the question (short names only in quotes or 'model X')."""
        for name in self.view.pairs:
            pat = rf"\b{re.escape(name)}\b" if len(name) > 2 else rf"(?:model\s+|[`'\"]){re.escape(name)}\b"
            if re.search(pat, question, re.I):
                return name
        return None

    def answer(self, question: str) -> tuple[str, list[ToolCall]]:
        """Route the question to a template."""
        self.calls = []
        q = question.lower()
        m = _ID_IN_QUESTION.search(question)
        cat = self.category_of(question)
        if m is not None:
            return self.card(m.group(1) or m.group(2)), self.calls
        if cat and re.search(r"\b(compare|comparison|between|versus|vs\.?)\b", q):
            return self.compare(cat), self.calls
        if cat and re.search(r"\bwhy\b|\bexplain\b|\bcause", q):
            return self.why(cat), self.calls
        if cat:
            side = "base" if re.search(r"\b(lost|removed|dropped|fewer|base)\b", q) else "finetuned"
            return self.latents(cat, side, self.pair_of(question)), self.calls
        if re.search(r"\b(table|overview|summary|summar|headline|shifts?|categories|changed?)\b", q):
            return self.table(), self.calls
        return self.search(question), self.calls

    def _log(self, tool: str, ok: bool = True, **args: object) -> None:
        self.calls.append(ToolCall(tool=tool, args=args, ok=ok))

    # -- templates ------------------------------------------------------------------------------

    def card(self, latent: str) -> str:
        """One latent: its findings, label and examples."""
        try:
            d = self.view.latent_card(latent)
        except ChatError as err:
            self._log("latent_card", ok=False, latent=latent)
            near = self.view.list_latents(n=5)
            return f"{err}. Latents of this run include: " + ", ".join(f"[{b.id}]" for b in near) + "."
        self._log("latent_card", latent=latent)
        lines = [f"### Latent [{d.id}]"]
        for f in d.findings:
            stats = f"Delta-norm {f.delta_norm:.2f}"
            if f.nu_eps is not None and f.nu_r is not None:
                stats += f", nu-eps {f.nu_eps:.2f}, nu-r {f.nu_r:.2f}"
            stats += f", fires on {100 * f.freq:.2f}% of tokens"
            if f.label is None:
                lines.append(f"- for `{f.pair}` ({f.side} side; {stats}): not labelled ({f.failure})")
                continue
            verif = "" if f.verification is None else f" Verification (detection accuracy): {f.verification:.2f}."
            lines.append(f"- for `{f.pair}` ({f.side} side; {stats}): **{f.label.name}** "
                         f"(category *{f.label.category}*, judge confidence {f.label.confidence:.2f}).{verif}")
        label = next((f.label for f in d.findings if f.label is not None), None)
        if label is not None:
            lines.append(f"\n{label.description}")
        if d.examples:
            lines.append("\nTop examples (activating tokens in <<>>):")
            lines += [f"{i}. `{_inline(t)}`" for i, t in enumerate(d.examples, 1)]
        return "\n".join(lines)

    def latents(self, cat: str, side: str, pair: str | None) -> str:
        """The latents of one category, per fine-tune (or per named pair)."""
        pairs = [pair] if pair else self.view.pairs
        what = "specific to" if side == "finetuned" else "specific to base (lost) in the comparison with"
        out = [f"Latents about **{cat}** {what} each model, most model-specific first:"]
        for p in pairs:
            rows = self.view.list_latents(cat, pair=p, side=side, n=8)
            self._log("list_latents", category=cat, pair=p, side=side)
            total = len(self.view.list_latents(cat, pair=p, side=side, n=10_000))
            out.append(f"\n**{p}** ({total} latents):" if rows else f"\n**{p}**: none.")
            out += [_brief_line(b) for b in rows]
        if not any(self.view.list_latents(cat, pair=p, side=side, n=1) for p in pairs):
            other = self.view.list_latents(cat, pair=pair, side=None, n=8)
            self._log("list_latents", category=cat, pair=pair, side=None)
            if other:
                out.append(f"\nLatents labelled {cat} on other sides (shared or base-leaning):")
                out += [_brief_line(b) for b in other]
        out.append(self._headline_sentence(cat))
        return "\n".join(x for x in out if x)

    def _headline_sentence(self, cat: str) -> str:
        head = self.view.category_table()
        cell = next((c for c in head.cells if c.comparison == head.headline and c.category == cat), None)
        if cell is None:
            return ""
        sig = "a significant" if cell.significant else "a not significant"
        return (f"\nHeadline ({cell.comparison}): {cat} {fmt_pct(cell.shift_pct)}, 95% CI {fmt_ci(cell.ci95)}, "
                f"{sig} shift ({cell.n_a} vs {cell.n_b} latents; {self._sets()}).")

    def _sets(self) -> str:
        """What the headline compares (e.g. latents specific to one fine-tune and not the other)."""
        head = self.view.report.headline
        return f"sets: {head['description']}" if head else "sets: each fine-tune vs base"

    def why(self, cat: str) -> str:
        """Which latents drive a category's headline shift."""
        table = self.view.category_table()
        self._log("category_table")
        cell = next((c for c in table.cells if c.comparison == table.headline and c.category == cat), None)
        if cell is None:
            return self.compare(cat)
        a, b = cell.comparison.split(" vs ")
        moved = round(cell.shift_pct)  # the direction of the number as printed
        direction = "went up" if moved > 0 else "went down" if moved < 0 else "did not move"
        out = [f"In the headline comparison ({cell.comparison}), **{cat}** {direction}: "
               f"{fmt_pct(cell.shift_pct)} (95% CI {fmt_ci(cell.ci95)}"
               f"{', significant' if cell.significant else ', not significant'}). "
               f"{cell.n_a} of the latents specific to `{a}` are about {cat}, against {cell.n_b} of those "
               f"specific to `{b}` (shares compared, each set's size taken into account; {self._sets()})."]
        for name in (a, b):
            rows = self.view.list_latents(cat, pair=name, side="finetuned", n=5)
            self._log("list_latents", category=cat, pair=name, side="finetuned")
            if rows:
                out.append(f"\nThe {cat} latents specific to `{name}`, most specific first:")
                out += [_brief_line(r) for r in rows]
        vs_base = [c for c in table.cells if c.category == cat and c.comparison != table.headline]
        if vs_base:
            out.append("\nAgainst the base model:\n\n| comparison | shift | 95% CI | |\n|---|---|---|---|")
            out += [_cell_line(c) for c in vs_base]
        if cat in table.planted:
            out.append(f"\nThe models are organisms with a planted {cat} sign of `{table.planted[cat]}`.")
        return "\n".join(out)

    def compare(self, cat: str) -> str:
        """One category across every comparison, with its latents per fine-tune."""
        cells = self.view.category(cat)
        self._log("category_table")
        out = [f"**{cat}** across the comparisons:\n", "| comparison | shift | 95% CI | |", "|---|---|---|---|"]
        out += [_cell_line(c) for c in cells]
        for p in self.view.pairs:
            rows = self.view.list_latents(cat, pair=p, side="finetuned", n=4)
            self._log("list_latents", category=cat, pair=p, side="finetuned")
            if rows:
                out.append(f"\n{cat} latents specific to `{p}`:")
                out += [_brief_line(r) for r in rows]
        return "\n".join(out)

    def table(self) -> str:
        """The headline table, one strong latent cited per category."""
        t = self.view.category_table()
        self._log("category_table")
        title = t.headline or (t.cells[0].comparison if t.cells else "")
        out = [f"Category shifts, {title}:\n", "| category | shift | 95% CI | | example latent |",
               "|---|---|---|---|---|"]
        a = title.split(" vs ")[0]
        for c in (c for c in t.cells if c.comparison == title):
            top = self.view.list_latents(c.category, pair=a, side="finetuned", n=1)
            ex = f"[{top[0].id}] {top[0].name}" if top else ""
            out.append(f"| {c.category} | {fmt_pct(c.shift_pct)} | {fmt_ci(c.ci95)} | "
                       f"{'significant' if c.significant else 'n.s.'} | {ex} |")
        return "\n".join(out)

    def search(self, question: str) -> str:
        """Free query: the labelled latents closest in meaning."""
        hits = self.view.search_latents(question, n=6)
        self._log("search_latents", query=question)
        if not hits:
            return "No labelled latents in this run match that."
        return "The labelled latents closest in meaning to your question:\n" + "\n".join(_brief_line(h) for h in hits)


def _inline(text: str, limit: int = 300) -> str:
    """One line, backtick-free, bounded: safe inside inline code."""
    flat = " ".join(text.replace("`", "'").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def checked_citations(view: RunView, text: str) -> tuple[list[str], list[str]]:
    """(ids in the text that are latents of the run, in order; ids that are not)."""
    good: list[str] = []
    bad: list[str] = []
    for key in CITE_RE.findall(text):
        if key in view.by_key:
            if key not in good:
                good.append(key)
        elif key.split(":")[0] in view.crosscoders and key not in bad:
            bad.append(key)
    return good, bad


class ChatSession:
    """A conversation with one run (retrieval-only, or an LLM agent over the same lookups)."""

    def __init__(self, view: RunView, llm: Answerer | None = None) -> None:
        self.view = view
        self.retrieval = RetrievalAnswerer(view)
        self.llm = llm

    @classmethod
    def open(cls, run_dir: str, llm_spec: str | None = None) -> ChatSession:
        """Open a run; `llm_spec` ('vllm:URL@MODEL' / 'openai:URL@MODEL') enables the LLM agent."""
        view = RunView(run_dir)
        llm = None
        if llm_spec:
            from latentdiff.agent.chat_llm import LLMAnswerer

            llm = LLMAnswerer(view, llm_spec)
        return cls(view, llm)

    @property
    def mode(self) -> str:
        """'llm' or 'retrieval'."""
        return "llm" if self.llm is not None else "retrieval"

    def ask(self, question: str) -> Answer:
        """Answer one question; every answer cites at least one latent of the run."""
        question = question.strip()
        if not question:
            raise ChatError("empty question")
        note = None
        if self.llm is not None:
            notes = getattr(self.llm, "notes", [])
            seen = len(notes)
            try:
                text, calls = self.llm.answer(question)
                mode: Literal["retrieval", "llm"] = "llm"
                note = "; ".join(notes[seen:]) or None
            except LatentDiffError as err:
                note = f"LLM unavailable ({err}); answered from retrieval"
                log.warning(note)
                text, calls = self.retrieval.answer(question)
                mode = "retrieval"
        else:
            text, calls = self.retrieval.answer(question)
            mode = "retrieval"
        good, bad = checked_citations(self.view, text)
        if bad:
            text += "\n\n(Not latents of this run, ignore: " + ", ".join(bad) + ".)"
        if not good:
            related = self.view.search_latents(question, n=3)
            calls.append(ToolCall(tool="search_latents", args={"query": question}))
            if related:
                text += "\n\nRelated latents: " + ", ".join(f"[{b.id}] {b.name}" for b in related)
                good = [b.id for b in related]
        return Answer(text=text, citations=good, mode=mode, tool_calls=calls, note=note)

    def close(self) -> None:
        """Release the store."""
        self.view.close()
