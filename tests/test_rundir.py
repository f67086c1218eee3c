"""The run directory (issue 15): one RunDir owns its paths, markers and lock; one STAGES table drives
Run, the CLI and the results API; a settings change is checked before anything is touched, and a
stage rebuilt under new settings keeps the finished outputs until its own are complete."""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from latentdiff.agent.judges.base import Judge
from tests.conftest import ROOT, small_run_config


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "latentdiff.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [ln for ln in proc.stderr.splitlines() if "error:" in ln]


def _tree_hash(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (the lock file aside: it names its last holder)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _copy(run, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run.dir, dst)
    return dst


# --------------------------------------------------------------------------- the lock


def test_second_process_gets_one_line_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"run_dir: {run_dir}\nname: locked\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from latentdiff.rundir import RunDir
            with RunDir({str(run_dir)!r}).lock(command="latentdiff run holder.yaml"):
                print("locked", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        proc = _cli("run", str(cfg))
        assert proc.returncode != 0
        errors = _error_lines(proc)
        assert len(errors) == 1, proc.stderr
        assert f"pid {holder.pid}" in errors[0] and "latentdiff run holder.yaml" in errors[0], errors[0]
        assert "in use" in errors[0]
        assert not (run_dir / "stages").exists()  # nothing ran
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    from latentdiff.rundir import RunDir

    with RunDir(run_dir).lock(), RunDir(run_dir).lock():  # free again, and re-entrant in one process
        pass


# --------------------------------------------------------------------------- validate before deleting


@pytest.mark.parametrize("override", ["judge.spec=embeddingg", "judge.taxonomy=/nonexistent/taxonomy.yaml"])
def test_typo_in_changed_settings_touches_nothing(reported_run, tmp_path: Path, override: str) -> None:
    run_dir = _copy(reported_run, tmp_path)
    before = _tree_hash(run_dir)
    proc = _cli("run", str(run_dir / "config.yaml"), f"run_dir={run_dir}", override)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1, proc.stderr
    assert ("embeddingg" in errors[0]) if "spec" in override else ("/nonexistent/taxonomy.yaml" in errors[0])
    assert _tree_hash(run_dir) == before  # findings, agent.sqlite, config.yaml, aggregate, report, markers


class ExplodingJudge(Judge):
    """A judge that passes every check and then fails the stage on its first call."""

    async def label(self, request):  # noqa: ANN001, ANN201
        raise RuntimeError("the judge exploded")

    async def detect(self, label, examples):  # noqa: ANN001, ANN201
        raise RuntimeError("the judge exploded")


def test_changed_settings_build_beside_the_old_outputs(reported_run, tmp_path: Path) -> None:
    from latentdiff import stages
    from latentdiff.run import Run
    from latentdiff.rundir import RunDir

    run_dir = _copy(reported_run, tmp_path)
    rd = RunDir(run_dir)
    kept = {p: h for p, h in _tree_hash(run_dir).items() if not p.startswith(("config.yaml", "stages/", "chroma/"))}
    markers = {s: rd.read_marker(s) for s in ("label", "aggregate", "report")}

    failing = Run(small_run_config(run_dir, judge={"spec": "tests.test_rundir:ExplodingJudge"}))
    failing.show_progress = False
    with pytest.raises(Exception, match="exploded"):  # the agent records it or lets it through: not done
        failing.run_all()
    after = _tree_hash(run_dir)
    assert {p: after.get(p) for p in kept} == kept  # findings, agent.sqlite, aggregate, report: all whole
    assert {s: rd.read_marker(s) for s in markers} == markers  # and still done under the old settings
    assert rd.read_started("label")["staged"] and rd.staging_dir("label").is_dir()  # new work goes beside
    old = Run(small_run_config(run_dir))
    assert all(v == "done" for v in old.status().values())
    assert old.report_result().run == "small"

    changed = Run(small_run_config(run_dir, agent={"max_latents": 3}))  # a label setting: label onwards rerun
    changed.show_progress = False
    changed.run_all()
    assert all(v == "done" for v in changed.status().values())
    assert not (run_dir / ".staging" / "label").exists() and not (run_dir / ".staging" / "report").exists()
    assert len({f.ref.key for f in changed.findings()}) <= 3
    assert stages.is_done(changed.cfg, run_dir, "report") and not stages.is_done(old.cfg, run_dir, "label")


# --------------------------------------------------------------------------- one table


def test_stages_table_drives_cli_run_and_results(core_run, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentdiff import results, stages
    from latentdiff.cli import app
    from latentdiff.run import Run
    from latentdiff.rundir import RunDir

    names = [s.name for s in stages.STAGES]
    assert names == ["harvest", "train", "select", "sample", "inspect", "index", "label", "aggregate", "report"]
    commands = [c.name for c in app.registered_commands if c.rich_help_panel == "Stages"]
    assert commands == names  # one subcommand per stage, in pipeline order
    assert list(core_run.status()) == names
    for s in stages.STAGES:
        assert callable(s.run) and callable(s.read) and set(s.outputs) <= {
            v for k, v in vars(RunDir).items() if k.isupper()}
    assert {s.name for s in stages.STAGES if s.distributed} == {"harvest", "train"}
    assert core_run.result("select").sides  # read through the table's reader

    seen = []

    def read_extra(cfg, rd, info):  # noqa: ANN001, ANN202
        seen.append(info["answer"])
        return info["answer"]

    extra = stages.Stage("extra", ("models",), (), lambda cfg, rd, show: None, read_extra)
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, extra))
    monkeypatch.setattr(stages, "STAGE_NAMES", (*stages.STAGE_NAMES, "extra"))
    run = Run(core_run.cfg)
    assert run.status()["extra"] == "pending"
    RunDir(run.dir).write_marker("extra", {"hash": stages.stage_hash(run.cfg, "extra"), "answer": 42})
    try:
        assert run.status()["extra"] == "done"
        assert results.read_result(run.cfg, run.dir, "extra") == 42 and seen == [42]
    finally:
        RunDir(run.dir).forget("extra")


# --------------------------------------------------------------------------- no path literals outside RunDir

# Top-level entries and files of a run directory: only latentdiff/rundir.py spells them.
RUN_FILES = {"config.yaml", "latents.parquet", "aggregate.json", "agent.sqlite", "report.json", "report.md",
             "report.html", "contexts.npy", "docs.jsonl"}
RUN_DIRS = {"findings", "examples", "crosscoders", "activations", "stages", "chroma", "report", "plots",
            "judge_cache", "labels", ".staging"}
RUN_PATTERNS = (".jsonl.gz", ".started.json", "agent-w", "label-w", ".sqlite")
SCANNED = ("latentdiff", "agent", "core", "store", "benchmarks")
NOT_RUN_DIRS = {
    "agent/export_neuronpedia.py",  # writes Neuronpedia's import layout (activations/batch-N.jsonl.gz), not a run
}
KNOWN: dict[str, str] = {}  # files left for their owners (each entry should become a RunDir call)


def _path_literals(path: Path) -> list[str]:
    """`file:line: literal` for every run-dir path literal: a known file name anywhere in code (docstrings
    aside), a run-dir entry used in a path (`x / "findings"`, `.glob("...")`, `.joinpath(...)`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    in_path: set[int] = set()
    for n in ast.walk(tree):
        operands: list[ast.AST] = []
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            operands = [n.left, n.right]
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in (
                "glob", "rglob", "joinpath", "with_name"):
            operands = list(n.args)
        for op in operands:
            for sub in ast.walk(op):
                in_path.add(id(sub))
    hits = []
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Constant) and isinstance(n.value, str)) or id(n) in docstrings:
            continue
        v = n.value
        bad = v in RUN_FILES or (id(n) in in_path and (v.strip("/").split("/")[0] in RUN_DIRS
                                                       or any(p in v for p in RUN_PATTERNS)))
        if bad:
            hits.append(f"{path.relative_to(ROOT)}:{n.lineno}: {v!r}")
    return hits


def test_no_run_dir_path_literals_outside_rundir() -> None:
    hits = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel == "latentdiff/rundir.py" or "organisms" in path.parts or rel in NOT_RUN_DIRS | set(KNOWN):
                continue
            hits.extend(_path_literals(path))
    assert not hits, "run-dir paths spelled outside latentdiff/rundir.py:\n" + "\n".join(hits)


ROOF = ("latentdiff.stages", "latentdiff.run", "latentdiff.cli", "latentdiff.results")


def test_core_store_and_agent_never_import_the_roof() -> None:
    """docs/design.md layout: core/, store/ and agent/ sit below the stage runner, the CLI and the API."""
    bad = []
    for folder in ("core", "store", "agent"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = ([a.name for a in n.names] if isinstance(n, ast.Import)
                         else [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names]
                         if isinstance(n, ast.ImportFrom) else [])
                if any(name == r or name.startswith(r + ".") for name in names for r in ROOF):
                    bad.append(f"{path.relative_to(ROOT)}:{n.lineno}")
    assert not bad, f"imports of the roof ({', '.join(ROOF)}) below it: {bad}"


def test_a_finished_runs_recorded_store_scope_is_the_stages_scope(reported_run, tmp_path: Path) -> None:
    from latentdiff import stages
    from latentdiff.rundir import RunDir
    from latentdiff.store.chroma import recorded_scope
    from latentdiff.store.errors import StoreError

    rd = RunDir(reported_run.dir)
    assert recorded_scope(rd) == stages.store_scope(reported_run.cfg, rd)  # the chat reads what the stages wrote
    run_dir = _copy(reported_run, tmp_path)
    RunDir(run_dir).forget("label")
    with pytest.raises(StoreError, match="not done"):
        recorded_scope(RunDir(run_dir))
