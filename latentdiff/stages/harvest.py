"""The harvest stage: paired activations of every model on the train and held-out splits."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from latentdiff.config import RunConfig
from latentdiff.io import atomic_write
from latentdiff.results import HarvestResult, cache_info
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, load_models, mark_done, stage_hash

log = logging.getLogger(__name__)


def run_harvest(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Paired activations of every model on the train and held-out splits."""
    from latentdiff.core import distributed as dist
    from latentdiff.core.data import iter_context_batches
    from latentdiff.core.harvest import compute_stats, harvest_to_cache

    rd = RunDir.of(run_dir)
    if cfg.harvest.mode == "stream":
        log.info("harvest mode 'stream': training harvests on the fly; caching held-out split only")
    models, layer = load_models(cfg)
    h = stage_hash(cfg, "harvest")
    if cfg.harvest.mode == "cache":
        harvest_to_cache(
            models, layer, cfg.data, cfg.harvest, "train", cfg.data.n_tokens, rd.cache("train"), h, show
        )
        if dist.is_main():
            compute_stats(rd.cache("train"), cfg.crosscoder.target_rms)
    seen: dict[int, tuple[np.ndarray, str]] = {}  # held-out ctx -> (token ids, DocMeta json), as harvested

    def keep(batch: Any) -> None:
        for row, ctx in enumerate(batch.ctx_index.tolist()):
            n = int(batch.attention_mask[row].sum())
            seen[ctx] = (batch.input_ids[row, :n].numpy().astype(np.int32), batch.docs[row].model_dump_json())

    manifest = harvest_to_cache(models, layer, cfg.data, cfg.harvest, "heldout", cfg.data.n_heldout_tokens,
                                rd.cache("heldout"), h, show, on_batch=keep)
    if not dist.is_main():  # the rest is small and written once, by rank 0
        mark_done(cfg, rd, "harvest", {})
        return
    # held-out token ids and document metadata, for the example sampler: kept while harvesting; tokenized
    # again only when the held-out harvest resumed after a kill (the contexts before the resume point)
    n_ctx = manifest.n_contexts
    if any(c not in seen for c in range(n_ctx)):
        log.info("harvest: reading the held-out token ids again (the held-out harvest was resumed)")
        for batch in iter_context_batches(models[0].tokenizer, cfg.data, "heldout", 256, 10**15):
            keep(batch)
            if batch.ctx_index[-1] >= n_ctx - 1:
                break
    ids = np.full((n_ctx, cfg.data.ctx_len), -1, dtype=np.int32)
    docs: list[str] = []
    for ctx in range(n_ctx):
        row, doc = seen[ctx]
        ids[ctx, : len(row)] = row
        docs.append(doc)
    atomic_write(rd.contexts, lambda p: np.save(p.open("wb"), ids))
    atomic_write(rd.docs, lambda p: p.write_text("\n".join(docs) + "\n"))
    mark_done(cfg, rd, "harvest", {"layer": layer, "heldout_tokens": manifest.n_tokens,
                                   "excluded": manifest.excluded})


def read_harvest(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> HarvestResult:
    """The activation caches the harvest wrote."""
    train = cache_info(rd.cache("train")) if cfg.harvest.mode == "cache" else None
    return HarvestResult(layer=info["layer"], mode=cfg.harvest.mode, train=train,
                         heldout=cache_info(rd.cache("heldout")))
