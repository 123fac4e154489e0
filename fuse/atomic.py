"""Atomic file writing for run, sweep and ensemble directories.

Every writer writes a temporary file next to the target (created exclusively, never followed
through a symlink) and renames it over the target with ``os.replace``, so a reader sees the
old file or the new one, never half of one, and a symlink at the target is replaced, not
written through.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (exclusive temporary file + ``os.replace``).

    Raises:
        OSError: the directory is not writable (the temporary file is removed).
    """
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        tmp.unlink()  # a stale temporary of this PID (never a target: the name is ours)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``text`` as UTF-8, written atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically (see :func:`write_bytes`)."""
    return write_text(path, json.dumps(obj, indent=1))


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` (dicts with the same keys, the first row's order) as CSV with a header, written atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
    return write_text(path, buf.getvalue())


def write_with(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Atomically create ``path`` with a writer that needs a file name (e.g. matplotlib's
    ``savefig``, which picks the format from ``suffix``): ``write(tmp)`` writes a temporary file
    next to ``path``, which then replaces ``path``.

    Raises:
        whatever ``write`` raises (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{suffix or path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        write(tmp)
        if tmp.is_symlink():
            raise OSError(f"{tmp} became a symlink while writing")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
