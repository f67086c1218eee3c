"""The `latentdiff` command line (typer). Every user error prints one line and exits 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from latentdiff.errors import LatentDiffError

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(
    help="latentdiff: explain why one LLM behaves differently from another (crosscoder model diffing).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
organism_app = typer.Typer(help="Build and inspect the offline model organisms.", no_args_is_help=True)
config_app = typer.Typer(help="Show and validate run configurations.", no_args_is_help=True)
app.add_typer(organism_app, name="organism")
app.add_typer(config_app, name="config")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn LatentDiffError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LatentDiffError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --------------------------------------------------------------------------- organisms


@organism_app.command("build")
@user_errors
def organism_build(
    out: Annotated[Path, typer.Option(help="Where to write the organisms.")] = Path("organisms"),
    work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches (resume from here).")] = Path(
        ".organism-build"
    ),
    seed: Annotated[int | None, typer.Option(help="Master seed (default: the config's, 0).")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="A build config (YAML or JSON: OrganismBuildConfig's fields, e.g. arch, headline, phases); "
                     "default: the shipped organisms' build."),
    ] = None,
    scale: Annotated[
        float, typer.Option(help="Multiply every phase's steps (e.g. 0.05 for a smoke build).")
    ] = 1.0,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Add just this fine-tune (repeatable, e.g. null2) to the organisms already built in --out, "
            "starting from the bf16 weights there; nothing else is retrained.",
        ),
    ] = None,
) -> None:
    """Rebuild the organisms deterministically (corpus, tokenizer, base, it, shift, null, null2, eval)."""
    from latentdiff.core.organisms.build import OrganismBuildConfig, build, build_only

    cfg = _organism_build_config(config)
    if seed is not None:
        cfg = OrganismBuildConfig(**{**cfg.model_dump(), "seed": seed})
    if only:
        if scale != 1.0:
            raise LatentDiffError("--only adds to a finished build at its own scale; drop --scale")
        result = build_only(only, out, work_dir, cfg)
        console.print(f"{', '.join(only)} added to [bold]{result}[/]")
        _print_added_losses(result, only)
        return
    if scale != 1.0:
        if scale <= 0:
            raise LatentDiffError(f"--scale must be > 0, got {scale}")
        for spec in cfg.phases.values():
            spec.steps = max(1, round(spec.steps * scale))
            spec.warmup = min(spec.warmup, spec.steps)
        cfg.train_docs = max(200, round(cfg.train_docs * min(1.0, scale * 4)))
    result = build(out, work_dir, cfg)
    console.print(f"organisms written to [bold]{result}[/]")
    _print_plant_table(result)


def _organism_build_config(path: Path | None) -> Any:
    """The build config in a YAML/JSON file (a clear error for a missing or malformed one)."""
    import yaml
    from pydantic import ValidationError

    from latentdiff.config import _format_validation_error
    from latentdiff.core.organisms.build import OrganismBuildConfig

    if path is None:
        return OrganismBuildConfig()
    if not path.is_file():
        raise LatentDiffError(f"organism build config {path} does not exist")
    try:
        return OrganismBuildConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise LatentDiffError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:  # the run config's formatter: every field, one line
        raise LatentDiffError(f"{path}: {_format_validation_error(exc)}") from None


@organism_app.command("list")
@user_errors
def organism_list(
    root: Annotated[Path | None, typer.Option(help="Organisms dir (default: shipped).")] = None,
) -> None:
    """List the organisms with their size and what was planted in them."""
    from latentdiff.core.organisms import SHIPPED_DIR, load_planted, organism_names

    base = root or SHIPPED_DIR
    planted = load_planted(base)["planted"]
    table = Table(title=f"organisms in {base}")
    for col in ("name", "path", "params", "planted categories"):
        table.add_column(col, overflow="fold")
    for name in organism_names(base):
        path = base / name
        if not (path / "config.json").is_file():
            table.add_row(name, str(path), "-", "(not built)")
            continue
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        params = f"{size / 2 / 1e6:.1f}M (bf16)"
        what = ", ".join(planted.get(name, [])) or ("(control)" if name in planted else "(reference)")
        table.add_row(name, str(path), params, what)
    console.print(table)


@organism_app.command("info")
@user_errors
def organism_info(
    name: Annotated[str, typer.Argument(help="base, it, shift, null or null2 (or a phase of the build in --root).")],
    root: Annotated[Path | None, typer.Option(help="Organisms dir (default: shipped).")] = None,
    recompute: Annotated[
        bool, typer.Option(help="Recompute held-out losses instead of reading eval.json.")
    ] = False,
) -> None:
    """Per category held-out loss: base vs NAME vs null, and the plant-vs-null-drift ratio."""
    import json

    from latentdiff.core.organisms import SHIPPED_DIR, load_eval, load_planted, organism_dir, organism_names
    from latentdiff.errors import ModelLoadError

    base_dir = root or SHIPPED_DIR
    path = organism_dir(name, base_dir)
    meta = json.loads((path / "config.json").read_text())
    truth = load_planted(base_dir)["planted"]
    base = next(n for n in organism_names(base_dir) if n not in truth)  # the one phase that is no fine-tune
    ctrl = next((n for n, cats in truth.items() if not cats), base)  # the first control
    console.print(
        f"[bold]{name}[/] at {path}: {meta.get('model_type', '?')} d_model={meta['hidden_size']} layers="
        f"{meta['num_hidden_layers']} heads={meta['num_attention_heads']} vocab={meta['vocab_size']}"
    )
    if recompute:
        from latentdiff.core.organisms.build import OrganismBuildConfig, heldout_docs, heldout_loss

        docs = heldout_docs(OrganismBuildConfig(**json.loads((base_dir / "build_config.json").read_text())))
        losses = {m: heldout_loss(organism_dir(m, base_dir), docs) for m in {base, name, ctrl}}
    else:
        losses = load_eval(base_dir)["loss"]
        if name not in losses:
            raise ModelLoadError(f"eval.json in {base_dir} has no held-out losses for {name}; use --recompute")
    planted = set(truth.get(name, []))
    table = Table(title=f"held-out loss (nats/token); moved = {base} - model; drift = |{base} - {ctrl}|")
    for col in ("category", base, name, ctrl, "moved", "drift", "ratio", "planted"):
        left = col in ("category", "planted")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "category")
    for cat in losses[base]:
        b, m, n = losses[base][cat], losses[name][cat], losses[ctrl][cat]
        moved, drift = b - m, abs(b - n)
        ratio = f"{moved / drift:.1f}x" if drift > 0 else "inf"
        table.add_row(
            cat,
            f"{b:.3f}",
            f"{m:.3f}",
            f"{n:.3f}",
            f"{moved:+.3f}",
            f"{drift:.3f}",
            ratio,
            "yes" if cat in planted else "",
        )
    console.print(table)


def _print_added_losses(root: Path, names: list[str]) -> None:
    from latentdiff.core.organisms import load_eval

    losses = load_eval(root)["loss"]
    table = Table(title="held-out loss (nats/token); drift = |base - model|")
    for col in ("category", "base", "null", *names, *(f"{n} drift" for n in names)):
        table.add_column(col, justify="left" if col == "category" else "right")
    for cat in losses["base"]:
        b = losses["base"][cat]
        table.add_row(cat, f"{b:.3f}", f"{losses['null'][cat]:.3f}", *(f"{losses[n][cat]:.3f}" for n in names),
                      *(f"{abs(b - losses[n][cat]):.3f}" for n in names))
    console.print(table)


def _print_plant_table(root: Path) -> None:
    from latentdiff.core.organisms import load_eval

    table = Table(title="plants: held-out loss moved vs null drift")
    for col in ("model", "category", "base", "model", "null", "moved", "drift", "ratio"):
        table.add_column(col, overflow="fold")
    for row in load_eval(root)["plants"]:
        table.add_row(
            row["model"],
            row["category"],
            f"{row['base']:.3f}",
            f"{row['model_loss']:.3f}",
            f"{row['null']:.3f}",
            f"{row['moved']:+.3f}",
            f"{row['null_drift']:.3f}",
            f"{row['ratio']:.1f}x",
        )
    console.print(table)


# --------------------------------------------------------------------------- config


@config_app.command("show")
@user_errors
def config_show(
    path: Annotated[Path | None, typer.Argument(help="Run config YAML (default: built-in defaults).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
) -> None:
    """Print the fully resolved config (defaults + YAML + overrides) as YAML."""
    import yaml

    from latentdiff.config import load_config

    path, overrides = _split_path_overrides(path, overrides)
    cfg = load_config(path, overrides)
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), highlight=False)


@config_app.command("validate")
@user_errors
def config_validate(
    path: Annotated[Path, typer.Argument(help="Run config YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
) -> None:
    """Check a config; print 'ok' or one line naming the field and the problem (exit 2)."""
    from latentdiff.config import load_config

    cfg = load_config(path, overrides or [])
    console.print(f"ok: {path} ({len(cfg.models)} models, crosscoder {cfg.crosscoder.arch})")


def _split_path_overrides(path: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """`config show a=b` has no path: treat a first argument containing '=' as an override."""
    overrides = list(overrides or [])
    if path is not None and "=" in str(path) and not path.exists():
        return None, [str(path), *overrides]
    return path, overrides


# --------------------------------------------------------------------------- pipeline


@app.command("run")
@user_errors
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Recompute from this stage on (earlier ones are reused).")
    ] = None,
) -> None:
    """Run the whole pipeline: every stage in order (see `latentdiff --help`, Stages)."""
    from latentdiff.config import load_config
    from latentdiff.run import Run

    cfg = load_config(config, overrides or [])
    run = Run(cfg)
    if not run.run_all(from_stage):
        return  # a torchrun rank other than 0: rank 0 finishes the pipeline and reports
    console.print(f"report: [bold]{run.rundir.report_html}[/] (also report.md, report.json)")
    console.print(f"ask about it: [bold]latentdiff chat {run.dir}[/]  ·  web: [bold]latentdiff serve {run.dir}[/]")


def _stage_command(stage: str) -> None:
    def command(
        config: Annotated[Path, typer.Argument(help="Run config YAML.")],
        overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    ) -> None:
        from latentdiff.config import load_config
        from latentdiff.run import Run

        Run(load_config(config, overrides or [])).stage(stage)

    command.__doc__ = f"Run only the '{stage}' stage of a run (skipped if up to date)."
    app.command(stage, rich_help_panel="Stages")(user_errors(command))


def _label_command(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    worker: Annotated[str | None, typer.Option(
        help="I/N: label only worker I's share of N (workers share a Chroma server via store.url); "
             "then run `label` without --worker once to merge, aggregate and finish.")] = None,
) -> None:
    """Run only the 'label' stage of a run (skipped if up to date)."""
    from latentdiff.config import load_config
    from latentdiff.run import Run

    run = Run(load_config(config, overrides or []))
    if worker is None:
        run.stage("label")
        return
    try:
        index, count = (int(x) for x in worker.split("/"))
    except ValueError:
        raise LatentDiffError(f"--worker must look like I/N (e.g. 0/2), got {worker!r}") from None
    if not 0 <= index < count:
        raise LatentDiffError(f"--worker {worker}: need 0 <= I < N")
    from latentdiff import stages

    stages.label_worker(run.cfg, run.rundir, index, count)


_SPECIAL_COMMANDS: dict[str, Callable[..., None]] = {"label": _label_command}  # stages with their own options


def _register_stage_commands() -> None:
    """One subcommand per entry of `stages.STAGES`, in pipeline order."""
    from latentdiff.stages import STAGE_NAMES

    for stage in STAGE_NAMES:
        if stage in _SPECIAL_COMMANDS:
            app.command(stage, rich_help_panel="Stages")(user_errors(_SPECIAL_COMMANDS[stage]))
        else:
            _stage_command(stage)


_register_stage_commands()


judges_app = typer.Typer(help="Compare and test judges.", no_args_is_help=True)
app.add_typer(judges_app, name="judges")


@judges_app.command("eval")
@user_errors
def judges_eval(
    file: Annotated[
        Path, typer.Argument(help='JSONL: {"latent", "examples": [{"text", "activations"?}], "category"?}')
    ],
    judge: Annotated[list[str], typer.Option("--judge", help="Judge spec (repeatable).")],
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    concurrency: Annotated[int, typer.Option(help="Concurrent judge requests.")] = 4,
) -> None:
    """Run one or more judges on labelled latents: accuracy, agreement, latency, failures."""
    import asyncio

    from latentdiff.agent.judges.evaluate import evaluate, render_table
    from latentdiff.config import JudgeConfig
    from latentdiff.io import atomic_write_json

    if not file.is_file():
        raise LatentDiffError(f"{file}: no such file")
    report = asyncio.run(evaluate(file, judge, JudgeConfig(max_concurrency=concurrency)))
    console.print(render_table(report))
    if out is not None:
        atomic_write_json(out, report.model_dump(mode="json"))
        console.print(f"report written to {out}")


export_app = typer.Typer(help="Write a run's artifacts in other tools' layouts.", no_args_is_help=True)
app.add_typer(export_app, name="export")


def _crosscoder_name(rd: Any, name: str | None) -> str:
    names = rd.crosscoder_names()
    if not names:
        raise LatentDiffError(f"{rd.root}: no trained crosscoder (run the train stage first)")
    if name is None:
        return names[0]
    if name not in names:
        raise LatentDiffError(f"{rd.root}: no crosscoder {name!r}; crosscoders: {', '.join(names)}")
    return name


@export_app.command("crosscoder")
@user_errors
def export_crosscoder_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[Path, typer.Argument(help="Output directory.")],
    fmt: Annotated[str, typer.Option("--format", help="dictionary_learning, ckkissane or latentdiff.")] = (
        "dictionary_learning"),
    crosscoder: Annotated[str | None, typer.Option(help="Crosscoder name (default: the primary).")] = None,
) -> None:
    """Write a run's crosscoder in dictionary_learning's (or ckkissane's) layout (docs/interop.md)."""
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.formats import export_crosscoder
    from latentdiff.rundir import RunDir

    if fmt not in ("dictionary_learning", "ckkissane", "latentdiff"):
        raise LatentDiffError(f"--format {fmt!r}: choose dictionary_learning, ckkissane or latentdiff")
    rd = RunDir(run_dir)
    name = _crosscoder_name(rd, crosscoder)
    path = export_crosscoder(CrossCoder.from_pretrained(rd.crosscoder(name)), fmt, out)  # type: ignore[arg-type]
    console.print(f"crosscoder {name} written to {path} ({fmt})")


@export_app.command("neuronpedia")
@user_errors
def export_neuronpedia_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (labelled).")],
    out: Annotated[Path, typer.Argument(help="Output directory (Neuronpedia's import layout).")],
    model_id: Annotated[str, typer.Option(help="Neuronpedia model id, e.g. gemma-2-2b-it.")],
    creator_id: Annotated[str, typer.Option(envvar="DEFAULT_CREATOR_ID", help="Neuronpedia user id.")],
    crosscoder: Annotated[str | None, typer.Option(help="Crosscoder name (default: the primary).")] = None,
    release: Annotated[str | None, typer.Option(help="Release name (writes release.jsonl).")] = None,
) -> None:
    """Write a run's latents, examples and labels as Neuronpedia batch files (docs/interop.md)."""
    from latentdiff.agent.export_neuronpedia import NeuronpediaSource, export_neuronpedia
    from latentdiff.agent.state import read_findings
    from latentdiff.config import load_config
    from latentdiff.core.examples import read_examples
    from latentdiff.core.select import read_table
    from latentdiff.io import read_json
    from latentdiff.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.config.is_file():
        raise LatentDiffError(f"{run_dir} is not a latentdiff run directory (no config.yaml)")
    cfg = load_config(rd.config, [f"run_dir={rd.root}"])
    name = _crosscoder_name(rd, crosscoder)
    harvest = read_json(rd.marker("harvest"), "harvest marker")
    src = NeuronpediaSource(model_id=model_id, layer=int(harvest["layer"]), source_set=f"latentdiff-{name}",
                            creator_id=creator_id, release=release, dataset=", ".join(cfg.data.paths or []) or None)
    path = export_neuronpedia(out, src, name, read_findings(rd), read_examples(rd.examples(name)),
                              read_table(rd.latents))
    console.print(f"crosscoder {name}: Neuronpedia import files written to {path}")


@app.command("push")
@user_errors
def push_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Finished run directory (with report/).")],
    repo: Annotated[str, typer.Argument(help="Hub repo id, OWNER/NAME (created if missing).")],
    revision: Annotated[str | None, typer.Option("--revision", "--branch", help="Branch to commit to "
                                                 "(created if missing; default main).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    folder: Annotated[Path | None, typer.Option(help="Write the upload folder here and upload nothing.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the folder and print the card; no upload.")] = False,
    crosscoder: Annotated[str | None, typer.Option(help="Crosscoder name (default: the primary).")] = None,
) -> None:
    """Push a run to the HF hub: crosscoder, latents.parquet, findings, report and a model card (docs/interop.md)."""
    from latentdiff.agent.push import push
    from latentdiff.run import Run

    res = push(Run.open(run_dir), repo, revision=revision, private=private, folder=folder, dry_run=dry_run,
               crosscoder=crosscoder)
    if dry_run and folder is None:
        console.print(res.card, highlight=False, markup=False)
    console.print(f"crosscoder {res.crosscoder}, {len(res.files)} files: {', '.join(res.files[:12])}"
                  + (" ..." if len(res.files) > 12 else ""), highlight=False, markup=False)
    if res.url:
        console.print(f"pushed to [bold]{repo}[/]: {res.url}", highlight=False)
    else:
        console.print(f"not uploaded ({'folder ' + str(res.folder) if res.folder else 'dry run'}); "
                      f"`latentdiff push {run_dir} {repo}` uploads it", highlight=False, markup=False)


@app.command("truth")
@user_errors
def truth_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an organism run (e.g. runs/demo).")],
    planted: Annotated[Path | None, typer.Option(help="planted.json of organisms built elsewhere (default: the "
                                                       "truth the report carries).")] = None,
    flip_signs: Annotated[bool, typer.Option("--flip-signs", help="Negative control: check against the planted "
                                                                  "signs reversed (must fail).")] = False,
    known_failures: Annotated[Path | None, typer.Option(
        help="JSON {check id: reason} of documented failures: each must still fail (strict), everything else "
             "must pass.")] = None,
    oracle: Annotated[bool, typer.Option(
        "--oracle", help="Check the comparisons made with oracle labels (each latent's majority stream) instead "
                         "of the judge's: what fails with both is the crosscoder's, selection's or organisms'; "
                         "what fails only with the judge's is the judge's.")] = False,
) -> None:
    """Check a finished organism run against the planted truth (exit 1 if any sign is missed).

    Every verdict is recomputed from the report's counts (exact permutation tests, the correction)."""
    from latentdiff.rundir import RunDir
    from latentdiff.truth import check_report

    path = RunDir(run_dir).report_json
    if not path.is_file():
        raise LatentDiffError(f"{path}: no report; run the pipeline (or `latentdiff demo --out {run_dir}`) first")
    for given in (planted, known_failures):
        if given is not None and not given.is_file():
            raise LatentDiffError(f"{given}: no such file")
    try:
        result = check_report(path, planted, flip=flip_signs, known_failures=known_failures, oracle=oracle)
    except (ValueError, KeyError, TypeError) as err:
        raise LatentDiffError(f"{path}: not a report this version can check ({type(err).__name__}: {err})") from None
    for line in result.lines:
        console.print(line, highlight=False, markup=False)
    what = (" (oracle labels)" if oracle else "") + (" (planted signs flipped)" if flip_signs else "")
    n_bad = len(result.failed)
    if result.ok and n_bad:
        verdict = (f"[bold yellow]NOT fully recovered[/]: {n_bad} of {result.checked} planted checks fail, each listed "
                   f"in {known_failures} (known failures, all still failing); everything else holds")
    elif result.ok:
        verdict = f"[bold green]recovered[/] ({result.checked} planted signs and streams checked)"
    else:
        verdict = f"[bold red]NOT recovered[/] ({n_bad} of {result.checked} planted checks fail)"
    console.print(f"ground truth{what}: {verdict}")
    if not result.ok:
        raise typer.Exit(1)


def _chat_session(run_dir: Path, llm: str | None, offline: bool) -> Any:
    """Open a read-only chat over a run; the LLM is --llm, else the run's HTTP judge, else none."""
    from latentdiff.agent.chat import ChatSession
    from latentdiff.agent.chat.tools import RunView

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger().setLevel(logging.WARNING)  # the chat's own output is the answers
    view = RunView(run_dir)
    spec = None if offline else (llm or view.cfg.judge.spec)
    if spec is not None and spec.split(":", 1)[0] not in ("vllm", "openai"):
        if llm:
            raise LatentDiffError(f"--llm must look like vllm:URL@MODEL or openai:URL@MODEL, got {llm!r}")
        spec = None  # the run's judge is offline (embedding) or local: answer by retrieval
    if spec is None:
        return ChatSession(view)
    from latentdiff.agent.chat.llm import LLMAnswerer

    return ChatSession(view, LLMAnswerer(view, spec))


LLM_HELP = "Chat LLM, vllm:URL@MODEL or openai:URL@MODEL (default: the run's judge if it is one)."


@app.command("chat")
@user_errors
def chat_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Finished run directory (with report/).")],
    question: Annotated[list[str] | None, typer.Option("--question", "-q", help="Ask and exit (repeatable).")] = None,
    llm: Annotated[str | None, typer.Option(help=LLM_HELP)] = None,
    offline: Annotated[bool, typer.Option(help="Retrieval answers only, no LLM.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print answers as JSON records.")] = False,
) -> None:
    """Ask questions about a run's findings in the terminal (read-only; answers cite latent ids)."""
    from rich.markdown import Markdown

    session = _chat_session(run_dir, llm, offline)

    def show(q: str) -> None:
        try:
            ans = session.ask(q)
        except LatentDiffError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False)
            return
        if as_json:
            console.print_json(ans.model_dump_json())
            return
        if ans.note:
            err_console.print(f"[yellow]{ans.note}[/]", highlight=False)
        console.print(Markdown(ans.text))
        console.print(f"[dim]cites: {', '.join(ans.citations) or 'none'} · mode: {ans.mode}[/]", highlight=False)

    try:
        if question:
            for q in question:
                show(q)
            return
        console.print(f"[bold]latentdiff chat[/] · run [bold]{session.view.cfg.name}[/] ({session.view.dir}) · "
                      f"mode {session.mode}. Ask about the findings; 'exit' quits.", highlight=False)
        while True:
            try:
                q = console.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if q.lower() in ("exit", "quit", ":q", "bye"):
                break
            if q:
                show(q)
    finally:
        session.close()


@app.command("serve")
@user_errors
def serve_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Finished run directory (with report/).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    llm: Annotated[str | None, typer.Option(help=LLM_HELP)] = None,
    offline: Annotated[bool, typer.Option(help="Retrieval answers only, no LLM.")] = False,
) -> None:
    """Serve the report and a web chat over a run (read-only) at http://HOST:PORT/."""
    from latentdiff.agent.chat.web import check_port, serve

    check_port(port)
    session = _chat_session(run_dir, llm, offline)
    console.print(f"serving run [bold]{session.view.cfg.name}[/]: chat http://{host}:{port}/ · "
                  f"report http://{host}:{port}/report", highlight=False)
    try:
        serve(session, host, port)
    finally:
        session.close()


@app.command("demo")
@user_errors
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
) -> None:
    """The offline demo: diff the shipped organisms with the offline judge and write the report."""
    from latentdiff.run import Run, demo_config

    run = Run(demo_config(out))
    run.run_all()
    console.print(f"report: [bold]{run.rundir.report_html}[/] (also report.md, report.json)")
    console.print(f"ask about it: [bold]latentdiff chat {run.dir}[/]  ·  web: [bold]latentdiff serve {run.dir}[/]")


def main() -> None:
    """The `latentdiff` command: the Typer app; a torchrun rank ends through `distributed.exit_now`.

    After its work a torchrun rank skips interpreter teardown, which can abort it (SIGABRT in gloo's
    threads) and make torchrun report a finished job as failed (see `distributed.exit_now`).
    """
    try:
        app()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    dist = sys.modules.get("latentdiff.core.distributed")  # imported only by stages that use torch
    if dist is not None and dist.joined():
        if isinstance(code, str):
            print(code, file=sys.stderr)  # noqa: T201 (SystemExit's message, as Python would print it)
        dist.exit_now(code if isinstance(code, int) else int(code is not None))
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
