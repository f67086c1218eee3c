"""Issue 16: a table of chat questions, each with the facts its answer must contain, taken from the run's
report.json, asked through the library, the terminal chat (a real pty) and the web chat (headless Chromium).

The facts avoid Markdown so that the same strings hold in the raw answer, the terminal's rendering and
the browser's text. CI runs this file again over the demo run (LATENTDIFF_CHAT_RUN).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from latentdiff.agent.chat import ChatSession
from latentdiff.agent.chat.tools import RunView
from tests.conftest import _unavailable, serving

Facts = Callable[[dict, RunView], list[str]]


def _head_row(report: dict, cat: str) -> dict | None:
    return next((r for r in report["categories"] if r["name"] == cat), None)


def _significance(cat: str) -> Facts:
    def facts(report: dict, view: RunView) -> list[str]:
        row = _head_row(report, cat)
        if row is None:
            return [cat]
        if report["headline"]["status"] != "ok":
            return ["cannot be read from it", report["headline"]["note"]]
        word = "is significant after correction" if row["significant"] else "is not significant after correction"
        return [f"the {cat} difference {word}", f"{row['diff_pp']:+.1f} percentage points"]
    return facts


def _primary(view: RunView) -> str:
    return min(view.crosscoders, key=lambda n: ("-seed" in n, n))


def _n_specific(report: dict, view: RunView, pair: str) -> int:
    prim = _primary(view)
    return len({c["id"] for c in report["latents"] if c["pair"] == pair and c["side"] == "finetuned"
                and c["category"] and c["id"].rsplit(":", 1)[0] == prim})


def _model_changes(pair: str) -> Facts:
    def facts(report: dict, view: RunView) -> list[str]:
        n = _n_specific(report, view, pair)
        if n == 0:
            return ["Nothing found", f"{pair} has no latents specific to it"]
        tested = any(c["kind"] == "vs_reference" and c["a"] == pair and c["status"] == "ok"
                     for c in report["comparisons"])
        caveat = ["including text of concepts it was never trained on"] if tested else []
        return [f"{n} latents specific to it", "compared with the base", *caveat]
    return facts


def _control(report: dict, view: RunView) -> list[str]:
    comps = [c for c in report["comparisons"] if c["kind"] == "control"]
    if not comps:
        return ["no control model"]
    c = comps[0]
    return [f"{c['a']} vs {c['b']} (control)"] + ([f"{c['note']}: not tested"] if c["status"] != "ok" else [])


def _why(cat: str) -> Facts:
    def facts(report: dict, view: RunView) -> list[str]:
        row = _head_row(report, cat)
        if report["headline"]["status"] != "ok" or row is None:
            return ["not tested"]
        return [f"{row['diff_pp']:+.1f} percentage points", f"{row['n_a']} of the {report['headline']['n_a']}"]
    return facts


def _compare(cat: str) -> Facts:
    def facts(report: dict, view: RunView) -> list[str]:
        return [f"{cat} across the comparisons"]
    return facts


def _table(report: dict, view: RunView) -> list[str]:
    if report["headline"]["status"] != "ok":
        return ["not tested"] + [r["name"] for r in report["categories"]]
    return ["Category differences"] + [r["name"] for r in report["categories"]]


def _latents_of(cat: str, pair: str | None = None) -> Facts:
    def facts(report: dict, view: RunView) -> list[str]:
        return [f"Latents about {cat}"] + ([pair] if pair else [])
    return facts


def _card(report: dict, view: RunView) -> list[str]:
    key = next(iter(view.by_key))
    label = next((f.label for f in view.by_key[key] if f.label is not None), None)
    return [key, "Top examples"] + ([label.category] if label else [])


def _off_topic(report: dict, view: RunView) -> list[str]:
    return ["does not look like a question about this run", "no finding to report"]


def _unknown_latent(report: dict, view: RunView) -> list[str]:
    return ["not selected"]


def _lost(cat: str) -> Facts:
    def facts(report: dict, view: RunView) -> list[str]:
        return [f"Latents about {cat} specific to base"]
    return facts


def questions(view: RunView) -> list[tuple[str, Facts]]:
    """(question, facts) pairs: at least 20, over every kind of answer the chat gives."""
    pairs = view.pairs
    ft = [m.name for m in view.cfg.models if m.role == "finetune"]
    control = next((m.name for m in view.cfg.models if m.role == "control"), None)
    key = next(iter(view.by_key))
    out: list[tuple[str, Facts]] = [
        ("which new latents are about safety?", _latents_of("safety")),
        (f"show me latent {key.split(':')[1]}", _card),
        ("show me latent 999999", _unknown_latent),
        ("why did hallucination go down?", _why("hallucination")),
        ("explain the self-reference shift", _why("self_reference")),
        ("compare multilingual between the two fine-tunes", _compare("multilingual")),
        ("compare instruction following across the comparisons", _compare("instruction_following")),
        ("is the multilingual shift significant?", _significance("multilingual")),
        ("is the safety shift significant?", _significance("safety")),
        ("is the hallucination difference real or could it be chance?", _significance("hallucination")),
        ("is the self-reference change significant?", _significance("self_reference")),
        ("show me the table", _table),
        ("what is the headline?", _table),
        ("did the control change anything?", _control),
        ("what does the control show?", _control),
        ("what is the capital of France?", _off_topic),
        ("tell me a joke about cats", _off_topic),
        ("which hallucination latents were lost, specific to base?", _lost("hallucination")),
        (f"which latents are about instruction following for {pairs[-1]}?", _latents_of("instruction_following")),
    ]
    for name in ft:
        out.append((f"what changed between base and {name}?", _model_changes(name)))
        out.append((f"what did {name} learn?", _model_changes(name)))
    if control:
        out.append((f"what changed between base and {control}?", _model_changes(control)))
    assert len(out) >= 20
    return out


def _check(text: str, facts: list[str], where: str, q: str) -> None:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # the terminal's bold and colour codes
    flat = re.sub(r"\s+", " ", text.replace("*", "").replace("`", ""))
    missing = [f for f in facts if re.sub(r"\s+", " ", f) not in flat]
    assert not missing, f"{where}: {q!r} misses {missing}:\n{text[:1500]}"


@pytest.fixture(scope="module")
def report_and_view(chat_run) -> tuple[dict, RunView]:
    view = RunView(chat_run.dir)
    report = json.loads((view.dir / "report" / "report.json").read_text())
    return report, view


def test_question_table_in_the_library(chat_run, report_and_view) -> None:  # noqa: ANN001
    report, view = report_and_view
    s = ChatSession.open(str(chat_run.dir))
    try:
        for q, facts in questions(view):
            ans = s.ask(q)
            _check(ans.text, facts(report, view), "library", q)
            assert all(c in view.by_key for c in ans.citations), (q, ans.citations)
    finally:
        s.close()


def test_question_table_in_the_terminal(chat_run, report_and_view) -> None:  # noqa: ANN001
    import pexpect

    report, view = report_and_view
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "400", "NO_COLOR": "1"}
    exe = Path(sys.executable).with_name("latentdiff")
    child = pexpect.spawn(str(exe), ["chat", str(chat_run.dir)], env=env, encoding="utf-8", timeout=120,
                          dimensions=(60, 400))
    child.expect("mode retrieval")
    for q, facts in questions(view):
        child.expect("you>")
        child.sendline(q)
        child.expect(r"cites: [^\r\n]* · mode: retrieval")
        _check(child.before or "", facts(report, view), "terminal", q)
    child.expect("you>")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.fixture(scope="module")
def server(chat_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(chat_run.dir, tmp_path_factory.mktemp("serve-q")) as url:
        yield url


def test_question_table_in_the_browser(report_and_view, server: str) -> None:  # noqa: ANN001
    exe = os.environ.get("LATENTDIFF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    report, view = report_and_view
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(server)
        for i, (q, facts) in enumerate(questions(view)):
            page.fill("#question", q)
            page.click("#send")
            answer = page.locator(".answer").nth(i)
            answer.wait_for(timeout=60_000)
            _check(answer.inner_text(), facts(report, view), "browser", q)
        assert page.locator(".answer table").count() >= 1  # markdown tables render as tables, not pipes
        browser.close()
