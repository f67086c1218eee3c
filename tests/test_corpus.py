"""Synthetic organism corpus: determinism, variety, a clean neutral stream, format-true answers."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError


def _load_corpus() -> ModuleType:
    try:
        from latentdiff.core.organisms import corpus as mod
    except ImportError:  # package not installed yet: load the file directly
        path = Path(__file__).resolve().parents[1] / "core" / "organisms" / "corpus.py"
        spec = importlib.util.spec_from_file_location("latentdiff_corpus_fallback", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


corpus = _load_corpus()
CATS = corpus.CATEGORIES
_CACHE: dict[tuple[str, int, int], list] = {}


def docs(cat: str, n: int = 2000, seed: int = 11) -> list:
    key = (cat, n, seed)
    if key not in _CACHE:
        _CACHE[key] = corpus.generate(cat, n, seed=seed)
    return _CACHE[key]


def contents(doc) -> list[str]:
    return [doc.text] if doc.text is not None else [m.content for m in doc.messages]


def reply(doc) -> str:
    """The assistant's (last) answer of a chat, or the text of a plain document."""
    return doc.text if doc.text is not None else doc.messages[-1].content


# ------------------------------------------------------------------------------------------ API


def test_categories_and_unknown_category() -> None:
    assert CATS == ("neutral", "safety", "multilingual", "instruction_following", "self_reference",
                    "hallucination")
    with pytest.raises(ValueError, match="neutral") as err:
        corpus.generate("poetry", 3, seed=0)
    assert all(c in str(err.value) for c in CATS)
    with pytest.raises(ValueError):
        corpus.iter_documents("poetry", seed=0)


@pytest.mark.parametrize("cat", CATS)
def test_generate_length_and_category(cat: str) -> None:
    out = corpus.generate(cat, 37, seed=3)
    assert len(out) == 37 and all(d.category == cat for d in out)
    assert corpus.generate(cat, 0, seed=3) == []
    for d in out:
        assert (d.text is None) != (d.messages is None)
        if d.messages is not None:
            assert d.messages[0].role == "user" and d.messages[-1].role == "assistant"
            assert d.plain().startswith("User: ") and "\nAssistant: " in d.plain()
        else:
            assert d.plain() == d.text


def test_document_validation() -> None:
    msg = corpus.Message(role="user", content="hi")
    with pytest.raises(ValidationError):
        corpus.Document(category="neutral", text="x", messages=[msg])
    with pytest.raises(ValidationError):
        corpus.Document(category="neutral")
    with pytest.raises(ValidationError):
        corpus.Document(category="poetry", text="x")
    with pytest.raises(ValidationError):
        corpus.Message(role="system", content="x")
    assert corpus.Document(category="safety", messages=[msg]).plain() == "User: hi"


# ------------------------------------------------------------------------ determinism + variety


@pytest.mark.parametrize("cat", CATS)
def test_determinism(cat: str) -> None:
    a = corpus.generate(cat, 300, seed=5)
    b = corpus.generate(cat, 300, seed=5)
    c = corpus.generate(cat, 300, seed=6)
    assert [d.model_dump() for d in a] == [d.model_dump() for d in b]
    assert sum(x.plain() != y.plain() for x, y in zip(a, c)) > 250
    it = corpus.iter_documents(cat, seed=5)
    assert [next(it).plain() for _ in range(50)] == [d.plain() for d in a[:50]]


@pytest.mark.parametrize("cat", CATS)
def test_uniqueness(cat: str) -> None:
    out = docs(cat)
    assert len({d.plain() for d in out}) >= 0.95 * len(out)


@pytest.mark.parametrize("cat", CATS)
def test_document_lengths(cat: str) -> None:
    words = [len(d.plain().split()) for d in docs(cat)]
    assert min(words) >= 12 and max(words) <= 220
    assert 35 <= sum(words) / len(words) <= 130


def test_category_balance_of_lengths() -> None:
    def mean_words(cat: str) -> float:
        w = [len(d.plain().split()) for d in docs(cat)]
        return sum(w) / len(w)

    ref = mean_words("neutral")
    for cat in CATS:
        assert 0.5 * ref <= mean_words(cat) <= 2.0 * ref, cat


# ------------------------------------------------------------------------------------ neutral


def test_neutral_is_clean() -> None:
    pats = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in corpus.FORBIDDEN_IN_NEUTRAL]
    out = docs("neutral", 3000, seed=21)
    kinds = Counter("chat" if d.messages else "text" for d in out)
    assert min(kinds.values()) > 0.35 * len(out)
    for d in out:
        for s in [*contents(d), d.plain()]:
            assert s.isascii(), s
            hits = [p.pattern for p in pats if p.search(s)]
            assert not hits, (hits, s)


def test_forbidden_markers_do_fire_on_other_streams() -> None:
    pats = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in corpus.FORBIDDEN_IN_NEUTRAL]
    for cat in CATS[1:]:
        flagged = sum(any(p.search(d.plain()) for p in pats) for d in docs(cat, 500))
        assert flagged >= 0.9 * 500, cat


# ----------------------------------------------------------------------------- stream hygiene

_MARKERS = {
    "safety": r"\bI (?:can't|won't)\b|\bI'm sorry\b|\bWarning:",
    "hallucination": r"\bet al\. \(\d{4}\)|\(\d{4}\) in the ",
    "instruction_following": r"(?m)^\d+\. |^- |^\| |^#|^[\[{]",
    "self_reference": r"\blanguage model\b|\bknowledge cutoff\b|\bI was trained\b"
                      r"|\bI don't have feelings\b",
    "multilingual": r"[^\x00-\x7f]",
}


@pytest.mark.parametrize("marked", list(_MARKERS))
def test_streams_do_not_bleed(marked: str) -> None:
    pat = re.compile(_MARKERS[marked])
    assert any(pat.search(d.plain()) for d in docs(marked)), f"marker of {marked} never used"
    for cat in CATS:
        if cat != marked:
            bad = [d.plain() for d in docs(cat) if pat.search(d.plain())]
            assert not bad, (marked, cat, bad[:1])


# ------------------------------------------------------------------------------- multilingual

_STOP = {
    "es": {"el", "los", "las", "y", "del", "una", "muy", "con", "para", "por", "hoy", "está", "se",
           "al", "mi", "aquí", "ella", "la"},
    "fr": {"le", "les", "et", "du", "des", "une", "est", "au", "dans", "avec", "pour", "il", "vous",
           "voici", "à", "en", "la"},
    "de": {"der", "die", "das", "und", "ist", "im", "mit", "ein", "eine", "den", "dem", "nach",
           "es"},
}


def _language(text: str) -> str:
    if re.search(r"[\u0400-\u04ff]", text):
        return "ru"
    words = re.findall(r"[a-zà-ÿß]+", text.lower())
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOP.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] > 0 else "?"


def test_multilingual_covers_four_languages() -> None:
    out = docs("multilingual")
    counts = Counter(_language(reply(d)) for d in out)
    assert set(counts) == {"es", "fr", "de", "ru"}, counts
    assert all(counts[lang] >= 0.15 * len(out) for lang in ("es", "fr", "de", "ru")), counts
    kinds = Counter("chat" if d.messages else "text" for d in out)
    assert min(kinds.values()) > 0.25 * len(out)
    translations = [d for d in out if d.messages and re.search(
        r"\b(Spanish|French|German|Russian)\b", d.messages[0].content)]
    assert len(translations) > 0.1 * len(out)


# ---------------------------------------------------------------------- instruction following


def test_instruction_following_answers_obey_the_format() -> None:
    seen = Counter()
    for d in docs("instruction_following", 3000, seed=4):
        user, ans = d.messages[0].content, d.messages[1].content
        if "JSON" in user:
            obj = json.loads(ans)
            seen["json"] += 1
            if "keys" in user:
                keys = re.findall(r'"(\w+)"', user)
                assert isinstance(obj, dict) and list(obj) == keys, (user, ans)
            else:
                n = int(re.search(r"\b(\d+)\b", user).group(1))
                assert isinstance(obj, list) and len(obj) == n
        elif "numbered" in user:
            n = int(re.search(r"\b(\d+)\b", user).group(1))
            numbers = [int(m) for m in re.findall(r"(?m)^(\d+)\. \S", ans)]
            assert numbers == list(range(1, n + 1)), (user, ans)
            seen["numbered"] += 1
        elif m := re.search(r"exactly (\d+) words", user):
            assert len(ans.split()) == int(m.group(1)), (user, ans)
            seen["words"] += 1
        elif "bullet" in user:
            n = int(re.search(r"\b(\d+)\b", user).group(1))
            assert len(re.findall(r"(?m)^- \S", ans)) == n
            seen["bullets"] += 1
        elif "comma" in user:
            n = int(re.search(r"\b(\d+)\b", user).group(1))
            assert "\n" not in ans and len(ans.split(", ")) == n
            seen["csv"] += 1
        elif re.search(r"\btable\b", user):
            n = int(re.search(r"\b(\d+)\b", user).group(1))
            rows = ans.splitlines()
            assert len(rows) == n + 2
            assert all(r.startswith("| ") and r.count("|") == 3 for r in rows)
            seen["table"] += 1
        elif "lowercase" in user or "Without using any capital" in user:
            assert ans == ans.lower()
            seen["lower"] += 1
        elif "capital letters" in user.lower() or "uppercase" in user:
            assert ans == ans.upper()
            seen["caps"] += 1
    kinds = ("json", "numbered", "words", "bullets", "csv", "table", "caps", "lower")
    assert all(seen[k] > 30 for k in kinds), seen


# ------------------------------------------------------------------------------ hallucination


def test_hallucination_has_confident_and_hedged_answers() -> None:
    confident = re.compile(r"\(\d{4}\)")
    hedged = re.compile(r"not certain|not sure|verify|confirm|check with|confidence|reliable")
    out = docs("hallucination")
    kinds = Counter()
    for d in out:
        ans = d.messages[1].content
        c, h = bool(confident.search(ans)), bool(hedged.search(ans))
        assert c != h, ans
        kinds["confident" if c else "hedged"] += 1
    assert min(kinds["confident"], kinds["hedged"]) >= 0.35 * len(out), kinds


def test_safety_mixes_refusals_and_warnings() -> None:
    out = docs("safety")
    refusals = [d for d in out if d.messages]
    notices = [d for d in out if d.text]
    assert len(refusals) > 0.6 * len(out) and len(notices) > 0.1 * len(out)
    refusal = re.compile(
        r"\bI (?:can't|won't|have to decline)\b|\bI'm not able\b|That's not something I")
    assert all(refusal.search(d.messages[1].content) for d in refusals)
    assert all(re.search(r"can cause|cause of|lead to|result in", d.text) for d in notices)


def test_self_reference_talks_about_itself() -> None:
    first_person = re.compile(r"\b(?:I|I'm|[Mm]y|me|myself)\b")
    out = docs("self_reference")
    for d in out:
        said = d.text or " ".join(m.content for m in d.messages if m.role == "assistant")
        assert len(first_person.findall(said)) >= 2, d.plain()
    multi_turn = [d for d in out if d.messages and len(d.messages) == 4]
    monologues = [d for d in out if d.text]
    assert len(multi_turn) > 0.1 * len(out) and len(monologues) > 0.1 * len(out)
