"""The HTML report in a real headless browser (Debian chromium): it renders, the shift table and the
embedded shift chart are there, and a screenshot is not blank."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from latentdiff.run import Run
from tests.conftest import _unavailable, small_run_config

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    return exe  # type: ignore[return-value]


def test_report_renders_in_chromium(core_run, chromium: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(core_run.dir, run_dir)
    run = Run(small_run_config(run_dir))
    run.show_progress = False
    for stage in ("index", "label", "aggregate", "report"):
        run.stage(stage)
    page = (run_dir / "report" / "report.html").as_uri()
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120)
    assert 'id="shift-table"' in dom.stdout and 'id="plot-shift"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page], capture_output=True, text=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert img.size == (1200, 1600) and hi - lo > 100  # real content, not a blank page
    colors = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, table and the embedded chart
