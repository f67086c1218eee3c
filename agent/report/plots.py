"""Report plots (matplotlib, PNG): the headline's share-difference chart with 95% CIs, Delta-norm histogram,
Latent Scaling scatter, training curves."""

from __future__ import annotations

import shutil
from pathlib import Path

from latentdiff.io import atomic_write
from latentdiff.rundir import RunDir


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
    """Horizontal bars of the headline's share difference per category (percentage points, A minus B) with
    95% interval whiskers on a symmetric linear axis; the counts n_A/n_B written beside each bar, '*' after
    the name of a category significant after correction, the planted sign and verdict where known."""
    plt = _plt()
    rows = report.categories
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.6))
    names = [f"{r.name} *" if r.significant else r.name for r in rows]
    vals = [r.diff_pp for r in rows]
    lo = [max(r.diff_pp - r.ci95[0], 0.0) for r in rows]
    hi = [max(r.ci95[1] - r.diff_pp, 0.0) for r in rows]
    colors = ["#2b8a3e" if v > 0 else "#c92a2a" if v < 0 else "#868e96" for v in vals]
    alphas = [0.9 if r.significant else 0.45 for r in rows]
    bars = ax.barh(names, vals, xerr=[lo, hi], color=colors, capsize=4, ecolor="#333")
    for bar, al in zip(bars, alphas):
        bar.set_alpha(al)
    ax.axvline(0, color="#333", lw=1)
    reach = max([abs(x) for r in rows for x in (*r.ci95, r.diff_pp)] + [5.0])
    ax.set_xlim(-1.2 * reach, 1.2 * reach)  # symmetric: a gain and a loss of the same size look the same
    ax.invert_yaxis()
    head = report.headline or {}
    a, b = head.get("a", "A"), head.get("b", "B")
    ax.set(xlabel=f"share of {a}'s latents minus share of {b}'s (percentage points, 95% CI); "
                  f"n {a}/n {b} beside each bar",
           title=f"{a} vs {b}: category share difference (* significant after correction)")
    for i, r in enumerate(rows):
        x = r.ci95[1] if r.diff_pp >= 0 else r.ci95[0]
        ax.annotate(f"{r.n_a}/{r.n_b}", (x, i), xytext=(4 if r.diff_pp >= 0 else -4, 0), textcoords="offset points",
                    ha="left" if r.diff_pp >= 0 else "right", va="center", fontsize=8, color="#222")
        if r.planted is not None:
            ax.annotate(f"planted {r.planted} {'ok' if r.recovered else 'x'}", (0, i), xytext=(5, -12),
                        textcoords="offset points", fontsize=7, color="#555")
    return _save(fig, path)


def share_sets(report) -> list[tuple[str, int, list[tuple[str, int, float]]]]:  # noqa: ANN001
    """(set name, set size, [(category, count, share)]) for each model's specific latents (vs base) and the
    reference sample, read from the vs-reference comparisons of the primary crosscoder."""
    out: list[tuple[str, int, list[tuple[str, int, float]]]] = []
    ref = None
    for c in report.comparisons:
        if c.kind != "vs_reference" or c.a == "base":
            continue
        out.append((f"{c.a}-specific", c.n_a, [(r.name, r.n_a, r.share_a) for r in c.categories]))
        ref = ref or ("reference sample of shared latents", c.n_b, [(r.name, r.n_b, r.share_b) for r in c.categories])
    return out + ([ref] if ref else [])


def share_chart(report, path: Path) -> Path | None:  # noqa: ANN001
    """The paper's figure: per model, the share of its specific latents in each category (grouped bars, the count
    on each bar), beside the reference sample of shared latents."""
    sets = share_sets(report)
    if not sets:
        return None
    plt = _plt()
    cats = [name for name, _, _ in sets[0][2]]
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.3 * len(cats)), 3.8))
    palette = ["#1971c2", "#e8590c", "#2f9e44", "#9c36b5", "#868e96"]
    for i, (name, n, rows) in enumerate(sets):
        xs = [k + (i - (len(sets) - 1) / 2) * width for k in range(len(cats))]
        color = "#adb5bd" if name.startswith("reference") else palette[i % len(palette)]
        bars = ax.bar(xs, [100 * sh for _, _, sh in rows], width, label=f"{name} (n={n})", color=color)
        for bar, (_, k, _) in zip(bars, rows):
            ax.annotate(str(k), (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(cats)), [c.replace("_", "\n") for c in cats], fontsize=8)
    ax.set(ylabel="share of the set's latents (%)", title="Category shares of each model's specific latents "
           "(count on each bar)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def selection_plots(run_dir: Path, out: Path) -> list[Path]:
    """Delta-norm histogram and nu_eps / nu_r scatter per pair."""
    from latentdiff.core.select import read_table

    table = RunDir.of(run_dir).latents
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
    head = report.headline or {}
    if report.categories and head.get("status", "ok") == "ok":  # an untested headline has no effects to draw
        plots["shift"] = shift_chart(report, out / "shift.png")
    shares = share_chart(report, out / "shares.png")
    if shares is not None:
        plots["shares"] = shares
    for p in selection_plots(run_dir, out):
        plots["selection"] = p
    for png in RunDir.of(run_dir).training_plots():
        target = out / f"training_{png.parent.name}.png"
        shutil.copyfile(png, target)
        plots[f"training_{png.parent.name}"] = target
    return plots
