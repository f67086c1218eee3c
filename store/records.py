"""Typed records the store returns (never Chroma's columnar result dicts)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from latentdiff.records import ExampleKind, ExampleText, Finding


class StoredExample(BaseModel):
    """One example window as stored for a latent of a crosscoder in a run."""

    id: str = Field(description="Chroma id: run:crosscoder:latent:kind:ctx:start[:q<quantile>].")
    run: str = Field(description="Run name.")
    crosscoder: str = Field(description="Crosscoder name.")
    latent: int = Field(description="Latent id.")
    kind: ExampleKind = Field(description="How it was sampled.")
    quantile: int | None = Field(default=None, description="Quantile bucket (0 = lowest), if any.")
    ctx: int = Field(description="Held-out context index.")
    start: int = Field(description="First token position of the window in its context.")
    doc_id: int = Field(description="Source document id.")
    max_act: float = Field(description="Max activation in the window.")
    text: str = Field(description="Window text with activating tokens marked <<like this>>.")
    tokens: list[str] = Field(default_factory=list, description="Decoded tokens of the window.")
    activations: list[float] = Field(default_factory=list, description="Activation per token.")

    @property
    def plain(self) -> str:
        """The window without marks."""
        return "".join(self.tokens)

    def to_example_text(self) -> ExampleText:
        """The judge's view of this example."""
        return ExampleText(
            text=self.text,
            plain=self.plain,
            max_act=self.max_act,
            kind=self.kind,
            quantile=self.quantile,
            tokens=list(self.tokens),
            activations=list(self.activations),
            doc_id=self.doc_id,
        )


class ExampleHit(BaseModel):
    """A semantic-search result over examples."""

    example: StoredExample = Field(description="The matching example.")
    distance: float = Field(description="Cosine distance to the query (0 = identical).")


class FindingHit(BaseModel):
    """A semantic-search result over findings."""

    finding: Finding = Field(description="The matching finding.")
    distance: float = Field(description="Cosine distance to the query (0 = identical).")
