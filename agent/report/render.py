"""report.md and a self-contained report.html (plots embedded as data URIs, no external assets)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from latentdiff.agent.report import summary


def _labelling_lines(report) -> list[str]:  # noqa: ANN001
    """How labelling ended and what refinement did, as Markdown lines."""
    lines = []
    if getattr(report, "stop_reason", None):
        lines += [f"Labelling stopped: {report.stop_reason}; {len(report.skipped)} candidate latents left unlabelled.",
                  ""]
    rows = getattr(report, "refinement", [])
    if rows:
        lines += ["Refinement (labels verifying below the threshold were asked again with other evidence; "
                  "mean detection accuracy of the refined latents, first label vs kept label):", "",
                  "| category | labelled | refined | label changed | before | after |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.category} | {r.n_labelled} | {r.n_refined} | {r.n_changed} | {_acc(r.verification_before)} | "
                  f"{_acc(r.verification_after)} |" for r in rows] + [""]
    return lines


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _summary_note(summary) -> str:  # noqa: ANN001
    """Who wrote the summary and what the checker did, in one line."""
    c = summary.checker
    if summary.source == "template" and c.outcome == "template":
        return "Templated summary (no LLM configured); every number and latent id checked against report.json."
    who = f"LLM `{summary.llm}`" if summary.source == "llm" else "the template"
    what = {"accepted": "draft accepted by the checker", "stripped": "sentences failing the checker removed",
            "fallback": "LLM drafts failed, templated summary published"}.get(c.outcome, c.outcome)
    tail = f" {c.note}." if c.note else ""
    return f"Written by {who}: {what} after {c.attempts} attempt(s); checker ok: {c.ok}.{tail}"


def _summary_markdown(report) -> list[str]:  # noqa: ANN001
    s = getattr(report, "summary", None)
    if s is None:
        return []
    return ["## Executive summary", "", html.escape(s.text, quote=False), "", f"_{_summary_note(s)}_", ""]


def _fmt_ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def _sign_verdict(sign: str | None, rec: bool | None) -> str:
    if sign is None:
        return ""
    return f"planted {sign}: {'recovered' if rec else 'NOT recovered'}"


def _verdict(row) -> str:  # noqa: ANN001
    """A headline row's planted sign and whether it was recovered."""
    return _sign_verdict(row.planted, row.recovered)


def _head_comparison(report):  # noqa: ANN001, ANN202
    """The comparison behind the headline table."""
    return summary.headline(report)


def _stats_text(report, comp=None) -> str:  # noqa: ANN001
    """'exact permutation test ..., Holm-corrected across the 6 categories of a comparison, alpha 0.05'."""
    st = getattr(report, "statistics", None) or {}
    if comp is not None:
        return summary.comparison_method(comp)
    n = len(report.categories)
    return summary.method_text(st.get("test", "exact permutation test"), st.get("correction", "holm"),
                               st.get("alpha", 0.05), n)


@dataclass
class _Cells:
    """One category row of a comparison table, formatted."""

    name: str
    n_a: str
    n_b: str
    diff: str
    diff_sign: int
    shift: str
    p: str
    significant: bool
    truth: str


def _cells(row, a: str, truth: str) -> _Cells:  # noqa: ANN001
    return _Cells(name=row.name, n_a=f"{row.n_a} ({summary.fmt_share(row.share_a)})",
                  n_b=f"{row.n_b} ({summary.fmt_share(row.share_b)})",
                  diff=f"{summary.fmt_pp(row.diff_pp)} {_fmt_ci(row.ci95)}",
                  diff_sign=(row.diff_pp > 0) - (row.diff_pp < 0),
                  shift=summary.fmt_shift_pct(row.shift_pct, row.ci95_shift_pct, row.n_a, a),
                  p=summary.fmt_p(row.p_adjusted), significant=row.significant, truth=truth)


def _comparison_cells(report, comp) -> list[_Cells]:  # noqa: ANN001
    """Rows of a non-headline comparison, with the planted truth where the organisms have one."""
    from latentdiff.agent.replicates import comparison_id
    from latentdiff.agent.report.build import recovered

    signs = (getattr(report, "planted_signs", None) or {}).get(comparison_id(comp), {})
    return [_cells(r, comp.a, _sign_verdict(signs.get(r.name), recovered(signs.get(r.name), r)))
            for r in comp.categories]


def _headers(a: str, b: str) -> list[str]:
    return ["category", f"n {a} (share)", f"n {b} (share)", "difference, pp (95% CI)",
            "shift % (paper's form, 95% CI)", "corrected p", "significant", "truth"]


def _table_md(a: str, b: str, rows: list[_Cells]) -> list[str]:
    heads = _headers(a, b)
    out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    out += [f"| {c.name} | {c.n_a} | {c.n_b} | {c.diff} | {c.shift} | {c.p} | "
            f"{'**yes**' if c.significant else 'no'} | {c.truth} |" for c in rows]
    return out


def _title(comp) -> str:  # noqa: ANN001
    """Section title of a comparison."""
    if comp.kind == "headline_alt":
        return f"Headline with {comp.sets} sets: {comp.a} vs {comp.b}"
    if comp.kind == "vs_reference":
        return f"Against the reference (pair {comp.pair}): {comp.a} vs {comp.b}"
    if comp.kind == "control":
        return f"Control contrast: {comp.a} vs {comp.b}"
    sets = f" ({comp.sets})" if comp.sets else ""
    return f"{comp.kind.replace('_', ' ').capitalize()}: {comp.a} vs {comp.b}{sets}"


def _counts_text(comp) -> str:  # noqa: ANN001
    text = f"{comp.n_a} latents of {comp.a} vs {comp.n_b} of {comp.b} counted"
    if comp.n_scaffold_a or comp.n_scaffold_b:
        text += f" (scaffolding left out: {comp.n_scaffold_a} and {comp.n_scaffold_b})"
    return text + "."


def _others(report) -> list:  # noqa: ANN001
    head = _head_comparison(report)
    return [c for c in report.comparisons if c is not head]


def _comparison_md(report, comp, heading: str, describe: bool = True) -> list[str]:  # noqa: ANN001
    """One comparison's section: heading, what the sets are, counts, and its table or its 'too few' note."""
    lines = [heading, ""] + ([comp.description, ""] if describe else []) + [_counts_text(comp), ""]
    if not comp.tested:
        return lines + [f"**{summary.too_few_text(comp)}**: not tested.", ""]
    return lines + _table_md(comp.a, comp.b, _comparison_cells(report, comp)) + [""]


def _comparisons_md(report) -> list[str]:  # noqa: ANN001
    return [line for comp in _others(report) for line in _comparison_md(report, comp, f"## {_title(comp)}")]


def _oracle_intro(o) -> str:  # noqa: ANN001
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    return (f"Organisms know each document's stream. Here every latent is labelled by the majority stream of its "
            f"top examples (neutral or no stream with half of them: other) instead of the judge's category, and "
            f"the comparisons are redone with those labels. The judge agrees with this oracle on "
            f"{pct(o.headline_accuracy)} of the headline models' specific latents and {pct(o.overall_accuracy)} of "
            f"all labelled latents.")


def _oracle_md(report) -> list[str]:  # noqa: ANN001
    o = getattr(report, "oracle", None)
    if o is None:
        return []
    lines = ["## Ground truth for labels (organisms)", "", _oracle_intro(o), "",
             "| oracle category | latents | judge agrees | accuracy |", "|---|---|---|---|"]
    lines += [f"| {r.category} | {r.n} | {r.correct} | {_acc(r.accuracy)} |" for r in o.accuracy] + [""]
    for comp in o.comparisons:
        lines += _comparison_md(report, comp, f"### Oracle labels: {_title(comp)}", describe=False)
    return lines


def _replicate_groups(report) -> dict[str, list]:  # noqa: ANN001
    groups: dict[str, list] = {}
    for r in getattr(report, "replicates", []):
        groups.setdefault(r.comparison, []).append(r)
    return groups


def _n_replicates(report) -> int:  # noqa: ANN001
    return int((getattr(report, "statistics", None) or {}).get("n_replicates", 1))


def _per_seed(r) -> str:  # noqa: ANN001
    return ", ".join(f"{d:+.1f}{'*' if s else ''}" if t else f"{d:+.1f} (not tested)"
                     for d, s, t in zip(r.diff_pp, r.significant, r.tested))


def _replicates_md(report) -> list[str]:  # noqa: ANN001
    lines = ["## Replicates (crosscoder seeds)", ""]
    groups = _replicate_groups(report)
    if _n_replicates(report) <= 1 or not groups:
        return lines + [f"{_n_replicates(report)} crosscoder seed: no replicates.", ""]
    lines += ["Per comparison and category: the share difference (pp) of each replicate (* significant after "
              "correction), the share of replicates whose sign is the pooled sign, and the pooled (mean) "
              "difference. Replicates share the data: agreement shows robustness to the seed, not to the data.", ""]
    for cid, rows in groups.items():
        lines += [f"### {cid}", "", f"Replicates: {', '.join(rows[0].crosscoders)}.", "",
                  "| category | difference per replicate (pp) | sign agreement | pooled difference (pp) | "
                  "significant in the pooled direction |", "|---|---|---|---|---|"]
        lines += [f"| {r.category} | {_per_seed(r)} | {100 * r.sign_agreement:.0f}% | {r.pooled_diff_pp:+.1f} | "
                  f"{r.n_significant_same_sign} of {len(r.crosscoders)} |" for r in rows] + [""]
    return lines


def _scaffold_text(report) -> str:  # noqa: ANN001
    n = len(getattr(report, "scaffold", []))
    return (f"{n} latent{'s' if n != 1 else ''} flagged as scaffolding (activation mostly on special or template "
            "tokens): counted apart, left out of the category shares, and marked on their cards.")


def _headline_intro(report) -> tuple[str, str | None]:  # noqa: ANN001
    """The test sentence, and the note of an untested headline (None: tested)."""
    head = report.headline or {}
    comp = _head_comparison(report)
    stats = f"Test: {_stats_text(report, comp)}; significant = corrected p below alpha."
    explain = ("Each row: the category's latents in each set (share of the set), the difference of the shares in "
               "percentage points with its 95% CI (Newcombe), the paper's percent form 100 (share A / share B - 1) "
               "with its 95% CI (+inf: only in A), the corrected p-value, and the planted truth where known.")
    sets = f"Sets: {head.get('sets')}. " if head.get("sets") else ""
    text = f"{sets}{stats} {explain}"
    if comp is not None:
        text += " " + _counts_text(comp)
    note = None
    if head.get("status") == "too_few" or (comp is not None and not comp.tested):
        note = head.get("note") or (summary.too_few_text(comp) if comp is not None else "too few latents to compare")
    return text, note


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _md(text: object) -> str:
    """Text from labels, examples or configs made inert in Markdown: no raw HTML, no table breaks."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("`", "'")


def _confidence_intro(v) -> str:  # noqa: ANN001
    way = "without" if v.excluded else "with"
    return (f"{len(v.low_confidence)} labels have a calibrated confidence below {v.threshold:g} (for the embedding "
            f"judge its margin between the first and second category; for an LLM judge its own number capped by "
            f"the detection score and the agreement across example folds). The comparisons above "
            f"{'keep' if v.excluded else 'leave out'} them; here they are redone {way} them, so a finding that "
            f"rests on unsure labels shows as a change between the two.")


def _confidence_md(report) -> list[str]:  # noqa: ANN001
    v = getattr(report, "confidence", None)
    if v is None:
        return []
    lines = ["## Low-confidence labels", "", _confidence_intro(v), ""]
    if v.low_confidence:
        lines += ["Low-confidence: " + ", ".join(f"`{k}`" for k in v.low_confidence[:60])
                  + (f" and {len(v.low_confidence) - 60} more" if len(v.low_confidence) > 60 else "") + ".", ""]
    for comp in v.comparisons:
        lines += _comparison_md(report, comp, f"### {_title(comp)}", describe=False)
    return lines


def _card_scaffold(card) -> str:  # noqa: ANN001
    if not getattr(card, "scaffold", False):
        return ""
    share = card.scaffold_share
    return "scaffolding" + (f" ({100 * share:.0f}% of activation on special tokens)" if share is not None else "")


def render_markdown(report, plots: dict[str, Path], max_cards: int) -> str:  # noqa: ANN001
    """The report as Markdown (plots referenced as files next to it)."""
    head = report.headline or {}
    lines = [f"# latentdiff report: {report.run}", ""] + _summary_markdown(report)
    lines += ["## Models", ""] + [f"- `{m['name']}` ({m['role']}): `{m['path']}`" for m in report.models] + [""]
    d = report.data
    lines += [f"Layer {d.get('layer')}, context {d.get('ctx_len')} tokens, {d.get('n_tokens'):,} training tokens; "
              f"excluded positions: {d.get('excluded')}.", ""]
    lines += ["## Crosscoder quality", ""]
    for name, m in report.crosscoders.items():
        fvu = ", ".join(f"{k[4:]} {v:.3f}" for k, v in m.items() if k.startswith("fvu_"))
        lines.append(f"- `{name}`: FVU {fvu}; L0 {m.get('l0', 0):.1f}; dead {100 * m.get('dead_frac', 0):.1f}%")
    lines += ["", "## Selection", "", f"Method `{report.selection['method']}`; sides per pair: "
              f"{report.selection.get('sides')}", ""]
    intro, note = _headline_intro(report)
    a, b = str(head.get("a")), str(head.get("b"))
    lines += [f"## Headline: {a} vs {b}", "", head.get("description", ""), "", intro, ""]
    if note is not None:
        lines += [f"**{note}**: not tested.", ""]
    else:
        rows = [_cells(r, a, _verdict(r)) for r in report.categories]
        lines += _table_md(a, b, rows)
        lines += [""] + [f"![{k}](plots/{p.name})" for k, p in plots.items()] + [""]
    lines += _comparisons_md(report)
    lines += _replicates_md(report)
    lines += _oracle_md(report)
    lines += _confidence_md(report)
    lines += ["## Scaffolding latents", "", _scaffold_text(report), ""]
    if getattr(report, "scaffold", []):
        lines += ["Flagged: " + ", ".join(f"`{k}`" for k in report.scaffold[:50]) + ".", ""]
    lines += ["## Verification (detection balanced accuracy)", ""]
    lines += [f"- {c}: {v:.2f}" for c, v in sorted(report.verification.items())]
    lines += ["", f"Labels by judge `{report.judge}`. Failures: {len(report.failures)}; skipped: "
              f"{len(report.skipped)}.", ""]
    lines += [f"- `{f['key']}`: {_md(f['reason'])}" for f in report.failures[:20]]
    lines += [""] + _labelling_lines(report)
    views = latent_views(report)
    lines += ["", "## Latents", "", f"All {len(views)} labelled latents, ordered by category then Delta-norm "
              "(most specific first); report.html has the same table with filters, and a card for each.", "",
              "| latent | name | category | sets | Delta-norm | nu_eps | nu_r | verification | confidence | flags |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {v.id} | {_md(v.name or 'unlabelled')} | {_md(v.category or '-')} | {', '.join(v.set_names)} | "
              f"{v.delta_norm:.2f} | {_num(v.nu_eps)} | {_num(v.nu_r)} | {_num(v.verification)} | "
              f"{_num(v.confidence)} | {', '.join(v.flags)} |" for v in views]
    shown = views[:max_cards]
    lines += ["", f"### Latent cards ({len(shown)} of {len(views)} shown; report.html has all)", ""]
    for v in shown:
        conf = "" if v.confidence is None else f"confidence {v.confidence:.2f}" + (" (low)" if v.low_confidence else "")
        lines += [f"#### {v.id}: {_md(v.name or 'unlabelled')}", "",
                  f"category **{_md(v.category or '-')}**, {conf + ', ' if conf else ''}"
                  f"sets: {', '.join(v.set_names)}; "
                  f"Delta-norm {v.delta_text}, nu_eps {_num(v.nu_eps)}, nu_r {_num(v.nu_r)}, freq {v.freq:.4f}, "
                  f"verification {_num(v.verification)}" + (f"; **{v.scaffold_text}**" if v.scaffold else "")
                  + (f"; the judge's name was only punctuation or special tokens: {_md(v.raw_name)}"
                     if v.name_flagged else ""), "",
                  _md(v.description or v.failure or ""), ""]
        lines += [f"> {_md(ex.replace(chr(10), ' '))}" for ex in v.examples] + [""]
    return "\n".join(lines) + "\n"


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _highlight(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"&lt;&lt;(.*?)&gt;&gt;", r"<mark>\1</mark>", escaped, flags=re.S)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}.pos{color:#2b8a3e}.neg{color:#c92a2a}
tr.sig td{font-weight:600}.too-few{color:#8a5a00}.scaffold-tag{color:#8a5a00;font-style:italic}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.ex{font-family:monospace;white-space:pre-wrap;background:#f8f9fa;padding:4px;margin:4px 0}
mark{background:#ffe066}img{max-width:100%;height:auto}.low-confidence{color:#c92a2a;font-weight:600}
.table-wrap{max-width:100%;overflow-x:auto}.toc{font-size:90%;margin-bottom:1em}.flag{color:#8a5a00}
.filters{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin:8px 0}
#latent-table th{cursor:pointer;user-select:none}#latent-table td{text-align:left}
.card .stats{color:#555;font-size:90%}.hist rect{fill:#e8590c}.tok{border-radius:2px}
.card .lens code{background:#eef;margin:0 2px;padding:0 2px}
.card .kind{color:#777;font-size:80%;margin-right:6px}
.card .page{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin:6px 0}
.card .top{font-size:85%}.card.low{border-color:#f1a7a7}
.card .page>div{min-width:0;max-width:100%;overflow-wrap:anywhere}.card .lens{flex:1 1 280px}
@media (max-width:600px){body{margin:0.5em auto;padding:0 0.5em;font-size:15px}td,th{padding:3px 5px}
 .ex{font-size:12px}h1{font-size:1.4em}}
"""


_CITE_HTML_RE = re.compile(r"\[([A-Za-z_][\w.-]*:\d+)\]")


def _set_name(pair: str, side: str) -> str:
    """Readable name of the set a latent belongs to for one pair."""
    return {"finetuned": f"{pair}-specific", "base": f"base-specific (vs {pair})",
            "shared": f"reference (pair {pair})"}.get(side, f"{side} ({pair})")


@dataclass
class _LatentView:
    """One latent of the report (all its pair rows merged): the table row and the card."""

    id: str
    name: str | None
    raw_name: str | None
    name_flagged: bool
    category: str | None
    description: str | None
    failure: str | None
    set_names: list[str]
    delta_norm: float
    delta_text: str
    nu_eps: float | None
    nu_r: float | None
    freq: float
    verification: float | None
    confidence: float | None
    low_confidence: bool
    scaffold: bool
    scaffold_text: str
    examples: list[str]
    flags: list[str]
    shaded: list = field(default_factory=list)
    lens: dict = field(default_factory=dict)
    ablation: dict = field(default_factory=dict)
    histogram: object | None = None
    max_act: float = 0.0


def latent_views(report) -> list[_LatentView]:  # noqa: ANN001
    """Every labelled latent once, ordered by category (the report's order) then by Delta-norm, descending."""
    pages = {p.id: p for p in getattr(report, "pages", [])}
    groups: dict[str, list] = {}
    for c in report.latents:
        groups.setdefault(c.id, []).append(c)
    order = [row.name for row in report.categories] or []
    views = []
    for lid, cards in groups.items():
        top = max(cards, key=lambda c: c.delta_norm)
        first = cards[0]
        page = pages.get(lid)
        flags = ([] if first.name else ["unlabelled"]) + (["low confidence"] if getattr(first, "low_confidence", False)
                                                           else []) \
            + (["scaffolding"] if getattr(first, "scaffold", False) else []) \
            + (["name replaced"] if getattr(first, "name_flagged", False) else [])
        views.append(_LatentView(
            id=lid, name=first.name, raw_name=getattr(first, "raw_name", None),
            name_flagged=getattr(first, "name_flagged", False), category=first.category,
            description=first.description, failure=first.failure,
            set_names=[_set_name(c.pair, c.side) for c in cards], delta_norm=top.delta_norm,
            delta_text=", ".join(f"{c.delta_norm:.2f} ({c.pair})" for c in cards), nu_eps=top.nu_eps, nu_r=top.nu_r,
            freq=top.freq, verification=first.verification, confidence=getattr(first, "confidence", None),
            low_confidence=getattr(first, "low_confidence", False), scaffold=getattr(first, "scaffold", False),
            scaffold_text=_card_scaffold(first), examples=list(first.examples), flags=flags,
            shaded=list(page.shaded) if page else [], lens=dict(page.lens) if page else {},
            ablation=dict(page.ablation) if page else {}, histogram=page.histogram if page else None,
            max_act=max([x.max_act for x in page.shaded] + [0.0]) if page else 0.0))

    def rank(v: _LatentView) -> tuple[int, float]:
        cat = v.category or "~"
        return (order.index(cat) if cat in order else len(order), -v.delta_norm)

    return sorted(views, key=rank)


def _sections(report, comps, cls: str = "comparison", prefix: str = "") -> list[dict]:  # noqa: ANN001
    """Template data of each comparison section."""
    from latentdiff.agent.replicates import comparison_id

    out = []
    for comp in comps:
        title = _title(comp)
        out.append({"kind": comp.kind, "title": prefix + title, "description": comp.description,
                    "describe": not prefix and cls == "comparison", "counts": _counts_text(comp),
                    "tested": comp.tested, "too_few": summary.too_few_text(comp) if not comp.tested else "",
                    "rows": _comparison_cells(report, comp) if comp.tested else [], "a": comp.a, "b": comp.b,
                    "anchor": re.sub(r"[^A-Za-z0-9_-]+", "-", f"{cls.split()[-1]}-{comparison_id(comp)}")})
    return out


def _paragraphs(report) -> list:  # noqa: ANN001
    """The executive summary as short paragraphs (at most 3 sentences), cited ids linked to their cards."""
    from markupsafe import Markup

    s = getattr(report, "summary", None)
    if s is None:
        return []
    groups: list[list[str]] = []  # one paragraph per comparison (templated), else at most 3 sentences each
    prev: str | None = None
    for x in s.sentences:
        same = x.comparison == prev if x.comparison is not None else (prev is None and len(groups[-1]) < 3
                                                                        if groups else False)
        if groups and same:
            groups[-1].append(x.text)
        else:
            groups.append([x.text])
        prev = x.comparison
    paras = [" ".join(g) for g in groups] or [s.text]
    return [Markup(_CITE_HTML_RE.sub(lambda m: f"[<a href='#latent-{m.group(1)}'>{m.group(1)}</a>]",
                                     html.escape(p))) for p in paras]


def _hist_svg(h) -> str:  # noqa: ANN001
    """An inline SVG bar chart of a latent's activation histogram (no script, no server)."""
    peak = max(h.counts + [1])
    w, ht = 8, 40
    bars = "".join(
        f"<rect x='{i * w}' y='{ht - ht * c / peak:.1f}' width='{w - 1}' height='{ht * c / peak:.1f}'>"
        f"<title>{h.edges[i]:.3g}-{h.edges[i + 1]:.3g}: {c} tokens</title></rect>"
        for i, c in enumerate(h.counts))
    return (f"<svg class='hist' width='{w * len(h.counts)}' height='{ht}' role='img' "
            f"aria-label='activation histogram'>{bars}</svg>")


def _shade(tok: str, a: float, top: float) -> str:
    """One token, its background shaded by its activation relative to the latent's largest, the value on
    hover; a silent token is plain text (keeps the page small)."""
    if a <= 0 or top <= 0:
        return html.escape(tok)
    alpha = max(0.05, min(1.0, a / top))
    return f"<span class='tok' title='{a:.3f}' style='background:rgba(255,140,0,{alpha:.2f})'>{html.escape(tok)}</span>"


def _env():  # noqa: ANN202
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)


def _card_helpers() -> dict:
    from markupsafe import Markup

    return {"fmt": lambda x: "-" if x is None else f"{x:.2f}", "hist_svg": lambda h: Markup(_hist_svg(h)),
            "shade": lambda x, top: Markup("".join(_shade(t, a, top) for t, a in zip(x.tokens, x.activations))),
            "highlight": lambda t: Markup(_highlight(t))}


def render_latent_page(report, key: str) -> str | None:  # noqa: ANN001
    """One latent's page (`latentdiff serve` /latent/ID), or None when the report has no such latent."""
    from markupsafe import Markup

    view = next((v for v in latent_views(report) if v.id == key), None)
    if view is None:
        return None
    return _env().get_template("latent.html.j2").render(l=view, css=Markup(_CSS), **_card_helpers())


def render_html(report, plots: dict[str, Path], max_cards: int) -> str:  # noqa: ANN001, ARG001
    """A single self-contained HTML page (agent/report/templates/report.html.j2). Every latent has a row in
    the filterable latent table and a card; `max_cards` only cuts report.md."""
    from markupsafe import Markup

    env = _env()
    head = report.headline or {}
    a, b = str(head.get("a")), str(head.get("b"))
    intro, note = _headline_intro(report)
    s = getattr(report, "summary", None)
    o, v = getattr(report, "oracle", None), getattr(report, "confidence", None)
    views = latent_views(report)
    order = ["shift", "shares", "selection"]
    ranked = sorted(plots.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    ctx = {
        "r": report, "css": Markup(_CSS), "a": a, "b": b, "head_description": head.get("description", ""),
        "intro": intro, "note": note,
        "head_rows": [] if note is not None else [_cells(r, a, _verdict(r)) for r in report.categories],
        "plots": [(k, _png(p)) for k, p in ranked],
        "summary": {"paragraphs": _paragraphs(report), "note": _summary_note(s).replace("`", "")} if s else None,
        "crosscoders": [(n, ", ".join(f"{k} {val:.3f}" for k, val in m.items()
                                      if k.startswith("fvu_") or k in ("l0", "dead_frac")))
                        for n, m in report.crosscoders.items()],
        "comparisons": _sections(report, _others(report)),
        "replicates": list(_replicate_groups(report).items()) if _n_replicates(report) > 1 else [],
        "n_replicates": _n_replicates(report), "per_seed": _per_seed,
        "oracle_intro": _oracle_intro(o) if o else "",
        "oracle_comparisons": _sections(report, o.comparisons, "comparison oracle", "Oracle labels: ") if o else [],
        "confidence_intro": _confidence_intro(v) if v else "",
        "confidence_comparisons": _sections(report, v.comparisons, "comparison confidence", "") if v else [],
        "scaffold_text": _scaffold_text(report), "verification": sorted(report.verification.items()),
        "acc": _acc, "num": lambda x: "" if x is None else x, "headers": _headers, **_card_helpers(),
        "categories": [r.name for r in report.categories] or sorted({x.category for x in views if x.category}),
        "sets": sorted({n for x in views for n in x.set_names}), "latents": views,
    }
    return env.get_template("report.html.j2").render(**ctx)
