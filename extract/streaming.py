"""Long audio in bounded memory: decode in windows, encode from the windows.

Design (issue 11, class 7). Today a clip is decoded whole (``load_audio``: float32, 230 MB for
60 min at 16 kHz, plus the decoder's chunk list and the encoders' own copies: openSMILE converts
the whole signal to int16 and keeps it in a growing wave level; librosa's STFT of 60 min is
~740 MB). For clips longer than :data:`STREAM_SECONDS` the engine instead hands each audio
encoder a :class:`StreamedAudio` (path + rate + window), and the encoder consumes
:func:`iter_audio` windows one at a time:

* **speech models** (``SpeechEncoder.encode_stream``): the batch path already splits a clip into
  ``chunk_seconds`` pieces, normalises and encodes each piece on its own and pools exactly
  (sum of frame vectors and frame count). Streaming feeds the same pieces (windows aligned to
  ``chunk_seconds``), so the pooled vector is the batch path's, up to float summation order.
* **eGeMAPS** (:func:`egemaps_stream`): the functionals (percentiles, slopes, voiced-segment
  statistics) need the whole signal's low-level descriptors, not the whole signal: openSMILE's
  own pipeline keeps the LLD levels (25 values at 100 Hz: 10 kB/s of audio, 6x less than the
  float32 wave) for the functionals. So openSMILE itself is fed the stream: its external
  audio source is configured as a ring buffer (:data:`RING_SECONDS` of wave), ``run()`` works
  in a thread and windows are written as the ring drains. The functionals come from the same
  code over the same samples, so they equal the whole-signal result bit for bit (tested);
  nothing of eGeMAPS is re-implemented.
* **MFCC statistics** (:func:`mfcc_stream`): the mean/std of MFCCs and deltas are running
  moments (float64 sums of x and x^2 over frames). librosa's dB conversion clips at
  ``max - 80 dB`` over the whole clip, so a first pass over the windows finds the global mel
  power maximum; the second pass computes MFCC frames per window with ``n_fft/2`` samples of
  context on each side (frames identical to the whole-signal STFT) and 4 frames of context for
  the deltas. Result equals the batch path up to float rounding (tested to 1e-4 relative).

Frame-level output (``--frames``) is the product itself and grows with the clip (50 frames/s x D
for speech models); it is the only part that still scales with length.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo.extract.media import iter_audio

#: Clips longer than this (seconds, by the container's duration) are streamed instead of decoded whole.
STREAM_SECONDS = 300.0
#: Audio handed to an encoder at once when streaming (seconds).
WINDOW_SECONDS = 30.0
#: openSMILE wave ring buffer length (seconds of audio it may hold).
RING_SECONDS = 60.0


@dataclass
class StreamedAudio:
    """A long clip that is decoded window by window (see :func:`iter_audio`).

    Attributes:
        path: the media file. sample_rate: Hz. duration: seconds (from the container, may be 0
        when unknown). max_seconds: decode at most this much (``None``: all).
    """

    path: Path
    sample_rate: int
    duration: float = 0.0
    max_seconds: float | None = None

    def windows(self, seconds: float = WINDOW_SECONDS) -> Iterator[np.ndarray]:
        """float32 (n,) windows of ``seconds`` (the last one shorter)."""
        return iter_audio(self.path, self.sample_rate, seconds, self.max_seconds)


# iter_audio lives in emo.extract.media (decoding belongs there); re-exported here.


# -- eGeMAPS ----------------------------------------------------------------------------------------
_RING_SOURCE = """[componentInstances:cComponentManager]
instance[extsource].type=cExternalAudioSource

[extsource:cExternalAudioSource]
writer.dmLevel=wave
writer.levelconf.growDyn=0
writer.levelconf.isRb=1
writer.levelconf.nT={nT}
sampleRate=\\cm[sampleRate{{16000}}:sample rate]
nBits=\\cm[nBits{{16}}:sample bits]
channels=\\cm[channels{{1}}:channel size]
"""


def egemaps_stream(smile, windows: Iterable[np.ndarray], sample_rate: int = 16000,
                   ring_seconds: float = RING_SECONDS) -> np.ndarray:
    """openSMILE functionals of a streamed signal, computed by openSMILE itself (see module docstring).

    Args:
        smile: an ``opensmile.Smile`` (eGeMAPSv02 functionals, as :class:`EGeMAPSEncoder` builds it).
        windows: float32 mono windows in [-1, 1] at ``sample_rate`` (any lengths).
        ring_seconds: wave ring buffer of the external source, seconds.

    Returns:
        float64 (F,) functionals (88 for eGeMAPSv02), equal to ``smile.process_signal`` of the
        concatenated signal (same float -> int16 conversion as opensmile-python: ``x * 32768``).

    Raises:
        RuntimeError: openSMILE failed or produced no output (message says which).
    """
    import tempfile

    from opensmile.core.config import config as ocfg

    with tempfile.TemporaryDirectory(prefix="emo-smile-") as d:
        src = Path(d) / "ring_source.conf.inc"
        src.write_text(_RING_SOURCE.format(nT=int(ring_seconds * sample_rate)), encoding="utf-8")
        opts = smile._options()
        opts.update(source=str(src), sampleRate=int(sample_rate), nBits=16)
        engine = smile._smile(opts)
        rows: list[np.ndarray] = []
        engine.external_sink_set_callback_ex(ocfg.EXTERNAL_OUTPUT_COMPONENT, lambda data, meta: rows.append(np.array(data)))
        errors: list[BaseException] = []

        def run() -> None:
            try:
                engine.run()
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=run, name="emo-opensmile", daemon=True)
        t.start()
        try:
            step = int(ring_seconds * sample_rate) // 4  # write in quarters of the ring
            for w in windows:
                x = (np.asarray(w, np.float32) * 32768).astype(np.int16)
                for i in range(0, x.size, step):
                    data = x[i:i + step].tobytes()
                    while not engine.external_audio_source_write_data(ocfg.EXTERNAL_SOURCE_COMPONENT, data):
                        if errors or not t.is_alive():
                            raise RuntimeError(f"openSMILE stopped while streaming ({errors[0] if errors else 'no error given'})")
                        time.sleep(0.002)
        finally:
            engine.external_audio_source_set_eoi(ocfg.EXTERNAL_SOURCE_COMPONENT)
            t.join()
            engine.free()
        if errors:
            raise RuntimeError(f"openSMILE failed ({errors[0]})")
        if not rows:
            raise RuntimeError("openSMILE produced no functionals (signal too short)")
        return np.vstack(rows).reshape(-1)


# -- MFCC -------------------------------------------------------------------------------------------
class _DeltaStream:
    """librosa.feature.delta(width=9, mode="nearest") over a stream of MFCC frame blocks, with 4 frames
    of context kept between blocks; accumulates sum and sum of squares of the deltas (float64)."""

    CTX = 4

    def __init__(self, n: int) -> None:
        self.buf = np.zeros((n, 0), np.float32)
        self.left = 0  # context frames at the start of buf (already counted)
        self.s1 = np.zeros(n)
        self.s2 = np.zeros(n)

    def push(self, m: np.ndarray, final: bool = False) -> None:
        import librosa

        self.buf = np.concatenate([self.buf, m], axis=1)
        n = self.buf.shape[1]
        hi = n if final else n - self.CTX
        if hi <= self.left:
            return
        if n >= 3:
            d = librosa.feature.delta(self.buf, mode="nearest")[:, self.left:hi].astype(np.float64)
        else:  # the batch path gives zeros for fewer than 3 frames
            d = np.zeros((self.buf.shape[0], hi - self.left))
        self.s1 += d.sum(1)
        self.s2 += (d ** 2).sum(1)
        keep = min(hi, self.CTX)
        self.buf = self.buf[:, hi - keep:]
        self.left = keep


def mfcc_stream(windows_factory: Callable[[], Iterable[np.ndarray]], sample_rate: int = 16000, n_mfcc: int = 40,
                n_fft: int = 512, win_length: int = 400, hop_length: int = 160, block_frames: int = 3000) -> np.ndarray:
    """MFCC + delta mean/std (``4 * n_mfcc`` values, the :class:`MFCCEncoder` layout) of a streamed signal.

    Mirrors ``librosa.feature.mfcc(y, sr, n_mfcc, n_fft, win_length, hop_length)`` (centred STFT
    with zero padding, 128-band mel power, ``power_to_db(top_db=80)``, DCT-II ortho) and
    ``librosa.feature.delta(mode="nearest")`` without holding the signal: frame ``i`` covers
    ``ypad[i*hop : i*hop + n_fft]`` of the zero-padded signal, so the STFT of a buffered span
    (``center=False``) yields exactly those frames; ``top_db`` is relative to the clip's maximum
    mel power, so a first pass over ``windows_factory()`` finds it and a second computes the
    frames; the deltas keep 4 frames of context between blocks. Moments are float64 sums.

    Args:
        windows_factory: called twice; each call returns the signal's windows (float32, any sizes).
        block_frames: frames computed per STFT call (memory: ``block_frames x n_fft`` floats).

    Returns:
        float32 (4 * n_mfcc,): mean(mfcc), std(mfcc), mean(delta), std(delta) (population std).
    """
    import librosa
    import scipy.fft

    pad = n_fft // 2
    amin = 1e-10

    def mel_blocks() -> Iterator[np.ndarray]:
        buf = np.zeros(pad, np.float32)  # librosa's centre padding: zeros
        block = block_frames * hop_length
        for w in windows_factory():
            buf = np.concatenate([buf, np.asarray(w, np.float32)])
            while buf.size >= block + n_fft:
                seg = buf[: block + n_fft - hop_length]  # exactly block_frames frames
                yield _mel(seg)
                buf = buf[block:]
        buf = np.concatenate([buf, np.zeros(pad, np.float32)])
        if buf.size >= n_fft:
            yield _mel(buf)

    def _mel(seg: np.ndarray) -> np.ndarray:
        S = np.abs(librosa.stft(seg, n_fft=n_fft, hop_length=hop_length, win_length=win_length, center=False)) ** 2
        return librosa.feature.melspectrogram(S=S, sr=sample_rate, n_fft=n_fft)

    gmax = max((float(S.max()) for S in mel_blocks()), default=0.0)
    floor = 10.0 * np.log10(max(amin, gmax)) - 80.0
    s1 = np.zeros(n_mfcc)
    s2 = np.zeros(n_mfcc)
    count = 0
    deltas = _DeltaStream(n_mfcc)
    for S in mel_blocks():
        log_s = np.maximum(10.0 * np.log10(np.maximum(amin, S)), floor)
        m = scipy.fft.dct(log_s, axis=-2, type=2, norm="ortho")[:n_mfcc].astype(np.float32)
        s1 += m.sum(1, dtype=np.float64)
        s2 += (m.astype(np.float64) ** 2).sum(1)
        count += m.shape[1]
        deltas.push(m)
    deltas.push(np.zeros((n_mfcc, 0), np.float32), final=True)
    c = max(1, count)
    mean, dmean = s1 / c, deltas.s1 / c
    std = np.sqrt(np.maximum(s2 / c - mean ** 2, 0))
    dstd = np.sqrt(np.maximum(deltas.s2 / c - dmean ** 2, 0))
    return np.concatenate([mean, std, dmean, dstd]).astype(np.float32)
