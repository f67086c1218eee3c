"""Pick a judge backend from its spec string.

| spec                              | backend                                      |
|-----------------------------------|----------------------------------------------|
| `embedding` / `embedding:DIR`     | offline MiniLM judge (`embedding_judge.py`)  |
| `vllm:URL@MODEL`, `openai:URL@MODEL` | OpenAI-compatible HTTP (`openai_compat.py`) |
| `transformers:PATH_OR_ID`         | local chat model (`transformers_judge.py`)   |
| `NAME` or `NAME:ARGS`             | entry point NAME in group `latentdiff.judges` |
| `package.module:Class`            | any importable `Judge` subclass              |

Third-party judges are built as `Class(spec, cfg)` and must subclass `Judge`.
"""

from __future__ import annotations

import importlib
import re
from importlib import metadata
from pathlib import Path

from latentdiff.agent.judges.base import Judge, JudgeError
from latentdiff.config import JudgeConfig

ENTRY_POINT_GROUP = "latentdiff.judges"
_CLASS_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _checked(obj: object, spec: str, where: str) -> type[Judge]:
    if not (isinstance(obj, type) and issubclass(obj, Judge)):
        raise JudgeError(f"judge spec {spec!r}: {where} is not a subclass of latentdiff Judge", "config")
    return obj


def _import_class(spec: str) -> type[Judge]:
    module_name, _, cls_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise JudgeError(
            f"judge spec {spec!r}: cannot import module {module_name!r}: {err}", "config"
        ) from None
    if not hasattr(module, cls_name):
        raise JudgeError(f"judge spec {spec!r}: module {module_name!r} has no {cls_name!r}", "config")
    return _checked(getattr(module, cls_name), spec, f"{module_name}.{cls_name}")


def make_judge(
    spec: str,
    cfg: JudgeConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    vectors: str | Path | None = None,
) -> Judge:
    """Build the judge named by `spec` (see the module table); raise JudgeError for a bad spec.

    `cache_dir` enables the HTTP judges' response cache when `cfg.cache` is true; `vectors` is the run's
    sentence-vector cache (RunDir.vectors), which the embedding judge reads and extends.
    """
    cfg = cfg if cfg is not None else JudgeConfig(spec=spec)
    spec = spec.strip()
    prefix = spec.partition(":")[0]
    if prefix == "embedding":
        from latentdiff.agent.judges.embedding_judge import EmbeddingJudge

        return EmbeddingJudge(spec, cfg, vectors=vectors)
    if prefix in ("vllm", "openai"):
        from latentdiff.agent.judges.openai_compat import OpenAICompatJudge

        return OpenAICompatJudge(spec, cfg, cache_dir=cache_dir)
    if prefix == "transformers":
        from latentdiff.agent.judges.transformers_judge import TransformersJudge

        return TransformersJudge(spec, cfg)
    eps = _entry_points()
    if prefix in eps:
        try:
            obj = eps[prefix].load()
        except Exception as err:  # a broken plugin must not crash with a traceback
            raise JudgeError(f"judge plugin {prefix!r} failed to load: {err}", "config") from None
        return _checked(obj, spec, f"entry point {prefix!r}")(spec, cfg)
    if _CLASS_SPEC.match(spec):
        return _import_class(spec)(spec, cfg)
    known = ["embedding", "vllm:URL@MODEL", "openai:URL@MODEL", "transformers:PATH", "module:Class", *eps]
    raise JudgeError(f"unknown judge spec {spec!r}; expected one of {', '.join(known)}", "config")
