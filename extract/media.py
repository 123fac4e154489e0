"""Media decoding with PyAV (bundles its own FFmpeg): audio and RGB frames from any container.

Every failure raises :class:`MediaError` naming the file and the reason, so one
broken clip is recorded and skipped, never fatal for a run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Frames per second sampled from each clip (face frames, visual encoders). 2 fps keeps a
#: 5 s MER utterance at ~10 frames: enough for a stable clip-level face embedding
#: (expression changes on the scale of 0.5 s) at a tenth of the cost of 25 fps. The one
#: definition: ``emo.extract.faces.DEFAULT_FPS``, ``emo extract --fps`` and ``emo score`` use it.
DEFAULT_FPS: float = 2.0


class MediaError(RuntimeError):
    """A file that cannot be decoded; ``str(e)`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _open(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.exists():
        raise MediaError(p, "file does not exist")
    if not p.is_file():  # a FIFO would block the decoder forever; devices and directories are no media either
        raise MediaError(p, "not a regular file (a FIFO, device or directory): refused")
    if p.stat().st_size == 0:
        raise MediaError(p, "empty file (0 bytes)")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except Exception as e:  # av.error.* carry FFmpeg's message
        raise MediaError(p, f"cannot open container ({type(e).__name__}: {e})") from None


@dataclass
class MediaInfo:
    """What a container holds: durations in seconds, rates in Hz / frames per second."""

    path: str
    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int
    channels: int
    fps: float
    width: int
    height: int


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read stream metadata without decoding. Raises :class:`MediaError`."""
    with _open(path) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        v = c.streams.video[0] if c.streams.video else None
        dur = float(c.duration / 1_000_000) if c.duration else 0.0
        return MediaInfo(
            path=str(path), duration=dur, has_audio=a is not None, has_video=v is not None,
            sample_rate=int(a.rate or 0) if a else 0, channels=int(a.channels or 0) if a else 0,
            fps=float(v.average_rate or 0) if v else 0.0,
            width=int(v.codec_context.width or 0) if v else 0, height=int(v.codec_context.height or 0) if v else 0,
        )


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream as mono float32 in [-1, 1] at ``sample_rate`` Hz.

    Channels are averaged (5.1 included); resampling is FFmpeg's (libswresample).

    Args:
        path: any container PyAV reads (wav, mp4, flv, mpg, ...).
        sample_rate: output rate in Hz (16000 for the speech models).
        max_seconds: stop after this much audio (``None``: all).

    Returns:
        float32 array of shape (T,).

    Raises:
        MediaError: no such file, empty file, no audio stream, undecodable data, or no samples.
    """
    import av

    with _open(path) as c:
        if not c.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = c.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        limit = None if max_seconds is None else int(max_seconds * sample_rate)
        try:
            for frame in c.decode(stream):
                frame.pts = None  # let the resampler follow sample counts (robust to broken timestamps)
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    chunks.append(arr)
                    total += arr.size
                if limit is not None and total >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            if not chunks:
                raise MediaError(path, f"undecodable audio ({e})") from None
            # a truncated file: keep what decoded (recorded by the caller via duration checks)
        if not chunks:
            raise MediaError(path, "audio stream holds no samples")
        audio = np.concatenate(chunks).astype(np.float32, copy=False)
        if limit is not None:
            audio = audio[:limit]
        if not np.all(np.isfinite(audio)):
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        return audio


def load_frames(
    path: str | os.PathLike, fps: float | None = DEFAULT_FPS, max_frames: int | None = None, max_side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode RGB frames sampled at ``fps`` frames per second.

    Frames are chosen by presentation time (the first frame at or after each
    sampling instant k/fps), so variable-frame-rate files are sampled evenly in time.

    Args:
        path: any container with a video stream.
        fps: sampling rate in frames per second; ``None`` keeps every decoded frame.
        max_frames: stop after this many sampled frames.
        max_side: downscale so the longer side is at most this many pixels (keeps 1080p cheap).

    Returns:
        ``(frames, times)``: uint8 array (F, H, W, 3) RGB, and float64 (F,) timestamps in seconds.

    Raises:
        MediaError: no video stream, undecodable data or no frames.
    """
    import av

    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(path, "no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else 0.0
        frames: list[np.ndarray] = []
        times: list[float] = []
        next_t = 0.0
        index = 0
        try:
            for frame in c.decode(stream):
                t = float(frame.pts * tb) if frame.pts is not None and tb else index / float(stream.average_rate or 25)
                index += 1
                if fps is not None and t + 1e-6 < next_t:
                    continue
                w, h = frame.width, frame.height
                if max_side and max(w, h) > max_side:
                    s = max_side / max(w, h)
                    w, h = max(2, int(round(w * s))) // 2 * 2, max(2, int(round(h * s))) // 2 * 2
                    img = frame.to_ndarray(format="rgb24", width=w, height=h)
                else:
                    img = frame.to_ndarray(format="rgb24")
                frames.append(img)
                times.append(t)
                if fps is not None:
                    next_t = (math.floor(t * fps + 1e-6) + 1) / fps
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as e:
            if not frames:
                raise MediaError(path, f"undecodable video ({e})") from None
        if not frames:
            raise MediaError(path, "video stream holds no frames")
        return np.stack(frames), np.asarray(times, dtype=np.float64)


def iter_audio(path: str | os.PathLike, sample_rate: int = 16000, window_seconds: float = 30.0,
               max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decode the first audio stream as mono float32 windows of ``window_seconds`` (last one shorter).

    Same decoding as :func:`emo.extract.media.load_audio` (FFmpeg resampler to mono ``flt``,
    non-finite samples set to 0), so ``np.concatenate(list(iter_audio(p)))`` equals
    ``load_audio(p)``; memory holds one window plus one decoded frame.

    Raises:
        MediaError: as :func:`load_audio` (no file, no audio stream, undecodable, no samples).
    """
    import av

    win = max(1, round(window_seconds * sample_rate))
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    buf = np.empty(win, np.float32)
    fill = 0
    total = 0

    def push(arr: np.ndarray) -> Iterator[np.ndarray]:
        nonlocal fill, total
        if limit is not None:
            arr = arr[: max(0, limit - total)]
        total += arr.size
        if not np.all(np.isfinite(arr)):
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        i = 0
        while i < arr.size:
            k = min(win - fill, arr.size - i)
            buf[fill:fill + k] = arr[i:i + k]
            fill += k
            i += k
            if fill == win:
                yield buf.copy()
                fill = 0

    with _open(path) as c:
        if not c.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = c.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in c.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    yield from push(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                if limit is not None and total >= limit:
                    break
            for out in resampler.resample(None):
                yield from push(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except av.error.FFmpegError as e:
            if total == 0:
                raise MediaError(path, f"undecodable audio ({e})") from None
        if total == 0:
            raise MediaError(path, "audio stream holds no samples")
        if fill:
            yield buf[:fill].copy()
