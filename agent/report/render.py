"""report.md and a self-contained report.html (plots embedded as data URIs, no external assets)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


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


def _fmt_ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def _verdict(row) -> str:  # noqa: ANN001
    if row.planted is None:
        return ""
    if row.planted not in ("+", "-"):
        return f"planted {row.planted}"
    return f"planted {row.planted}: {'recovered' if row.recovered else 'NOT recovered'}"


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
    return ["## Executive summary", "", s.text, "", f"_{_summary_note(s)}_", ""]


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
    lines += [f"## Headline: {head.get('a')} vs {head.get('b')}", "", head.get("description", ""), "",
              "| category | shift % | 95% CI | n " + str(head.get("a")) + " | n " + str(head.get("b")) + " | truth |",
              "|---|---|---|---|---|---|"]
    for r in report.categories:
        lines.append(f"| {r.name} | {r.shift_pct:+.1f} | {_fmt_ci(r.ci95)} | {r.n_finetuned} | {r.n_base} | "
                     f"{_verdict(r)} |")
    lines += [""] + [f"![{k}](plots/{p.name})" for k, p in plots.items()] + [""]
    for net in report.net_of_control:
        lines += [f"## {net.a} net of control {net.control}", "", net.description, "",
                  "| category | net shift (pp) | 95% CI | plain shift % | control shift % |", "|---|---|---|---|---|"]
        lines += [f"| {r.name} | {r.shift_pct:+.1f} | {_fmt_ci(r.ci95)} | {r.plain_shift_pct:+.1f} | "
                  f"{r.control_shift_pct:+.1f} |" for r in net.categories] + [""]
    lines += ["## Verification (detection balanced accuracy)", ""]
    lines += [f"- {c}: {v:.2f}" for c, v in sorted(report.verification.items())]
    lines += ["", f"Labels by judge `{report.judge}`. Failures: {len(report.failures)}; skipped: "
              f"{len(report.skipped)}.", ""]
    lines += [f"- `{f['key']}`: {f['reason']}" for f in report.failures[:20]]
    lines += [""] + _labelling_lines(report)
    lines += ["", "## Latents", ""]
    for card in report.latents[:max_cards]:
        lines += [f"### {card.id} ({card.pair}, {card.side}): {card.name or 'unlabelled'}", "",
                  f"category **{card.category}**, Delta-norm {card.delta_norm:.2f}, nu_eps {card.nu_eps}, "
                  f"nu_r {card.nu_r}, freq {card.freq:.4f}, verification {card.verification}", "",
                  card.description or card.failure or "", ""]
        lines += [f"> {ex.replace(chr(10), ' ')}" for ex in card.examples] + [""]
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
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.ex{font-family:monospace;white-space:pre-wrap;background:#f8f9fa;padding:4px;margin:4px 0}
mark{background:#ffe066}img{max-width:100%}
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
    rows = "".join(
        f"<tr><td>{e(r.name)}</td><td class='{'pos' if r.shift_pct > 0 else 'neg'}'>{r.shift_pct:+.1f}</td>"
        f"<td>{_fmt_ci(r.ci95)}</td><td>{r.n_finetuned}</td><td>{r.n_base}</td><td>{e(_verdict(r))}</td></tr>"
        for r in report.categories)
    imgs = "".join(f"<figure><img id='plot-{e(k)}' alt='{e(k)}' src='{_png(p)}'></figure>" for k, p in plots.items())
    cc = "".join(f"<li><b>{e(n)}</b>: " + ", ".join(f"{e(k)} {v:.3f}" for k, v in m.items()
                                                     if k.startswith("fvu_") or k in ("l0", "dead_frac")) + "</li>"
                 for n, m in report.crosscoders.items())
    cards = "".join(
        f"<div class='card' id='latent-{e(c.id)}'><b>{e(c.id)}</b> ({e(c.pair)}, {e(c.side)}): "
        f"<b>{e(c.name or 'unlabelled')}</b> &middot; {e(c.category or '-')} &middot; Delta-norm {c.delta_norm:.2f}"
        f" &middot; verification {c.verification if c.verification is None else round(c.verification, 2)}"
        f"<div>{e(c.description or c.failure or '')}</div>"
        + "".join(f"<div class='ex'>{_highlight(x)}</div>" for x in c.examples) + "</div>"
        for c in report.latents[:max_cards])
    ver = "".join(f"<li>{e(c)}: {v:.2f}</li>" for c, v in sorted(report.verification.items()))
    nets = "".join(
        f"<h2>{e(n.a)} net of control {e(n.control)}</h2><p>{e(n.description)}</p><table class='net'>"
        "<tr><th>category</th><th>net shift (pp)</th><th>95% CI</th><th>plain %</th><th>control %</th></tr>"
        + "".join(f"<tr><td>{e(r.name)}</td><td>{r.shift_pct:+.1f}</td><td>{_fmt_ci(r.ci95)}</td>"
                  f"<td>{r.plain_shift_pct:+.1f}</td><td>{r.control_shift_pct:+.1f}</td></tr>" for r in n.categories)
        + "</table>" for n in report.net_of_control)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>latentdiff report: {e(report.run)}</title>
<style>{_CSS}</style></head><body>
<h1>latentdiff report: {e(report.run)}</h1>
{_summary_html(report)}
<h2>Models</h2><ul>{''.join(f"<li>{e(m['name'])} ({e(m['role'])}): <code>{e(m['path'])}</code></li>"
                             for m in report.models)}</ul>
<h2>Crosscoder quality</h2><ul>{cc}</ul>
<h2 id="headline">Headline: {e(str(head.get('a')))} vs {e(str(head.get('b')))}</h2>
<p>{e(head.get('description', ''))}</p>
<table id="shift-table"><tr><th>category</th><th>shift %</th><th>95% CI</th><th>n {e(str(head.get('a')))}</th>
<th>n {e(str(head.get('b')))}</th><th>truth</th></tr>{rows}</table>
{imgs}
{nets}
<h2>Verification</h2><ul>{ver}</ul>
{_labelling_html(report)}
<p>Labels by judge <code>{e(report.judge)}</code>. Failures: {len(report.failures)}; skipped: {len(report.skipped)}.</p>
<h2>Latents</h2>{cards}
</body></html>
"""
