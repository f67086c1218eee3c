"""A judge behind an OpenAI-compatible chat API: `vllm:URL@MODEL` or `openai:URL@MODEL`.

Several replicas of the same model: `vllm:URL1,URL2,...@MODEL`. Each request goes to the
least-loaded live endpoint (fewest requests in flight; ties in round-robin order), or plain
round-robin with `judge.balance: round_robin`. An endpoint that fails (unreachable, timeout, 5xx,
429) is set aside for a backoff that grows with its consecutive failures, so the retry of that
request lands on another endpoint; calls and failures are counted per endpoint.

JSON-schema structured output (`response_format=json_schema`, enforced by vLLM's grammar
backend), a semaphore of `cfg.max_concurrency` requests, exponential backoff over `cfg.retries`
retries on connection errors, timeouts, 5xx/429 and invalid answers (an HTTP 200 whose body is
junk or cut off included), token accounting from `usage`, and an optional on-disk cache of
validated answers. After the last attempt it raises `JudgeError` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
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
try:  # openai >= 3 talks through httpx2; errors that escape it while reading a body must be retried too
    import httpx2

    HTTP_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # pragma: no cover - older openai
    HTTP_ERRORS = (httpx.HTTPError,)
PREFIXES = ("vllm", "openai")


def parse_http_spec(spec: str) -> tuple[str, str, str]:
    """'vllm:http://host:port/v1@MODEL' -> ('vllm', 'http://host:port/v1', 'MODEL').

    The URL part may list several endpoints separated by commas (returned joined by ',')."""
    backend, sep, rest = spec.partition(":")
    url, at, model = rest.rpartition("@")
    if backend not in PREFIXES or not sep or not at or not url or not model:
        raise JudgeError(f"judge spec {spec!r} must look like {backend or 'vllm'}:URL[,URL...]@MODEL", "config")
    urls = [u.strip().rstrip("/") for u in url.split(",")]
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise JudgeError(f"judge spec {spec!r}: URL {u!r} must start with http:// or https://", "config")
    if len(set(urls)) != len(urls):
        raise JudgeError(f"judge spec {spec!r}: an endpoint is listed twice", "config")
    return backend, ",".join(urls), model


@dataclass
class Endpoint:
    """One server of the pool, with its load and health."""

    url: str
    inflight: int = 0
    calls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    client: openai.AsyncOpenAI | None = field(default=None, repr=False)


class EndpointPool:
    """Pick an endpoint per request: least-loaded (default) or round-robin, skipping ones set aside."""

    def __init__(self, urls: list[str], policy: str = "least_loaded", max_down_s: float = 30.0) -> None:
        self.endpoints = [Endpoint(u) for u in urls]
        self.policy = policy
        self.max_down_s = max_down_s
        self._next = 0

    def pick(self) -> Endpoint:
        """The endpoint for the next request (all set aside -> the one back soonest)."""
        now = time.monotonic()
        n = len(self.endpoints)
        order = [self.endpoints[(self._next + i) % n] for i in range(n)]  # round-robin order from here
        self._next = (self._next + 1) % n
        live = [e for e in order if e.down_until <= now]
        if not live:
            return min(order, key=lambda e: e.down_until)
        return live[0] if self.policy == "round_robin" else min(live, key=lambda e: e.inflight)

    def failed(self, ep: Endpoint) -> None:
        """Set a failing endpoint aside: 1 s, 2 s, 4 s, ... up to max_down_s."""
        ep.failures += 1
        ep.consecutive_failures += 1
        if len(self.endpoints) > 1:
            ep.down_until = time.monotonic() + min(self.max_down_s, 2.0 ** (ep.consecutive_failures - 1))

    @staticmethod
    def succeeded(ep: Endpoint) -> None:
        """A good answer clears the endpoint's failure streak."""
        ep.consecutive_failures = 0
        ep.down_until = 0.0


def strip_lengths(node: Any) -> Any:
    """Drop string-length keywords that OpenAI's strict mode does not accept."""
    if isinstance(node, dict):
        return {k: strip_lengths(v) for k, v in node.items() if k not in ("minLength", "maxLength")}
    if isinstance(node, list):
        return [strip_lengths(v) for v in node]
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
        if "without sending complete message body" in text:
            return "connection closed in the middle of the answer"
        if "disconnected without sending a response" in text:
            return "server closed the connection without answering"
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
        self.pool = EndpointPool(self.base_url.split(","), self.cfg.balance)
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache = ResponseCache(cache_dir) if (self.cfg.cache and cache_dir is not None) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ public

    async def label(self, request: LabelRequest) -> LatentLabel:
        messages = label_messages(request.top, request.quantile, request.negative, request.taxonomy,
                                  request.contrast, request.hard_negatives)
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
        for ep in self.pool.endpoints:
            if ep.client is not None:
                await ep.client.close()
                ep.client = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    # ------------------------------------------------------------------ internals

    def _bind_loop(self) -> asyncio.Semaphore:
        """Per-endpoint clients and the semaphore for the running loop (recreated if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._sem is None:
            self._loop = loop
            for ep in self.pool.endpoints:
                ep.client = openai.AsyncOpenAI(
                    base_url=ep.url, api_key=self.api_key, timeout=self.cfg.timeout_s, max_retries=0
                )
            self._sem = asyncio.Semaphore(self.cfg.max_concurrency)
        return self._sem

    def endpoint_stats(self) -> dict[str, dict[str, int]]:
        """Calls and failures per endpoint."""
        return {e.url: {"calls": e.calls, "failures": e.failures} for e in self.pool.endpoints}

    async def _ask(
        self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], parse: Callable[[dict], T]
    ) -> T:
        if self.backend == "openai":
            schema = strip_lengths(schema)
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

    def _at(self, ep: Endpoint) -> str:
        """'(URL) ' prefix for failure details when there are several endpoints."""
        return f"({ep.url}) " if len(self.pool.endpoints) > 1 else ""

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
        sem = self._bind_loop()
        json_schema = {"name": name, "schema": schema, "strict": True}
        response_format = {"type": "json_schema", "json_schema": json_schema}
        async with sem:
            ep = self.pool.pick()
            assert ep.client is not None
            ep.inflight += 1
            ep.calls += 1
            self.stats.calls += 1
            t0 = time.perf_counter()
            try:
                # the client's timeout bounds each read, not the whole answer (a server that trickles
                # its body would hold the request forever): the deadline bounds the request as a whole
                resp = await asyncio.wait_for(ep.client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=self.cfg.temperature,
                    max_tokens=self.cfg.max_tokens,
                    response_format=response_format,  # type: ignore[arg-type]
                ), timeout=self.cfg.timeout_s)
            except (openai.APITimeoutError, TimeoutError):
                self.pool.failed(ep)
                raise _Attempt("timeout", f"{self._at(ep)}no answer within {self.cfg.timeout_s:g}s") from None
            except openai.APIConnectionError as err:
                self.pool.failed(ep)
                raise _Attempt("unreachable", f"{self._at(ep)}{_connection_detail(err)}") from None
            except openai.APIStatusError as err:
                if err.status_code >= 500 or err.status_code == 429:
                    self.pool.failed(ep)
                    raise _Attempt("server", f"{self._at(ep)}HTTP {err.status_code}") from None
                msg = _status_message(err)
                raise JudgeError(
                    f"judge server at {ep.url} rejected the request (HTTP {err.status_code}): {msg}",
                    "rejected",
                ) from None
            except openai.APIResponseValidationError as err:
                raise _Attempt("invalid", f"malformed response: {err.message}") from None
            except (ValueError, *HTTP_ERRORS) as err:  # HTTP 200 with a body that is not JSON (junk, cut off)
                self.pool.failed(ep)
                detail = " ".join(str(err).split())[:120] or type(err).__name__
                raise _Attempt("invalid", f"{self._at(ep)}malformed response (not JSON: {detail})") from None
            finally:
                ep.inflight -= 1
                self.stats.latency_s += time.perf_counter() - t0
        try:
            usage = getattr(resp, "usage", None)
            if usage is not None:
                self.stats.prompt_tokens += int(usage.prompt_tokens or 0)
                self.stats.completion_tokens += int(usage.completion_tokens or 0)
            choice = resp.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError, ValueError):
            self.pool.failed(ep)  # the server's fault (not the model's): another endpoint may do better
            raise _Attempt("invalid", f"{self._at(ep)}malformed response (no choices[0].message)") from None
        self.pool.succeeded(ep)
        if not isinstance(text, str):
            raise _Attempt("invalid", "malformed response from server (choices[0].message.content is not text)")
        if choice.finish_reason == "length":
            raise _Attempt("invalid", f"answer cut off at max_tokens={self.cfg.max_tokens}")
        return text
