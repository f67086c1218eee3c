"""The select stage: latent statistics and sides for every pair (latents.parquet)."""

from __future__ import annotations

import logging
from typing import Any

from latentdiff.config import RunConfig
from latentdiff.results import SelectResult
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, crosscoder_plan, mark_done

log = logging.getLogger(__name__)


def run_select(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Latent statistics and sides for every pair, written to latents.parquet."""
    from latentdiff.core.cache import iter_shards
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.select import latent_statistics, latents_table, write_table

    rd = RunDir.of(run_dir)
    names = [m.name for m in cfg.models]
    rows = []
    for cc_name, members in crosscoder_plan(cfg).items():
        cc = CrossCoder.from_pretrained(rd.crosscoder(cc_name))
        cols = [names.index(m) for m in members]
        batches = (s["acts"][:, cols] for s in iter_shards(rd.cache("heldout")))
        stats = latent_statistics(cc, batches, base=0, fts={m: i for i, m in enumerate(members) if i > 0})
        for row in latents_table(stats, cfg.selection):
            rows.append(row.model_copy(update={"crosscoder": cc_name}))
    write_table(rows, rd.latents)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r.pair, {}).setdefault(r.side, 0)
        counts[r.pair][r.side] += 1
    for pair, sides in counts.items():
        log.info("select %s: %s", pair, ", ".join(f"{n:,} {side}" for side, n in sorted(sides.items())))
    mark_done(cfg, rd, "select", {"sides": counts})


def read_select(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> SelectResult:
    """The side counts per pair (rows: `Run.latent_stats`)."""
    return SelectResult(path=str(rd.latents), method=cfg.selection.method, sides=info["sides"])
