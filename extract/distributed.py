"""Extraction on many machines with ``dask.distributed`` (no home-made scheduler).

``emo extract ... --scheduler tcp://host:8786`` uses an existing cluster; ``--workers N``
starts a local cluster of N worker processes (one thread each). The flow:

1. The client opens every encoder's store (taking its lock, reading what is already done:
   the consolidated store *and* finished shard files of earlier, interrupted runs). A finished
   sample whose media changed since it was stored (its content identity,
   :mod:`emo.extract.identity`, differs) is dropped and recomputed, as in a local run.
2. The pending samples are split into shards of ``shard_size`` samples, in dataset order.
   One dask task per shard runs every encoder on it, decoding each clip once.
3. A task writes one shard file per encoder, ``<store>.parts/part-task-<key>.h5``, where
   ``<key>`` is a hash of the encoder, the store and the shard's sample names: it is
   deterministic, so a retried task writes the same file, and a task whose file exists
   returns at once (finished shards are never recomputed, even when dask reschedules a task
   whose result lived on a lost worker). The file is itself a small store written by
   :class:`~emo.extract.store.StoreWriter` (its own lock and atomic sub-shards), so a task
   killed half-way resumes from its last flushed sub-shard on the retry.
4. Lost workers: dask reschedules their tasks elsewhere (``distributed.scheduler.allowed-failures``);
   tasks that raise are retried ``retries`` times.
5. Finalize: the client merges the store and every shard file into the store (atomic,
   :func:`~emo.extract.store.merge_store`) and releases the locks.

Models are loaded once per worker process (cached by configuration) and stay loaded for
every task that worker runs. GPUs: start one worker per GPU (``CUDA_VISIBLE_DEVICES=i
dask worker ... --nthreads 1``); with ``--workers N`` on a multi-GPU host, worker ``i``
uses ``cuda:(i mod n_gpus)`` when ``--device cuda`` is given without an index.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emo.extract.datasets import DatasetAdapter, Sample, write_manifest
from emo.extract.engine import EncoderReport, Extractor, RunSummary, identities
from emo.extract.faces.core import DEFAULT_FPS
from emo.extract.store import StoreWriter, check_writable, store_path

#: Per worker process: configuration -> Extractor (models loaded once per worker).
_EXTRACTORS: dict[str, Extractor] = {}


@dataclass(frozen=True)
class ExtractConfig:
    """Everything a worker needs to build the same :class:`~emo.extract.engine.Extractor`
    as a single-process run (picklable; encoder specs as ``NAME[=SOURCE][:LAYERS]`` strings)."""

    encoders: tuple[str, ...]
    device: str = "cpu"
    frames: bool = False
    fps: float = DEFAULT_FPS
    face_detector: str = "mtcnn"
    mtcnn_weights: str | None = None
    decode_workers: int = 2
    max_seconds: float | None = None
    max_side: int | None = 640
    naive: bool = False
    encoder_options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def _worker_device(device: str) -> str:
    """``cuda`` without an index -> ``cuda:(worker index mod GPU count)`` on a multi-GPU host."""
    if device != "cuda":
        return device
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
        idx = int(name) if str(name).isdigit() else abs(hash(name))
    except (ValueError, ImportError):
        idx = 0
    return f"cuda:{idx % n}"


def worker_extractor(config: ExtractConfig) -> Extractor:
    """The worker's cached :class:`Extractor` for ``config`` (built on first use)."""
    k = config.key()
    if k not in _EXTRACTORS:
        from emo.extract.registry import parse_encoder_spec

        specs = [parse_encoder_spec(e) for e in config.encoders]
        _EXTRACTORS[k] = Extractor(
            specs, device=_worker_device(config.device), frames=config.frames, fps=config.fps,
            face_detector=config.face_detector, mtcnn_weights=config.mtcnn_weights,
            decode_workers=config.decode_workers, max_seconds=config.max_seconds, max_side=config.max_side,
            naive=config.naive, progress=False, encoder_options=dict(config.encoder_options),
        )
    return _EXTRACTORS[k]


def describe_encoders(config: ExtractConfig, dataset: str) -> list[dict[str, Any]]:
    """Per encoder: name, provenance, layer keys and store dtype (run on a worker, so the client
    never loads a model)."""
    ex = worker_extractor(config)
    return [{"name": e.name, "provenance": ex.provenance(e, dataset), "layers": list(e.layers),
             "dtype": getattr(e, "store_dtype", "float16")} for e in ex.encoders]


def shard_key(store: Path, names: list[str]) -> str:
    """Deterministic task key of one encoder's shard: SHA-256 (16 hex) of the store path and names."""
    h = hashlib.sha256(str(Path(store).resolve()).encode())
    for n in names:
        h.update(b"\x00" + n.encode())
    return h.hexdigest()[:16]


def shard_file(store: Path, key: str) -> Path:
    """``<store>.parts/part-task-<key>.h5``: picked up by :func:`~emo.extract.store.merge_store`."""
    store = Path(store)
    return store.with_name(store.stem + ".parts") / f"part-task-{key}.h5"


@dataclass
class ShardJob:
    """One encoder's part of a task: which samples it must do and where its shard file goes."""

    encoder: str
    store: str
    key: str
    names: list[str]
    provenance: dict[str, Any]
    layers: list[str]
    dtype: str


def run_shard(config: ExtractConfig, samples: list[Sample], jobs: list[ShardJob]) -> dict[str, Any]:
    """A dask task: extract ``samples`` for every job whose shard file does not exist yet.

    Returns:
        ``{"encoders": {name: {"done", "failed", "flagged", "seconds", "reused"}}, "worker": pid}``;
        ``reused`` is true when the shard file already existed (nothing was computed).
    """
    ex = worker_extractor(config)
    out: dict[str, Any] = {"encoders": {}, "worker": os.getpid()}
    todo_jobs = []
    for j in jobs:
        f = shard_file(Path(j.store), j.key)
        if f.exists() and not f.with_name(f.stem + ".parts").exists():
            out["encoders"][j.encoder] = {"done": 0, "failed": {}, "flagged": {}, "seconds": 0.0, "reused": True}
        else:
            todo_jobs.append((j, f))
    if not todo_jobs:
        return out
    writers, reports = [], []
    try:
        for j, f in todo_jobs:
            w = StoreWriter(f, j.provenance, j.layers, frames=config.frames, dtype=j.dtype,
                            shard_size=max(1, len(j.names)))
            # samples this encoder does not need in this shard count as done for it
            needed = set(j.names)
            w.done.update(s.name for s in samples if s.name not in needed)
            writers.append(w)
            reports.append(EncoderReport(j.encoder, str(f)))
        # a copy for this task's encoders: the cached extractor is shared by every task of the worker
        sub = ex.for_encoders([j.encoder for j, _ in todo_jobs])
        order = {e.name: i for i, e in enumerate(sub.encoders)}
        ranked = sorted(range(len(writers)), key=lambda i: order[todo_jobs[i][0].encoder])
        writers, reports = [writers[i] for i in ranked], [reports[i] for i in ranked]
        sub.extract_into(samples, writers, reports)
        for w in writers:
            w.finalize()
    finally:
        for w in writers:
            w.close()
            Path(w.path).with_suffix(".lock").unlink(missing_ok=True)
    for r in reports:
        out["encoders"][r.encoder] = {"done": r.done, "failed": dict(r.failed), "flagged": dict(r.flagged),
                                      "seconds": r.seconds, "reused": False}
    return out


def warm_workers(client, config: ExtractConfig, dataset: str, retries: int = 2) -> list[dict[str, Any]]:
    """Load the models on every current worker at once (one task pinned to each, run in parallel)
    and return :func:`describe_encoders` (workers that join later load on their first task).

    Raises:
        RuntimeError: the cluster has no workers within 60 s.
    """
    try:
        client.wait_for_workers(1, timeout=60)
    except Exception as e:  # distributed raises TimeoutError
        raise RuntimeError(f"dask cluster {client.scheduler.address if client.scheduler else ''} has no workers ({e})") from None
    addrs = sorted(client.scheduler_info().get("workers", {}))
    futs = [client.submit(describe_encoders, config, dataset, workers=[a], allow_other_workers=True,
                          pure=False, retries=retries) for a in addrs]
    results = client.gather(futs)
    return results[0]


def make_client(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int = 1):
    """A :class:`distributed.Client`: connected to ``scheduler`` (``tcp://host:8786``), or to a new
    :class:`distributed.LocalCluster` of ``workers`` processes with ``threads_per_worker`` threads.

    Raises:
        ValueError: neither or both given, or ``workers < 1``.
    """
    from distributed import Client, LocalCluster

    if (scheduler is None) == (workers is None):
        raise ValueError("give exactly one of --scheduler ADDRESS or --workers N")
    if scheduler is not None:
        return Client(scheduler)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster)


def run_distributed(config: ExtractConfig, adapter: DatasetAdapter, samples: list[Sample] | None = None,
                    out: str | os.PathLike = "features", *, client=None, scheduler: str | None = None,
                    workers: int | None = None, shard_size: int = 64, retries: int = 2, overwrite: bool = False,
                    finalize: bool = True, progress: bool = True) -> RunSummary:
    """Extract ``samples`` with every encoder of ``config`` on a dask cluster; same stores as
    :meth:`Extractor.run <emo.extract.engine.Extractor.run>`.

    Args:
        config: extractor configuration (built identically on every worker).
        adapter, samples: the dataset and the samples to do (default: all).
        out: feature root (must be a file system every worker sees).
        client: an existing :class:`distributed.Client`; else one from ``scheduler``/``workers``
            (:func:`make_client`), closed at the end.
        shard_size: samples per task.
        retries: extra attempts for a task that raises (lost workers are handled by dask itself).
        overwrite: replace existing stores.
        finalize: merge the shard files into the stores at the end (``False`` leaves them as
            shard files, which a later run or `emo store merge` merges).

    Returns:
        A :class:`~emo.extract.engine.RunSummary`; each report's ``skipped`` counts samples done
        before this run, ``recomputed`` names finished samples whose media changed since they were
        stored (:func:`emo.extract.engine.identities`: size + content hash; dropped from the store
        and recomputed, as in a local run), and ``n_tasks`` / ``n_reused`` attributes tell how many tasks were
        submitted and how many found their shard file already written.

    Raises:
        StoreError / StoreLockedError: as :class:`~emo.extract.store.StoreWriter`.
        Exception: a task that still fails after ``retries`` (its error, re-raised).
    """
    from distributed import as_completed

    t0 = time.time()
    if samples is None:
        samples = adapter.samples()
    ds_dir = check_writable(Path(out) / adapter.dataset)
    write_manifest(ds_dir, adapter, samples)
    own = client is None
    if own:
        client = make_client(scheduler, workers)
    writers: list[StoreWriter] = []
    reports: list[EncoderReport] = []
    n_tasks = n_reused = 0
    try:
        desc = warm_workers(client, config, adapter.dataset, retries)
        from emo.extract.identity import dataset_provenance

        provs = []
        ids = identities(samples)  # as a local run: a finished sample whose media changed is recomputed
        for d in desc:
            path = store_path(out, adapter.dataset, d["name"])
            prov = {**d["provenance"], **dataset_provenance(adapter)}  # same store provenance as a local run
            provs.append(prov)
            w = StoreWriter(path, prov, d["layers"], frames=config.frames, dtype=d["dtype"],
                            overwrite=overwrite)
            writers.append(w)
            r = EncoderReport(d["name"], str(path), quarantined=list(w.quarantined))
            r.recomputed = w.changed(ids)  # same name, different content: dropped here, recomputed by a task
            w.invalidate(r.recomputed)
            r.skipped = sum(s.name in w.done for s in samples)
            reports.append(r)
        todo = [{s.name for s in samples if s.name not in w.done} for w in writers]
        pending = [s for s in samples if any(s.name in t for t in todo)]
        futures, sizes = [], {}
        for i in range(0, len(pending), max(1, shard_size)):
            shard = pending[i:i + shard_size]
            jobs = []
            for d, prov, w, t in zip(desc, provs, writers, todo):
                names = [s.name for s in shard if s.name in t]
                if names:  # shards carry the store's full provenance (dataset root included), or merging refuses them
                    jobs.append(ShardJob(d["name"], str(w.path), shard_key(w.path, names), names,
                                         prov, d["layers"], d["dtype"]))
            key = "emo-shard-" + hashlib.sha256("|".join(j.key for j in jobs).encode()).hexdigest()[:16]
            fut = client.submit(run_shard, config, shard, jobs, key=key, pure=False, retries=retries)
            futures.append(fut)
            sizes[fut.key] = len(shard)
        n_tasks = len(futures)
        bar = None
        if progress and futures:
            from tqdm import tqdm

            bar = tqdm(total=len(pending), unit="clip", desc="extract (dask)")
        by_name = {r.encoder: r for r in reports}
        for fut in as_completed(futures):
            res = fut.result()
            reused = True
            for name, st in res["encoders"].items():
                r = by_name[name]
                r.done += st["done"]
                r.seconds += st["seconds"]
                r.failed.update(st["failed"])
                for k, v in st["flagged"].items():
                    r.flagged[k] = r.flagged.get(k, 0) + v
                reused = reused and st["reused"]
            n_reused += int(reused)
            fut.release()
            if bar is not None:
                bar.update(sizes.get(fut.key, 0))
        if bar is not None:
            bar.close()
        if finalize:
            for w in writers:
                w.finalize()
    finally:
        for w in writers:
            w.close()
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    names = {s.name for s in samples}
    for r in reports:  # earlier failures were retried by this run's tasks: their outcome is in r.failed
        r.failed = {n: e for n, e in r.failed.items() if n in names}
    summary = RunSummary(adapter.dataset, len(samples), reports, time.time() - t0)
    summary.n_tasks, summary.n_reused = n_tasks, n_reused  # type: ignore[attr-defined]
    return summary

