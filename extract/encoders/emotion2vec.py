"""emotion2vec (Ma et al., "emotion2vec: Self-Supervised Pre-Training for Speech Emotion Representation",
Findings of ACL 2024; https://github.com/ddlBoJack/emotion2vec) through FunASR, an optional extra:
``pip install "emo[emotion2vec]"`` (installs ``funasr`` and ``modelscope``).

FunASR's public API (``funasr.AutoModel(model=...).generate(audio, granularity=..., extract_embedding=True)``)
returns the features of the *last* transformer layer only: ``feats`` is (768,) at
``granularity="utterance"`` (the mean over frames) and (T, 768) at ``"frame"`` (50 Hz). It exposes no
per-layer hidden states, so the store holds one layer, keyed ``"final"``; a layer sweep over emotion2vec
is not possible through this API (the layer-wise alternative would reach into FunASR's private model
internals, which emo does not do).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import AudioInput, Encoded, EncoderError, hash_weights

#: How to install the optional dependency (shown in errors and in `emo models list`).
EXTRA_HINT = 'pip install "emo[emotion2vec]" (FunASR and ModelScope)'


def import_funasr():
    """``funasr.AutoModel``.

    Raises:
        EncoderError: FunASR is not installed (the message says how to install the extra).
    """
    try:
        from funasr import AutoModel
    except ImportError as e:
        raise EncoderError(f"emotion2vec needs FunASR, which is not installed ({e}); {EXTRA_HINT}") from None
    return AutoModel


@register_encoder(
    "emotion2vec_plus_base", "iic/emotion2vec_plus_base",
    summary=f"emotion2vec+ base via FunASR (extra: {EXTRA_HINT}); last layer only ('final', 768)",
    needs="funasr",
)
@register_encoder(
    "emotion2vec_base", "iic/emotion2vec_base",
    summary=f"emotion2vec base (Ma et al. 2024) via FunASR (extra: {EXTRA_HINT}); last layer only ('final', 768)",
    needs="funasr",
)
class Emotion2vecEncoder(Encoder):
    """emotion2vec through ``funasr.AutoModel``; one layer, ``"final"`` (see the module docstring).

    Source: a ModelScope id (``iic/emotion2vec_base``, ``iic/emotion2vec_plus_base``), a Hugging Face
    id with option ``hub="hf"`` (``emotion2vec/emotion2vec_base``), or a local directory holding
    FunASR's ``config.yaml`` and ``model.pt`` (offline use).

    Shapes: input float32 mono 16 kHz audio (T,); output ``"final"`` float32 (768,); frames (with
    ``frames=True``) float32 (T', 768) at 50 Hz.

    Raises:
        EncoderError: FunASR missing (with the install hint), no source, or a model FunASR cannot load.
    """

    modality = "audio"
    sample_rate = 16000
    pooling = "funasr_utterance"

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        self._select()  # a bad layer spec fails before FunASR is imported
        auto_model = import_funasr()
        if not source:
            raise EncoderError(f"{name}: no model source given (ModelScope id, hub id or local directory)")
        kw: dict[str, Any] = {"model": source, "device": device, "disable_update": True}
        if options.get("hub"):
            kw["hub"] = options["hub"]
        try:
            self.model = auto_model(**kw)
        except Exception as e:  # noqa: BLE001 - FunASR raises assorted errors for unknown/offline models
            raise EncoderError(f"{name}: FunASR cannot load {source!r} ({type(e).__name__}: {e})") from None
        self.dim = 768

    def available_layers(self) -> list[str]:
        return ["final"]

    def dims(self) -> dict[str, int]:
        return {k: self.dim for k in self.layers}

    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        p.update(layer_note="FunASR exposes the last layer only")
        return p

    def weights_hash(self) -> str:
        return hash_weights(self.source)

    def _generate(self, audio: np.ndarray, granularity: str) -> np.ndarray:
        res = self.model.generate(audio, granularity=granularity, extract_embedding=True, fs=self.sample_rate,
                                  disable_pbar=True)
        if not res or "feats" not in res[0]:
            raise EncoderError(f"{self.name}: FunASR returned no 'feats' (got {type(res).__name__})")
        return np.asarray(res[0]["feats"], dtype=np.float32)

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        """One FunASR call per clip (FunASR batches emotion2vec one clip at a time).

        Raises:
            EncoderError: empty audio or a FunASR failure (naming the clip).
        """
        out = []
        for item in batch:
            a = np.asarray(item.audio, dtype=np.float32).reshape(-1)
            if a.size == 0:
                raise EncoderError(f"{item.name}: empty audio")
            try:
                if self.frames:
                    fr = self._generate(a, "frame").reshape(-1, self.dim)
                    utt = fr.mean(axis=0, dtype=np.float64).astype(np.float32)
                else:
                    utt, fr = self._generate(a, "utterance").reshape(-1), None
            except EncoderError:
                raise
            except Exception as e:  # noqa: BLE001
                raise EncoderError(f"{item.name}: emotion2vec failed ({type(e).__name__}: {e})") from None
            flags = set() if np.any(a) else {"silent"}
            out.append(Encoded(layers={"final": utt}, frames={"final": fr} if fr is not None else None, flags=flags))
        return out
