"""HuBERT and wav2vec 2.0 layer-wise utterance features through ``transformers``.

Layer numbering follows the papers and ``output_hidden_states``: hidden state
``k`` is the output of transformer layer ``k``; ``0`` is the input to layer 1.
The model is truncated after the deepest requested layer, and the requested
hidden states are pooled on the fly by forward hooks, so the full stack of
hidden states is never materialised.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import (
    AudioInput,
    Encoded,
    EncoderError,
    autocast_dtype,
    torch_device,
)

#: Shortest input the CNN front-end accepts (one 25 ms frame at 16 kHz); shorter clips are zero-padded
#: to it (here and in the naive reference, :mod:`emo.extract.naive`).
MIN_SAMPLES = 400


def load_speech_config(name: str, source: str | None):
    """``AutoConfig`` of a HuBERT / wav2vec2-shaped checkpoint (hub id or local directory).

    Raises:
        EncoderError: no source, an unloadable config, or a config that is not a speech model
            (naming the encoder, the source and what it is instead).
    """
    from transformers import AutoConfig

    if not source:
        raise EncoderError(f"{name}: no model source given (hub id or local directory)")
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as e:
        raise EncoderError(f"{name}: cannot load config from {source!r} ({type(e).__name__}: {e})") from None
    if not hasattr(config, "conv_kernel"):
        raise EncoderError(f"{name}: {source!r} is a {config.model_type} model, not a HuBERT/wav2vec2 speech model")
    return config


def read_do_normalize(source: str, config) -> bool:
    """Whether to normalise input per utterance: the checkpoint's feature-extractor config
    (``do_normalize``) when it has one, else ``True`` for layer-norm front-ends."""
    try:
        from transformers import Wav2Vec2FeatureExtractor

        return bool(Wav2Vec2FeatureExtractor.from_pretrained(source).do_normalize)
    except Exception:
        return getattr(config, "feat_extract_norm", "group") == "layer"


class SpeechLayers:
    """Layer list, dimensions, batch cost (audio seconds) and provenance shared by
    :class:`SpeechEncoder` and the naive reference (:class:`emo.extract.naive.NaiveSpeechEncoder`).
    Needs ``self.config``, ``self.n_layers``, ``self.layers`` and ``self.normalize``."""

    def available_layers(self) -> list[str]:
        return [str(i) for i in range(self.n_layers + 1)]

    def dims(self) -> dict[str, int]:
        return {k: int(self.config.hidden_size) for k in self.layers}


    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        p.update(normalize=int(self.normalize), model_type=self.config.model_type)
        return p


@register_encoder(
    "hubert_large", "TencentGameMate/chinese-hubert-large",
    layers="16-21",
    summary="HuBERT-large (Chinese, as in the MER papers), 25 hidden states x 1024",
)
@register_encoder(
    "hubert_base", "TencentGameMate/chinese-hubert-base",
    summary="HuBERT-base (Chinese), 13 hidden states x 768",
)
@register_encoder(
    "wav2vec2_large", "facebook/wav2vec2-large-xlsr-53",
    summary="wav2vec 2.0 large (XLSR-53), 25 hidden states x 1024",
)
@register_encoder("wav2vec2_base", "facebook/wav2vec2-base", summary="wav2vec 2.0 base, 13 hidden states x 768")
class SpeechEncoder(SpeechLayers, Encoder):
    """HuBERT / wav2vec 2.0 (any ``Wav2Vec2Model``-shaped checkpoint) from a hub id or local directory.

    Utterance vector of layer k = mean of hidden state k over the utterance's *valid*
    frames: padded frames never enter the mean (the frame count of each clip comes
    from the CNN front-end's output-length formula).

    Batching: items are split into chunks of at most ``chunk_seconds`` (long clips are
    pooled exactly across chunks: sums and frame counts are accumulated), sorted by
    length and packed into forward passes of at most ``batch_seconds`` of padded audio.
    For layer-norm front-ends (HuBERT-large, wav2vec2-large: ``feat_extract_norm="layer"``)
    a batched clip gives the same features as the clip alone; group-norm front-ends
    (base models) normalise over time, so padding changes them slightly: bucketing keeps
    padding small, and the attention mask is not passed, as ``transformers`` advises.

    Options:
        batch_seconds (float): padded audio seconds per forward pass (default 200 on GPU, 60 on CPU).
        chunk_seconds (float): longest piece fed at once (default 30 s).
        normalize (bool | None): zero-mean unit-variance input per utterance; ``None`` reads
            the checkpoint's feature-extractor config (``do_normalize``), else follows the front-end norm.
        compile (bool): ``torch.compile`` the model (pays on GPU for long runs: shapes vary per
            batch, so ``dynamic=True`` is used to avoid one recompilation per padded length).
        attention (str): ``sdpa`` (default: ``torch.nn.functional.scaled_dot_product_attention``,
            flash / memory-efficient kernels on GPU) or ``eager``; falls back to eager when the
            checkpoint's class does not support SDPA.

    Raises:
        EncoderError: the source cannot be loaded, or is not a speech model.
    """

    modality = "audio"
    sample_rate = 16000
    pooling = "mean"

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        import torch
        from transformers import AutoModel

        self._device = torch_device(device)
        config = load_speech_config(name, source)
        self.config = config
        self.n_layers = int(config.num_hidden_layers)
        self._select()
        self.deepest = max(int(k) for k in self.layers)
        try:
            model = _load_model(AutoModel, source, config, options.get("attention", "sdpa"))
        except Exception as e:
            raise EncoderError(f"{name}: cannot load weights from {source!r} ({type(e).__name__}: {e})") from None
        model.eval()
        self.stable = bool(getattr(config, "do_stable_layer_norm", False))
        keep = max(1, self.deepest)
        enc = model.encoder
        if keep < len(enc.layers):
            enc.layers = enc.layers[:keep]
            if self.stable:
                # the final layer norm belongs to the last hidden state only; a truncated
                # stack must not apply it to an intermediate layer
                enc.layer_norm = torch.nn.Identity()
        self.model = model.to(self._device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layer_norm_frontend = getattr(config, "feat_extract_norm", "group") == "layer"
        norm = options.get("normalize")
        if norm is None:
            norm = read_do_normalize(source, config)
        self.normalize = bool(norm)
        on_gpu = self._device.type == "cuda"
        self.batch_seconds = float(options.get("batch_seconds") or (200.0 if on_gpu else 60.0))
        self.chunk_seconds = float(options.get("chunk_seconds") or 30.0)
        if options.get("compile"):
            self.model = torch.compile(self.model, dynamic=True)
        self._captured: dict[str, Any] = {}
        self._install_hooks()

    # -- hooks -------------------------------------------------------------------
    def _install_hooks(self) -> None:
        enc = self.model.encoder
        wanted = {int(k) for k in self.layers}

        def grab(key):
            def hook(_module, _inp, out):
                self._captured[key] = out[0] if isinstance(out, (tuple, list)) else out
            return hook

        if 0 in wanted:
            def pre(_module, args, kwargs):
                self._captured["0"] = args[0] if args else kwargs["hidden_states"]
            enc.layers[0].register_forward_pre_hook(pre, with_kwargs=True)
        for k in wanted - {0}:
            if self.stable and k == self.n_layers:
                enc.layer_norm.register_forward_hook(grab(str(k)))
            else:
                enc.layers[k - 1].register_forward_hook(grab(str(k)))

    # -- encoding ------------------------------------------------------------------
    def _frame_lengths(self, n_samples: np.ndarray) -> np.ndarray:
        """Frames the CNN front-end yields for ``n_samples`` input samples (conv output-length formula)."""
        lengths = n_samples.astype(np.int64)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            lengths = np.maximum((lengths - k) // s + 1, 0)
        return lengths

    def encode(self, batch: list[AudioInput]) -> list[Encoded]:
        import torch

        from emo.extract.packing import pack

        sr = self.sample_rate
        chunk = int(self.chunk_seconds * sr)
        min_len = int(self.config.conv_kernel[0]) * 4  # shorter than ~one frame: pad up (recorded below)
        pieces: list[tuple[int, np.ndarray]] = []  # (item index, audio piece)
        flags: list[set[str]] = [set() for _ in batch]
        for i, item in enumerate(batch):
            a = np.asarray(item.audio, dtype=np.float32).reshape(-1)
            if a.size == 0:
                raise EncoderError(f"{item.name}: empty audio")
            if not np.any(a):
                flags[i].add("silent")
            if a.size < MIN_SAMPLES:
                a = np.pad(a, (0, MIN_SAMPLES - a.size))
            n = max(1, math.ceil(a.size / chunk))
            for j in range(n):
                piece = a[j * chunk:(j + 1) * chunk]
                if piece.size < min_len and n > 1:
                    continue
                pieces.append((i, piece))
        dims = int(self.config.hidden_size)
        sums = {k: np.zeros((len(batch), dims), np.float64) for k in self.layers}
        counts = np.zeros(len(batch), np.int64)
        seqs: dict[int, dict[str, list[np.ndarray]]] = {i: {k: [] for k in self.layers} for i in range(len(batch))}
        # sorted by length, packed into forward passes by padded-samples budget
        groups = pack([a for _, a in pieces], len, self.batch_seconds * sr)
        dtype = autocast_dtype(self.device)
        for g in groups:
            lens = np.array([len(pieces[p][1]) for p in g])
            T = int(lens.max())
            x = np.zeros((len(g), T), np.float32)
            mask = np.zeros((len(g), T), np.int64)
            for r, p in enumerate(g):
                a = pieces[p][1]
                if self.normalize:
                    a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
                x[r, : len(a)] = a
                mask[r, : len(a)] = 1
            xt = _to_device(torch.from_numpy(x), self._device)
            kwargs = {}
            if self.layer_norm_frontend:
                kwargs["attention_mask"] = _to_device(torch.from_numpy(mask), self._device)
            self._captured.clear()
            with torch.inference_mode(), torch.autocast(self._device.type, dtype=dtype, enabled=dtype is not None):
                self.model(xt, **kwargs)
            flen = self._frame_lengths(lens)
            fm = None  # (B, F) valid-frame mask: every captured layer has the same F
            for k in self.layers:
                h = self._captured[k].float()  # (B, F, D)
                if fm is None:
                    fm = (torch.arange(h.shape[1], device=h.device)[None, :]
                          < torch.from_numpy(flen).to(h.device)[:, None]).float()
                s = torch.einsum("bfd,bf->bd", h, fm).cpu().numpy()
                for r, p in enumerate(g):
                    sums[k][pieces[p][0]] += s[r]
                if self.frames:
                    hc = h.cpu().numpy()
                    for r, p in enumerate(g):
                        seqs[pieces[p][0]][k].append(hc[r, : flen[r]])
            for r, p in enumerate(g):
                counts[pieces[p][0]] += int(flen[r])
        out = []
        for i in range(len(batch)):
            c = max(1, counts[i])
            layers = {k: (sums[k][i] / c).astype(np.float32) for k in self.layers}
            frames = None
            if self.frames:
                frames = {k: np.concatenate(seqs[i][k]).astype(np.float32) if seqs[i][k] else np.zeros((0, dims), np.float32) for k in self.layers}
            out.append(Encoded(layers=layers, frames=frames, flags=flags[i]))
        return out

    def encode_stream(self, name: str, audio) -> Encoded:
        """Pooled features of a long clip from streamed windows (:class:`emo.extract.streaming.StreamedAudio`).

        Windows are ``chunk_seconds`` long: exactly the pieces :meth:`encode` cuts a long clip
        into, each normalised and encoded on its own; the per-piece means are recombined weighted
        by their frame counts, which is :meth:`encode`'s pooling (sum of frames / frames), so the
        result equals it up to float summation order. Memory holds one window. Frame-level
        output is not streamed (the engine decodes such clips whole).
        """
        min_len = int(self.config.conv_kernel[0]) * 4
        sums = {k: np.zeros(int(self.config.hidden_size), np.float64) for k in self.layers}
        count = 0
        silent = True
        n = 0
        for w in audio.windows(self.chunk_seconds):
            n += 1
            silent &= not np.any(w)
            if n > 1 and w.size < min_len:
                continue  # encode() drops such a tail piece of a multi-piece clip as well
            (e,) = self.encode([AudioInput(name, w)])
            frames = int(self._frame_lengths(np.array([max(w.size, MIN_SAMPLES)]))[0])
            for k in self.layers:
                sums[k] += np.asarray(e.layers[k], np.float64) * frames
            count += frames
        if n == 0:
            raise EncoderError(f"{name}: empty audio")
        layers = {k: (v / max(1, count)).astype(np.float32) for k, v in sums.items()}
        return Encoded(layers=layers, flags={"silent"} if silent else set())


def _load_model(auto_cls, source: str, config, attention: str):
    """``from_pretrained`` with the requested attention implementation, eager when unsupported."""
    if attention and attention != "eager":
        try:
            return auto_cls.from_pretrained(source, config=config, attn_implementation=attention)
        except (ValueError, ImportError):  # this model class has no SDPA/flash kernel
            pass
    return auto_cls.from_pretrained(source, config=config, attn_implementation="eager")


def _to_device(t, device):
    """Host tensor -> ``device``: pinned memory + non-blocking copy on CUDA (the copy overlaps
    the previous batch's compute), a no-op on CPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t
