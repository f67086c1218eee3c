"""The run report: report.json (versioned pydantic schema), report.md and a self-contained report.html."""

from latentdiff.agent.report.build import REPORT_VERSION, Report, build_report, write_report

__all__ = ["REPORT_VERSION", "Report", "build_report", "write_report"]
