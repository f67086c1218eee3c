"""Write a run's latents in Neuronpedia's import layout (one source of one model).

Neuronpedia imports a directory `<modelId>/<sourceId>/` (apps/webapp/app/api/admin/import/route.ts GET):
    release.jsonl (optional), model.jsonl, sourceset.jsonl, source.jsonl   created through Prisma (unknown keys fail)
    features/batch-N.jsonl.gz       rows of table "Neuron"
    activations/batch-N.jsonl.gz    rows of table "Activation"
    explanations/batch-N.jsonl.gz   rows of table "Explanation" (file names must match ^batch-(\\d+)\\.jsonl\\.gz$)
Each .jsonl.gz goes through apps/webapp/lib/db/import.ts importJsonlString: the columns are the FIRST line's
keys that are columns of the table (`INSERT ... SELECT FROM jsonb_to_recordset ... ON CONFLICT DO NOTHING`), so
every line of a file carries the same keys, and a column without a database default must be present: Neuron
modelId, layer, index; Activation id, tokens, index, layer, modelId, maxValue, maxValueTokenIndex, minValue,
values, creatorId; Explanation id, modelId, layer, index, description, authorId (apps/webapp/prisma/schema.prisma;
`id @default(cuid())` is Prisma's, not the database's, so ids are written here). creatorId / authorId must be an
existing Neuronpedia user id (the reference scripts read DEFAULT_CREATOR_ID). Field names and batch sizes follow
utils/neuronpedia-utils/neuronpedia_utils/db_models/*.py, export-data.py (1024 rows a batch, the column lists of
export_features / export_activations / export_explanations) and convert-saedashboard-to-neuronpedia-export.py
(sourceId = f"{layer}-{sourceSetId}", gzip compresslevel 5).

A crosscoder latent becomes one Neuron (index = latent id) of the fine-tuned model's source; its label becomes an
Explanation whose notes carry the diffing statistics (side, Delta-norm, nu, verification) per pair.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from latentdiff.io import atomic_write
from latentdiff.records import Finding

if TYPE_CHECKING:  # records only; no tensors are imported here
    from latentdiff.core.examples import Example
    from latentdiff.core.select import LatentStats

BATCH = 1024  # export-data.py FEATURES_EXPLANATIONS_BATCH_SIZE / ACTIVATIONS_BATCH_SIZE


class NeuronpediaSource(BaseModel):
    """Where the latents go on Neuronpedia, and who uploads them."""

    model_id: str = Field(description="Neuronpedia model id, e.g. 'gemma-2-2b-it' (created if missing).")
    layer: int = Field(ge=0, description="Layer the crosscoder reads (the sourceId's prefix).")
    source_set: str = Field(description="Source set id without the layer, e.g. 'latentdiff-joint'.")
    creator_id: str = Field(description="Neuronpedia user id that owns the rows (DEFAULT_CREATOR_ID).")
    creator_name: str = Field(default="latentdiff", description="Shown as the source set's creator.")
    description: str = Field(default="latentdiff crosscoder latents", description="Source set description.")
    dataset: str | None = Field(default=None, description="Dataset the examples come from (Source.dataset).")
    hf_repo_id: str | None = Field(default=None, description="HF repo holding the crosscoder weights, if pushed.")
    release: str | None = Field(default=None, description="Release name; None writes no release.jsonl.")
    instruct: bool = Field(default=True, description="Model.instruct of the model row.")
    n_layers: int = Field(default=0, ge=0, description="Model.layers of the model row (0 = unknown).")
    d_model: int | None = Field(default=None, description="Model.dimension of the model row.")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(), description="Row timestamps.")

    @property
    def source_id(self) -> str:
        """Neuronpedia's source id (the Neuron's `layer` column): '<layer>-<source set>'."""
        return f"{self.layer}-{self.source_set}"


def _write_jsonl(path: Path, rows: list[dict[str, Any]], gz: bool) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    atomic_write(path, lambda p: p.write_bytes(gzip.compress(data, compresslevel=5) if gz else data))


def _id(*parts: object) -> str:
    """Deterministic 25-character cuid-like id (re-exporting gives the same ids: ON CONFLICT DO NOTHING)."""
    return "c" + hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:24]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def metadata_rows(src: NeuronpediaSource) -> dict[str, list[dict[str, Any]]]:
    """model / sourceset / source (/ release) rows, with exactly the fields of db_models/*.py."""
    rows: dict[str, list[dict[str, Any]]] = {
        "model": [{
            "id": src.model_id, "instruct": src.instruct, "creatorId": src.creator_id,
            "displayNameShort": src.model_id, "displayName": src.model_id, "tlensId": None,
            "dimension": src.d_model, "visibility": "PUBLIC", "defaultSourceSetName": None, "defaultSourceId": None,
            "inferenceEnabled": False, "layers": src.n_layers, "neuronsPerLayer": 0, "createdAt": src.created_at,
            "owner": src.creator_name, "updatedAt": src.created_at, "website": None,
        }],
        "sourceset": [{
            "modelId": src.model_id, "name": src.source_set, "creatorId": src.creator_id, "hasDashboards": True,
            "visibility": "PUBLIC", "description": src.description, "type": "", "creatorName": src.creator_name,
            "urls": [], "creatorEmail": None, "releaseName": src.release, "defaultOfModelId": None,
            "defaultRange": 1, "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
            "showHeadAttribution": False, "showUmap": False, "createdAt": src.created_at,
        }],
        "source": [{
            "id": src.source_id, "modelId": src.model_id, "setName": src.source_set, "creatorId": src.creator_id,
            "hasDashboards": True, "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": None,
            "saelensRelease": None, "saelensSaeId": None, "hfRepoId": src.hf_repo_id, "hfFolderId": None,
            "visibility": "PUBLIC", "defaultOfModelId": None, "hasUmap": False, "hasUmapLogSparsity": False,
            "hasUmapClusters": False, "num_prompts": None, "num_tokens_in_prompt": None, "dataset": src.dataset,
            "notes": "latentdiff crosscoder export", "createdAt": src.created_at,
        }],
    }
    if src.release:
        rows["release"] = [{
            "name": src.release, "description": src.description, "creatorName": src.creator_name,
            "creatorId": src.creator_id, "visibility": "PUBLIC", "isNewUi": False, "featured": False,
            "descriptionShort": src.description, "urls": [], "creatorEmail": None,
            "creatorNameShort": src.creator_name, "defaultSourceSetName": src.source_set,
            "defaultSourceId": src.source_id, "defaultUmapSourceIds": [], "createdAt": src.created_at,
        }]
    return rows


def activation_row(src: NeuronpediaSource, ex: Example) -> dict[str, Any]:
    """One Example window -> an Activation row (export-data.py export_activations' columns)."""
    values = [float(v) for v in ex.activations]
    top = max(range(len(values)), key=values.__getitem__) if values else 0
    return {
        "id": _id(src.model_id, src.source_id, ex.latent, ex.kind, ex.ctx, ex.start),
        "modelId": src.model_id, "layer": src.source_id, "index": str(ex.latent), "creatorId": src.creator_id,
        "dataSource": src.dataset, "dataIndex": str(ex.ctx), "tokens": list(ex.tokens),
        "maxValue": values[top] if values else 0.0, "minValue": min(values, default=0.0), "values": values,
        "maxValueTokenIndex": top, "dfaValues": [], "dfaMaxValue": None, "dfaTargetIndex": None,
        "binContains": None, "binMin": None, "binMax": None,
    }


def feature_row(src: NeuronpediaSource, latent: int, max_act: float, freq: float) -> dict[str, Any]:
    """One latent -> a Neuron row (export-data.py export_features' columns)."""
    return {
        "modelId": src.model_id, "layer": src.source_id, "index": str(latent), "maxActApprox": max_act,
        "creatorId": src.creator_id, "frac_nonzero": freq, "freq_hist_data_bar_heights": [],
        "freq_hist_data_bar_values": [], "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "neuron_alignment_indices": [], "neuron_alignment_l1": [], "neuron_alignment_values": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "decoder_weights_dist": [], "neg_str": [], "neg_values": [], "pos_str": [], "pos_values": [],
        "sourceSetName": src.source_set, "topkCosSimIndices": [], "topkCosSimValues": [], "vector": [],
        "vectorLabel": None, "hookName": None, "vectorDefaultSteerStrength": 10, "hasVector": False,
    }


def _notes(findings: list[Finding]) -> str:
    """The diffing statistics of one latent, per pair, and the label's paragraph."""
    parts = []
    for f in sorted(findings, key=lambda f: f.pair):
        stats = [f"pair={f.pair}", f"side={f.side}", f"delta_norm={f.delta_norm:.3f}"]
        stats += [f"{k}={v:.3f}" for k, v in (("nu_eps", f.nu_eps), ("nu_r", f.nu_r), ("verification",
                                                                                      f.verification))
                  if _finite(v) is not None]
        parts.append(" ".join(stats))
    best = _best(findings)
    text = "; ".join(parts)
    if best is not None and best.label is not None:
        text += f". {best.label.category}: {best.label.description}"
    return text


def _best(findings: list[Finding]) -> Finding | None:
    labelled = [f for f in findings if f.label is not None]
    return max(labelled, key=lambda f: f.verification if f.verification is not None else -1.0, default=None)


def explanation_row(src: NeuronpediaSource, latent: int, findings: list[Finding]) -> dict[str, Any] | None:
    """A labelled latent -> an Explanation row (export_explanations' columns; FK-checked type names left out)."""
    best = _best(findings)
    if best is None or best.label is None:
        return None
    return {
        "id": _id(src.model_id, src.source_id, latent, "explanation"), "modelId": src.model_id,
        "layer": src.source_id, "index": str(latent), "authorId": src.creator_id,
        "description": best.label.name, "notes": _notes(findings),
    }


def export_neuronpedia(
    out: str | Path,
    src: NeuronpediaSource,
    crosscoder: str,
    findings: Sequence[Finding],
    examples: Iterable[Example],
    stats: Sequence[LatentStats],
    batch_size: int = BATCH,
    negatives: bool = False,
) -> Path:
    """Write one crosscoder's latents (those with findings or examples) under out/<model>/<source>/; returns it.

    negatives: also export the windows where a latent never fires (all-zero activations); off by default.
    """
    root = Path(out) / src.model_id / src.source_id
    by_latent: dict[int, list[Finding]] = defaultdict(list)
    for f in findings:
        if f.ref.crosscoder == crosscoder:
            by_latent[f.ref.latent].append(f)
    acts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ex in examples:
        if negatives or ex.kind != "negative":
            acts[ex.latent].append(activation_row(src, ex))
    freq: dict[int, float] = {}
    for s in stats:
        if s.crosscoder == crosscoder:
            freq[s.latent] = max(freq.get(s.latent, 0.0), float(s.freq))
    latents = sorted(set(by_latent) | set(acts))
    for name, rows in metadata_rows(src).items():
        _write_jsonl(root / f"{name}.jsonl", rows, gz=False)
    for b in range(0, len(latents), batch_size):
        chunk, n = latents[b: b + batch_size], b // batch_size
        features = [feature_row(src, j, max((a["maxValue"] for a in acts[j]), default=0.0), freq.get(j, 0.0))
                    for j in chunk]
        _write_jsonl(root / "features" / f"batch-{n}.jsonl.gz", features, gz=True)
        activations = [a for j in chunk for a in acts[j]]
        if activations:
            _write_jsonl(root / "activations" / f"batch-{n}.jsonl.gz", activations, gz=True)
        explanations = [e for j in chunk if (e := explanation_row(src, j, by_latent[j])) is not None]
        if explanations:
            _write_jsonl(root / "explanations" / f"batch-{n}.jsonl.gz", explanations, gz=True)
    return root
