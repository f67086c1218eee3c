"""The whole offline demo on idle cores and beside one CPU-bound process, in one command.

Usage: python -m benchmarks.bench_demo_load [--out /tmp/bench_demo_load] [--only idle|loaded]

Runs `latentdiff run benchmarks/configs/demo.yaml` (the `latentdiff demo` pipeline) into a fresh run
directory twice: once alone, once while a pure-Python busy loop (one core's worth of work) runs beside
it. Prints each run's per-stage times and total, and the loaded/idle ratio (issue 18's goal: <= 2x).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.competitor import busy_process

ROOT = Path(__file__).resolve().parents[1]
STAGE_RE = re.compile(r"stage (\d)/9 (\w+): (.+)$")


def _seconds(text: str) -> float:
    m = re.match(r"(?:(\d+) min )?(\d+) s", text.strip())
    return 60 * int(m.group(1) or 0) + int(m.group(2)) if m else float("nan")


def demo(run_dir: Path, loaded: bool) -> tuple[float, dict[str, float]]:
    """Wall seconds of one demo run and its stage times."""
    shutil.rmtree(run_dir, ignore_errors=True)
    with busy_process(loaded):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "latentdiff.cli", "run", "benchmarks/configs/demo.yaml",
                              f"run_dir={run_dir}"], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"demo failed:\n{res.stderr[-3000:]}")
    stages = {m.group(2): _seconds(m.group(3)) for line in res.stderr.splitlines() if (m := STAGE_RE.search(line))}
    return wall, stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench_demo_load")
    ap.add_argument("--only", choices=["idle", "loaded"], default=None)
    args = ap.parse_args()
    rows = {}
    for mode in ("idle", "loaded"):
        if args.only and mode != args.only:
            continue
        wall, stages = demo(Path(args.out) / mode, loaded=mode == "loaded")
        rows[mode] = wall
        print(f"{mode}: {wall:.0f} s ({wall / 60:.2f} min); " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()),
              flush=True)
    if len(rows) == 2:
        print(f"loaded / idle: {rows['loaded'] / rows['idle']:.2f}x")


if __name__ == "__main__":
    main()
