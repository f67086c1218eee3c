"""Chat with a finished run: questions answered from its findings, report and store, citing latents.

Two answerers share the read-only `RunView` lookups (agent/chat/tools.py; answers are formatted by
agent/chat/format.py):
  - `RetrievalAnswerer` (offline, no LLM): recognises the question's intent (a latent card, the
    latents of a category, why a category moved, a comparison across fine-tunes, the control
    contrasts, the category table, or a free query) and fills a template from the lookups.
    Effects are share differences in percentage points with 95% intervals, corrected p-values and
    significance; a comparison with too few latents is said to be "too few latents to compare (n)",
    never reported as a finding.
  - `LLMAnswerer` (agent/chat/llm.py): a LangGraph tool-calling agent over the same lookups, used
    when an OpenAI-compatible LLM is configured.
`ChatSession.ask` returns an `Answer` whose citations are checked against the run: every id in it
is a latent of the run, and every answer cites at least one. Labels and examples are untrusted text:
`terminal_safe` strips escape sequences and control characters from every answer and note, so a label
cannot move the cursor, retitle the terminal or hide text.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from latentdiff.agent.chat.format import (
    CELL_HEADER,
    brief_line,
    cell_line,
    counts_text,
    effect_text,
    fmt_ci,
    inline,
    method_note,
    shift_text,
    terminal_safe,
)
from latentdiff.agent.chat.tools import CategoryCell, CategoryTable, ChatError, LatentBrief, RunView
from latentdiff.agent.report.summary import fmt_p, fmt_pp, fmt_share
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








# words of a question about a diffing run (otherwise the chat says the question is not about this run)
_RUN_WORDS = re.compile(r"\b(latents?|features?|concepts?|models?|fine-?tun\w*|base|instruct\w*|shift\w*|chang\w*|"
                        r"differ\w*|categor\w*|label\w*|crosscoder|delta|nu|scaling|learn\w*|added|removed|lost|gained|"
                        r"report|findings?|significan\w*|examples?|activat\w*|judge|verif\w*|run)\b", re.I)













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
            n = re.escape(name)
            pat = (rf"\b{n}\b" if len(name) > 2 else
                   rf"(?:model\s+|[`'\"]){n}\b|\bbetween\s+(?:the\s+)?base\s+(?:model\s+)?and\s+{n}\b|"
                   rf"\bbetween\s+{n}\s+and\s+(?:the\s+)?base\b|\bdid\s+{n}\s+(?:learn|gain|add|change)")
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
        if re.search(r"\bcontrols?\b", q):
            return self.control(cat), self.calls
        pair = self.pair_of(question)
        if cat and re.search(r"\bsignifican|\bp[- ]?values?\b|\breal\b|\bby chance\b|\btrust", q):
            return self.significance(cat), self.calls
        if pair and not cat and re.search(r"\b(chang|differ|learn|add|new|specific|what|did)", q):
            return self.model_changes(pair), self.calls
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

    def significance(self, cat: str) -> str:
        """Is a category's headline difference significant: the verdict first, then the evidence."""
        table = self.view.category_table()
        cell = self._headline_cell(table, cat)
        if cell is None:
            return self.compare(cat)
        if not cell.tested:
            note = cell.note or "too few latents to compare"
            lead = (f"**Not tested**: the headline comparison ({cell.comparison}) has {note}, so whether {cat} "
                    f"changed cannot be read from it.")
        elif cell.significant:
            lead = (f"**Yes**: in the headline comparison ({cell.comparison}) the {cat} difference is significant "
                    f"after correction ({effect_text(cell)}).")
        else:
            lead = (f"**No**: in the headline comparison ({cell.comparison}) the {cat} difference is not significant "
                    f"after correction ({effect_text(cell)}); the data do not show a change either way.")
        return lead + "\n\n" + self.why(cat)

    def model_changes(self, pair: str) -> str:
        """What one model changed relative to the base: its specific latents and which categories they favour."""
        t = self.view.category_table()
        self._log("category_table")
        comp = next((b for b in t.comparisons if b.kind == "vs_reference" and b.a == pair), None)
        primary = min(self.view.crosscoders, key=lambda name: ("-seed" in name, name))  # replicates aside

        def specific(p: str) -> list[LatentBrief]:
            return [b for b in self.view.list_latents(None, pair=p, side="finetuned", n=100_000)
                    if b.id.rsplit(":", 1)[0] == primary]

        n = len(specific(pair))
        self._log("list_latents", pair=pair, side="finetuned")
        if n == 0:
            return (f"**Nothing found**: `{pair}` has no latents specific to it compared with the base (0 selected "
                    f"latents; neither Delta-norm nor Latent Scaling finds a direction that `{pair}` added), so this "
                    f"run reports no concept that `{pair}` gained. Latents specific to the other models: "
                    + ", ".join(f"`{p}` {len(specific(p))}" for p in self.view.pairs if p != pair) + ".")
        out = [f"`{pair}` has **{n} latents specific to it** compared with the base (crosscoder `{primary}`)."]
        if comp is not None and comp.status != "ok":
            out.append(f"Against the reference sample of shared latents: {comp.note or 'too few latents to compare'}; "
                       "not tested.")
        elif comp is not None:
            cells = [c for c in t.cells if c.comparison == comp.id]
            up = [c for c in cells if c.significant and c.diff_pp > 0]
            down = [c for c in cells if c.significant and c.diff_pp < 0]
            if up or down:
                out.append("Against the reference sample of shared latents, its specific latents are "
                           + "; ".join([f"**more often {c.category}** ({effect_text(c)})" for c in up]
                                       + [f"**less often {c.category}** ({effect_text(c)})" for c in down]) + ".")
            else:
                out.append("Against the reference sample of shared latents, no category is over- or under-represented "
                           "among them after correction.")
            out.append(f"Specific latents mark text on which `{pair}`'s activations differ from the base's, "
                       "including text of concepts it was never trained on (measured on the organisms), so read "
                       "this as where it changed; what it learned more than another fine-tune is the headline's "
                       "question.")
            out.append(f"\n{CELL_HEADER}")
            out += [cell_line(c) for c in cells]
        by_cat: dict[str, list[LatentBrief]] = {}
        for b in specific(pair):
            by_cat.setdefault(b.category, []).append(b)
        out.append("\nIts most specific latents per category:")
        for cat_name, rows in sorted(by_cat.items(), key=lambda kv: -len(kv[1])):
            out += [f"\n*{cat_name}* ({len(rows)}):"] + [brief_line(b) for b in rows[:2]]
        return "\n".join(out) + method_note(t)

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
            lines += [f"{i}. `{inline(t)}`" for i, t in enumerate(d.examples, 1)]
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
            out += [brief_line(b) for b in rows]
        if not any(self.view.list_latents(cat, pair=p, side=side, n=1) for p in pairs):
            other = self.view.list_latents(cat, pair=pair, side=None, n=8)
            self._log("list_latents", category=cat, pair=pair, side=None)
            if other:
                out.append(f"\nLatents labelled {cat} on other sides (shared or base-leaning):")
                out += [brief_line(b) for b in other]
        out.append(self._headline_sentence(cat))
        return "\n".join(x for x in out if x)

    def _headline_cell(self, table: CategoryTable, cat: str) -> CategoryCell | None:
        return next((c for c in table.cells if c.comparison == table.headline and c.category == cat), None)

    def _headline_sentence(self, cat: str) -> str:
        cell = self._headline_cell(self.view.category_table(), cat)
        if cell is None:
            return ""
        if not cell.tested:
            return (f"\nHeadline ({cell.comparison}): {cell.note or 'too few latents to compare'}, so {cat} is not "
                    f"tested ({counts_text(cell)}; {self._sets()}).")
        return f"\nHeadline ({cell.comparison}): {cat} {effect_text(cell)}; {counts_text(cell)} ({self._sets()})."

    def _sets(self) -> str:
        """What the headline compares (e.g. latents specific to one fine-tune and not the other)."""
        head = self.view.report.headline
        return f"sets: {head['description']}" if head else "sets: each fine-tune vs the reference sample"

    def why(self, cat: str) -> str:
        """Which latents drive a category's headline difference."""
        table = self.view.category_table()
        self._log("category_table")
        cell = self._headline_cell(table, cat)
        if cell is None:
            return self.compare(cat)
        a, b = cell.a, cell.b
        if not cell.tested:
            out = [f"The headline comparison ({cell.comparison}) has {cell.note or 'too few latents to compare'}: "
                   f"**{cat}** is not tested, so this run cannot say in which direction it moved. For the record, "
                   f"{cell.n_a} of the {cell.total_a} latents specific to `{a}` are about {cat}, against "
                   f"{cell.n_b} of the {cell.total_b} specific to `{b}` ({self._sets()})."]
        else:
            moved = round(cell.diff_pp, 1)  # the direction of the number as printed
            direction = "went up" if moved > 0 else "went down" if moved < 0 else "did not move"
            caveat = "" if cell.significant else (" The difference is not significant after correction: the data "
                                                   "do not show a change either way.")
            out = [f"In the headline comparison ({cell.comparison}), **{cat}** {direction}: {effect_text(cell)}. "
                   f"{cell.n_a} of the {cell.total_a} latents specific to `{a}` ({fmt_share(cell.share_a)}) are about "
                   f"{cat}, against {cell.n_b} of the {cell.total_b} specific to `{b}` ({fmt_share(cell.share_b)}) "
                   f"({self._sets()}).{caveat}"]
        for name in (a, b):
            rows = self.view.list_latents(cat, pair=name, side="finetuned", n=5)
            self._log("list_latents", category=cat, pair=name, side="finetuned")
            if rows:
                out.append(f"\nThe {cat} latents specific to `{name}`, most specific first:")
                out += [brief_line(r) for r in rows]
        others = [c for c in table.cells if c.category == cat and c.comparison != table.headline]
        if others:
            out.append("\nThe other comparisons (each set vs the reference sample of shared latents, the other set "
                       f"definition, the control contrast):\n\n{CELL_HEADER}")
            out += [cell_line(c) for c in others]
        if cat in table.planted:
            out.append(f"\nThe models are organisms with a planted {cat} sign of `{table.planted[cat]}`.")
        return "\n".join(out) + method_note(table)

    def compare(self, cat: str) -> str:
        """One category across every comparison, with its latents per fine-tune."""
        table = self.view.category_table()
        cells = [c for c in table.cells if c.category == cat]
        self._log("category_table")
        out = [f"**{cat}** across the comparisons:\n", CELL_HEADER]
        out += [cell_line(c) for c in cells]
        for p in self.view.pairs:
            rows = self.view.list_latents(cat, pair=p, side="finetuned", n=4)
            self._log("list_latents", category=cat, pair=p, side="finetuned")
            if rows:
                out.append(f"\n{cat} latents specific to `{p}`:")
                out += [brief_line(r) for r in rows]
        return "\n".join(out) + method_note(table)

    def table(self) -> str:
        """The headline table, one strong latent cited per category."""
        t = self.view.category_table()
        self._log("category_table")
        title = t.headline or (t.comparisons[0].id if t.comparisons else "")
        comp = t.comparison(title)
        cells = [c for c in t.cells if c.comparison == title]
        a = comp.a if comp else ""
        if comp is not None and comp.status != "ok":
            out = [f"Headline {title}: {comp.note or 'too few latents to compare'}: not tested, no category "
                   f"difference can be read from it. Latents per category ({comp.n_a} of {comp.a}, {comp.n_b} of "
                   f"{comp.b}):\n", f"| category | {comp.a} | {comp.b} | example latent |", "|---|---|---|---|"]
            for c in cells:
                top = self.view.list_latents(c.category, pair=a, side="finetuned", n=1)
                ex = f"[{top[0].id}] {top[0].name}" if top else ""
                out.append(f"| {c.category} | {c.n_a} ({fmt_share(c.share_a)}) | {c.n_b} ({fmt_share(c.share_b)}) | "
                           f"{ex} |")
        else:
            out = [f"Category differences, {title}:\n",
                   "| category | latents (share of the set) | difference, pp [95% CI] | paper's shift % | "
                   "corrected p | | example latent |", "|---|---|---|---|---|---|---|"]
            for c in cells:
                top = self.view.list_latents(c.category, pair=a, side="finetuned", n=1)
                ex = f"[{top[0].id}] {top[0].name}" if top else ""
                out.append(f"| {c.category} | {counts_text(c)} | {fmt_pp(c.diff_pp)} {fmt_ci(c.ci95)} | "
                           f"{shift_text(c)} | {fmt_p(c.p_adjusted)} | {'significant' if c.significant else 'n.s.'} "
                           f"| {ex} |")
        untested = [b for b in t.comparisons if b.status != "ok" and b.id != title]
        if untested:
            out.append("\nNot tested: " + "; ".join(f"{b.id}: {b.note}" for b in untested) + ".")
        return "\n".join(out) + method_note(t)

    def control(self, cat: str | None) -> str:
        """The control contrasts: each fine-tune's specific latents (not also the control's) vs the control's."""
        t = self.view.category_table()
        self._log("category_table")
        comps = [b for b in t.comparisons if b.kind == "control"]
        if not comps:
            return ("This run has no control model (`control` in the config: a model trained further without the "
                    "intervention), so there is no control contrast to report.")
        min_set = t.statistics.get("min_set_size")
        out = []
        for comp in comps:
            out.append(f"**{comp.id}**: {comp.description}.")
            if comp.status != "ok":
                small = []
                if min_set is None or comp.n_b < min_set:
                    small.append(f"the control `{comp.b}` has too few specific latents ({comp.n_b})")
                if min_set is not None and comp.n_a < min_set:
                    small.append(f"`{comp.a}` has too few latents specific to it and not to the control ({comp.n_a})")
                out.append(f"{comp.note or 'too few latents to compare'}: not tested; " + " and ".join(small) + ".")
            else:
                cells = [c for c in t.cells if c.comparison == comp.id and (cat is None or c.category == cat)]
                sig = [c for c in cells if c.significant]
                shown = cells if cat is not None else sig
                if not sig:
                    out.append(f"No category{' ' + cat if cat else ''} differs significantly after correction "
                               f"({comp.n_a} latents of {comp.a} vs {comp.n_b} of {comp.b}).")
                if shown:
                    out += [f"\n{CELL_HEADER}"] + [cell_line(c) for c in shown]
            for p in (comp.b, comp.a):
                rows = self.view.list_latents(cat, pair=p, side="finetuned", n=3)
                self._log("list_latents", category=cat, pair=p, side="finetuned")
                if rows:
                    out.append(f"\nLatents specific to `{p}`{' about ' + cat if cat else ''}:")
                    out += [brief_line(r) for r in rows]
        return "\n".join(out) + method_note(t)

    def search(self, question: str) -> str:
        """Free query: the labelled latents closest in meaning."""
        hits = self.view.search_latents(question, n=6)
        self._log("search_latents", query=question)
        names = ", ".join(f"`{m.name}`" for m in self.view.cfg.models)
        about_run = bool(_RUN_WORDS.search(question)) or self.pair_of(question) is not None
        lead = ("" if about_run else f"This does not look like a question about this run (models {names}, their "
                "latents and how their concepts differ), so there is no finding to report. ")
        if not hits:
            return lead + "No labelled latents in this run match that."
        return (lead + "The labelled latents closest in meaning to your question:\n"
                + "\n".join(brief_line(h) for h in hits))




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


def read_only_store(view: RunView) -> None:
    """Point the view's embedded Chroma store at a private temporary copy (once per view).

    Chroma's embedded client writes into its files even when only queried (sqlite, HNSW segments), so the
    chat and `serve` never open the run's own `chroma/`: a finished run is left byte for byte as it was.
    The copy is removed when the view is garbage-collected or the process exits. A Chroma server
    (store.url) is only read through its API.
    """
    if getattr(view, "_store_copy", None) is not None or view.cfg.store.url is not None or "store" in view.__dict__:
        return
    src = Path(view.cfg.store.path) if view.cfg.store.path else view.rundir.chroma
    tmp = Path(tempfile.mkdtemp(prefix="latentdiff-chat-store-"))
    weakref.finalize(view, shutil.rmtree, tmp, True)
    if src.is_dir():
        shutil.copytree(src, tmp / "store")
    # the settings stay the run's own: the store is scoped by them (fingerprints, label hash), only its place moves
    view._store_path = tmp / "store"  # type: ignore[attr-defined]
    view._store_copy = tmp  # type: ignore[attr-defined]


class ChatSession:
    """A conversation with one run (retrieval-only, or an LLM agent over the same lookups)."""

    def __init__(self, view: RunView, llm: Answerer | None = None) -> None:
        read_only_store(view)
        self.view = view
        self.retrieval = RetrievalAnswerer(view)
        self.llm = llm

    @classmethod
    def open(cls, run_dir: str, llm_spec: str | None = None) -> ChatSession:
        """Open a run; `llm_spec` ('vllm:URL@MODEL' / 'openai:URL@MODEL') enables the LLM agent."""
        view = RunView(run_dir)
        llm = None
        if llm_spec:
            from latentdiff.agent.chat.llm import LLMAnswerer

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
        return Answer(text=terminal_safe(text), citations=good, mode=mode, tool_calls=calls,
                      note=terminal_safe(note) if note is not None else None)

    def close(self) -> None:
        """Release the store."""
        self.view.close()
