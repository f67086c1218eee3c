"""latentdiff's crosscoder trainer against the reference BatchTopK trainer, on the same data.

The reference is science-of-finetuning/dictionary_learning's `BatchTopKCrossCoderTrainer` (the trainer
of Minder et al. 2025), imported from a checkout you point to; it is not vendored or installed:

    git clone https://github.com/science-of-finetuning/dictionary_learning /tmp/dl
    pip install einops zstandard            # the reference's imports (benchmark only)
    python -m benchmarks.bench_reference --reference /tmp/dl --run RUN_DIR

RUN_DIR is a run whose harvest is done (its train cache; `latentdiff demo` makes one). Both trainers
get the same batches (base and the first fine-tune by default), the same dictionary size, k, batch,
learning rate and schedule (warm-up, then linear decay over the last 20%), and train the same number of
steps. Each cell (trainer x threads x idle/loaded) runs in a fresh process; "loaded" starts one
CPU-bound busy process beside it. Reports tokens/s (steps 3 on), the ratio, and each trainer's FVU on a
held-out batch in raw activation units after the same steps (also at a 100x rescale of the inputs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

from benchmarks.competitor import busy_process

ROOT = Path(__file__).resolve().parents[1]


def _import_reference(path: Path) -> type:
    """The reference trainer class, without running the package's __init__ (which imports nnsight)."""
    pkg_dir = path / "dictionary_learning"
    if not (pkg_dir / "trainers" / "crosscoder.py").is_file():
        raise SystemExit(f"{path} is not a dictionary_learning checkout (no {pkg_dir}/trainers/crosscoder.py)")
    for name, sub in (("dictionary_learning", pkg_dir), ("dictionary_learning.trainers", pkg_dir / "trainers")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(sub)]  # a namespace: submodules import, __init__ does not run
        sys.modules[name] = mod
    from dictionary_learning.trainers.crosscoder import BatchTopKCrossCoderTrainer  # type: ignore[import-not-found]

    return BatchTopKCrossCoderTrainer


def _batches(run: Path, models: list[str], batch: int, n: int) -> tuple[list, object, object]:
    """n + 1 batches [B, M, D] of the run's train cache (the last is held out), and its mean/scale rows."""
    from latentdiff.config import load_config
    from latentdiff.core.cache import ShuffledStream, load_stats
    from latentdiff.rundir import RunDir

    cfg = load_config(RunDir.of(run).config)
    names = [m.name for m in cfg.models]
    cols = [names.index(m) for m in models]
    acts = RunDir.of(run).cache("train")
    stream = ShuffledStream(acts, batch, seed=0).batches(0)
    out = [next(stream)[:, cols].float() for _ in range(n + 1)]
    mean, scale = load_stats(acts)
    return out, mean[cols], scale[cols]


def _fvu(x, recon) -> float:  # noqa: ANN001
    """Mean over models of the fraction of variance unexplained on one batch [B, M, D]."""
    err = (x - recon).pow(2).sum(-1).sum(0)  # [M]
    var = (x - x.mean(0)).pow(2).sum(-1).sum(0)  # [M]
    return float((err / var).mean())


def cell(args: argparse.Namespace) -> dict:
    """One measurement in this process: `args.impl` trained for `args.steps` steps."""
    import torch

    torch.set_num_threads(args.threads)
    data, mean, scale = _batches(Path(args.run), args.models, args.batch, args.steps)
    data = [b * args.scale for b in data]
    held = data.pop()
    M, D = held.shape[1], held.shape[2]
    lr = 2e-4 / math.sqrt(args.dict / 2**14)
    warmup, decay_from = min(100, args.steps // 10), int(0.8 * args.steps)
    if args.impl == "latentdiff":
        from latentdiff.config import CrosscoderConfig
        from latentdiff.core.crosscoder import CrossCoderSpec
        from latentdiff.core.train import Trainer

        cfg = CrosscoderConfig(arch="batchtopk", dict_size=args.dict, k=args.k, batch_size=args.batch,
                               steps=args.steps, lr=lr, warmup_steps=warmup, decay_start=0.8)
        spec = CrossCoderSpec(arch="batchtopk", n_models=M, d_model=D, dict_size=args.dict, k=args.k,
                              model_names=args.models)
        tr = Trainer(cfg, spec, mean * args.scale, scale / args.scale, Path(args.out) / "ld", torch.device("cpu"))

        def step(i: int, x: torch.Tensor) -> None:
            tr.run_step(x, metrics=(i + 1) % 10 == 0)  # as `Trainer.fit` runs it (metrics, thread governor)

        def recon(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return tr.cc.denormalize(tr.cc(tr.cc.normalize(x)).recon)
    else:
        ref_cls = _import_reference(Path(args.reference))
        flat = torch.cat(data[: max(1, len(data) // 2)])  # [n, M, D] statistics for the reference's normaliser
        tr = ref_cls(steps=args.steps, activation_dim=D, dict_size=args.dict, k=args.k, layer=0, lm_name="bench",
                     num_layers=M, lr=lr, warmup_steps=warmup, decay_start=decay_from, seed=0, device="cpu",
                     activation_mean=flat.mean(0), activation_std=flat.std(0))

        def step(i: int, x: torch.Tensor) -> None:
            tr.update(i, x.clone())  # the reference normalises its input in place

        def recon(x: torch.Tensor) -> torch.Tensor:  # batch top-k, as ours (its threshold starts at step 1000)
            with torch.no_grad():
                return tr.ae.decode(tr.ae.encode(x.clone(), use_threshold=False), denormalize_activations=True)

    t0 = None
    for i, x in enumerate(data):
        if i == 3:
            t0 = time.perf_counter()
        step(i, x)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    return {"impl": args.impl, "threads": args.threads, "loaded": args.loaded, "scale": args.scale,
            "tok_s": round((len(data) - 3) * args.batch / elapsed), "fvu": round(_fvu(held, recon(held)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="a checkout of science-of-finetuning/dictionary_learning")
    ap.add_argument("--run", required=True, help="a run directory with its harvest done")
    ap.add_argument("--models", nargs="+", default=None, help="crosscoder models (default: the run's first two)")
    ap.add_argument("--dict", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-load", action="store_true", help="skip the loaded cells")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 100.0], help="input rescales for the FVU check")
    ap.add_argument("--out", default="/tmp/bench_reference")
    ap.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # internal: impl name of one cell
    ap.add_argument("--loaded", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.models is None:
        from latentdiff.config import load_config
        from latentdiff.rundir import RunDir

        args.models = [m.name for m in load_config(RunDir.of(args.run).config).models][:2]
    if args.cell:
        args.impl, args.threads = args.cell, args.threads[0]
        print(json.dumps(cell(args)))
        return
    _import_reference(Path(args.reference))  # fail early with one line
    rows = []
    plan = [(t, loaded, 1.0) for loaded in ([False] if args.no_load else [False, True]) for t in args.threads]
    plan += [(max(args.threads), False, s) for s in args.scales if s != 1.0]
    for threads, loaded, scale in plan:
        with busy_process(loaded):
            for impl in ("reference", "latentdiff"):
                cmd = [sys.executable, "-m", "benchmarks.bench_reference", "--reference", args.reference, "--run",
                       args.run, "--models", *args.models, "--dict", str(args.dict), "--k", str(args.k), "--batch",
                       str(args.batch), "--steps", str(args.steps), "--threads", str(threads), "--out", args.out,
                       "--cell", impl, "--scale", str(scale)] + (["--loaded"] if loaded else [])
                res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
                if res.returncode:
                    raise SystemExit(f"cell {impl} failed:\n{res.stderr[-2000:]}")
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nd={rows[0] and args.dict} k={args.k} B={args.batch} models={args.models} steps={args.steps}")
    print("| threads | machine | scale | reference tok/s | latentdiff tok/s | ratio | FVU reference | FVU latentdiff |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        ref, ld = rows[i], rows[i + 1]
        print(f"| {ref['threads']} | {'loaded' if ref['loaded'] else 'idle'} | {ref['scale']:g} | {ref['tok_s']:,} | "
              f"{ld['tok_s']:,} | **{ld['tok_s'] / ref['tok_s']:.2f}x** | {ref['fvu']} | {ld['fvu']} |")


if __name__ == "__main__":
    main()
