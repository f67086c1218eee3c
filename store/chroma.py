"""The Chroma store of a run: latent examples and labelled findings, with a typed query API.

Two collections (cosine space, embedded by `MiniLMEmbedding`):
  - `examples`: one document per example window (the text with activating tokens marked);
    metadata run, crosscoder, fingerprint, latent, kind, quantile (-1 = none), max_act, doc_id, ctx,
    start, plus tokens / activations as JSON strings so `ExampleText` can be rebuilt exactly.
  - `findings`: one document per (latent, pair): label name + description; scalar metadata for
    filtering (run, crosscoder, fingerprint, label, latent, pair, side, category, name, confidence,
    verification, delta_norm, judge, failed) plus the whole `Finding` as JSON for a lossless round trip.
Ids are deterministic, so re-indexing upserts instead of duplicating. Several runs may share one
store (a Chroma server); every read is restricted to this store's run.

A run's store is opened with a `StoreScope` (`LatentStore.for_run`): `fingerprint` is a hash of the
crosscoder's weights (crosscoder.safetensors) and `label` a hash of the label settings. Rows are
written with them (in the ids too) and every read is filtered on them, so examples and findings of
another crosscoder (a retrained one: `--from train crosscoder.seed=1`) or of an earlier label run with
other settings are never returned, whatever is still in the collection; `prune` deletes them.

Chroma metadata values must be scalars (str, int, float, bool): no None, no lists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings
from chromadb.errors import ChromaError

from latentdiff.config import RunConfig, StoreConfig
from latentdiff.records import Finding
from latentdiff.store.embeddings import MiniLMEmbedding, VectorCache, encode, without_special
from latentdiff.store.errors import StoreError
from latentdiff.store.records import ExampleHit, FindingHit, StoredExample

if TYPE_CHECKING:
    from latentdiff.core.examples import Example
    from latentdiff.rundir import RunDir

log = logging.getLogger(__name__)

EXAMPLES = "examples"
FINDINGS = "findings"
KIND_ORDER = {"top": 0, "quantile": 1, "negative": 2}
Where = dict[str, Any]


def _one_line(exc: BaseException) -> str:
    """First line of an exception message (or its type name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_url(url: str) -> tuple[str, int, bool]:
    """'http://host:port' -> (host, port, ssl); the scheme defaults to http, the port to 8000/443."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"store.url must look like http://host:port, got {url!r}")
    ssl = parts.scheme == "https"
    try:
        port = parts.port or (443 if ssl else 8000)
    except ValueError as exc:
        raise StoreError(f"bad port in store.url {url!r}") from exc
    return parts.hostname, port, ssl


NO_MATCH = "-"  # a fingerprint no row has: reads of a crosscoder the scope does not know return nothing


@dataclass(frozen=True)
class StoreScope:
    """Which rows of a run a store serves: those of these crosscoder weights, and findings of this
    label setting. Unscoped stores (scope None) write "" and read every row of the run."""

    fingerprints: Mapping[str, str] = field(default_factory=dict)  # crosscoder name -> hash of its weights
    label: str = ""  # hash of the label settings whose findings are served ("" = any)


def recorded_scope(rd: RunDir) -> StoreScope:
    """The scope a finished run's stages recorded: the crosscoder fingerprints in the index stage's marker
    and the label stage's settings hash (what `latentdiff.stages.store_scope` computes while they run).
    StoreError when either stage is not done."""
    fps = (rd.read_marker("index") or {}).get("fingerprints") or {}
    label = rd.marker_hash("label")
    if not fps or not label:
        raise StoreError(f"{rd.root}: the index and label stages are not done, so there is no labelled store to read")
    return StoreScope({name: rec["sha256"] for name, rec in fps.items() if isinstance(rec, dict) and rec.get("sha256")},
                      label=label)


def _source(crosscoder: str, fingerprint: str) -> str:
    return f"{crosscoder}@{fingerprint}" if fingerprint else crosscoder


def example_id(run: str, crosscoder: str, ex: Example, fingerprint: str = "") -> str:
    """Deterministic id of one example window for one latent (of the crosscoder with these weights)."""
    base = f"{run}:{_source(crosscoder, fingerprint)}:{ex.latent}:{ex.kind}:{ex.ctx}:{ex.start}"
    return base if ex.quantile is None else f"{base}:q{ex.quantile}"


def finding_id(run: str, finding: Finding, fingerprint: str = "", label: str = "") -> str:
    """Deterministic id of one finding: one per (latent, pair) of a crosscoder's weights and label setting."""
    base = f"{run}:{_source(finding.ref.crosscoder, fingerprint)}:{finding.ref.latent}:{finding.pair}"
    return f"{base}:{label}" if label else base


def _split_where(where: Where | None) -> list[Where]:
    """A plain multi-key filter {'a': 1, 'b': 2} becomes [{'a': 1}, {'b': 2}] (Chroma wants $and)."""
    if not where:
        return []
    if len(where) > 1 and not any(k.startswith("$") for k in where):
        return [{k: v} for k, v in where.items()]
    return [where]


class LatentStore:
    """Examples and findings of one run in Chroma (embedded on disk, or a `chroma run` server)."""

    def __init__(self, cfg: StoreConfig, run: str, default_path: str | Path | None = None,
                 scope: StoreScope | None = None) -> None:
        """Open (creating if needed) the store; `default_path` is used when `cfg.path` is None.

        `scope`: serve only rows of these crosscoder weights and label setting (see the module doc)."""
        self.cfg = cfg
        self.run = run
        self.scope = scope
        self.client = self._connect(cfg, default_path)
        self.embedding = MiniLMEmbedding(cfg.embedding_model)
        try:
            self.examples = self._collection(EXAMPLES)
            self.findings = self._collection(FINDINGS)
        except Exception:
            self.close()
            raise

    @classmethod
    def for_run(cls, cfg: RunConfig, path: str | Path | None = None) -> LatentStore:
        """A finished run's store: cfg.store, named after the run, embedded in RUN_DIR/chroma by default (or
        at `path`, e.g. a private copy), scoped to what the run's index and label stages recorded
        (`recorded_scope`: its crosscoder weights and label settings). The stages use `stages.open_store`."""
        from latentdiff.rundir import RunDir

        rd = RunDir(cfg.resolved_run_dir())
        store_cfg = cfg.store if path is None else cfg.store.model_copy(update={"path": str(path)})
        return cls(store_cfg, cfg.name, rd.chroma, scope=recorded_scope(rd))

    @staticmethod
    def _connect(cfg: StoreConfig, default_path: str | Path | None) -> ClientAPI:
        """Embedded PersistentClient when cfg.url is None, else an HttpClient (checked with a heartbeat)."""
        settings = Settings(anonymized_telemetry=False)
        if cfg.url is None:
            path = cfg.path or default_path
            if path is None:
                raise StoreError("no store path: set store.path or store.url")
            Path(path).mkdir(parents=True, exist_ok=True)
            log.info("opening embedded Chroma store at %s", path)
            return chromadb.PersistentClient(path=str(path), settings=settings)
        host, port, ssl = parse_url(cfg.url)
        try:
            client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
            client.heartbeat()
        except (ValueError, ChromaError, OSError) as exc:
            raise StoreError(f"cannot reach the Chroma server at {cfg.url}: {_one_line(exc)}") from exc
        log.info("connected to Chroma server %s", cfg.url)
        return client

    def _collection(self, name: str) -> Collection:
        """Get or create a cosine-space collection bound to this store's embedding function."""
        try:
            col = self.client.get_or_create_collection(
                name,
                embedding_function=self.embedding,  # type: ignore[arg-type]
                configuration={"hnsw": {"space": "cosine"}},
            )
        except (ValueError, ChromaError) as exc:
            raise StoreError(f"cannot open Chroma collection {name!r}: {_one_line(exc)}") from exc
        persisted = (col.configuration_json or {}).get("embedding_function") or {}
        model = (persisted.get("config") or {}).get("model")
        if model is not None and model != self.cfg.embedding_model:
            raise StoreError(
                f"collection {name!r} was embedded with {model!r}, not store.embedding_model="
                f"{self.cfg.embedding_model!r}; use another store path or the same model"
            )
        return col

    def close(self) -> None:
        """Release the client (embedded: its files; server: its HTTP connections)."""
        servers = [getattr(self.client, "_server", None)]
        servers.append(getattr(getattr(self.client, "_admin_client", None), "_server", None))
        self.client.close()
        if self.cfg.url is not None:
            # chromadb's HttpClient (and its internal admin client) each own an httpx session that
            # close() never closes (ResourceWarning: unclosed socket). Each HttpClient has its own
            # system, so nothing else shares these sessions.
            for server in servers:
                session = getattr(server, "_session", None)
                if session is not None and hasattr(session, "close"):
                    session.close()

    def __enter__(self) -> LatentStore:
        """Use as a context manager: closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the store."""
        self.close()

    # -- helpers ---------------------------------------------------------------------------

    def batch_size(self) -> int:
        """Upsert batch: store.batch_size capped by the client's maximum."""
        limit = self.client.get_max_batch_size()
        return min(self.cfg.batch_size, limit) if limit > 0 else self.cfg.batch_size

    def _where(self, *clauses: Where | None) -> Where:
        """Restrict a filter to this run; several clauses are combined with $and."""
        parts: list[Where] = [{"run": self.run}]
        for clause in clauses:
            parts += _split_where(clause)
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def fingerprint(self, crosscoder: str) -> str:
        """The fingerprint rows of `crosscoder` are written with ("" unscoped); StoreError if the scope lacks it."""
        if self.scope is None:
            return ""
        fp = self.scope.fingerprints.get(crosscoder)
        if not fp:
            raise StoreError(f"no fingerprint for crosscoder {crosscoder!r} (is crosscoders/{crosscoder} trained?)")
        return fp

    def _in_scope(self, crosscoder: str | None = None, findings: bool = False) -> Where | None:
        """The scope's filter: this crosscoder's fingerprint (or any of the scope's), and for findings
        the label setting. None when unscoped."""
        if self.scope is None:
            return None
        fps = self.scope.fingerprints
        if crosscoder is not None:
            clause: Where = {"fingerprint": fps.get(crosscoder) or NO_MATCH}
        else:
            clause = {"fingerprint": {"$in": sorted(set(fps.values())) or [NO_MATCH]}}
        if findings and self.scope.label:
            return {"$and": [clause, {"label": self.scope.label}]}
        return clause

    @staticmethod
    def _crosscoder_of(where: Where | None) -> str | None:
        """The crosscoder a caller's plain filter names, if it names exactly one."""
        value = (where or {}).get("crosscoder")
        return value if isinstance(value, str) else None

    def prune(self, examples: bool = True) -> int:
        """Delete this run's rows outside the scope (another crosscoder's weights, other label settings);
        return how many. No-op when unscoped. `examples=False` prunes the findings only (the label stage:
        the index stage pruned the examples under the same weights)."""
        if self.scope is None:
            return 0
        n = 0
        cols = ((self.examples, False), (self.findings, True)) if examples else ((self.findings, True),)
        for col, findings in cols:
            keep = {i for i, _, _ in self._get(col, self._where(self._in_scope(findings=findings)), [])}
            stale = [i for i, _, _ in self._get(col, self._where(), []) if i not in keep]
            size = max(self.batch_size(), 1)
            for start in range(0, len(stale), size):
                col.delete(ids=stale[start : start + size])
            n += len(stale)
        if n:
            log.info("store: removed %d rows of other crosscoder weights or label settings", n)
        return n

    def _upsert(
        self,
        col: Collection,
        rows: Iterable[tuple[str, str, dict[str, Any], str | None]],
        vectors: VectorCache | None = None,
    ) -> int:
        """Upsert (id, document, metadata, embed text) rows in batches; duplicate ids keep the last row.

        embed text None: the collection's embedding function embeds the document. Otherwise the row's
        vector is that text's, from `encode` through `vectors` (each distinct text embedded once).
        """
        size, total = self.batch_size(), 0
        batch: dict[str, tuple[str, dict[str, Any], str | None]] = {}

        def flush() -> int:
            if not batch:
                return 0
            ids = list(batch)
            docs = [batch[i][0] for i in ids]
            metas = [batch[i][1] for i in ids]
            to_embed = [batch[i][2] for i in ids]
            if all(t is not None for t in to_embed):
                vecs = encode([t or "" for t in to_embed], self.cfg.embedding_model, cache=vectors)  # [n, dim]
                col.upsert(ids=ids, documents=docs, metadatas=metas, embeddings=vecs)  # type: ignore[arg-type]
            else:
                col.upsert(ids=ids, documents=docs, metadatas=metas)  # type: ignore[arg-type]
            n = len(ids)
            batch.clear()
            return n

        for id_, doc, meta, embed_text in rows:
            if id_ not in batch and len(batch) >= size:
                total += flush()
            batch[id_] = (doc, meta, embed_text)
        total += flush()
        log.debug("upserted %d rows into %s", total, col.name)
        return total

    def _get(self, col: Collection, where: Where, include: Sequence[str]) -> Iterator[tuple[str, Any, Any]]:
        """Page through `col.get` -> (id, document, metadata) rows (None where not included)."""
        page, offset = max(self.batch_size(), 1), 0
        while True:
            res = col.get(where=where, include=list(include), limit=page, offset=offset)  # type: ignore[arg-type]
            ids = res["ids"]
            docs = res.get("documents") or [None] * len(ids)
            metas = res.get("metadatas") or [None] * len(ids)
            yield from zip(ids, docs, metas)
            if len(ids) < page:
                return
            offset += page

    def _query(
        self, col: Collection, query: str, n: int, where: Where | None
    ) -> list[tuple[str, Any, Any, float]]:
        """Nearest documents to a text -> [(id, document, metadata, distance)], closest first."""
        scope = self._in_scope(self._crosscoder_of(where), findings=col is self.findings)
        res = col.query(
            query_texts=[query],
            n_results=n,
            where=self._where(where, scope),
            include=["documents", "metadatas", "distances"],  # type: ignore[list-item]
        )
        ids, docs, metas, dists = res["ids"], res["documents"], res["metadatas"], res["distances"]
        if not ids or not docs or not metas or not dists:
            return []
        return list(zip(ids[0], docs[0], metas[0], dists[0]))

    # -- examples --------------------------------------------------------------------------

    def add_examples(
        self, crosscoder: str, examples: Iterable[Example], vectors: VectorCache | None = None
    ) -> int:
        """Index a crosscoder's examples (streamed, batched); return how many were upserted.

        The document is the marked text (what the judge and the chat show); its vector is the unmarked
        window's without chat-template tokens (`embeddings.without_special`, the text the embedding judge
        embeds), so the same window shown for many latents is embedded once per run (through `vectors`, or
        an in-memory cache for this call) and semantic search does not depend on which tokens are marked.
        """
        fp = self.fingerprint(crosscoder)
        vectors = vectors if vectors is not None else VectorCache()

        def rows() -> Iterator[tuple[str, str, dict[str, Any], str | None]]:
            for ex in examples:
                meta = {
                    "run": self.run,
                    "crosscoder": crosscoder,
                    "fingerprint": fp,
                    "latent": int(ex.latent),
                    "kind": ex.kind,
                    "quantile": -1 if ex.quantile is None else int(ex.quantile),
                    "max_act": float(ex.max_act),
                    "doc_id": int(ex.doc_id),
                    "ctx": int(ex.ctx),
                    "start": int(ex.start),
                    "tokens": json.dumps(ex.tokens, ensure_ascii=False),
                    "activations": json.dumps(ex.activations),
                }
                vector_text = without_special("".join(ex.tokens))
                yield example_id(self.run, crosscoder, ex, fp), ex.marked_text(), meta, vector_text

        return self._upsert(self.examples, rows(), vectors)

    @staticmethod
    def _stored_example(id_: str, doc: str, meta: dict[str, Any]) -> StoredExample:
        """Chroma row -> StoredExample."""
        q = int(meta["quantile"])
        return StoredExample(
            id=id_,
            run=meta["run"],
            crosscoder=meta["crosscoder"],
            latent=int(meta["latent"]),
            kind=meta["kind"],
            quantile=None if q < 0 else q,
            ctx=int(meta["ctx"]),
            start=int(meta["start"]),
            doc_id=int(meta["doc_id"]),
            max_act=float(meta["max_act"]),
            text=doc,
            tokens=json.loads(meta.get("tokens", "[]")),
            activations=json.loads(meta.get("activations", "[]")),
        )

    def examples_for(
        self, crosscoder: str, latent: int, kinds: Sequence[str] | None = None
    ) -> list[StoredExample]:
        """A latent's examples: top, then quantile, then negative; highest activation first."""
        clauses: list[Where] = [{"crosscoder": crosscoder}, {"latent": int(latent)}]
        if kinds is not None:
            clauses.append({"kind": {"$in": list(kinds)}})
        rows = self._get(self.examples, self._where(*clauses, self._in_scope(crosscoder)), ["documents", "metadatas"])
        out = [self._stored_example(i, d, m) for i, d, m in rows]
        return sorted(out, key=lambda e: (KIND_ORDER[e.kind], -e.max_act, e.ctx, e.start))

    def examples_for_many(self, crosscoder: str, latents: Sequence[int]) -> dict[int, list[StoredExample]]:
        """`examples_for` of several latents in one query (a third of the time per latent on the demo)."""
        out: dict[int, list[StoredExample]] = {int(lat): [] for lat in latents}
        if not out:
            return out
        where = self._where({"crosscoder": crosscoder}, {"latent": {"$in": list(out)}}, self._in_scope(crosscoder))
        for i, d, m in self._get(self.examples, where, ["documents", "metadatas"]):
            out[int(m["latent"])].append(self._stored_example(i, d, m))
        for exs in out.values():
            exs.sort(key=lambda e: (KIND_ORDER[e.kind], -e.max_act, e.ctx, e.start))
        return out

    def search_examples(self, query: str, n: int = 10, where: Where | None = None) -> list[ExampleHit]:
        """The n examples of this run closest in meaning to `query` (optionally filtered)."""
        hits = self._query(self.examples, query, n, where)
        return [
            ExampleHit(example=self._stored_example(i, d, m), distance=float(dist)) for i, d, m, dist in hits
        ]

    def count_examples(self) -> int:
        """Number of examples stored for this run."""
        return sum(1 for _ in self._get(self.examples, self._where(self._in_scope()), []))

    def latent_ids(self, crosscoder: str) -> list[int]:
        """Sorted latent ids of a crosscoder that have examples in this run."""
        rows = self._get(self.examples, self._where({"crosscoder": crosscoder}, self._in_scope(crosscoder)),
                         ["metadatas"])
        return sorted({int(m["latent"]) for _, _, m in rows})

    # -- findings --------------------------------------------------------------------------

    def upsert_findings(self, findings: Iterable[Finding], vectors: VectorCache | None = None) -> int:
        """Index findings (one per latent and pair); return how many were upserted.

        A finding's document is its label's text (`LatentLabel.text`); with `vectors` (the run's cache), a label
        the embedding judge already embedded is not embedded again.
        """

        setting = self.scope.label if self.scope is not None else ""

        def rows() -> Iterator[tuple[str, str, dict[str, Any], str | None]]:
            for f in findings:
                fp = self.fingerprint(f.ref.crosscoder)
                label = f.label
                if label is not None:
                    doc = label.text
                else:
                    doc = f"unlabelled latent {f.ref.key}: {f.failure or 'no label'}"
                meta = {
                    "run": self.run,
                    "crosscoder": f.ref.crosscoder,
                    "fingerprint": fp,
                    "label": setting,
                    "latent": int(f.ref.latent),
                    "pair": f.pair,
                    "side": f.side,
                    "category": label.category if label else "",
                    "name": label.name if label else "",
                    "confidence": float(label.confidence) if label else -1.0,
                    "verification": -1.0 if f.verification is None else float(f.verification),
                    "delta_norm": float(f.delta_norm),
                    "judge": label.judge if label else "",
                    "failed": label is None or f.failure is not None,
                    "finding": f.model_dump_json(),
                }
                yield finding_id(self.run, f, fp, setting), doc, meta, doc if vectors is not None else None

        return self._upsert(self.findings, rows(), vectors)

    def get_finding(self, crosscoder: str, latent: int, pair: str | None = None) -> list[Finding]:
        """Findings of one latent (all pairs, or one), sorted by pair."""
        clauses: list[Where] = [{"crosscoder": crosscoder}, {"latent": int(latent)}]
        if pair is not None:
            clauses.append({"pair": pair})
        rows = self._get(self.findings, self._where(*clauses, self._in_scope(crosscoder, findings=True)),
                         ["metadatas"])
        out = [Finding.model_validate_json(m["finding"]) for _, _, m in rows]
        return sorted(out, key=lambda f: f.pair)

    def search_findings(self, query: str, n: int = 10, where: Where | None = None) -> list[FindingHit]:
        """The n findings of this run closest in meaning to `query` (optionally filtered)."""
        return [
            FindingHit(finding=Finding.model_validate_json(m["finding"]), distance=float(dist))
            for _, _, m, dist in self._query(self.findings, query, n, where)
        ]

    def iter_findings(self) -> Iterator[Finding]:
        """Every finding of this run in the store (paged)."""
        for _, _, meta in self._get(self.findings, self._where(self._in_scope(findings=True)), ["metadatas"]):
            yield Finding.model_validate_json(meta["finding"])

    def count_findings(self) -> int:
        """Number of findings stored for this run."""
        return sum(1 for _ in self._get(self.findings, self._where(self._in_scope(findings=True)), []))
