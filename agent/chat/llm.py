"""The chat's LLM mode: a LangGraph tool-calling agent over the run's read-only lookups.

Graph (one question):

    choose_tool --(tool calls)--> run_tools --> choose_tool ... --> answer --> END
         \\--(no tool call / round limit)------------------------------^

- `choose_tool` lets the model pick a lookup and its arguments. Round 0 must pick one (the answer
  is grounded on at least one lookup); later rounds may stop. Two protocols:
    - `native`: the OpenAI tools API (`bind_tools`, `tool_choice` "required", then "auto"), for
      OpenAI and for vLLM servers started with `--enable-auto-tool-choice --tool-call-parser ...`.
    - `json`: the model answers with one JSON object `{"call": {"tool": ..., <args>}}` constrained
      by a JSON schema (structured outputs): works on any server with guided decoding, whatever
      the model's tool-call format.
  `auto` (the default) tries native and switches to json for the rest of the session the first
  time the server rejects the request or returns a call that does not fit the tool's schema; the
  switch is recorded in `notes`.
- `run_tools` executes the chosen lookups (bad arguments become an error text for the model).
- `answer` asks the model, without tools, to answer from the lookup results, passed as text
  (corpus examples inside <example> blocks): this works with any chat template, including ones
  that know no `tool` role.
Citations in the answer are validated by `ChatSession` (agent/chat/session.py).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, TypedDict, Union

import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field, ValidationError, create_model

from latentdiff.agent.chat.format import CELL_HEADER, brief_line, cell_line, method_note
from latentdiff.agent.chat.session import ToolCall
from latentdiff.agent.chat.tools import ChatError, RunView
from latentdiff.agent.judges.openai_compat import parse_http_spec
from latentdiff.agent.judges.prompting import contain, render
from latentdiff.agent.report.summary import fmt_pp
from latentdiff.errors import LatentDiffError

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 3000
CHOICE_MAX_TOKENS = 192  # a lookup call is short; bounds what a confused model can ramble
HISTORY_TURNS = 3


class ChatState(TypedDict, total=False):
    """One question's state."""

    question: str
    results: list[ToolCall]
    texts: list[str]
    rounds: int
    pending: list[dict[str, Any]]
    answer: str


def _lookup_tools(view: RunView) -> list[StructuredTool]:
    """The read-only lookups as LangChain tools (argument schemas constrained to this run)."""
    cats = tuple(view.categories)
    pairs = tuple(view.pairs)
    Cat = Literal[cats]  # type: ignore[valid-type]
    Pair = Literal[pairs]  # type: ignore[valid-type]

    def search_latents(query: str, n: int = 6) -> str:
        hits = view.search_latents(query, n=n)
        return "\n".join(brief_line(h) for h in hits) or "no match"

    def list_latents(category: str, pair: str | None = None, side: str = "finetuned", n: int = 6) -> str:
        rows = view.list_latents(category, pair=pair, side=side, n=n)
        return "\n".join(brief_line(r) for r in rows) or f"no {side}-side latents in {category}"

    def latent_card(latent: str) -> str:
        d = view.latent_card(latent)
        lines = [f"latent [{d.id}]"]
        for f in d.findings:
            lab = f"{f.label.name} (category {f.label.category}): {f.label.description}" if f.label else "unlabelled"
            lines.append(f"- pair {f.pair}, side {f.side}, Delta-norm {f.delta_norm:.2f}, "
                         f"verification {f.verification}: {lab}")
        lines += [f"<example id={i}>\n{contain(t, 600)}\n</example>" for i, t in enumerate(d.examples, 1)]
        return "\n".join(lines)

    def category_table(category: str | None = None) -> str:
        t = view.category_table()
        if category is not None:
            rows = [cell_line(c) for c in t.cells if c.category == category]
            return f"{category} in every comparison:\n{CELL_HEADER}\n" + "\n".join(rows) + method_note(t)
        lines = ["Comparisons (A vs B; effects are share of A minus share of B, in percentage points):"]
        for b in t.comparisons:
            if b.status != "ok":
                lines.append(f"- {b.id}: {b.n_a} vs {b.n_b} latents; {b.note or 'too few latents to compare'}: "
                             "not tested, no finding")
                continue
            sig = [f"{c.category} {fmt_pp(c.diff_pp)} pp" for c in t.cells if c.comparison == b.id and c.significant]
            lines.append(f"- {b.id}: {b.n_a} vs {b.n_b} latents; significant: {', '.join(sig) or 'none'}")
        head = [c for c in t.cells if c.comparison == t.headline]
        if head and head[0].tested:
            lines += [f"\nHeadline {t.headline}:", CELL_HEADER.replace("| comparison |", "| category |")]
            lines += [cell_line(c.model_copy(update={"comparison": c.category})) for c in head]
        return "\n".join(lines) + method_note(t)

    n_field = (int, Field(default=6, ge=1, le=10, description="How many latents."))
    query = (str, Field(max_length=200, description="What to look for."))
    latent = (str, Field(max_length=40, description="Latent id, e.g. joint:12."))
    specs: list[tuple[Any, type[BaseModel], str]] = [
        (search_latents, create_model("SearchLatents", query=query, n=n_field),
         "Latents whose label is closest in meaning to a query."),
        (list_latents, create_model("ListLatents", category=(Cat, Field(description="Category.")),
                                    pair=(Pair | None, Field(default=None, description="Fine-tune, or all.")),
                                    side=(Literal["finetuned", "base"], Field(default="finetuned")), n=n_field),
         "The latents of one category that are specific to a fine-tune (or to the base)."),
        (latent_card, create_model("LatentCard", latent=latent),
         "One latent: its label, statistics and top examples."),
        (category_table, create_model("CategoryTable", category=(Cat | None, Field(
            default=None, description="One category: its cell in every comparison; none: the list of comparisons "
            "and the headline table."))),
         "Category differences (share difference in percentage points with 95% CI, the paper's percent form, "
         "corrected p-value, significance) of the headline, of each set vs the reference sample of shared latents "
         "and of the control contrasts; comparisons with too few latents are marked not tested."),
    ]
    return [StructuredTool.from_function(fn, name=fn.__name__, description=desc, args_schema=schema)
            for fn, schema, desc in specs]


def router_schema(tools: list[StructuredTool], allow_stop: bool) -> type[BaseModel]:
    """The json protocol's answer: `{"call": {"tool": NAME, <that tool's args>}}`, one of the tools
    (or `{"tool": "answer"}` to stop looking up, when allowed)."""
    calls: list[type[BaseModel]] = []
    for t in tools:
        args = t.args_schema if isinstance(t.args_schema, type) else BaseModel
        fields = {k: (f.annotation, f) for k, f in args.model_fields.items()}
        calls.append(create_model(f"Call_{t.name}", tool=(Literal[t.name], ...), **fields))  # type: ignore[call-overload]
    if allow_stop:
        calls.append(create_model("Call_answer", tool=(Literal["answer"], ...)))
    union = calls[0] if len(calls) == 1 else Union[tuple(calls)]  # noqa: UP007 - a runtime-built union
    return create_model("PickLookup", call=(union, Field(description="The lookup to make next.")))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


class LLMAnswerer:
    """Answers with an OpenAI-compatible chat model driving the lookups through LangGraph."""

    mode: Literal["retrieval", "llm"] = "llm"

    def __init__(self, view: RunView, spec: str, max_rounds: int = 2,
                 protocol: Literal["auto", "native", "json"] = "auto") -> None:
        from langchain_openai import ChatOpenAI

        from latentdiff.agent.judges.base import JudgeError

        try:
            _, base_url, model = parse_http_spec(spec)
        except JudgeError as err:
            raise ChatError(f"chat LLM: {err}") from None
        jc = view.cfg.judge
        self.view, self.spec, self.max_rounds = view, spec, max_rounds
        self.llm = ChatOpenAI(model=model, base_url=base_url, api_key="EMPTY",  # type: ignore[arg-type]
                              temperature=jc.temperature, max_tokens=jc.max_tokens,  # type: ignore[call-arg]
                              timeout=jc.timeout_s, max_retries=jc.retries)
        self.tools = _lookup_tools(view)
        self.by_name = {t.name: t for t in self.tools}
        self.history: list[tuple[str, str]] = []
        self.protocol = protocol
        self.use_native = protocol != "json"
        self.auto_ok = True  # native "auto" tool choice accepted by the server
        self.notes: list[str] = []
        head = view.report.headline
        self.system = render(
            "chat_system.md", models=", ".join(m.name for m in view.cfg.models),
            categories=", ".join(view.categories),
            headline=(f"{head['a']} vs {head['b']}: {head['description']}"
                      + (f" ({head.get('note') or 'too few latents to compare'}: not tested)"
                         if head.get("status") == "too_few" else "")) if head
            else "each fine-tune vs the reference sample of shared latents",
            example_id=next(iter(view.by_key), f"{view.crosscoders[0]}:0"),
        )
        self.graph = self._build()

    def _messages(self, state: ChatState) -> list[BaseMessage]:
        msgs: list[BaseMessage] = [SystemMessage(self.system)]
        for q, a in self.history[-HISTORY_TURNS:]:
            msgs += [HumanMessage(q), AIMessage(a)]
        found = "\n\n".join(state.get("texts", []))
        user = state["question"] if not found else (
            f"{state['question']}\n\n<lookup_results>\n{found[-4 * MAX_RESULT_CHARS:]}\n</lookup_results>")
        return msgs + [HumanMessage(user)]

    def _invoke(self, model: Any, msgs: list[BaseMessage]) -> AIMessage:
        try:
            return model.invoke(msgs)
        except openai.APIConnectionError as err:
            raise ChatError(f"chat LLM unreachable at {self.llm.openai_api_base}: {_one_line(err)}") from None
        except openai.APITimeoutError as err:
            raise ChatError(f"chat LLM timed out: {_one_line(err)}") from None

    def choose_tool(self, state: ChatState) -> ChatState:
        """Ask the model which lookup to make (required in round 0, optional later)."""
        rounds = state.get("rounds", 0)
        msgs = self._messages(state)
        if self.use_native:
            calls = self._native_choice(msgs, required=rounds == 0)
            if calls is not None:
                return {"rounds": rounds + 1, "pending": calls}
        return {"rounds": rounds + 1, "pending": self._json_choice(msgs, required=rounds == 0)}

    def _native_choice(self, msgs: list[BaseMessage], required: bool) -> list[dict[str, Any]] | None:
        """Tool calls through the tools API; None when the server or model cannot do it (then json)."""
        if not required and not self.auto_ok:
            return []
        model = self.llm.bind_tools(self.tools, tool_choice="required" if required else "auto",
                                    max_tokens=CHOICE_MAX_TOKENS)
        problem = None
        try:
            msg = self._invoke(model, msgs)
            calls = [c for c in msg.tool_calls if c["name"] in self.by_name]
            if required and not calls:
                problem = "no valid tool call in the answer"
        except openai.BadRequestError as err:
            if not required:  # e.g. vLLM without --enable-auto-tool-choice: stop looking up
                self.auto_ok = False
                return []
            problem = f"request rejected: {_one_line(err)}"
        except ValidationError as err:  # arguments that are not a JSON object, etc.
            problem = f"malformed tool call: {_one_line(err)}"
        if problem is None:
            return [dict(c) for c in calls]
        if self.protocol == "native":
            raise ChatError(f"chat LLM could not call a tool ({problem})")
        self.use_native = False
        self.notes.append(f"native tool calling failed ({problem}); switched to the json protocol")
        log.warning(self.notes[-1])
        return None

    def _json_choice(self, msgs: list[BaseMessage], required: bool) -> list[dict[str, Any]]:
        """One lookup as a schema-constrained JSON object."""
        model = self.llm.bind(max_tokens=CHOICE_MAX_TOKENS).with_structured_output(
            router_schema(self.tools, allow_stop=not required), method="json_schema", include_raw=True)
        try:
            out = model.invoke(msgs)
        except openai.APIConnectionError as err:
            raise ChatError(f"chat LLM unreachable at {self.llm.openai_api_base}: {_one_line(err)}") from None
        except openai.APIError as err:
            raise ChatError(f"chat LLM error: {_one_line(err)}") from None
        parsed = out.get("parsed") if isinstance(out, dict) else None
        if parsed is None:
            raise ChatError(f"chat LLM returned no valid lookup: {_one_line(out.get('parsing_error') or 'empty')}")
        call = parsed.call.model_dump()
        name = call.pop("tool")
        return [] if name == "answer" else [{"name": name, "args": call, "id": f"json-{name}"}]

    def run_tools(self, state: ChatState) -> ChatState:
        """Run the chosen lookups; a failing one becomes an error text the model can read."""
        results, texts = list(state.get("results", [])), list(state.get("texts", []))
        for call in state.get("pending", []):
            name, args = call["name"], dict(call.get("args") or {})
            tool = self.by_name.get(name)
            ok = True
            try:
                if tool is None:
                    raise ChatError(f"no tool named {name!r}")
                out = str(tool.invoke(args))
            except (LatentDiffError, ValidationError, ValueError, TypeError) as err:
                ok, out = False, f"error: {_one_line(err)}"
            results.append(ToolCall(tool=name, args=args, ok=ok))
            texts.append(f"<result tool={name}>\n{out[:MAX_RESULT_CHARS]}\n</result>")
        return {"results": results, "texts": texts, "pending": []}

    def answer_node(self, state: ChatState) -> ChatState:
        """Answer from the lookup results, without tools."""
        try:
            msg = self._invoke(self.llm, self._messages(state))
        except openai.APIStatusError as err:
            raise ChatError(f"chat LLM error: {_one_line(err)}") from None
        text = msg.content if isinstance(msg.content, str) else str(msg.content)
        return {"answer": text.strip()}

    def _route(self, state: ChatState) -> Literal["run_tools", "answer"]:
        return "run_tools" if state.get("pending") else "answer"

    def _after_tools(self, state: ChatState) -> Literal["choose_tool", "answer"]:
        more = state.get("rounds", 0) < self.max_rounds and self.auto_ok
        return "choose_tool" if more else "answer"

    def _build(self) -> Any:
        g = StateGraph(ChatState)
        g.add_node("choose_tool", self.choose_tool)
        g.add_node("run_tools", self.run_tools)
        g.add_node("answer", self.answer_node)
        g.add_edge(START, "choose_tool")
        g.add_conditional_edges("choose_tool", self._route)
        g.add_conditional_edges("run_tools", self._after_tools)
        g.add_edge("answer", END)
        return g.compile()

    def answer(self, question: str) -> tuple[str, list[ToolCall]]:
        """Run the graph for one question; lookups and answer returned for citation checks."""
        out = self.graph.invoke({"question": question, "results": [], "texts": [], "rounds": 0})
        text = out.get("answer") or "(the model gave no answer)"
        found = "\n".join(out.get("texts", []))
        if found:  # keep the grounding visible: the ids the lookups returned
            from latentdiff.agent.chat.session import checked_citations

            ids, _ = checked_citations(self.view, found)
            cited, _ = checked_citations(self.view, text)
            if ids and not cited:
                text += "\n\nFrom the lookups: " + ", ".join(f"[{i}]" for i in ids[:6])
        self.history.append((question, text))
        return text, list(out.get("results", []))
