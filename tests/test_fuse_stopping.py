"""The one early-stopping rule of every fusion training loop (emo.fuse.training.stopping)."""

from __future__ import annotations

import pytest
import torch

from emo.fuse.training.stopping import MIN_DELTA, EarlyStopping


def test_stops_after_patience_epochs_without_improvement_and_restores_the_best_state():
    m = torch.nn.Linear(2, 1)
    stop = EarlyStopping(patience=2)
    losses = [1.0, 0.5, 0.5 - MIN_DELTA / 2, 0.7]  # epoch 3 is not an improvement (below MIN_DELTA)
    stopped_at = None
    for epoch, v in enumerate(losses, 1):
        with torch.no_grad():
            m.weight.fill_(float(epoch))
        if stop.update(epoch, v, m):
            stopped_at = epoch
            break
    assert stopped_at == 4 and stop.best_epoch == 2 and stop.best == 0.5
    stop.restore(m)
    assert torch.all(m.weight == 2.0)  # the weights of epoch 2, not of the last epoch
    assert stop.info(stopped_at) == {"epochs": 4, "best_epoch": 2, "best_val_loss": 0.5}


def test_an_improvement_resets_the_wait():
    m = torch.nn.Linear(1, 1)
    stop = EarlyStopping(patience=2)
    assert [stop.update(e, v, m) for e, v in enumerate([1.0, 1.0, 0.9, 1.0, 1.0], 1)] == [False, False, False, False, True]


def test_patience_must_be_positive():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0)
