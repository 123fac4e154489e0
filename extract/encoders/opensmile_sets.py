"""More weight-free openSMILE feature sets: ComParE 2016 functionals and eGeMAPS low-level descriptors.

Both run offline (the ``opensmile`` package ships its configuration files) and record in the store
the feature set, the feature level and the openSMILE version, so stores of different sets or
versions never mix (the store refuses a resume with different provenance).

- ``compare``: ComParE 2016 functionals (Schuller et al., Interspeech 2016 ComParE challenge;
  Eyben, *Real-time speech and music classification by large audio feature space extraction*,
  Springer 2016): 6,373 values per utterance, one layer ``functionals``.
- ``egemaps_lld``: the 25 eGeMAPSv02 low-level descriptors (Eyben et al., IEEE TAC 2016) every
  10 ms. Layer ``lld``: the utterance vector is their mean and standard deviation over frames
  (50-d, means first); with ``emo extract --frames`` the store also keeps the (T, 25) frame
  sequence (a frame-level store for ``emo fuse train --frames``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import AudioInput, Encoded, EncoderError


def _pad(a: np.ndarray, sample_rate: int) -> np.ndarray:
    if a.size < sample_rate // 10:  # openSMILE needs a few frames
        a = np.pad(a, (0, sample_rate // 10 - a.size))
    return a


class _OpenSmileSet(Encoder):
    """Shared code: one ``opensmile.Smile`` per encoder, one utterance per call (no batch API)."""

    modality = "audio"
    sample_rate = 16000
    store_dtype = "float32"
    feature_set = ""
    feature_level = ""

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        import opensmile

        self._smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                                      feature_level=getattr(opensmile.FeatureLevel, self.feature_level))
        self.feature_names = list(self._smile.feature_names)
        self._select()

    def provenance(self) -> dict[str, Any]:
        import opensmile

        p = super().provenance()
        p.update(feature_set=self.feature_set, feature_level=self.feature_level,
                 weights_hash=f"opensmile-{opensmile.__version__}")
        return p

    def _process(self, item: AudioInput) -> tuple[np.ndarray, set[str]]:
        a = np.asarray(item.audio, dtype=np.float32)
        flags = set() if np.any(a) else {"silent"}
        try:
            v = self._smile.process_signal(_pad(a, self.sample_rate), self.sample_rate).to_numpy(dtype=np.float32)
        except Exception as e:  # openSMILE raises plain exceptions from its C core
            raise EncoderError(f"{item.name}: openSMILE {self.feature_set} failed ({e})") from None
        return np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0), flags


@register_encoder("compare", None, summary="openSMILE ComParE 2016 functionals, 6373-d, no weights")
class ComParEEncoder(_OpenSmileSet):
    """openSMILE ComParE 2016 functionals: 6,373 values per utterance (layer ``functionals``).

    Non-finite values from openSMILE are replaced by 0 (as the ``egemaps`` encoder does).
    """

    pooling = "functionals"
    feature_set = "ComParE_2016"
    feature_level = "Functionals"

    def available_layers(self) -> list[str]:
        return ["functionals"]

    def dims(self) -> dict[str, int]:
        return {"functionals": len(self.feature_names)}

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        out = []
        for item in batch:
            v, flags = self._process(item)
            out.append(Encoded(layers={"functionals": v.reshape(-1)}, flags=flags))
        return out


@register_encoder("egemaps_lld", None, summary="openSMILE eGeMAPSv02 low-level descriptors (25 per 10 ms frame; "
                  "utterance = mean+std, 50-d), frame-level with --frames, no weights")
class EGeMAPSLLDEncoder(_OpenSmileSet):
    """eGeMAPSv02 low-level descriptors: (T, 25) float32 per clip at a 10 ms hop.

    Layer ``lld``: the utterance vector is ``concat(mean_t x_t, std_t x_t)`` (50-d); with
    ``frames=True`` the frame sequence (T, 25) is stored as well.
    """

    pooling = "mean+std"
    feature_set = "eGeMAPSv02"
    feature_level = "LowLevelDescriptors"

    def available_layers(self) -> list[str]:
        return ["lld"]

    def dims(self) -> dict[str, int]:
        return {"lld": 2 * len(self.feature_names)}

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        out = []
        for item in batch:
            m, flags = self._process(item)  # (T, 25)
            if m.shape[0] == 0:
                raise EncoderError(f"{item.name}: openSMILE returned no low-level descriptor frames")
            v = np.concatenate([m.mean(0), m.std(0)]).astype(np.float32)
            frames = {"lld": m.astype(np.float32)} if self.frames else None
            out.append(Encoded(layers={"lld": v}, frames=frames, flags=flags))
        return out
