"""The inspect stage: logit lens, ablation effects and activation histograms of sampled latents."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from latentdiff.config import RunConfig
from latentdiff.io import atomic_write_json
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, crosscoder_plan, load_models, mark_done

log = logging.getLogger(__name__)


def run_inspect(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Per crosscoder and sampled latent: logit lens of each model's decoder vector, the ablation effect on the
    model(s) of its sets over its top contexts, and its activation histogram on the held-out cache
    (core/inspect.py); written to inspect/NAME.json for the latent pages."""
    import time

    import torch

    from latentdiff.core.cache import iter_shards
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.examples import read_examples
    from latentdiff.core.inspect import (
        ablation_effects,
        activation_histograms,
        cached_codes,
        logit_lens,
        unembedding,
    )
    from latentdiff.core.select import read_table
    from latentdiff.records import LatentInspection, read_inspections

    rd = RunDir.of(run_dir)
    ic = cfg.inspect
    counts: dict[str, int] = {}
    if not ic.enabled:
        mark_done(cfg, rd, "inspect", {"latents": counts, "enabled": False})
        return
    names = [m.name for m in cfg.models]
    models, layer = load_models(cfg)
    contexts = torch.from_numpy(np.load(rd.contexts))  # [n_ctx, T]
    table = read_table(rd.latents)
    for cc_name, members in crosscoder_plan(cfg).items():
        if rd.inspection(cc_name).is_file():  # finished before a kill under these settings: kept
            counts[cc_name] = len(read_inspections(rd, [cc_name]).get(cc_name, {}))
            continue
        t0 = time.perf_counter()
        cc = CrossCoder.from_pretrained(rd.crosscoder(cc_name))
        cols = [names.index(m) for m in members]
        mine = [models[c] for c in cols]
        tops: dict[int, list[int]] = {}
        upper: dict[int, float] = {}
        for ex in read_examples(rd.examples(cc_name)):
            if ex.kind == "top":
                upper[ex.latent] = max(upper.get(ex.latent, 0.0), ex.max_act)
                if ex.ctx not in tops.setdefault(ex.latent, []) and len(tops[ex.latent]) < ic.ablation_contexts:
                    tops[ex.latent].append(ex.ctx)
        latents = sorted(upper)
        out = {j: LatentInspection(latent=j) for j in latents}
        for i, model in enumerate(mine):  # logit lens of every model's decoder vector
            W_U, gain = unembedding(model)
            for j, lens in logit_lens(cc, latents, i, W_U, gain, model.tokenizer, ic.lens_k).items():
                out[j].lens[members[i]] = lens
        # each latent is ablated in the model(s) it is specific to (a fine-tune, or the base); a latent of the
        # reference sample (shared everywhere) in the first fine-tune of its pairs
        specific: dict[int, set[str]] = {}
        shared: dict[int, str] = {}
        for r in table:
            if r.crosscoder == cc_name and r.latent in out:
                if r.side in ("finetuned", "base"):
                    specific.setdefault(r.latent, set()).add("base" if r.side == "base" else r.pair)
                else:
                    shared.setdefault(r.latent, r.pair)
        targets: dict[int, set[int]] = {}  # crosscoder column -> latents ablated in that model
        for j in latents:
            for model in specific.get(j) or {shared.get(j, members[-1])}:
                if model in members:
                    targets.setdefault(members.index(model), set()).add(j)
        plan = {col: [(j, c) for j in sorted(lats) for c in tops.get(j, [])] for col, lats in sorted(targets.items())}
        # the latents' codes on their contexts: one pass over the held-out cache, not every model's forward again
        every = [r for rows in plan.values() for r in rows]
        codes = cached_codes(cc, iter_shards(rd.cache("heldout"), keys=("acts", "ctx", "pos")), cols, every,
                             contexts.shape[1])  # [R, T]
        start = 0
        for col, rows in plan.items():
            effects = ablation_effects(mine, cc, layer, col, rows, contexts, ic.batch_size,
                                       codes=codes[start:start + len(rows)])
            start += len(rows)
            for j, eff in effects.items():
                out[j].ablation[members[col]] = eff
        hists = activation_histograms(cc, iter_shards(rd.cache("heldout")), cols, latents, upper, ic.bins)
        for j, h in hists.items():
            out[j].histogram = h
        atomic_write_json(rd.inspection(cc_name), {str(j): v.model_dump(mode="json") for j, v in out.items()})
        counts[cc_name] = len(out)
        log.info("inspect %s: %d latents (lens, ablation on %d rows, histograms) in %.0f s", cc_name, len(out),
                 sum(len(tops.get(j, [])) for lats in targets.values() for j in lats), time.perf_counter() - t0)
    mark_done(cfg, rd, "inspect", {"latents": counts, "enabled": True})


def read_inspect(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> dict[str, dict[int, Any]]:
    """Crosscoder name -> latent -> LatentInspection (empty when the stage ran disabled)."""
    from latentdiff.records import read_inspections

    return read_inspections(rd, list(info.get("latents", {})))
