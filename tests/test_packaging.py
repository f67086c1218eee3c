"""Packaging (issue 15): the wheel carries every subpackage, module and data file of the source tree.

The package list in pyproject.toml is explicit (folders install under the `latentdiff.` namespace), so a
new subpackage or data folder is easy to forget; an editable install would never notice. The wheel is
built here from the files git would commit; .ci/check_wheel.sh also installs it into a fresh venv and runs
it from outside the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_files() -> list[str]:
    """Paths (relative to the repo) that git would commit: tracked plus untracked-but-not-ignored."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def expected_entries(files: list[str]) -> set[str]:
    """What the wheel must hold: every file under each package-dir folder that is part of a package (a folder
    with __init__.py, or data below one), at its `latentdiff/...` path."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {pkg.replace(".", "/"): folder for pkg, folder in setuptools["package-dir"].items()}
    out: set[str] = set()
    for f in files:
        path = Path(f)
        # the deepest mapped folder that holds the file (latentdiff.core = core/, latentdiff = latentdiff/)
        owners = [(dest, Path(src)) for dest, src in folders.items() if Path(src) in path.parents]
        if not owners or path.suffix in (".pyc", ".pyo") or "__pycache__" in path.parts:
            continue
        dest, src = max(owners, key=lambda o: len(o[1].parts))
        rel = path.relative_to(src)
        if path.suffix == ".py" and not (ROOT / path.parent / "__init__.py").is_file():
            continue  # a script beside a package, not a module of it
        out.add(f"{dest}/{rel.as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """(the built wheel's file names, the entries the source tree says it must have)."""
    files = source_files()
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)]
    proc = subprocess.run([*build, "--no-build-isolation"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:  # no setuptools in this venv: an isolated build
        proc = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("latentdiff-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
    return names, expected_entries(files)


def test_the_wheel_has_every_subpackage(wheel: tuple[set[str], set[str]]) -> None:
    names, expected = wheel
    inits = {e for e in expected if e.endswith("/__init__.py")}
    assert {"latentdiff/__init__.py", "latentdiff/core/__init__.py", "latentdiff/agent/judges/__init__.py",
            "latentdiff/store/__init__.py", "latentdiff/prompts/__init__.py"} <= inits
    assert not inits - names, f"subpackages missing from the wheel (pyproject `packages`): {sorted(inits - names)}"
    modules = {e for e in expected if e.endswith(".py")}
    assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"


def test_the_wheel_has_every_data_file(wheel: tuple[set[str], set[str]]) -> None:
    names, expected = wheel
    data = {e for e in expected if not e.endswith(".py")}
    organisms = {e for e in data if e.startswith("latentdiff/core/organisms/models/")}
    for name in ("base", "it", "shift"):
        assert {f"latentdiff/core/organisms/models/{name}/{f}" for f in
                ("config.json", "model.safetensors", "tokenizer.json", "organism.json")} <= organisms
    assert "latentdiff/prompts/taxonomy.yaml" in data and "latentdiff/prompts/label_system.md" in data
    missing = sorted(data - names)
    assert not missing, f"data files missing from the wheel (pyproject `package-data`): {missing}"


def test_the_wheel_has_nothing_outside_the_namespace(wheel: tuple[set[str], set[str]]) -> None:
    names, _ = wheel
    tops = {n.split("/")[0] for n in names}
    assert all(t == "latentdiff" or t.endswith(".dist-info") for t in tops), tops  # no bare `core`, `tests`


def test_openmp_waits_passively_unless_the_user_says_otherwise() -> None:
    code = (
        "import os, sys\n"
        "import latentdiff.core.crosscoder\n"  # loads torch through the package, after latentdiff/__init__
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert got.stdout.strip() == "PASSIVE", got.stderr[-2000:]
    got = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert got.stdout.strip() == "ACTIVE", got.stderr[-2000:]
