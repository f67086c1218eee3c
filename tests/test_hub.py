"""Issue 17 (HF hub), offline: models and crosscoders by hub id and revision read from a huggingface_hub cache
built here the way huggingface_hub lays it out (and checked by huggingface_hub itself), and `latentdiff push`
on a finished run (the folder, its model card, the crosscoder loading back through `crosscoder.init_from`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import ROOT

ORGANISMS = ROOT / "core" / "organisms" / "models"
MODEL_REPO = "tiny-org/organism"  # main: the base organism; branch v1: the it organism
PUSHED_REPO = "tiny-org/pushed-cc"


def _commit(*parts: str) -> str:
    """A 40-hex commit id (deterministic)."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path], commit: str, refs: Sequence[str] = ("main",),
               repo_type: str = "model") -> Path:
    """Put `files` (path in repo -> local file) into a huggingface_hub cache as `repo_id` at `commit`:
    {type}s--OWNER--NAME/blobs/SHA256, snapshots/COMMIT/PATH -> ../../blobs/SHA256, refs/REF = COMMIT."""
    root = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for rel, src in files.items():
        data = src.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = root / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return root / "snapshots" / commit


def _tree(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "latentdiff.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def _offline_env(tmp: Path, cache: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp / "hf_home"),
            "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def pushed(reported_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`latentdiff push RUN REPO --folder OUT --branch v2` of the small reported run (no network)."""
    out = tmp_path_factory.mktemp("push") / "folder"
    proc = _cli("push", str(reported_run.dir), PUSHED_REPO, "--folder", str(out), "--branch", "v2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not uploaded" in proc.stdout, proc.stdout
    return out


# --------------------------------------------------------------------------- the cache itself


def test_cache_layout_is_huggingface_hubs(tmp_path: Path) -> None:
    from huggingface_hub import scan_cache_dir, snapshot_download

    cache = tmp_path / "cache"
    main, v1 = _commit("base"), _commit("it")
    snap = cache_repo(cache, MODEL_REPO, _tree(ORGANISMS / "base"), main)
    cache_repo(cache, MODEL_REPO, _tree(ORGANISMS / "it"), v1, refs=("v1",))
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "hello"}\n')
    cache_repo(cache, "tiny-org/texts", {"data/train.jsonl": data}, _commit("texts"), repo_type="dataset")

    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    repos = {(r.repo_type, r.repo_id): r for r in info.repos}
    assert set(repos) == {("model", MODEL_REPO), ("dataset", "tiny-org/texts")}
    revs = {r.commit_hash: set(r.refs) for r in repos["model", MODEL_REPO].revisions}
    assert revs == {main: {"main"}, v1: {"v1"}}
    assert {f.file_name for r in repos["model", MODEL_REPO].revisions for f in r.files} >= {"model.safetensors",
                                                                                              "config.json"}
    for rev in ("main", main):
        assert Path(snapshot_download(MODEL_REPO, revision=rev, cache_dir=cache, local_files_only=True)) == snap
    assert Path(snapshot_download(MODEL_REPO, revision="v1", cache_dir=cache, local_files_only=True)).name == v1
    got = snapshot_download("tiny-org/texts", repo_type="dataset", cache_dir=cache, local_files_only=True)
    assert (Path(got) / "data" / "train.jsonl").read_text() == data.read_text()


# --------------------------------------------------------------------------- push


def test_push_folder_card_and_round_trip(pushed: Path, reported_run) -> None:
    import yaml
    from huggingface_hub import ModelCard

    from latentdiff.config import load_config
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.formats import load_foreign
    from latentdiff.core.select import read_table
    from latentdiff.rundir import RunDir

    rd = RunDir(reported_run.dir)
    files = set(_tree(pushed))
    rel = {str(p.relative_to(rd.root)) for p in (rd.latents, rd.report_json, rd.report_md, rd.report_html,
                                                 *rd.finding_files())}
    assert {"README.md", "crosscoder.safetensors", "cfg.json", rd.config.name} | rel <= files, sorted(files)
    assert any(f.startswith(f"{rd.plots.relative_to(rd.root)}/") and f.endswith(".png") for f in files)
    assert (pushed / rd.latents.name).read_bytes() == rd.latents.read_bytes()
    assert len(read_table(pushed / rd.latents.name)) == len(read_table(rd.latents))

    text = (pushed / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["library_name"] == "latentdiff"
    assert meta["tags"] == ["crosscoder", "model-diffing", "interpretability"]
    assert "base_model" not in meta  # organisms are no hub ids
    card = ModelCard.load(pushed / "README.md")  # huggingface_hub parses the same front matter
    assert card.data.library_name == "latentdiff" and "crosscoder" in card.data.tags
    for needle in ("organism:base", "organism:it", "organism:shift", "layer 1", "dictionary size 256", "k 8",
                   "FVU", f"init_from: hub:{PUSHED_REPO}@v2", "init_format: latentdiff", "shift vs it",
                   f"latentdiff push RUN_DIR {PUSHED_REPO} --revision v2", "latentdiff run config.yaml"):
        assert needle in text, needle
    report = reported_run.report_result()
    assert all(f"| {c.name} | {c.n_a} | {c.n_b} |" in text for c in report.categories)

    cfg = load_config(pushed / rd.config.name)
    assert cfg.run_dir == "runs/small" and [m.path for m in cfg.models] == [m.path for m in reported_run.cfg.models]

    got = load_foreign(pushed, "latentdiff")
    want = CrossCoder.from_pretrained(rd.crosscoder("joint"))
    assert got.spec == want.spec
    for key, value in want.state_dict().items():
        assert got.state_dict()[key].equal(value), key


def test_pushed_folder_starts_a_run_through_init_from(pushed: Path, core_run, tmp_path: Path) -> None:
    """The folder's crosscoder as `crosscoder.init_from` (format latentdiff) of a run on the same activations."""
    import shutil

    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.run import Run
    from tests.conftest import small_run_config

    dest = tmp_path / "from-hub-folder"
    shutil.copytree(core_run.dir, dest)
    base = small_run_config(dest).crosscoder.model_dump()
    run = Run(small_run_config(dest, crosscoder={**base, "init_from": str(pushed), "init_format": "latentdiff"}))
    run.show_progress = False
    run.stage("train")
    assert run.rundir.read_marker("train")["init_from"] == str(pushed)
    assert not run.rundir.training_metrics("joint").exists()  # loaded, not trained
    got, want = run.crosscoder("joint").state_dict(), CrossCoder.from_pretrained(pushed).state_dict()
    assert all(got[k].equal(v) for k, v in want.items())


def test_hub_ids_are_the_models_on_the_hub(tmp_path: Path) -> None:
    from latentdiff.agent.push import hub_ids
    from tests.conftest import small_run_config

    models = [{"name": "base", "path": "organism:base", "role": "base"},
              {"name": "local", "path": str(ORGANISMS / "it"), "role": "finetune"},
              {"name": "hub", "path": MODEL_REPO, "role": "finetune", "revision": "v1"}]
    assert hub_ids(small_run_config(tmp_path, models=models, headline=["hub", "local"])) == [MODEL_REPO]


def test_push_needs_a_finished_run(core_run, tmp_path: Path) -> None:
    from latentdiff.agent.push import PushError, push
    from latentdiff.run import Run

    out = tmp_path / "out"
    with pytest.raises(PushError) as err:
        push(Run.open(core_run.dir), PUSHED_REPO, folder=out)
    msg = str(err.value)
    assert "\n" not in msg and "the label and report stages have not run" in msg and str(core_run.dir) in msg, msg
    assert "latentdiff run" in msg and not out.exists()


def test_push_refuses_bad_input_and_dry_run_leaves_nothing(reported_run, tmp_path: Path) -> None:
    from latentdiff.agent.push import PushError, push
    from latentdiff.run import Run

    run = Run.open(reported_run.dir)
    for repo in ("no-owner", "a/b/c", "a--b/c", ""):
        with pytest.raises(PushError, match="not a hub repo id"):
            push(run, repo, dry_run=True)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(PushError, match="not an empty directory"):
        push(run, PUSHED_REPO, folder=busy)
    with pytest.raises(PushError, match="no crosscoder 'nope'"):
        push(run, PUSHED_REPO, folder=tmp_path / "x", crosscoder="nope")
    assert not (tmp_path / "x").exists() and [p.name for p in tmp_path.iterdir()] == ["busy"]
    res = push(run, PUSHED_REPO, dry_run=True)
    assert res.folder is None and res.url is None and "README.md" in res.files and "library_name" in res.card


def test_upload_offline_is_one_line(reported_run, tmp_path: Path) -> None:
    """The real upload path up to the network: HF_HUB_OFFLINE makes huggingface_hub refuse create_repo."""
    proc = _cli("push", str(reported_run.dir), PUSHED_REPO, "--branch", "v1",
                env=_offline_env(tmp_path, tmp_path / "cache"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and f"uploading to {PUSHED_REPO} failed" in errors[0], proc.stderr
    assert "offline" in errors[0].lower(), errors[0]


def test_upload_without_huggingface_hub_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentdiff.agent.push import PushError, upload

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(PushError, match=r"pip install huggingface_hub"):
        upload(tmp_path, PUSHED_REPO, revision=None, private=False, message="m")


# --------------------------------------------------------------------------- reading by hub id, offline

_OFFLINE_CHECKS = textwrap.dedent("""
    import json, sys
    from safetensors.torch import load_file
    from latentdiff.config import ModelSpec
    from latentdiff.core.formats import load_foreign
    from latentdiff.core.models import load_model
    from latentdiff.errors import LatentDiffError

    organisms, repo, main, pushed, pushed_repo = sys.argv[1:]
    key = "model.embed_tokens.weight"
    out = {}
    for rev in ("main", main, "v1"):  # branch, commit hash, another branch
        m = load_model(ModelSpec(name="m", path=repo, role="base", revision=rev), device="cpu")
        got = m.model.state_dict()[key].float()
        out[rev] = [name for name in ("base", "it")
                    if got.equal(load_file(f"{organisms}/{name}/model.safetensors")[key].float())]
    for rev in ("no-such-branch", "0" * 40):
        try:
            load_model(ModelSpec(name="m", path=repo, role="base", revision=rev), device="cpu")
            out[rev] = "loaded"
        except LatentDiffError as err:
            out[rev] = [type(err).__name__, str(err)]
    want = load_foreign(pushed, "latentdiff").state_dict()
    for spec in (f"hub:{pushed_repo}", f"hub:{pushed_repo}@v2", f"hub:{pushed_repo}@{main}"):
        try:
            got = load_foreign(spec, "latentdiff").state_dict()
            out[spec] = all(got[k].equal(v) for k, v in want.items())
        except LatentDiffError as err:
            out[spec] = [type(err).__name__, str(err)]
    print(json.dumps(out))
""")


def test_models_and_crosscoders_by_hub_id_and_revision(pushed: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    main, v1 = _commit("base"), _commit("it")
    cache_repo(cache, MODEL_REPO, _tree(ORGANISMS / "base"), main)
    cache_repo(cache, MODEL_REPO, _tree(ORGANISMS / "it"), v1, refs=("v1",))
    cache_repo(cache, PUSHED_REPO, _tree(pushed), _commit("pushed"), refs=("main", "v2"))  # as if pushed twice
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_CHECKS, str(ORGANISMS), MODEL_REPO, main, str(pushed),
                           PUSHED_REPO], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **_offline_env(tmp_path, cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["main"] == ["base"] and out[main] == ["base"] and out["v1"] == ["it"], out
    for rev in ("no-such-branch", "0" * 40):
        kind, msg = out[rev]
        assert kind == "ModelLoadError" and "\n" not in msg and MODEL_REPO in msg, out[rev]
    assert out[f"hub:{PUSHED_REPO}"] is True and out[f"hub:{PUSHED_REPO}@v2"] is True, out
    kind, msg = out[f"hub:{PUSHED_REPO}@{main}"]  # a commit of another repo: not in this repo's cache
    assert kind == "ForeignFormatError" and "\n" not in msg and PUSHED_REPO in msg, msg


def test_a_dataset_by_hub_id_and_revision_reads_from_the_local_hub_cache_offline(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    v1, v2 = tmp_path / "v1.jsonl", tmp_path / "v2.jsonl"
    v1.write_text("".join(json.dumps({"text": f"first revision, document {i}"}) + "\n" for i in range(30)))
    v2.write_text("".join(json.dumps({"text": f"second revision, document {i}"}) + "\n" for i in range(50)))
    old = _commit("texts-v1")
    cache_repo(cache, "tiny-org/texts", {"data/train.jsonl": v1}, old, refs=("v1",), repo_type="dataset")
    cache_repo(cache, "tiny-org/texts", {"data/train.jsonl": v2}, _commit("texts-v2"), repo_type="dataset")
    code = (
        "import sys\n"
        "from latentdiff.config import DataConfig\n"
        "from latentdiff.core.data import _hf_docs\n"
        "from latentdiff.errors import ConfigError\n"
        "for rev in sys.argv[1:]:\n"
        "    d = DataConfig(source='hf', id='tiny-org/texts', revision=rev or None)\n"
        "    try:\n"
        "        docs = [p['text'] for _, p in _hf_docs(d, 'train')]\n"
        "        print(rev, len(docs), docs[0])\n"
        "    except ConfigError as err:\n"
        "        print(rev, 'error', err)\n"
    )
    env = {**os.environ, **_offline_env(tmp_path, cache), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    done = subprocess.run([sys.executable, "-c", code, "v1", old, "", "no-such-branch"], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "v1 27 first revision, document 0"  # 30 rows, every 10th held out
    assert lines[1] == f"{old} 27 first revision, document 0"
    assert lines[2] == " 45 second revision, document 0"  # no revision: main
    assert lines[3].startswith("no-such-branch error data.id 'tiny-org/texts': cannot load split 'train': not in "
                               "the local hub cache at revision 'no-such-branch'"), lines[3]
