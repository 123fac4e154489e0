"""Frame sequences as tokens: a TextCNN frame encoder and the ``--frame-tokens`` transformer.

* :class:`TextCNN`: the sentence CNN of Kim, "Convolutional Neural Networks for Sentence
  Classification" (EMNLP 2014), with the settings Zhang & Wallace recommend as the baseline
  ("A Sensitivity Analysis of (and Practitioners' Guide to) CNNs for Sentence
  Classification", 2015): filter widths 3, 4, 5 with 100 feature maps each, ReLU,
  max-over-time pooling (eq. 2-4 of Kim). Here it runs over stored token-level (frame-level)
  features instead of word embeddings; a frame encoder choice next to
  :class:`emo.fuse.model.frames.FrameLSTM` (same ``forward(x, lengths)`` interface, output 300-d).
* :class:`FrameTokenTransformer`: MulT-style fusion over *all* frame tokens of all modalities
  (Tsai et al., "Multimodal Transformer for Unaligned Multimodal Language Sequences", ACL
  2019, feed sequences, not pooled vectors, to attention; the MEIJU paper (Lin et al., ICASSP
  2025) feeds the LSTM's output sequence into its 2-layer transformer). Each frame-level input
  is encoded per frame (bidirectional LSTM outputs, or TextCNN feature maps), capped at
  ``max_tokens`` frames per input by even subsampling, projected to H, tagged with a learned
  input embedding and a sinusoidal position of the kept frame; utterance-level inputs are one
  token each. A [CLS] token is prepended and a 2-layer pre-norm transformer encoder attends
  with a key padding mask, so padding frames never reach the output.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from emo.fuse.model.frames import PackedFrames
from emo.fuse.model.heads import Dropout, LayerWeights, Token, cls_token_encoder

FRAME_ENCODERS = ("lstm", "textcnn")


def valid_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """bool (B, T): True at the frames before each sequence's end (lengths clamped to [1, T])."""
    lens = lengths.clamp(min=1, max=max(t, 1))
    return torch.arange(t, device=lengths.device)[None, :] < lens[:, None]


class TextCNN(nn.Module):
    """Kim (2014) CNN over a frame sequence: for each width w in ``widths``, ``maps`` filters
    ``c_i = ReLU(w · x_{i:i+w-1} + b)`` (eq. 2, 'same' zero padding at both ends, padding frames
    zeroed first, so frames after a sequence's end never count) and max-over-time pooling
    ``ĉ = max_i c_i`` over the valid positions (eq. 3); the pooled maps are concatenated (eq. 4).

    Args:
        dim: D, frame dimension. widths: filter widths (3, 4, 5). maps: filters per width (100).
        dropout: on the pooled vector (Kim uses 0.5).

    forward(x (B, T, D), lengths (B,)) → (B, len(widths)·maps). :meth:`sequence` gives the
    per-frame maps (B, T, len(widths)·maps) instead (for :class:`FrameTokenTransformer`).
    """

    def __init__(self, dim: int, widths: tuple[int, ...] = (3, 4, 5), maps: int = 100, dropout: float = 0.0) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.convs = nn.ModuleList(nn.Conv1d(dim, maps, w) for w in self.widths)
        self.drop = Dropout(dropout)
        self.out_dim = maps * len(self.widths)

    def sequence(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = valid_mask(lengths, x.shape[1])
        h = (x * valid[..., None].to(x.dtype)).transpose(1, 2)  # (B, D, T), padding zeroed
        outs = []
        for w, conv in zip(self.widths, self.convs):
            left = (w - 1) // 2
            outs.append(F.relu(conv(F.pad(h, (left, w - 1 - left)))))  # (B, maps, T)
        return torch.cat(outs, dim=1).transpose(1, 2)  # (B, T, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(x, lengths)
        valid = valid_mask(lengths, x.shape[1])
        pooled = seq.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        return self.drop(pooled)


class SequenceLSTM(nn.Module):
    """Bidirectional LSTM over a padded batch returning the per-frame outputs (B, T, H): the
    forward LSTM as is (its output at t sees frames <= t), the backward LSTM over each sequence
    reversed within its own length and re-reversed, so every valid output is exact whatever the
    padding holds (the same construction as :class:`emo.fuse.model.frames.FrameLSTM`, without pooling)."""

    def __init__(self, dim: int, hidden: int, bidirectional: bool = True) -> None:
        super().__init__()
        if bidirectional and hidden < 2:
            raise ValueError("a bidirectional LSTM needs hidden >= 2")
        per = hidden // 2 if bidirectional else hidden
        self.fwd = nn.LSTM(dim, per, batch_first=True)
        self.bwd = nn.LSTM(dim, per, batch_first=True) if bidirectional else None
        self.out_dim = per * (2 if bidirectional else 1)

    def sequence(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)
        lens = lengths.to(x.device).clamp(min=1, max=max(x.shape[1], 1))
        valid = t[None, :] < lens[:, None]
        out, _ = self.fwd(x)
        if self.bwd is None:
            return out
        rev = torch.where(valid, lens[:, None] - 1 - t[None, :], t[None, :])  # an involution
        xb = torch.gather(x, 1, rev.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        ob, _ = self.bwd(xb)
        ob = torch.gather(ob, 1, rev.unsqueeze(-1).expand(-1, -1, ob.shape[2]))
        return torch.cat([out, ob], dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(x, lengths)
        valid = valid_mask(lengths, x.shape[1]).to(seq.dtype)
        return (seq * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)


def subsample_index(lengths: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Even subsampling of each sequence to at most ``cap`` frames.

    Row r keeps ``n_r = min(T_r, cap)`` frames at positions ``floor(k · T_r / n_r)``, k < n_r
    (all frames when T_r <= cap; evenly spread otherwise, first frame always kept). Depends
    only on T_r, never on the padded length.

    Returns:
        (index int64 (B, K) into the time axis, K = max n_r (0-padded), keep bool (B, K)).
    """
    lens = lengths.clamp(min=1)
    n = lens.clamp(max=cap)
    k = int(n.max()) if len(n) else 1
    ar = torch.arange(k, device=lengths.device)
    keep = ar[None, :] < n[:, None]
    idx = torch.div(ar[None, :] * lens[:, None], n[:, None], rounding_mode="floor")
    return torch.where(keep, idx, torch.zeros_like(idx)), keep


def sinusoid(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal position encoding (Vaswani et al. 2017, §3.5) of integer positions (...,) → (..., dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=pos.device, dtype=torch.float32) / max(half, 1))
    ang = pos.to(torch.float32)[..., None] * freq
    pe = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    return F.pad(pe, (0, dim - pe.shape[-1]))


class FrameTokenTransformer(nn.Module):
    """Transformer over all frame tokens of all modalities (module docstring): a fusion head that
    takes the raw inputs (it encodes the frame sequences itself) and returns the [CLS] state.

    Args:
        inputs: one dict per encoder (``name``, ``modality``, ``layers``, ``dim``, ``frames``),
            as :class:`emo.fuse.model.multimodal.FusionModel` takes them.
        hidden: H. dropout. n_layers (2), n_heads (4, reduced to a divisor of H).
        max_tokens: the length cap per frame-level input token stream (even subsampling).
        frame_encoder: ``lstm`` (bidirectional per ``frame_bidirectional``, H-d outputs) or ``textcnn``.
        layer_weights / layer_weights_init: pool multi-layer inputs with :class:`LayerWeights`
            (default: one stream per layer).

    forward(xs: per input a (B, L, D) tensor, a :class:`PackedFrames` or ``(x (B, T, L, D), lengths)``)
    → (z (B, hidden), ``{"tokens": (B,) int64 tokens attended per row}``).
    """

    def __init__(self, inputs: list[dict[str, Any]], hidden: int = 256, dropout: float = 0.3, n_layers: int = 2,
                 n_heads: int = 4, max_tokens: int = 64, frame_encoder: str = "lstm", frame_bidirectional: bool = True,
                 layer_weights: bool = False, layer_weights_init: str = "18") -> None:
        super().__init__()
        if frame_encoder not in FRAME_ENCODERS:
            raise ValueError(f"unknown frame encoder {frame_encoder!r}; use one of {', '.join(FRAME_ENCODERS)}")
        if max_tokens < 1:
            raise ValueError("--max-frame-tokens must be >= 1")
        self.inputs = inputs
        self.max_tokens = int(max_tokens)
        self.pool = nn.ModuleDict()
        self.encoders = nn.ModuleDict()
        self.proj = nn.ModuleList()
        self.streams: list[tuple[int, int | None, bool]] = []  # (input, layer or None = pooled, frames)
        self.tokens: list[Token] = []
        for i, inp in enumerate(inputs):
            pooled = layer_weights and len(inp["layers"]) > 1
            if pooled:
                self.pool[str(i)] = LayerWeights(list(inp["layers"]), layer_weights_init)
            seq = bool(inp.get("frames"))
            for j, k in ([(None, "weighted")] if pooled else list(enumerate(inp["layers"]))):
                dim = int(inp["dim"])
                if seq:
                    enc = SequenceLSTM(dim, hidden, frame_bidirectional) if frame_encoder == "lstm" else TextCNN(dim)
                    self.encoders[str(len(self.streams))] = enc
                    dim = enc.out_dim
                self.proj.append(nn.Linear(dim, hidden))
                self.streams.append((i, j, seq))
                self.tokens.append(Token(inp["name"], inp["modality"], str(k), dim))
        self.type_emb, self.cls, self.encoder, self.norm = cls_token_encoder(len(self.streams), hidden, n_heads, n_layers, dropout)
        self.hidden = hidden
        self.out_dim = hidden

    def forward(self, xs: list) -> tuple[torch.Tensor, dict[str, Any]]:
        xs = list(xs)
        lengths: dict[int, torch.Tensor] = {}
        for i, inp in enumerate(self.inputs):
            if inp.get("frames"):
                xs[i], lengths[i] = xs[i].padded() if isinstance(xs[i], PackedFrames) else xs[i]
        parts, masks = [], []
        b = xs[0].shape[0]
        for s, (i, j, seq) in enumerate(self.streams):
            x = self.pool[str(i)](xs[i]) if j is None else xs[i][..., j, :]
            if seq:
                lens = lengths[i].to(x.device)
                real = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
                x = x * real[..., None].to(x.dtype)  # padding (and a length-0 row's frame) read as zeros
                h = self.encoders[str(s)].sequence(x, lens)  # (B, T, E)
                idx, keep = subsample_index(lens.clamp(max=max(h.shape[1], 1)), self.max_tokens)
                h = torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[2]))
                tok = self.proj[s](h) + sinusoid(idx, self.hidden)
                parts.append(tok + self.type_emb[s + 1])
                masks.append(keep)
            else:
                parts.append((self.proj[s](x) + self.type_emb[s + 1])[:, None])
                masks.append(torch.ones(b, 1, dtype=torch.bool, device=x.device))
        cls = self.cls.expand(b, -1, -1) + self.type_emb[0]
        h = torch.cat([cls, *parts], dim=1)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=h.device), *masks], dim=1)
        out = self.encoder(h, src_key_padding_mask=~keep)
        return self.norm(out[:, 0]), {"tokens": keep.sum(1)}
