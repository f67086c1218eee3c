"""A judge behind an OpenAI-compatible chat API: `vllm:URL@MODEL` or `openai:URL@MODEL`.

JSON-schema structured output (`response_format=json_schema`, enforced by vLLM's grammar
backend), a semaphore of `cfg.max_concurrency` requests, exponential backoff over `cfg.retries`
retries on connection errors, timeouts, 5xx/429 and invalid answers, token accounting from
`usage`, and an optional on-disk cache of validated answers. After the last attempt it raises
`JudgeError` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai

from latentdiff.agent.judges.base import FailureKind, Judge, JudgeError, LabelRequest
from latentdiff.agent.judges.cache import ResponseCache, cache_key
from latentdiff.agent.judges.prompting import (
    AnswerError,
    detect_messages,
    detect_schema,
    label_messages,
    label_schema,
    load_json_object,
    parse_detection,
    parse_label,
)
from latentdiff.config import JudgeConfig
from latentdiff.records import ExampleText, LatentLabel

log = logging.getLogger(__name__)
T = TypeVar("T")
PREFIXES = ("vllm", "openai")


def parse_http_spec(spec: str) -> tuple[str, str, str]:
    """'vllm:http://host:port/v1@MODEL' -> ('vllm', 'http://host:port/v1', 'MODEL')."""
    backend, sep, rest = spec.partition(":")
    url, at, model = rest.rpartition("@")
    if backend not in PREFIXES or not sep or not at or not url or not model:
        raise JudgeError(f"judge spec {spec!r} must look like {backend or 'vllm'}:URL@MODEL", "config")
    if not url.startswith(("http://", "https://")):
        raise JudgeError(f"judge spec {spec!r}: URL must start with http:// or https://", "config")
    return backend, url.rstrip("/"), model


def _strip_lengths(node: Any) -> Any:
    """Drop string-length keywords that OpenAI's strict mode does not accept."""
    if isinstance(node, dict):
        return {k: _strip_lengths(v) for k, v in node.items() if k not in ("minLength", "maxLength")}
    if isinstance(node, list):
        return [_strip_lengths(v) for v in node]
    return node


class _Attempt(Exception):
    """One failed attempt that may be retried: kind + one-line detail."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.detail = detail


def _connection_detail(err: BaseException) -> str:
    cause: BaseException | None = err
    while cause is not None:
        text = str(cause).lower()
        if "refused" in text or isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if "name or service not known" in text or "nodename nor servname" in text:
            return "unknown host"
        cause = cause.__cause__ or cause.__context__
    return "connection error"


def _status_message(err: openai.APIStatusError) -> str:
    """The server's own error message (vLLM: {"error": {"message": ...}} or {"message": ...})."""
    body: Any = err.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    msg = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(msg or err.message).split())[:300]


class OpenAICompatJudge(Judge):
    """Chat-completions judge for vLLM and other OpenAI-compatible servers."""

    def __init__(
        self,
        spec: str,
        cfg: JudgeConfig | None = None,
        *,
        cache_dir: str | Path | None = None,
        api_key: str | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        super().__init__(spec, cfg)
        self.backend, self.base_url, self.model = parse_http_spec(spec)
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache = ResponseCache(cache_dir) if (self.cfg.cache and cache_dir is not None) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ public

    async def label(self, request: LabelRequest) -> LatentLabel:
        messages = label_messages(request.top, request.quantile, request.negative, request.taxonomy)
        schema = label_schema(request.taxonomy, budget_chars=2 * self.cfg.max_tokens)
        return await self._ask(
            messages, "latent_label", schema, lambda d: parse_label(d, request.taxonomy, self.spec)
        )

    async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        if not examples:
            return []
        n = len(examples)
        messages = detect_messages(label, examples)
        return await self._ask(messages, "detection", detect_schema(n), lambda d: parse_detection(d, n))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    # ------------------------------------------------------------------ internals

    def _bind_loop(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """Client and semaphore for the running loop (recreated if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._sem is None:
            self._loop = loop
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.cfg.timeout_s, max_retries=0
            )
            self._sem = asyncio.Semaphore(self.cfg.max_concurrency)
        return self._client, self._sem

    async def _ask(
        self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], parse: Callable[[dict], T]
    ) -> T:
        if self.backend == "openai":
            schema = _strip_lengths(schema)
        key = None
        if self.cache is not None:
            key = cache_key(
                model=self.model,
                messages=messages,
                schema=schema,
                temperature=self.cfg.temperature,
                max_tokens=self.cfg.max_tokens,
            )
            hit = self.cache.get(key)
            if hit is not None:
                try:
                    result = parse(load_json_object(hit))
                    self.stats.cache_hits += 1
                    return result
                except AnswerError:  # e.g. taxonomy changed since: ask again
                    pass
        attempts = self.cfg.retries + 1
        last = _Attempt("other", "no attempt made")
        for i in range(attempts):
            if i:
                self.stats.retries += 1
                await asyncio.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (i - 1)))
            try:
                text = await self._complete(messages, name, schema)
                result = parse(load_json_object(text))
            except _Attempt as att:
                last = att
                log.debug("judge %s attempt %d/%d failed: %s", self.spec, i + 1, attempts, att.detail)
                continue
            except AnswerError as err:
                last = _Attempt("invalid", str(err))
                log.debug("judge %s attempt %d/%d invalid: %s", self.spec, i + 1, attempts, err)
                continue
            except JudgeError:
                self.stats.failures += 1
                raise
            if self.cache is not None and key is not None:
                self.cache.put(key, self.model, text)
            return result
        self.stats.failures += 1
        raise JudgeError(self._reason(last, attempts), last.kind)

    def _reason(self, last: _Attempt, attempts: int) -> str:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if last.kind == "unreachable":
            return f"judge server unreachable at {self.base_url}: {last.detail} {tries}"
        if last.kind == "timeout":
            return f"judge server timeout at {self.base_url}: {last.detail} {tries}"
        if last.kind == "server":
            return f"judge server error at {self.base_url}: {last.detail} {tries}"
        return f"invalid answer {tries}: {last.detail}"

    async def _complete(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any]) -> str:
        client, sem = self._bind_loop()
        json_schema = {"name": name, "schema": schema, "strict": True}
        response_format = {"type": "json_schema", "json_schema": json_schema}
        async with sem:
            self.stats.calls += 1
            t0 = time.perf_counter()
            try:
                resp = await client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=self.cfg.temperature,
                    max_tokens=self.cfg.max_tokens,
                    response_format=response_format,  # type: ignore[arg-type]
                )
            except openai.APITimeoutError:
                raise _Attempt("timeout", f"no answer within {self.cfg.timeout_s:g}s") from None
            except openai.APIConnectionError as err:
                raise _Attempt("unreachable", _connection_detail(err)) from None
            except openai.APIStatusError as err:
                if err.status_code >= 500 or err.status_code == 429:
                    raise _Attempt("server", f"HTTP {err.status_code}") from None
                msg = _status_message(err)
                raise JudgeError(
                    f"judge server at {self.base_url} rejected the request (HTTP {err.status_code}): {msg}",
                    "rejected",
                ) from None
            except openai.APIResponseValidationError as err:
                raise _Attempt("invalid", f"malformed response: {err.message}") from None
            finally:
                self.stats.latency_s += time.perf_counter() - t0
        try:
            usage = getattr(resp, "usage", None)
            if usage is not None:
                self.stats.prompt_tokens += int(usage.prompt_tokens or 0)
                self.stats.completion_tokens += int(usage.completion_tokens or 0)
            choice = resp.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError, ValueError):
            raise _Attempt("invalid", "malformed response from server (no choices[0].message)") from None
        if choice.finish_reason == "length":
            raise _Attempt("invalid", f"answer cut off at max_tokens={self.cfg.max_tokens}")
        return text
