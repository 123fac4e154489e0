"""The extraction engine: dataset x encoders -> feature stores, batched, resumable.

Per window of samples, media are decoded once (audio and face frames) by a pool of
CPU workers that run ahead of the models (bounded prefetch), faces are detected and
aligned once for every face encoder, and each encoder gets size-sorted batches packed
by its budget so padding stays small. Finished samples stream into shard files, so
memory stays flat and a kill loses at most one unflushed shard per encoder.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator

import numpy as np

from emo.exitcodes import check_interrupt, deferred_interrupts, ensure_signal_handlers
from emo.extract.packing import pack
from emo.extract.datasets import DatasetAdapter, DatasetError, Sample, write_manifest
from emo.extract.encoders.base import Encoder
from emo.extract.faces.core import DEFAULT_FPS
from emo.extract.media import MediaError, load_audio, load_frames, probe
from emo.extract.registry import EncoderSpec
from emo.extract.store import StoreWriteError, StoreWriter, check_writable, store_path
from emo.extract.types import AudioInput, FaceInput, Input, TextInput, resolve_device

# DEFAULT_FPS (from emo.extract.faces): face frames sampled per second of video. MER clips are
# 2-10 s, so 2 fps gives 4-20 face frames per clip: enough for a stable mean, 12x cheaper than 25 fps.


@dataclass
class EncoderReport:
    """Per-encoder outcome of a run."""

    encoder: str
    store: str
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: finished samples whose media changed since they were stored: name -> reason (recomputed)
    recomputed: dict[str, str] = field(default_factory=dict)
    #: damaged store/shard files moved aside (their samples recomputed), one line each
    quarantined: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    """What `emo extract` prints at the end and returns."""

    dataset: str
    samples: int
    encoders: list[EncoderReport]
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return sum(len(r.failed) for r in self.encoders)

    def table(self) -> str:
        lines = [f"dataset {self.dataset}: {self.samples} samples, {self.seconds:.1f} s",
                 f"{'encoder':18s} {'done':>7s} {'skipped':>8s} {'failed':>7s}  flags / store"]
        for r in self.encoders:
            flags = ", ".join(f"{k}={v}" for k, v in sorted(r.flagged.items()))
            lines.append(f"{r.encoder:18s} {r.done:7d} {r.skipped:8d} {len(r.failed):7d}  {flags + '  ' if flags else ''}{r.store}")
        for r in self.encoders:
            for q in r.quarantined:
                lines.append(f"[{r.encoder}] quarantined damaged file {q}")
        changed = [(r.encoder, n, e) for r in self.encoders for n, e in r.recomputed.items()]
        if changed:
            lines.append(f"recomputed {len(changed)} sample(s) whose media changed since they were stored:")
            for enc, n, e in changed[:50]:
                lines.append(f"  [{enc}] {n}: {e}")
        failed = [(r.encoder, n, e) for r in self.encoders for n, e in r.failed.items()]
        if failed:
            lines.append("failed samples:")
            for enc, n, e in failed[:50]:
                lines.append(f"  [{enc}] {n}: {e}")
            if len(failed) > 50:
                lines.append(f"  ... and {len(failed) - 50} more (see the stores' failed/ groups)")
        return "\n".join(lines)


@dataclass
class Decoded:
    sample: Sample
    audio: np.ndarray | None = None
    audio_error: str | None = None
    frames: np.ndarray | None = None
    frames_error: str | None = None
    stream: Any = None  # emo.extract.streaming.StreamedAudio: a long clip encoded window by window


class _SharedCropper:
    """The face cropper of an extractor and of its :meth:`Extractor.for_encoders` copies, built once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cropper = None


class StrictError(RuntimeError):
    """Raised with ``strict=True`` at the first per-sample failure."""


#: Most face frames decoded per clip: a clip longer than MAX_FACE_FRAMES / fps seconds (2 min at
#: 2 fps) is sampled at a lower rate so its frames still span the whole clip and a decode window
#: of long videos stays within a few GB.
MAX_FACE_FRAMES = 240


def decode_sample(sample: Sample, need_audio: bool, need_frames: bool, sample_rate: int, fps: float,
            max_side: int | None, max_seconds: float | None, stream_seconds: float | None = None) -> Decoded:
    """Decode one sample's media for the encoders that still need it (run in the decode pool).

    Audio is mono float32 at ``sample_rate`` Hz; face frames are uint8 RGB (F, H, W, 3) sampled at
    ``fps`` (at most :data:`MAX_FACE_FRAMES`, longer clips are sampled more sparsely), the longer
    side scaled down to ``max_side`` pixels. Never raises: a decode error is kept as text in the
    result (``audio_error`` / ``frames_error``) and becomes that sample's failure.

    A clip longer than ``stream_seconds`` (by its container's duration) is not decoded here: ``stream``
    is set instead and the audio encoders read it window by window (:mod:`emo.extract.streaming`),
    so memory does not grow with clip length. A video with no audio stream gets one second of
    silence (the encoders then flag it ``silent``) instead of an audio failure: its face and text
    features are still usable in a multimodal dataset; an audio-only file without audio fails.
    """
    d = Decoded(sample)
    audio_src = sample.audio or sample.media  # a pre-extracted wav (MER 2025/2026 audio/) wins over the video's track
    if sample.media is None and audio_src is None:
        msg = f"{sample.name}: sample has no media file"
        d.audio_error = d.frames_error = msg
        return d
    if need_audio:
        try:
            info = None
            if stream_seconds is not None:
                try:
                    info = probe(audio_src)
                except MediaError:
                    info = None  # load_audio names the problem below
            if info is not None and info.has_audio and min(info.duration, max_seconds or info.duration) > stream_seconds:
                from emo.extract.streaming import StreamedAudio

                d.stream = StreamedAudio(Path(audio_src), sample_rate, info.duration, max_seconds)
            else:
                d.audio = load_audio(audio_src, sample_rate, max_seconds=max_seconds)
        except MediaError as e:
            d.audio_error = str(e)
            if e.reason == "no audio stream":
                try:
                    if probe(sample.media).has_video:
                        d.audio, d.audio_error = np.zeros(sample_rate, np.float32), None
                except MediaError:
                    pass
        except Exception as e:  # decoding must never kill a run
            d.audio_error = f"{audio_src}: {type(e).__name__}: {e}"
    if need_frames and sample.media is None:
        d.frames_error = f"{sample.name}: sample has no video file"
    elif need_frames:
        try:
            rate = fps
            try:  # long clips: spread at most MAX_FACE_FRAMES over the whole clip (bounded memory)
                dur = probe(sample.media).duration
                if max_seconds is not None:
                    dur = min(dur, max_seconds)
                if dur > 0 and dur * fps > MAX_FACE_FRAMES:
                    rate = MAX_FACE_FRAMES / dur
            except MediaError:
                pass  # load_frames names the problem below
            max_frames = MAX_FACE_FRAMES if max_seconds is None else min(MAX_FACE_FRAMES, int(max_seconds * rate) + 1)
            d.frames, _ = load_frames(sample.media, rate, max_frames=max_frames, max_side=max_side)
        except MediaError as e:
            d.frames_error = str(e)
        except Exception as e:
            d.frames_error = f"{sample.media}: {type(e).__name__}: {e}"
    return d


def identities(samples: list[Sample]) -> dict[str, str | None]:
    """Identity key of each sample's media (:func:`emo.extract.identity.identify`: size and a
    blake2b of three 1 MiB blocks), ``None`` where the file is missing or unreadable (its decode
    then fails with the reason). Stored per sample so a resumed run recomputes a changed file."""
    from emo.extract.identity import IdentityError, identify

    out: dict[str, str | None] = {}
    for s in samples:
        try:
            out[s.name] = identify(s.media).key if s.media is not None else None
        except IdentityError:
            out[s.name] = None
    return out


def _windows(samples: list[Sample], size: int) -> Iterator[list[Sample]]:
    for i in range(0, len(samples), size):
        yield samples[i:i + size]


class Extractor:
    """Run several encoders over one dataset.

    Args:
        specs: parsed encoder specs (:func:`emo.extract.registry.parse_encoder_spec`).
        out: feature root; stores go to ``<out>/<dataset>/<encoder>.h5``.
        device: ``cpu`` / ``cuda`` / ``cuda:N`` / ``auto`` (CUDA when available, else CPU).
        frames: also store frame-level features: ``True`` for every encoder, or a collection of
            encoder names (e.g. only those a frame-level fusion run needs); one decode serves all.
        fps: face-frame sampling rate (frames per second) for face encoders.
        face_detector: ``mtcnn`` or ``haar``; mtcnn_weights: directory of pnet/rnet/onet.pt.
        batch_budget: per-encoder batch budget override (seconds of audio / frames / tokens).
        decode_workers: CPU decode workers. PyAV releases the GIL while decoding, so threads
            scale (measured on 2 cores over the 49 real av/ clips: 1 thread 22.6 s, 2 threads
            17.8 s, 2 processes 16.8 s); ``decode_pool="process"`` uses processes instead.
        workers: deprecated alias of ``decode_workers`` (``emo extract --workers`` now means dask
            workers, see :mod:`emo.extract.distributed`).
        decode_pool: ``thread`` (default) or ``process``.
        window: samples decoded ahead per step (bounded prefetch: at most 2 windows in flight).
        bucket_pool: audio and text items are pooled across decode windows until the pool holds
            this many batch budgets, then sorted by cost and packed (:func:`pack`): the larger
            the pool, the less padding (EmoDB's real durations at a 200 s budget: 32% padding
            when sorting only 64-clip windows, 8% when sorting all 535). Memory: the pool holds
            ``bucket_pool x budget`` seconds of float32 audio (8 x 200 s = 100 MB on GPU).
        naive: the MER-baseline reference path (:mod:`emo.extract.naive`): speech models run
            one clip per forward in fp32 with all hidden states, every encoder gets one clip per
            call. Only for side-by-side benchmarks; features equal the fast path's.
        max_seconds: decode at most this many seconds of each clip (``None``: all; long clips
            are chunked by the audio encoders, so memory stays bounded anyway).
        overwrite: replace existing stores instead of resuming.
        strict: stop at the first per-sample error.
        encoder_options: extra keyword options for every encoder (e.g. ``batch_seconds``).
        shard_size, flush_seconds: a shard is written every ``shard_size`` samples or
            ``flush_seconds`` seconds (a kill loses at most that much work per encoder).
    """

    def __init__(self, specs: list[EncoderSpec], out: str | os.PathLike = "features", device: str = "cpu",
                 frames: bool | Collection[str] = False, fps: float = DEFAULT_FPS, face_detector: str = "mtcnn",
                 mtcnn_weights: str | None = None, workers: int | None = None, window: int = 64,
                 max_seconds: float | None = None, max_side: int | None = 640, overwrite: bool = False,
                 strict: bool = False, progress: bool = True, encoder_options: dict[str, Any] | None = None,
                 encoders: list[Encoder] | None = None, shard_size: int = 64,
                 flush_seconds: float | None = 60.0, decode_workers: int | None = None,
                 decode_pool: str = "thread", naive: bool = False, bucket_pool: float = 8.0) -> None:
        if not specs and not encoders:
            raise ValueError("no encoder given: pass at least one --encoder")
        self.specs = specs
        self.out = Path(out)
        self.device = device = resolve_device(device)
        self.frames = frames
        self.fps = fps
        self.face_detector = face_detector
        self.mtcnn_weights = mtcnn_weights
        if decode_pool not in ("thread", "process"):
            raise ValueError(f"decode_pool must be 'thread' or 'process', not {decode_pool!r}")
        self.decode_workers = max(1, decode_workers or workers or 2)
        self.decode_pool = decode_pool
        self.naive = naive
        self.bucket_pool = max(1.0, float(bucket_pool))
        self.window = max(1, window)
        self.max_seconds = max_seconds
        self.max_side = max_side
        self.overwrite = overwrite
        self.strict = strict
        self.progress = progress
        self.shard_size = shard_size
        self.flush_seconds = flush_seconds
        opts = encoder_options or {}
        if encoders is None:
            if naive:
                from emo.extract.naive import build_naive

                encoders = [build_naive(s, device=device, frames=self._wants_frames(s.name), **opts) for s in specs]
            else:
                encoders = [s.build(device=device, frames=self._wants_frames(s.name), **opts) for s in specs]
        self.encoders: list[Encoder] = encoders
        self._pools: dict[str, list[Input]] = {}
        self._shared = _SharedCropper()  # shared with for_encoders() copies

    # -- helpers -----------------------------------------------------------------
    def _wants_frames(self, encoder: str) -> bool:
        """``frames`` is ``True`` (every encoder), ``False`` or a collection of encoder names."""
        return self.frames is True or (not isinstance(self.frames, bool) and encoder in self.frames)

    def _crop_size(self) -> int:
        """Aligned-crop side in pixels: the largest input side among the face encoders (224 by default),
        so no encoder has to upsample its crops."""
        sizes = [224]
        for e in self.encoders:
            pre = getattr(e, "preprocess", None)
            try:
                sizes.append(int(max(pre.input_size)))
            except Exception:
                pass
        return max(sizes)

    def _face_cropper(self):
        with self._shared.lock:
            if self._shared.cropper is None:
                from emo.extract.faces import FaceCropper

                self._shared.cropper = FaceCropper(detector=self.face_detector, weights=self.mtcnn_weights,
                                                   device=self.device, size=self._crop_size())
            return self._shared.cropper

    def provenance(self, enc: Encoder, dataset: str, adapter: DatasetAdapter | None = None) -> dict[str, Any]:
        """Everything written into ``enc``'s store for ``dataset``: the encoder's provenance
        (:meth:`Encoder.provenance`), the dataset name, the data it came from (``dataset_root``,
        ``dataset_options``, ``augmentation``: :func:`emo.extract.identity.dataset_provenance`, when
        ``adapter`` is given), ``max_seconds`` and, for face encoders, the face-frame rate (``fps``),
        the decode size (``max_side``) and the face detector's provenance (``face_detector``,
        ``face_weights_hash``, crop size, template). Every key that changes values is here, so a
        resumed run with any of them changed is refused with the difference named.

        Raises:
            emo.extract.faces.FaceError: the face detector cannot be built (e.g. MTCNN weights missing).
        """
        p = {**enc.provenance(), "dataset": dataset}
        if adapter is not None:
            from emo.extract.identity import dataset_provenance

            p.update(dataset_provenance(adapter))
        if self.max_seconds is not None:
            p["max_seconds"] = float(self.max_seconds)
        if enc.modality == "face":
            p["fps"] = float(self.fps)
            if self.max_side is not None:
                p["max_side"] = int(self.max_side)
            p.update({f"face_{k}": v for k, v in self._face_cropper().provenance().items()})
        return p

    def for_encoders(self, names: Collection[str]) -> "Extractor":
        """A new :class:`Extractor` running only the encoders called ``names`` (in this one's order).

        The encoders (loaded models) and the face detector are shared, nothing of this extractor is
        modified, and the new one has its own run state, so two threads may each run a subset at once.

        Raises:
            KeyError: a name that is not one of this extractor's encoders.
        """
        names = set(names)
        unknown = names - {e.name for e in self.encoders}
        if unknown:
            raise KeyError(f"not an encoder of this extractor: {', '.join(sorted(unknown))}")
        sub = copy.copy(self)
        sub.encoders = [e for e in self.encoders if e.name in names]
        sub.specs = [s for s in self.specs if s.name in names]
        sub._pools = {}
        return sub

    def _budget(self, enc: Encoder) -> float:
        if self.naive:
            return 0.0  # pack() then puts every item in a batch of its own
        on_gpu = self.device.startswith("cuda")
        if enc.modality == "audio":
            return float(getattr(enc, "batch_seconds", 200.0 if on_gpu else 60.0))
        if enc.modality == "face":
            return float(enc.options.get("batch_frames") or (1024 if on_gpu else 64))
        return float(enc.options.get("batch_tokens") or (16384 if on_gpu else 4096))

    # -- the run -------------------------------------------------------------------
    def run(self, adapter: DatasetAdapter, samples: list[Sample] | None = None) -> RunSummary:
        """Extract every encoder's features for ``samples`` (default: all of the adapter's).

        Returns a :class:`RunSummary`. Per-sample errors are recorded in the stores and the
        summary and never stop the run (unless ``strict``). Stores are merged at the end; on
        an interrupt, finished samples are flushed before the exception propagates.
        """
        t0 = time.time()
        if samples is None:
            samples = adapter.samples()
        if not samples:
            raise DatasetError(f"{adapter.name}: no media files under {adapter.root} (searched for "
                               "audio/video files recursively); check --root")
        ds_dir = check_writable(self.out / adapter.dataset)  # read-only --out: clear error before any work
        for enc in self.encoders:  # dataset-level checks of an encoder (nrc_vad: zero lexicon coverage is an error)
            check = getattr(enc, "check_dataset", None)
            if check is not None:
                check(samples, adapter)
        self._ids = identities(samples)
        ensure_signal_handlers()  # SIGINT/SIGTERM recorded even when a C callback swallows them
        writers: list[StoreWriter] = []
        reports: list[EncoderReport] = []
        try:
            for enc in self.encoders:
                path = store_path(self.out, adapter.dataset, enc.name)
                w = StoreWriter(path, self.provenance(enc, adapter.dataset, adapter), enc.layers, frames=bool(enc.frames),
                                dtype=getattr(enc, "store_dtype", "float16"), overwrite=self.overwrite,
                                shard_size=self.shard_size, flush_seconds=self.flush_seconds)
                writers.append(w)
                report = EncoderReport(enc.name, str(path), quarantined=list(w.quarantined))
                report.recomputed = w.changed(self._ids)  # same name, different content: recompute it
                w.invalidate(report.recomputed)
                try:
                    dims = enc.dims()
                except Exception:  # not known before running: check_space assumes a small default
                    dims = None
                w.check_space(sum(s.name not in w.done for s in samples), dims)  # a clearly full disk fails now
                reports.append(report)
            # only now: a store refused for different settings must not be left under another dataset's manifest
            write_manifest(ds_dir, adapter, samples)
            self._extract(samples, writers, reports)
            for w in writers:
                w.finalize()
        finally:
            for w in writers:
                w.close()
        wanted = {s.name for s in samples}  # built once: the comprehension used to rebuild it per failure
        for r, w in zip(reports, writers):
            r.failed = {n: e for n, e in w.failed.items() if n in wanted}
        return RunSummary(adapter.dataset, len(samples), reports, time.time() - t0)

    def extract_into(self, samples: list[Sample], writers: list, reports: list[EncoderReport]) -> None:
        """Extract ``samples`` into already-open writers (one per encoder, in order), without
        writing a manifest or merging: the building block of :meth:`run` and of the dask tasks
        (:mod:`emo.extract.distributed`). Samples in a writer's ``done`` set are skipped."""
        self._extract(samples, writers, reports)

    def _extract(self, samples: list[Sample], writers: list[StoreWriter], reports: list[EncoderReport]) -> None:
        if getattr(self, "_ids", None) is None or any(s.name not in self._ids for s in samples):
            self._ids = {**(getattr(self, "_ids", None) or {}), **identities(samples)}
        todo: list[set[str]] = []
        for w, r in zip(writers, reports):
            t = {s.name for s in samples if s.name not in w.done}
            r.skipped = len(samples) - len(t)
            todo.append(t)
        pending = [s for s in samples if any(s.name in t for t in todo)]
        self._pools: dict[str, list[Input]] = {}
        if not pending:
            return
        audio_encs = [i for i, e in enumerate(self.encoders) if e.modality == "audio"]
        face_encs = [i for i, e in enumerate(self.encoders) if e.modality == "face"]
        rates = {self.encoders[i].sample_rate or 16000 for i in audio_encs}
        if len(rates) > 1:
            raise ValueError(f"audio encoders need different sample rates {sorted(rates)}: run them separately")
        sr = rates.pop() if rates else 16000
        from emo.extract.streaming import STREAM_SECONDS

        # long clips are streamed when every audio encoder can consume a stream (frame-level output cannot)
        streamable = bool(audio_encs) and all(hasattr(self.encoders[i], "encode_stream") and not self.encoders[i].frames
                                               and not self.naive for i in audio_encs)
        stream_seconds = STREAM_SECONDS if streamable else None
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(pending), unit="clip", desc="extract", file=sys.stderr)

        def submit(pool, window):
            futs = []
            for s in window:
                need_a = any(s.name in todo[i] for i in audio_encs)
                need_f = any(s.name in todo[i] for i in face_encs)
                futs.append(pool.submit(decode_sample, s, need_a, need_f, sr, self.fps, self.max_side, self.max_seconds,
                                        stream_seconds))
            return futs

        pool_cls = cf.ProcessPoolExecutor if self.decode_pool == "process" else cf.ThreadPoolExecutor
        with pool_cls(self.decode_workers) as pool:
            queue: deque = deque()
            windows = _windows(pending, self.window)
            for _ in range(2):  # bounded prefetch: two windows in flight
                w = next(windows, None)
                if w is not None:
                    queue.append(submit(pool, w))
            while queue:
                futs = queue.popleft()
                nxt = next(windows, None)
                if nxt is not None:
                    queue.append(submit(pool, nxt))
                decoded = [f.result() for f in futs]
                check_interrupt()
                self._process_window(decoded, todo, writers, reports)
                check_interrupt()
                if bar is not None:
                    bar.update(len(decoded))
        for enc, w, r in zip(self.encoders, writers, reports):  # what the pools still hold
            self._bucket(enc, w, r, [], final=True)
        if bar is not None:
            bar.close()

    def _fail(self, w: StoreWriter, r: EncoderReport, name: str, error: str) -> None:
        w.fail(name, error)
        r.failed[name] = error
        if self.strict:
            raise StrictError(f"[{r.encoder}] {error}")

    def _process_window(self, decoded: list[Decoded], todo, writers, reports) -> None:
        faces: dict[str, Any] = {}  # sample name -> FaceTrack
        face_errors: dict[str, str] = {}
        if any(e.modality == "face" for e in self.encoders):
            with_frames = [d for d in decoded if d.frames is not None]
            if with_frames:
                try:
                    tracks = self._face_cropper().process([d.frames for d in with_frames])
                    for d, t in zip(with_frames, tracks):
                        faces[d.sample.name] = t
                except Exception:  # detector failure on the batch: retry clip by clip
                    for d in with_frames:
                        try:
                            faces[d.sample.name] = self._face_cropper().process([d.frames])[0]
                        except Exception as e2:
                            face_errors[d.sample.name] = f"{d.sample.media}: face detection failed ({type(e2).__name__}: {e2})"
            for d in decoded:
                d.frames = None  # free frame memory early
        for enc, w, r, t in zip(self.encoders, writers, reports, todo):
            items: list[Input] = []
            for d in decoded:
                name = d.sample.name
                if name not in t:
                    continue
                if enc.modality == "audio":
                    if d.stream is not None:
                        self._encode_stream(enc, d.stream, name, w, r)
                        continue
                    if d.audio is None:
                        self._fail(w, r, name, d.audio_error or f"{name}: no audio")
                        continue
                    items.append(AudioInput(name, d.audio))
                elif enc.modality == "face":
                    if name in faces:
                        items.append(FaceInput(name, faces[name].crops, n_frames=int(faces[name].n_frames)))
                    else:
                        self._fail(w, r, name, face_errors.get(name) or d.frames_error or f"{name}: no video frames")
                else:
                    items.append(TextInput(name, d.sample.transcript or ""))
            if not items:
                continue
            self._bucket(enc, w, r, items)

    def _bucket(self, enc: Encoder, w, r: EncoderReport, items: list[Input], final: bool = False) -> None:
        """Add items to the encoder's bucketing pool; once the pool holds ``bucket_pool`` batch
        budgets (or at the end), sort it by cost, pack it and run every batch. Face items are
        never pooled (their crops are large; frame counts per clip vary little)."""
        pool = self._pools.setdefault(enc.name, [])
        pool.extend(items)
        if not pool:
            return
        budget = self._budget(enc)
        held = sum(enc.cost(i) for i in pool)
        if not final and enc.modality != "face" and budget > 0 and held < self.bucket_pool * budget:
            return
        self._pools[enc.name] = []
        t0 = time.time()
        for batch_idx in pack(pool, enc.cost, budget):
            self._encode_batch(enc, [pool[i] for i in batch_idx], w, r)
        r.seconds += time.time() - t0

    def _encode_stream(self, enc: Encoder, stream, name: str, w: StoreWriter, r: EncoderReport) -> None:
        """One long clip, window by window (:meth:`encode_stream` of the audio encoders)."""
        t0 = time.time()
        try:
            with deferred_interrupts():
                o = enc.encode_stream(name, stream)
        except Exception as e:
            check_interrupt()
            msg = str(e) if str(e).startswith(name) else f"{name}: {type(e).__name__}: {e}"
            self._fail(w, r, name, f"{enc.name} failed: {msg}")
            return
        finally:
            r.seconds += time.time() - t0
        check_interrupt()
        self._store(w, r, name, o)

    def _encode_batch(self, enc: Encoder, batch: list[Input], w: StoreWriter, r: EncoderReport) -> None:
        try:
            with deferred_interrupts():  # a C callback (openSMILE) must not swallow SIGINT/SIGTERM
                outs = enc.encode(batch)
        except Exception as e:
            check_interrupt()  # an error caused by the interrupt is not the clip's failure
            if len(batch) > 1:  # isolate the bad item: retry one by one
                for item in batch:
                    self._encode_batch(enc, [item], w, r)
                return
            msg = str(e) if str(e).startswith(batch[0].name) else f"{batch[0].name}: {type(e).__name__}: {e}"
            self._fail(w, r, batch[0].name, f"{enc.name} failed: {msg}")
            return
        check_interrupt()  # outputs computed while a signal arrived are never stored
        for item, o in zip(batch, outs):
            if isinstance(item, FaceInput):  # face-frame coverage per clip, for `emo store info`
                o.info.setdefault("face_frames", int(len(item.crops)))
                o.info.setdefault("frames_sampled", int(item.n_frames))
            self._store(w, r, item.name, o)

    def _store(self, w: StoreWriter, r: EncoderReport, name: str, o) -> None:
        """Hand one finished sample to its store with its media identity; a sample the store refuses
        (non-finite values, wrong dimension) becomes that sample's failure with the reason."""
        try:
            w.add(name, o, identity=(getattr(self, "_ids", None) or {}).get(name))
        except StoreWriteError:  # disk full / read-only: fatal, the store stays intact
            raise
        except Exception as e:
            self._fail(w, r, name, str(e))
            return
        r.done += 1
        for f in o.flags:
            r.flagged[f] = r.flagged.get(f, 0) + 1
