"""The full fusion model: layer pooling (optional) → frame encoders (frame-level inputs) →
fusion head (:mod:`emo.fuse.heads`) → task decoder (:mod:`emo.fuse.decoders`)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from emo.fuse.decoders import DECODERS, JDEV, SeparateDecoder
from emo.fuse.frames import FrameLSTM, PackedFrames
from emo.fuse.heads import LayerWeights, Token, build_head
from emo.fuse.inputs import FeatureInput, as_inputs


class FusionModel(nn.Module):
    """Layer pooling (optional) → fusion head → decoder.

    Frame-level inputs (``inputs[i].frames`` true) are encoded per token by a
    :class:`FrameLSTM` (``frame_lstm``: one per layer, or one on the :class:`LayerWeights`-pooled
    frames with ``layer_weights``), whose (B, H) output is that token for the head.

    Args:
        inputs: one :class:`emo.fuse.inputs.FeatureInput` per encoder, in input order (or its JSON
            form: dicts with ``name``, ``modality``, ``layers``, ``dim``, optional ``frames``, as a
            run's ``config["model"]["inputs"]`` holds them).
        head: one of :data:`emo.fuse.heads.HEADS`; ``structure``: AFG structure 1/2/3.
        layer_weights: pool each multi-layer encoder with :class:`LayerWeights` (initial weight
            on ``layer_weights_init``) instead of feeding each layer as its own token.
        task, n_classes, decoder (``separate``/``jdev``), hidden, dropout.
        frame_bidirectional, frame_pooling: :class:`FrameLSTM` settings (output dimension ``hidden``).

    forward(xs: one entry per input: a (B, L_i, D_i) float32 tensor, or for frame-level inputs a
    :class:`PackedFrames` or a tuple ``(x (B, T, L_i, D_i), lengths (B,))``) → dict of outputs
    (see module docstring) plus ``info`` (attention weights where the head has them).

    Raises:
        ValueError: unknown head/task/decoder/frame pooling, JDEV with a task other than ``discrete+valence``.
    """

    def __init__(self, inputs: list[FeatureInput | Mapping[str, Any]], head: str = "afg", structure: int = 1, layer_weights: bool = False,
                 layer_weights_init: str = "18", task: str = "discrete", n_classes: int = 0, decoder: str = "separate",
                 hidden: int = 256, dropout: float = 0.3, frame_bidirectional: bool = True, frame_pooling: str = "mean") -> None:
        super().__init__()
        inputs = as_inputs(inputs)
        self.inputs = inputs
        self.pool = nn.ModuleDict()
        self.frame_lstm = nn.ModuleDict()
        tokens: list[Token] = []
        self.token_index: list[tuple[int, int | None]] = []  # (input, layer or None = pooled)
        for i, inp in enumerate(inputs):
            seq = inp.frames
            pooled = layer_weights and len(inp.layers) > 1
            if pooled:
                self.pool[str(i)] = LayerWeights(list(inp.layers), layer_weights_init)
            for j, k in ([(None, "weighted")] if pooled else list(enumerate(inp.layers))):
                dim = inp.dim
                if seq:
                    lstm = FrameLSTM(dim, hidden, frame_bidirectional, frame_pooling)
                    self.frame_lstm[str(len(tokens))] = lstm
                    dim = lstm.out_dim
                tokens.append(Token(inp.name, inp.modality, str(k), dim))
                self.token_index.append((i, j))
        self.tokens = tokens
        self.sequence_inputs = [i for i, inp in enumerate(inputs) if inp.frames]
        self.head = build_head(head, tokens, hidden, dropout, structure)
        if decoder == "jdev":
            if task != "discrete+valence":
                raise ValueError(f"--decoder jdev decodes emotion and valence jointly: needs --task discrete+valence, not {task!r}")
            self.decoder: nn.Module = JDEV(self.head.out_dim, n_classes)
        elif decoder == "separate":
            self.decoder = SeparateDecoder(self.head.out_dim, task, n_classes)
        else:
            raise ValueError(f"unknown decoder {decoder!r}; use one of {', '.join(DECODERS)}")

    def forward(self, xs: list) -> dict[str, Any]:
        xs = list(xs)
        lengths: dict[int, torch.Tensor] = {}
        for i in self.sequence_inputs:
            xs[i], lengths[i] = xs[i].padded() if isinstance(xs[i], PackedFrames) else xs[i]
        toks = []
        for t, (i, j) in enumerate(self.token_index):
            x = self.pool[str(i)](xs[i]) if j is None else xs[i][..., j, :]
            toks.append(self.frame_lstm[str(t)](x, lengths[i]) if i in lengths else x)
        z, info = self.head(toks)
        out = self.decoder(z)
        out["info"] = info
        return out
