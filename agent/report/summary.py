"""The executive summary's data side: records, the fact sheet, the templated summary and the checker.

A summary is a list of sentences, each with the latent ids it cites. The checker
(`check_sentences`) decides whether a sentence may be published:

- Form: a sentence has at least three words (of two or more letters) and at most 400 characters.
- Citations: every id in the sentence's `citations` and every `[crosscoder:N]` in its text (or a
  bare `crosscoder:N` with a crosscoder prefix of this report) must be a latent of report.json
  `latents`, and a sentence must cite at least one.
- Numbers: every number written with digits is checked, after removing latent ids, model names
  that contain digits and the "95%" of "95% CI"/"95% confidence". Numbers glued to letters
  ("3x", "2nd", "gpt2") and numbers spelled in words are not checked. A number must equal,
  within rounding at the precision it is written with (|x - v| <= 0.5 * 10^-decimals, so "+9.1"
  matches +9.09 and "+390%" matches +389.58, "400" does not), a value that report.json holds
  for the sentence's scope. A number written with a sign (+, -, U+2212) must match the signed
  value; an unsigned one matches the value's magnitude ("fell by 6.2 points" matches -6.25).
- Scope: the categories the sentence names (e.g. "instruction following") or that its cited
  latents belong to, and the comparisons that involve a model (or set: "base", "reference") the
  sentence names (all comparisons when it names none). The allowed values are, for those
  comparisons and categories: the share difference in percentage points (`diff_pp`) and its 95%
  interval's bounds, the paper's percent form (`shift_pct`) and its interval's bounds when they are
  finite, the latent counts (n_a, n_b), the shares (as fractions and as percentages), the raw and
  corrected p-values, and mean verification (fraction and percent). A comparison with too few
  latents to compare (status 'too_few': not tested) offers only its counts and shares, never an
  effect: no sentence can quote an untested difference. Each scoped comparison's totals (latents
  and scaffolding latents of each set); for cited latents: Delta-norm, nu_eps, nu_r, frequency,
  verification (fraction and percent) and any number written in their name or description; and a
  few report-wide values (models, categories, comparisons, latents, labelled latents, failures,
  skipped candidates, scaffolding latents, the significance level alpha).
- Direction: a sentence that names exactly one category and uses words of one direction only
  ("rose", "increased", "gained", "toward" / "fell", "dropped", "lost", "away from", ...; quoted
  latent names removed first) must agree with the sign of that category's share difference
  (`diff_pp`) in the comparisons in scope; mixed signs across those comparisons are not checked.
  Other words are not read: "several" or "most" are not checked against counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from latentdiff.agent.judges.prompting import contain
from latentdiff.agent.report.schema import (  # noqa: F401 - the schema stays importable from here
    DraftAttempt,
    ExecutiveSummary,
    LatentCard,
    Report,
    SummaryCheck,
    SummarySentence,
)

if TYPE_CHECKING:
    from latentdiff.agent.aggregate import CategoryShift, Comparison

ID_RE = re.compile(r"\b([A-Za-z_][\w.-]*:\d+)\b")
_BRACKETED_ID_RE = re.compile(r"\[\s*([A-Za-z_][\w.-]*:\d+)\s*\]")
_NUMBER_RE = re.compile(r"(?<![\w.:])([+\-\u2212]?)((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?![\w])(%?)")
_CI_LEVEL_RE = re.compile(r"\b95\s*%(?=\s*(?:CI|confidence|bootstrap))", re.IGNORECASE)
_WORD_RE = re.compile(r"[^\W\d_]{2,}")
# direction words of a shift (quoted latent names are removed first: a name may say "lower")
_UP_RE = re.compile(r"\b(?:rose|rises?|risen|increase[sd]?|grew|grows?|grown|gain(?:s|ed)?|higher|towards?)\b",
                    re.IGNORECASE)
_DOWN_RE = re.compile(r"\b(?:fell|falls?|fallen|decrease[sd]?|dropped|drops?|declined?|declines|shr[au]nk|shrinks?|"
                      r"lost|loses?|lower|away from)\b", re.IGNORECASE)
_QUOTED_RE = re.compile(r"\u201c[^\u201d]*\u201d|\"[^\"]*\"")
MAX_SENTENCE_CHARS = 400
MIN_WORDS = 3










# --------------------------------------------------------------------------- helpers


def fmt_pct(x: float) -> str:
    """+390%, -67%."""
    return f"{x:+.0f}%"


def fmt_pp(x: float) -> str:
    """+9.1 (percentage points, one decimal, signed)."""
    return f"{x:+.1f}"


def fmt_pp_ci(ci: tuple[float, float]) -> str:
    """[+3.0, +18.5] (percentage points)."""
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def fmt_share(x: float) -> str:
    """A share as a percentage: 0.0912 -> '9.1%'."""
    return f"{100 * x:.1f}%"


def fmt_p(p: float | None) -> str:
    """A p-value with two significant digits, at least three decimals (0.169, 0.0030, 0.000032; never
    rounded to 0); None -> 'not tested'."""
    if p is None:
        return "not tested"
    if p <= 0:
        return f"{p:.3f}"
    return f"{p:.{max(3, 1 - math.floor(math.log10(p)))}f}"


def fmt_shift_pct(shift: float | None, ci: tuple[float | None, float | None], n_a: int, a: str = "A") -> str:
    """The paper's percent form with its interval: '+390% [+120%, +900%]'; B has none of the category:
    'only in A (+inf) [+50%, +inf]'; neither set has any: 'undefined (neither has any)'."""
    lo, hi = ci
    if shift is None and (n_a == 0 or lo is None):
        return "undefined (neither has any)"
    est = f"only in {a} (+inf)" if shift is None else fmt_pct(shift)
    lo_s = "-inf" if lo is None else fmt_pct(lo)
    hi_s = "+inf" if hi is None else fmt_pct(hi)
    return f"{est} [{lo_s}, {hi_s}]"


CORRECTIONS = {"holm": "Holm-corrected", "bh": "Benjamini-Hochberg-corrected (false discovery rate)"}


def method_text(test: str, correction: str, alpha: float, n_categories: int) -> str:
    """'exact permutation test ... , Holm-corrected across the 6 categories, alpha 0.05'."""
    return (f"{test}, {CORRECTIONS.get(correction, correction + '-corrected')} across the {n_categories} "
            f"categories of a comparison, alpha {alpha:g}")


def comparison_method(comp: Comparison) -> str:
    """`method_text` of one comparison."""
    return method_text(comp.test, comp.correction, comp.alpha, len(comp.categories))


def too_few_text(comp: Comparison) -> str:
    """The note of an untested comparison: 'too few latents to compare (n)'."""
    return comp.note or f"too few latents to compare ({min(comp.n_a, comp.n_b)})"


def clean(text: str | None, limit: int) -> str:
    """Judge-written text on one line, delimiter-safe (contained, no angle or square brackets)."""
    flat = " ".join(contain(text or "", limit).split())
    return flat.replace("<", "\u2039").replace(">", "\u203a").replace("[", "(").replace("]", ")")


def headline(report: Report) -> Comparison | None:
    """The comparison behind the headline table (the configured A vs B, else the first one)."""
    head = next((c for c in report.comparisons if c.kind == "headline"), None)
    return head or (report.comparisons[0] if report.comparisons else None)


def primary_crosscoders(report: Report) -> set[str]:
    """The crosscoders whose findings the comparisons count (replicates: those without a seed suffix; one
    per fine-tune in a pairwise design)."""
    from latentdiff.agent.replicates import replicate_groups

    groups = replicate_groups({c.id.split(":")[0] for c in report.latents})
    return next(iter(groups.values())) if groups else set()


def members(report: Report, comp: Comparison, which: Literal["a", "b"]) -> dict[str, LatentCard]:
    """Labelled, non-scaffolding latents of the primary crosscoder in set A or B of a comparison.

    A set named 'reference' is the reference sample of shared latents of the comparison's pair; 'base'
    the base-specific latents of that pair; any other name the latents specific to that model (side
    'finetuned' of its pair)."""
    name = comp.a if which == "a" else comp.b
    other = comp.b if which == "a" else comp.a
    if name == "reference":
        pair, side = comp.pair or other, "shared"
    elif name == "base":
        pair, side = comp.pair or other, "base"
    else:
        pair, side = name, "finetuned"
    ccs = primary_crosscoders(report)
    return {c.id: c for c in report.latents if c.pair == pair and c.side == side and c.category is not None
            and not c.scaffold and c.id.split(":")[0] in ccs}


def specific_to(report: Report, comp: Comparison, which: Literal["a", "b"]) -> list[LatentCard]:
    """Latents of set A or B of a comparison (`members`), strongest (largest Delta-norm) first.

    Latents in both sets are left out: a latent specific to both fine-tunes says nothing about their
    difference (and a fine-tune's latent also specific to the control is not in its control contrast).
    """
    mine, other = members(report, comp, which), members(report, comp, "b" if which == "a" else "a")
    cards = [c for k, c in mine.items() if k not in other]
    return sorted(cards, key=lambda c: (-c.delta_norm, c.id))


def top_by_category(report: Report, comp: Comparison, which: Literal["a", "b"], n: int) -> dict[str, list[LatentCard]]:
    """Up to `n` strongest latents of set A or B per category."""
    out: dict[str, list[LatentCard]] = {}
    for card in specific_to(report, comp, which):
        bucket = out.setdefault(card.category or "other", [])
        if len(bucket) < n:
            bucket.append(card)
    return out


def render_sentence(s: SummarySentence) -> str:
    """The sentence with its citations that are not already in the text, as ' [id]' before the stop."""
    text = " ".join(s.text.split())
    present = set(ID_RE.findall(text))
    missing = [c for c in s.citations if c not in present]
    if not missing:
        return text
    tags = " ".join(f"[{c}]" for c in missing)
    return f"{text[:-1]} {tags}{text[-1]}" if text[-1:] in ".!?" else f"{text} {tags}"


def assemble(sentences: list[SummarySentence], source: Literal["llm", "template"], check: SummaryCheck,
             llm: str | None = None) -> ExecutiveSummary:
    """The summary record from published sentences."""
    cites: list[str] = []
    for s in sentences:
        for c in [*s.citations, *ID_RE.findall(s.text)]:
            if c not in cites:
                cites.append(c)
    text = " ".join(render_sentence(s) for s in sentences) or "No labelled latents: nothing to summarise."
    return ExecutiveSummary(text=text, sentences=sentences, citations=cites, source=source, llm=llm, checker=check)


# --------------------------------------------------------------------------- fact sheet


def _row_line(r: CategoryShift, a: str) -> str:
    return (f"- {r.name} | {r.n_a} ({fmt_share(r.share_a)}) | {r.n_b} ({fmt_share(r.share_b)}) | "
            f"{fmt_pp(r.diff_pp)} | {fmt_pp_ci(r.ci95)} | {fmt_shift_pct(r.shift_pct, r.ci95_shift_pct, r.n_a, a)} | "
            f"{fmt_p(r.p_adjusted)} | {'yes' if r.significant else 'no'}")


def _comparison_lines(comp: Comparison, title: str) -> list[str]:
    lines = [f"{title}: {comp.a} vs {comp.b}: {clean(comp.description, 300)}.",
             f"Labelled latents counted: {comp.n_a} in {comp.a}, {comp.n_b} in {comp.b}"
             + (f" (scaffolding latents left out: {comp.n_scaffold_a} and {comp.n_scaffold_b})"
                if comp.n_scaffold_a or comp.n_scaffold_b else "") + "."]
    if not comp.tested:
        return lines + [f"Not tested: {too_few_text(comp)}. State no finding from this comparison."]
    return lines + [
        f"Rows (category | n {comp.a} (share of its latents) | n {comp.b} (share) | difference, percentage points | "
        "95% CI | the paper's percent form [95% CI] | corrected p | significant):",
        *(_row_line(r, comp.a) for r in comp.categories)]


def fact_sheet(report: Report, top_n: int = 2) -> tuple[str, list[str]]:
    """The compact fact sheet the LLM is grounded on, and the latent ids it shows."""
    comp = headline(report)
    lines = ["Models: " + ", ".join(f"{m['name']} ({m['role']})" for m in report.models) + "."]
    if comp is None:
        return "\n".join(lines + ["No comparison: no labelled latents."]), []
    lines.append(f"Test: {comparison_method(comp)}; significant = corrected p below alpha.")
    lines += _comparison_lines(comp, "Headline comparison")
    for ctrl in (c for c in report.comparisons if c.kind == "control"):
        lines += _comparison_lines(ctrl, "Control contrast")
    lines.append("Strongest latents per category (id | specific to | category | name | description):")
    ids: list[str] = []
    tops = {w: top_by_category(report, comp, w, top_n) for w in ("a", "b")}  # type: ignore[arg-type]
    for row in comp.categories:
        for which, owner in (("a", comp.a), ("b", comp.b)):
            for card in tops[which].get(row.name, []):
                lines.append(_latent_line(card, owner))
                ids.append(card.id)
    return "\n".join(lines), ids


def _latent_line(card: LatentCard, owner: str) -> str:
    return (f"- [{card.id}] | {owner} | {card.category} | {clean(card.name, 60)} | "
            f"{clean(card.description, 120)}")


# --------------------------------------------------------------------------- templated summary


def _example(cards: list[LatentCard]) -> tuple[str, list[str]]:
    card = cards[0]
    return f"e.g. [{card.id}] \u201c{clean(card.name, 60)}\u201d", [card.id]


def _effect(r: CategoryShift, comp: Comparison) -> str:
    """'9.1% of shift's latents vs 0.0% of it's, +9.1 percentage points (95% CI +3.0 to +18.5; 3 vs 0
    latents; corrected p 0.012)'."""
    return (f"{fmt_share(r.share_a)} of {comp.a}'s latents vs {fmt_share(r.share_b)} of {comp.b}'s, "
            f"{fmt_pp(r.diff_pp)} percentage points (95% CI {r.ci95[0]:+.1f} to {r.ci95[1]:+.1f}; "
            f"{r.n_a} vs {r.n_b} latents; corrected p {fmt_p(r.p_adjusted)})")


def _any_card(report: Report, comp: Comparison) -> list[str]:
    """One latent of either set of a comparison, to cite beside its note."""
    cards = specific_to(report, comp, "a") or specific_to(report, comp, "b")
    return [cards[0].id] if cards else []


def _too_few_sentence(report: Report, comp: Comparison, what: str) -> list[SummarySentence]:
    cites = _any_card(report, comp)
    if not cites:
        return []
    return [SummarySentence(text=f"{what} has {too_few_text(comp)}: no category is tested and no "
                                 "difference can be read from it.", citations=cites,
                            comparison=f"{comp.kind} {comp.a} {comp.b}")]


def template_sentences(report: Report) -> list[SummarySentence]:
    """A deterministic summary: the headline's significant categories (share difference in percentage
    points, interval, counts, corrected p, the strongest latent), its non-significant ones, and the
    control contrasts' significant categories. An untested comparison ('too few latents to compare')
    gets its note, never a finding."""
    comp = headline(report)
    if comp is None:
        return []
    out: list[SummarySentence] = []
    if not comp.tested:
        out += _too_few_sentence(report, comp, f"The headline comparison of {comp.a} and {comp.b}")
    else:
        tops = {w: top_by_category(report, comp, w, 1) for w in ("a", "b")}  # type: ignore[arg-type]
        gained = sorted((r for r in comp.categories if r.significant and r.diff_pp > 0), key=lambda r: -r.diff_pp)
        lost = sorted((r for r in comp.categories if r.significant and r.diff_pp < 0), key=lambda r: r.diff_pp)
        for rows, verb, side in ((gained, "gained", "a"), (lost, "lost", "b")):
            for r in rows:
                cards = tops[side].get(r.name) or tops["b" if side == "a" else "a"].get(r.name)
                if not cards:
                    continue
                ex, cites = _example(cards)
                out.append(SummarySentence(
                    text=f"Relative to {comp.b}, {comp.a} {verb} {r.name.replace('_', ' ')} latents: "
                         f"{_effect(r, comp)}, {ex}.", citations=cites, comparison="headline"))
        flat = [r for r in comp.categories if not r.significant]
        cites = [c.id for r in flat for c in (tops["a"].get(r.name) or tops["b"].get(r.name) or [])[:1]]
        if flat and cites:
            names = ", ".join(r.name.replace("_", " ") for r in flat)
            out.append(SummarySentence(
                text=f"No significant difference between {comp.a} and {comp.b} after correction in: {names}.",
                citations=cites, comparison="headline"))
    for ctrl in (c for c in report.comparisons if c.kind == "control"):
        if not ctrl.tested:
            out += _too_few_sentence(report, ctrl, f"The control contrast of {ctrl.a} against the control {ctrl.b}")
            continue
        tops = {w: top_by_category(report, ctrl, w, 1) for w in ("a", "b")}  # type: ignore[arg-type]
        for r in sorted((x for x in ctrl.categories if x.significant), key=lambda x: -abs(x.diff_pp)):
            cards = tops["a" if r.diff_pp > 0 else "b"].get(r.name) or tops["b" if r.diff_pp > 0 else "a"].get(r.name)
            if not cards:
                continue
            ex, cites = _example(cards)
            more = "more" if r.diff_pp > 0 else "fewer"
            out.append(SummarySentence(
                text=f"Against the control {ctrl.b}, {ctrl.a} has {more} {r.name.replace('_', ' ')} latents: "
                     f"{_effect(r, ctrl)}, {ex}.", citations=cites, comparison=f"control {ctrl.a}"))
    return out


# --------------------------------------------------------------------------- checker


def _values(x: float | None, fraction: bool = False) -> list[float]:
    if x is None or not math.isfinite(x):
        return []
    return [x, 100.0 * x] if fraction else [x]


def _numbers_in(text: str) -> list[float]:
    return [float(m.group(2).replace(",", "")) for m in _NUMBER_RE.finditer(text or "")]


@dataclass
class CheckContext:
    """What the checker needs from report.json, indexed once."""

    cards: dict[str, LatentCard]
    crosscoders: set[str]
    categories: list[str]
    models: list[str]
    comps: list[tuple[set[str], list[float], dict[str, list[float]]]] = field(default_factory=list)
    shifts: list[tuple[set[str], dict[str, float]]] = field(default_factory=list)  # sets -> category diff_pp
    report_wide: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, report: Report) -> CheckContext:
        """Index a report."""
        cats = list(dict.fromkeys([r.name for c in report.comparisons for r in c.categories]
                                  + [r.name for r in report.categories]))
        models = list(dict.fromkeys([m["name"] for m in report.models]
                                    + [x for c in report.comparisons for x in (c.a, c.b)]))
        ctx = cls(cards={c.id: c for c in report.latents}, crosscoders={c.id.split(":")[0] for c in report.latents},
                  categories=cats, models=models)
        for comp in report.comparisons:
            rows: dict[str, list[float]] = {}
            for r in comp.categories:
                vals = [r.n_a, r.n_b, *_values(r.share_a, True), *_values(r.share_b, True),
                        *_values(r.verification_a, True), *_values(r.verification_b, True)]
                if comp.tested:  # an untested comparison offers counts and shares, never an effect
                    vals += [r.diff_pp, *r.ci95, *_values(r.shift_pct),
                             *(v for x in r.ci95_shift_pct for v in _values(x)),
                             *_values(r.p_value), *_values(r.p_adjusted)]
                rows[r.name] = vals
            names = {comp.a, comp.b} | ({comp.pair} if comp.pair else set())
            ctx.comps.append((names, [comp.n_a, comp.n_b, comp.n_scaffold_a, comp.n_scaffold_b], rows))
            ctx.shifts.append((names, {r.name: r.diff_pp for r in comp.categories}))
        labelled = sum(c.category is not None for c in report.latents)
        ctx.report_wide = [len(report.models), len(cats), len(report.comparisons), len(report.latents), labelled,
                           len(report.failures), len(report.skipped), len(report.scaffold),
                           *_values(report.statistics.get("alpha"))]
        return ctx

    def mentioned_models(self, text: str) -> set[str]:
        """Model names written in the text (whole words, case-sensitive)."""
        return {m for m in self.models if re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", text)}

    def mentioned_categories(self, text: str) -> set[str]:
        """Category names written in the text ('_' may be a space or hyphen; any case)."""
        out = set()
        for c in self.categories:
            pat = r"[_ -]".join(re.escape(p) for p in c.split("_"))
            if re.search(rf"(?<![\w-]){pat}(?![\w-])", text, re.IGNORECASE):
                out.add(c)
        return out

    def allowed(self, text: str, cited: list[LatentCard]) -> tuple[list[float], str]:
        """The values a sentence may quote, and a one-line description of its scope."""
        cats = self.mentioned_categories(text) | {c.category for c in cited if c.category}
        models = self.mentioned_models(text)
        values: list[float] = [*self.report_wide]
        n_comps = 0
        for names, totals, rows in self.comps:
            if models and not (names & models):
                continue
            n_comps += 1
            values += totals
            for cat in cats:
                values += rows.get(cat, [])
        for card in cited:
            values += [card.delta_norm, *_values(card.nu_eps), *_values(card.nu_r), *_values(card.freq, True),
                       *_values(card.verification, True), *_numbers_in(card.name or ""),
                       *_numbers_in(card.description or "")]
        scope = f"categories {sorted(cats) or 'none'}, {n_comps} comparison(s)"
        return values, scope


def direction_errors(ctx: CheckContext, text: str) -> list[str]:
    """A sentence that names one category and one direction ("rose", "fell", ...) must agree with the sign
    of that category's share difference (diff_pp) in every comparison it may mean (the models or sets it
    names, or all); mixed signs or several categories or directions are not checked."""
    plain = _QUOTED_RE.sub(" ", text)
    cats = ctx.mentioned_categories(plain)
    up, down = bool(_UP_RE.search(plain)), bool(_DOWN_RE.search(plain))
    if len(cats) != 1 or up == down:
        return []
    cat = next(iter(cats))
    models = ctx.mentioned_models(plain)
    signs = {math.copysign(1, v) for names, rows in ctx.shifts if not models or names & models
             for v in [rows.get(cat)] if v is not None and math.isfinite(v) and v != 0}
    if len(signs) != 1 or (signs.pop() > 0) == up:
        return []
    said, actual = ("rose", "fell") if up else ("fell", "rose")
    return [f"says {cat} {said}, but its share difference {actual} in this report (sign of diff_pp)"]


def _strip_unchecked(text: str, models: list[str]) -> str:
    text = ID_RE.sub(" ", text)
    for m in models:
        if any(ch.isdigit() for ch in m):
            text = text.replace(m, " ")
    return _CI_LEVEL_RE.sub(" ", text)


def _number_errors(text: str, values: list[float], scope: str) -> list[str]:
    errors = []
    for m in _NUMBER_RE.finditer(text):
        sign, digits, pct = m.groups()
        x = float(digits.replace(",", ""))
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        tol = 0.5 * 10.0 ** -decimals + 1e-9
        signed = -x if sign in ("-", "\u2212") else x
        ok = any(abs(signed - v) <= tol if sign else abs(x - abs(v)) <= tol for v in values)
        if not ok:
            near = min(values, key=lambda v: abs(abs(v) - x), default=None)
            hint = f"; nearest value in scope {near:+.2f}" if near is not None else ""
            errors.append(f"number {sign}{digits}{pct} is not in the report for this sentence ({scope}){hint}")
    return errors


def check_sentence(ctx: CheckContext, s: SummarySentence) -> list[str]:
    """Errors of one sentence (empty: it may be published)."""
    text = " ".join(s.text.split())
    if not text:
        return ["empty sentence"]
    errors = [f"longer than {MAX_SENTENCE_CHARS} characters"] if len(text) > MAX_SENTENCE_CHARS else []
    if len(_WORD_RE.findall(ID_RE.sub(" ", text))) < MIN_WORDS:
        errors.append(f"says nothing (fewer than {MIN_WORDS} words)")
    in_text = [k for k in ID_RE.findall(text)
               if k.split(":")[0] in ctx.crosscoders or k in _BRACKETED_ID_RE.findall(text)]
    ids = list(dict.fromkeys([*s.citations, *in_text]))
    errors += [f"cites {k}, which is not a latent of this report" for k in ids if k not in ctx.cards]
    cited = [ctx.cards[k] for k in ids if k in ctx.cards]
    if not cited:
        errors.append("cites no latent of this report (every claim must cite one, e.g. "
                      f"[{next(iter(ctx.cards), 'joint:0')}])")
    values, scope = ctx.allowed(text, cited)
    return errors + _number_errors(_strip_unchecked(text, ctx.models), values, scope) + direction_errors(ctx, text)


def check_sentences(report: Report | CheckContext, sentences: list[SummarySentence]) -> list[list[str]]:
    """Errors per sentence (a list of empty lists: every sentence passes)."""
    ctx = report if isinstance(report, CheckContext) else CheckContext.of(report)
    return [check_sentence(ctx, s) for s in sentences]


def flat_errors(per_sentence: list[list[str]]) -> list[str]:
    """'sentence N: error' lines."""
    return [f"sentence {i}: {e}" for i, errs in enumerate(per_sentence, 1) for e in errs]


def template_summary(report: Report, note: str | None = None, outcome: str = "template",
                     history: list[DraftAttempt] | None = None, llm: str | None = None,
                     errors: list[str] | None = None) -> ExecutiveSummary:
    """The templated summary, checked like any draft (and recorded as such)."""
    sentences = template_sentences(report)
    problems = flat_errors(check_sentences(report, sentences))
    check = SummaryCheck(ok=not problems, outcome=outcome, attempts=len(history or []),  # type: ignore[arg-type]
                         errors=(errors or []) + problems, history=history or [], note=note)
    return assemble(sentences, "template", check, llm)
