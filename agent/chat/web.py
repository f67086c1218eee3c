"""The web chat (`latentdiff serve RUN_DIR`): a FastAPI app serving the report and a chat page.

Read-only by construction: the routes only call the `ChatSession`/`RunView` lookups, which never
write, and the session reads a private copy of the run's Chroma store (`chat.read_only_store`): the run's
files are never touched. The page is self-contained (no CDN), so it works offline.

Against DNS rebinding (a web page whose domain is pointed at 127.0.0.1 reading the run), every request's
Host header must name this machine: localhost, 127.0.0.1, [::1], the bound host (and, when bound to all
interfaces, this machine's name); any other Host is refused with 400 before a route runs.

Routes: `GET /` chat page · `GET /report` the run's report.html · `POST /api/chat` {question,
client} -> Answer · `GET /api/latent/{id}` latent card · `GET /latent/{id}` the card as HTML ·
`GET /api/table` category table (every comparison's cells: counts, shares, share difference in
percentage points with its 95% CI, the paper's percent form, corrected p, significance, status) ·
`GET /healthz`.
"""

from __future__ import annotations

import html
import ipaddress
import socket
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from pydantic import BaseModel, Field

from latentdiff.agent.chat.format import answer_html
from latentdiff.agent.chat.session import Answer, ChatSession
from latentdiff.agent.chat.tools import ChatError, LatentDetail
from latentdiff.errors import LatentDiffError

MAX_CLIENTS = 64


class ChatRequest(BaseModel):
    """A question from the page."""

    question: str = Field(min_length=1, max_length=2000, description="The question.")
    client: str = Field(default="default", max_length=64, description="Conversation id (keeps LLM history).")


class ChatReply(Answer):
    """An answer plus its HTML rendering."""

    html: str = Field(description="The answer as HTML, citations linked to their latent cards.")








LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD = frozenset({"0.0.0.0", "::", ""})


def check_port(port: int) -> int:
    """A TCP port to listen on (1..65535), else a one-line error."""
    if not 1 <= port <= 65535:
        raise LatentDiffError(f"--port must be 1..65535, got {port}")
    return port


def allowed_hosts(bound: str) -> frozenset[str]:
    """Host header names accepted when serving on `bound` (lower case, no port, IPv6 without brackets)."""
    names = set(LOCAL_HOSTS) | {bound.lower().strip("[]")}
    if bound.strip("[]") in _WILDCARD:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def host_of(header: str) -> str:
    """'example.com:8765' -> 'example.com', '[::1]:80' -> '::1' (lower case; '' when malformed)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    if ":" in name:  # a bare IPv6 address is not a valid Host header
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return ""
    return name.rstrip(".")


def make_app(session: ChatSession, host: str = "127.0.0.1") -> FastAPI:
    """The app over one opened run (served on `host`); each browser conversation gets its own history."""
    app = FastAPI(title=f"latentdiff · {session.view.cfg.name}", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = allowed_hosts(host)

    @app.middleware("http")
    async def check_host(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if host_of(request.headers.get("host", "")) not in hosts:
            return PlainTextResponse("bad Host header: this server answers only to its own address", 400)
        return await call_next(request)

    lock = threading.Lock()  # Chroma's embedded client and the answerers are used one request at a time
    sessions: OrderedDict[str, ChatSession] = OrderedDict({"default": session})

    def session_for(client: str) -> ChatSession:
        if client not in sessions:
            llm = None
            if session.llm is not None:
                from latentdiff.agent.chat.llm import LLMAnswerer

                llm = LLMAnswerer(session.view, session.llm.spec)  # type: ignore[attr-defined]
            sessions[client] = ChatSession(session.view, llm)
            while len(sessions) > MAX_CLIENTS:
                sessions.popitem(last=False)
        sessions.move_to_end(client)
        return sessions[client]

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return CHAT_PAGE.replace("$title", html.escape(session.view.cfg.name)).replace("$mode", session.mode)

    @app.get("/report")
    def report() -> FileResponse:
        path = session.view.rundir.report_html
        if not path.is_file():
            raise HTTPException(404, "this run has no report.html")
        return FileResponse(path, media_type="text/html")

    @app.post("/api/chat")
    def chat(req: ChatRequest) -> ChatReply:
        with lock:
            try:
                ans = session_for(req.client).ask(req.question)
            except LatentDiffError as err:
                raise HTTPException(400, str(err)) from None
        return ChatReply(**ans.model_dump(), html=answer_html(ans.text, ans.citations))

    @app.get("/api/latent/{key}")
    def latent(key: str) -> LatentDetail:
        with lock:
            try:
                return session.view.latent_card(key, n_examples=5)
            except ChatError as err:
                raise HTTPException(404, str(err)) from None

    @app.get("/latent/{key}", response_class=HTMLResponse)
    def latent_page(key: str) -> str:
        from latentdiff.agent.report.render import render_latent_page

        d = latent(key)  # 404 for an unknown latent
        page = render_latent_page(session.view.report, d.id)
        if page is not None:  # the report's card: examples shaded, histogram, logit lens, ablation
            return page
        rows = "".join(
            f"<li><b>{html.escape(f.label.name if f.label else 'unlabelled')}</b> "
            f"({html.escape(f.label.category if f.label else '')}) for {html.escape(f.pair)}, {html.escape(f.side)} "
            f"side, Delta-norm {f.delta_norm:.2f}<br>{html.escape(f.label.description if f.label else '')}</li>"
            for f in d.findings)
        exs = "".join(f"<li><code>{_marks(t)}</code></li>" for t in d.examples)
        return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(d.id)}</title><body style='font-family:"
                f"sans-serif;max-width:900px;margin:2em auto'><h1 id='latent'>{html.escape(d.id)}</h1><ul>{rows}</ul>"
                f"<h2>Top examples</h2><ol>{exs}</ol></body>")

    @app.get("/api/table")
    def table() -> dict[str, object]:
        with lock:
            return session.view.category_table().model_dump(mode="json")

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok", "run": session.view.cfg.name, "mode": session.mode}

    return app


def serve(session: ChatSession, host: str, port: int) -> None:
    """Serve the app with uvicorn on host:port (checked first: a bad port is a one-line error)."""
    import signal

    import uvicorn

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler it found: with
    # the default one the process dies without running exit handlers, and the chat's private copy of the
    # run's store (`read_only_store`, ~90 MB on the demo) was left in the temp dir on every `kill`
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        uvicorn.run(make_app(session, host), host=host, port=check_port(port), log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _marks(text: str) -> str:
    """Escaped example text with <<activating>> tokens highlighted."""
    esc = html.escape(text, quote=False).replace("&lt;&lt;", "\x00").replace("&gt;&gt;", "\x01")
    return esc.replace("\x00", "<mark>").replace("\x01", "</mark>")


CHAT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>latentdiff chat · $title</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
header{background:#1d3557;color:#fff;padding:.8em 1.2em;display:flex;justify-content:space-between}
header a{color:#ffd166}
#log{max-width:900px;margin:1em auto;padding:0 1em}
.msg{border-radius:8px;padding:.7em 1em;margin:.6em 0;white-space:pre-wrap;line-height:1.4}
.msg .table-wrap{overflow-x:auto;white-space:normal}.msg table{border-collapse:collapse;font-size:90%}
.msg td,.msg th{border:1px solid #ccc;padding:2px 6px;text-align:left}
.user{background:#dbe7f5;margin-left:15%}
.bot{background:#fff;border:1px solid #dde1e6;margin-right:5%}
.meta{color:#6b7280;font-size:.8em;margin-top:.4em}
.error{background:#fde2e1}
form{max-width:900px;margin:0 auto 2em;padding:0 1em;display:flex;gap:.5em}
#question{flex:1;padding:.7em;font-size:1em;border:1px solid #c3c9d1;border-radius:6px}
button{padding:.7em 1.4em;font-size:1em;background:#1d3557;color:#fff;border:0;border-radius:6px}
a.cite{font-family:monospace}
</style></head><body>
<header><span><b>latentdiff</b> · run <b>$title</b> · mode $mode</span>
<a href="/report" target="_blank">report</a></header>
<div id="log"><div class="msg bot">Ask about this run's findings, e.g. "which new latents are about safety?",
"show me latent 12", "why did hallucination go down?", "compare multilingual between the two fine-tunes",
"what does the control show?". Effects are share differences in percentage points with 95% CIs and corrected
p-values; a comparison with too few latents is said to be so, never reported as a finding.
Answers cite latent ids; click one for its card. The chat can only read the run.</div></div>
<form id="ask"><input id="question" autocomplete="off" placeholder="Ask a question" autofocus>
<button id="send" type="submit">Ask</button></form>
<script>
const client = Math.random().toString(36).slice(2);
const log = document.getElementById('log');
function add(cls, html) {
  const d = document.createElement('div'); d.className = 'msg ' + cls; d.innerHTML = html;
  log.appendChild(d); d.scrollIntoView(); return d;
}
function esc(s) { const d = document.createElement('div'); d.textContent = s; return d.innerHTML; }
document.getElementById('ask').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const box = document.getElementById('question'); const q = box.value.trim();
  if (!q) return;
  box.value = ''; add('user', esc(q)); const wait = add('bot pending', '…');
  try {
    const r = await fetch('/api/chat', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify({question: q, client})});
    const body = await r.json();
    if (!r.ok) { wait.className = 'msg error'; wait.textContent = body.detail || r.statusText; return; }
    wait.className = 'msg bot answer';
    wait.innerHTML = body.html + '<div class="meta">cites: ' + body.citations.map(esc).join(', ') +
                     ' · mode: ' + body.mode + (body.note ? ' · ' + esc(body.note) : '') + '</div>';
  } catch (e) { wait.className = 'msg error'; wait.textContent = String(e); }
});
</script></body></html>
"""
