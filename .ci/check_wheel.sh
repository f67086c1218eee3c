#!/usr/bin/env bash
# Packaging check (issue 15): build the wheel from the checkout's files, install it (not editable) into a
# fresh venv, and from a directory outside the checkout import every module of every subpackage the source
# tree has (folders with __init__.py under pyproject's package-dir mapping, so a subpackage missing from
# `packages` fails here), then run `latentdiff --help` and `latentdiff organism list` (the organisms'
# models/ ship as package data).
#   usage: bash .ci/check_wheel.sh [WORKDIR]
# WORKDIR (default $TMPDIR/latentdiff-check-wheel, outside the checkout) keeps the sources, wheel, venv and
# logs for a look afterwards; it is not removed at the end: deleting the venv's ~60k files took longer than
# installing them here. A rerun replaces it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-${TMPDIR:-/tmp}/latentdiff-check-wheel}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
PY="${PYTHON:-python3}"
t0=$(date +%s)
step() { echo "check_wheel: $1 ($(( $(date +%s) - t0 ))s)"; }

# 1. The wheel, built from a copy of the files git would commit (tracked + untracked-not-ignored), so
#    stale build/ or egg-info folders in the checkout cannot add files the sources no longer have.
src="$work/src"
rm -rf "$src" "$work/dist"
mkdir -p "$src"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | xargs -0 cp --parents -t "$src")
else
  (cd "$root" && tar --exclude=.venv --exclude='.ci-*' --exclude=build --exclude='*.egg-info' --exclude=runs -cf - .) \
    | tar -xf - -C "$src"
fi
# the project venv's setuptools (offline, fast); an isolated build if it has none
"$root/.venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$work/dist" "$src" 2>"$work/build.log" \
  || "$root/.venv/bin/pip" wheel -q --no-deps -w "$work/dist" "$src" 2>>"$work/build.log" \
  || { cat "$work/build.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/latentdiff-*.whl)
step "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

# 2. A fresh venv with the wheel and its dependencies (torch: the CPU build the README installs).
rm -rf "$work/venv"
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0 "$wheel" 2>"$work/install.log" \
  || { cat "$work/install.log" >&2; exit 1; }
step "installed into a fresh venv"

# 3. From outside the checkout (an empty folder): every module of the sources the wheel was built from
#    imports, from site-packages.
rm -rf "$work/outside" && mkdir "$work/outside" && cd "$work/outside"
"$work/venv/bin/python" - "$src" <<'EOF'
import importlib
import sys
import tomllib
from pathlib import Path

root = Path(sys.argv[1])
package_dir = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
site = Path(importlib.import_module("latentdiff").__file__).parent.parent
modules = []
for package, folder in package_dir.items():
    base = root / folder
    for init in sorted(base.rglob("__init__.py")):
        if "__pycache__" in init.parts or any(p.startswith(".") for p in init.relative_to(base).parts):
            continue
        name = ".".join([package, *init.parent.relative_to(base).parts])
        modules += [name] + [f"{name}.{p.stem}" for p in sorted(init.parent.glob("*.py")) if p.name != "__init__.py"]
failed = []
for name in modules:
    try:
        module = importlib.import_module(name)
    except Exception as err:  # report every failure, not just the first
        failed.append(f"{name}: {type(err).__name__}: {err}")
        continue
    if site not in Path(module.__file__).parents:
        failed.append(f"{name}: imported from {module.__file__}, not from the installed wheel")
for line in failed:
    print(f"check_wheel: {line}", file=sys.stderr)
print(f"check_wheel: {len(modules) - len(failed)}/{len(modules)} modules import from {site}")
sys.exit(1 if failed else 0)
EOF
step "every module imports"

# 4. The command line, from outside the checkout.
"$work/venv/bin/latentdiff" --help >/dev/null
"$work/venv/bin/latentdiff" organism list | tee "$work/organisms.txt" | tail -n 3
for name in base it shift; do
  grep -qw "$name" "$work/organisms.txt" || { echo "check_wheel: organism '$name' not listed" >&2; exit 1; }
done
step "latentdiff --help and organism list work from the wheel"
