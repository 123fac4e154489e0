"""Resumable cross-validation (emo.fuse.resume): finished folds kept, configuration changes refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emo.fuse.resume import FoldCache, ResumeError, partial_dir, rows_hash


def test_fold_cache_round_trip_and_refusal(tmp_path):
    out = tmp_path / "runs" / "r"
    fp = {"training": {"lr": 0.001, "seeds": 2}, "folds": [rows_hash(np.arange(5))]}
    c = FoldCache(out, fp)
    assert c.dir == partial_dir(out) and c.finished() == []
    states = [{"head.weight": torch.randn(3, 4)}, {"head.weight": torch.randn(3, 4)}]
    outs = {"probs": np.random.rand(5, 3).astype(np.float32)}
    tests = [{"probs": np.random.rand(2, 3).astype(np.float32)}] * 2
    c.save(0, states, outs, tests, {"name": "fold-0", "metrics": {"uar": 0.5}})
    again = FoldCache(out, fp)  # same configuration: the finished fold is there
    assert again.finished() == [0] and again.has(0) and not again.has(1)
    st, o, t, row = again.load(0)
    assert len(st) == 2 and torch.equal(st[1]["head.weight"], states[1]["head.weight"])
    assert np.array_equal(o["probs"], outs["probs"]) and len(t) == 2 and row["metrics"]["uar"] == 0.5
    changed = {"training": {"lr": 0.0001, "seeds": 2}, "folds": fp["folds"]}
    with pytest.raises(ResumeError, match=r"training.lr: 0.001 -> 0.0001.*--restart"):
        FoldCache(out, changed)
    fresh = FoldCache(out, changed, restart=True)
    assert fresh.finished() == []
    fresh.remove()
    assert not partial_dir(out).exists()


def test_incomplete_fold_does_not_count(tmp_path):
    c = FoldCache(tmp_path / "r", {"a": 1})
    (c.dir / "fold-3.safetensors").write_bytes(b"partial")  # killed before the json was written
    assert not c.has(3) and c.finished() == []
