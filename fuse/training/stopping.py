"""Early stopping on the inner-validation loss, shared by every training loop of :mod:`emo.fuse`.

The rule (emo's choice; the papers do not spell one out): after each epoch the validation loss
``v`` counts as an improvement when ``v < best - MIN_DELTA``; then the model's state is copied as
the best one. Training stops once ``patience`` epochs in a row brought no improvement, and the
best state is restored. The fold-parallel trainer (:mod:`emo.fuse.training.batched`) applies the same
rule to every stacked model with :data:`MIN_DELTA`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

#: Smallest decrease of the validation loss (nats / squared label units) that counts as an improvement.
MIN_DELTA = 1e-5


def improves(loss: float, best: float) -> bool:
    """The improvement rule: ``loss < best - MIN_DELTA`` (every loop, stacked ones included)."""
    return loss < best - MIN_DELTA


class EarlyStopping:
    """Track the best validation loss of one model, keep its best state, say when to stop.

    Args:
        patience: epochs without improvement before stopping (>= 1).
        keep: when given, only state-dict entries whose key it accepts are copied and restored
            (``load_state_dict(strict=False)``), e.g. HLFT keeps adapters and head but not the
            frozen encoder layers; default: the whole state.

    Attributes:
        best: lowest validation loss so far (``inf`` before the first epoch).
        best_epoch: the epoch (1-based) it was reached in (0: none yet).
        wait: epochs since the last improvement.

    Usage::

        stop = EarlyStopping(cfg.patience)
        for epoch in range(1, epochs + 1):
            ...train one epoch...
            if stop.update(epoch, val_loss(), model):
                break
        stop.restore(model)
    """

    def __init__(self, patience: int, keep: Callable[[str], bool] | None = None) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.keep = keep
        self.best = math.inf
        self.best_epoch = 0
        self.wait = 0
        self._state: dict[str, Any] | None = None

    def update(self, epoch: int, loss: float, module) -> bool:
        """Record epoch ``epoch``'s validation ``loss`` of ``module`` (a ``torch.nn.Module``; its
        ``state_dict`` is deep-copied on improvement). Returns True when training should stop."""
        if improves(loss, self.best):
            self.best, self.best_epoch, self.wait = float(loss), int(epoch), 0
            state = module.state_dict()
            if self.keep is not None:
                state = {k: v for k, v in state.items() if self.keep(k)}
            self._state = copy.deepcopy(state)
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, module) -> None:
        """Load the best state into ``module`` (unchanged when no epoch improved, e.g. zero epochs)."""
        if self._state is not None:
            module.load_state_dict(self._state, strict=self.keep is None)

    def info(self, epochs: int) -> dict[str, Any]:
        """``{"epochs", "best_epoch", "best_val_loss"}`` for a run's fit record."""
        return {"epochs": int(epochs), "best_epoch": self.best_epoch, "best_val_loss": self.best}
