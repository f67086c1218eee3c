"""The stages of a run, in one table: `STAGES` (name, settings it depends on, outputs, runner, reader,
whether it runs under torchrun). `Run`, the CLI and the results API iterate it; adding a stage is one
entry here plus its runner and reader (docs/design.md, "Adding a stage").

Every path comes from `RunDir` (latentdiff/rundir.py). A stage is skipped when its done-marker holds
the hash of the settings it depends on. Otherwise it (re)computes: with the same settings as a begun,
unfinished run it resumes from the partial, atomically written outputs; with changed settings it first
checks the new settings (`validate`), then builds its outputs in a staging directory beside the old
ones and swaps them in when done (`begin` / `mark_done`), so a failure never destroys finished work.

Package layout: `base` holds the machinery every stage shares (the `Stage` record, markers, the
crosscoder plan, checks of new settings); each stage has its module (runner and reader side by side);
this module holds the table.
"""

from __future__ import annotations

from latentdiff.rundir import RunDir
from latentdiff.stages.base import (
    RunPath,
    Stage,
    begin,
    check_device,
    check_judge,
    check_logging,
    check_models,
    check_taxonomy,
    crosscoder_plan,
    crosscoder_seed,
    invalidate,
    is_done,
    mark_done,
    metrics_logger,
    needs,
    require_done,
    stage_hash,
    stage_named,
    validate,
)
from latentdiff.stages.harvest import read_harvest, run_harvest
from latentdiff.stages.index import crosscoder_fingerprints, open_store, read_index, run_index, store_scope
from latentdiff.stages.inspect import read_inspect, run_inspect
from latentdiff.stages.label import label_plan, label_worker, read_label, run_label
from latentdiff.stages.report import read_aggregate, read_report, run_aggregate, run_report
from latentdiff.stages.sample import read_sample, reference_latents, run_sample
from latentdiff.stages.select import read_select, run_select
from latentdiff.stages.train import read_train, run_train

__all__ = [  # the table and every name the stages' modules lend it
    "STAGES", "STAGE_NAMES", "RunPath", "Stage", "begin", "check_device", "check_judge", "check_logging",
    "check_models", "check_taxonomy", "crosscoder_fingerprints", "crosscoder_plan", "crosscoder_seed",
    "invalidate", "is_done", "label_plan", "label_worker", "mark_done", "metrics_logger", "needs", "open_store",
    "read_aggregate", "read_harvest", "read_index", "read_inspect", "read_label", "read_report", "read_sample",
    "read_select", "read_train", "reference_latents", "require_done", "run_aggregate", "run_harvest",
    "run_index", "run_inspect", "run_label", "run_report", "run_sample", "run_select", "run_train",
    "stage_hash", "stage_named", "store_scope", "validate",
]


_CORE = ("models", "data", "harvest")
_LABEL = (*_CORE, "design", "crosscoder", "selection", "sampling", "store", "judge", "agent")
_REPORT = (*_LABEL, "headline", "headline_exclusive", "report")

STAGES: tuple[Stage, ...] = (
    Stage("harvest", _CORE, (RunDir.ACTIVATIONS,), run_harvest, read_harvest, distributed=True,
          checks=(check_models, check_device)),
    Stage("train", (*_CORE, "design", "crosscoder"), (RunDir.CROSSCODERS,), run_train, read_train,
          distributed=True, checks=(check_device, check_logging)),
    Stage("select", (*_CORE, "design", "crosscoder", "selection"), (RunDir.LATENTS,), run_select, read_select),
    Stage("sample", (*_CORE, "design", "crosscoder", "selection", "sampling"), (RunDir.EXAMPLES,), run_sample,
          read_sample, checks=(check_models,)),
    Stage("inspect", (*_CORE, "design", "crosscoder", "selection", "sampling", "inspect"), (RunDir.INSPECT,),
          run_inspect, read_inspect, checks=(check_models, check_device)),
    # inspect only feeds the report's latent pages: labelling does not wait for it
    Stage("index", (*_CORE, "design", "crosscoder", "selection", "sampling", "store"), (), run_index, read_index,
          after=("sample",)),
    # the agent writes aggregate.json when it finishes: rebuilt (and swapped in) with the findings
    Stage("label", _LABEL, (RunDir.FINDINGS, RunDir.AGENT_DB, RunDir.AGGREGATE), run_label, read_label,
          checks=(check_judge, check_logging)),
    Stage("aggregate", _REPORT, (RunDir.AGGREGATE,), run_aggregate, read_aggregate, checks=(check_taxonomy,)),
    Stage("report", (*_REPORT, "inspect"), (RunDir.REPORT,), run_report, read_report, checks=(check_taxonomy,)),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
