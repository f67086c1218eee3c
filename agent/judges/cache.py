"""On-disk cache of validated judge answers, keyed by sha256 of (model, messages, schema, sampling).

One SQLite file per cache dir (`judge_cache.sqlite`); safe for several processes. Only answers
that parsed and validated are stored, so a cached junk answer can never be replayed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    """Stable sha256 over JSON-serialisable parts (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A tiny key -> answer-text store."""

    FILENAME = "judge_cache.sqlite"

    def __init__(self, cache_dir: str | Path) -> None:
        self.path = Path(cache_dir) / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT)"
            )

    def get(self, key: str) -> str | None:
        """The cached answer text, or None."""
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, answer: str) -> None:
        """Store (or replace) an answer."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, model, answer) VALUES (?, ?, ?)", (key, model, answer)
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
