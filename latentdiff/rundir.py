"""A run directory: the only code that knows where a run keeps what, its stage markers and its lock.

Layout (every path below comes from a `RunDir` property or method; nothing else spells them):

    config.yaml                          the resolved RunConfig the stages ran with
    stages/STAGE.json                    done-marker: hash of the settings the stage used + its summary
    stages/STAGE.started.json            begun-marker: {"hash", "staged"} of the run in progress
    stages/label-wIofN.json              a labelling worker's marker
    activations/{train,heldout}/         sharded activation caches (manifest.json, shard_*.safetensors)
    activations/heldout/contexts.npy     held-out token ids [n_ctx, ctx_len] (-1 = padding)
    activations/heldout/docs.jsonl       one DocMeta per held-out context
    crosscoders/NAME/                    cfg.json, crosscoder.safetensors, metrics.jsonl, metrics.png
    latents.parquet                      LatentStats rows (every latent x pair)
    examples/NAME.jsonl.gz               Example records (+ NAME.scaffold.json beside them)
    chroma/                              the embedded Chroma store (store.path / store.url override it)
    findings/KEY.json, findings/labels/  the agent's findings, one file per latent
    agent.sqlite, agent-wIofN.sqlite     LangGraph checkpoints (the merge run, each worker)
    judge_cache/                         HTTP judges' response cache
    vectors.sqlite                       example-window sentence vectors (index; the embedding judge reuses them)
    aggregate.json                       per-category shifts with CIs
    report/report.{json,md,html}, report/plots/
    tensorboard/train/NAME/, tensorboard/label/   TensorBoard event files (log.tensorboard)
    wandb/                               W&B's files (log.wandb; offline-run-*/ to `wandb sync`)
    .staging/STAGE/                      a stage's outputs being rebuilt under new settings (swapped in when done)
    .lock                                holder of the exclusive lock (pid, host, command, start time)

A ground module: it imports only the standard library and latentdiff.errors / latentdiff.io, so every
layer (core/, store/, agent/ and the roof) may use it.

Rules: a process that writes a run (a stage, `latentdiff run`, a labelling worker) holds `lock()`;
readers (chat, serve, the results API, the report's readers) take no lock. A stage whose settings
changed builds its outputs in `.staging/STAGE/` (a `RunDir` with those outputs redirected, from
`staged()`) and `swap_in()` renames them over the old ones when it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from latentdiff.errors import RunDirLocked
from latentdiff.io import atomic_write_json

_HELD: dict[str, list[Any]] = {}  # resolved lock path -> [file object, depth]: the lock is re-entrant per process


class RunDir:
    """The paths of one run directory (`staged` redirects some top-level entries to a staging dir)."""

    # top-level entries that stages produce (the names STAGES' `outputs` refer to)
    ACTIVATIONS = "activations"
    CROSSCODERS = "crosscoders"
    LATENTS = "latents.parquet"
    EXAMPLES = "examples"
    INSPECT = "inspect"
    FINDINGS = "findings"
    AGENT_DB = "agent.sqlite"
    AGGREGATE = "aggregate.json"
    REPORT = "report"

    def __init__(self, root: str | Path, staged: dict[str, Path] | None = None) -> None:
        self.root = Path(root)
        self._staged = dict(staged or {})

    @classmethod
    def of(cls, run_dir: str | Path | RunDir) -> RunDir:
        """A RunDir for a path (a RunDir passes through unchanged, staging included)."""
        return run_dir if isinstance(run_dir, RunDir) else cls(run_dir)

    def __repr__(self) -> str:
        staged = f", staged={sorted(self._staged)}" if self._staged else ""
        return f"RunDir({str(self.root)!r}{staged})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and (self.root, self._staged) == (other.root, other._staged)

    def __hash__(self) -> int:
        return hash(self.root)

    def top(self, name: str) -> Path:
        """A top-level entry (e.g. RunDir.FINDINGS), in the staging dir when it is being rebuilt."""
        return self._staged.get(name, self.root / name)

    # ------------------------------------------------------------------ config and stage markers

    @property
    def config(self) -> Path:
        """config.yaml: the settings the stages ran with (Run.open reads it)."""
        return self.root / "config.yaml"

    @property
    def stages_dir(self) -> Path:
        """Where the stage markers live."""
        return self.root / "stages"

    def marker(self, stage: str) -> Path:
        """The stage's done-marker."""
        return self.stages_dir / f"{stage}.json"

    def started_marker(self, stage: str) -> Path:
        """The stage's begun-marker (hash of the settings being computed, and whether staged)."""
        return self.stages_dir / f"{stage}.started.json"

    def worker_marker(self, tag: str) -> Path:
        """A labelling worker's marker (tag 'wIofN')."""
        return self.stages_dir / f"label-{tag}.json"

    def worker_markers(self) -> list[Path]:
        """Every labelling worker's marker."""
        return sorted(self.stages_dir.glob("label-w*.json"))

    def read_marker(self, stage: str) -> dict[str, Any] | None:
        """The done-marker's content (None when there is none)."""
        return _read_json(self.marker(stage))

    def read_started(self, stage: str) -> dict[str, Any] | None:
        """The begun-marker's content (None when there is none)."""
        return _read_json(self.started_marker(stage))

    def write_marker(self, stage: str, info: dict[str, Any]) -> None:
        """Write the done-marker (atomically)."""
        atomic_write_json(self.marker(stage), info)

    def write_started(self, stage: str, info: dict[str, Any]) -> None:
        """Write the begun-marker (atomically)."""
        atomic_write_json(self.started_marker(stage), info)

    def marker_hash(self, stage: str) -> str | None:
        """The settings hash in the done-marker (None when not done)."""
        return (self.read_marker(stage) or {}).get("hash")

    def forget(self, stage: str) -> None:
        """Remove the stage's markers (its outputs stay)."""
        for path in (self.marker(stage), self.started_marker(stage)):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ harvest / train / select / sample

    @property
    def activations(self) -> Path:
        """activations/: the train and held-out caches."""
        return self.top(self.ACTIVATIONS)

    def cache(self, split: str) -> Path:
        """One split's activation cache ('train' or 'heldout')."""
        return self.activations / split

    @property
    def contexts(self) -> Path:
        """Held-out token ids (numpy [n_ctx, ctx_len])."""
        return self.cache("heldout") / "contexts.npy"

    @property
    def docs(self) -> Path:
        """Held-out document metadata (JSONL, one line per context)."""
        return self.cache("heldout") / "docs.jsonl"

    @property
    def crosscoders(self) -> Path:
        """crosscoders/: one directory per trained crosscoder."""
        return self.top(self.CROSSCODERS)

    def crosscoder(self, name: str) -> Path:
        """A crosscoder's directory (weights, cfg.json, metrics)."""
        return self.crosscoders / name

    def crosscoder_names(self) -> list[str]:
        """Names of the crosscoders with final weights, the primary (no '-seed' suffix) first."""
        names = sorted(p.parent.name for p in self.crosscoders.glob("*/crosscoder.safetensors"))
        return sorted(names, key=lambda n: ("-seed" in n, n))

    def crosscoder_weights(self, name: str) -> Path:
        """A crosscoder's final weights."""
        return self.crosscoder(name) / "crosscoder.safetensors"

    def crosscoder_checkpoint(self, name: str) -> Path:
        """A crosscoder's training checkpoint (present while training is unfinished)."""
        return self.crosscoder(name) / "checkpoint.pt"

    def crosscoder_spec(self, name: str) -> Path:
        """A crosscoder's cfg.json."""
        return self.crosscoder(name) / "cfg.json"

    def training_metrics(self, name: str) -> Path:
        """A crosscoder's metrics.jsonl (one line per logged step)."""
        return self.crosscoder(name) / "metrics.jsonl"

    def training_metrics_files(self) -> list[Path]:
        """Every crosscoder's metrics.jsonl."""
        return sorted(self.crosscoders.glob("*/metrics.jsonl"))

    def training_plots(self) -> list[Path]:
        """Every crosscoder's training-curve plot."""
        return sorted(self.crosscoders.glob("*/metrics.png"))

    @property
    def latents(self) -> Path:
        """latents.parquet: one LatentStats row per latent and pair."""
        return self.top(self.LATENTS)

    @property
    def examples_dir(self) -> Path:
        """examples/: the sampled example windows."""
        return self.top(self.EXAMPLES)

    def examples(self, crosscoder: str) -> Path:
        """A crosscoder's examples (gzipped JSONL)."""
        return self.examples_dir / f"{crosscoder}.jsonl.gz"

    def example_files(self) -> list[Path]:
        """Every examples file."""
        return self.examples_in(self.examples_dir)

    @staticmethod
    def examples_in(directory: str | Path) -> list[Path]:
        """Every examples file in an examples directory (a run's, or a copy of one)."""
        return sorted(Path(directory).glob("*.jsonl.gz"))

    @property
    def inspect_dir(self) -> Path:
        """inspect/: per crosscoder, the logit lens, ablation and histogram of its labelled latents."""
        return self.top(self.INSPECT)

    def inspection(self, crosscoder: str) -> Path:
        """A crosscoder's latent inspections (JSON: latent -> LatentInspection)."""
        return self.inspect_dir / f"{crosscoder}.json"

    # ------------------------------------------------------------------ index / label / aggregate / report

    @property
    def chroma(self) -> Path:
        """The embedded Chroma store's default directory."""
        return self.root / "chroma"

    @property
    def findings(self) -> Path:
        """findings/: one JSON file per labelled latent."""
        return self.top(self.FINDINGS)

    def finding(self, key: str) -> Path:
        """Where a latent's findings live ('joint:812' -> findings/joint_812.json)."""
        return self.findings / f"{key.replace(':', '_')}.json"

    def finding_files(self) -> list[Path]:
        """Every recorded latent's findings file."""
        return sorted(self.findings.glob("*.json"))

    def label(self, key: str, round_: int = 0) -> Path:
        """A judged label of a latent (refinement round `round_`), saved the moment the judge returns it."""
        suffix = "" if round_ == 0 else f".r{round_}"
        return self.findings / "labels" / f"{key.replace(':', '_')}{suffix}.json"

    def agent_db(self, worker: str | None = None) -> Path:
        """The agent's SQLite checkpoints (one per labelling worker, tag 'wIofN')."""
        return self.top(self.AGENT_DB) if worker is None else self.root / f"agent-{worker}.sqlite"

    def worker_dbs(self) -> list[Path]:
        """Every labelling worker's checkpoints."""
        return sorted(self.root.glob("agent-w*.sqlite"))

    @property
    def judge_cache(self) -> Path:
        """The HTTP judges' response cache directory."""
        return self.root / "judge_cache"

    @property
    def vectors(self) -> Path:
        """Sentence vectors keyed by (embedding model, text): each distinct window is embedded once per run."""
        return self.root / "vectors.sqlite"

    @property
    def aggregate(self) -> Path:
        """aggregate.json."""
        return self.top(self.AGGREGATE)

    @property
    def report_dir(self) -> Path:
        """report/: report.json, report.md, report.html, plots/."""
        return self.top(self.REPORT)

    @property
    def report_json(self) -> Path:
        """report/report.json (the versioned Report record)."""
        return self.report_dir / "report.json"

    @property
    def report_md(self) -> Path:
        """report/report.md."""
        return self.report_dir / "report.md"

    @property
    def report_html(self) -> Path:
        """report/report.html."""
        return self.report_dir / "report.html"

    @property
    def plots(self) -> Path:
        """report/plots/."""
        return self.report_dir / "plots"

    # ------------------------------------------------------------------ experiment logging (log.*)

    @property
    def tensorboard(self) -> Path:
        """tensorboard/: TensorBoard event files (log.tensorboard with no log.tensorboard_dir)."""
        return self.root / "tensorboard"

    @property
    def wandb(self) -> Path:
        """wandb/: W&B's files (log.wandb); `wandb.init(dir=root)` puts them here."""
        return self.root / "wandb"

    # ------------------------------------------------------------------ outputs: remove, stage, swap

    def remove(self, names: Iterable[str]) -> None:
        """Remove top-level entries (files or directories; missing ones are fine)."""
        for name in names:
            _remove(self.top(name))

    def exists(self, names: Iterable[str]) -> bool:
        """True if any of these top-level entries exists."""
        return any(self.top(n).exists() for n in names)

    def staging_dir(self, stage: str) -> Path:
        """Where a stage rebuilds its outputs under new settings."""
        return self.root / ".staging" / stage

    def staged(self, stage: str, names: Iterable[str]) -> RunDir:
        """This run directory with the stage's outputs `names` redirected into its staging dir (created)."""
        base = self.staging_dir(stage)
        base.mkdir(parents=True, exist_ok=True)
        return RunDir(self.root, {**self._staged, **{n: base / n for n in names}})

    @property
    def is_staged(self) -> bool:
        """True when some outputs are redirected to a staging dir."""
        return bool(self._staged)

    def swap_in(self) -> None:
        """Move the staged outputs over the real ones: each by one rename (the old one is removed after).

        Outputs the staged run did not produce are removed too: the new settings do not make them."""
        for name, staged in self._staged.items():
            real = self.root / name
            if staged.exists():
                old = staged.with_name(f".old-{name}")
                _remove(old)
                if real.exists():
                    os.replace(real, old)
                os.replace(staged, real)
                _remove(old)
            else:
                _remove(real)
        for base in {p.parent for p in self._staged.values()}:
            shutil.rmtree(base, ignore_errors=True)

    def clear_staging(self, stage: str) -> None:
        """Drop whatever a stage left in its staging dir (partial outputs of other settings)."""
        shutil.rmtree(self.staging_dir(stage), ignore_errors=True)

    # ------------------------------------------------------------------ the exclusive lock

    @property
    def lock_file(self) -> Path:
        """The lock file (holds the current or last holder's pid, host, command and start time)."""
        return self.root / ".lock"

    @contextlib.contextmanager
    def lock(self, command: str | None = None) -> Iterator[None]:
        """Hold the run directory's exclusive lock (re-entrant within a process).

        Another process holding it: RunDirLocked, one line naming the holder. Under torchrun only rank 0
        locks (the other ranks work for it). The lock goes with the process (even on kill -9)."""
        if int(os.environ.get("RANK", "0")) != 0:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        key = str(self.lock_file.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        fh = open(self.lock_file, "a+")  # noqa: SIM115 - kept open while held
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read()
            fh.close()
            raise RunDirLocked(f"{self.root} is in use by {_describe(holder)}; wait for it to finish "
                               "(or stop that process) and run again") from None
        fh.seek(0)
        fh.truncate()
        cmd = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": cmd[:300],
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        fh.flush()
        _HELD[key] = [fh, 1]
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        cmd = " ".join(str(info.get("command", "?")).split())
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} ({cmd})"
    except (ValueError, AttributeError):
        return "another process"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
