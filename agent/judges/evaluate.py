"""`latentdiff judges eval FILE --judge SPEC ...`: compare judges on a labelled JSONL file.

Each input line: `{"latent": ID, "examples": [{"text": ..., "tokens": [...]?, "activations": [...]?,
"kind": "top"|"quantile"|"negative"?}, ...], "category": GOLD?}`. With per-token activations the
tokens at >= 0.3 x the example's max are marked <<like this>> (delphi); text that already carries
marks is used as is. Per judge: category accuracy where a gold category is given, failures, mean
latency and tokens; for each pair of judges: the fraction of latents both labelled that got the
same category.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.table import Table

from latentdiff.agent.judges.base import Judge, JudgeError, LabelRequest
from latentdiff.agent.judges.registry import make_judge
from latentdiff.agent.judges.taxonomy import Taxonomy, load_taxonomy
from latentdiff.config import JudgeConfig
from latentdiff.errors import LatentDiffError
from latentdiff.records import ExampleKind, ExampleText

MARK_FRACTION = 0.3


class EvalInputError(LatentDiffError):
    """A malformed evaluation file."""


class _InExample(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str
    tokens: list[str] | None = None
    activations: list[float] | None = None
    kind: ExampleKind = "top"


class _InLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    latent: str | int
    examples: list[_InExample] = Field(min_length=1)
    category: str | None = None


class LatentResult(BaseModel):
    """One judge's outcome on one latent."""

    latent: str = Field(description="Latent id from the file.")
    category: str | None = Field(description="Predicted category (None if the judge failed).")
    gold: str | None = Field(description="Gold category, if the file gives one.")
    failure: str | None = Field(default=None, description="JudgeError reason, if it failed.")
    confidence: float | None = Field(default=None, description="The label's confidence (None if it failed).")
    latency_s: float = Field(description="Wall time of the label call.")


class JudgeEval(BaseModel):
    """Summary for one judge."""

    spec: str = Field(description="Judge spec.")
    n: int = Field(description="Latents attempted.")
    labelled: int = Field(description="Latents that got a valid label.")
    failures: int = Field(description="Latents whose label call raised JudgeError.")
    n_gold: int = Field(description="Latents with a gold category.")
    correct: int = Field(description="Labelled latents whose category equals the gold one.")
    accuracy: float | None = Field(description="correct / n_gold (failures count as wrong).")
    mean_latency_s: float = Field(description="Mean wall time per label call.")
    prompt_tokens: int = Field(description="Prompt tokens reported by the judge.")
    completion_tokens: int = Field(description="Completion tokens reported by the judge.")
    results: list[LatentResult] = Field(description="Per-latent outcomes, in file order.")


class Agreement(BaseModel):
    """Category agreement between two judges."""

    a: str = Field(description="First judge spec.")
    b: str = Field(description="Second judge spec.")
    n: int = Field(description="Latents both judges labelled.")
    agreement: float | None = Field(description="Fraction of those with the same category.")


class EvalReport(BaseModel):
    """The whole evaluation (JSON-serialisable with model_dump(mode='json'))."""

    path: str = Field(description="Input file.")
    n_latents: int = Field(description="Latents in the file.")
    judges: list[JudgeEval] = Field(description="One summary per judge, in --judge order.")
    agreement: list[Agreement] = Field(description="One entry per pair of judges.")


def mark_tokens(tokens: list[str], activations: list[float], fraction: float = MARK_FRACTION) -> str:
    """Join tokens, wrapping runs of tokens with activation >= fraction * max in <<...>>."""
    peak = max(activations, default=0.0)
    out, run = [], []
    for tok, act in zip(tokens, activations, strict=True):
        if peak > 0 and act >= fraction * peak:
            run.append(tok)
            continue
        if run:
            out.append(f"<<{''.join(run)}>>")
            run = []
        out.append(tok)
    if run:
        out.append(f"<<{''.join(run)}>>")
    return "".join(out)


def _to_example(ex: _InExample) -> ExampleText:
    text, acts = ex.text, ex.activations
    if acts and "<<" not in text:
        if ex.tokens is not None and len(ex.tokens) == len(acts):
            text = mark_tokens(ex.tokens, acts)
        elif len(text.split()) == len(acts):
            words = text.split()
            text = mark_tokens([w + " " for w in words[:-1]] + words[-1:], acts)
    plain = text.replace("<<", "").replace(">>", "")
    return ExampleText(text=text, plain=plain, max_act=max(acts or [0.0]), kind=ex.kind,
                       tokens=ex.tokens, activations=acts)


def read_eval_file(path: str | Path, taxonomy: Taxonomy) -> list[tuple[LabelRequest, str | None]]:
    """Parse the JSONL file into label requests + gold categories (EvalInputError on bad lines)."""
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"{p}: no such file")
    items = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = _InLine.model_validate(json.loads(raw))
        except json.JSONDecodeError as err:
            raise EvalInputError(f"{p}:{lineno}: invalid JSON: {err.msg}") from None
        except ValidationError as err:
            e = err.errors()[0]
            raise EvalInputError(f"{p}:{lineno}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
        gold = None if line.category is None else taxonomy.resolve(line.category)
        if line.category is not None and gold is None:
            raise EvalInputError(f"{p}:{lineno}: gold category {line.category!r} not in taxonomy {taxonomy.names}")
        examples = [_to_example(e) for e in line.examples]
        by_kind: dict[str, list[ExampleText]] = {"top": [], "quantile": [], "negative": []}
        for ex in examples:
            by_kind[ex.kind].append(ex)
        if not by_kind["top"]:
            raise EvalInputError(f"{p}:{lineno}: needs at least one non-negative example")
        req = LabelRequest(latent=str(line.latent), taxonomy=taxonomy, **by_kind)
        items.append((req, gold))
    if not items:
        raise EvalInputError(f"{p}: no latents")
    return items


async def _run_judge(judge: Judge, items: list[tuple[LabelRequest, str | None]], limit: int) -> JudgeEval:
    sem = asyncio.Semaphore(limit)

    async def one(req: LabelRequest, gold: str | None) -> LatentResult:
        async with sem:
            t0 = time.perf_counter()
            try:
                label = await judge.label(req)
                category, failure, confidence = label.category, None, label.confidence
            except JudgeError as err:
                category, failure, confidence = None, err.reason, None
            return LatentResult(latent=req.latent, category=category, gold=gold, failure=failure,
                                confidence=confidence, latency_s=time.perf_counter() - t0)

    results = list(await asyncio.gather(*(one(r, g) for r, g in items)))
    gold = [r for r in results if r.gold is not None]
    correct = sum(r.category == r.gold for r in gold)
    return JudgeEval(
        spec=judge.spec,
        n=len(results),
        labelled=sum(r.category is not None for r in results),
        failures=sum(r.failure is not None for r in results),
        n_gold=len(gold),
        correct=correct,
        accuracy=correct / len(gold) if gold else None,
        mean_latency_s=sum(r.latency_s for r in results) / len(results),
        prompt_tokens=judge.stats.prompt_tokens,
        completion_tokens=judge.stats.completion_tokens,
        results=results,
    )


def agreement(a: JudgeEval, b: JudgeEval) -> Agreement:
    """Fraction of latents labelled by both judges that got the same category."""
    pairs = [(x.category, y.category) for x, y in zip(a.results, b.results, strict=True)
             if x.category is not None and y.category is not None]
    same = sum(x == y for x, y in pairs)
    return Agreement(a=a.spec, b=b.spec, n=len(pairs), agreement=same / len(pairs) if pairs else None)


async def evaluate(
    path: str | Path,
    specs: list[str],
    cfg: JudgeConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
) -> EvalReport:
    """Label every latent of `path` with each judge in `specs` (one after another) and compare."""
    if not specs:
        raise EvalInputError("give at least one --judge SPEC")
    cfg = cfg if cfg is not None else JudgeConfig()
    taxonomy = taxonomy or load_taxonomy(cfg.taxonomy)
    items = read_eval_file(path, taxonomy)
    evals = []
    for spec in specs:
        judge = make_judge(spec, cfg, cache_dir=cache_dir)
        try:
            evals.append(await _run_judge(judge, items, cfg.max_concurrency))
        finally:
            await judge.aclose()
    pairs = [agreement(a, b) for a, b in itertools.combinations(evals, 2)]
    return EvalReport(path=str(path), n_latents=len(items), judges=evals, agreement=pairs)


def _fmt(x: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if x is None else pattern.format(x)


def render_table(report: EvalReport) -> Table:
    """A rich table: one row per judge; pairwise agreement in the caption."""
    table = Table(title=f"judges on {report.path} ({report.n_latents} latents)")
    for col, justify in [("judge", "left"), ("labelled", "right"), ("failures", "right"),
                         ("accuracy", "right"), ("mean latency", "right"), ("tokens in/out", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for j in report.judges:
        acc = f"{j.accuracy:.2f} ({j.correct}/{j.n_gold})" if j.accuracy is not None else "-"
        table.add_row(j.spec, f"{j.labelled}/{j.n}", str(j.failures), acc,
                      _fmt(j.mean_latency_s, "{:.2f}s"), f"{j.prompt_tokens}/{j.completion_tokens}")
    if report.agreement:
        table.caption = "agreement: " + "; ".join(
            f"{g.a} vs {g.b}: {_fmt(g.agreement)} (n={g.n})" for g in report.agreement
        )
    return table


def report_json(report: EvalReport) -> dict[str, Any]:
    """The report as plain JSON data."""
    return report.model_dump(mode="json")
