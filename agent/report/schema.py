"""The report's records (report.json, versioned): the schema alone, so every module that reads or builds a
report imports it without import loops (build.py assembles it, render.py draws it, summary.py checks
its executive summary, the chat reads it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from latentdiff.agent.aggregate import Comparison, ConfidenceView, RefinementRow
from latentdiff.agent.oracle import JudgeAccuracy
from latentdiff.agent.replicates import ReplicateRow
from latentdiff.records import Ablation, Histogram, Lens


class SummarySentence(BaseModel):
    """One claim of the summary and the latents it rests on."""

    text: str = Field(description="The sentence.")
    citations: list[str] = Field(default_factory=list, description="Latent ids it cites (crosscoder:N).")
    comparison: str | None = Field(
        default=None, description="The comparison it is about (templated summaries): one paragraph per comparison."
    )


class DraftAttempt(BaseModel):
    """One LLM draft and what the checker said about it."""

    attempt: int = Field(description="1-based attempt number.")
    errors: list[str] = Field(description="Checker errors (empty: the draft passed).")
    raw: str = Field(default="", description="The model's answer (cut at 2000 characters).")


class SummaryCheck(BaseModel):
    """What the checker decided and what was published."""

    ok: bool = Field(description="The published sentences pass the checker.")
    outcome: Literal["template", "accepted", "stripped", "fallback"] = Field(
        description="'template': no LLM configured; 'accepted': an LLM draft passed; 'stripped': the "
        "failing sentences of the best LLM draft were dropped; 'fallback': the LLM failed, the "
        "templated summary was published."
    )
    attempts: int = Field(default=0, description="LLM drafts requested.")
    errors: list[str] = Field(default_factory=list, description="Errors of the last rejected draft.")
    history: list[DraftAttempt] = Field(default_factory=list, description="Every draft and its errors.")
    note: str | None = Field(default=None, description="E.g. why the LLM could not be used.")


class ExecutiveSummary(BaseModel):
    """The report's executive summary (report.json `summary`)."""

    text: str = Field(description="The sentences as one paragraph, citations in [brackets].")
    sentences: list[SummarySentence] = Field(description="The published sentences.")
    citations: list[str] = Field(description="Every latent id cited, in order.")
    source: Literal["llm", "template"] = Field(description="Who wrote the published sentences.")
    llm: str | None = Field(default=None, description="The LLM spec that drafted it, if any.")
    checker: SummaryCheck = Field(description="Checker verdict, attempts and errors.")


REPORT_VERSION = 3  # 2: executive summary (`summary`); 3: exact tests + correction, reference sets, replicates


class CategoryRow(BaseModel):
    """One row of the headline table."""

    name: str = Field(description="Category.")
    n_a: int = Field(description="Latents of set A (the first model of the headline) in this category.")
    n_b: int = Field(description="Latents of set B in this category.")
    share_a: float = Field(description="n_a / |A|.")
    share_b: float = Field(description="n_b / |B|.")
    diff_pp: float = Field(description="100 * (share_a - share_b), percentage points (the primary effect).")
    ci95: tuple[float, float] = Field(description="95% interval of diff_pp (Newcombe).")
    shift_pct: float | None = Field(description="The paper's percent form (None: unbounded, B has none).")
    ci95_shift_pct: tuple[float | None, float | None] = Field(description="95% interval of shift_pct.")
    p_adjusted: float | None = Field(description="Exact permutation p-value, corrected across categories.")
    significant: bool = Field(description="Tested and p_adjusted < alpha.")
    planted: str | None = Field(default=None, description="Planted sign (+, -, 0) for organisms.")
    recovered: bool | None = Field(default=None, description="Planted sign recovered: significant, same direction.")


class OracleView(BaseModel):
    """Organisms only: the comparisons with each latent labelled by its majority stream, and the judge's accuracy."""

    comparisons: list[Comparison] = Field(description="Headline and vs-reference comparisons with oracle labels.")
    accuracy: list[JudgeAccuracy] = Field(description="Per oracle category: judge's labels that match.")
    headline_accuracy: float | None = Field(description="Share of the headline's latents whose label matches.")
    overall_accuracy: float | None = Field(description="Share of all labelled latents whose label matches.")


class ShadedExample(BaseModel):
    """One example window with its per-token activations (the latent page shades tokens by them)."""

    kind: str = Field(description="top, quantile or negative.")
    quantile: int | None = Field(default=None, description="Quantile bucket (0 = lowest).")
    tokens: list[str] = Field(description="Decoded tokens.")
    activations: list[float] = Field(description="Activation per token.")
    max_act: float = Field(description="Max activation in the window.")


class LatentPage(BaseModel):
    """What a latent's page shows beyond its card (once per latent, however many pairs it has rows for)."""

    id: str = Field(description="crosscoder:latent.")
    shaded: list[ShadedExample] = Field(
        default_factory=list, description="Top, quantile and non-activating examples with per-token activations."
    )
    lens: dict[str, Lens] = Field(default_factory=dict, description="Model -> logit lens of its decoder vector.")
    ablation: dict[str, Ablation] = Field(default_factory=dict, description="Model -> effect of ablating it.")
    histogram: Histogram | None = Field(default=None, description="Activation histogram on held-out tokens.")


class LatentCard(BaseModel):
    """One latent of the report."""

    id: str = Field(description="crosscoder:latent.")
    side: str = Field(description="Side for its pair.")
    pair: str = Field(description="Model compared with base.")
    name: str | None = Field(description="Judge's name (None if labelling failed).")
    category: str | None = Field(description="Judge's category.")
    description: str | None = Field(default=None, description="Judge's description.")
    delta_norm: float = Field(description="Delta-norm for the pair.")
    nu_eps: float | None = Field(default=None, description="Latent Scaling nu-epsilon.")
    nu_r: float | None = Field(default=None, description="Latent Scaling nu-r.")
    freq: float = Field(default=0.0, description="Activation frequency.")
    verification: float | None = Field(default=None, description="Detection balanced accuracy.")
    failure: str | None = Field(default=None, description="Why labelling failed.")
    scaffold: bool = Field(default=False, description="Activation mostly on special / template tokens.")
    scaffold_share: float | None = Field(default=None, description="Share of activation mass on special tokens.")
    raw_name: str | None = Field(default=None, description="The judge's name when it was replaced (name_flagged).")
    name_flagged: bool = Field(default=False, description="The judge's name held no word (only punctuation or "
                               "special tokens) and was replaced by a descriptive fallback.")
    confidence: float | None = Field(default=None, description="Calibrated label confidence (agent/confidence.py).")
    low_confidence: bool = Field(default=False, description="Confidence below report.low_confidence.")
    examples: list[str] = Field(default_factory=list, description="Top examples, activating tokens <<marked>>.")


class Report(BaseModel):
    """Everything report.json holds (versioned)."""

    version: int = Field(default=REPORT_VERSION, description="Schema version.")
    run: str = Field(description="Run name.")
    models: list[dict[str, str]] = Field(description="name, path, role of every model.")
    data: dict[str, Any] = Field(description="Data settings and token counts.")
    crosscoders: dict[str, dict[str, Any]] = Field(description="Per crosscoder: final metrics.")
    selection: dict[str, Any] = Field(description="Method, thresholds, counts per pair and side.")
    stop_reason: str | None = Field(default=None, description="Why labelling stopped (budget, ci_width, ...).")
    refinement: list[RefinementRow] = Field(
        default_factory=list, description="Per category: labels that needed refinement, verification before/after."
    )
    headline: dict[str, Any] | None = Field(description="A, B, the set definition and what the sets are.")
    categories: list[CategoryRow] = Field(description="The headline table (or the first comparison).")
    statistics: dict[str, Any] = Field(
        default_factory=dict, description="test, correction, alpha, min_set_size, n_replicates: how rows are tested."
    )
    comparisons: list[Comparison] = Field(
        description="Every comparison: headline (both set definitions), each set vs the reference, control contrasts."
    )
    planted_signs: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Organisms: comparison id -> category -> planted sign (+, -, 0)."
    )
    replicates: list[ReplicateRow] = Field(
        default_factory=list, description="Per comparison and category: agreement across crosscoder seeds."
    )
    scaffold: list[str] = Field(default_factory=list, description="Latents flagged as scaffolding.")
    verification: dict[str, float] = Field(description="Mean detection accuracy per category.")
    judge: str = Field(description="Judge that produced the labels.")
    failures: list[dict[str, str]] = Field(description="Latents whose labelling failed.")
    skipped: list[str] = Field(default_factory=list, description="Candidates left unlabelled by budget.")
    latents: list[LatentCard] = Field(description="Every labelled latent.")
    pages: list[LatentPage] = Field(
        default_factory=list, description="Per latent (once): shaded examples, logit lens, ablation, histogram."
    )
    planted: dict[str, Any] | None = Field(default=None, description="Organism ground truth, when known.")
    oracle: OracleView | None = Field(
        default=None, description="Organisms: comparisons with majority-stream labels and the judge's accuracy."
    )
    confidence: ConfidenceView | None = Field(
        default=None, description="The comparisons redone the other way round with respect to low-confidence labels."
    )
    summary: ExecutiveSummary | None = Field(
        default=None, description="Executive summary: LLM-drafted and checked, or templated (version >= 2)."
    )
