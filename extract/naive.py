"""The naive reference path: how the MER baseline scripts extract speech features.

The MER 2023/2024 baseline feature scripts load the full checkpoint, run **one clip per
forward pass in fp32** with ``output_hidden_states=True`` (every hidden state of every
layer is materialised), then select the wanted layers and mean-pool them over time.
:class:`NaiveSpeechEncoder` reproduces exactly that, as a separate and deliberately simple
code path. It exists only as the side-by-side reference for the benchmarks
(``bench/bench_extract.py``) and for the equality test against the fast path
(:class:`emo.extract.encoders.speech.SpeechEncoder`); ``emo extract --naive`` runs it.

Differences from the fast path, all of them costs and none of them results:
no batching, no bf16 autocast, eager (not scaled-dot-product) attention, no truncation
after the deepest requested layer, all hidden states kept. For clips shorter than the
fast path's ``chunk_seconds`` (30 s by default) both give the same utterance vectors up to
float rounding; longer clips are run whole here, as the baseline does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.encoders.speech import (
    MIN_SAMPLES,
    SpeechLayers,
    load_speech_config,
    read_do_normalize,
)
from emo.extract.types import AudioInput, Encoded, EncoderError, torch_device


class NaiveSpeechEncoder(SpeechLayers, Encoder):
    """HuBERT / wav2vec 2.0, one clip per forward, fp32, all hidden states, then select.

    Args:
        name, source, layers, device, frames: as :class:`emo.extract.encoders.base.Encoder`.
        normalize (option): zero-mean unit-variance input per utterance; ``None`` (default)
            reads the checkpoint's feature-extractor config (``do_normalize``), else follows
            the front-end norm, exactly as the fast path does.

    Output: per requested layer ``k`` the mean over all frames of hidden state ``k``
    (``hidden_states[k]``; for ``k`` = the last layer of a stable-layer-norm model,
    ``last_hidden_state``, i.e. after the final layer norm), float32, shape (D,).
    With ``frames=True`` also the (F, D) frame sequences.

    Raises:
        EncoderError: the source cannot be loaded, is not a speech model, or an input is empty.
    """

    modality = "audio"
    sample_rate = 16000
    pooling = "mean"

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        from transformers import AutoModel

        self._device = torch_device(device)
        self.config = load_speech_config(name, source)
        self.n_layers = int(self.config.num_hidden_layers)
        self._select()
        try:
            model = AutoModel.from_pretrained(source, config=self.config, attn_implementation="eager")
        except Exception as e:
            raise EncoderError(f"{name}: cannot load weights from {source!r} ({type(e).__name__}: {e})") from None
        self.model = model.eval().to(self._device)
        self.stable = bool(getattr(self.config, "do_stable_layer_norm", False))
        norm = options.get("normalize")
        if norm is None:  # the checkpoint's feature-extractor config, as the baseline's processor reads it
            norm = read_do_normalize(source, self.config)
        self.normalize = bool(norm)

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        """One forward pass per item (whatever the batch size), fp32, ``output_hidden_states=True``."""
        import torch

        out = []
        for item in batch:
            a = np.asarray(item.audio, dtype=np.float32).reshape(-1)
            if a.size == 0:
                raise EncoderError(f"{item.name}: empty audio")
            flags = set() if np.any(a) else {"silent"}
            if a.size < MIN_SAMPLES:
                a = np.pad(a, (0, MIN_SAMPLES - a.size))
            if self.normalize:
                a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
            x = torch.from_numpy(a)[None].to(self._device)
            with torch.no_grad():
                o = self.model(x, output_hidden_states=True)
            layers, seqs = {}, {}
            for k in self.layers:
                i = int(k)
                h = o.last_hidden_state if (self.stable and i == self.n_layers) else o.hidden_states[i]
                h = h[0].float().cpu().numpy()  # (F, D) float32
                layers[k] = h.mean(0)
                if self.frames:
                    seqs[k] = h
            out.append(Encoded(layers=layers, frames=seqs if self.frames else None, flags=flags))
        return out


def build_naive(spec, device: str = "cpu", frames: bool = False, **options: Any) -> Encoder:
    """The naive counterpart of a registry spec: :class:`NaiveSpeechEncoder` for HuBERT/wav2vec2
    specs; any other encoder is built as usual (the engine then feeds it one clip per call).

    Args:
        spec: an :class:`emo.extract.registry.EncoderSpec`.
        options: encoder options; fast-path-only ones (``batch_seconds``, ``chunk_seconds``,
            ``compile``, ``attention``) are dropped for the naive speech encoder.
    """
    if spec.entry.target.endswith("speech:SpeechEncoder"):
        opts = {k: v for k, v in {**spec.entry.options, **options}.items()
                if k not in ("batch_seconds", "chunk_seconds", "compile", "attention")}
        return NaiveSpeechEncoder(spec.name, spec.source, spec.layers, device=device, frames=frames, **opts)
    return spec.build(device=device, frames=frames, **options)
