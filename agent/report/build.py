"""Collect a finished run into the typed `Report` and write report.{json,md,html} with plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentdiff.agent.aggregate import Aggregate, Comparison
from latentdiff.agent.replicates import comparison_id
from latentdiff.agent.report.schema import (  # noqa: F401 - the schema stays importable from here
    REPORT_VERSION,
    CategoryRow,
    LatentCard,
    LatentPage,
    OracleView,
    Report,
    ShadedExample,
)
from latentdiff.agent.state import read_findings
from latentdiff.agent.summary import is_scaffold
from latentdiff.config import RunConfig
from latentdiff.io import atomic_write_json, atomic_write_text
from latentdiff.records import Finding, LatentInspection, read_inspections
from latentdiff.rundir import RunDir

if TYPE_CHECKING:
    from latentdiff.agent.report.summary_llm import SummaryLLM





def planted_for(planted: dict[str, Any] | None, comp: Comparison) -> dict[str, str]:
    """The planted sign of each category of a comparison, where the organisms' truth has one.

    Headline (either set definition): the planted headline signs when A and B are the planted pair.
    A fine-tune vs the reference: '+' for each stream planted into it; every category '0' for a model
    planted with nothing (a control). Other comparisons: none.
    """
    if not planted:
        return {}
    head = planted.get("headline", {})
    if comp.kind in ("headline", "headline_alt"):
        if (comp.a, comp.b) == (head.get("a"), head.get("b")):
            return dict(head.get("signs", {}))
        if (comp.b, comp.a) == (head.get("a"), head.get("b")):
            flip = {"+": "-", "-": "+"}
            return {c: flip.get(v, v) for c, v in head.get("signs", {}).items()}
        return {}
    if comp.kind == "vs_reference" and comp.a != "base" and comp.a in planted.get("planted", {}):
        streams = planted["planted"][comp.a]
        if not streams:
            return {c: "0" for c in planted.get("categories", [])}
        return {c: "+" for c in streams}
    return {}


def recovered(sign: str | None, row: Any) -> bool | None:
    """'+'/'-': significant in that direction; '0': not significant; None: nothing planted."""
    if sign in ("+", "-"):
        return bool(row.significant and row.direction == sign)
    if sign == "0":
        return not row.significant
    return None




def oracle_view(cfg: RunConfig, run_dir: Path, categories: list[str], head: Comparison | None) -> OracleView | None:
    """The oracle comparisons of the primary crosscoder, or None when no example has a known stream."""
    from latentdiff.agent.oracle import judge_accuracy, oracle_labels, with_oracle_labels
    from latentdiff.agent.replicates import replicate_groups
    from latentdiff.agent.summary import comparisons_for

    oracle = oracle_labels(RunDir.of(run_dir).examples_dir, categories)
    findings = read_findings(run_dir)
    if not oracle or not findings:
        return None
    primary = next(iter(replicate_groups({f.ref.crosscoder for f in findings}).values()))
    findings = [f for f in findings if f.ref.crosscoder in primary]
    comps = comparisons_for(cfg, with_oracle_labels(findings, oracle), categories, primary)
    acc = judge_accuracy(findings, oracle, categories)
    labelled = {f.ref.key: f for f in findings if f.label is not None and f.ref.key in oracle}
    head_keys: set[str] = set()
    if head is not None and cfg.headline is not None:  # latents specific to either model of the headline
        head_keys = {f.ref.key for f in findings if f.side == "finetuned" and f.pair in cfg.headline}

    def share(keys: set[str]) -> float | None:
        keys = keys & labelled.keys()
        if not keys:
            return None
        return sum(labelled[k].label.category == oracle[k].category for k in keys) / len(keys)  # type: ignore[union-attr]

    return OracleView(comparisons=[c for c in (comps["headline"], comps["headline_alt"], *comps["comparisons"])
                                   if c is not None],
                      accuracy=acc, headline_accuracy=share(head_keys), overall_accuracy=share(set(labelled)))










def _planted(cfg: RunConfig) -> dict[str, Any] | None:
    """The planted truth when every model is an organism of one build (shipped or built elsewhere)."""
    from latentdiff.core.organisms import load_planted, organism_root

    roots = {organism_root(m.path) for m in cfg.models}
    if len(roots) != 1 or None in roots:
        return None
    return load_planted(roots.pop())


def _final_metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in RunDir.of(run_dir).training_metrics_files():
        lines = [json.loads(x) for x in path.read_text().splitlines() if x]
        out[path.parent.name] = lines[-1] if lines else {}
    return out


_SPECIAL_RE = re.compile(r"<\|?[^<>\s]{1,30}\|?>|‹\|?[^‹›\s]{1,30}\|?›|\[/?[A-Z]{2,10}\]")


def wordless(name: str | None) -> bool:
    """True when a name holds no letter or digit outside special/template tokens (e.g. '‹|end|› / ?', '# / ## / »')."""
    if not name:
        return False
    return not any(ch.isalnum() for ch in _SPECIAL_RE.sub(" ", name))


def display_name(f: Finding) -> tuple[str | None, str | None, bool]:
    """(name to show, raw judge name if replaced, replaced?) for one finding."""
    if f.label is None:
        return None, None, False
    if not wordless(f.label.name):
        return f.label.name, None, False
    return f"{f.label.category.replace('_', ' ')} latent {f.ref.key} (unnamed)", f.label.name, True


def _examples(cfg: RunConfig, run_dir: Path, keys: set[str]) -> tuple[dict[str, list[str]],
                                                                       dict[str, list[ShadedExample]]]:
    """One pass over the run's examples: per latent, its 3 top examples marked for the card, and the page's
    shaded examples (3 top, 2 quantile from distinct buckets, 2 non-activating)."""
    from latentdiff.core.examples import read_examples

    tops: dict[str, list[str]] = {}
    shaded: dict[str, dict[str, list[ShadedExample]]] = {}
    for path in RunDir.of(run_dir).example_files():
        for ex in read_examples(path):
            key = f"{path.name.split('.')[0]}:{ex.latent}"
            if key not in keys:
                continue
            if ex.kind == "top" and len(tops.setdefault(key, [])) < 3:
                tops[key].append(ex.marked_text(cfg.sampling.mark_threshold))
            kinds = shaded.setdefault(key, {})
            if len(kinds.setdefault(ex.kind, [])) < (3 if ex.kind == "top" else 2) and (
                    ex.kind != "quantile" or all(q.quantile != ex.quantile for q in kinds[ex.kind])):
                kinds[ex.kind].append(ShadedExample(kind=ex.kind, quantile=ex.quantile, tokens=ex.tokens,
                                                    activations=ex.activations, max_act=ex.max_act))
    ordered = {key: [x for k in ("top", "quantile", "negative") for x in kinds.get(k, [])]
               for key, kinds in shaded.items()}
    return tops, ordered


def _cards(cfg: RunConfig, findings: list[Finding], tops: dict[str, list[str]]) -> list[LatentCard]:
    from latentdiff.agent.confidence import calibrated_confidence, is_low_confidence

    names = {f.ref.key: display_name(f) for f in findings}
    return [LatentCard(id=f.ref.key, side=f.side, pair=f.pair, name=names[f.ref.key][0],
                       raw_name=names[f.ref.key][1], name_flagged=names[f.ref.key][2],
                       category=f.label.category if f.label else None,
                       description=f.label.description if f.label else None, delta_norm=f.delta_norm,
                       nu_eps=f.nu_eps, nu_r=f.nu_r, freq=f.freq, verification=f.verification,
                       failure=f.failure, scaffold=is_scaffold(f, cfg), scaffold_share=f.scaffold_share,
                       confidence=calibrated_confidence(f),
                       low_confidence=is_low_confidence(f, cfg.report.low_confidence),
                       examples=tops.get(f.ref.key, []))
            for f in findings]


def _pages(run_dir: Path, keys: set[str], shaded: dict[str, list[ShadedExample]]) -> list[LatentPage]:
    """One page record per latent: its shaded examples and its inspection."""
    insp = read_inspections(run_dir, sorted({k.rsplit(":", 1)[0] for k in keys}))
    pages = []
    for key in sorted(keys):
        cc, latent = key.rsplit(":", 1)
        i: LatentInspection | None = insp.get(cc, {}).get(int(latent))
        pages.append(LatentPage(id=key, shaded=shaded.get(key, []),
                                **({} if i is None else {"lens": i.lens, "ablation": i.ablation,
                                                         "histogram": i.histogram})))
    return pages


def build_report(cfg: RunConfig, run_dir: Path, summary_llm: SummaryLLM | None = None) -> Report:
    """Assemble the report of a run whose aggregate stage is done, with its executive summary
    (drafted by `summary_llm`, else by the configured summary LLM, else templated)."""
    from latentdiff.agent.report.summary_llm import summarize

    agg = Aggregate(**json.loads(RunDir.of(run_dir).aggregate.read_text()))
    findings = read_findings(run_dir)
    keys = {f.ref.key for f in findings}
    tops, shaded = _examples(cfg, run_dir, keys)
    planted = _planted(cfg)
    head = agg.headline or (agg.comparisons[0] if agg.comparisons else None)
    signs = planted_for(planted, head) if head is not None else {}
    rows = [CategoryRow(name=c.name, n_a=c.n_a, n_b=c.n_b, share_a=c.share_a, share_b=c.share_b, diff_pp=c.diff_pp,
                        ci95=c.ci95, shift_pct=c.shift_pct, ci95_shift_pct=c.ci95_shift_pct, p_adjusted=c.p_adjusted,
                        significant=c.significant, planted=signs.get(c.name), recovered=recovered(signs.get(c.name), c))
            for c in (head.categories if head else [])]
    comparisons = agg.all_comparisons()
    planted_signs = {comparison_id(c): s for c in comparisons if (s := planted_for(planted, c))}
    select = RunDir.of(run_dir).read_marker("select") or {}
    harvest = RunDir.of(run_dir).read_marker("harvest") or {}
    report = Report(
        run=cfg.name,
        models=[{"name": m.name, "path": m.path, "role": m.role} for m in cfg.models],
        data=cfg.data.model_dump(mode="json") | {"layer": harvest.get("layer"), "excluded": harvest.get("excluded")},
        crosscoders=_final_metrics(run_dir),
        selection=cfg.selection.model_dump(mode="json") | {"sides": select.get("sides", {})},
        headline={"a": head.a, "b": head.b, "sets": head.sets, "description": head.description,
                  "n_a": head.n_a, "n_b": head.n_b, "status": head.status, "note": head.note} if head else None,
        categories=rows, comparisons=comparisons, planted_signs=planted_signs, replicates=agg.replicates,
        scaffold=agg.scaffold,
        statistics={"test": agg.test, "correction": agg.correction, "alpha": agg.alpha,
                    "min_set_size": agg.min_set_size, "n_replicates": agg.n_replicates},
        verification=agg.verification, judge=agg.judge, failures=[f.model_dump() for f in agg.failures],
        skipped=agg.skipped, stop_reason=agg.stop_reason, refinement=agg.refinement,
        latents=_cards(cfg, findings, tops), pages=_pages(run_dir, keys, shaded),
        planted=planted,
        oracle=oracle_view(cfg, run_dir, agg.categories, agg.headline) if planted else None,
        confidence=agg.confidence,
    )
    report.summary = summarize(report, cfg.report, cfg.judge, summary_llm)
    return report


def write_report(cfg: RunConfig, run_dir: Path, summary_llm: SummaryLLM | None = None) -> Path:
    """Write report/report.json, report.md, report.html and plots; return the report dir."""
    from latentdiff.agent.report.plots import make_plots
    from latentdiff.agent.report.render import render_html, render_markdown

    report = build_report(cfg, run_dir, summary_llm)
    rd = RunDir.of(run_dir)
    out = rd.report_dir
    plots = make_plots(report, rd, rd.plots)
    if "json" in cfg.report.formats:
        atomic_write_json(rd.report_json, report.model_dump(mode="json"))
    if "md" in cfg.report.formats:
        atomic_write_text(rd.report_md, render_markdown(report, plots, cfg.report.max_cards))
    if "html" in cfg.report.formats:
        atomic_write_text(rd.report_html, render_html(report, plots, cfg.report.max_cards))
    return out
