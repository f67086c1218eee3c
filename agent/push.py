"""`latentdiff push`: a finished run as a Hugging Face hub repo (docs/interop.md, "The Hugging Face hub").

The upload folder mirrors the run directory's names (each path comes from `RunDir`):

    README.md                  model card: YAML front matter (library_name, tags, base_model) + the run's summary
    crosscoder.safetensors     the primary crosscoder's weights and cfg.json, at the root: the folder is a
    cfg.json                   latentdiff crosscoder directory, so `crosscoder.init_from: hub:REPO` loads it
    latents.parquet            the select stage's latent table (LatentStats rows)
    findings/                  the agent's findings (and judged labels) as stored
    report/                    report.md, report.html, report.json, plots/
    config.yaml                the run's settings (run_dir set to runs/NAME): `latentdiff run config.yaml`

Nothing here touches the network except `upload`: `HfApi.create_repo(exist_ok=True)`, `create_branch` for a
branch other than main, then one `HfApi.upload_folder` call. The run is read through a `RunLike` (a
`latentdiff.run.Run`): agent/ does not import the roof.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, Field

from latentdiff.config import RunConfig
from latentdiff.errors import LatentDiffError
from latentdiff.rundir import RunDir

log = logging.getLogger(__name__)

CARD = "README.md"
LIBRARY = "latentdiff"
TAGS = ("crosscoder", "model-diffing", "interpretability")
NEEDED = ("train", "select", "label", "report")  # stages whose outputs go into the folder
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class PushError(LatentDiffError):
    """A run that cannot be pushed (a stage not done, a bad repo id, an existing folder, a failed upload)."""


class RunLike(Protocol):
    """What push reads from a run (`latentdiff.run.Run` provides it)."""

    cfg: RunConfig
    rundir: RunDir

    def status(self) -> dict[str, str]:
        """Stage -> 'done' / 'started' / 'pending'."""
        ...

    def result(self, name: str) -> Any:
        """The typed result of a done stage."""
        ...


class PushResult(BaseModel):
    """What `push` did."""

    folder: str | None = Field(description="The assembled folder (None after a dry run: it was removed).")
    files: list[str] = Field(description="Files of the folder, relative, sorted.")
    card: str = Field(description="The model card (README.md) text.")
    crosscoder: str = Field(description="Name of the crosscoder pushed.")
    url: str | None = Field(default=None, description="Commit URL on the hub (None: nothing was uploaded).")


# --------------------------------------------------------------------------- checks


def check_repo_id(repo: str) -> str:
    """OWNER/NAME as the hub spells repo ids (letters, digits, -_. ; no '--' or '..'); one line otherwise."""
    if not _REPO_RE.fullmatch(repo) or "--" in repo or ".." in repo or len(repo) > 96:
        raise PushError(f"push: {repo!r} is not a hub repo id (expected OWNER/NAME, e.g. my-org/my-crosscoder)")
    return repo


def check_done(run: RunLike) -> None:
    """PushError naming the stages whose outputs the folder needs but the run lacks (with these settings)."""
    status = run.status()
    missing = [s for s in NEEDED if status.get(s) != "done"]
    if missing:
        listed = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        what = f"the {listed} stage{'s have' if len(missing) > 1 else ' has'}"
        raise PushError(f"push: {what} not run in {run.rundir.root}; run `latentdiff run {run.rundir.config}`")


def hub_ids(cfg: RunConfig) -> list[str]:
    """The models' paths that are hub ids (OWNER/NAME, not a local directory, not an organism)."""
    return [m.path for m in cfg.models
            if _REPO_RE.fullmatch(m.path) and not Path(m.path).expanduser().exists()]


# --------------------------------------------------------------------------- the model card


def _hub_dataset(cfg: RunConfig) -> str | None:
    """data.id when the run read a hub dataset (data.source 'hf' with an OWNER/NAME id that is no local path)."""
    dataset = getattr(cfg.data, "id", None)
    if cfg.data.source != "hf" or not dataset or not _REPO_RE.fullmatch(dataset) or Path(dataset).exists():
        return None
    return str(dataset)


def _data_line(cfg: RunConfig) -> str:
    """Where the text came from and how much of it."""
    d = cfg.data
    if d.source == "hf":
        rev = getattr(d, "revision", None)
        what = f"the dataset `{getattr(d, 'id', '?')}`" + (f" at revision `{rev}`" if rev else "")
        what += f", split `{getattr(d, 'split', None) or 'train'}`"
    elif d.source == "files":
        what = f"the files {', '.join(f'`{Path(p).name}`' for p in d.paths)}"
    else:
        what = "the organisms' corpus"
    return (f"Data: {what}; {d.n_tokens:,} training tokens, {d.n_heldout_tokens:,} held-out tokens, contexts of "
            f"{d.ctx_len} tokens.")


def _fmt(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def _headline_lines(report: Any) -> list[str]:
    """The headline per-category table of report.json (or why there is none)."""
    head = report.headline or {}
    if not head:
        return ["No headline comparison was configured."]
    out = [f"**{head.get('a')} vs {head.get('b')}** ({head.get('sets', '')} sets): {head.get('description', '')}. "
           f"|A| = {head.get('n_a')}, |B| = {head.get('n_b')}.", ""]
    if head.get("status") == "too_few" or not report.categories:
        return [*out, f"Not tested: {head.get('note') or 'too few latents to compare'}."]
    stats = report.statistics or {}
    rows = [(c.name, c.n_a, c.n_b, f"{100 * c.share_a:.0f}%", f"{100 * c.share_b:.0f}%", f"{c.diff_pp:+.1f}",
             f"[{c.ci95[0]:+.1f}, {c.ci95[1]:+.1f}]", c.p_adjusted,
             "yes" if c.significant else "no") for c in report.categories]
    out += _table(("category", "n A", "n B", "share A", "share B", "diff (pp)", "95% CI (pp)", "p (adj.)",
                   "significant"), rows)
    return [*out, "", f"Test: {stats.get('test', '?')}; correction {stats.get('correction', '?')}, "
                      f"alpha {stats.get('alpha', '?')}."]


def model_card(run: RunLike, repo: str, crosscoder: str, revision: str | None = None) -> str:
    """README.md for the hub: YAML front matter, then models, crosscoder, selection, headline, how to load."""
    cfg, rd = run.cfg, run.rundir
    from latentdiff.core.crosscoder import CrossCoderSpec
    from latentdiff.io import read_model

    report, select = run.result("report"), run.result("select")
    layer = run.result("harvest").layer
    info = read_model(rd.crosscoder_spec(crosscoder), CrossCoderSpec, "crosscoder config")
    meta: dict[str, Any] = {"library_name": LIBRARY, "tags": list(TAGS)}
    if ids := hub_ids(cfg):
        meta["base_model"] = ids if len(ids) > 1 else ids[0]
    if (dataset := _hub_dataset(cfg)) is not None:
        meta["datasets"] = [dataset]
    source = f"hub:{repo}" + (f"@{revision}" if revision else "")
    models = info.model_names or [f"model {i}" for i in range(info.n_models)]
    m = report.crosscoders.get(crosscoder, {})  # the last line of its metrics.jsonl ({}: loaded, not trained)
    fvu = ", ".join(f"{n} {m[f'fvu_{n}']:.3f}" for n in models if f"fvu_{n}" in m) or "–"
    if m:
        training = (f"- FVU per model (fraction of variance unexplained, end of training): {fvu}\n"
                    f"- L0 {_fmt(m.get('l0'), 1)}, dead latents {100 * m.get('dead_frac', 0.0):.1f}%, "
                    f"{int(m.get('step', 0))} training steps")
    else:
        loaded = (rd.read_marker("train") or {}).get("init_from", "elsewhere")
        training = f"- not trained in this run: loaded through `crosscoder.init_from: {loaded}`"
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# latentdiff crosscoder: {cfg.name}", "",
        f"A {info.arch} crosscoder over {len(models)} models ({', '.join(models)}) at layer {layer}, "
        "from a latentdiff run (crosscoder model diffing: how the fine-tunes differ from the base). "
        f"{len(report.latents)} latents were labelled by the judge `{report.judge}`.", "",
        "## Models compared", "",
        *_table(("name", "path", "revision", "role"), [(s.name, f"`{s.path}`", s.revision or "–", s.role)
                                                       for s in cfg.models]), "",
        _data_line(cfg), "",
        "## Crosscoder", "",
        f"- layer: {layer} (output of block {layer}, 0-based)",
        f"- architecture: {info.arch}, d_model {info.d_model}, dictionary size {info.dict_size}, k {info.k}",
        training, "",
        "## Selection", "",
        f"Method `{select.method}`; latents per pair and side:", "",
        *_table(("pair", *sorted({s for v in select.sides.values() for s in v})),
                [(p, *(v.get(s, 0) for s in sorted({s for v in select.sides.values() for s in v})))
                 for p, v in select.sides.items()]), "",
        "## Headline", "",
        *_headline_lines(report), "",
        "## Load it", "",
        "As a run's crosscoder (training is skipped; select, sample, label and report run as usual):", "",
        "```yaml", "crosscoder:", f"  init_from: {source}", "  init_format: latentdiff", "```", "",
        "In Python:", "",
        "```python", "from latentdiff.core.formats import load_foreign", "",
        f'cc = load_foreign("{source}", "latentdiff")', "```", "",
        "## Files", "",
        f"- `{rd.crosscoder_weights(crosscoder).name}`, `{rd.crosscoder_spec(crosscoder).name}`: the crosscoder "
        f"`{crosscoder}`",
        f"- `{rd.latents.name}`: per latent and pair, its side and statistics (delta-norm, nu, frequency)",
        f"- `{rd.findings.name}/`: the agent's findings, one JSON file per labelled latent",
        f"- `{rd.report_dir.name}/`: the report ({', '.join(p.name for p in _report_files(rd))})",
        f"- `{rd.config.name}`: the run's settings", "",
        "## How it was made", "",
        "```bash", f"latentdiff run {rd.config.name}",
        f"latentdiff push RUN_DIR {repo}" + (f" --revision {revision}" if revision else ""), "```", "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the folder


def _report_files(rd: RunDir) -> list[Path]:
    return sorted(p for p in rd.report_dir.iterdir() if not p.name.startswith("."))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def _portable_config(run: RunLike) -> str:
    """The run's settings with run_dir pointing at runs/NAME (the pusher's absolute path means nothing)."""
    data = run.cfg.model_dump(mode="json")
    data["run_dir"] = f"runs/{run.cfg.name}"
    return yaml.safe_dump(data, sort_keys=False)


def assemble(run: RunLike, out: Path, repo: str, crosscoder: str | None = None,
             revision: str | None = None) -> tuple[str, str]:
    """Write the upload folder into `out` (new or empty); returns (crosscoder name, card text)."""
    from latentdiff.core.formats import detect_format

    rd = run.rundir
    names = rd.crosscoder_names()
    name = crosscoder or (names[0] if names else "")
    if name not in names:
        raise PushError(f"push: no crosscoder {name!r} in {rd.root}; crosscoders: {', '.join(names) or 'none'}")
    card = model_card(run, repo, name, revision)
    _copy(rd.crosscoder_weights(name), out / rd.crosscoder_weights(name).name)
    _copy(rd.crosscoder_spec(name), out / rd.crosscoder_spec(name).name)
    _copy(rd.latents, out / rd.latents.name)
    if rd.findings.is_dir():
        _copy(rd.findings, out / rd.findings.name)
    for path in _report_files(rd):
        _copy(path, out / rd.report_dir.name / path.name)
    (out / rd.config.name).write_text(_portable_config(run))
    (out / CARD).write_text(card)
    fmt, _ = detect_format(out)
    assert fmt == "latentdiff", f"{out}: {fmt=} != 'latentdiff'"
    return name, card


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def push(run: RunLike, repo: str, *, revision: str | None = None, private: bool = False,
         folder: Path | None = None, dry_run: bool = False, crosscoder: str | None = None) -> PushResult:
    """Assemble the run's upload folder; upload it unless `folder` is given or `dry_run`."""
    check_repo_id(repo)
    check_done(run)
    if folder is not None and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PushError(f"push: --folder {folder} exists and is not an empty directory; choose a new one")
    if folder is not None:
        folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".push-", dir=folder.parent if folder else None))
    try:
        name, card = assemble(run, tmp, repo, crosscoder, revision)
        files = _files(tmp)
        if folder is not None:
            if folder.exists():
                folder.rmdir()
            os.replace(tmp, folder)
            log.info("push: folder for %s written to %s (%d files)", repo, folder, len(files))
            return PushResult(folder=str(folder), files=files, card=card, crosscoder=name)
        if dry_run:
            return PushResult(folder=None, files=files, card=card, crosscoder=name)
        message = f"latentdiff push: run {run.cfg.name}, crosscoder {name}"
        url = upload(tmp, repo, revision=revision, private=private, message=message)
        return PushResult(folder=None, files=files, card=card, crosscoder=name, url=url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload(folder: Path, repo: str, *, revision: str | None, private: bool, message: str) -> str:
    """The network part: create the repo (and branch) if missing, then one `upload_folder` commit; its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise PushError("push needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=folder, revision=revision, commit_message=message)
    except (OSError, ValueError) as err:  # HfHubHTTPError, offline mode and connection errors are OSErrors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PushError(f"push: uploading to {repo} failed ({type(err).__name__}: {first})") from None
    log.info("push: %d files committed to %s: %s", len(_files(folder)), repo, info.commit_url)
    return str(info.commit_url)
