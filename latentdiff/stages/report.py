"""The aggregate and report stages."""

from __future__ import annotations

import logging
from typing import Any

from latentdiff.config import RunConfig
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, mark_done

log = logging.getLogger(__name__)


def run_aggregate(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Recompute aggregate.json from the recorded findings (e.g. after changing report settings)."""
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.summary import write_aggregate

    rd = RunDir.of(run_dir)
    info = RunDir(rd.root).read_marker("label") or {}
    path = write_aggregate(cfg, rd, load_taxonomy(cfg.judge.taxonomy), info.get("skipped", []),
                           info.get("stop_reason"))
    mark_done(cfg, rd, "aggregate", {"path": str(RunDir(rd.root).aggregate if rd.is_staged else path)})


def read_aggregate(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> Any:
    """aggregate.json as the typed `Aggregate`."""
    from latentdiff.agent.aggregate import Aggregate

    return Aggregate.model_validate_json(rd.aggregate.read_text())


def run_report(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """report/report.{json,md,html} with embedded plots."""
    from latentdiff.agent.report import write_report

    rd = RunDir.of(run_dir)
    write_report(cfg, rd)
    out = RunDir(rd.root).report_dir
    mark_done(cfg, rd, "report", {"path": str(out)})
    log.info("report written to %s", out)


def read_report(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> Any:
    """report.json as the typed `Report` (assembled afresh when the report has no JSON format)."""
    from latentdiff.agent.report.build import Report, build_report

    path = rd.report_json
    return Report.model_validate_json(path.read_text()) if path.is_file() else build_report(cfg, rd)
