"""A local chat model as judge: `transformers:PATH_OR_ID` (AutoModelForCausalLM + chat template).

Greedy generation of `cfg.max_tokens` tokens, the first `{...}` object of the answer parsed and
validated, one repair round (the model is shown its answer and the validation error), then
`JudgeError`. Generation runs in a worker thread (`asyncio.to_thread`), one at a time per judge.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from latentdiff.agent.judges.base import Judge, JudgeError, LabelRequest
from latentdiff.agent.judges.prompting import (
    AnswerError,
    detect_messages,
    label_messages,
    load_json_object,
    parse_detection,
    parse_label,
)
from latentdiff.config import JudgeConfig
from latentdiff.records import ExampleText, LatentLabel

log = logging.getLogger(__name__)
T = TypeVar("T")
REPAIR = (
    "Your answer was invalid: {error}. Reply again with only the corrected JSON object, "
    "nothing else."
)


class TransformersJudge(Judge):
    """Greedy local generation with a chat template; weights load on first use."""

    def __init__(self, spec: str, cfg: JudgeConfig | None = None) -> None:
        super().__init__(spec, cfg)
        _, _, self.path = spec.partition(":")
        if not self.path:
            raise JudgeError(f"judge spec {spec!r} must look like transformers:PATH_OR_ID", "config")
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ model

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._model = AutoModelForCausalLM.from_pretrained(self.path).eval()
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise JudgeError(f"cannot load judge model {self.path!r}: {first}", "config") from None
        if not getattr(self._tokenizer, "chat_template", None):
            raise JudgeError(f"judge model {self.path!r} has no chat template", "config")

    def generate(self, messages: list[dict[str, str]]) -> str:
        """One greedy completion for a chat (blocking; serialised per judge)."""
        import torch

        with self._lock:
            self._load()
            tok, model = self._tokenizer, self._model
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=self.cfg.max_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                )
            new = out[0, enc["input_ids"].shape[1] :]  # (T_new,)
            self.stats.prompt_tokens += int(enc["input_ids"].shape[1])
            self.stats.completion_tokens += int(new.shape[0])
            return tok.decode(new, skip_special_tokens=True)

    # ------------------------------------------------------------------ judge

    def _ask_sync(self, messages: list[dict[str, str]], parse: Callable[[dict], T]) -> T:
        chat = list(messages)
        error = ""
        for attempt in range(2):  # the answer, then one repair
            if attempt:
                self.stats.retries += 1
            self.stats.calls += 1
            t0 = time.perf_counter()
            try:
                text = self.generate(chat)
            finally:
                self.stats.latency_s += time.perf_counter() - t0
            try:
                return parse(load_json_object(text, search=True))
            except AnswerError as err:
                error = str(err)
                log.debug("judge %s attempt %d invalid: %s", self.spec, attempt + 1, error)
                chat = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": REPAIR.format(error=error)}]
        raise JudgeError(f"invalid answer after 2 attempts: {error}", "invalid")

    async def _ask(self, messages: list[dict[str, str]], parse: Callable[[dict], T]) -> T:
        try:
            return await asyncio.to_thread(self._ask_sync, messages, parse)
        except JudgeError:
            self.stats.failures += 1
            raise

    async def label(self, request: LabelRequest) -> LatentLabel:
        messages = label_messages(request.top, request.quantile, request.negative, request.taxonomy,
                                  request.contrast, request.hard_negatives)
        return await self._ask(messages, lambda d: parse_label(d, request.taxonomy, self.spec))

    async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        if not examples:
            return []
        n = len(examples)
        return await self._ask(detect_messages(label, examples), lambda d: parse_detection(d, n))
