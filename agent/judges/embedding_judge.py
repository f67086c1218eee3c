"""The offline default judge (`embedding` or `embedding:MODEL_DIR`): no LLM, only MiniLM embeddings.

Labelling:
- latent vector = weighted mean of unit embeddings of its top examples (weight 1), quantile
  examples (0.5) and their marked spans (twice the example's weight: the marked tokens are what
  the latent fires on); the negatives' mean embedding is its contrast;
- category score = cos(latent, category text) + max over subcategories cos(latent, subcategory),
  minus half of the same score for the negatives (what the latent does NOT fire on);
  the category/subcategory is the argmax, confidence the softmax margin p1 - p2 (T = 0.05);
- name and evidence = the marked spans that are most frequent in the top examples and rarest in
  the negatives.
Detection: an example is active when cos(example, label text) (+0.2 if it contains an evidence
span) beats the median over the same call's examples: an honest baseline, not a strong judge.

Embeddings come from `latentdiff.store.embeddings.encode` (the bundled all-MiniLM-L6-v2).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import numpy as np

from latentdiff.agent.judges.base import Judge, JudgeError, LabelRequest
from latentdiff.agent.judges.prompting import marked_spans, unmark
from latentdiff.agent.judges.taxonomy import Taxonomy
from latentdiff.config import JudgeConfig
from latentdiff.errors import LatentDiffError
from latentdiff.records import ExampleText, LatentLabel

TEMPERATURE = 0.05
NEG_WEIGHT = 0.5
EVIDENCE_BONUS = 0.2


def _embed(texts: list[str], model: str = "default") -> np.ndarray:
    """Unit-norm sentence embeddings (N, dim) from the store's local MiniLM."""
    try:
        from latentdiff.store.embeddings import encode
    except ImportError as err:  # pragma: no cover - store is part of the package
        raise JudgeError(f"embedding judge needs latentdiff.store.embeddings: {err}", "config") from None
    try:
        vecs = np.asarray(encode(list(texts), model=model), dtype=np.float32)
    except LatentDiffError as err:
        raise JudgeError(f"embedding judge: {err}", "config") from None
    norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
    return vecs / np.clip(norms, 1e-9, None)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp((x - x.max()) / TEMPERATURE)
    return z / z.sum()


def _contains(text: str, span: str) -> bool:
    """Case-insensitive whole-word(ish) occurrence of span in text."""
    pattern = r"(?<!\w)" + re.escape(span.lower()) + r"(?!\w)"
    return re.search(pattern, text.lower()) is not None


def characteristic_spans(
    positives: list[ExampleText], negatives: list[ExampleText], k: int = 12
) -> list[str]:
    """Marked spans ranked by (share of positives with them) * (1 - share of negatives with them).

    Falls back to words when no example has marks.
    """
    per_example = [{s.lower() for s in marked_spans(e.text)} for e in positives]
    if not any(per_example):
        per_example = [set(re.findall(r"\w+", unmark(e.text).lower())) for e in positives]
    counts = Counter(s for spans in per_example for s in spans)
    if not counts:
        return []
    n_pos, n_neg = max(len(positives), 1), max(len(negatives), 1)
    neg_texts = [unmark(e.plain or e.text) for e in negatives]

    def score(span: str) -> tuple[float, int]:
        neg_rate = sum(_contains(t, span) for t in neg_texts) / n_neg if neg_texts else 0.0
        return (counts[span] / n_pos) * (1.0 - neg_rate), counts[span]

    ranked = sorted(counts, key=lambda s: (*(-v for v in score(s)), s))
    return [s[:80] for s in ranked[:k]]


class EmbeddingJudge(Judge):
    """Categorise by embedding similarity to the taxonomy; name by characteristic marked tokens."""

    def __init__(self, spec: str = "embedding", cfg: JudgeConfig | None = None) -> None:
        super().__init__(spec, cfg)
        _, _, model = spec.partition(":")
        self.model = model or "default"
        self._category_cache: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts with this judge's model (blocking)."""
        return _embed(texts, self.model)

    def _category_vectors(self, taxonomy: Taxonomy) -> tuple[np.ndarray, list[np.ndarray]]:
        key = taxonomy.model_dump_json()
        if key not in self._category_cache:
            cats = self.embed(
                [f"{c.name.replace('_', ' ')}: {' '.join(c.description.split())}"
                 for c in taxonomy.categories]
            )
            subs = [
                self.embed([f"{s} ({c.name.replace('_', ' ')})" for s in c.subcategories])
                if c.subcategories
                else np.zeros((0, cats.shape[1]), dtype=np.float32)
                for c in taxonomy.categories
            ]
            self._category_cache[key] = (cats, subs)
        return self._category_cache[key]

    def _mean_vector(self, examples: list[tuple[ExampleText, float]]) -> np.ndarray | None:
        texts, weights = [], []
        for ex, w in examples:
            texts.append(unmark(ex.plain or ex.text))
            weights.append(w)
            spans = marked_spans(ex.text)
            if spans:
                texts.append(" ".join(spans))
                weights.append(2 * w)
        if not texts:
            return None
        vecs = self.embed(texts)  # (N, D)
        v = (np.asarray(weights, dtype=np.float32)[:, None] * vecs).sum(0)
        return v / max(float(np.linalg.norm(v)), 1e-9)

    def _scores(self, v: np.ndarray, taxonomy: Taxonomy) -> tuple[np.ndarray, list[int]]:
        """Per-category score and best subcategory index (-1 when none)."""
        cats, subs = self._category_vectors(taxonomy)
        scores, best_sub = [], []
        for i in range(len(taxonomy.categories)):
            s = float(cats[i] @ v)
            if len(subs[i]):
                sub_sims = subs[i] @ v
                best_sub.append(int(sub_sims.argmax()))
                s += float(sub_sims.max())
            else:
                best_sub.append(-1)
            scores.append(s)
        return np.asarray(scores), best_sub

    def _label_sync(self, request: LabelRequest) -> LatentLabel:
        taxonomy = request.taxonomy
        pos = self._mean_vector([(e, 1.0) for e in request.top] + [(e, 0.5) for e in request.quantile])
        if pos is None:
            raise JudgeError(f"latent {request.latent}: no example text to embed", "invalid")
        scores, best_sub = self._scores(pos, taxonomy)
        # hard negatives share the top examples' topic: subtracting them would cancel the category signal,
        # so they only sharpen the name (characteristic spans), never the category
        neg = None if request.hard_negatives else self._mean_vector([(e, 1.0) for e in request.negative])
        if neg is not None:
            scores = scores - NEG_WEIGHT * self._scores(neg, taxonomy)[0]
        order = np.argsort(-scores)
        p = _softmax(scores)
        top, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        category = taxonomy.categories[top]
        sub = category.subcategories[best_sub[top]] if best_sub[top] >= 0 else None
        spans = characteristic_spans(request.top + request.quantile, request.negative)
        shown = ", ".join(f"'{s}'" for s in spans[:3]) or "no marked tokens"
        runner_up = taxonomy.categories[second].name
        description = (
            f"Fires on {shown} in {category.name.replace('_', ' ')} text"
            f"{f' ({sub})' if sub else ''}. Nearest taxonomy category by MiniLM similarity of the "
            f"top examples: {category.name} (score {scores[top]:.3f}; runner-up {runner_up} "
            f"{scores[second]:.3f})."
        )
        name = (" / ".join(spans[:3]) or category.name)[:60] + f" ({category.name})"
        return LatentLabel(
            name=name[:80],
            description=description[:1200],
            category=category.name,
            subcategory=sub,
            confidence=float(np.clip(p[top] - p[second], 0.0, 1.0)) if top != second else 1.0,
            evidence=spans,
            judge=self.spec,
        )

    def _detect_sync(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        texts = [unmark(e.plain or e.text) for e in examples]
        vecs = self.embed([f"{label.name}. {label.description}", *texts])
        sims = vecs[1:] @ vecs[0]
        bonus = np.asarray([any(_contains(t, s) for s in label.evidence) for t in texts], dtype=np.float32)
        score = sims + EVIDENCE_BONUS * bonus
        threshold = float(np.median(score))
        return [bool(s > threshold) for s in score]

    async def label(self, request: LabelRequest) -> LatentLabel:
        return await self._timed(self._label_sync, request)

    async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        if not examples:
            return []
        return await self._timed(self._detect_sync, label, examples)

    async def _timed(self, fn, *args):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.stats.calls += 1
        try:
            return await asyncio.to_thread(fn, *args)
        except JudgeError:
            self.stats.failures += 1
            raise
        finally:
            self.stats.latency_s += loop.time() - t0
