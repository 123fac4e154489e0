"""Weight-free acoustic features: openSMILE eGeMAPSv02 functionals and librosa MFCC statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import AudioInput, Encoded, EncoderError


@register_encoder("egemaps", None, summary="openSMILE eGeMAPSv02 functionals, 88-d, no weights")
class EGeMAPSEncoder(Encoder):
    """openSMILE eGeMAPSv02 functionals (Eyben et al., IEEE TAC 2016): 88 values per utterance.

    One layer, ``functionals`` (88-d, float32 in the store: the raw functionals span
    several orders of magnitude). Needs no download. Runs on CPU, one utterance per
    openSMILE call (the library has no batch API); the engine parallelises decoding.
    """

    modality = "audio"
    sample_rate = 16000
    pooling = "functionals"
    store_dtype = "float32"

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        import opensmile

        self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                      feature_level=opensmile.FeatureLevel.Functionals)
        self.feature_names = list(self._smile.feature_names)
        self._select()

    def available_layers(self) -> list[str]:
        return ["functionals"]

    def dims(self) -> dict[str, int]:
        return {"functionals": len(self.feature_names)}


    def provenance(self) -> dict[str, Any]:
        import opensmile

        p = super().provenance()
        p.update(feature_set="eGeMAPSv02", weights_hash=f"opensmile-{opensmile.__version__}")
        return p

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        out = []
        for item in batch:
            a = np.asarray(item.audio, dtype=np.float32)
            flags = set() if np.any(a) else {"silent"}
            if a.size < self.sample_rate // 10:  # openSMILE needs a few frames
                a = np.pad(a, (0, self.sample_rate // 10 - a.size))
            try:
                v = self._smile.process_signal(a, self.sample_rate).to_numpy(dtype=np.float32).reshape(-1)
            except Exception as e:
                raise EncoderError(f"{item.name}: openSMILE failed ({e})") from None
            out.append(Encoded(layers={"functionals": np.nan_to_num(v)}, flags=flags))
        return out

    def encode_stream(self, name: str, audio) -> Encoded:
        """Functionals of a long clip streamed window by window (:class:`emo.extract.streaming.StreamedAudio`):
        openSMILE consumes the stream (:func:`emo.extract.streaming.egemaps_stream`): its F0, loudness and
        temporal functionals equal :meth:`encode` of the whole signal bit for bit, the means and
        stddev/means (running sums of eight contours openSMILE would otherwise keep whole) within the
        tolerance stated there, and memory no longer holds those contours."""
        from emo.extract.streaming import egemaps_stream

        silent = True

        def windows():
            nonlocal silent
            for w in audio.windows():
                silent &= not np.any(w)
                yield w

        try:
            v = egemaps_stream(self._smile, windows(), self.sample_rate).astype(np.float32)
        except RuntimeError as e:
            raise EncoderError(f"{name}: openSMILE failed ({e})") from None
        return Encoded(layers={"functionals": np.nan_to_num(v)}, flags={"silent"} if silent else set())


@register_encoder("mfcc", None, summary="librosa MFCC + delta statistics (mean, std), 160-d, no weights")
class MFCCEncoder(Encoder):
    """MFCC statistics via librosa: 40 MFCCs and their deltas, mean and standard deviation over
    frames (25 ms window, 10 ms hop at 16 kHz): one layer ``stats`` of 160 values.
    """

    modality = "audio"
    sample_rate = 16000
    pooling = "mean+std"
    store_dtype = "float32"
    n_mfcc = 40

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        self._select()

    def available_layers(self) -> list[str]:
        return ["stats"]

    def dims(self) -> dict[str, int]:
        return {"stats": 4 * self.n_mfcc}


    def provenance(self) -> dict[str, Any]:
        import librosa

        p = super().provenance()
        p.update(feature_set=f"mfcc{self.n_mfcc}+delta", weights_hash=f"librosa-{librosa.__version__}")
        return p

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        import librosa

        out = []
        for item in batch:
            a = np.asarray(item.audio, dtype=np.float32)
            flags = set() if np.any(a) else {"silent"}
            if a.size < 400:
                a = np.pad(a, (0, 400 - a.size))
            m = librosa.feature.mfcc(y=a, sr=self.sample_rate, n_mfcc=self.n_mfcc, n_fft=512, win_length=400, hop_length=160)
            d = librosa.feature.delta(m, mode="nearest") if m.shape[1] >= 3 else np.zeros_like(m)
            v = np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)]).astype(np.float32)
            frames = {"stats": np.concatenate([m, d]).T.astype(np.float32)} if self.frames else None
            out.append(Encoded(layers={"stats": v}, frames=frames, flags=flags))
        return out

    def encode_stream(self, name: str, audio) -> Encoded:
        """MFCC statistics of a long clip from streamed windows (:func:`emo.extract.streaming.mfcc_stream`:
        two passes, equal to :meth:`encode` up to float rounding). Frame-level output is not streamed."""
        from emo.extract.streaming import mfcc_stream

        silent = True

        def windows():
            nonlocal silent
            for w in audio.windows():
                silent &= not np.any(w)
                yield w

        v = mfcc_stream(windows, self.sample_rate, self.n_mfcc)
        return Encoded(layers={"stats": v}, flags={"silent"} if silent else set())
