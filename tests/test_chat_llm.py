"""The chat's LLM mode (LangGraph tool-calling agent): graph logic with a scripted chat model, and
the same path end to end against the real CPU vLLM server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from latentdiff.agent.chat import ChatSession
from latentdiff.agent.chat.llm import LLMAnswerer
from latentdiff.agent.chat.tools import ChatError, RunView


class ScriptedChat:
    """Stands in for ChatOpenAI: scripted native tool calls, JSON picks and answers, calls logged."""

    openai_api_base = "scripted://"

    def __init__(self, native: list[Any], picks: list[dict[str, Any] | None], answers: list[str]) -> None:
        self.native, self.picks, self.answers = native, picks, answers
        self.log: list[str] = []

    def bind(self, **kwargs: Any) -> ScriptedChat:
        return self

    def bind_tools(self, tools: list[Any], tool_choice: str, **kwargs: Any) -> Any:
        outer = self

        class Bound:
            def invoke(self, msgs: list[Any]) -> AIMessage:
                outer.log.append(f"native:{tool_choice}")
                item = outer.native.pop(0)
                if isinstance(item, Exception):
                    raise item
                return item

        return Bound()

    def with_structured_output(self, schema: Any, method: str, include_raw: bool) -> Any:
        outer = self

        class Structured:
            def invoke(self, msgs: list[Any]) -> dict[str, Any]:
                outer.log.append("json")
                pick = outer.picks.pop(0)
                return {"parsed": None if pick is None else schema(call=pick), "parsing_error": "bad json"}

        return Structured()

    def invoke(self, msgs: list[Any]) -> AIMessage:
        self.log.append("answer")
        assert "<lookup_results>" in msgs[-1].content  # the answer sees what the lookups returned
        return AIMessage(content=self.answers.pop(0))


@pytest.fixture(scope="module")
def view(chat_run) -> RunView:
    return RunView(chat_run.dir)


def _answerer(view: RunView, fake: ScriptedChat, **kw: Any) -> LLMAnswerer:
    a = LLMAnswerer(view, "vllm:http://127.0.0.1:9/v1@scripted", **kw)
    a.llm = fake  # type: ignore[assignment]
    return a


def test_native_tool_call_then_grounded_answer(view: RunView) -> None:
    key = next(iter(view.by_key))
    call = AIMessage(content="", tool_calls=[{"name": "latent_card", "args": {"latent": key}, "id": "1"}])
    fake = ScriptedChat([call, AIMessage(content="done")], [], ["It is about something."])
    session = ChatSession(view, _answerer(view, fake))
    ans = session.ask(f"what is latent {key}?")
    assert fake.log == ["native:required", "native:auto", "answer"]
    assert ans.mode == "llm" and [c.tool for c in ans.tool_calls] == ["latent_card"] and ans.tool_calls[0].ok
    assert ans.citations == [key]  # the model cited nothing: the lookups' ids are appended


def test_bad_native_calls_switch_to_json_protocol(view: RunView) -> None:
    fake = ScriptedChat([AIMessage(content="<tool_call> garbage")],
                        [{"tool": "category_table"}, {"tool": "answer"}], ["Shifts are in [joint:999999]."])
    a = _answerer(view, fake)
    ans = ChatSession(view, a).ask("what changed?")
    assert fake.log == ["native:required", "json", "json", "answer"]
    assert "switched to the json protocol" in (ans.note or "")
    assert "joint:999999" in ans.text and "joint:999999" not in ans.citations  # invented id flagged
    assert ans.citations and all(c in view.by_key for c in ans.citations)


def test_category_table_lookup_has_every_comparison(view: RunView) -> None:
    """The category_table lookup the LLM reads: one category in every comparison (share difference in
    percentage points, interval, corrected p; untested comparisons marked so), or the overview."""
    from latentdiff.agent.replicates import comparison_id
    from latentdiff.agent.report.summary import fmt_p

    a = _answerer(view, ScriptedChat([], [], []))
    one = a.by_name["category_table"].invoke({"category": "safety"})
    for comp in view.report.comparisons:
        row = comp.row("safety")
        line = next(x for x in one.splitlines() if x.startswith(f"| {comparison_id(comp)} |"))
        if comp.tested:
            assert f"{row.diff_pp:+.1f} [{row.ci95[0]:+.1f}, {row.ci95[1]:+.1f}]" in line
            assert f"| {fmt_p(row.p_adjusted)} |" in line
        else:
            assert f"{comp.note}: not tested" in line
    overview = a.by_name["category_table"].invoke({})
    assert all(comparison_id(c) in overview for c in view.report.comparisons)
    assert "Test: exact permutation test" in overview and len(overview) < 3000  # fits MAX_RESULT_CHARS
    schema = a.by_name["category_table"].args_schema
    assert set(schema.model_json_schema()["properties"]) == {"category"}  # type: ignore[union-attr]


def test_rounds_are_bounded_and_bad_arguments_recorded(view: RunView) -> None:
    fake = ScriptedChat([], [{"tool": "latent_card", "latent": "nope"}, {"tool": "search_latents", "query": "x",
                                                                           "n": 3}], ["ok"])
    a = _answerer(view, fake, protocol="json", max_rounds=2)
    ans = ChatSession(view, a).ask("tell me")
    assert fake.log == ["json", "json", "answer"]  # two rounds, then it must answer
    assert [(c.tool, c.ok) for c in ans.tool_calls[:2]] == [("latent_card", False), ("search_latents", True)]


def test_failing_llm_falls_back_to_retrieval_with_a_note(view: RunView) -> None:
    fake = ScriptedChat([], [None], [])
    ans = ChatSession(view, _answerer(view, fake, protocol="json")).ask("which new latents are about safety?")
    assert ans.mode == "retrieval" and "no valid lookup" in (ans.note or "") and ans.citations


def test_unreachable_llm_is_one_line(view: RunView) -> None:
    a = LLMAnswerer(view, "vllm:http://127.0.0.1:9/v1@nothing")
    with pytest.raises(ChatError, match="unreachable"):
        a.answer("hello")


def test_chat_llm_against_real_vllm(vllm_server: tuple[str, str], chat_run) -> None:
    """LangGraph agent -> real vLLM (CPU) -> lookups -> answer with checked citations."""
    url, model = vllm_server
    view = RunView(chat_run.dir)
    a = LLMAnswerer(view, f"vllm:{url}@{model}")
    session = ChatSession(view, a)
    for q in ("why did hallucination go down?", "compare multilingual between the two fine-tunes"):
        ans = session.ask(q)
        assert ans.mode == "llm", ans.note
        llm_calls = [c for c in ans.tool_calls if c.tool in a.by_name]
        assert llm_calls and any(c.ok for c in llm_calls), ans.tool_calls
        assert ans.citations and all(c in view.by_key for c in ans.citations)
    assert len(a.history) == 2
    # the same through the CLI, one-shot, JSON out
    exe = Path(sys.executable).with_name("latentdiff")
    out = subprocess.run([str(exe), "chat", str(chat_run.dir), "--llm", f"vllm:{url}@{model}", "--json",
                          "-q", "which new latents are about safety?"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rec = json.loads(out.stdout)
    assert rec["mode"] == "llm" and rec["citations"], rec
