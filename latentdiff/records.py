"""Typed records that cross stage boundaries between core/, store/ and agent/ (no tensors here).

`Example` (core/examples.py) and `LatentStats` (core/select.py) come from core; these are the
records of labelling and aggregation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExampleKind = Literal["top", "quantile", "negative"]


class LatentRef(BaseModel):
    """Which latent: crosscoder name + latent id (+ the pair/side it was selected for)."""

    model_config = ConfigDict(frozen=True)
    crosscoder: str = Field(description="Crosscoder name (e.g. 'joint').")
    latent: int = Field(description="Latent id within the crosscoder.")

    @property
    def key(self) -> str:
        """Stable string id, e.g. 'joint:812'."""
        return f"{self.crosscoder}:{self.latent}"


class ExampleText(BaseModel):
    """One example as a judge sees it (text only; activations optional)."""

    text: str = Field(description="Window text with activating tokens marked <<like this>>.")
    plain: str = Field(description="The same window without marks.")
    max_act: float = Field(default=0.0, description="Max activation in the window.")
    kind: ExampleKind = Field(default="top", description="How it was sampled.")
    quantile: int | None = Field(default=None, description="Quantile bucket, if any.")
    tokens: list[str] | None = Field(default=None, description="Tokens, when available.")
    activations: list[float] | None = Field(default=None, description="Per-token activations.")
    doc_id: int | None = Field(default=None, description="Source document id.")


class LatentLabel(BaseModel):
    """A judge's validated answer for one latent."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80, description="Short name of the concept.")
    description: str = Field(min_length=1, max_length=1200, description="One paragraph.")
    category: str = Field(description="A category name from the taxonomy.")
    subcategory: str | None = Field(default=None, max_length=80, description="Optional subcategory.")
    confidence: float = Field(ge=0.0, le=1.0, description="Judge's confidence in [0, 1].")
    evidence: list[str] = Field(default_factory=list, max_length=12, description="Evidence tokens/phrases.")
    judge: str = Field(default="", description="Spec of the judge that produced it.")


class LabelAttempt(BaseModel):
    """One round of labelling a latent: what the judge was shown, what it said, how it scored."""

    round: int = Field(description="0 = first label, 1.. = refinement rounds.")
    view: str = Field(description="Which evidence was shown (e.g. 'top A + quantile B + hard negatives').")
    prompt_hash: str = Field(description="sha256 prefix of the rendered label prompt (the evidence shown).")
    label: LatentLabel | None = Field(default=None, description="The judge's label (None if the call failed).")
    verification: float | None = Field(default=None, description="Detection balanced accuracy of this label.")
    calls: int = Field(default=0, description="Judge calls this round spent (label + detection).")
    failure: str | None = Field(default=None, description="Why this round produced no scored label.")


class Finding(BaseModel):
    """A labelled latent: stats + label + verification, or the reason it failed."""

    ref: LatentRef = Field(description="Which latent.")
    pair: str = Field(description="Model compared with the base (fine-tune or control name).")
    side: str = Field(description="'finetuned', 'base', 'shared' or 'other' for that pair.")
    delta_norm: float = Field(description="Delta-norm for the pair.")
    nu_eps: float | None = Field(default=None, description="Latent Scaling nu-epsilon.")
    nu_r: float | None = Field(default=None, description="Latent Scaling nu-r.")
    freq: float = Field(default=0.0, description="Activation frequency on held-out tokens.")
    label: LatentLabel | None = Field(default=None, description="The label (None if failed).")
    verification: float | None = Field(default=None, description="Detection balanced accuracy.")
    attempts: int = Field(default=0, description="Judge calls spent on this latent.")
    failure: str | None = Field(default=None, description="Why labelling failed, if it did.")
    doc_ids: list[int] = Field(default_factory=list, description="Documents its examples came from.")
    scaffold_share: float | None = Field(
        default=None, description="Share of its activation mass (top and quantile examples) on special tokens."
    )
    label_attempts: list[LabelAttempt] = Field(
        default_factory=list,
        description="Every labelling round (first label + refinements); `label` is the best-verified one. "
        "Empty in findings written before refinement existed.",
    )

    @property
    def refined(self) -> bool:
        """True if the latent went through at least one refinement round."""
        return len(self.label_attempts) > 1
