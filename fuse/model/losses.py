"""Training losses of the fusion models: per-task losses and the uncertainty-weighted multi-task loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class UncertaintyLoss(nn.Module):
    """Uncertainty-weighted multi-task loss (Wang et al., MER 2023, the multi-task loss based on
    uncertainty; equation number not verified against the paper, so none is cited):

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
