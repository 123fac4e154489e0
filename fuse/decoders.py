"""Task decoders, the joint decoder JDEV, the full fusion model and the training losses.

Tasks (``--task``): ``discrete`` (C-way emotion classification), ``valence`` (1-d regression),
``vad`` (3-d valence/arousal/dominance regression) and ``discrete+valence`` (both).

Model outputs are a dict: ``logits`` (B, C), ``valence`` (B,), ``vad`` (B, 3), as the task has them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from emo.fuse.heads import FrameLSTM, LayerWeights, PackedFrames, Token, build_head

TASKS = ("discrete", "valence", "vad", "discrete+valence")
DECODERS = ("separate", "jdev")


def task_parts(task: str) -> tuple[bool, bool, bool]:
    """(has discrete, has valence, has vad) for a task name. Raises ValueError for unknown tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return task in ("discrete", "discrete+valence"), task in ("valence", "discrete+valence"), task == "vad"


class SeparateDecoder(nn.Module):
    """Independent linear outputs on the fused state z (B, H): logits (B, C), valence (B,), vad (B, 3)."""

    def __init__(self, in_dim: int, task: str, n_classes: int = 0) -> None:
        super().__init__()
        disc, val, vad = task_parts(task)
        self.emotion = nn.Linear(in_dim, n_classes) if disc else None
        self.valence = nn.Linear(in_dim, 1) if val else None
        self.vad = nn.Linear(in_dim, 3) if vad else None

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        if self.emotion is not None:
            out["logits"] = self.emotion(z)
        if self.valence is not None:
            out["valence"] = self.valence(z).squeeze(-1)
        if self.vad is not None:
            out["vad"] = self.vad(z)
        return out


class JDEV(nn.Module):
    """Joint decoding of emotion and valence (Wang et al., MER 2023, eq. 5–8).

    eq. 5: emotion logits ``e = W_e z + b_e`` and posterior ``p = softmax(e)`` (B, C);
    eq. 6: valence from the fused state, ``v_z = W_v z + b_v`` (B, 1);
    eq. 7: valence from the emotion posterior, ``v_p = tanh(W_p p + b_p)`` (B, 1);
    eq. 8: combination by a learned 2→1 layer, ``v = W_c [v_z; v_p] + b_c`` (B,).

    Only for ``task="discrete+valence"``.
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.emotion = nn.Linear(in_dim, n_classes)
        self.valence = nn.Linear(in_dim, 1)
        self.from_posterior = nn.Linear(n_classes, 1)
        self.combine = nn.Linear(2, 1)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.emotion(z)  # eq. 5
        v_z = self.valence(z)  # eq. 6
        v_p = torch.tanh(self.from_posterior(torch.softmax(logits, dim=-1)))  # eq. 7
        v = self.combine(torch.cat([v_z, v_p], dim=-1)).squeeze(-1)  # eq. 8
        return {"logits": logits, "valence": v}


class FusionModel(nn.Module):
    """Layer pooling (optional) → fusion head → decoder.

    Frame-level inputs (``inputs[i]["frames"]`` true) are encoded per token by a
    :class:`FrameLSTM` (``frame_lstm``: one per layer, or one on the :class:`LayerWeights`-pooled
    frames with ``layer_weights``), whose (B, H) output is that token for the head.

    Args:
        inputs: one dict per encoder, in input order: ``name``, ``modality``, ``layers`` (list of
            layer keys), ``dim`` (D, per frame for frame-level inputs), optional ``frames`` (bool).
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

    def __init__(self, inputs: list[dict[str, Any]], head: str = "afg", structure: int = 1, layer_weights: bool = False,
                 layer_weights_init: str = "18", task: str = "discrete", n_classes: int = 0, decoder: str = "separate",
                 hidden: int = 256, dropout: float = 0.3, frame_bidirectional: bool = True, frame_pooling: str = "mean") -> None:
        super().__init__()
        self.inputs = inputs
        self.pool = nn.ModuleDict()
        self.frame_lstm = nn.ModuleDict()
        tokens: list[Token] = []
        self.token_index: list[tuple[int, int | None]] = []  # (input, layer or None = pooled)
        for i, inp in enumerate(inputs):
            seq = bool(inp.get("frames", False))
            pooled = layer_weights and len(inp["layers"]) > 1
            if pooled:
                self.pool[str(i)] = LayerWeights(list(inp["layers"]), layer_weights_init)
            for j, k in ([(None, "weighted")] if pooled else list(enumerate(inp["layers"]))):
                dim = int(inp["dim"])
                if seq:
                    lstm = FrameLSTM(dim, hidden, frame_bidirectional, frame_pooling)
                    self.frame_lstm[str(len(tokens))] = lstm
                    dim = lstm.out_dim
                tokens.append(Token(inp["name"], inp["modality"], str(k), dim))
                self.token_index.append((i, j))
        self.tokens = tokens
        self.sequence_inputs = [i for i, inp in enumerate(inputs) if inp.get("frames")]
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


class UncertaintyLoss(nn.Module):
    """Uncertainty-weighted multi-task loss (Wang et al., MER 2023, eq. 9):

    ``L = L_e / δ1² + L_v / (2 δ2²) + log(1 + δ1) + log(1 + δ2)``

    with trainable δ1, δ2 > 0 (stored as ``log δ``, initialised to δ = 1). A noisier task has a
    larger loss at the optimum, so its δ grows and its weight shrinks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_delta = nn.Parameter(torch.zeros(2))

    @property
    def weights(self) -> tuple[float, float]:
        """The current task weights ``(1/δ1², 1/(2δ2²))``."""
        d = self.log_delta.detach().exp()
        return float(1 / d[0] ** 2), float(1 / (2 * d[1] ** 2))

    def forward(self, l_e: torch.Tensor, l_v: torch.Tensor) -> torch.Tensor:
        d = self.log_delta.exp()
        return l_e / d[0] ** 2 + l_v / (2 * d[1] ** 2) + torch.log1p(d[0]) + torch.log1p(d[1])


def task_losses(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor], class_weight: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-task losses: cross-entropy on ``logits`` vs int64 ``y["discrete"]`` (optional class weights),
    MSE on ``valence`` (B,) and ``vad`` (B, 3) in the labels' units."""
    losses = {}
    if "logits" in out:
        losses["discrete"] = F.cross_entropy(out["logits"], y["discrete"], weight=class_weight, label_smoothing=label_smoothing)
    if "valence" in out:
        losses["valence"] = F.mse_loss(out["valence"], y["valence"])
    if "vad" in out:
        losses["vad"] = F.mse_loss(out["vad"], y["vad"])
    return losses
