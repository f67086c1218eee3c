"""Formatting of chat answers, shared by the terminal (`latentdiff chat`) and the web chat (`serve`).

Plain-text pieces (latent lines, comparison cells, effects, the method note), the terminal's
control-sequence stripping, and the answer's HTML (escaped, citations linked, Markdown tables as tables).
"""

from __future__ import annotations

import html
import re

from latentdiff.agent.chat.tools import CategoryCell, CategoryTable, LatentBrief
from latentdiff.agent.report.summary import fmt_p, fmt_pp, fmt_share, fmt_shift_pct

# ESC sequences (CSI ... final byte, OSC/DCS/APC/PM/SOS strings up to BEL or ST, two-byte ESC X), then
# lone C0/C1 controls and DEL (tab and newline kept), then bidi overrides/isolates that reorder what is shown
_ESCAPE_SEQ = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x1b][\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|[\x90\x9d\x98\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

def terminal_safe(text: str) -> str:
    """Text with terminal escape sequences and control characters (C0 but tab/newline, DEL, C1, bidi
    overrides) removed: what a run's labels and examples contain is printed, never executed."""
    return _CONTROL.sub("", _ESCAPE_SEQ.sub("", text))

def fmt_pct(x: float) -> str:
    """+390%, -76%."""
    return f"{x:+.0f}%"

def fmt_ci(ci: tuple[float, float]) -> str:
    """[+3.0, +18.5] (percentage points)."""
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"

def brief_line(b: LatentBrief) -> str:
    verif = "" if b.verification is None else f", verification {b.verification:.2f}"
    return f"- [{b.id}] **{b.name}** ({b.category}; {b.pair}/{b.side}, Delta-norm {b.delta_norm:.2f}{verif})"

CELL_HEADER = ("| comparison | latents in the category (share of the set) | difference, pp [95% CI] | "
               "paper's shift % [95% CI] | corrected p | |\n|---|---|---|---|---|---|")

def counts_text(c: CategoryCell) -> str:
    return (f"{c.a} {c.n_a} of {c.total_a} ({fmt_share(c.share_a)}) vs "
            f"{c.b} {c.n_b} of {c.total_b} ({fmt_share(c.share_b)})")

def shift_text(c: CategoryCell) -> str:
    return fmt_shift_pct(c.shift_pct, c.ci95_shift_pct, c.n_a, c.a)

def cell_line(c: CategoryCell) -> str:
    """One comparison's cell as a table row (`CELL_HEADER`); an untested comparison says so, with no effect."""
    if not c.tested:
        return f"| {c.comparison} | {counts_text(c)} | {c.note or 'too few latents to compare'}: not tested | | | |"
    sig = "significant" if c.significant else "not significant"
    planted = f"; planted {c.planted}" if c.planted else ""
    return (f"| {c.comparison} | {counts_text(c)} | {fmt_pp(c.diff_pp)} {fmt_ci(c.ci95)} | {shift_text(c)} | "
            f"{fmt_p(c.p_adjusted)} | {sig}{planted} |")

def effect_text(c: CategoryCell) -> str:
    """'+9.1 percentage points (95% CI [+3.0, +18.5], corrected p 0.012, significant; paper's form +390%)'."""
    sig = "significant" if c.significant else "not significant"
    return (f"{fmt_pp(c.diff_pp)} percentage points (95% CI {fmt_ci(c.ci95)}, corrected p {fmt_p(c.p_adjusted)}, "
            f"{sig}; the paper's percent form {shift_text(c)})")

def method_note(table: CategoryTable) -> str:
    """'\n\nTest: exact permutation test ..., Holm-corrected across the 6 categories ...' (empty if unknown)."""
    from latentdiff.agent.report.summary import method_text

    st = table.statistics
    if not st:
        return ""
    n = len({c.category for c in table.cells})
    method = method_text(st.get("test", "exact permutation test"), st.get("correction", "holm"),
                         st.get("alpha", 0.05), n)
    return (f"\n\nTest: {method}; a comparison whose smaller set has fewer than "
            f"{st.get('min_set_size', '?')} latents is not tested.")

def inline(text: str, limit: int = 300) -> str:
    """One line, backtick-free, bounded: safe inside inline code."""
    flat = " ".join(text.replace("`", "'").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --------------------------------------------------------------------------- web (HTML)

_CODE = re.compile(r"`([^`]+)`")

_BOLD = re.compile(r"\*\*(.+?)\*\*")

_CITE = re.compile(r"\[([A-Za-z_][\w.-]*:\d+)\]")

def answer_html(text: str, citations: list[str]) -> str:
    """Escape the answer, then link its cited latent ids and render **bold** and `code`."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<b>\1</b>", out)

    def link(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in citations:
            return m.group(0)
        return f"[<a class='cite' href='/latent/{key}' target='_blank'>{key}</a>]"

    return _tables(_CITE.sub(link, out))

def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]

def _tables(text: str) -> str:
    """Markdown tables (a header line, a |---| line, rows) of an already escaped answer as HTML tables."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        if (lines[i].lstrip().startswith("|") and i + 1 < len(lines)
                and re.fullmatch(r"\s*\|(\s*:?-{3,}:?\s*\|)+\s*", lines[i + 1])):
            head, rows, i = _cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append("<div class='table-wrap'><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table></div>")
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)
