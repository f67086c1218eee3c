"""The Chroma store: ids, batching, typed queries, filters, semantic search, findings, persistence.

Examples are built by hand (no crosscoder). The embedding model is the bundled all-MiniLM-L6-v2
(no network). `test_server_*` runs the same path against a real `chroma run` server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from latentdiff.config import StoreConfig
from latentdiff.core.examples import Example
from latentdiff.errors import LatentDiffError
from latentdiff.records import ExampleText, Finding, LatentLabel, LatentRef
from latentdiff.store.chroma import LatentStore, parse_url
from latentdiff.store.embeddings import MiniLMEmbedding, VectorCache, default_model_dir, encode
from latentdiff.store.errors import StoreError

SENTENCES = [
    "The recipe says to knead the dough and bake the bread for forty minutes.",
    "The striker scored twice in the second half of the football match.",
    "El gato duerme en el sofá toda la tarde.",
    "Stock prices fell sharply after the earnings report.",
]


def make_example(
    latent: int, ctx: int, kind: str = "top", text: str | None = None, act: float = 1.0, q: int | None = None
) -> Example:
    """A hand-made window: the second token carries the activation."""
    words = (text or f"window {ctx} of latent {latent} here").split(" ")
    tokens = [words[0]] + [" " + w for w in words[1:]]
    acts = [0.0] * len(tokens)
    if kind != "negative":
        acts[1] = act
    return Example(
        latent=latent,
        kind=kind,  # type: ignore[arg-type]
        quantile=q,
        ctx=ctx,
        start=0,
        tokens=tokens,
        activations=acts,
        max_act=max(acts),
        doc_id=100 + ctx,
        category="neutral",
    )


def make_finding(latent: int, pair: str, name: str, description: str, category: str = "safety") -> Finding:
    """A labelled finding."""
    label = LatentLabel(
        name=name, description=description, category=category, confidence=0.8, evidence=["x"], judge="fake"
    )
    return Finding(
        ref=LatentRef(crosscoder="joint", latent=latent),
        pair=pair,
        side="finetuned",
        delta_norm=0.93,
        nu_eps=0.1,
        label=label,
        verification=0.75,
        attempts=1,
        doc_ids=[1, 2],
    )


def open_store(path: Path, run: str = "r1", **kw: object) -> LatentStore:
    """An embedded store under `path`."""
    return LatentStore(StoreConfig(path=str(path / "chroma"), **kw), run)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LatentStore]:
    """A fresh embedded store."""
    s = open_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_embeddings_are_unit_vectors_and_chroma_compatible() -> None:
    ef = MiniLMEmbedding()
    vecs = encode(["a short sentence", "another, somewhat longer sentence about cats"] * 3, batch_size=4)
    assert vecs.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-5)  # batching does not change results
    assert not ef.is_legacy()
    assert MiniLMEmbedding.build_from_config(ef.get_config()).get_config() == ef.get_config()
    same = MiniLMEmbedding(str(default_model_dir()))(["a short sentence"])
    np.testing.assert_allclose(same[0], vecs[0], atol=1e-6)


def test_embeddings_load_offline_without_network() -> None:
    code = (
        "import socket\n"
        "def no_net(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = no_net\n"
        "socket.create_connection = no_net\n"
        "from latentdiff.store.embeddings import encode\n"
        "assert encode(['offline please']).shape == (1, 384)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_vector_cache_embeds_each_distinct_text_once_across_processes(tmp_path: Path) -> None:
    texts = ["a cat sat on the mat", "the dog barked", "a cat sat on the mat", "rain tomorrow"]
    plain = encode(texts)
    cache = VectorCache(tmp_path / "vectors.sqlite")
    got = encode(texts, cache=cache)
    assert (cache.misses, cache.hits) == (3, 0) and len(cache) == 3
    np.testing.assert_allclose(got, plain, atol=1e-6)
    cache.close()
    code = (  # another process (the label stage) reads what this one (the index stage) stored
        "import sys\n"
        "from latentdiff.store import embeddings as e\n"
        "e._encode_model = None  # any new encode would fail: everything must come from the cache\n"
        "c = e.VectorCache(sys.argv[1])\n"
        f"v = e.encode({texts[:2]!r}, cache=c)\n"
        "assert (c.hits, c.misses) == (2, 0), (c.hits, c.misses)\n"
        "print(v[1][:3].tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "vectors.sqlite")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(eval(done.stdout.strip()), plain[1][:3], atol=1e-6)


def test_index_embeds_each_window_once_and_searches_unmarked_text(store: LatentStore, tmp_path: Path) -> None:
    # the same four windows shown for three latents with different marked tokens: 12 rows, 4 embeddings
    exs = [make_example(lat, ctx, text=SENTENCES[ctx], act=1.0 + lat) for lat in range(3) for ctx in range(4)]
    for lat, ex in enumerate(exs):
        ex.activations = [0.0] * len(ex.tokens)
        ex.activations[lat % len(ex.tokens)] = ex.max_act
    cache = VectorCache(tmp_path / "vectors.sqlite")
    assert store.add_examples("joint", exs, cache) == 12
    assert (cache.misses, len(cache)) == (4, 4)
    assert store.examples_for("joint", 1)[0].text != store.examples_for("joint", 2)[0].text  # marks kept
    hit = store.search_examples("a cat sleeping on the couch", n=1)[0]
    assert hit.example.plain == SENTENCES[2] and "<<" in hit.example.text


def test_upsert_is_idempotent(store: LatentStore) -> None:
    exs = [make_example(i % 3, i) for i in range(8)] + [make_example(0, 1, "quantile", q=2)]
    assert store.add_examples("joint", exs) == 9
    assert store.add_examples("joint", exs) == 9
    assert store.count_examples() == 9
    assert store.add_examples("joint", exs + exs) == 9  # duplicates inside one call collapse
    assert store.count_examples() == 9


def test_upserts_respect_max_batch_size(store: LatentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.client, "get_max_batch_size", lambda: 3)
    sizes: list[int] = []
    upsert = store.examples.upsert

    def spy(**kw: object) -> None:
        sizes.append(len(kw["ids"]))  # type: ignore[arg-type]
        upsert(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store.examples, "upsert", spy)
    assert store.add_examples("joint", (make_example(1, i) for i in range(10))) == 10
    assert sizes == [3, 3, 3, 1]
    assert store.count_examples() == 10


def test_typed_queries(store: LatentStore) -> None:
    exs = [
        make_example(5, 0, act=2.0),
        make_example(5, 1, act=4.0),
        make_example(5, 2, "quantile", act=0.5, q=0),
        make_example(5, 3, "negative"),
        make_example(7, 4, act=1.0),
    ]
    store.add_examples("joint", exs)
    store.add_examples("other", [make_example(9, 0)])
    got = store.examples_for("joint", 5)
    assert [(e.kind, e.ctx) for e in got] == [("top", 1), ("top", 0), ("quantile", 2), ("negative", 3)]
    assert got[0].id == "r1:joint:5:top:1:0" and got[2].id == "r1:joint:5:quantile:2:0:q0"
    assert got[2].quantile == 0 and got[0].quantile is None
    assert [e.kind for e in store.examples_for("joint", 5, kinds=["negative"])] == ["negative"]
    assert store.latent_ids("joint") == [5, 7] and store.latent_ids("other") == [9]
    text = got[0].to_example_text()
    assert isinstance(text, ExampleText)
    assert text.text == exs[1].marked_text() == "window<< 1>> of latent 5 here"
    assert text.plain == "window 1 of latent 5 here"
    assert text.tokens == exs[1].tokens and text.activations == exs[1].activations
    assert (text.max_act, text.doc_id, text.kind) == (4.0, 101, "top")


def test_examples_for_many_equals_one_query_per_latent(store: LatentStore) -> None:
    exs = [make_example(lat, ctx, kind, act=1.0 + ctx) for lat in range(4) for ctx in range(3)
           for kind in ("top", "negative")]
    store.add_examples("joint", exs)
    many = store.examples_for_many("joint", [2, 0, 3, 7])
    assert set(many) == {0, 2, 3, 7} and many[7] == []
    for lat in (0, 2, 3):
        assert [e.id for e in many[lat]] == [e.id for e in store.examples_for("joint", lat)]
        assert len(many[lat]) == 6


def test_metadata_filter_and_run_isolation(tmp_path: Path) -> None:
    with open_store(tmp_path, "r1") as one, open_store(tmp_path, "r2") as two:
        one.add_examples("joint", [make_example(1, i, text=s) for i, s in enumerate(SENTENCES)])
        one.add_examples("joint", [make_example(2, 9, "negative", text=SENTENCES[0])])
        two.add_examples("joint", [make_example(1, 0, text=SENTENCES[0])])
        assert (one.count_examples(), two.count_examples()) == (5, 1)
        hits = one.search_examples("bread", n=10, where={"kind": "negative"})
        assert [(h.example.latent, h.example.kind) for h in hits] == [(2, "negative")]
        hits = one.search_examples("bread", n=10, where={"latent": 1, "kind": "top"})
        assert len(hits) == 4 and {h.example.run for h in hits} == {"r1"}
        assert [h.example.run for h in two.search_examples("bread", n=10)] == ["r2"]


def test_semantic_search_ranks_the_match_first(store: LatentStore) -> None:
    store.add_examples("joint", [make_example(i, i, text=s) for i, s in enumerate(SENTENCES)])
    spanish = store.search_examples("texto en español", n=4)
    assert spanish[0].example.latent == 2
    assert spanish[0].distance < spanish[1].distance
    baking = store.search_examples("baking bread in the oven", n=2)
    assert baking[0].example.latent == 0 and len(baking) == 2


def test_findings_round_trip(store: LatentStore) -> None:
    refusal = make_finding(3, "it", "Refusals", "The model declines harmful or dangerous requests.")
    spanish = make_finding(
        4, "it", "Spanish text", "Spanish and French text: non-English tokens.", "multilingual"
    )
    control = make_finding(3, "null", "Refusals", "The model declines harmful or dangerous requests.")
    failed = Finding(
        ref=LatentRef(crosscoder="joint", latent=8),
        pair="it",
        side="base",
        delta_norm=0.1,
        failure="judge answer did not parse",
        attempts=3,
    )
    assert store.upsert_findings([refusal, spanish, control, failed]) == 4
    assert store.upsert_findings([refusal, spanish, control, failed]) == 4
    assert store.count_findings() == 4
    assert store.get_finding("joint", 3) == [refusal, control]
    assert store.get_finding("joint", 3, pair="null") == [control]
    assert store.get_finding("joint", 8) == [failed]
    hits = store.search_findings("I cannot help with that dangerous request", n=2, where={"pair": "it"})
    assert hits[0].finding == refusal
    multi = store.search_findings("multilingual content", n=1, where={"category": "multilingual"})
    assert [h.finding for h in multi] == [spanish]
    failed_hits = store.search_findings("anything", n=5, where={"failed": True})
    assert [h.finding for h in failed_hits] == [failed]


def test_embedded_store_persists_across_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        s.add_examples("joint", [make_example(1, i) for i in range(4)])
        s.upsert_findings([make_finding(1, "it", "Refusals", "Declines requests.")])
    with open_store(tmp_path) as s:
        assert (s.count_examples(), s.count_findings()) == (4, 1)
        assert [e.ctx for e in s.examples_for("joint", 1)] == [0, 1, 2, 3]
        assert s.examples.configuration_json["embedding_function"]["name"] == "latentdiff_minilm"
    with pytest.raises(StoreError, match="was embedded with 'default'"):
        open_store(tmp_path, embedding_model=str(default_model_dir()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on a free local port; yields its URL."""
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.fail(f"chroma executable not found next to {sys.executable}")
    root = tmp_path_factory.mktemp("chroma_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "wb") as logf:
        proc = subprocess.Popen(
            [str(exe), "run", "--path", str(root / "db"), "--port", str(port), "--host", "127.0.0.1"],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited with {proc.returncode}: {(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chroma run did not answer in 60 s: {(root / 'server.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_mode_upsert_and_query(chroma_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with LatentStore(StoreConfig(url=chroma_server, batch_size=4), "srv") as s:
        monkeypatch.setattr(s.client, "get_max_batch_size", lambda: 3)
        exs = [make_example(i, i, text=t) for i, t in enumerate(SENTENCES)]
        exs += [make_example(9, 10 + i) for i in range(6)]
        assert s.add_examples("joint", exs) == 10
        assert s.add_examples("joint", exs) == 10
        assert s.count_examples() == 10
        assert s.search_examples("texto en español", n=3)[0].example.latent == 2
        assert [e.ctx for e in s.examples_for("joint", 9)] == list(range(10, 16))
        finding = make_finding(2, "it", "Spanish text", "Spanish sentences.", "multilingual")
        s.upsert_findings([finding])
        assert s.get_finding("joint", 2) == [finding]
    with LatentStore(StoreConfig(url=chroma_server), "srv") as again:
        assert (again.count_examples(), again.count_findings()) == (10, 1)


def test_unreachable_server_is_one_line_store_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(StoreError) as info:
        LatentStore(StoreConfig(url=url), "r1")
    assert isinstance(info.value, LatentDiffError)
    assert "\n" not in str(info.value) and url in str(info.value)


def test_parse_url() -> None:
    assert parse_url("http://localhost:8123") == ("localhost", 8123, False)
    assert parse_url("https://chroma.example.org") == ("chroma.example.org", 443, True)
    assert parse_url("127.0.0.1:9000") == ("127.0.0.1", 9000, False)
    with pytest.raises(StoreError):
        parse_url("ftp://host:1")
