"""Harvest throughput and memory: stop-at-layer capture vs the naive output_hidden_states loop.

Usage: python benchmarks/bench_harvest.py [--tokens 200000] [--batch 32]
1. tokens/s of `forward_to_layer` (hook that ends the pass after the captured block) vs
   `model(**batch, output_hidden_states=True).hidden_states[layer + 1]` on the same organism models,
   the same batches, in one process;
2. peak RSS of `harvest_to_cache` in fresh subprocesses as the corpus grows 10x (must stay flat).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentdiff.config import DataConfig, ModelSpec  # noqa: E402
from latentdiff.core.data import iter_context_batches  # noqa: E402
from latentdiff.core.models import check_compatible, forward_to_layer, load_model  # noqa: E402


def throughput(tokens: int, batch: int, device: str) -> dict[str, float]:
    specs = [
        ModelSpec(name=n, path=f"organism:{n}", role="base" if n == "base" else "finetune")
        for n in ("base", "shift")
    ]
    models = [load_model(s, device) for s in specs]
    layer = check_compatible(models, None)
    data = DataConfig(ctx_len=128)
    batches = list(iter_context_batches(models[0].tokenizer, data, "train", batch, tokens))
    n_tok = sum(int(b.attention_mask.sum()) for b in batches)
    out: dict[str, float] = {"layer": layer, "n_layers": models[0].n_layers, "tokens": n_tok}
    for name in ("naive", "latentdiff", "naive", "latentdiff"):  # interleaved, best of two
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                for m in models:
                    if name == "naive":
                        hs = m.model(
                            input_ids=b.input_ids.to(device),
                            attention_mask=b.attention_mask.to(device),
                            output_hidden_states=True,
                        ).hidden_states
                        acts = hs[layer + 1]
                    else:
                        acts = forward_to_layer(m, b.input_ids, b.attention_mask, layer)
                    acts.float().cpu()
        rate = n_tok * len(models) / (time.perf_counter() - t0)
        out[f"{name}_tok_s"] = max(out.get(f"{name}_tok_s", 0.0), rate)
    out["speedup"] = out["latentdiff_tok_s"] / out["naive_tok_s"]
    return out


CHILD = """
import sys
from pathlib import Path
from latentdiff.config import DataConfig, HarvestConfig, ModelSpec
from latentdiff.core.harvest import harvest_to_cache
from latentdiff.core.models import check_compatible, load_model
n = int(sys.argv[1]); out = Path(sys.argv[2])
models = [load_model(ModelSpec(name=x, path=f"organism:{x}", role="base" if x == "base" else "finetune"))
          for x in ("base", "shift")]
layer = check_compatible(models, None)
harvest_to_cache(models, layer, DataConfig(ctx_len=128), HarvestConfig(shard_tokens=32768),
                 "train", n, out, "bench", show=False)
print(next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")))  # peak RSS, kB
"""


def peak_rss(tokens: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(tokens), tmp], capture_output=True, text=True, check=True
        )
        return int(proc.stdout.strip().splitlines()[-1]) / 1024  # MiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rss-tokens", type=int, default=50_000)
    args = p.parse_args()
    result = {"throughput": throughput(args.tokens, args.batch, args.device)}
    result["peak_rss_mib"] = {str(n): round(peak_rss(n), 1) for n in (args.rss_tokens, 10 * args.rss_tokens)}
    result["config"] = vars(args) | {
        "threads": torch.get_num_threads(),
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
