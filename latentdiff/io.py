"""Atomic file writes: a crash (even kill -9) leaves either the old file or the new one."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from latentdiff.errors import CorruptFile, WriteFailed

M = TypeVar("M", bound=BaseModel)
# Write errors that are the machine's, not a bug: a one-line WriteFailed naming the file, never a traceback.
_ENV_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call writer(tmp_path) then rename tmp_path over path (same directory, fsynced).

    Disk full, a read-only file system or missing permissions raise `WriteFailed` naming `path` (one line
    at the CLI); the old file, if any, is left as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        writer(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except OSError as err:
        if err.errno not in _ENV_ERRNOS:
            raise
        raise WriteFailed(f"{path}: cannot write: {os.strerror(err.errno)} (the previous file is kept)") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically."""
    atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON (indented, sorted keys kept as given) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed one is a `CorruptFile` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptFile(f"{path}: missing {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptFile(f"{path}: not a valid {what} ({_one_line(err)})") from None


def read_model(path: Path, model: type[M], what: str | None = None) -> M:
    """Parse a JSON file into a pydantic model; any failure is a `CorruptFile` naming the file (and the first
    offending field, for a file written by another version or schema)."""
    what = what or f"{model.__name__} file"
    data = read_json(path, what)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        raise CorruptFile(f"{path}: not a valid {what} ({loc}: {e['msg']})") from None


def read_models(path: Path, model: type[M], what: str | None = None) -> list[M]:
    """Parse a JSON list of records (e.g. a findings file); any failure is a `CorruptFile` naming the file."""
    what = what or f"list of {model.__name__} records"
    data = read_json(path, what)
    if not isinstance(data, list):
        raise CorruptFile(f"{path}: not a valid {what} (a JSON list expected, got {type(data).__name__})")
    try:
        return [model.model_validate(item) for item in data]
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        raise CorruptFile(f"{path}: not a valid {what} ({loc}: {e['msg']})") from None
