"""Integrity of feature-store files: full verification, readable errors, quarantine.

A store or shard file can be damaged by a truncated copy, a full disk on another tool, bit rot
or a hand edit. Readers must then say *which file* and *what* is wrong (never a bare h5py
traceback), and ``emo extract`` must not throw away finished work: it moves the damaged file
aside (:func:`quarantine`) and recomputes only the samples that file held.

Checks made by :func:`verify_store_file`, in order (the first failure is reported):

1. the file opens as HDF5 (a truncated or non-HDF5 file fails here);
2. the ``schema`` attribute exists and is an integer this emo reads (1 .. :data:`SCHEMA_MAX`);
3. the attributes a reader needs exist: ``layers`` (JSON list) and ``dtype``;
4. the datasets exist: ``names``, ``flags``, ``layers/<key>`` for every listed layer,
   ``failed/names`` and ``failed/errors``; their row counts agree;
5. every dataset is read completely, chunk by chunk: with Fletcher-32 (written by emo since
   schema 2) a flipped byte in feature data raises a checksum error here; without it
   (schema-1 files) only structural damage is found;
6. stored feature values are finite (a NaN that bypassed the writer's check, or a hand edit).

Memory: one chunk (about 1 MiB) at a time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

#: Highest store schema this emo reads (schema 2 adds per-sample content identities and Fletcher-32).
SCHEMA_MAX = 2
#: Sub-directory (beside the store) that receives damaged files.
QUARANTINE_DIR = "quarantine"


class StoreCorruptError(RuntimeError):
    """A store or shard file that is damaged or not an emo store; ``path`` and ``problem`` are set."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def h5_problem(e: BaseException) -> str:
    """A short reason for an h5py/HDF5 exception (checksum failures and truncation named as such)."""
    text = str(e)
    low = text.lower()
    if "checksum" in low or "fletcher" in low or "filter returned failure" in low:
        return "feature data fail their Fletcher-32 checksum (flipped bytes: the file is corrupt)"
    if "truncated" in low or "eof" in low or "addr overflow" in low:
        return f"file is truncated or corrupt ({text.splitlines()[0] if text else type(e).__name__})"
    if "file signature not found" in low or "not an hdf5" in low:
        return "not an HDF5 file (file signature not found)"
    return f"cannot be read as HDF5 ({type(e).__name__}: {text.splitlines()[0] if text else ''})"


def _read_all(ds, what: str, path: Path, check_finite: bool) -> None:
    if ds.shape == () or ds.size == 0:
        ds[()]
        return
    rows = ds.chunks[0] if ds.chunks else max(1, (1 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]) or 1)))
    for i in range(0, ds.shape[0], rows):
        block = ds[i:i + rows]
        if check_finite and block.dtype.kind == "f" and not np.all(np.isfinite(block)):
            bad = i + int(np.argwhere(~np.isfinite(block.reshape(block.shape[0], -1)).any(1))[0][0])
            raise StoreCorruptError(path, f"{what} row {bad} holds non-finite values")


def verify_store_file(path: str | os.PathLike, check_data: bool = True) -> dict:
    """Verify one store or shard file (see module docstring).

    Args:
        path: ``<encoder>.h5`` or a shard ``part-*.h5``.
        check_data: read every dataset completely (checksums, finite values); ``False`` checks the
            structure only (fast: for readers that read the data themselves under :func:`h5_problem`).

    Returns:
        The file's attributes (str/int values).

    Raises:
        StoreCorruptError: the first problem found, naming the file.
    """
    import h5py

    p = Path(path)
    try:
        f = h5py.File(p, "r")
    except FileNotFoundError:
        raise StoreCorruptError(p, "file does not exist") from None
    except OSError as e:
        raise StoreCorruptError(p, h5_problem(e)) from None
    try:
        with f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
                     for k, v in f.attrs.items()}
            schema = attrs.get("schema")
            if schema is None:
                raise StoreCorruptError(p, "missing attribute 'schema': not an emo feature store (or written by a foreign tool)")
            try:
                schema = int(schema)
            except (TypeError, ValueError):
                raise StoreCorruptError(p, f"attribute 'schema' is {schema!r}, not an integer") from None
            if not 1 <= schema <= SCHEMA_MAX:
                raise StoreCorruptError(p, f"store schema {schema} is not supported by this emo (reads 1..{SCHEMA_MAX}): "
                                           "upgrade emo or re-extract")
            for key in ("layers", "dtype"):
                if key not in attrs:
                    raise StoreCorruptError(p, f"missing attribute {key!r}")
            try:
                layers = json.loads(attrs["layers"])
                if not isinstance(layers, list):
                    raise ValueError
            except (TypeError, ValueError):
                raise StoreCorruptError(p, f"attribute 'layers' is not a JSON list ({str(attrs['layers'])[:60]!r})") from None
            need = ["names", "flags", "failed/names", "failed/errors"] + [f"layers/{k}" for k in layers]
            missing = [k for k in need if k not in f]
            if missing:
                raise StoreCorruptError(p, f"missing dataset(s) {', '.join(missing)}")
            n = f["names"].shape[0]
            for k in ["flags"] + [f"layers/{x}" for x in layers] + (["ids"] if "ids" in f else []):
                if f[k].shape[0] != n:
                    raise StoreCorruptError(p, f"dataset {k} has {f[k].shape[0]} rows, names has {n}")
            if f["failed/names"].shape[0] != f["failed/errors"].shape[0]:
                raise StoreCorruptError(p, "failed/names and failed/errors differ in length")
            if check_data:
                for k in ["names", "flags", "failed/names", "failed/errors"] + (["ids"] if "ids" in f else []):
                    _read_all(f[k], k, p, False)
                for x in layers:
                    _read_all(f["layers"][x], f"layers/{x}", p, True)
                if "frames" in f:
                    for k, ds in f["frames"].items():
                        _read_all(ds, f"frames/{k}", p, k != "offsets")
            return attrs
    except StoreCorruptError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise StoreCorruptError(p, h5_problem(e)) from None


def quarantine(path: str | os.PathLike, problem: str) -> Path:
    """Move a damaged store/shard file aside, into ``<store dir>/quarantine/``, with a note.

    The file is renamed (same file system: atomic, nothing copied) to
    ``quarantine/<name>.<UTC time>`` and ``<that>.reason.txt`` records the problem. Nothing is
    deleted: a user can inspect or restore it.

    Returns:
        The new path of the file.
    """
    from emo import fsio

    p = Path(path)
    store_dir = p.parent.parent if p.parent.name.endswith(".parts") else p.parent
    qdir = store_dir / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = qdir / f"{p.name}.{stamp}"
    fsio.move_file(p, dest)
    fsio.write_text(qdir / f"{dest.name}.reason.txt", f"{p}: {problem}\n")
    return dest
