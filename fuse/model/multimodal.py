"""The full fusion model: layer pooling (optional) → frame encoders (frame-level inputs) →
fusion head (:mod:`emo.fuse.model.heads`) → task decoder (:mod:`emo.fuse.model.decoders`)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from emo.fuse.model.decoders import DECODERS, JDEV, SeparateDecoder
from emo.fuse.model.frames import FrameLSTM, PackedFrames
from emo.fuse.model.heads import LayerWeights, Token, build_head
from emo.fuse.training.inputs import FeatureInput, as_inputs
from emo.fuse.model.sequence import FRAME_ENCODERS, FrameTokenTransformer, TextCNN


class FusionModel(nn.Module):
    """Layer pooling (optional) → fusion head → decoder.

    Frame-level inputs (``inputs[i].frames`` true) are encoded per token by a
    :class:`FrameLSTM` (``frame_lstm``: one per layer, or one on the :class:`LayerWeights`-pooled
    frames with ``layer_weights``), whose (B, H) output is that token for the head.

    Args:
        inputs: one :class:`emo.fuse.training.inputs.FeatureInput` per encoder, in input order (or its JSON
            form: dicts with ``name``, ``modality``, ``layers``, ``dim``, optional ``frames``, as a
            run's ``config["model"]["inputs"]`` holds them).
        head: one of :data:`emo.fuse.model.heads.HEADS`; ``structure``: AFG structure 1/2/3;
            ``afg_scores``: :data:`emo.fuse.model.heads.AFG_SCORES` (``concat``, eq. 2 of the MER 2023 paper).
        layer_weights: pool each multi-layer encoder with :class:`LayerWeights` (initial weight
            on ``layer_weights_init``) instead of feeding each layer as its own token.
        task, n_classes, decoder (``separate``/``jdev``), hidden, dropout.
        frame_bidirectional, frame_pooling: :class:`FrameLSTM` settings (output dimension ``hidden``).
        frame_encoder: ``lstm`` (:class:`FrameLSTM`) or ``textcnn`` (:class:`emo.fuse.model.sequence.TextCNN`, 300-d tokens).
        frame_tokens, max_frame_tokens: with ``head="transformer"``, the head is a
            :class:`emo.fuse.model.sequence.FrameTokenTransformer` over every frame token (capped per stream).

    forward(xs: one entry per input: a (B, L_i, D_i) float32 tensor, or for frame-level inputs a
    :class:`PackedFrames` or a tuple ``(x (B, T, L_i, D_i), lengths (B,))``) → dict of outputs
    (see module docstring) plus ``info`` (attention weights where the head has them).

    Raises:
        ValueError: unknown head/task/decoder/frame pooling, JDEV with a task other than ``discrete+valence``.
    """

    def __init__(self, inputs: list[FeatureInput | Mapping[str, Any]], head: str = "afg", structure: int = 1, layer_weights: bool = False,
                 layer_weights_init: str = "18", task: str = "discrete", n_classes: int = 0, decoder: str = "separate",
                 hidden: int = 256, dropout: float = 0.3, frame_bidirectional: bool = True, frame_pooling: str = "mean",
                 afg_scores: str = "concat", frame_encoder: str = "lstm", frame_tokens: bool = False,
                 max_frame_tokens: int = 64) -> None:
        super().__init__()
        inputs = as_inputs(inputs)
        self.inputs = inputs
        self.pool = nn.ModuleDict()
        self.frame_lstm = nn.ModuleDict()
        tokens: list[Token] = []
        self.token_index: list[tuple[int, int | None]] = []  # (input, layer or None = pooled)
        self.frame_tokens = bool(frame_tokens)
        if frame_encoder not in FRAME_ENCODERS:
            raise ValueError(f"unknown frame encoder {frame_encoder!r}; use one of {', '.join(FRAME_ENCODERS)}")
        for i, inp in enumerate([] if self.frame_tokens else inputs):
            seq = inp.frames
            pooled = layer_weights and len(inp.layers) > 1
            if pooled:
                self.pool[str(i)] = LayerWeights(list(inp.layers), layer_weights_init)
            for j, k in ([(None, "weighted")] if pooled else list(enumerate(inp.layers))):
                dim = inp.dim
                if seq:
                    lstm = FrameLSTM(dim, hidden, frame_bidirectional, frame_pooling) if frame_encoder == "lstm" else TextCNN(dim)
                    self.frame_lstm[str(len(tokens))] = lstm
                    dim = lstm.out_dim
                tokens.append(Token(inp.name, inp.modality, str(k), dim))
                self.token_index.append((i, j))
        self.sequence_inputs = [i for i, inp in enumerate(inputs) if inp.frames]
        if self.frame_tokens:  # the head reads the raw inputs: every frame is a token (emo.fuse.model.sequence)
            if head != "transformer":
                raise ValueError(f"--frame-tokens is a transformer head over frame tokens; got --head {head}")
            self.head = FrameTokenTransformer([inp.model_dict() for inp in inputs], hidden, dropout,
                                              max_tokens=max_frame_tokens, frame_encoder=frame_encoder,
                                              frame_bidirectional=frame_bidirectional, layer_weights=layer_weights,
                                              layer_weights_init=layer_weights_init)
            tokens = list(self.head.tokens)
        else:
            self.head = build_head(head, tokens, hidden, dropout, structure, afg_scores)
        self.tokens = tokens
        if decoder == "jdev":
            if task != "discrete+valence":
                raise ValueError(f"--decoder jdev decodes emotion and valence jointly: needs --task discrete+valence, not {task!r}")
            self.decoder: nn.Module = JDEV(self.head.out_dim, n_classes)
        elif decoder == "separate":
            self.decoder = SeparateDecoder(self.head.out_dim, task, n_classes)
        else:
            raise ValueError(f"unknown decoder {decoder!r}; use one of {', '.join(DECODERS)}")

    def embed(self, xs: list) -> tuple[torch.Tensor, dict[str, Any]]:
        """The fused state z (B, H) and the head's info: the forward pass up to the decoder."""
        if self.frame_tokens:
            return self.head(list(xs))
        xs = list(xs)
        lengths: dict[int, torch.Tensor] = {}
        for i in self.sequence_inputs:
            xs[i], lengths[i] = xs[i].padded() if isinstance(xs[i], PackedFrames) else xs[i]
        toks = []
        for t, (i, j) in enumerate(self.token_index):
            x = self.pool[str(i)](xs[i]) if j is None else xs[i][..., j, :]
            toks.append(self.frame_lstm[str(t)](x, lengths[i]) if i in lengths else x)
        return self.head(toks)

    def forward(self, xs: list) -> dict[str, Any]:
        z, info = self.embed(xs)
        out = self.decoder(z)
        out["info"] = info
        return out
