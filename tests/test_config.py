"""Config tree: defaults, YAML loading, overrides, validation errors as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from latentdiff.config import RunConfig, build_config, dump_config, load_config, parse_overrides
from latentdiff.errors import ConfigError


def test_defaults_validate_and_every_field_is_documented() -> None:
    cfg = RunConfig()
    assert cfg.base.name == "base" and [m.name for m in cfg.finetunes] == ["it", "shift"]

    def walk(model: type) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(RunConfig)


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = build_config({"crosscoder": {"k": 16, "dict_size": 512}, "headline": ["shift", "it"]})
    path = tmp_path / "config.yaml"
    dump_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.headline == ("shift", "it")


def test_overrides_nested_and_list_index(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "crosscoder": {"k": 8}}))
    cfg = load_config(path, ["crosscoder.k=12", "models.1.path=/tmp/m", "judge.spec=embedding"])
    assert cfg.crosscoder.k == 12
    assert cfg.models[1].path == "/tmp/m"
    assert cfg.name == "x"
    assert parse_overrides(["a.b.c=1", "a.b.d=[1, 2]"]) == {"a": {"b": {"c": 1, "d": [1, 2]}}}


@pytest.mark.parametrize(
    ("data", "overrides", "fragment"),
    [
        ({"crosscoder": {"k": -1}}, [], "crosscoder.k: Input should be greater than 0 (got -1)"),
        ({"crosscoder": {"k": 4096, "dict_size": 1024}}, [], "crosscoder: k (4096) must be smaller"),
        ({"crosscoder": {"arch": "topk"}}, [], "crosscoder.arch"),
        ({"crosscoder": {"kk": 3}}, [], "crosscoder.kk: Extra inputs are not permitted"),
        ({"headline": ["shift", "nope"]}, [], "headline: needs two different fine-tune names"),
        ({"models": [{"name": "a", "path": "p", "role": "finetune"}]}, [], "exactly one model"),
        ({"selection": {"base_delta": 0.4, "finetuned_delta": 0.5, "shared_band": 0.1}}, [], None),
        ({}, ["crosscoder.steps=zero"], "crosscoder.steps"),
        ({}, ["nokey"], "must look like key.sub=value"),
        ({"data": {"source": "files"}}, [], "data: source='files' needs at least one entry"),
    ],
)
def test_malformed_configs_give_one_line(data: dict, overrides: list[str], fragment: str | None) -> None:
    if fragment is None:
        build_config(data, overrides)  # valid edge case
        return
    with pytest.raises(ConfigError) as info:
        build_config(data, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message, message


def test_bad_yaml_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncrosscoder:\n  k: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:") and "line" in str(info.value)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_section_hash_tracks_only_named_sections() -> None:
    a = RunConfig()
    b = build_config({"judge": {"spec": "vllm:http://x/v1@m"}})
    c = build_config({"crosscoder": {"k": 16}})
    assert a.section_hash("crosscoder") == b.section_hash("crosscoder")
    assert a.section_hash("crosscoder") != c.section_hash("crosscoder")


def test_benchmark_demo_config_is_the_demo() -> None:
    """benchmarks/configs/demo.yaml (rerun with overrides by the benchmarks) stays the demo's settings."""
    from latentdiff.config import load_config
    from latentdiff.run import demo_config

    root = Path(__file__).resolve().parent.parent
    a = load_config(root / "benchmarks" / "configs" / "demo.yaml")
    assert a.model_dump(exclude={"run_dir"}) == demo_config(Path("x")).model_dump(exclude={"run_dir"})
    assert load_config(root / "benchmarks" / "configs" / "null_pair.yaml").headline == ("null2", "null")


@pytest.mark.parametrize(("override", "key"), [
    ("crosscoder.lr=.inf", "crosscoder.lr"),
    ("judge.timeout_s=.inf", "judge.timeout_s"),
    ("judge.timeout_s=.nan", "judge.timeout_s"),
    ("crosscoder.grad_clip=-.inf", "crosscoder.grad_clip"),
    ("report.alpha=.nan", "report.alpha"),
    ("name=../../etc", "name"),
    ("name=a/b", "name"),
    ("name=a\\b", "name"),
    ("name=..", "name"),
    ("name=.", "name"),
    ("harvest.device=banana", "harvest.device"),
    ("harvest.device=cuda:x", "harvest.device"),
])
def test_infinite_floats_path_like_names_and_bad_devices_are_refused(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, [override])
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)


def test_cuda_device_that_does_not_exist_is_one_line() -> None:
    import torch

    from latentdiff.core.models import resolve_device

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=r"harvest\.device=cuda:\d+: no"):
        resolve_device(f"cuda:{n}")
    assert build_config({}, ["harvest.device=cuda:3"]).harvest.device == "cuda:3"  # checked at harvest time


def test_non_utf8_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text") as info:
        load_config(path)
    assert "\n" not in str(info.value)
