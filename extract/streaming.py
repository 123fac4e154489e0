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
* **eGeMAPS** (:func:`egemaps_stream`): openSMILE computes its functionals on whole contours
  (``frameMode = full``), so its eGeMAPSv02 configuration keeps ten low-level contours of the whole
  clip in its data memory: measured 15 MB per minute of audio (about 2.5 kB per 10 ms frame,
  mostly per-frame bookkeeping; preallocating the levels instead of letting them grow gave the same
  peak), i.e. the wave was gone but memory still grew with length. Eight of the ten contours only
  feed means and stddev/mean; a configuration built from openSMILE's own files turns them into
  ring buffers read by external sinks and their functionals become running float64 sums here,
  while openSMILE still computes the F0 and loudness functionals (percentiles, slopes,
  voiced-segment statistics) from its two remaining contours. The wave goes through a
  :data:`RING_SECONDS` ring buffer written from a thread. Measured growth: 3.9 MB per minute
  (2 vs 10 minutes streamed: 156 vs 187 MB peak). The 26 openSMILE-computed values equal the
  whole-signal ones bit for bit; the 62 means and stddev/means equal them to float rounding
  when the same frames are counted (openSMILE leaves out the last 0-3 frames that are still in its
  pipeline at end of input; :data:`_MOMENT_LEVELS`), otherwise within one frame's weight
  (tested on EmoDB).
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

from emo import compat
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


#: eGeMAPSv02 levels whose functionals are only means (and stddev/mean): level -> (zeros excluded
#: (``nonZeroFuncts=1``), stddevNorm wanted, tail frames the reference leaves out). Their
#: functionals are computed here from the streamed frames (running float64 sums), so openSMILE
#: keeps them as ring buffers instead of whole contours. openSMILE computes its full-input
#: functionals at end of input while the last frames are still in its pipeline (the smoothers'
#: end-of-input flush), so the whole-signal values leave out the last 0, 1 or 2 frames of these
#: levels (measured on 30 EmoDB files: always for the first two levels, 27 of 30 for the voiced
#: and unvoiced ones, the other 3 leave out one frame more); the same frames are left out here.
_MOMENT_LEVELS = {
    "egemapsv02_energyRMS": (False, False, 0),  # -> equivalentSoundLevel_dBp = 10 log10(mean)
    "egemapsv02_lldSetNoF0AndLoudnessZ_smo": (False, True, 1),  # egemapsv02_functionalsMVR
    "egemapsv02_lldSetNoF0AndLoudnessNz_smo": (True, True, 2),  # egemapsv02_functionalsMVRVoiced
    "egemapsv02_lldSetSpectralNz_smo": (True, True, 2),  # egemapsv02_functionalsMVRVoiced
    "egemapsv02_lldSetSpectralZ_smo": (True, False, 2),  # egemapsv02_functionalsMeanUV
}
#: components dropped from openSMILE's configuration (their work is done here, or unused by eGeMAPSv02's output)
_DROPPED = ("gemapsv01b_smoNoF0andLoudnNz", "gemapsv01b_smoSpectralZ", "gemapsv01b_smoSpectralNz",
            "gemapsv01b_functionalsMeanSpectralUV", "gemapsv01b_functionalsMVRVoiced")

_STREAM_MAIN = r"""[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
printLevelStats=0

\{\cm[source{?}:include external source]}
\{LLD1}
\{LLD2}
\{FUNC1}

[componentInstances:cComponentManager]
instance[funcconcat].type=cVectorConcat
SINKS
[funcconcat:cVectorConcat]
reader.dmLevel = gemapsv01b_functionalsF0;gemapsv01b_functionalsLoudness;gemapsv01b_temporalSet
writer.dmLevel = func
includeSingleElementFields = 1

\{\cm[sink{?}:include external sink]}
"""


def _edit(text: str, old: str, new: str, count: int, what: str) -> str:
    if text.count(old) != count:  # an openSMILE release with other config files: refuse rather than differ
        raise RuntimeError(f"unexpected openSMILE eGeMAPSv02 configuration ({what}: {text.count(old)} x {old!r})")
    return text.replace(old, new)


def _stream_config(root: Path, d: Path) -> Path:
    """Write the streaming eGeMAPSv02 configuration into ``d`` (from the installed openSMILE's own files):
    the moments-only levels of :data:`_MOMENT_LEVELS` become ring buffers read by external sinks
    ``emo_m<i>``, their functionals components and the unused GeMAPSv01b ones are dropped; the F0 and
    loudness functionals (percentiles, slopes, segment statistics) stay openSMILE's."""
    lld1 = (root / "gemaps/v01b/GeMAPSv01b_core.lld.conf.inc").read_text(encoding="utf-8")
    lld2 = (root / "egemaps/v02/eGeMAPSv02_core.lld.conf.inc").read_text(encoding="utf-8")
    func1 = (root / "gemaps/v01b/GeMAPSv01b_core.func.conf.inc").read_text(encoding="utf-8")
    for comp in _DROPPED:
        src = "lld1" if "smo" in comp else "func1"
        text = lld1 if src == "lld1" else func1
        text = _edit(text, f"instance[{comp}].type=", f";emo: dropped instance[{comp}].type=", 1, comp)
        lld1, func1 = (text, func1) if src == "lld1" else (lld1, text)
    # the five levels before the moments functionals (energyRMS and four smoothers): ring buffers
    lld2 = _edit(lld2, r"\{\cm[bufferModeConf]}", r"\{\cm[bufferModeRbConf]}", 5, "bufferModeConf in eGeMAPSv02 LLDs")
    import shutil

    shutil.copytree(root / "shared", d / "shared")  # the files include ../../shared/*.conf.inc
    (d / "v" / "v").mkdir(parents=True)
    paths = {}
    for key, text in (("LLD1", lld1), ("LLD2", lld2), ("FUNC1", func1)):
        paths[key] = d / "v" / "v" / f"{key.lower()}.conf.inc"
        paths[key].write_text(text, encoding="utf-8")
    sinks = "".join(f"instance[emo_m{i}].type=cExternalSink\n" for i in range(len(_MOMENT_LEVELS)))
    sinks += "".join(f"\n[emo_m{i}:cExternalSink]\nreader.dmLevel = {lvl}\n" for i, lvl in enumerate(_MOMENT_LEVELS))
    main = _STREAM_MAIN.replace("SINKS", sinks)
    for key, path in paths.items():
        main = main.replace("{" + key + "}", "{" + str(path) + "}")
    conf = d / "v" / "v" / "egemaps_stream.conf"
    conf.write_text(main, encoding="utf-8")
    return conf


class _Moments:
    """Running float64 count, sum and sum of squares per element of one level (zeros excluded when
    asked); the newest ``tail`` frames are held back and never counted (see :data:`_MOMENT_LEVELS`)."""

    def __init__(self, n: int, nonzero: bool, tail: int = 0) -> None:
        self.nonzero = nonzero
        self.tail = tail
        self.n = np.zeros(n)
        self.s1 = np.zeros(n)
        self.s2 = np.zeros(n)
        self.pending = np.zeros((0, n))

    def __call__(self, data: np.ndarray, meta=None) -> None:
        x = np.concatenate([self.pending, np.array(data, np.float64).reshape(-1, self.s1.size)])
        cut = max(0, x.shape[0] - self.tail)
        self.pending = x[cut:]
        x = x[:cut]
        self.n += (x != 0).sum(0) if self.nonzero else x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += (x * x).sum(0)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and population standard deviation per element (0 where no frame counted)."""
        n = np.maximum(self.n, 1)
        mean = self.s1 / n
        std = np.sqrt(np.maximum(self.s2 / n - mean ** 2, 0.0))
        return np.where(self.n > 0, mean, 0.0), np.where(self.n > 0, std, 0.0)


def egemaps_stream(smile, windows: Iterable[np.ndarray], sample_rate: int = 16000,
                   ring_seconds: float = RING_SECONDS) -> np.ndarray:
    """eGeMAPSv02 functionals of a streamed signal in memory that does not grow with its length (but for F0 and loudness).

    openSMILE's functionals read their input levels whole (``frameMode = full``), so its
    eGeMAPSv02 configuration keeps ten low-level contours for the whole clip, at about 2.5 kB per
    10 ms frame in its data memory (measured: 15 MB per minute of audio). Eight of those
    contours (energy, spectral and voice-quality descriptors, 38 values per frame) only feed
    arithmetic means and stddev/mean: here openSMILE runs a configuration built from its own
    files (:func:`_stream_config`) where those levels are ring buffers read by external sinks,
    and the means are running float64 sums (``nonZeroFuncts`` honoured: zeros excluded where the
    original excludes them; ``stddevNorm = 2``: stddev / mean, population stddev;
    ``equivalentSoundLevel_dBp`` = 10 log10 of the mean RMS energy). F0 and loudness (percentiles,
    slopes, segment statistics: two values per frame) stay openSMILE's own functionals. The wave
    itself goes through a :data:`RING_SECONDS` ring buffer written from a thread.

    Args:
        smile: an ``opensmile.Smile`` (eGeMAPSv02 functionals, as :class:`EGeMAPSEncoder` builds it).
        windows: float32 mono windows in [-1, 1] at ``sample_rate`` (any lengths).
        ring_seconds: wave ring buffer of the external source, seconds.

    Returns:
        float64 (88,) functionals in ``smile.feature_names`` order, compared with
        ``smile.process_signal`` of the concatenated signal (tests/test_extract_streaming_egemaps.py, EmoDB):
        the 26 openSMILE-computed values (F0, loudness, temporal) bit for bit; the 62 means and
        stddev/means within 1e-6 relative when openSMILE leaves out the tail frames listed in
        :data:`_MOMENT_LEVELS` (27 of 30 files), otherwise by one frame's weight (measured 5.6e-3
        relative on 70 s of speech; shrinks as 1/length).

    Raises:
        RuntimeError: openSMILE failed, produced no output, or its configuration files are not the
            ones this was written for (message says which).
    """
    import tempfile

    import opensmile
    from opensmile.core.config import config as ocfg

    with tempfile.TemporaryDirectory(prefix="emo-smile-") as d:
        src = Path(d) / "ring_source.conf.inc"
        src.write_text(_RING_SOURCE.format(nT=int(ring_seconds * sample_rate)), encoding="utf-8")
        stream_smile = opensmile.Smile(feature_set=str(_stream_config(Path(smile.default_config_root), Path(d))),
                                       feature_level="func",
                                       options={**smile.options,
                                                "bufferModeConf": str(Path(smile.default_config_root) / "shared/BufferMode.conf.inc")})
        engine = compat.smile_engine(stream_smile, source=str(src), sampleRate=int(sample_rate), nBits=16)
        rows: list[np.ndarray] = []
        engine.external_sink_set_callback_ex(ocfg.EXTERNAL_OUTPUT_COMPONENT, lambda data, meta: rows.append(np.array(data)))
        moments: list[tuple[list[str], _Moments, bool]] = []
        for i, (nonzero, norm, tail) in enumerate(_MOMENT_LEVELS.values()):
            comp = f"emo_m{i}"
            names = [engine.external_sink_get_element_name(comp, j) for j in range(engine.external_sink_get_num_elements(comp))]
            acc = _Moments(len(names), nonzero, tail)
            engine.external_sink_set_callback_ex(comp, acc)
            moments.append((names, acc, norm))
        func_names = [engine.external_sink_get_element_name(ocfg.EXTERNAL_OUTPUT_COMPONENT, j)
                      for j in range(engine.external_sink_get_num_elements(ocfg.EXTERNAL_OUTPUT_COMPONENT))]
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
        values = dict(zip(func_names, np.vstack(rows).reshape(-1).astype(np.float64)))
        for k, (names, acc, norm) in enumerate(moments):
            mean, std = acc.mean_std()
            if k == 0:  # energyRMS -> equivalent sound level
                values["equivalentSoundLevel_dBp"] = float(10.0 * np.log10(mean[0])) if mean[0] > 0 else 0.0
                continue
            for j, name in enumerate(names):
                values[f"{name}_amean"] = mean[j]
                if norm:
                    values[f"{name}_stddevNorm"] = std[j] / mean[j] if mean[j] != 0 else 0.0
        want = list(smile.feature_names)
        if set(values) != set(want):
            raise RuntimeError(f"streamed eGeMAPSv02 features differ from openSMILE's names "
                               f"(missing {sorted(set(want) - set(values))[:5]}, extra {sorted(set(values) - set(want))[:5]})")
        return np.array([values[n] for n in want], np.float64)


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
