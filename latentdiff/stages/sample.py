"""The sample stage: examples of every selected latent and of the reference sample."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from latentdiff.config import RunConfig
from latentdiff.io import atomic_write_json
from latentdiff.results import SampleResult
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, crosscoder_plan, mark_done


def reference_latents(cfg: RunConfig, table: list[Any], cc_name: str) -> list[int]:
    """The reference sample of a crosscoder: `selection.reference_n` latents that are shared in every pair
    (never specific to any model), drawn at random with a seed fixed by the run seed and the crosscoder."""
    import zlib

    rows = [r for r in table if r.crosscoder == cc_name]
    by_latent: dict[int, set[str]] = {}
    for r in rows:
        by_latent.setdefault(r.latent, set()).add(r.side)
    shared = sorted(j for j, sides in by_latent.items() if sides == {"shared"})
    n = min(len(shared), cfg.selection.reference_n)
    if n == 0:
        return []
    rng = np.random.default_rng([cfg.seed, zlib.crc32(cc_name.encode())])
    return sorted(int(j) for j in rng.choice(shared, size=n, replace=False))


def run_sample(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Examples for every selected latent and for the reference sample of shared ones; the share of each
    latent's activation on special tokens (scaffolding) beside them."""
    from transformers import AutoTokenizer

    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.examples import (
        ScaffoldTally,
        build_examples,
        scaffold_path,
        special_token_strings,
        write_examples,
    )
    from latentdiff.core.organisms import resolve_model_path
    from latentdiff.core.select import read_table

    rd = RunDir.of(run_dir)
    heldout = rd.cache("heldout")
    contexts = np.load(rd.contexts)
    docs = [json.loads(ln) for ln in rd.docs.read_text().splitlines() if ln]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.base.path), revision=cfg.base.revision)
    special = special_token_strings(tokenizer)
    table = read_table(rd.latents)
    counts = {}
    for cc_name, members in crosscoder_plan(cfg).items():
        rows = [r for r in table if r.crosscoder == cc_name]
        chosen = sorted({r.latent for r in rows if r.side in ("finetuned", "base")} |
                        set(reference_latents(cfg, table, cc_name)))
        cc = CrossCoder.from_pretrained(rd.crosscoder(cc_name))
        cols = [[m.name for m in cfg.models].index(name) for name in members]
        examples = build_examples(
            cc,
            heldout,
            chosen,
            contexts,
            docs,
            tokenizer,
            cfg.sampling,
            seed=cfg.seed + 22,
            cols=cols,
        )
        tally = ScaffoldTally(special)
        path = rd.examples(cc_name)
        counts[cc_name] = write_examples((tally.add(ex) for ex in examples), path)
        atomic_write_json(scaffold_path(path), {str(j): round(v, 6) for j, v in sorted(tally.shares().items())})
    mark_done(cfg, rd, "sample", {"examples": counts})


def read_sample(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> SampleResult:
    """The example counts and files (records: `Run.examples`)."""
    counts = info["examples"]
    return SampleResult(examples=counts, paths={n: str(rd.examples(n)) for n in counts})
