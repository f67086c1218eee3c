"""Report plots (matplotlib, PNG): shift chart with CIs, Delta-norm histogram, Latent Scaling scatter,
training curves."""

from __future__ import annotations

import shutil
from pathlib import Path

from latentdiff.io import atomic_write


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:  # noqa: ANN001
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100, bbox_inches="tight"))
    _plt().close(fig)
    return path


def shift_chart(report, path: Path) -> Path:  # noqa: ANN001
    """Horizontal bars of shift % per category with 95% CI whiskers (symlog axis)."""
    plt = _plt()
    rows = report.categories
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.4))
    names = [r.name for r in rows]
    vals = [r.shift_pct for r in rows]
    lo = [r.shift_pct - r.ci95[0] for r in rows]
    hi = [r.ci95[1] - r.shift_pct for r in rows]
    colors = ["#2b8a3e" if v > 0 else "#c92a2a" for v in vals]
    ax.barh(names, vals, xerr=[lo, hi], color=colors, alpha=0.8, capsize=4, ecolor="#333")
    ax.axvline(0, color="#333", lw=1)
    ax.set_xscale("symlog", linthresh=50)
    ax.invert_yaxis()
    head = report.headline or {}
    ax.set(xlabel="shift % (95% CI)", title=f"{head.get('a', 'A')} vs {head.get('b', 'B')}: category shift")
    for i, r in enumerate(rows):
        if r.planted in ("+", "-"):
            ax.annotate(f"planted {r.planted} {'ok' if r.recovered else 'x'}", (0, i), xytext=(5, -12),
                        textcoords="offset points", fontsize=7, color="#555")
    return _save(fig, path)


def selection_plots(run_dir: Path, out: Path) -> list[Path]:
    """Delta-norm histogram and nu_eps / nu_r scatter per pair."""
    from latentdiff.core.select import read_table

    table = run_dir / "latents.parquet"
    if not table.is_file():
        return []
    rows = read_table(table)
    pairs = sorted({r.pair for r in rows})
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for p in pairs:
        axes[0].hist([r.delta_norm for r in rows if r.pair == p], bins=50, alpha=0.5, label=p)
    axes[0].set(xlabel="Delta-norm (0 = base only, 1 = fine-tune only)", ylabel="latents", yscale="log",
                title="Relative decoder norm")
    axes[0].legend()
    for p in pairs:
        sel = [r for r in rows if r.pair == p and r.delta_norm > 0.5 and r.freq > 0]
        axes[1].scatter([min(max(r.nu_eps, -0.5), 2) for r in sel], [min(max(r.nu_r, -0.5), 2) for r in sel],
                        s=6, alpha=0.5, label=p)
    axes[1].set(xlabel="nu-epsilon", ylabel="nu-r", title="Latent Scaling (Delta-norm > 0.5; clipped)")
    axes[1].axvline(0.2, color="#999", ls="--")
    axes[1].axhline(0.5, color="#999", ls="--")
    axes[1].legend()
    return [_save(fig, out / "selection.png")]


def make_plots(report, run_dir: Path, out: Path) -> dict[str, Path]:  # noqa: ANN001
    """Every plot of the report, by name."""
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    if report.categories:
        plots["shift"] = shift_chart(report, out / "shift.png")
    for p in selection_plots(run_dir, out):
        plots["selection"] = p
    for png in sorted((run_dir / "crosscoders").glob("*/metrics.png")):
        target = out / f"training_{png.parent.name}.png"
        shutil.copyfile(png, target)
        plots[f"training_{png.parent.name}"] = target
    return plots
