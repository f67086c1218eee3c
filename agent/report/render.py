"""report.md and a self-contained report.html (plots embedded as data URIs, no external assets)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
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


def _labelling_html(report) -> str:  # noqa: ANN001
    """The same as `_labelling_lines`, as HTML."""
    e = html.escape
    out = ""
    if getattr(report, "stop_reason", None):
        out += (f"<p id='stop-reason'>Labelling stopped: {e(report.stop_reason)}; {len(report.skipped)} candidate "
                "latents left unlabelled.</p>")
    rows = getattr(report, "refinement", [])
    if rows:
        out += ("<table id='refinement'><tr><th>category</th><th>labelled</th><th>refined</th><th>label changed</th>"
                "<th>verification before</th><th>after</th></tr>"
                + "".join(f"<tr><td>{e(r.category)}</td><td>{r.n_labelled}</td><td>{r.n_refined}</td>"
                          f"<td>{r.n_changed}</td><td>{_acc(r.verification_before)}</td>"
                          f"<td>{_acc(r.verification_after)}</td></tr>" for r in rows) + "</table>")
    return out


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


def _table_html(a: str, b: str, rows: list[_Cells], table_id: str | None = None, cls: str = "comparison") -> str:
    e = html.escape
    ident = f" id='{table_id}'" if table_id else ""
    head = "".join(f"<th>{e(h)}</th>" for h in _headers(a, b))
    body = "".join(
        f"<tr class='{'sig' if c.significant else 'ns'}'><td>{e(c.name)}</td><td>{e(c.n_a)}</td><td>{e(c.n_b)}</td>"
        f"<td class='{'pos' if c.diff_sign > 0 else 'neg' if c.diff_sign < 0 else 'zero'}'>{e(c.diff)}</td>"
        f"<td>{e(c.shift)}</td><td>{e(c.p)}</td><td>{'<b>yes</b>' if c.significant else 'no'}</td>"
        f"<td>{e(c.truth)}</td></tr>" for c in rows)
    return f"<table{ident} class='{cls}'><tr>{head}</tr>{body}</table>"


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


def _comparison_html(report, comp, heading: str, describe: bool = True, cls: str = "comparison") -> str:  # noqa: ANN001
    """The same as `_comparison_md`, as an HTML section (heading given as HTML)."""
    e = html.escape
    out = (f"<section class='{cls}' data-kind='{e(comp.kind)}'>{heading}"
           + (f"<p>{e(comp.description)}</p>" if describe else "") + f"<p>{e(_counts_text(comp))}</p>")
    if not comp.tested:
        return out + f"<p class='too-few'><b>{e(summary.too_few_text(comp))}</b>: not tested.</p></section>"
    return out + _table_html(comp.a, comp.b, _comparison_cells(report, comp), cls=cls) + "</section>"


def _comparisons_md(report) -> list[str]:  # noqa: ANN001
    return [line for comp in _others(report) for line in _comparison_md(report, comp, f"## {_title(comp)}")]


def _comparisons_html(report) -> str:  # noqa: ANN001
    return "".join(_comparison_html(report, comp, f"<h2>{html.escape(_title(comp))}</h2>") for comp in _others(report))


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


def _oracle_html(report) -> str:  # noqa: ANN001
    e = html.escape
    o = getattr(report, "oracle", None)
    if o is None:
        return ""
    out = (f"<section id='oracle'><h2>Ground truth for labels (organisms)</h2><p>{e(_oracle_intro(o))}</p>"
           "<table class='oracle-accuracy'><tr><th>oracle category</th><th>latents</th><th>judge agrees</th>"
           "<th>accuracy</th></tr>"
           + "".join(f"<tr><td>{e(r.category)}</td><td>{r.n}</td><td>{r.correct}</td><td>{_acc(r.accuracy)}</td></tr>"
                     for r in o.accuracy) + "</table>")
    for comp in o.comparisons:
        out += _comparison_html(report, comp, f"<h3>Oracle labels: {e(_title(comp))}</h3>", describe=False,
                                cls="comparison oracle")
    return out + "</section>"


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


def _replicates_html(report) -> str:  # noqa: ANN001
    e = html.escape
    groups = _replicate_groups(report)
    if _n_replicates(report) <= 1 or not groups:
        return (f"<h2 id='replicates'>Replicates</h2><p>{_n_replicates(report)} crosscoder seed: "
                "no replicates.</p>")
    out = ("<h2 id='replicates'>Replicates (crosscoder seeds)</h2><p>Share difference (pp) per replicate "
           "(* significant after correction), sign agreement and pooled (mean) difference. Replicates share "
           "the data: agreement shows robustness to the seed, not to the data.</p>")
    for cid, rows in groups.items():
        out += (f"<h3>{e(cid)}</h3><p>Replicates: {e(', '.join(rows[0].crosscoders))}.</p><table class='replicates'>"
                "<tr><th>category</th><th>difference per replicate (pp)</th><th>sign agreement</th>"
                "<th>pooled difference (pp)</th><th>significant in the pooled direction</th></tr>"
                + "".join(f"<tr><td>{e(r.category)}</td><td>{e(_per_seed(r))}</td><td>{100 * r.sign_agreement:.0f}%"
                          f"</td><td>{r.pooled_diff_pp:+.1f}</td><td>{r.n_significant_same_sign} of "
                          f"{len(r.crosscoders)}</td></tr>" for r in rows) + "</table>")
    return out


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


def _confidence_html(report) -> str:  # noqa: ANN001
    e = html.escape
    v = getattr(report, "confidence", None)
    if v is None:
        return ""
    ids = ", ".join(f"<a href='#latent-{e(k)}'>{e(k)}</a>" for k in v.low_confidence[:60])
    return (f"<section id='low-confidence'><h2>Low-confidence labels</h2><p>{e(_confidence_intro(v))}</p>"
            f"<p>{ids}</p>"
            + "".join(_comparison_html(report, c, f"<h3>{e(_title(c))}</h3>", describe=False,
                                       cls="comparison confidence") for c in v.comparisons) + "</section>")


def _card_confidence(card) -> str:  # noqa: ANN001
    c = getattr(card, "confidence", None)
    if c is None:
        return ""
    return f"confidence {c:.2f}" + (" (low)" if getattr(card, "low_confidence", False) else "")


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
    lines += ["", "## Latents", ""]
    for card in report.latents[:max_cards]:
        scaf, conf = _card_scaffold(card), _card_confidence(card)
        lines += [f"### {card.id} ({card.pair}, {card.side}): {_md(card.name or 'unlabelled')}", "",
                  f"category **{_md(card.category)}**, {conf + ', ' if conf else ''}Delta-norm {card.delta_norm:.2f}, "
                  f"nu_eps {_num(card.nu_eps)}, nu_r {_num(card.nu_r)}, freq {card.freq:.4f}, "
                  f"verification {_num(card.verification)}" + (f"; **{scaf}**" if scaf else ""), "",
                  _md(card.description or card.failure or ""), ""]
        lines += [f"> {_md(ex.replace(chr(10), ' '))}" for ex in card.examples] + [""]
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
mark{background:#ffe066}img{max-width:100%}.low-confidence{color:#c92a2a;font-weight:600}
"""


_CITE_HTML_RE = re.compile(r"\[([A-Za-z_][\w.-]*:\d+)\]")


def _summary_html(report) -> str:  # noqa: ANN001
    """The summary section; cited ids link to their latent cards."""
    s = getattr(report, "summary", None)
    if s is None:
        return ""
    text = _CITE_HTML_RE.sub(lambda m: f"[<a href='#latent-{m.group(1)}'>{m.group(1)}</a>]", html.escape(s.text))
    return (f"<h2 id='summary'>Executive summary</h2><p class='summary'>{text}</p>"
            f"<p class='summary-note'><i>{html.escape(_summary_note(s)).replace('`', '')}</i></p>")


def render_html(report, plots: dict[str, Path], max_cards: int) -> str:  # noqa: ANN001
    """A single self-contained HTML page."""
    e = html.escape
    head = report.headline or {}
    a, b = str(head.get("a")), str(head.get("b"))
    intro, note = _headline_intro(report)
    if note is not None:
        table = f"<p id='shift-table-note' class='too-few'><b>{e(note)}</b>: not tested.</p>"
        imgs = ""
    else:
        table = _table_html(a, b, [_cells(r, a, _verdict(r)) for r in report.categories], table_id="shift-table")
        imgs = "".join(f"<figure><img id='plot-{e(k)}' alt='{e(k)}' src='{_png(p)}'></figure>"
                       for k, p in plots.items())
    cc = "".join(f"<li><b>{e(n)}</b>: " + ", ".join(f"{e(k)} {v:.3f}" for k, v in m.items()
                                                     if k.startswith("fvu_") or k in ("l0", "dead_frac")) + "</li>"
                 for n, m in report.crosscoders.items())
    cards = "".join(
        f"<div class='card{' scaffold' if getattr(c, 'scaffold', False) else ''}' id='latent-{e(c.id)}'>"
        f"<b>{e(c.id)}</b> ({e(c.pair)}, {e(c.side)}): "
        f"<b>{e(c.name or 'unlabelled')}</b> &middot; {e(c.category or '-')} &middot; Delta-norm {c.delta_norm:.2f}"
        f" &middot; verification {c.verification if c.verification is None else round(c.verification, 2)}"
        + (f" &middot; <span class='{'low-confidence' if getattr(c, 'low_confidence', False) else 'confidence'}'>"
           f"{e(_card_confidence(c))}</span>" if _card_confidence(c) else "")
        + (f" &middot; <span class='scaffold-tag'>{e(_card_scaffold(c))}</span>" if _card_scaffold(c) else "")
        + f"<div>{e(c.description or c.failure or '')}</div>"
        + "".join(f"<div class='ex'>{_highlight(x)}</div>" for x in c.examples) + "</div>"
        for c in report.latents[:max_cards])
    ver = "".join(f"<li>{e(c)}: {v:.2f}</li>" for c, v in sorted(report.verification.items()))
    scaffold_ids = ", ".join(f"<a href='#latent-{e(k)}'>{e(k)}</a>" for k in getattr(report, "scaffold", [])[:50])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>latentdiff report: {e(report.run)}</title>
<style>{_CSS}</style></head><body>
<h1>latentdiff report: {e(report.run)}</h1>
{_summary_html(report)}
<h2>Models</h2><ul>{''.join(f"<li>{e(m['name'])} ({e(m['role'])}): <code>{e(m['path'])}</code></li>"
                             for m in report.models)}</ul>
<h2>Crosscoder quality</h2><ul>{cc}</ul>
<h2 id="headline">Headline: {e(a)} vs {e(b)}</h2>
<p>{e(head.get('description', ''))}</p>
<p id="statistics">{e(intro)}</p>
{table}
{imgs}
{_comparisons_html(report)}
{_replicates_html(report)}
{_oracle_html(report)}
{_confidence_html(report)}
<h2 id="scaffolding">Scaffolding latents</h2><p>{e(_scaffold_text(report))}</p><p>{scaffold_ids}</p>
<h2>Verification</h2><ul>{ver}</ul>
{_labelling_html(report)}
<p>Labels by judge <code>{e(report.judge)}</code>. Failures: {len(report.failures)}; skipped: {len(report.skipped)}.</p>
<h2>Latents</h2>{cards}
</body></html>
"""
