"""Read-only access to a finished run for the chat: typed lookups over report.json, the findings
and the run's Chroma store.

Every lookup returns pydantic records carrying latent ids (`crosscoder:latent`), so whoever
answers (the offline templates or an LLM agent) can cite them. Nothing here writes: the view
holds no method that modifies the run directory or the store, and the chat exposes only these.
"""

from __future__ import annotations

import logging
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from latentdiff.agent.aggregate import Aggregate
from latentdiff.agent.report.schema import Report
from latentdiff.config import RunConfig
from latentdiff.errors import LatentDiffError
from latentdiff.records import Finding
from latentdiff.rundir import RunDir

log = logging.getLogger(__name__)

_KEY = re.compile(r"^(?:(?P<cc>[A-Za-z_][\w.-]*):)?#?(?P<id>\d+)$")


class ChatError(LatentDiffError):
    """The run cannot be chatted with (missing, unfinished) or a lookup is malformed."""


class LatentBrief(BaseModel):
    """One latent as listed in an answer."""

    id: str = Field(description="crosscoder:latent.")
    pair: str = Field(description="Model compared with base.")
    side: str = Field(description="'finetuned', 'base', 'shared' or 'other' for that pair.")
    name: str = Field(description="Judge's name ('' if unlabelled).")
    category: str = Field(description="Judge's category ('' if unlabelled).")
    delta_norm: float = Field(description="Delta-norm for the pair.")
    verification: float | None = Field(default=None, description="Detection balanced accuracy.")
    distance: float | None = Field(default=None, description="Semantic distance to the query, if searched.")


class LatentDetail(BaseModel):
    """A latent card: every pair's finding plus its strongest examples."""

    id: str = Field(description="crosscoder:latent.")
    findings: list[Finding] = Field(description="One finding per pair the latent was selected for.")
    examples: list[str] = Field(description="Top examples, activating tokens <<marked>>.")


class CategoryCell(BaseModel):
    """One category of one comparison."""

    comparison: str = Field(description="Comparison id, 'A vs B (sets[, pair])'.")
    kind: str = Field(description="'headline', 'headline_alt', 'vs_reference' or 'control'.")
    a: str = Field(description="Set A (a model, or 'base' for a pair's base-specific latents).")
    b: str = Field(description="Set B (a model, 'reference' for the pair's reference sample of shared latents).")
    category: str = Field(description="Category.")
    n_a: int = Field(description="Latents of A in the category.")
    n_b: int = Field(description="Latents of B in the category.")
    total_a: int = Field(description="Latents of A counted (all categories).")
    total_b: int = Field(description="Latents of B counted.")
    share_a: float = Field(description="n_a / total_a.")
    share_b: float = Field(description="n_b / total_b.")
    diff_pp: float = Field(description="100 * (share_a - share_b): percentage points (the primary effect).")
    ci95: tuple[float, float] = Field(description="95% interval of diff_pp, percentage points (Newcombe).")
    shift_pct: float | None = Field(
        description="The paper's percent form 100 * (share_a / share_b - 1); None: unbounded (B has none) or "
        "undefined (neither has any)."
    )
    ci95_shift_pct: tuple[float | None, float | None] = Field(description="95% interval of shift_pct (None: inf).")
    p_adjusted: float | None = Field(description="Exact permutation p-value, corrected across categories "
                                                 "(None: not tested).")
    significant: bool = Field(description="Tested and p_adjusted < alpha.")
    status: Literal["ok", "too_few"] = Field(description="'too_few': too few latents to compare, not tested.")
    note: str | None = Field(default=None, description="e.g. 'too few latents to compare (4)'.")
    planted: str | None = Field(default=None, description="Planted sign (+, -, 0) for organisms, where known.")

    @property
    def tested(self) -> bool:
        """Both sets were large enough to test."""
        return self.status == "ok"


class ComparisonBrief(BaseModel):
    """One comparison, without its rows."""

    id: str = Field(description="'A vs B (sets[, pair])'.")
    kind: str = Field(description="'headline', 'headline_alt', 'vs_reference' or 'control'.")
    a: str = Field(description="Set A.")
    b: str = Field(description="Set B.")
    pair: str | None = Field(default=None, description="The pair the sets come from, when one.")
    description: str = Field(description="What the sets are.")
    n_a: int = Field(description="Latents of A counted.")
    n_b: int = Field(description="Latents of B counted.")
    status: Literal["ok", "too_few"] = Field(description="'too_few': not tested.")
    note: str | None = Field(default=None, description="e.g. 'too few latents to compare (4)'.")


class CategoryTable(BaseModel):
    """The headline table and every other comparison, category by category."""

    headline: str | None = Field(description="Id of the headline comparison, if any.")
    comparisons: list[ComparisonBrief] = Field(default_factory=list, description="Every comparison, headline first.")
    cells: list[CategoryCell] = Field(description="Every (comparison, category) cell.")
    planted: dict[str, str] = Field(default_factory=dict, description="Planted headline signs, for organisms.")
    statistics: dict[str, Any] = Field(
        default_factory=dict, description="test, correction, alpha, min_set_size, n_replicates.")

    def comparison(self, cid: str | None) -> ComparisonBrief | None:
        """A comparison by id."""
        return next((c for c in self.comparisons if c.id == cid), None)


def _brief(f: Finding, distance: float | None = None) -> LatentBrief:
    return LatentBrief(
        id=f.ref.key, pair=f.pair, side=f.side, name=f.label.name if f.label else "",
        category=f.label.category if f.label else "", delta_norm=f.delta_norm, verification=f.verification,
        distance=distance,
    )


class RunView:
    """A finished run, opened read-only (report stage done)."""

    def __init__(self, run_dir: str | Path) -> None:
        from latentdiff.agent.state import read_findings
        from latentdiff.config import load_config
        from latentdiff.io import read_model

        self.dir = Path(run_dir).resolve()
        self.rundir = RunDir(self.dir)
        cfg_path, report_path = self.rundir.config, self.rundir.report_json
        if not cfg_path.is_file():
            raise ChatError(f"{self.dir} is not a latentdiff run directory (no config.yaml)")
        if not report_path.is_file():
            raise ChatError(f"{self.dir} has no report yet: finish it with `latentdiff run {cfg_path}`")
        # The directory may have moved since the run: it, not the recorded path, is the run.
        self.cfg: RunConfig = load_config(cfg_path, [f"run_dir={self.dir}"])
        self.report = read_model(report_path, Report, "report")
        self.aggregate = read_model(self.rundir.aggregate, Aggregate, "aggregate")
        self.findings: list[Finding] = read_findings(self.rundir)
        self.by_key: dict[str, list[Finding]] = {}
        for f in self.findings:
            self.by_key.setdefault(f.ref.key, []).append(f)
        self.crosscoders = sorted({f.ref.crosscoder for f in self.findings}) or ["joint"]
        self.categories: list[str] = list(self.aggregate.categories)
        self.pairs: list[str] = [m.name for m in self.cfg.models if m.role != "base"]

    @cached_property
    def store(self):  # noqa: ANN201 - LatentStore, imported lazily (chromadb is slow to import)
        """The run's Chroma store (opened on first use)."""
        from latentdiff.store.chroma import LatentStore

        return LatentStore.for_run(self.cfg, getattr(self, "_store_path", None))

    def close(self) -> None:
        """Release the store, if it was opened."""
        if "store" in self.__dict__:
            self.store.close()

    # -- lookups -------------------------------------------------------------------------------

    def resolve(self, latent: str | int) -> str:
        """'812', '#812', 'joint:812' -> the key of a latent of this run; ChatError if unknown."""
        m = _KEY.match(str(latent).strip())
        if m is None:
            raise ChatError(f"not a latent id: {latent!r} (use e.g. {self.crosscoders[0]}:12)")
        keys = [f"{m['cc']}:{m['id']}"] if m["cc"] else [f"{cc}:{m['id']}" for cc in self.crosscoders]
        for key in keys:
            if key in self.by_key:
                return key
        raise ChatError(f"latent {latent} was not selected or labelled in this run")

    def latent_card(self, latent: str | int, n_examples: int = 3) -> LatentDetail:
        """Every finding of a latent, with its top examples from the store."""
        key = self.resolve(latent)
        cc, idx = key.rsplit(":", 1)
        examples = [e.text for e in self.store.examples_for(cc, int(idx), kinds=["top"])[:n_examples]]
        return LatentDetail(id=key, findings=sorted(self.by_key[key], key=lambda f: f.pair), examples=examples)

    def list_latents(
        self, category: str | None = None, pair: str | None = None, side: str | None = "finetuned", n: int = 10
    ) -> list[LatentBrief]:
        """Labelled latents filtered exactly, most model-specific first (largest Delta-norm for the
        fine-tuned side, smallest for the base side)."""
        rows = [f for f in self.findings if f.label is not None
                and (category is None or f.label.category == category)
                and (pair is None or f.pair == pair) and (side is None or f.side == side)]
        rows.sort(key=lambda f: (f.delta_norm if f.side == "base" else -f.delta_norm, f.ref.key))
        return [_brief(f) for f in rows[:n]]

    def search_latents(
        self, query: str, category: str | None = None, pair: str | None = None, side: str | None = None, n: int = 8
    ) -> list[LatentBrief]:
        """Latents whose label is closest in meaning to `query` (semantic search over findings)."""
        where: dict[str, object] = {"failed": False}
        for k, v in (("category", category), ("pair", pair), ("side", side)):
            if v:
                where[k] = v
        hits = self.store.search_findings(query, n=2 * n, where=where)
        out: dict[str, LatentBrief] = {}
        for h in hits:  # one line per latent: its closest finding (a latent has one finding per pair)
            out.setdefault(h.finding.ref.key, _brief(h.finding, h.distance))
        return list(out.values())[:n]

    def search_examples(self, query: str, n: int = 6) -> list[tuple[str, str]]:
        """(latent key, example text) of the examples closest in meaning to `query`."""
        hits = self.store.search_examples(query, n=n, where={"kind": {"$in": ["top", "quantile"]}})
        return [(f"{h.example.crosscoder}:{h.example.latent}", h.example.text) for h in hits]

    def category_table(self) -> CategoryTable:
        """Every comparison of the report (headline, both set definitions, each set vs the reference sample,
        the control contrasts), category by category, with the test's settings."""
        from latentdiff.agent.replicates import comparison_id
        from latentdiff.agent.report.summary import headline

        cells: list[CategoryCell] = []
        briefs: list[ComparisonBrief] = []
        for comp in self.report.comparisons:
            cid = comparison_id(comp)
            signs = self.report.planted_signs.get(cid, {})
            briefs.append(ComparisonBrief(id=cid, kind=comp.kind, a=comp.a, b=comp.b, pair=comp.pair,
                                          description=comp.description, n_a=comp.n_a, n_b=comp.n_b,
                                          status=comp.status, note=comp.note))
            for c in comp.categories:
                cells.append(CategoryCell(
                    comparison=cid, kind=comp.kind, a=comp.a, b=comp.b, category=c.name, n_a=c.n_a, n_b=c.n_b,
                    total_a=comp.n_a, total_b=comp.n_b, share_a=c.share_a, share_b=c.share_b, diff_pp=c.diff_pp,
                    ci95=c.ci95, shift_pct=c.shift_pct, ci95_shift_pct=c.ci95_shift_pct, p_adjusted=c.p_adjusted,
                    significant=c.significant, status=comp.status, note=comp.note, planted=signs.get(c.name)))
        head = headline(self.report)
        planted = {r.name: r.planted for r in self.report.categories if r.planted}
        return CategoryTable(headline=comparison_id(head) if head is not None else None, comparisons=briefs,
                             cells=cells, planted=planted, statistics=dict(self.report.statistics))

    def category(self, name: str) -> list[CategoryCell]:
        """Every comparison's cell for one category."""
        return [c for c in self.category_table().cells if c.category == name]
