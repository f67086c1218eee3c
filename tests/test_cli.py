"""The CLI: help everywhere, one-line errors with exit 2, pending stages say so plainly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentdiff.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["organism"],
        ["config"],
        ["organism", "build"],
        ["organism", "list"],
        ["organism", "info"],
        ["config", "show"],
        ["config", "validate"],
        ["run"],
        ["demo"],
    ],
)
def test_help_on_every_command(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_config_validate_broken_yaml_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("crosscoder:\n  k: -5\n  arch: batchtopk\n")
    proc = subprocess.run(
        [sys.executable, "-m", "latentdiff.cli", "config", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "crosscoder.k" in lines[0] and "greater than 0" in lines[0]


def test_config_validate_and_show_ok(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: t\ncrosscoder:\n  k: 16\n")
    result = runner.invoke(app, ["config", "validate", str(good), "crosscoder.dict_size=512"])
    assert result.exit_code == 0 and "ok" in result.output
    shown = runner.invoke(app, ["config", "show", str(good), "crosscoder.k=8"])
    assert shown.exit_code == 0 and "k: 8" in shown.output


def test_stage_errors_say_so_plainly(tmp_path: Path) -> None:
    from latentdiff.config import build_config
    from latentdiff.errors import StageNotAvailable
    from latentdiff.run import Run

    run = Run(build_config({"run_dir": str(tmp_path / "run")}))
    with pytest.raises(StageNotAvailable, match="unknown stage 'chat'"):
        run.stage("chat")
    with pytest.raises(StageNotAvailable, match="stage 'label' needs stage 'index' done"):
        run.stage("label")


def test_run_with_missing_model_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run_dir: {tmp_path / 'run'}\nmodels:\n"
        "  - {name: base, path: /nonexistent/model, role: base}\n"
        "  - {name: ft, path: /nonexistent/ft, role: finetune}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "latentdiff.cli", "run", str(cfg)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "cannot load '/nonexistent/model'" in errors[0], proc.stderr
    assert (tmp_path / "run" / "config.yaml").is_file()
