"""Run-directory integrity and the non-finite guards of training, scoring and ensembling.

* :func:`check_run_out`: refuse an unusable ``--out`` *before* training (a symbolic link, an
  existing file, a non-empty directory that is not an emo run, a parent that cannot be written),
  so hours of training are never lost to a bad path at the end.
* :func:`checkpoint_digests` / :func:`verify_checkpoints`: ``config.json`` records the SHA-256 of
  every checkpoint; :func:`verify_checkpoints` recomputes them before a run is used, so random
  bytes in tensor data, or a fold file from another run (a mix of folds), are refused by name.
* :func:`check_run_dir`: a run directory must be complete: not one of
  :func:`emo.fsio.atomic_dir`'s unfinished temporaries, with ``config.json`` and every checkpoint.
* :func:`nonfinite_rows` / :func:`require_finite`: name the samples whose inputs hold NaN/inf.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class RunDirError(ValueError):
    """An unusable run directory or ``--out``; the message names the path and the problem."""


class NonFiniteError(ValueError):
    """NaN or infinity where a finite number is required; the message names the samples or the fold."""


def check_run_out(out: str | os.PathLike, lock: bool = True) -> Path:
    """Refuse a ``--out`` run directory that cannot receive a run, before any training.

    Accepted: a path that does not exist (its parent is created), an empty directory, or a
    previous emo run directory (one with ``config.json``; it is replaced atomically when the new
    run is complete). Refused: a symbolic link (emo never writes through links), an existing
    file, a non-empty directory without ``config.json`` (emo would replace someone else's files),
    a parent directory where no file can be created (read-only, permission, ``/proc``).

    With ``lock`` (default), the run directory is locked for the rest of this process
    (:func:`emo.fsio.lock_dir`): a second ``emo fuse train`` into the same ``--out`` is refused
    with "in use by PID N" instead of resuming, or removing, the first one's partial folds.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        RunDirError: naming ``out`` and the problem (another live process training into it included).
    """
    p = Path(out)
    if p.is_symlink():
        raise RunDirError(f"--out {p} is a symbolic link (to {os.readlink(p)}); emo never writes through links: "
                          "give a real directory path")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {p} exists and is not a directory: choose another --out")
    if p.is_dir() and any(p.iterdir()) and not (p / "config.json").is_file():
        raise RunDirError(f"--out {p} is a non-empty directory that is not an emo run (no config.json): "
                          "emo replaces a run directory as a whole, so choose an empty or new --out")
    parent = p.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.write-test-", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RunDirError(f"--out {p}: cannot create files in {parent} ({e.strerror or e}); "
                          "choose a writable --out before training") from None
    if lock:
        from emo import fsio

        try:
            fsio.lock_dir(p)
        except (fsio.DirLockedError, fsio.UnsafePathError) as e:
            raise RunDirError(f"--out {e}") from None
    return p


def checkpoint_digests(run_dir: str | os.PathLike, files: Sequence[str]) -> dict[str, str]:
    """SHA-256 hex digest of each file (name relative to ``run_dir``)."""
    from emo.fsio import sha256_file

    return {f: sha256_file(Path(run_dir) / f) for f in files}


def is_unfinished_dir(path: str | os.PathLike) -> bool:
    """True for a temporary directory of :func:`emo.fsio.atomic_dir` (``.<name>.<random>.tmp``)."""
    name = Path(path).absolute().name
    return name.startswith(".") and name.endswith(".tmp")


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """Refuse a run directory that is a link-free path to nothing, an unfinished temporary, or has no config.

    Raises:
        RunDirError: naming the directory and the problem.
    """
    p = Path(run_dir)
    if is_unfinished_dir(p):
        raise RunDirError(f"{p} is an incomplete run (an unfinished temporary directory of `emo fuse train`, "
                          "left by a killed run): use the finished run directory")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{p} is not a directory: give the run directory written by `emo fuse train`")
    return p


def verify_checkpoints(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Check that every fold checkpoint exists and has the SHA-256 recorded in ``config.json``.

    Folds whose entry has no ``sha256`` (runs written before emo recorded digests) are accepted
    with one warning.

    Raises:
        RunDirError: a missing checkpoint ("incomplete run") or a digest mismatch, naming the file.
    """
    from emo.fsio import sha256_file

    p = Path(run_dir)
    legacy = []
    for entry in config.get("folds", []):
        ck = p / entry["checkpoint"]
        if not ck.is_file():
            raise RunDirError(f"{ck} is missing: incomplete run directory (retrain, or restore the file)")
        want = entry.get("sha256")
        if not want:
            legacy.append(ck.name)
            continue
        got = sha256_file(ck)
        if got != want:
            raise RunDirError(f"{ck}: SHA-256 does not match config.json (recorded {want[:16]}..., file {got[:16]}...): "
                              "the checkpoint changed after training (corrupt bytes or a file from another run)")
    if legacy:
        warnings.warn(f"{p}: no SHA-256 recorded for {', '.join(legacy)} (run written by an older emo); "
                      "checkpoints not verified", stacklevel=2)


def nonfinite_rows(x: Any) -> np.ndarray:
    """Indices of rows (first axis) that hold any NaN or infinity.

    Args:
        x: array (N, ...) or a list of N arrays (ragged frame sequences).
    """
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.size == 0:
            return np.zeros(0, np.int64)
        return np.flatnonzero(~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1))
    return np.array([i for i, a in enumerate(x) if not np.all(np.isfinite(np.asarray(a)))], dtype=np.int64)


def require_finite(x: Any, names: Sequence[str], what: str) -> None:
    """Raise :class:`NonFiniteError` naming the samples (up to 5) whose rows of ``x`` are not finite.

    Args:
        x: (N, ...) array or list of N arrays. names: the N sample names. what: e.g. the store path.
    """
    bad = nonfinite_rows(x)
    if len(bad):
        shown = ", ".join(str(names[i]) for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise NonFiniteError(f"{what}: non-finite values (NaN/inf) in {len(bad)} sample(s): {shown}{more}; "
                             "re-extract them (or drop them) before training")
