"""The feature store: one HDF5 file per (dataset, encoder), crash-safe and resumable.

Layout on disk::

    features/<dataset>/<encoder>.h5          consolidated store (what readers open)
    features/<dataset>/<encoder>.parts/      shard files of a run in progress
    features/<dataset>/<encoder>.lock        advisory lock held by the writing process

Schema (the same in the store and in every shard)::

    attrs    schema, emo_version, created, dataset, encoder, source, weights_hash,
             pooling, sample_rate, fps, modality, layers (JSON list of layer keys),
             dims (JSON {layer: D}), dtype, frames (bool), extra provenance keys
    names            (N,)   UTF-8 strings, the sample names (done samples only)
    ids              (N,)   UTF-8 identity key of each sample's media (schema 2; ``""`` unknown):
                            size + blake2b of 3 blocks (:mod:`emo.extract.identity`)
    flags            (N,)   uint8 bit mask, bit i = FLAGS[i] (no_face, no_text, silent, truncated)
    layers/<key>     (N, D) float16 (default) or float32, chunked by rows so reading one
                            layer for every sample is one sequential read
    frames/offsets   (N+1,) int64, only with --frames: sample i is rows offsets[i]:offsets[i+1]
    frames/<key>     (sum T, D) frame-level features, same dtype
    info/<key>       (N,)   int32 per-sample counts, -1 where unknown; face stores: face_frames
                            (sampled frames with a face) and frames_sampled (frames examined)
    failed/names     (M,)   samples that failed, with
    failed/errors    (M,)   the error message (file and reason)

Crash safety: a writer never modifies a finished file in place. Finished samples
are written to a new shard (``*.tmp`` then ``os.replace``, after fsync), and
:meth:`StoreWriter.finalize` merges the store and its shards into a new file that
atomically replaces the old one. A kill at any moment leaves the old store and
every renamed shard intact; a rerun skips every sample found in them. A shard is
written every ``shard_size`` samples or ``flush_seconds`` seconds, whichever comes
first, so a kill loses at most that much work. Half-written ``*.tmp`` files of a
killed process are never read and are deleted by the next writer or merge.

Integrity (schema 2): numeric datasets carry Fletcher-32 checksums; a writer verifies the store
and every shard completely before resuming (:mod:`emo.extract.store_check`) and moves a damaged
file to ``quarantine/`` so only its samples are recomputed; a sample whose media changed (its
``ids`` entry differs) is dropped and recomputed (:meth:`StoreWriter.changed`,
:meth:`StoreWriter.invalidate`). Files are written with :mod:`emo.fsio` (mkstemp, fsync,
rename, never through a link); the lock file is opened with ``O_NOFOLLOW``.

Readers (:class:`FeatureStore`) never write: merging is the writer's job at the end of a run,
and :func:`merge` (``emo store merge PATH``) merges the shards of an interrupted run.

Guards: the output directory is checked for writability (and, via
:meth:`StoreWriter.check_space`, for clearly insufficient free space) before any
work; a write error mid-run (``ENOSPC``, ``EROFS``, ...) raises
:class:`StoreWriteError` and leaves the store and every earlier shard intact.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Collection, Iterable

import h5py
import numpy as np

from emo import __version__, fsio
from emo.extract.store_check import StoreCorruptError, h5_problem, quarantine, verify_store_file
from emo.extract.types import FLAGS, Encoded

#: 2: per-sample content identities (``ids``) and Fletcher-32 checksums on numeric datasets.
SCHEMA = 2
STR = h5py.string_dtype("utf-8")
#: Provenance keys that must match for a rerun to append to an existing store: the encoder's own,
#: and everything else that changes values (issue 11): the data (dataset root and value-changing
#: adapter options, :func:`emo.extract.identity.dataset_provenance`), the face pipeline (detector,
#: its weights, crop size, alignment template, fps, decode size) and decoding (``max_seconds``).
IDENTITY_KEYS = ("encoder", "source", "weights_hash", "pooling", "sample_rate", "fps", "layers", "frames", "dtype",
                 "face_detector", "face_weights_hash", "face_size", "face_template",
                 "dataset_root", "dataset_options", "augmentation", "max_seconds", "max_side")


class StoreError(RuntimeError):
    """Unusable store: mismatched provenance, missing layers, locked, unreadable."""


class StoreLockedError(StoreError):
    """Another live process holds the store's lock."""


class StoreWriteError(StoreError):
    """Writing a shard or merging failed (disk full, read-only file system, I/O error).

    Fatal for the run (the engine stops instead of recording it as a sample failure); the
    store and every shard written before are intact, so a rerun resumes after the cause is fixed.
    """


#: Free space always kept in reserve by :meth:`StoreWriter.check_space`, bytes.
MIN_FREE_BYTES = 64 << 20


def _io_reason(e: OSError) -> str:
    """Short human reason for an OSError, with a hint for the common storage failures."""
    hint = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}.get(e.errno or 0)
    text = e.strerror or str(e)
    return f"{hint} ({text})" if hint and hint.lower() not in text.lower() else text


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove it is writable by creating and deleting a temp file.

    Call before hours of work are spent.

    Returns:
        The directory as a :class:`~pathlib.Path`.

    Raises:
        StoreError: the directory cannot be created or written (read-only file system, no
            permission, a path component that is a file); the message names the directory.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".emo-write-test-", dir=d)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise StoreError(f"output directory {d} is not writable: {_io_reason(e)}") from None
    return d


def check_free_space(directory: str | os.PathLike, need_bytes: int, what: str = "this run") -> int:
    """Refuse to start when the file system of ``directory`` clearly lacks ``need_bytes``.

    Args:
        directory: an existing directory on the target file system.
        need_bytes: estimated bytes the run will write (a lower bound is best: only a clearly
            insufficient disk is refused); :data:`MIN_FREE_BYTES` is added as a reserve.
        what: named in the message.

    Returns:
        Free bytes on that file system.

    Raises:
        StoreError: free space < ``need_bytes + MIN_FREE_BYTES``; the message gives both in MB.
    """
    free = shutil.disk_usage(directory).free
    if free < need_bytes + MIN_FREE_BYTES:
        raise StoreError(
            f"not enough free space under {directory}: {free / 2**20:.0f} MB free, {what} needs about "
            f"{need_bytes / 2**20:.0f} MB (+{MIN_FREE_BYTES >> 20} MB reserve); free space or use another --out"
        )
    return free


def store_path(out: str | os.PathLike, dataset: str, encoder: str) -> Path:
    """``<out>/<dataset>/<encoder>.h5``. Raises :class:`StoreError` for names that would leave ``out``."""
    for part, what in ((dataset, "dataset"), (encoder, "encoder")):
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
            raise StoreError(f"invalid {what} name {part!r} for a store path")
    return Path(out) / dataset / f"{encoder}.h5"


def flags_to_mask(flags: Iterable[str]) -> int:
    m = 0
    for f in flags:
        m |= 1 << FLAGS.index(f)
    return m


def mask_to_flags(mask: int) -> set[str]:
    return {f for i, f in enumerate(FLAGS) if mask & (1 << i)}


def _chunk_rows(n: int, d: int, itemsize: int) -> int:
    """Rows per chunk: about 1 MiB, at least 1, at most n."""
    return max(1, min(n, (1 << 20) // max(1, d * itemsize)))


def _write_file(
    path: Path,
    attrs: dict[str, Any],
    names: list[str],
    flags: np.ndarray,
    layers: dict[str, np.ndarray] | Iterable[tuple[str, Any]],
    failed: dict[str, str],
    frames: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
    info: dict[str, np.ndarray] | None = None,
    ids: list[str] | None = None,
) -> None:
    """Write one complete store/shard file to ``path`` atomically (:func:`emo.fsio.atomic_path`:
    mkstemp in the directory, fsync, rename, never through a link)."""
    with fsio.atomic_path(path) as tmp:
        _write_file_tmp(tmp, attrs, names, flags, layers, failed, frames, info=info, ids=ids)


def _numeric(group, key: str, data=None, shape=None, dtype=None):
    """A numeric dataset with a Fletcher-32 checksum (chunked by rows, about 1 MiB per chunk)."""
    if data is not None:
        data = np.asarray(data)
        shape, dtype = data.shape, data.dtype
    dtype = np.dtype(dtype)
    chunks = None
    if len(shape) == 2 and shape[0] and shape[1]:
        chunks = (_chunk_rows(shape[0], shape[1], dtype.itemsize), shape[1])
    return group.create_dataset(key, data=data, shape=None if data is not None else shape, dtype=None if data is not None else dtype,
                                chunks=chunks, fletcher32=True)


def _write_file_tmp(tmp: Path, attrs, names, flags, layers, failed, frames, info=None, ids=None) -> None:
    with h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=STR)
        if ids is not None:
            f.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=STR)
        _numeric(f, "flags", flags.astype(np.uint8))
        for key, arr in (info or {}).items():
            _numeric(f, f"info/{key}", np.asarray(arr, dtype=np.int32))
        g = f.create_group("layers")
        for key, arr in layers.items() if isinstance(layers, dict) else layers:
            _numeric(g, key, np.asarray(arr))
        if frames is not None:
            offsets, seqs = frames
            fg = f.create_group("frames")
            _numeric(fg, "offsets", offsets.astype(np.int64))
            for key, arr in seqs.items():
                _numeric(fg, key, np.asarray(arr))
        fl = f.create_group("failed")
        fl.create_dataset("names", data=np.array(list(failed), dtype=object), dtype=STR)
        fl.create_dataset("errors", data=np.array(list(failed.values()), dtype=object), dtype=STR)
        f.flush()


def _read_strings(ds) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in ds[()]]


def _attrs(f: h5py.File) -> dict[str, Any]:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def describe_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences in the identity keys of two provenance dicts."""
    diffs = []
    for k in IDENTITY_KEYS:
        a, b = old.get(k), new.get(k)
        if k == "frames":
            a, b = bool(a), bool(b)
        if a != b and not (a in (None, "", 0) and b in (None, "", 0)):
            diffs.append(f"{k}: store has {a!r}, this run has {b!r}")
    return diffs


def foreign_differences(old: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Why a store or shard file (attributes ``old``) does not belong with ``ref``: the dataset, then
    every identity key (:func:`describe_mismatch`). Empty when they belong together."""
    diffs = []
    if old.get("dataset") and ref.get("dataset") and old["dataset"] != ref["dataset"]:
        diffs.append(f"dataset: file has {old['dataset']!r}, expected {ref['dataset']!r}")
    return diffs + describe_mismatch(old, ref)


def _quarantine_foreign(src: Path, diffs: list[str]) -> str:
    """Move a foreign shard aside (never delete it) and return the sentence that names it."""
    problem = "foreign shard (" + "; ".join(diffs) + ")"
    try:
        dest = quarantine(src, problem)
    except OSError as e:
        raise StoreError(f"{src}: {problem}; moving it aside failed ({_io_reason(e)}): move it away by hand") from None
    return f"{src}: {problem}; moved to {dest}, not merged (nothing deleted)"


class _Lock:
    """Advisory lock on ``<store>.lock`` (:class:`filelock.FileLock`: ``flock``, ``O_NOFOLLOW``) holding the owner's PID.

    ``flock`` dies with its process, so a lock left by a killed run is stale by
    construction and is taken over silently. The lock file is kept on release
    (``preserve_lock_file``), so the last holder's PID stays readable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreLockedError` naming the holder's PID.

        Raises:
            StoreLockedError: another live process (or another writer in this one) holds it.
            StoreError: the lock file cannot be created (read-only directory, a symbolic link, ...).
        """
        import filelock

        def write_pid(fd: int) -> None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fsio.check_not_link(self.path)  # a planted link is refused, never followed (filelock opens O_NOFOLLOW too)
            lock = filelock.FileLock(self.path, timeout=0, thread_local=False, preserve_lock_file=True,
                                     on_acquired=write_pid)
            lock.acquire()
        except fsio.UnsafePathError as e:
            raise StoreError(f"lock file {e}") from None
        except filelock.Timeout:
            try:
                pid = self.path.read_text().strip() or "?"
            except OSError:
                pid = "?"
            raise StoreLockedError(f"store {self.path.with_suffix('.h5')} is in use by PID {pid} (lock {self.path})") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"lock file {self.path}: is a symbolic link; emo never opens links here: remove it") from None
            raise StoreError(f"cannot create lock file {self.path}: {_io_reason(e)}") from None
        self.lock = lock

    def release(self) -> None:
        if self.lock is not None:
            try:
                self.lock.release()
            finally:
                self.lock = None


def _parts_dir(path: Path) -> Path:
    return path.with_name(path.stem + ".parts")


def _lock_path(path: Path) -> Path:
    return path.with_suffix(".lock")


def _finished_parts(path: Path) -> list[Path]:
    d = _parts_dir(path)
    return sorted(d.glob("part-*.h5")) if d.is_dir() else []


def _remove_tmp(path: Path) -> None:
    """Delete temporary files a killed writer left (never renamed, so never counted): ``.<name>.*.tmp``
    (:mod:`emo.fsio`) and the older ``<name>.tmp`` names; links are removed, never followed. Caller holds the lock."""
    d = _parts_dir(path)
    if d.is_dir():
        fsio.remove_stale_tmp(d)
        for t in d.glob("*.tmp"):
            t.unlink(missing_ok=True)
    fsio.remove_stale_tmp(path.parent, path.name)
    try:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    except OSError:
        pass


class StoreWriter:
    """Append per-sample features to a store, in atomic shards, then merge.

    Args:
        path: ``features/<dataset>/<encoder>.h5``.
        provenance: encoder provenance (:meth:`Encoder.provenance`) plus ``dataset``, ``fps`` etc.
        layers: layer keys, in storage order.
        frames: also store frame-level sequences.
        dtype: ``float16`` (default) or ``float32``.
        overwrite: discard an existing store instead of resuming it.
        shard_size: samples per shard file (a kill loses at most this many unflushed samples).
        flush_seconds: also write a shard when the oldest buffered sample is this old, so a
            kill loses at most this many seconds of work (``None``: only by ``shard_size``).

    Raises:
        StoreLockedError: another live process writes this store ("in use by PID ...").
        StoreError: the output directory is not writable, or the existing store was written
            with different provenance (the message names each difference; pass
            ``overwrite=True`` to replace it deliberately).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        provenance: dict[str, Any],
        layers: list[str],
        frames: bool = False,
        dtype: str = "float16",
        overwrite: bool = False,
        shard_size: int = 64,
        flush_seconds: float | None = 60.0,
    ) -> None:
        self.path = Path(path)
        self.layers = list(layers)
        self.frames = frames
        self.dtype = np.dtype(dtype)
        self.shard_size = max(1, int(shard_size))
        self.flush_seconds = flush_seconds
        self._buf_since: float | None = None
        self._write_error: StoreWriteError | None = None
        self.attrs: dict[str, Any] = {
            "schema": SCHEMA,
            "emo_version": __version__,
            **{k: v for k, v in provenance.items() if v is not None},
            "layers": json.dumps(self.layers),
            "frames": bool(frames),
            "dtype": self.dtype.name,
        }
        check_writable(self.path.parent)  # a read-only --out fails here, before any work
        self._lock = _Lock(_lock_path(self.path))
        self._lock.acquire()
        try:
            self._open(overwrite)
        except BaseException:
            self._lock.release()
            raise

    # -- set-up ---------------------------------------------------------------
    def _open(self, overwrite: bool) -> None:
        parts = _parts_dir(self.path)
        if overwrite:  # shards first: a kill in between leaves the old store, refused or replaced again
            if parts.exists():
                shutil.rmtree(parts)
            if self.path.exists():
                self.path.unlink()
        try:
            parts.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create shard directory {parts}: {_io_reason(e)}") from None
        _remove_tmp(self.path)
        self._load_done()

    def _load_done(self) -> None:
        """Read what the store and its shards hold. Every file is verified completely first
        (:func:`emo.extract.store_check.verify_store_file`: structure, schema, Fletcher-32, finite
        values); a damaged file is moved to ``quarantine/`` (recorded in :attr:`quarantined`) and
        its samples are simply not done, so only they are recomputed."""
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.dims: dict[str, int] = {}
        self.ids: dict[str, str] = {}
        if not hasattr(self, "quarantined"):
            self.quarantined: list[str] = []
        for src in ([self.path] if self.path.exists() else []) + _finished_parts(self.path):
            try:
                old = verify_store_file(src)
            except StoreCorruptError as e:
                try:
                    dest = quarantine(src, e.problem)
                except OSError as e2:
                    raise StoreError(f"{e}; moving it aside failed ({_io_reason(e2)}): move it away by hand") from None
                self.quarantined.append(f"{src}: {e.problem}; moved to {dest}, its samples are recomputed")
                continue
            diffs = foreign_differences(old, self.attrs)
            own = all(old.get(k) == self.attrs.get(k) for k in ("encoder", "dataset", "layers"))
            if diffs and src != self.path and not own:  # a shard of another encoder/layer set/dataset: set aside, named
                self.quarantined.append(_quarantine_foreign(src, diffs))
                continue
            if diffs:  # this store's own earlier work with other settings: refused, never mixed or discarded
                n_old = int(old.get("n_samples") or 0)
                held = f"the {n_old} samples it holds" if n_old else "the samples it holds"
                raise StoreError(
                    f"{self.path} was written with different settings ({'; '.join(diffs)}); "
                    f"use another --out to keep both (--overwrite would discard {held})"
                )
            try:
                with h5py.File(src, "r") as f:
                    names = _read_strings(f["names"])
                    self.done.update(names)
                    if "ids" in f:
                        self.ids.update((n, i) for n, i in zip(names, _read_strings(f["ids"])) if i)
                    for n, e in zip(_read_strings(f["failed/names"]), _read_strings(f["failed/errors"])):
                        self.failed[n] = e
                    self.dims.update(json.loads(old.get("dims", "{}")))
            except (OSError, KeyError) as e:
                raise StoreError(f"{src}: {h5_problem(e)}") from None
        for n in self.done:
            self.failed.pop(n, None)
        self._seq = len(_finished_parts(self.path))
        self._buf_names: list[str] = []
        self._buf_flags: list[int] = []
        self._buf_layers: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        self._buf_frames: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        self._buf_failed: dict[str, str] = {}
        self._buf_info: list[dict[str, int]] = []
        self._buf_ids: list[str] = []

    # -- identities -------------------------------------------------------------
    def changed(self, identities: dict[str, str | None]) -> dict[str, str]:
        """Finished samples whose media changed since they were stored.

        Args:
            identities: sample name -> identity key of its media now
                (:attr:`emo.extract.identity.SampleIdentity.key`; ``None`` when unknown).

        Returns:
            name -> reason, for samples in :attr:`done` whose stored identity differs from the
            current one (samples stored without an identity, by emo < schema 2, are trusted).
        """
        from emo.extract.identity import describe_key_change

        out = {}
        for n, key in identities.items():
            old = self.ids.get(n)
            if key and old and n in self.done and old != key:
                out[n] = describe_key_change(old, key)
        return out

    def invalidate(self, names: Collection[str]) -> None:
        """Drop finished samples from the store (they are then recomputed): the store and its shards
        are merged into a new store without them (atomic, :func:`merge_store`)."""
        names = set(names) & self.done
        if not names:
            return
        self.flush()
        merge_store(self.path, self.attrs, exclude=names)
        self._load_done()

    # -- appending ------------------------------------------------------------
    def add(self, name: str, enc: Encoded, identity: str | None = None) -> None:
        """Buffer one finished sample; flushes a shard every ``shard_size`` samples.

        Args:
            name: the sample. enc: its features. identity: the identity key of its media
                (:func:`emo.extract.identity.identify`), stored so a later run detects a changed file.

        Raises:
            StoreError: a layer is missing, has the wrong dimension, or is not finite after the
                cast to the store dtype (the caller records this as the sample's failure).
        """
        rows = {}
        for k in self.layers:
            if k not in enc.layers:
                raise StoreError(f"{name}: encoder returned no layer {k}")
            v = np.asarray(enc.layers[k], dtype=np.float32).reshape(-1)
            d = self.dims.setdefault(k, v.shape[0])
            if v.shape[0] != d:
                raise StoreError(f"{name}: layer {k} has dimension {v.shape[0]}, store has {d}")
            c = v.astype(self.dtype)
            if not np.all(np.isfinite(c)):
                raise StoreError(f"{name}: layer {k} has non-finite values (in {self.dtype.name})")
            rows[k] = c
        fr = {}
        if self.frames:
            if not enc.frames:
                raise StoreError(f"{name}: --frames requested but the encoder returned no frame features")
            lens = {np.asarray(enc.frames[k]).shape[0] for k in self.layers}
            if len(lens) != 1:
                raise StoreError(f"{name}: frame sequences of different lengths across layers")
            fr = {k: np.asarray(enc.frames[k], dtype=np.float32).astype(self.dtype) for k in self.layers}
            for k, v in fr.items():
                if not np.all(np.isfinite(v)):
                    raise StoreError(f"{name}: frame-level layer {k} has non-finite values (in {self.dtype.name})")
        self._buf_names.append(name)
        self._buf_ids.append(identity or "")
        self._buf_flags.append(flags_to_mask(enc.flags))
        self._buf_info.append({str(k): int(v) for k, v in (getattr(enc, "info", None) or {}).items()})
        for k in self.layers:
            self._buf_layers[k].append(rows[k])
            if self.frames:
                self._buf_frames[k].append(fr[k])
        self.done.add(name)
        self.failed.pop(name, None)
        self._maybe_flush()

    def fail(self, name: str, error: str) -> None:
        """Record a per-sample failure (kept in the store so the summary and reruns see it).

        Raises:
            StoreWriteError: only if this triggers a shard write that fails.
        """
        self._buf_failed[name] = error
        self.failed[name] = error
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if self._buf_since is None:
            self._buf_since = now
        if len(self._buf_names) + len(self._buf_failed) >= self.shard_size or (
            self.flush_seconds is not None and now - self._buf_since >= self.flush_seconds
        ):
            self.flush()

    def check_space(self, n_samples: int, dims: dict[str, int] | None = None, default_dim: int = 64) -> int:
        """Refuse to start when the disk clearly cannot hold ``n_samples`` more samples.

        The estimate is a lower bound: ``n_samples x sum(dims) x itemsize x 2`` (the shards plus
        the merged copy written by :meth:`finalize`), with ``default_dim`` for layers whose
        dimension is not yet known; frame-level features are not counted (their length is unknown).

        Returns:
            Free bytes. Raises :class:`StoreError` naming the directory, free and needed MB.
        """
        dims = {**{k: default_dim for k in self.layers}, **self.dims, **(dims or {})}
        need = int(n_samples) * sum(int(dims[k]) for k in self.layers) * self.dtype.itemsize * 2
        return check_free_space(self.path.parent, need, f"{n_samples} samples of {self.attrs.get('encoder', self.path.stem)}")

    def flush(self) -> None:
        """Write buffered samples as one new shard (atomic). No-op when the buffer is empty.

        Raises:
            StoreWriteError: the shard cannot be written (disk full, read-only, I/O error). No
                partial shard is left; the store and earlier shards are intact; the buffered
                samples are not stored (a rerun redoes them).
        """
        if self._write_error is not None:
            raise self._write_error
        if not self._buf_names and not self._buf_failed:
            return
        n = len(self._buf_names)
        layers = {}
        for k in self.layers:
            d = self.dims.get(k, 0)
            layers[k] = np.stack(self._buf_layers[k]) if n else np.zeros((0, d), self.dtype)
        frames = None
        if self.frames:
            lens = [a.shape[0] for a in self._buf_frames[self.layers[0]]] if n else []
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            frames = (offsets, {k: (np.concatenate(self._buf_frames[k]) if n else np.zeros((0, 0), self.dtype)) for k in self.layers})
        attrs = {**self.attrs, "dims": json.dumps(self.dims), "created": _now()}
        keys = sorted({k for d in self._buf_info for k in d})
        info = {k: np.array([d.get(k, -1) for d in self._buf_info], dtype=np.int32) for k in keys}
        part = _parts_dir(self.path) / f"part-{os.getpid()}-{self._seq:06d}.h5"
        self._seq += 1
        try:
            part.parent.mkdir(parents=True, exist_ok=True)  # finalize() removes it; a writer may go on after
            _write_file(part, attrs, self._buf_names, np.array(self._buf_flags, dtype=np.uint8), layers, self._buf_failed, frames,
                        info=info, ids=self._buf_ids)
            for n, i in zip(self._buf_names, self._buf_ids):
                if i:
                    self.ids[n] = i
        except OSError as e:
            self._write_error = StoreWriteError(
                f"cannot write shard {part}: {_io_reason(e)}; the store and the samples finished before "
                f"are intact, the last {n} are not stored: fix the cause and rerun to resume"
            )
            raise self._write_error from None
        self._buf_names, self._buf_flags, self._buf_failed, self._buf_info, self._buf_ids = [], [], {}, [], []
        self._buf_layers = {k: [] for k in self.layers}
        self._buf_frames = {k: [] for k in self.layers}
        self._buf_since = None

    def finalize(self) -> Path:
        """Flush, merge the store and its shards into a new store file (atomic), drop the shards.

        Raises:
            StoreWriteError: a write failed; the old store and all shards stay intact.
        """
        self.flush()
        merge_store(self.path, self.attrs)
        return self.path

    def close(self) -> None:
        """Flush what is buffered (so nothing finished is lost) and release the lock.

        After a failed write it only releases the lock (the error was already raised).
        """
        try:
            if self._write_error is None:
                self.flush()
        finally:
            self._lock.release()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _file_attrs(src: Path) -> dict[str, Any] | None:
    """A store/shard file's attributes, ``None`` when it cannot be opened (reported when it is read)."""
    try:
        with h5py.File(src, "r") as f:
            return _attrs(f)
    except OSError:
        return None


def merge_store(path: str | os.PathLike, attrs: dict[str, Any] | None = None, exclude: Collection[str] = ()) -> Path:
    """Merge ``<store>.h5`` and ``<store>.parts/*.h5`` into a new ``<store>.h5`` (atomic rename).

    Samples are deduplicated by name (first occurrence wins: the store, then shards in
    order); failures are kept only for samples that never succeeded; samples in ``exclude``
    are dropped (a changed media file: recomputed by the caller). A shard of another encoder,
    layer set, dataset or settings than the store (or the first shard) is moved to
    ``quarantine/`` with a warning naming it, never merged and never deleted. Memory stays bounded: one
    layer of one source is in memory at a time. The caller holds the lock.

    Raises:
        StoreError: nothing to merge, or a source cannot be read (named, with the problem).
        StoreWriteError: writing the merged file failed; the store and its shards are intact.
    """
    path = Path(path)
    exclude = set(exclude)
    sources = ([path] if path.exists() else []) + _finished_parts(path)
    if not sources:
        raise StoreError(f"nothing to merge for {path}")
    if len(sources) == 1 and sources[0] == path and not exclude:
        return path
    keep: list[tuple[Path, np.ndarray]] = []  # (file, row indices kept)
    names: list[str] = []
    flags: list[np.ndarray] = []
    seen: set[str] = set()
    failed: dict[str, str] = {}
    dims: dict[str, int] = {}
    frame_dims: dict[str, int] = {}  # may differ from the utterance dimension (e.g. MFCC frames)
    frame_lens: list[np.ndarray] = []
    info_parts: list[tuple[int, dict[str, np.ndarray]]] = []  # (rows kept, info key -> kept values)
    base_attrs: dict[str, Any] = {}
    ids: list[str] = []
    ref = _file_attrs(sources[0])
    foreign: list[str] = []
    for src in list(sources[1:]):
        a = _file_attrs(src)
        diffs = foreign_differences(a, ref) if a is not None and ref is not None else []
        if diffs:
            foreign.append(_quarantine_foreign(src, diffs))
            sources.remove(src)
    for msg in foreign:
        warnings.warn(msg, stacklevel=2)
    seen.update(exclude)  # excluded names are never kept (nor recorded as failed below)
    for src in sources:
        try:
            with h5py.File(src, "r") as f:
                a = _attrs(f)
                base_attrs = base_attrs or a
                dims.update(json.loads(a.get("dims", "{}")))
                n_src = _read_strings(f["names"])
                fl = f["flags"][()]
                rows = [i for i, n in enumerate(n_src) if n not in seen]
                id_src = _read_strings(f["ids"]) if "ids" in f else [""] * len(n_src)
                for i in rows:
                    seen.add(n_src[i])
                    names.append(n_src[i])
                    ids.append(id_src[i])
                flags.append(fl[rows])
                keep.append((src, np.array(rows, dtype=np.int64)))
                info_parts.append((len(rows), {k: ds[()][rows] for k, ds in f["info"].items()} if "info" in f else {}))
                for n, e in zip(_read_strings(f["failed/names"]), _read_strings(f["failed/errors"])):
                    failed[n] = e
                if "frames" in f:
                    off = f["frames/offsets"][()]
                    frame_lens.append((off[1:] - off[:-1])[rows] if rows else np.zeros(0, np.int64))
                    for k, ds in f["frames"].items():
                        if k != "offsets" and ds.shape[0]:
                            frame_dims.setdefault(k, int(ds.shape[1]))
        except (OSError, KeyError) as e:
            raise StoreError(f"{src}: {h5_problem(e)}; run `emo extract` again to move it aside and recompute its samples") from None
    failed = {n: e for n, e in failed.items() if n not in seen}
    out_attrs = {**base_attrs, **(attrs or {}), "dims": json.dumps(dims), "created": _now(), "n_samples": len(names)}
    layer_keys = json.loads(out_attrs["layers"])
    dtype = np.dtype(out_attrs.get("dtype", "float16"))
    has_frames = bool(out_attrs.get("frames"))
    info_keys = sorted({k for _, d in info_parts for k in d})
    info = {k: np.concatenate([d.get(k, np.full(n, -1, np.int32)) for n, d in info_parts]).astype(np.int32)
            if info_parts else np.zeros(0, np.int32) for k in info_keys}
    out_attrs["schema"] = SCHEMA  # rewritten with this version's layout (ids, checksums)
    try:
        with fsio.atomic_path(path) as tmp:
            _merge_into(tmp, out_attrs, names, flags, keep, failed, dims, layer_keys, dtype,
                        frame_lens if has_frames else None, frame_dims, info=info, ids=ids)
    except OSError as e:
        raise StoreWriteError(
            f"cannot merge {path}: {_io_reason(e)}; the store and its shards in {_parts_dir(path)} are "
            f"intact: fix the cause and rerun (or `emo store merge {path}`)"
        ) from None
    for src in sources:
        if src != path:
            src.unlink(missing_ok=True)
    try:
        _parts_dir(path).rmdir()
    except OSError:
        pass
    return path


def _merge_into(tmp: Path, out_attrs, names, flags, keep, failed, dims, layer_keys, dtype,
                frame_lens: list[np.ndarray] | None, frame_dims: dict[str, int], info=None, ids=None) -> None:
    """Write the merged file: datasets are created first, then each source is opened once and
    its kept rows are copied into every layer (and frame) dataset."""
    n = len(names)
    with h5py.File(tmp, "w") as f:
        for k, v in out_attrs.items():
            f.attrs[k] = v
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=STR)
        f.create_dataset("ids", data=np.array(list(ids or [""] * n), dtype=object), dtype=STR)
        _numeric(f, "flags", np.concatenate(flags) if flags else np.zeros(0, np.uint8))
        for key, arr in (info or {}).items():
            _numeric(f, f"info/{key}", arr)
        out_layers = {}
        for key in layer_keys:
            d = dims.get(key, 0)
            out_layers[key] = _numeric(f, f"layers/{key}", shape=(n, d), dtype=dtype)
        out_frames = {}
        if frame_lens is not None:
            offsets = np.concatenate([[0], np.cumsum(np.concatenate(frame_lens) if frame_lens else [])]).astype(np.int64)
            _numeric(f, "frames/offsets", offsets)
            total = int(offsets[-1])
            for key in layer_keys:
                d = frame_dims.get(key, 0)
                out_frames[key] = _numeric(f, f"frames/{key}", shape=(total, d), dtype=dtype)
        pos, fpos = 0, 0
        for src, rows in keep:
            if len(rows) == 0:
                continue
            with h5py.File(src, "r") as s:
                for key, ds in out_layers.items():
                    ds[pos : pos + len(rows)] = s["layers"][key][()][rows]
                if out_frames:
                    off = s["frames/offsets"][()]
                    start = fpos
                    for key, ds in out_frames.items():
                        data, fpos = s["frames"][key], start
                        for i in rows:
                            seg = data[off[i] : off[i + 1]]
                            ds[fpos : fpos + len(seg)] = seg
                            fpos += len(seg)
            pos += len(rows)
        fl = f.create_group("failed")
        fl.create_dataset("names", data=np.array(list(failed), dtype=object), dtype=STR)
        fl.create_dataset("errors", data=np.array(list(failed.values()), dtype=object), dtype=STR)


def pending_shards(path: str | os.PathLike) -> list[Path]:
    """Finished shard files of ``path`` not yet merged into it (a run in progress or interrupted)."""
    return _finished_parts(Path(path))


def merge(path: str | os.PathLike) -> Path:
    """Merge a store's pending shards into it (``emo store merge``): take the store's lock, drop
    half-written ``*.tmp`` files of killed writers, merge atomically (:func:`merge_store`).

    Returns:
        The store path.

    Raises:
        StoreLockedError: a run is writing the store (merge after it ends; it merges itself).
        StoreError: nothing to merge (no store and no shards), or the lock cannot be created.
        StoreWriteError: the merge failed (disk full, ...); the store and its shards are intact.
    """
    path = Path(path)
    lock = _Lock(_lock_path(path))
    lock.acquire()
    try:
        _remove_tmp(path)
        return merge_store(path)
    finally:
        lock.release()


class FeatureStore:
    """Read-only view of a consolidated store; opening it never writes anything.

    Shards of a run in progress or of an interrupted run are not read (the writer merges them
    at the end of its run; ``emo store merge PATH`` merges those of an interrupted run): a
    warning names them.

    Raises:
        StoreError: the file is missing (with pending shards: the message says to merge them)
            or is not an emo store.
    """

    def __init__(self, path: str | os.PathLike, check_name: bool = True) -> None:
        """Open ``path``; with ``check_name``, a store laid out as ``<out>/<dataset>/<encoder>.h5`` must hold
        that encoder's features (:meth:`check_identity`)."""
        self.path = Path(path)
        pending = _finished_parts(self.path)
        if pending and not self.path.exists():
            raise StoreError(f"feature store {self.path} has only unmerged shards ({len(pending)} in "
                             f"{_parts_dir(self.path)}): rerun the extraction to finish it, or `emo store merge {self.path}`")
        if pending:
            warnings.warn(f"{self.path}: {len(pending)} shard(s) not merged yet (a run in progress, or an interrupted "
                          f"run: `emo store merge {self.path}`); reading only the merged part", stacklevel=2)
        if not self.path.exists():
            raise StoreError(f"feature store {self.path} not found: run `emo extract` for this encoder first")
        try:  # structure, schema and attributes; the data's checksums are checked as they are read
            verify_store_file(self.path, check_data=False)
        except StoreCorruptError as e:
            raise StoreError(f"{e} (`emo extract` into the same --out moves a damaged store aside and recomputes it)") from None
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = _attrs(f)
                if "layers" not in f or "names" not in f:
                    raise StoreError(f"{self.path} is not an emo feature store (no names/layers)")
                self.names: list[str] = _read_strings(f["names"])
                self._flags = f["flags"][()]
                self.failed: dict[str, str] = dict(zip(_read_strings(f["failed/names"]), _read_strings(f["failed/errors"])))
                self.layers: list[str] = json.loads(self.attrs["layers"])
                self.dims: dict[str, int] = {k: int(f["layers"][k].shape[1]) for k in self.layers}
                self.has_frames = "frames" in f
                self._info = {k: ds[()].astype(np.int64) for k, ds in f["info"].items()} if "info" in f else {}
                self._ids = _read_strings(f["ids"]) if "ids" in f else None
        except (OSError, KeyError, ValueError) as e:
            raise StoreError(f"{self.path}: {h5_problem(e)}") from None
        self.index = {n: i for i, n in enumerate(self.names)}
        if check_name and self.path.parent.name == self.attrs.get("dataset"):  # laid out as <out>/<dataset>/<encoder>.h5
            self.check_identity(encoder=self.path.stem)

    def check_identity(self, encoder: str | None = None, dataset: str | None = None) -> None:
        """Refuse a store whose own attributes name another encoder (or dataset) than asked for: a store is
        never trusted by its file name (``mfcc.h5`` copied over ``egemaps.h5`` is refused, naming both).

        Raises:
            StoreError: naming the file, the encoder (dataset) it holds and the one asked for.
        """
        have = self.attrs.get("encoder")
        if encoder is not None and have and have != encoder:
            raise StoreError(f"{self.path} holds features of encoder {have!r}, not {encoder!r} as its file name says "
                             f"(a store copied or renamed?): use {have}.h5 for {have!r}, or extract {encoder!r}")
        have_ds = self.attrs.get("dataset")
        if dataset is not None and have_ds and have_ds != dataset:
            raise StoreError(f"{self.path} holds features of dataset {have_ds!r}, not {dataset!r}")

    def __len__(self) -> int:
        return len(self.names)

    def flags(self, name: str) -> set[str]:
        """Recorded conditions of one sample, e.g. ``{"no_face"}``."""
        return mask_to_flags(int(self._flags[self.index[name]]))

    def identity(self, name: str) -> str | None:
        """Identity key of the media a sample's features came from (:mod:`emo.extract.identity`),
        ``None`` when not recorded (stores of schema 1)."""
        if self._ids is None or name not in self.index:
            return None
        return self._ids[self.index[name]] or None

    def flag_mask(self, flag: str, names: list[str] | None = None) -> np.ndarray:
        """Boolean (N,) array: which samples carry ``flag``."""
        idx = self._rows(names)
        return (self._flags[idx] & (1 << FLAGS.index(flag))) != 0

    def flag_counts(self) -> dict[str, int]:
        """Samples carrying each flag, ``{flag: count}`` over :data:`~emo.extract.types.FLAGS`."""
        return {f: int(((self._flags & (1 << i)) != 0).sum()) for i, f in enumerate(FLAGS)}

    @property
    def info_keys(self) -> list[str]:
        """Names of the per-sample count columns (``face_frames``, ``frames_sampled`` in face stores)."""
        return sorted(self._info)

    def info(self, key: str, names: list[str] | None = None) -> np.ndarray | None:
        """Per-sample counts of column ``key`` (int64 (N,), -1 where unknown), in ``names`` order
        (default: store order); ``None`` when the store has no such column (e.g. written before it existed)."""
        if key not in self._info:
            return None
        return self._info[key][self._rows(names)]

    def face_coverage(self) -> dict[str, Any] | None:
        """Face-frame coverage of a face store: frames sampled, frames with a face, their ratio, and
        clips where no frame had a face; ``None`` for other stores or stores written without the counts."""
        faces, sampled = self.info("face_frames"), self.info("frames_sampled")
        if faces is None or sampled is None:
            return None
        ok = (faces >= 0) & (sampled >= 0)
        total, with_face = int(sampled[ok].sum()), int(faces[ok].sum())
        return {"clips": int(ok.sum()), "frames_sampled": total, "frames_with_face": with_face,
                "coverage": round(with_face / total, 4) if total else None,
                "clips_without_face": int((faces[ok] == 0).sum())}

    def _rows(self, names: list[str] | None) -> np.ndarray:
        if names is None:
            return np.arange(len(self.names))
        missing = [n for n in names if n not in self.index]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise StoreError(f"{self.path}: no features for sample(s) {', '.join(missing[:3])}{more}")
        return np.fromiter((self.index[n] for n in names), dtype=np.int64, count=len(names))

    def read(self, layers: list[str] | None = None, names: list[str] | None = None, dtype=np.float32) -> np.ndarray:
        """Utterance features.

        Args:
            layers: layer keys (default: all stored); only these datasets are read. Layer
                combinations (``mean(21-24)``, ``sum(last2)``) are computed from the stored layers
                (:mod:`emo.extract.combine`).
            names: sample names in the wanted order (default: store order).
            dtype: output dtype.

        Returns:
            Array (N, L, D) of ``dtype``. Layers must share one dimension; otherwise use
            :meth:`read_layer` per layer.

        Raises:
            StoreError: unknown layer or sample, or layers of different dimensions.
        """
        layers = self.layers if layers is None else [str(k) for k in layers]
        if any(k not in self.dims for k in layers):
            from emo.extract.layers import is_combination

            if any(is_combination(k) for k in layers):  # mean(21-24): computed from the stored layers
                from emo.extract.combine import read_combined
                from emo.extract.layers import LayerSpecError

                try:
                    return read_combined(self, layers, names, dtype)
                except LayerSpecError as e:
                    raise StoreError(f"{self.path}: {e}") from None
        missing = [k for k in layers if k not in self.dims]
        if missing:
            from emo.extract.layers import format_layers

            raise StoreError(f"{self.path}: no layer(s) {', '.join(missing)}; stored: {format_layers(self.layers)}")
        if len({self.dims[k] for k in layers}) > 1:
            raise StoreError(f"{self.path}: layers {layers} differ in dimension; read them one by one")
        rows = self._rows(names)
        d = self.dims[layers[0]] if layers else 0
        out = np.empty((len(rows), len(layers), d), dtype=dtype)
        try:
            with h5py.File(self.path, "r") as f:
                for j, k in enumerate(layers):
                    full = f["layers"][k][()]  # one sequential read of the whole layer (Fletcher-32 checked)
                    out[:, j, :] = full[rows]
        except (OSError, KeyError, ValueError) as e:
            raise StoreError(f"{self.path}: layer data unreadable: {h5_problem(e)}; `emo extract` into the same "
                             "--out moves the damaged store aside and recomputes it") from None
        return out

    def read_layer(self, layer: str, names: list[str] | None = None, dtype=np.float32) -> np.ndarray:
        """One layer as (N, D)."""
        return self.read([layer], names, dtype)[:, 0, :]

    def read_frames(self, layer: str, names: list[str] | None = None, dtype=np.float32) -> list[np.ndarray]:
        """Frame-level sequences of one layer: a list of (T_i, D) arrays.

        Raises:
            StoreError: the store was written without ``--frames``.
        """
        if not self.has_frames:
            raise StoreError(f"{self.path} has no frame-level features (extract with --frames)")
        if str(layer) not in self.dims:
            from emo.extract.layers import is_combination

            if is_combination(str(layer)):
                from emo.extract.combine import read_combined_frames
                from emo.extract.layers import LayerSpecError

                try:
                    return read_combined_frames(self, str(layer), names, dtype)
                except LayerSpecError as e:
                    raise StoreError(f"{self.path}: {e}") from None
        rows = self._rows(names)
        try:
            with h5py.File(self.path, "r") as f:
                off = f["frames/offsets"][()]
                data = f["frames"][str(layer)]
                return [data[off[i] : off[i + 1]].astype(dtype) for i in rows]
        except (OSError, KeyError, ValueError) as e:
            raise StoreError(f"{self.path}: frame data unreadable: {h5_problem(e)}") from None

    def summary(self) -> dict[str, Any]:
        """Provenance and counts, for ``emo store info``."""
        out = {
            "path": str(self.path), "samples": len(self.names), "failed": len(self.failed),
            "layers": self.layers, "dims": self.dims, "frames": self.has_frames,
            **{k: self.attrs.get(k) for k in ("encoder", "modality", "source", "weights_hash", "pooling", "sample_rate", "fps",
                                              "dtype", "emo_version", "created")},
            "flags": self.flag_counts(),
        }
        if self.attrs.get("modality") == "face" or "face_detector" in self.attrs:
            out["face_detector"] = self.attrs.get("face_detector")
            out["face_weights_hash"] = self.attrs.get("face_weights_hash")
            out["face_frames"] = self.face_coverage()
        return out
