"""Neuronpedia export (agent/export_neuronpedia.py) against the fields Neuronpedia's importer reads.

Field sets copied from hijohnnylin/neuronpedia:
- utils/neuronpedia-utils/neuronpedia_utils/db_models/{model,source_set,source,source_release}.py: the rows
  apps/webapp/app/api/admin/import/route.ts hands to prisma.*.create (so no other keys are allowed);
- apps/webapp/prisma/schema.prisma: the columns without a database default of Neuron, Activation, Explanation,
  which apps/webapp/lib/db/import.ts importJsonlString takes from each file's first line;
- utils/neuronpedia-utils/neuronpedia_utils/db_models/{feature,activation,explanation}.py: the table fields.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from latentdiff.agent.export_neuronpedia import NeuronpediaSource, export_neuronpedia
from latentdiff.core.examples import Example
from latentdiff.core.select import LatentStats
from latentdiff.records import Finding, LatentLabel, LatentRef

MODEL = {"id", "instruct", "creatorId", "displayNameShort", "displayName", "tlensId", "dimension", "visibility",
         "defaultSourceSetName", "defaultSourceId", "inferenceEnabled", "layers", "neuronsPerLayer", "createdAt",
         "owner", "updatedAt", "website"}
SOURCE_SET = {"modelId", "name", "creatorId", "hasDashboards", "visibility", "description", "type", "creatorName",
              "urls", "creatorEmail", "releaseName", "defaultOfModelId", "defaultRange", "defaultShowBreaks",
              "showDfa", "showCorrelated", "showHeadAttribution", "showUmap", "createdAt"}
SOURCE = {"id", "modelId", "setName", "creatorId", "hasDashboards", "inferenceEnabled", "inferenceHosts",
          "saelensConfig", "saelensRelease", "saelensSaeId", "hfRepoId", "hfFolderId", "visibility",
          "defaultOfModelId", "hasUmap", "hasUmapLogSparsity", "hasUmapClusters", "num_prompts",
          "num_tokens_in_prompt", "dataset", "notes", "createdAt"}
RELEASE = {"name", "description", "creatorName", "creatorId", "visibility", "isNewUi", "featured",
           "descriptionShort", "urls", "creatorEmail", "creatorNameShort", "defaultSourceSetName", "defaultSourceId",
           "defaultUmapSourceIds", "createdAt"}
NEURON_COLUMNS = {"modelId", "layer", "index", "sourceSetName", "creatorId", "createdAt", "maxActApprox", "hasVector",
                  "vector", "vectorLabel", "vectorDefaultSteerStrength", "hookName", "topkCosSimIndices",
                  "topkCosSimValues", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                  "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
                  "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1", "neg_str",
                  "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
                  "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
                  "decoder_weights_dist", "umap_cluster", "umap_log_feature_sparsity", "umap_x", "umap_y"}
NEURON_REQUIRED = {"modelId", "layer", "index"}
ACTIVATION_COLUMNS = {"id", "tokens", "dataIndex", "index", "layer", "modelId", "dataSource", "maxValue",
                      "maxValueTokenIndex", "minValue", "values", "dfaValues", "dfaTargetIndex", "dfaMaxValue",
                      "zQIndices", "zKIndices", "zValues", "creatorId", "createdAt", "lossValues",
                      "logitContributions", "binMin", "binMax", "binContains", "qualifyingTokenIndex"}
ACTIVATION_REQUIRED = {"id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue",
                       "values", "creatorId"}
EXPLANATION_COLUMNS = {"id", "modelId", "layer", "index", "embedding", "description", "authorId",
                       "triggeredByUserId", "notes", "scoreV1", "scoreV2", "umap_x", "umap_y", "umap_cluster",
                       "umap_log_feature_sparsity", "typeName", "explanationModelName", "createdAt", "updatedAt"}
EXPLANATION_REQUIRED = {"id", "modelId", "layer", "index", "description", "authorId"}
BATCH_NAME = re.compile(r"^batch-(\d+)\.jsonl\.gz$")  # import/route.ts explanationBatchStart


def _records():
    label = LatentLabel(name="French cooking", description="Recipes and cooking words in French.",
                        category="language", confidence=0.8)
    findings = [
        Finding(ref=LatentRef(crosscoder="joint", latent=3), pair="chat", side="finetuned", delta_norm=0.93,
                nu_eps=0.1, nu_r=0.2, freq=0.01, label=label, verification=0.85),
        Finding(ref=LatentRef(crosscoder="joint", latent=3), pair="chat2", side="shared", delta_norm=0.55,
                freq=0.01, label=label, verification=0.6),
        Finding(ref=LatentRef(crosscoder="joint", latent=7), pair="chat", side="base", delta_norm=0.05,
                failure="judge down"),
        Finding(ref=LatentRef(crosscoder="joint", latent=1500), pair="chat", side="finetuned", delta_norm=0.8,
                label=label.model_copy(update={"name": "Emoji"}), verification=0.7),
        Finding(ref=LatentRef(crosscoder="other", latent=3), pair="chat", side="base", delta_norm=0.1, label=label),
    ]
    ex = dict(ctx=4, start=0, tokens=["Le", " pain", " est", " bon"], doc_id=2)
    examples = [
        Example(latent=3, kind="top", activations=[0.0, 2.5, 1.0, 0.0], max_act=2.5, **ex),
        Example(latent=3, kind="quantile", quantile=0, activations=[0.1, 0.0, 0.0, 0.3], max_act=0.3,
                **{**ex, "ctx": 9}),
        Example(latent=3, kind="negative", activations=[0.0] * 4, max_act=0.0, **{**ex, "ctx": 11}),
        Example(latent=7, kind="top", activations=[1.0, 0.0, 0.0, 0.0], max_act=1.0, **ex),
    ]
    row = dict(pair="chat", side="finetuned", delta_norm=0.9, cosine=0.1, norm_base=0.1, norm_ft=1.0, nu_eps=0.1,
               nu_r=0.1, nu_eps_base=1.0, nu_r_base=1.0, mean_act=1.0, contrib_base=0.0, contrib_ft=0.1)
    stats = [LatentStats(latent=3, freq=0.02, **row), LatentStats(latent=7, freq=0.005, **row),
             LatentStats(latent=3, crosscoder="other", freq=0.5, **row)]
    return findings, examples, stats


def _read(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _table(root: Path, folder: str) -> list[dict]:
    files = sorted((root / folder).iterdir())
    assert files and all(BATCH_NAME.match(p.name) for p in files), files
    rows = []
    for p in files:
        part = _read(p)
        assert len({frozenset(r) for r in part}) == 1, p  # importJsonlString takes the columns from line 1
        rows += part
    return rows


def test_export_matches_the_importer_fields(tmp_path):
    findings, examples, stats = _records()
    src = NeuronpediaSource(model_id="gemma-2-2b-it", layer=13, source_set="latentdiff-joint",
                            creator_id="clkht01d40000jv08hvalcvly", dataset="lmsys", release="latentdiff-demo")
    root = export_neuronpedia(tmp_path, src, "joint", findings, examples, stats, batch_size=2)
    assert root == tmp_path / "gemma-2-2b-it" / "13-latentdiff-joint"  # <modelId>/<sourceId> as the route reads
    for name, fields in (("model", MODEL), ("sourceset", SOURCE_SET), ("source", SOURCE), ("release", RELEASE)):
        (row,) = _read(root / f"{name}.jsonl")
        assert set(row) <= fields, (name, set(row) - fields)
    (source,) = _read(root / "source.jsonl")
    assert source["id"] == "13-latentdiff-joint" and source["setName"] == "latentdiff-joint"

    features = _table(root, "features")
    assert [f["index"] for f in features] == ["3", "7", "1500"]  # latents with findings or examples, as strings
    assert sorted(p.name for p in (root / "features").iterdir()) == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]
    for f in features:
        assert NEURON_REQUIRED <= set(f) <= NEURON_COLUMNS
        assert (f["modelId"], f["layer"], f["sourceSetName"]) == ("gemma-2-2b-it", "13-latentdiff-joint",
                                                                  "latentdiff-joint")
    assert features[0]["maxActApprox"] == 2.5 and features[0]["frac_nonzero"] == 0.02

    acts = _table(root, "activations")
    assert len(acts) == 3  # the negative window is left out
    keys = {(f["modelId"], f["layer"], f["index"]) for f in features}
    for a in acts:
        assert ACTIVATION_REQUIRED <= set(a) <= ACTIVATION_COLUMNS
        assert (a["modelId"], a["layer"], a["index"]) in keys  # the Neuron foreign key
        assert len(a["tokens"]) == len(a["values"]) and isinstance(a["index"], str)
        assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] and a["minValue"] == min(a["values"])
        assert a["creatorId"] == src.creator_id
    top = next(a for a in acts if a["maxValue"] == 2.5)
    assert top["maxValueTokenIndex"] == 1 and top["tokens"] == ["Le", " pain", " est", " bon"]
    assert len({a["id"] for a in acts}) == 3

    expl = _table(root, "explanations")
    assert [(e["index"], e["description"]) for e in expl] == [("3", "French cooking"), ("1500", "Emoji")]
    for e in expl:
        assert EXPLANATION_REQUIRED <= set(e) <= EXPLANATION_COLUMNS
        assert (e["modelId"], e["layer"], e["index"]) in keys and e["authorId"] == src.creator_id
    assert "pair=chat side=finetuned delta_norm=0.930 nu_eps=0.100 nu_r=0.200 verification=0.850" in expl[0]["notes"]
    assert "pair=chat2 side=shared" in expl[0]["notes"]

    again = export_neuronpedia(tmp_path / "again", src, "joint", findings, examples, stats, batch_size=2)
    assert [a["id"] for a in _table(again, "activations")] == [a["id"] for a in acts]  # stable ids


def test_export_without_release_or_labels(tmp_path):
    findings, examples, stats = _records()
    src = NeuronpediaSource(model_id="m", layer=0, source_set="s", creator_id="u")
    root = export_neuronpedia(tmp_path, src, "joint", [f for f in findings if f.label is None], examples[3:], stats)
    assert not (root / "release.jsonl").exists() and not (root / "explanations").exists()
    assert [f["index"] for f in _table(root, "features")] == ["7"]
    assert len(_table(root, "activations")) == 1
