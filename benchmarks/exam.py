"""Run the pipeline on an organism family it was not developed on, and check the planted truth.

The shipped organisms are the development set. This runs the demo's settings (`demo_config`: same data,
crosscoder, selection, judge and statistics; nothing tuned here) on another build, e.g. the exam family
`benchmarks/organisms/exam.yaml` (another architecture, corpus seed and planted roles), then
`latentdiff truth` on it. The models come from the build's directory: its base, each fine-tune as
`finetune`, each phase planted with nothing as `control`, and the headline the build planted.

    latentdiff organism build --config benchmarks/organisms/exam.yaml --out exam-organisms
    python -m benchmarks.exam --organisms exam-organisms --run-dir runs/exam
    python -m benchmarks.exam --organisms exam-organisms --run-dir runs/exam-pairwise design=pairwise

Prints the truth check (one ok/FAIL line per planted check) and, with `--out FILE`, writes it there as
JSON. Exit status 0 whether or not the truth holds (this is a measurement); 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from latentdiff.config import ModelSpec, RunConfig, build_config
from latentdiff.core.organisms import load_planted, organism_names
from latentdiff.errors import LatentDiffError
from latentdiff.run import Run, demo_config
from latentdiff.rundir import RunDir
from latentdiff.truth import check_report


def exam_config(organisms: Path, run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    """The demo's config with the models and headline of the build in `organisms`."""
    planted = load_planted(organisms)
    fine = planted["planted"]  # every phase that is not the base
    models = [ModelSpec(name=n, path=str((organisms / n).resolve()),
                        role="base" if n not in fine else "finetune" if fine[n] else "control")
              for n in organism_names(organisms)]
    roles = [m.role for m in models]
    if roles.count("control") > 1:  # the demo has one control; keep the first, as the demo keeps null
        first = roles.index("control")
        models = [m for i, m in enumerate(models) if m.role != "control" or i == first]
    head = planted["headline"]
    cfg = demo_config(run_dir).model_copy(update={
        "name": organisms.resolve().name, "models": models, "headline": (head["a"], head["b"])})
    return build_config(cfg.model_dump(mode="json"), overrides)


def main(argv: list[str] | None = None) -> int:
    """Build the config, run every stage (resumable), check the truth, print it."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--organisms", type=Path, required=True, help="A build's output dir (planted.json inside).")
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="Write the truth check as JSON here.")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides of the demo config (e.g. design=pairwise).")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = exam_config(args.organisms, args.run_dir, args.overrides)
        t0 = time.perf_counter()
        run = Run(cfg)
        run.run_all()
        seconds = time.perf_counter() - t0
        result = check_report(RunDir.of(run.dir).report_json)
    except LatentDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a benchmark's output
        return 2
    print("\n".join(result.lines))  # noqa: T201
    passed = result.checked - len(result.failed)
    print(f"exam {cfg.name} ({', '.join(args.overrides) or 'demo settings'}): "  # noqa: T201
          f"{passed} of {result.checked} planted checks recovered; run took {seconds:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"overrides": args.overrides, "seconds": round(seconds, 1),
                                        **result.model_dump()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
