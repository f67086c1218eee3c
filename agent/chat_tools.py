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

from pydantic import BaseModel, Field

from latentdiff.agent.report.build import Report
from latentdiff.agent.summary import Aggregate
from latentdiff.config import RunConfig
from latentdiff.errors import LatentDiffError
from latentdiff.records import Finding

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

    comparison: str = Field(description="'A vs B'.")
    category: str = Field(description="Category.")
    shift_pct: float = Field(description="100 * (share in A / share in B - 1).")
    ci95: tuple[float, float] = Field(description="95% bootstrap CI.")
    n_a: int | None = Field(default=None, description="Latents of A in the category (None for net shifts).")
    n_b: int | None = Field(default=None, description="Latents of B in the category (None for net shifts).")
    significant: bool = Field(description="CI excludes 0.")
    net_of_control: bool = Field(default=False, description="Shift with the control's own shift subtracted.")


class CategoryTable(BaseModel):
    """The headline table and every other comparison, category by category."""

    headline: str | None = Field(description="'A vs B' of the headline, if any.")
    cells: list[CategoryCell] = Field(description="Every (comparison, category) cell.")
    planted: dict[str, str] = Field(default_factory=dict, description="Planted signs, for organisms.")


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

        self.dir = Path(run_dir).resolve()
        cfg_path, report_path = self.dir / "config.yaml", self.dir / "report" / "report.json"
        if not cfg_path.is_file():
            raise ChatError(f"{self.dir} is not a latentdiff run directory (no config.yaml)")
        if not report_path.is_file():
            raise ChatError(f"{self.dir} has no report yet: finish it with `latentdiff run {cfg_path}`")
        # The directory may have moved since the run: it, not the recorded path, is the run.
        self.cfg: RunConfig = load_config(cfg_path, [f"run_dir={self.dir}"])
        self.report = Report.model_validate_json(report_path.read_text())
        self.aggregate = Aggregate.model_validate_json((self.dir / "aggregate.json").read_text())
        self.findings: list[Finding] = read_findings(self.dir)
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

        return LatentStore.for_run(self.cfg)

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
        """The headline comparison, each fine-tune vs base, and the net-of-control shifts."""
        cells: list[CategoryCell] = []
        for comp in self.report.comparisons:
            for c in comp.categories:
                cells.append(CategoryCell(comparison=f"{comp.a} vs {comp.b}", category=c.name, shift_pct=c.shift_pct,
                                          ci95=c.ci95, n_a=c.n_a, n_b=c.n_b, significant=c.significant))
        for net in self.report.net_of_control:
            for c in net.categories:
                cells.append(CategoryCell(
                    comparison=f"{net.a} vs base, net of {net.control}", category=c.name,
                    shift_pct=c.shift_pct, ci95=c.ci95, significant=c.significant, net_of_control=True))
        head = self.report.headline
        planted = {r.name: r.planted for r in self.report.categories if r.planted}
        return CategoryTable(headline=f"{head['a']} vs {head['b']}" if head else None, cells=cells, planted=planted)

    def category(self, name: str) -> list[CategoryCell]:
        """Every comparison's cell for one category."""
        return [c for c in self.category_table().cells if c.category == name]
