"""Typed records that cross stage boundaries between core/, store/ and agent/ (no tensors here).

`Example` (core/examples.py) and `LatentStats` (core/select.py) come from core; these are the
records of labelling and aggregation.
"""

from __future__ import annotations

from typing import Any, Literal

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

    @property
    def text(self) -> str:
        """The label as one text: what the findings store embeds and searches, and what the embedding judge
        compares examples with (one vector per label, shared through the run's `VectorCache`)."""
        return f"{self.name}. {self.description}"


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


# --------------------------------------------------------------------------- inspect stage (core/inspect.py)


class LensToken(BaseModel):
    """One token of a logit-lens list."""

    token: str = Field(description="Decoded token.")
    logit: float = Field(description="Logit contribution of the unit-scaled direction.")


class Lens(BaseModel):
    """Tokens one model's decoder direction promotes and suppresses."""

    promoted: list[LensToken] = Field(description="Largest logits, descending.")
    suppressed: list[LensToken] = Field(description="Smallest logits, ascending.")


class Ablation(BaseModel):
    """Effect on one model's next-token predictions of removing the latent where it fires."""

    delta_loss: float = Field(description="Mean (ablated - clean) next-token loss, nats, over firing positions.")
    kl: float = Field(description="Mean KL(clean || ablated), nats, over firing positions.")
    n_positions: int = Field(description="Firing positions measured (0: the latent never fired on its contexts).")
    n_contexts: int = Field(description="Contexts run.")


class Histogram(BaseModel):
    """A latent's activation distribution over held-out tokens."""

    edges: list[float] = Field(description="Bin edges (bins + 1), from 0 to the largest activation seen.")
    counts: list[int] = Field(description="Active tokens per bin.")
    density: float = Field(description="Firing density: active tokens / held-out tokens.")
    n_tokens: int = Field(description="Held-out tokens seen.")


class LatentInspection(BaseModel):
    """Everything a latent page shows beyond its examples (inspect/NAME.json, one per crosscoder)."""

    latent: int = Field(description="Latent id.")
    lens: dict[str, Lens] = Field(default_factory=dict, description="Model name -> logit lens of its decoder vector.")
    ablation: dict[str, Ablation] = Field(default_factory=dict, description="Model name -> ablation effect.")
    histogram: Histogram | None = Field(default=None, description="Activation histogram on held-out tokens.")


def read_inspections(run_dir: Any, crosscoders: list[str]) -> dict[str, dict[int, LatentInspection]]:
    """The inspections of the given crosscoders that exist (crosscoder -> latent -> LatentInspection)."""
    from latentdiff.io import read_json
    from latentdiff.rundir import RunDir

    rd = RunDir.of(run_dir)
    out: dict[str, dict[int, LatentInspection]] = {}
    for name in crosscoders:
        path = rd.inspection(name)
        if path.is_file():
            out[name] = {int(j): LatentInspection.model_validate(v) for j, v in read_json(path).items()}
    return out
