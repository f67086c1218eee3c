"""The executive summary drafted by an LLM, checked, repaired, and published (or replaced).

Protocol (`summarize`):
1. The LLM gets `prompts/summary_system.md` and `prompts/summary_user.md` with the fact sheet
   (agent/report/summary.py `fact_sheet`) inside <facts> ... </facts>, and answers with
   JSON-schema structured output `{"sentences": [{"text", "citations"}]}` (citations: an enum of the
   fact sheet's latent ids; sentence count and lengths capped so the answer fits max_tokens).
2. The checker (`check_sentences`) validates every cited id and every number of the draft.
3. A failing draft goes back to the LLM with the checker's errors (`prompts/summary_repair.md`),
   up to `report.summary_attempts` drafts in all.
4. Still failing: `summary_fallback: strip` publishes the sentences of the best draft that pass
   (the templated summary if none does); `template` publishes the templated summary. An LLM that
   cannot be reached (or answers garbage the schema cannot parse every time) also ends in the
   templated summary. Attempts, errors and the outcome are recorded in the summary's `checker`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from latentdiff.agent.judges.openai_compat import strip_lengths
from latentdiff.agent.judges.prompting import AnswerError, contain, load_json_object, render
from latentdiff.agent.report.summary import (
    CheckContext,
    DraftAttempt,
    ExecutiveSummary,
    SummaryCheck,
    SummarySentence,
    assemble,
    check_sentences,
    fact_sheet,
    flat_errors,
    headline,
    template_summary,
)
from latentdiff.errors import LatentDiffError

if TYPE_CHECKING:
    from latentdiff.agent.report.build import Report
    from latentdiff.config import JudgeConfig, ReportConfig

log = logging.getLogger(__name__)
MAX_SENTENCES = 6
MAX_RAW_CHARS = 2000


class SummaryLLMError(LatentDiffError):
    """The summary LLM could not be used (unreachable, rejected the request, timed out)."""


class SummaryLLM(Protocol):
    """Anything that answers chat messages with a JSON text constrained by a JSON schema."""

    spec: str

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """One answer (raises SummaryLLMError when the server cannot be used)."""
        ...


class HTTPSummaryLLM:
    """An OpenAI-compatible chat endpoint (`vllm:URL@MODEL` or `openai:URL@MODEL`, first URL)."""

    def __init__(self, spec: str, judge: JudgeConfig, max_tokens: int) -> None:
        import os

        import openai

        from latentdiff.agent.judges.base import JudgeError
        from latentdiff.agent.judges.openai_compat import parse_http_spec

        try:
            self.backend, urls, self.model = parse_http_spec(spec)
        except JudgeError as err:
            raise SummaryLLMError(f"summary LLM: {err}") from None
        self.spec, self.judge, self.max_tokens = spec, judge, max_tokens
        self.client = openai.OpenAI(base_url=urls.split(",")[0], api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
                                    timeout=judge.timeout_s, max_retries=judge.retries)

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """One schema-constrained answer; a cut-off answer is an AnswerError (the draft is rejected)."""
        import openai

        if self.backend == "openai":  # strict mode takes no string-length keywords
            schema = strip_lengths(schema)
        fmt = {"type": "json_schema", "json_schema": {"name": "executive_summary", "schema": schema, "strict": True}}
        try:
            resp = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.judge.temperature,  # type: ignore[arg-type]
                max_tokens=self.max_tokens, response_format=fmt)  # type: ignore[arg-type]
        except openai.APIConnectionError as err:
            raise SummaryLLMError(f"summary LLM unreachable at {self.client.base_url}: {err}") from None
        except openai.APIError as err:
            raise SummaryLLMError(f"summary LLM error: {' '.join(str(err).split())[:300]}") from None
        choice = resp.choices[0]
        if choice.finish_reason == "length":
            raise AnswerError(f"answer cut off at max_tokens={self.max_tokens}")
        return choice.message.content or ""


def sentence_chars(max_tokens: int, max_sentences: int = MAX_SENTENCES) -> int:
    """Cap on a sentence's characters so that a full answer fits max_tokens at >= 2 characters a token
    (the label schema's rule, checked with the 4.5M organism on vLLM)."""
    return max(60, min(240, 2 * max_tokens // max_sentences - 80))


def summary_schema(ids: list[str], max_sentences: int = MAX_SENTENCES, max_chars: int = 240) -> dict[str, Any]:
    """JSON schema of a draft: 1..max_sentences sentences, each citing 1..3 of the fact sheet's ids."""
    cite: dict[str, Any] = {"type": "string", "enum": ids} if ids else {"type": "string", "maxLength": 40}
    sentence = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": max_chars},
                       "citations": {"type": "array", "items": cite, "minItems": 1, "maxItems": 3}},
        "required": ["text", "citations"], "additionalProperties": False,
    }
    return {"type": "object", "properties": {"sentences": {"type": "array", "items": sentence, "minItems": 1,
                                                           "maxItems": max_sentences}},
            "required": ["sentences"], "additionalProperties": False}


def summary_messages(report: Report, top_n: int = 2, max_sentences: int = MAX_SENTENCES,
                     ) -> tuple[list[dict[str, str]], list[str]]:
    """System + user messages for a first draft, and the latent ids of the fact sheet."""
    facts, ids = fact_sheet(report, top_n)
    comp = headline(report)
    cats = ", ".join(r.name for r in (comp.categories if comp else report.categories)) or "none"
    system = render("summary_system.md", models=", ".join(m["name"] for m in report.models), categories=cats,
                    max_sentences=max_sentences, example_id=ids[0] if ids else "joint:0")
    return [{"role": "system", "content": system}, {"role": "user", "content": render("summary_user.md", facts=facts)}
            ], ids


def repair_messages(first: list[dict[str, str]], raw: str, errors: list[str]) -> list[dict[str, str]]:
    """The first-draft messages, the rejected answer (contained) and the checker's errors: roles
    alternate, and only the last round is sent, so the prompt does not grow with the attempts."""
    listed = "\n".join(f"- {e}" for e in errors[:20])
    return [*first, {"role": "assistant", "content": contain(raw, MAX_RAW_CHARS) or "(no answer)"},
            {"role": "user", "content": render("summary_repair.md", errors=listed)}]


def parse_draft(raw: str) -> list[SummarySentence]:
    """`{"sentences": [{"text", "citations"}]}` -> sentences (AnswerError when it is not that)."""
    data = load_json_object(raw, search=True)
    items = data.get("sentences")
    if not isinstance(items, list) or not items:
        raise AnswerError("expected a non-empty list under 'sentences'")
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise AnswerError(f"sentence {i}: expected an object with a 'text' string")
        cites = item.get("citations", [])
        if not isinstance(cites, list) or not all(isinstance(c, str) for c in cites):
            raise AnswerError(f"sentence {i}: 'citations' must be a list of latent ids")
        ids = list(dict.fromkeys(c.strip() for c in cites))
        out.append(SummarySentence(text=" ".join(item["text"].split()), citations=ids))
    return out


def _finish(report: Report, llm: SummaryLLM, history: list[DraftAttempt],
            best: tuple[list[SummarySentence], list[list[str]]] | None, fallback: str) -> ExecutiveSummary:
    """Publish after the last failed draft: its passing sentences ('strip') or the template."""
    last = history[-1].errors if history else []
    if fallback == "strip" and best is not None:
        kept = [s for s, errs in zip(*best) if not errs]
        if kept:
            ok = not flat_errors(check_sentences(report, kept))
            check = SummaryCheck(ok=ok, outcome="stripped", attempts=len(history), errors=last, history=history,
                                 note=f"{len(best[0]) - len(kept)} of {len(best[0])} sentences of the best draft "
                                      f"failed the checker and were dropped")
            return assemble(kept, "llm", check, llm.spec)
    why = "no draft sentence passed the checker" if fallback == "strip" else "the drafts failed the checker"
    return template_summary(report, note=f"{why} after {len(history)} attempt(s); templated summary published",
                            outcome="fallback", history=history, llm=llm.spec, errors=last)


def draft_summary(report: Report, llm: SummaryLLM, attempts: int = 3, fallback: str = "strip",
                  top_n: int = 2, max_tokens: int = 1024) -> ExecutiveSummary:
    """Draft, check, repair (up to `attempts` drafts), then publish or fall back; everything recorded."""
    first, ids = summary_messages(report, top_n)
    if not ids:
        return template_summary(report, note="no labelled latent to ground a summary on", llm=llm.spec)
    schema = summary_schema(ids, max_chars=sentence_chars(max_tokens))
    ctx = CheckContext.of(report)
    messages, history, sentences = first, [], []
    best: tuple[list[SummarySentence], list[list[str]]] | None = None
    for i in range(1, attempts + 1):
        try:
            raw = llm.complete(messages, schema)
        except SummaryLLMError as err:
            log.warning("executive summary: %s; templated summary published", err)
            return template_summary(report, note=str(err), outcome="fallback", history=history, llm=llm.spec)
        except AnswerError as err:  # e.g. cut off at max_tokens
            raw, per, errors = "", [], [f"answer: {err}"]
        else:
            try:
                sentences = parse_draft(raw)
                per = check_sentences(ctx, sentences)
                errors = flat_errors(per)
                if best is None or sum(not e for e in per) > sum(not e for e in best[1]):
                    best = (sentences, per)
            except AnswerError as err:
                per, errors = [], [f"answer: {err}"]
        history.append(DraftAttempt(attempt=i, errors=errors, raw=raw[:MAX_RAW_CHARS]))
        if not errors:
            check = SummaryCheck(ok=True, outcome="accepted", attempts=i, history=history)
            return assemble(sentences, "llm", check, llm.spec)
        log.info("executive summary draft %d/%d rejected: %s", i, attempts, "; ".join(errors[:3]))
        messages = repair_messages(first, raw, errors)
    return _finish(report, llm, history, best, fallback)


def summary_llm_spec(report_cfg: ReportConfig, judge: JudgeConfig) -> str | None:
    """The spec that drafts the summary: `report.summary_llm`, else an HTTP judge; None = template."""
    spec = report_cfg.summary_llm
    if spec == "template":
        return None
    if spec is None:
        spec = judge.spec if judge.spec.startswith(("vllm:", "openai:")) else None
    return spec


def summarize(report: Report, report_cfg: ReportConfig, judge: JudgeConfig,
              llm: SummaryLLM | None = None) -> ExecutiveSummary:
    """The report's executive summary: LLM-drafted and checked when an LLM is configured, else templated."""
    if llm is None:
        spec = summary_llm_spec(report_cfg, judge)
        if spec is None:
            return template_summary(report)
        try:
            llm = HTTPSummaryLLM(spec, judge, report_cfg.summary_max_tokens)
        except SummaryLLMError as err:
            return template_summary(report, note=str(err), outcome="fallback", llm=spec)
    out = draft_summary(report, llm, report_cfg.summary_attempts, report_cfg.summary_fallback,
                        report_cfg.summary_top_latents, report_cfg.summary_max_tokens)
    log.info("executive summary: %s (%s, %d attempt(s), checker ok=%s)", out.checker.outcome, out.source,
             out.checker.attempts, out.checker.ok)
    return out
