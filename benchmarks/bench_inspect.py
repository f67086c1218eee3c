"""The inspect stage's three measurements timed on a finished run (docs/benchmarks.md, issue 16).

    python -m benchmarks.bench_inspect RUN_DIR [--latents 100] [--contexts 3] [--batch 16 64]

Loads the run's models and primary crosscoder, takes the first N sampled latents, and times the logit
lens (all models), the ablation (rows of latent x top context, at each batch size, in the model each
latent is specific to) and the histogram pass over the held-out cache. Prints latents/s and rows/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    """Time the three parts and print one line each."""
    import numpy as np
    import torch

    from latentdiff.config import load_config
    from latentdiff.core.cache import iter_shards
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.examples import read_examples
    from latentdiff.core.inspect import ablation_effects, activation_histograms, logit_lens, unembedding
    from latentdiff.core.models import load_model
    from latentdiff.io import read_json
    from latentdiff.rundir import RunDir

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--latents", type=int, default=100)
    ap.add_argument("--contexts", type=int, default=3)
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    args = ap.parse_args()
    rd = RunDir(args.run)
    cfg = load_config(rd.config, [f"run_dir={rd.root}"])
    name = rd.crosscoder_names()[0]
    cc = CrossCoder.from_pretrained(rd.crosscoder(name))
    members = cc.spec.model_names or [m.name for m in cfg.models]
    models = [load_model(next(m for m in cfg.models if m.name == n), "cpu") for n in members]
    layer = int(read_json(rd.marker("harvest"))["layer"])
    contexts = torch.from_numpy(np.load(rd.contexts))
    tops: dict[int, list[int]] = {}
    for ex in read_examples(rd.examples(name)):
        if ex.kind == "top" and ex.ctx not in tops.setdefault(ex.latent, []) and len(tops[ex.latent]) < args.contexts:
            tops[ex.latent].append(ex.ctx)
    latents = sorted(tops)[: args.latents]
    print(f"run {rd.root} crosscoder {name}: {len(latents)} latents, {len(members)} models, threads "
          f"{torch.get_num_threads()}")
    t0 = time.perf_counter()
    for i, m in enumerate(models):
        W_U, gain = unembedding(m)
        logit_lens(cc, latents, i, W_U, gain, m.tokenizer, 10)
    dt = time.perf_counter() - t0
    print(f"logit lens: {len(latents) * len(models) / dt:,.0f} latent-models/s ({dt:.2f} s)")
    rows = [(j, c) for j in latents for c in tops[j]]
    target = len(models) - 1
    for bs in args.batch:
        t0 = time.perf_counter()
        ablation_effects(models, cc, layer, target, rows, contexts, batch_size=bs)
        dt = time.perf_counter() - t0
        print(f"ablation (batch {bs}): {len(rows) / dt:,.1f} rows/s ({len(rows)} rows, {dt:.1f} s)")
    t0 = time.perf_counter()
    hist = activation_histograms(cc, iter_shards(rd.cache("heldout")), None, latents, None, 20)
    dt = time.perf_counter() - t0
    n_tok = next(iter(hist.values())).n_tokens if hist else 0
    print(f"histograms: {n_tok * len(latents) / dt / 1e6:,.1f} M latent-tokens/s ({n_tok:,} tokens, {dt:.1f} s)")


if __name__ == "__main__":
    main()
