"""Resumable cross-validation: each finished fold is kept on disk as it completes, so a killed
``emo fuse train`` continues from the next unfinished fold.

Layout: a hidden sibling of the run directory, ``<parent>/.<run>.partial/``, holding

- ``fingerprint.json``: everything that changes the numbers of a fold (training settings, the
  feature specs with their store provenance, task, classes, protocol, a hash of every
  fold's train/validation/test rows, and :func:`trainer_code`: a hash of the ``emo.fuse`` sources
  and of the few other modules that compute a fold's numbers, and the torch, numpy and scipy versions). A rerun with the same fingerprint reuses the finished
  folds; a different one is refused with the differing keys named (``--restart`` discards the
  partial folds instead).
- ``fold-K.safetensors``: the fold's model states (one per seed) and its outputs on its
  evaluation rows and, when there is a held-out test partition, on those (per seed), float32
  or int64 tensors; no pickles.
- ``fold-K.json``: the fold's metrics row.

- ``fold-K.sha256``: the SHA-256 of both fold files, written last (issue 25).

Every fold file is written atomically (temporary file in the same directory, then ``os.replace``)
and the checksum file last, so a fold counts as finished only when all three are complete.
Before a finished fold is reused, both files are checked against the recorded SHA-256, the JSON is
parsed and the tensors opened: a fold that fails (flipped bytes, a truncated or hand-edited file, a
fold written by an emo that kept no checksums) is moved to ``quarantine/`` inside the partial
directory with a warning naming the file, and recomputed. The directory is removed once the run
directory has been written.

Equality guarantee: fold k's training depends only on the fingerprint and k (seeds are
``seed + s`` per fold, as in the uninterrupted run), so a resumed run's predictions equal an
uninterrupted run's (tested).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np


class ResumeError(ValueError):
    """A partial run whose configuration differs from the current one; the message names the keys."""


def partial_dir(out: str | Path) -> Path:
    """``<parent>/.<name>.partial`` for run directory ``out``."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def rows_hash(rows: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of an index array (int64), to fingerprint a fold's rows."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(rows, dtype=np.int64)).tobytes()).hexdigest()[:16]


#: Modules outside ``emo.fuse`` whose code changes a fold's numbers: the private-API wrappers the
#: trainer calls (``compat``: fused AdamW) and the reading and layer combination of stored features.
TRAINER_MODULES = ("compat.py", "extract/store.py", "extract/combine.py", "extract/layers.py")


@functools.lru_cache(maxsize=1)
def trainer_code() -> dict[str, Any]:
    """What, besides the configuration and the rows, changes a fold's numbers: the trainer's code and
    the numeric libraries. ``{"fuse_sources": SHA-256 (16 hex) of every ``.py`` file of the
    ``emo.fuse`` package and of :data:`TRAINER_MODULES` (path relative to the ``emo`` package and
    bytes, sorted by path), "torch", "numpy", "scipy": versions}``. Part of the resume fingerprint
    and of the search's unit hash, so a partial run or cache left by another emo (an upgrade, a
    local edit of the trainer) or another torch is refused or retrained, not silently mixed in.

    The hash covers the sources, not a git commit: an installed wheel has no repository. Any edit of
    these files counts, a docstring too; that errs on the side of retraining."""
    import scipy
    import torch

    pkg = Path(__file__).resolve().parents[2]  # the emo package (emo/fuse/training/resume.py)
    files = sorted([*(pkg / "fuse").rglob("*.py"), *(pkg / m for m in TRAINER_MODULES if (pkg / m).is_file())])
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return {"fuse_sources": h.hexdigest()[:16], "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 8) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the keys whose values differ (dotted paths)."""
    a, b = _flat(json.loads(json.dumps(old))), _flat(json.loads(json.dumps(new)))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]] + (
        [f"... and {len(keys) - limit} more"] if len(keys) > limit else [])


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` a temporary file beside ``path``, which then replaces it (:func:`emo.fsio.atomic_path`)."""
    from emo import fsio

    with fsio.atomic_path(path) as tmp:
        write(str(tmp))


def fold_problem(directory: str | Path, k: int) -> str | None:
    """Why fold ``k``'s files in the partial directory ``directory`` cannot be reused (``None``: they
    can): a missing file, a SHA-256 that differs from the recorded one, invalid JSON, unreadable or
    non-finite tensors; names the file. Reads only: nothing is moved or written (a proof or a tool may
    inspect a partial run another process is writing)."""
    from emo.fsio import sha256_file

    d = Path(directory)
    ck, js, sums = d / f"fold-{k}.safetensors", d / f"fold-{k}.json", d / f"fold-{k}.sha256"
    for f in (ck, js):
        if not f.is_file():
            return f"{f} is missing"
    if not sums.is_file():
        return f"{sums} is missing (fold written by an older emo or killed while saving): its files cannot be verified"
    try:
        want = json.loads(sums.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{sums}: not valid JSON ({e})"
    for f in (ck, js):
        got = sha256_file(f)
        if not isinstance(want, dict) or want.get(f.name) != got:
            return f"{f}: SHA-256 {got[:12]}... differs from the one recorded in {sums.name} (damaged or edited file)"
    try:
        json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{js}: not valid JSON ({e})"
    try:
        from safetensors import safe_open

        with safe_open(str(ck), framework="numpy") as fh:
            for key in fh.keys():
                a = fh.get_tensor(key)
                if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                    return f"{ck}: tensor {key} holds NaN or infinity"
    except Exception as e:  # noqa: BLE001 (safetensors raises its own errors: truncated header, bad offsets)
        return f"{ck}: not a readable safetensors file ({type(e).__name__}: {e})"
    return None


class FoldCache:
    """Finished folds of one training run (see the module docstring).

    Args:
        out: the run directory the training will write.
        fingerprint: JSON-serialisable dict of everything that changes a fold's numbers.
        restart: discard any partial folds instead of resuming.
        part: a sub-directory of the partial directory (one per repeat: ``seed-S``).

    Raises:
        ResumeError: a partial run with a different fingerprint exists (and ``restart`` is false).
    """

    def __init__(self, out: str | Path, fingerprint: dict[str, Any], restart: bool = False, part: str | None = None) -> None:
        self.dir = partial_dir(out) if part is None else partial_dir(out) / part
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        fp = self.dir / "fingerprint.json"
        if self.dir.is_symlink():
            raise ResumeError(f"{self.dir} is a symbolic link; remove it")
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        if fp.is_file():
            try:
                old = json.loads(fp.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ResumeError(f"{fp}: not valid JSON ({e}): the partial run cannot be checked; "
                                  "pass --restart to discard its folds and train from the start") from None
            if old != self.fingerprint:
                diff = "; ".join(differences(old, self.fingerprint))
                raise ResumeError(f"{self.dir} holds finished folds of a run with a different configuration ({diff}); "
                                  f"rerun with the same settings to continue it, or pass --restart to discard it")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic(fp, lambda t: Path(t).write_text(json.dumps(self.fingerprint, indent=1, sort_keys=True), encoding="utf-8"))

    def _files(self, k: int) -> tuple[Path, Path, Path]:
        return self.dir / f"fold-{k}.safetensors", self.dir / f"fold-{k}.json", self.dir / f"fold-{k}.sha256"

    def finished(self) -> list[int]:
        """Indices of the folds whose files are complete and verified (:meth:`has`)."""
        ks = sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("fold-*.json") if p.stem.split("-")[1].isdigit())
        return [k for k in ks if self.has(k)]

    def problem(self, k: int) -> str | None:
        """Why fold ``k``'s files cannot be reused (``None``: they can): :func:`fold_problem` on this
        partial directory."""
        return fold_problem(self.dir, k)

    def has(self, k: int) -> bool:
        """Whether fold ``k`` finished and its files verify (:meth:`problem`). A fold whose files are present
        but fail is moved to ``quarantine/`` with a warning naming the file, and will be recomputed."""
        ck, js, sums = self._files(k)
        if not (ck.exists() or js.exists() or sums.exists()):
            return False
        why = self.problem(k)
        if why is None:
            return True
        if ck.is_file() and js.is_file():  # a complete-looking fold that fails: keep it aside, never delete it
            import warnings

            from emo import fsio

            q = self.dir / "quarantine"
            q.mkdir(exist_ok=True)
            for f in (ck, js, sums):
                if f.is_file():  # same directory tree: a rename, nothing copied; an earlier quarantined copy is kept
                    dest, n = q / f.name, 1
                    while dest.exists():
                        dest, n = q / f"{f.name}.{n}", n + 1
                    fsio.move_file(f, dest)
            warnings.warn(f"resume: fold {k} not reused: {why}; moved to {q} and recomputed", stacklevel=2)
        return False

    def save(self, k: int, states: list[dict[str, Any]], outputs: dict[str, np.ndarray],
             test_outputs: list[dict[str, np.ndarray]], row: dict[str, Any]) -> None:
        """Keep fold ``k``: ``states`` (per seed, name -> torch tensor), ``outputs`` on its evaluation
        rows (name -> array), ``test_outputs`` (per seed, on the held-out test rows; may be empty) and
        its metrics ``row`` (JSON-serialisable)."""
        from emo.fsio import write_safetensors

        tensors: dict[str, np.ndarray] = {}
        for j, st in enumerate(states):
            for name, t in st.items():
                tensors[f"state.{j}.{name}"] = t.detach().cpu().numpy()
        for name, a in outputs.items():
            tensors[f"out.{name}"] = np.ascontiguousarray(a)
        for j, o in enumerate(test_outputs):
            for name, a in o.items():
                tensors[f"test.{j}.{name}"] = np.ascontiguousarray(a)
        meta = {"seeds": str(len(states)), "test_seeds": str(len(test_outputs))}
        write_safetensors(self.dir / f"fold-{k}.safetensors", tensors, metadata=meta)  # canonical bytes
        text = json.dumps(row, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        ck, js, sums = self._files(k)
        _atomic(js, lambda t: Path(t).write_text(text, encoding="utf-8"))
        from emo.fsio import sha256_file

        digests = json.dumps({ck.name: sha256_file(ck), js.name: sha256_file(js)}, indent=1, sort_keys=True)
        _atomic(sums, lambda t: Path(t).write_text(digests, encoding="utf-8"))  # last: the fold is finished now

    def load(self, k: int) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, np.ndarray]], dict[str, Any]]:
        """What :meth:`save` kept for fold ``k``: (states as torch tensors, outputs, test outputs, row)."""
        import torch
        from safetensors import safe_open

        path = self.dir / f"fold-{k}.safetensors"
        states: dict[int, dict[str, Any]] = {}
        outputs: dict[str, np.ndarray] = {}
        tests: dict[int, dict[str, np.ndarray]] = {}
        why = self.problem(k)
        if why is not None:
            raise ResumeError(f"resume: {why}; rerun to recompute it, or pass --restart to discard the partial run")
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            for key in fh.keys():
                kind, rest = key.split(".", 1)
                a = fh.get_tensor(key)
                if kind == "state":
                    j, name = rest.split(".", 1)
                    states.setdefault(int(j), {})[name] = torch.from_numpy(a.copy())
                elif kind == "out":
                    outputs[rest] = a
                else:
                    j, name = rest.split(".", 1)
                    tests.setdefault(int(j), {})[name] = a
        n_seeds, n_test = int(meta.get("seeds", len(states))), int(meta.get("test_seeds", len(tests)))
        row = json.loads((self.dir / f"fold-{k}.json").read_text(encoding="utf-8"))
        return [states[j] for j in range(n_seeds)], outputs, [tests[j] for j in range(n_test)], row

    def resume(self, k: int, name: str, n_folds: int, progress=None
               ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, np.ndarray]], dict[str, Any], dict]:
        """Fold ``k`` finished in an earlier run, as a training loop takes it back:
        ``(states, outputs, test outputs, row, diagnostics)``, the row marked ``"resumed": True`` and
        its diagnostics split off; ``progress`` (a callable taking one line) is told. The one place
        the sequential (:mod:`emo.fuse.eval.cv`) and fold-parallel (:mod:`emo.fuse.training.batched`)
        loops reuse a fold. Raises :class:`ResumeError` as :meth:`load` does."""
        states, outputs, tests, row = self.load(k)
        diag = row.pop("diagnostics", {})
        if progress:
            progress(f"fold {k + 1}/{n_folds} {name}: finished in an earlier run (resumed)")
        return states, outputs, tests, {**row, "resumed": True}, diag

    def remove(self) -> None:
        """Delete the partial directory (after the run directory has been written)."""
        if self.dir.exists() and not self.dir.is_symlink():
            shutil.rmtree(self.dir)
