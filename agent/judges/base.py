"""The judge interface: name and categorise a latent from its examples, and detect it in new text.

Every backend (vLLM/OpenAI HTTP, local transformers, offline embeddings, third-party plugins)
subclasses `Judge` and returns validated `LatentLabel`s; a judge that cannot produce one raises
`JudgeError` with a one-line reason, never a sentinel label.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from latentdiff.agent.judges.taxonomy import Taxonomy, load_taxonomy
from latentdiff.config import JudgeConfig
from latentdiff.errors import LatentDiffError
from latentdiff.records import ExampleText, LatentLabel

FailureKind = Literal["unreachable", "timeout", "server", "rejected", "invalid", "config", "other"]


class JudgeError(LatentDiffError):
    """A judge could not produce a valid answer; `reason` is one line for the user and the report."""

    def __init__(self, reason: str, kind: FailureKind = "other") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: FailureKind = kind


class LabelRequest(BaseModel):
    """Everything a judge sees to label one latent (examples are untrusted corpus text)."""

    model_config = ConfigDict(extra="forbid")
    latent: str = Field(description="Latent key, e.g. 'joint:812' (for logs and caches, not shown).")
    top: list[ExampleText] = Field(min_length=1, description="Top-activating examples, marked <<>>.")
    quantile: list[ExampleText] = Field(default_factory=list, description="Lower-quantile examples.")
    negative: list[ExampleText] = Field(default_factory=list, description="Non-activating examples.")
    taxonomy: Taxonomy = Field(default_factory=load_taxonomy, description="Categories to choose from.")
    hard_negatives: bool = Field(
        default=False, description="The negatives were chosen close in meaning to the top examples (refinement)."
    )
    contrast: str | None = Field(
        default=None, description="Per-model numbers of the latent (refinement rounds), shown in a delimited block."
    )


class JudgeStats(BaseModel):
    """Running counters of one judge instance."""

    calls: int = Field(default=0, description="Requests sent (every attempt, retries included).")
    failures: int = Field(default=0, description="label/detect operations that raised JudgeError.")
    retries: int = Field(default=0, description="Attempts after the first one of an operation.")
    cache_hits: int = Field(default=0, description="Answers served from the response cache.")
    prompt_tokens: int = Field(default=0, description="Prompt tokens reported by the backend.")
    completion_tokens: int = Field(default=0, description="Completion tokens reported by the backend.")
    latency_s: float = Field(default=0.0, description="Total wall time of requests, seconds.")

    @property
    def mean_latency_s(self) -> float:
        """Mean wall time per request (0 when none)."""
        return self.latency_s / self.calls if self.calls else 0.0


class Judge(ABC):
    """A labelling backend. Subclasses are constructed as `Cls(spec, cfg)`."""

    spec: str

    def __init__(self, spec: str, cfg: JudgeConfig | None = None) -> None:
        self.spec = spec
        self.cfg = cfg if cfg is not None else JudgeConfig(spec=spec)
        self.stats = JudgeStats()

    @abstractmethod
    async def label(self, request: LabelRequest) -> LatentLabel:
        """Name and categorise one latent; the label's `judge` field is `self.spec`."""

    @abstractmethod
    async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        """delphi detection: for each UNMARKED example (its `plain` text), does the latent fire?"""

    async def aclose(self) -> None:
        """Release clients, models or files (no-op by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
