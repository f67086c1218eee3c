"""A small OpenAI-compatible judge server for fault-injection tests: real HTTP on 127.0.0.1.

    GET  /v1/models            the one served model
    POST /v1/chat/completions  latentdiff's label and detection requests (told apart by
                               `response_format.json_schema.name`: 'latent_label' / 'detection')
    POST /control              {"fault": ACTION, "first": N, "every": K, "kind": KIND} sets the policy
                               ({"fault": "valid"} clears it); {"down_s": S} goes down for S seconds

A valid answer obeys the request's JSON schema: a label named `latent-<fp>`, where `<fp>` is a hash of
the label prompt (one per latent and round), and detection answers of exactly the asked length. A
detection prompt carries the label's name, so both kinds of request are counted per latent `<fp>`.

Faults (`ACTIONS`), each one of the ways a real judge server or the network misbehaves:
    junk      HTTP 200 whose body is not JSON (a proxy's HTML error page)
    envelope  HTTP 200, JSON that is not a chat completion (an error object, no `choices`)
    empty     HTTP 200, a completion with no choices
    prose     HTTP 200, a well-formed completion whose content is prose, not JSON
    schema    HTTP 200, JSON content that fails the schema (unknown category / wrong answer count)
    500       HTTP 500 with an OpenAI-style error body
    slow      a valid answer after `slow_s` seconds (set it beyond the client's timeout)
    slowbody  the headers at once, the (valid) body after `slow_s` seconds
    stall     the headers and half the body at once, then nothing for `slow_s` seconds, then a hang-up
    trickle   the (valid) body a few bytes at a time over `slow_s` seconds: no single read waits long
    truncated HTTP 200 whose body is cut in half (Content-Length of the cut body)
    length    HTTP 200, content cut in half with finish_reason='length'
    hangup    the headers promise the whole body, half of it is sent, the connection is closed
    drop      the connection is closed without an answer
    down      like drop, and the server goes down for `down_s` seconds (then comes back by itself)
Going down (`down()` / `down_for(s)` / {"down_s": S}) closes the listening socket (connection refused);
`up()` listens on the same port again, so a run's judge spec stays valid across the outage.

Run on its own for manual probing: `python -m tests.judge_server --port 8099 [--fault junk --every 3]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

ACTIONS = ("valid", "junk", "envelope", "empty", "prose", "schema", "500", "slow", "slowbody", "stall", "trickle",
           "truncated", "length", "hangup", "drop", "down")
KINDS = ("latent_label", "detection")
_FP_RE = re.compile(r"latent-([0-9a-f]{8})")


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it, and what it answered."""

    kind: str  # 'latent_label' | 'detection' | other schema names
    latent: str  # the latent's fingerprint (the label prompt's hash; '?' when unknown)
    prompt: str  # hash of the whole user message (one per label prompt or detection batch)
    n: int  # requests for this prompt before this one
    i: int  # requests (of any prompt) before this one
    action: str = "valid"
    text: str = field(default="", repr=False)  # the user message


Policy = Callable[[Seen], str]


def always(action: str) -> Policy:
    """Every request gets `action`."""
    return lambda seen: action


def first(action: str, n: int = 1, kind: str | None = None) -> Policy:
    """The first `n` requests of each prompt (of `kind`, or every kind) get `action`, later ones are valid."""
    return lambda seen: action if seen.n < n and kind in (None, seen.kind) else "valid"


def every(action: str, k: int, kind: str | None = None) -> Policy:
    """Every `k`-th request of each prompt (the 1st, the k+1-th, ...) of `kind` gets `action`."""
    return lambda seen: action if seen.n % k == 0 and kind in (None, seen.kind) else "valid"


def nth(action: str, k: int) -> Policy:
    """Every `k`-th request the server gets (the 1st, the k+1-th, ...), whatever its prompt."""
    return lambda seen: action if seen.i % k == 0 else "valid"


def latent_fingerprint(kind: str, user: str) -> str:
    """The latent a request is about: the label prompt's hash, or the one named in a detection prompt."""
    if kind == "latent_label":
        return hashlib.sha256(user.encode()).hexdigest()[:8]
    m = _FP_RE.search(user)
    return m.group(1) if m else "?"


def completion(model: str, content: str, finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat.completion object carrying `content`."""
    return {
        "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def valid_content(kind: str, latent: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An answer that satisfies `schema` (label or detection)."""
    if kind == "detection":
        n = schema["properties"]["answers"]["minItems"]
        return {"answers": [i % 2 for i in range(n)]}
    return {"name": f"latent-{latent}", "description": "Fires on the planted tokens.",
            "category": schema["properties"]["category"]["enum"][0], "subcategory": None,
            "confidence": 0.8, "evidence": ["token"]}


def schema_violation(kind: str, latent: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Well-formed JSON that fails `schema`."""
    content = valid_content(kind, latent, schema)
    if kind == "detection":
        content["answers"].append(1)  # one answer too many
    else:
        content["category"] = "not-a-category"
    return content


class JudgeServer:
    """The server (a thread per request) with a policy, a request log and an on/off switch."""

    def __init__(self, policy: Policy | None = None, *, port: int = 0, model: str = "fault-judge",
                 slow_s: float = 3.0, down_s: float = 1.0) -> None:
        self.policy: Policy = policy or always("valid")
        self.model = model
        self.slow_s = slow_s
        self.down_s = down_s
        self.log: list[Seen] = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._switch = threading.Lock()  # up/down
        self._timer: threading.Timer | None = None
        self.port = port
        self.up()

    # ------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        """Base URL of the API, '.../v1'."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        """A latentdiff judge spec for this server."""
        return f"openai:{self.url}@{self.model}"

    def up(self) -> None:
        """Listen (again, on the same port)."""
        with self._switch:
            if self._httpd is not None:
                return
            httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
            httpd.daemon_threads = True
            self.port = httpd.server_address[1]
            self._httpd = httpd
            threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()

    def down(self) -> None:
        """Stop listening: new connections are refused until `up()`."""
        with self._switch:
            httpd, self._httpd = self._httpd, None
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()

    def down_for(self, seconds: float) -> None:
        """Go down now and come back after `seconds` (from another thread)."""
        self.down()
        self._timer = threading.Timer(seconds, self.up)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        """Go down for good (a pending comeback is cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
        self.down()

    def set_policy(self, policy: Policy) -> None:
        """Answer following `policy` from now on."""
        with self.lock:
            self.policy = policy

    def __enter__(self) -> JudgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the request log

    def requests(self, kind: str | None = None, action: str | None = None) -> list[Seen]:
        """The requests seen so far (of `kind`, answered with `action`)."""
        with self.lock:
            return [s for s in self.log if kind in (None, s.kind) and action in (None, s.action)]

    def count(self, kind: str | None = None, action: str | None = None) -> int:
        """How many requests (of `kind`, answered with `action`)."""
        return len(self.requests(kind, action))

    def per_latent(self, kind: str | None = None) -> dict[str, list[str]]:
        """Latent fingerprint -> the actions its requests got, in order."""
        out: dict[str, list[str]] = {}
        for s in self.requests(kind):
            out.setdefault(s.latent, []).append(s.action)
        return out

    def asked_again_after_success(self) -> list[Seen]:
        """Requests for a prompt that had already been answered validly (a judge call wasted)."""
        answered: set[str] = set()
        again = []
        for s in self.requests():
            if s.prompt in answered:
                again.append(s)
            if s.action == "valid":
                answered.add(s.prompt)
        return again

    # ------------------------------------------------------------------ serving

    def decide(self, kind: str, user: str) -> Seen:
        """Log a request and choose its answer."""
        latent = latent_fingerprint(kind, user)
        prompt = hashlib.sha256(f"{kind}\n{user}".encode()).hexdigest()[:12]
        with self.lock:
            n, i = sum(s.prompt == prompt for s in self.log), len(self.log)
            seen = Seen(kind=kind, latent=latent, prompt=prompt, n=n, i=i, text=user)
            action = self.policy(seen) if kind in KINDS else "valid"
            assert action in ACTIONS, f"{action=} not in {ACTIONS}"
            seen = replace(seen, action=action)
            self.log.append(seen)
        return seen

    def control(self, body: dict[str, Any]) -> None:
        """Apply a /control request."""
        if "down_s" in body:
            threading.Thread(target=self.down_for, args=(float(body["down_s"]),), daemon=True).start()
            return
        fault, kind = body.get("fault", "valid"), body.get("kind")
        if body.get("first"):
            self.set_policy(first(fault, int(body["first"]), kind))
        elif body.get("every"):
            self.set_policy(every(fault, int(body["every"]), kind))
        else:
            self.set_policy(always(fault) if kind is None else first(fault, 1 << 30, kind))


def _handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            log.debug("judge server: " + format, *args)

        def _send(self, status: int, payload: bytes, length: int | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload) if length is None else length))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout passed during a slow answer)

        def _write(self, data: bytes) -> None:
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": server.model, "object": "model", "created": 0, "owned_by": "tests"}]}).encode())
            else:
                self._send(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path.rstrip("/") == "/control":
                server.control(body)
                self._send(200, b"{}")
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, b'{"error": {"message": "not found"}}')
                return
            fmt = (body.get("response_format") or {}).get("json_schema") or {}
            kind, schema = fmt.get("name", ""), fmt.get("schema") or {}
            user = next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")
            seen = server.decide(kind, user)
            self.answer(seen, body.get("model", server.model), schema)

        def answer(self, seen: Seen, model: str, schema: dict[str, Any]) -> None:
            action = seen.action
            if action in ("drop", "down"):
                self.close_connection = True
                if action == "down":  # not from this thread: shutdown() waits for serve_forever
                    threading.Thread(target=server.down_for, args=(server.down_s,), daemon=True).start()
                return
            if action == "500":
                self._send(500, json.dumps({"error": {"message": "injected server error", "code": 500}}).encode())
                return
            if action == "junk":
                self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
                return
            if action == "envelope":
                self._send(200, json.dumps({"object": "error", "message": "overloaded", "code": 503}).encode())
                return
            if action == "empty":
                self._send(200, json.dumps(completion(model, "") | {"choices": []}).encode())
                return
            if seen.kind not in KINDS:
                content, finish = "{}", "stop"
            elif action == "prose":
                content, finish = "Sure! This latent fires on greetings, I think.", "stop"
            elif action == "schema":
                content, finish = json.dumps(schema_violation(seen.kind, seen.latent, schema)), "stop"
            else:
                content, finish = json.dumps(valid_content(seen.kind, seen.latent, schema)), "stop"
            if action == "length":
                content, finish = content[: len(content) // 2], "length"
            payload = json.dumps(completion(model, content, finish)).encode()
            if action == "slow":
                time.sleep(server.slow_s)
            if action == "truncated":
                self._send(200, payload[: len(payload) // 2])
            elif action == "trickle":
                self._send(200, b"", length=len(payload))
                step = max(1, len(payload) // 40)
                for i in range(0, len(payload), step):
                    time.sleep(server.slow_s / 40)
                    self._write(payload[i : i + step])
                    self.wfile.flush()
            elif action in ("slowbody", "stall"):
                half = len(payload) // 2 if action == "stall" else 0
                self._send(200, payload[:half], length=len(payload))
                self.wfile.flush()
                time.sleep(server.slow_s)
                if action == "slowbody":
                    self._write(payload)
                self.close_connection = True
            elif action == "hangup":
                self._send(200, payload[: len(payload) // 2], length=len(payload))
                self.close_connection = True
            else:
                self._send(200, payload)

    return Handler


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--fault", choices=ACTIONS, default="valid")
    parser.add_argument("--first", type=int, default=0, help="fault the first N requests of each prompt")
    parser.add_argument("--every", type=int, default=0, help="fault every K-th request of each prompt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    server = JudgeServer(port=args.port)
    server.control({"fault": args.fault, "first": args.first, "every": args.every})
    log.info("judge server at %s (spec %s)", server.url, server.spec)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
