"""Task decoders: independent linear outputs and the joint emotion-valence decoder JDEV.

Tasks (``--task``): ``discrete`` (C-way emotion classification), ``valence`` (1-d regression),
``vad`` (3-d valence/arousal/dominance regression), ``discrete+valence`` and ``discrete+vad`` (both heads).

Model outputs are a dict: ``logits`` (B, C), ``valence`` (B,), ``vad`` (B, 3), as the task has them.
The full model is :class:`emo.fuse.model.multimodal.FusionModel`; the training losses are in :mod:`emo.fuse.model.losses`.
"""

from __future__ import annotations

import torch
from torch import nn

TASKS = ("discrete", "valence", "vad", "discrete+valence", "discrete+vad", "multilabel")
DECODERS = ("separate", "jdev")


def task_parts(task: str) -> tuple[bool, bool, bool]:
    """(has discrete, has valence, has vad) for a task name. Raises ValueError for unknown tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    # multilabel: one softmax over the labels (UniVA eq. 7), so the same logits output as discrete
    return (task in ("discrete", "discrete+valence", "discrete+vad", "multilabel"), task in ("valence", "discrete+valence"),
            task in ("vad", "discrete+vad"))


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
    """Joint decoding of emotion and valence, JDEV (Wang et al., "Hierarchical Audio-Visual
    Information Fusion with Multi-label Joint Decoding for MER 2023", ACM MM 2023, the joint
    decoding structure; its equation numbers are not cited here because they could not be
    verified against the paper):

    * emotion logits ``e = W_e z + b_e`` and posterior ``p = softmax(e)`` (B, C);
    * valence from the fused state, ``v_z = W_v z + b_v`` (B, 1);
    * valence from the emotion posterior, ``v_p = tanh(W_p p + b_p)`` (B, 1);
    * combination by a learned 2→1 layer, ``v = W_c [v_z; v_p] + b_c`` (B,).

    Only for ``task="discrete+valence"``.
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.emotion = nn.Linear(in_dim, n_classes)
        self.valence = nn.Linear(in_dim, 1)
        self.from_posterior = nn.Linear(n_classes, 1)
        self.combine = nn.Linear(2, 1)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.emotion(z)  # e = W_e z + b_e
        v_z = self.valence(z)  # valence from the fused state
        v_p = torch.tanh(self.from_posterior(torch.softmax(logits, dim=-1)))  # valence from the posterior
        v = self.combine(torch.cat([v_z, v_p], dim=-1)).squeeze(-1)  # learned 2→1 combination
        return {"logits": logits, "valence": v}
