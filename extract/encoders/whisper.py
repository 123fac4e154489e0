"""The Whisper encoder, layer by layer, through ``transformers``.

Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", ICML 2023;
https://github.com/openai/whisper. EmoBox (Ma et al., LREC-COLING 2024) reports the Whisper-large-v3
encoder as the strongest frozen upstream on most of its 32 corpora.

Only the encoder is used (``WhisperModel.from_pretrained(...).encoder``; the decoder is dropped
after loading). Layer numbering: ``"0"`` is the input to the first transformer layer (the two
convolutions plus the sinusoidal positions), ``"k"`` the output of layer ``k``; the last layer
``"N"`` is taken after the encoder's final LayerNorm, which is ``transformers``'
``output_hidden_states`` convention (``hidden_states[N] == last_hidden_state``). A model truncated
after a shallower layer never applies that final norm.

Padding: Whisper's encoder only accepts log-mel input of exactly 30 s (3000 mel frames, 1500
encoder frames) and ignores any attention mask, so every clip is padded to 30 s, as Whisper itself
always does. The utterance vector is the mean over the clip's *own* encoder frames only: one encoder
frame per 20 ms (mel hop 10 ms, then the stride-2 convolution), so a clip of ``n`` samples at 16 kHz
has ``ceil(n / 320)`` valid frames; the frames of the padding never enter the mean. Clips longer
than 30 s are cut into consecutive 30-s windows, each encoded on its own; the mean runs over the
valid frames of all windows (sums and counts accumulate), so a clip's vector does not depend on the
batch it was in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import AudioInput, Encoded, EncoderError, autocast_dtype, torch_device

#: Samples per encoder frame at 16 kHz: mel hop 160 samples, then the encoder's stride-2 convolution.
SAMPLES_PER_FRAME = 320


def valid_frames(n_samples: int, hop_length: int = 160, conv_stride: int = 2, max_frames: int = 1500) -> int:
    """Encoder frames that carry the clip (not the padding) for ``n_samples`` of 16-kHz audio.

    The feature extractor gives one mel frame per ``hop_length`` samples; ``conv2`` (stride 2,
    padding 1) halves that, rounding up. At least 1, at most ``max_frames`` (one 30-s window).
    """
    mel = math.ceil(max(1, int(n_samples)) / hop_length)
    return int(min(max_frames, max(1, math.ceil(mel / conv_stride))))


@register_encoder(
    "whisper_large_v3", "openai/whisper-large-v3",
    summary="Whisper-large-v3 encoder (Radford et al. 2023), 33 hidden states x 1280; 30-s windows, padding masked",
)
@register_encoder(
    "whisper_medium", "openai/whisper-medium",
    summary="Whisper-medium encoder, 25 hidden states x 1024",
)
@register_encoder(
    "whisper_base", "openai/whisper-base",
    summary="Whisper-base encoder, 7 hidden states x 512",
)
class WhisperEncoderLayers(Encoder):
    """Whisper encoder hidden states, mean-pooled over each clip's valid frames (see the module docstring).

    Source: any Whisper checkpoint (hub id such as ``openai/whisper-large-v3`` or a local directory
    written by ``save_pretrained``); ``whisper_*=DIR`` picks any size. The log-mel front-end is the
    checkpoint's ``WhisperFeatureExtractor`` (``preprocessor_config.json``: 80 mel bins up to v2,
    128 for v3); without one, a default extractor with the config's ``num_mel_bins``.

    Layers: ``"0"``..``"N"`` (``N = encoder_layers``), each ``d_model`` wide.

    Options:
        batch_windows (int): 30-s windows per forward pass (default 16 on GPU, 4 on CPU).

    Shapes: input float32 mono 16 kHz audio (T,); output per layer float32 (d_model,); frames
    (with ``frames=True``) float32 (valid frames, d_model), 50 frames per second.

    Raises:
        EncoderError: no source, an unloadable checkpoint, or a checkpoint that is not Whisper.
    """

    modality = "audio"
    sample_rate = 16000
    pooling = "mean_valid_frames"

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        import torch
        from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel

        if not source:
            raise EncoderError(f"{name}: no model source given (hub id or local directory)")
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as e:  # noqa: BLE001
            raise EncoderError(f"{name}: cannot load config from {source!r} ({type(e).__name__}: {e})") from None
        if config.model_type != "whisper":
            raise EncoderError(f"{name}: {source!r} is a {config.model_type} model, not Whisper")
        self.config = config
        self.n_layers = int(config.encoder_layers)
        self._select()
        try:
            model = WhisperModel.from_pretrained(source, config=config)
        except Exception as e:  # noqa: BLE001
            raise EncoderError(f"{name}: cannot load weights from {source!r} ({type(e).__name__}: {e})") from None
        enc = model.get_encoder()
        del model  # the decoder is never used
        try:
            self.extractor = WhisperFeatureExtractor.from_pretrained(source)
        except Exception:  # noqa: BLE001 - no preprocessor_config.json: Whisper's defaults for these mel bins
            self.extractor = WhisperFeatureExtractor(feature_size=int(config.num_mel_bins))
        if int(self.extractor.feature_size) != int(config.num_mel_bins):
            raise EncoderError(f"{name}: feature extractor gives {self.extractor.feature_size} mel bins, "
                               f"the model expects {config.num_mel_bins}")
        self.max_frames = int(config.max_source_positions)
        self.window_samples = int(self.extractor.n_samples)  # 30 s
        self.hop = int(self.extractor.hop_length)
        deepest = max(int(k) for k in self.layers)
        keep = max(1, deepest)
        if keep < len(enc.layers):
            enc.layers = enc.layers[:keep]
            enc.layer_norm = torch.nn.Identity()  # the final norm belongs to the last layer only
        self._device = torch_device(device)
        self.model = enc.to(self._device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        on_gpu = self._device.type == "cuda"
        self.batch_windows = int(options.get("batch_windows") or (16 if on_gpu else 4))

    def available_layers(self) -> list[str]:
        return [str(i) for i in range(self.n_layers + 1)]

    def dims(self) -> dict[str, int]:
        return {k: int(self.config.d_model) for k in self.layers}

    def cost(self, item: AudioInput) -> float:
        """Padded seconds: every 30-s window costs 30 s whatever the clip's length."""
        n = max(1, math.ceil(len(item.audio) / self.window_samples))
        return 30.0 * n

    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        p.update(model_type="whisper", num_mel_bins=int(self.config.num_mel_bins), window_seconds=30)
        return p

    def frames_of(self, n_samples: int) -> int:
        """Valid encoder frames of a window of ``n_samples`` (:func:`valid_frames`)."""
        return valid_frames(n_samples, self.hop, int(self.model.conv2.stride[0]), self.max_frames)

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        """Encode clips; each 30-s window is padded to 30 s and only its valid frames are pooled.

        Returns:
            One :class:`Encoded` per clip: layer -> float32 (d_model,) mean over valid frames.

        Raises:
            EncoderError: empty audio (naming the clip) or a failing forward pass.
        """
        import torch

        windows: list[tuple[int, np.ndarray]] = []
        flags: list[set[str]] = [set() for _ in batch]
        for i, item in enumerate(batch):
            a = np.asarray(item.audio, dtype=np.float32).reshape(-1)
            if a.size == 0:
                raise EncoderError(f"{item.name}: empty audio")
            if not np.any(a):
                flags[i].add("silent")
            n = max(1, math.ceil(a.size / self.window_samples))
            for j in range(n):
                windows.append((i, a[j * self.window_samples:(j + 1) * self.window_samples]))
        d = int(self.config.d_model)
        sums = {k: np.zeros((len(batch), d), np.float64) for k in self.layers}
        counts = np.zeros(len(batch), np.int64)
        seqs: dict[int, dict[str, list[np.ndarray]]] = {i: {k: [] for k in self.layers} for i in range(len(batch))}
        dtype = autocast_dtype(self.device)
        wanted = [int(k) for k in self.layers]
        for s in range(0, len(windows), self.batch_windows):
            group = windows[s:s + self.batch_windows]
            feats = self.extractor([w for _, w in group], sampling_rate=self.sample_rate, return_tensors="np",
                                   padding="max_length")["input_features"]
            x = torch.from_numpy(np.asarray(feats, dtype=np.float32)).to(self._device)
            try:
                with torch.inference_mode(), torch.autocast(self._device.type, dtype=dtype, enabled=dtype is not None):
                    out = self.model(x, output_hidden_states=True)
            except RuntimeError as e:
                raise EncoderError(f"{self.name}: forward pass failed on {', '.join(batch[i].name for i, _ in group[:5])}: {e}") from e
            hs = out.hidden_states
            nf = np.array([self.frames_of(len(w)) for _, w in group])
            fm = (torch.arange(hs[0].shape[1], device=hs[0].device)[None, :]
                  < torch.from_numpy(nf).to(hs[0].device)[:, None]).float()
            for k, li in zip(self.layers, wanted):
                h = hs[li].float()  # (B, 1500, D)
                sm = torch.einsum("bfd,bf->bd", h, fm).cpu().numpy()
                for r, (i, _) in enumerate(group):
                    sums[k][i] += sm[r]
                if self.frames:
                    hc = h.cpu().numpy()
                    for r, (i, _) in enumerate(group):
                        seqs[i][k].append(hc[r, :nf[r]])
            for r, (i, _) in enumerate(group):
                counts[i] += int(nf[r])
        out_list = []
        for i in range(len(batch)):
            layers = {k: (sums[k][i] / max(1, counts[i])).astype(np.float32) for k in self.layers}
            fr = ({k: np.concatenate(seqs[i][k]).astype(np.float32) for k in self.layers} if self.frames else None)
            out_list.append(Encoded(layers=layers, frames=fr, flags=flags[i]))
        return out_list

    def encode_stream(self, name: str, audio) -> Encoded:
        """Pooled features of a long clip from streamed 30-s windows (:class:`emo.extract.streaming.StreamedAudio`):
        exactly :meth:`encode`'s windows, each pooled over its valid frames and recombined weighted by
        those frame counts, so the result equals :meth:`encode` up to float summation order. Memory
        holds one window; frame-level output is not streamed.

        Raises:
            EncoderError: empty audio.
        """
        d = int(self.config.d_model)
        sums = {k: np.zeros(d, np.float64) for k in self.layers}
        count, silent, n = 0, True, 0
        for w in audio.windows(self.window_samples / self.sample_rate):
            if w.size == 0:
                continue
            n += 1
            silent &= not np.any(w)
            (e,) = self.encode([AudioInput(name, w)])
            f = self.frames_of(w.size)
            for k in self.layers:
                sums[k] += np.asarray(e.layers[k], np.float64) * f
            count += f
        if n == 0:
            raise EncoderError(f"{name}: empty audio")
        return Encoded(layers={k: (v / count).astype(np.float32) for k, v in sums.items()},
                       flags={"silent"} if silent else set())
