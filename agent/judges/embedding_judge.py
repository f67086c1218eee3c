"""The offline default judge (`embedding` or `embedding:MODEL_DIR`): no LLM, only MiniLM embeddings.

Labelling (DEFAULT_OPTIONS; chosen on a dev set, see docs/benchmarks.md "Offline judge comparison"):
- every top example (weight 1) and quantile example (0.5), chat-template tokens removed, is embedded
  whole and scored against each category: cos(example, category description) + max cos over the
  category's subcategories and prototype sentences (prompts/taxonomy.yaml);
- each example votes for its best category; a category's score is its weighted vote share minus
  half the negatives' vote share (what the latent does NOT fire on); when no concept wins 30% of
  the votes the latent is `other` (mixed evidence: no single concept);
- confidence is the softmax margin p1 - p2 (T = 0.05) between the first and second category;
- name and evidence = the marked spans that are most frequent in the top examples and rarest in
  the negatives.
LEGACY_OPTIONS reproduce the judge before issue 14 (one weighted mean vector of the examples and
their marked spans). Options can be passed as keyword arguments (benchmarks/bench_judges.py).
Detection: an example is active when cos(example, label text) (+0.2 if it contains an evidence
span) beats the median over the same call's examples: an honest baseline, not a strong judge.

Embeddings come from `latentdiff.store.embeddings.encode` (the bundled all-MiniLM-L6-v2).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

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


def _embed(texts: list[str], model: str = "default", cache: object = None) -> np.ndarray:
    """Unit-norm sentence embeddings (N, dim) from the store's local MiniLM (through a VectorCache if given)."""
    try:
        from latentdiff.store.embeddings import encode
    except ImportError as err:  # pragma: no cover - store is part of the package
        raise JudgeError(f"embedding judge needs latentdiff.store.embeddings: {err}", "config") from None
    try:
        vecs = np.asarray(encode(list(texts), model=model, cache=cache), dtype=np.float32)  # type: ignore[arg-type]
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


LEGACY_OPTIONS: dict = {
    "prototypes": False,  # also embed each category's prototype sentences (max-pooled with subcategories)
    "mode": "mean",  # mean: one weighted mean vector; avg: mean of per-example scores; vote: per-example argmax
    "span_weight": 2.0,  # weight of the marked spans' text relative to their example
    "quantile_weight": 0.5,
    "neg_weight": 0.5,  # subtract this times the negatives' score per category
    "desc_weight": 1.0,  # weight of the category description next to the best subcategory/prototype
    "other_margin": None,  # say `other` unless the best category beats `other` by this much
    "strip_special": False,  # drop chat-template tokens like <|user|> before embedding
    "min_share": None,  # vote mode: say `other` when no category wins this share of the examples' votes
    "center": False,  # vote/avg: subtract the negatives' mean score per category from each example's scores
    "local": None,  # tokens each side of an example's peak: embed that context (instead of / beside the window)
    "local_weight": None,  # None: the local context replaces the window; a number: it is added with this weight
}
# chosen on the organisms' dev set (benchmarks/bench_judges.py, docs/benchmarks.md "Offline judge comparison")
DEFAULT_OPTIONS: dict = {**LEGACY_OPTIONS, "prototypes": True, "mode": "vote", "span_weight": 0.0,
                         "strip_special": True, "min_share": 0.3}


class EmbeddingJudge(Judge):
    """Categorise by embedding similarity to the taxonomy; name by characteristic marked tokens."""

    def __init__(
        self,
        spec: str = "embedding",
        cfg: JudgeConfig | None = None,
        vectors: str | Path | None = None,
        **options: object,
    ) -> None:
        """`vectors`: a run's sentence-vector cache file (RunDir.vectors), shared with the index stage."""
        super().__init__(spec, cfg)
        self._vector_path = Path(vectors) if vectors is not None else None
        self._vector_cache: object = None
        _, _, model = spec.partition(":")
        self.model = model or "default"
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise JudgeError(f"embedding judge: unknown options {sorted(unknown)}", "config")
        self.options: dict = {**DEFAULT_OPTIONS, **options}
        self._vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts with this judge's model (blocking; each distinct text is embedded once)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for t, v in zip(missing, _embed(missing, self.model, self._cache()), strict=True):
                self._vectors[t] = v
        if len(self._vectors) > 200_000:  # bound the memory of long runs
            self._vectors = {t: self._vectors[t] for t in texts}
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])

    def _cache(self) -> object:
        """The run's VectorCache, opened on first use (None without a run)."""
        if self._vector_cache is None and self._vector_path is not None:
            from latentdiff.store.embeddings import VectorCache

            self._vector_cache = VectorCache(self._vector_path)
        return self._vector_cache

    def _category_vectors(self, taxonomy: Taxonomy) -> tuple[np.ndarray, list[np.ndarray]]:
        """(description vectors (C, D), per category its subcategory [+ prototype] vectors)."""
        cats = self.embed(
            [f"{c.name.replace('_', ' ')}: {' '.join(c.description.split())}" for c in taxonomy.categories]
        )
        subs = []
        for c in taxonomy.categories:
            texts = [f"{s} ({c.name.replace('_', ' ')})" for s in c.subcategories]
            if self.options["prototypes"]:
                texts += list(c.prototypes)
            subs.append(self.embed(texts) if texts else np.zeros((0, cats.shape[1]), dtype=np.float32))
        return cats, subs

    def _plain(self, ex: ExampleText) -> str:
        """The unmarked text of an example as embedded: without chat-template tokens under `strip_special`
        (`store.embeddings.without_special`, the text the index stage embedded: a cache hit)."""
        return self._cleaned(unmark(ex.plain or ex.text))

    def _cleaned(self, text: str) -> str:
        """Text as embedded: without chat-template tokens under `strip_special`."""
        if self.options["strip_special"]:
            from latentdiff.store.embeddings import without_special

            text = without_special(text)
        return text

    def _local(self, ex: ExampleText) -> str | None:
        """The `local` tokens each side of the example's peak activation (None without per-token values)."""
        width = self.options["local"]
        if width is None or not ex.tokens or not ex.activations or len(ex.tokens) != len(ex.activations):
            return None
        peak = max(range(len(ex.activations)), key=ex.activations.__getitem__)
        text = self._cleaned("".join(ex.tokens[max(0, peak - int(width)): peak + int(width) + 1]))
        return text if text.strip() else None

    def _texts(self, examples: list[tuple[ExampleText, float]]) -> tuple[list[str], list[float], list[int]]:
        """Texts to embed, their weights, and which example each comes from."""
        texts, weights, owner = [], [], []
        for i, (ex, w) in enumerate(examples):
            local = self._local(ex)
            lw = self.options["local_weight"]
            if local is None or lw is not None:
                texts.append(self._plain(ex))
                weights.append(w)
                owner.append(i)
            if local is not None:
                texts.append(local)
                weights.append(w if lw is None else float(lw) * w)
                owner.append(i)
            spans = marked_spans(ex.text)
            if spans and self.options["span_weight"] > 0:
                texts.append(" ".join(spans))
                weights.append(self.options["span_weight"] * w)
                owner.append(i)
        return texts, weights, owner

    def _score_matrix(self, vecs: np.ndarray, taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
        """Per row of vecs (N, D): category scores (N, C) and best subcategory/prototype index (N, C)."""
        cats, subs = self._category_vectors(taxonomy)
        desc = vecs @ cats.T * self.options["desc_weight"]  # (N, C)
        best = np.full(desc.shape, -1, dtype=np.int64)
        for i, sv in enumerate(subs):
            if len(sv):
                sims = vecs @ sv.T
                best[:, i] = sims.argmax(1)
                desc[:, i] += sims.max(1)
        return desc, best

    def _background(self, negatives: list[ExampleText], taxonomy: Taxonomy) -> np.ndarray | None:
        """Mean category scores (C,) of the negatives: how much each category attracts any text of this corpus."""
        texts = [self._plain(e) for e in negatives]
        if not texts:
            return None
        scores, _ = self._score_matrix(self.embed(texts), taxonomy)
        return scores.mean(0)

    def _aggregate(
        self, examples: list[tuple[ExampleText, float]], taxonomy: Taxonomy, background: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[int]] | None:
        """Category scores (C,) of a set of examples and the best subcategory per category.

        `background` (C,), when given, is subtracted from every example's scores before they vote.
        """
        texts, weights, _ = self._texts(examples)
        if not texts:
            return None
        vecs = self.embed(texts)
        w = np.asarray(weights, dtype=np.float32)
        mode = self.options["mode"]
        if mode == "mean":
            v = (w[:, None] * vecs).sum(0)
            v = v / max(float(np.linalg.norm(v)), 1e-9)
            scores, best = self._score_matrix(v[None, :], taxonomy)
            return scores[0], [int(b) for b in best[0]]
        scores, best = self._score_matrix(vecs, taxonomy)
        if background is not None:
            scores = scores - background[None, :]
        if mode == "vote":
            votes = np.zeros(scores.shape, dtype=np.float32)
            votes[np.arange(len(scores)), scores.argmax(1)] = 1.0
            agg = (w[:, None] * votes).sum(0) / w.sum()
            agg = agg + 1e-3 * (w[:, None] * scores).sum(0) / w.sum()  # tie-break by mean score
        else:
            agg = (w[:, None] * scores).sum(0) / w.sum()
        top_row = (w[:, None] * scores).argmax(0)
        return agg, [int(best[r, i]) for i, r in enumerate(top_row)]

    def _sub_name(self, taxonomy: Taxonomy, cat: int, idx: int) -> str | None:
        c = taxonomy.categories[cat]
        return c.subcategories[idx] if 0 <= idx < len(c.subcategories) else None

    def _label_sync(self, request: LabelRequest) -> LatentLabel:
        taxonomy = request.taxonomy
        qw = float(self.options["quantile_weight"])
        background = None
        if self.options["center"] and not request.hard_negatives and request.negative:
            background = self._background(request.negative, taxonomy)
        pos = self._aggregate([(e, 1.0) for e in request.top] + [(e, qw) for e in request.quantile], taxonomy,
                              background)
        if pos is None:
            raise JudgeError(f"latent {request.latent}: no example text to embed", "invalid")
        scores, best_sub = pos
        shares = scores.copy()
        # hard negatives share the top examples' topic: subtracting them would cancel the category signal,
        # so they only sharpen the name (characteristic spans), never the category
        if not request.hard_negatives and request.negative and self.options["neg_weight"]:
            neg = self._aggregate([(e, 1.0) for e in request.negative], taxonomy)
            if neg is not None:
                scores = scores - float(self.options["neg_weight"]) * neg[0]
        margin = self.options["other_margin"]
        if margin is not None and "other" in taxonomy.names:  # a concept must beat `other` by a margin
            scores = scores.copy()
            scores[taxonomy.names.index("other")] += float(margin)
        min_share = self.options["min_share"]
        if min_share is not None and self.options["mode"] == "vote" and "other" in taxonomy.names:
            o = taxonomy.names.index("other")
            rest = [i for i in range(len(scores)) if i != o]
            best = max(rest, key=lambda i: scores[i])
            if shares[best] < float(min_share):  # mixed evidence: no single concept (as the oracle says)
                scores = scores.copy()
                scores[o] = scores.max() + (float(min_share) - shares[best])
        order = np.argsort(-scores)
        p = _softmax(scores)
        top, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        category = taxonomy.categories[top]
        sub = self._sub_name(taxonomy, top, best_sub[top])
        spans = characteristic_spans(request.top + request.quantile, request.negative)
        shown = ", ".join(f"'{s}'" for s in spans[:3]) or "no marked tokens"
        runner_up = taxonomy.categories[second].name
        description = (
            f"Fires on {shown} in {category.name.replace('_', ' ')} text"
            f"{f' ({sub})' if sub else ''}. Nearest taxonomy category by MiniLM similarity of the "
            f"examples: {category.name} (score {scores[top]:.3f}; runner-up {runner_up} "
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
        # embedded as the labelling texts are (stripped under strip_special: index-stage cache hits; session 7)
        vecs = self.embed([label.text, *[self._plain(e) for e in examples]])
        sims = vecs[1:] @ vecs[0]
        bonus = np.asarray([any(_contains(t, s) for s in label.evidence) for t in texts], dtype=np.float32)
        score = sims + EVIDENCE_BONUS * bonus
        threshold = float(np.median(score))
        return [bool(s > threshold) for s in score]

    async def label(self, request: LabelRequest) -> LatentLabel:
        return await self._timed(self._label_sync, request)

    async def aclose(self) -> None:
        """Close the run's vector cache (reopened if the judge is used again)."""
        cache, self._vector_cache = self._vector_cache, None
        if cache is not None:
            cache.close()  # type: ignore[attr-defined]

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
