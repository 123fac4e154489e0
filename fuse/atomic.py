"""Atomic file writing for run, sweep and ensemble directories: thin names over :mod:`emo.fsio`.

Every writer goes through the package's one atomic-write helper (:mod:`emo.fsio`): a temporary
file created with ``mkstemp`` (``O_EXCL``) in the target directory, fsync, ``os.replace``, fsync
of the directory; a target that is a symbolic link is refused, never written through. CSV cells
are escaped against spreadsheet formula injection (:func:`emo.fsio.csv_cell`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from emo import fsio


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`emo.fsio.write_bytes`)."""
    return fsio.write_bytes(path, data)


def write_text(path: str | Path, text: str) -> Path:
    """``text`` as UTF-8, written atomically (:func:`emo.fsio.write_text`)."""
    return fsio.write_text(path, text)


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically (:func:`emo.fsio.write_json`)."""
    return fsio.write_json(path, obj)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` (dicts with the same keys, the first row's order) as CSV with a header, written atomically,
    cells escaped against formula injection (:func:`emo.fsio.write_csv`)."""
    return fsio.write_csv(path, rows, header=list(rows[0].keys()))


def write_with(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Atomically create ``path`` with a writer that needs a file name (e.g. matplotlib's ``savefig``,
    which picks the format from ``suffix``): ``write(tmp)`` writes the temporary file
    (:func:`emo.fsio.atomic_path`), which then replaces ``path``.

    Raises:
        whatever ``write`` raises (the temporary file is removed); :class:`emo.fsio.UnsafePathError`
        when ``path`` is a symbolic link.
    """
    path = Path(path)
    with fsio.atomic_path(path, suffix=suffix or path.suffix) as tmp:
        write(tmp)
    return path


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file of ``tensors`` (name -> numpy array) with ``metadata``, as canonical bytes.

    ``safetensors`` serialises the ``__metadata__`` map in hash order, which changes from process
    to process, so two runs with bit-identical weights gave checkpoints with different bytes (and
    SHA-256). Here the header is re-serialised with ``__metadata__`` keys sorted (tensor entries
    keep the library's order, which is deterministic: by dtype alignment, then name), padded with
    spaces to a multiple of 8 bytes as the format requires; tensor data is unchanged.
    Readers (``safetensors.safe_open``/``load_file``) see the same tensors and metadata.

    Returns:
        bytes: 8-byte little-endian header length, JSON header, raw tensor data.
    """
    import json
    import struct

    from safetensors.numpy import save

    raw = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    canon = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
    text = json.dumps(canon, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def write_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` as a safetensors file atomically, with canonical bytes (:func:`safetensors_bytes`),
    so identical weights give an identical file and SHA-256."""
    return fsio.write_bytes(path, safetensors_bytes(tensors, metadata))
