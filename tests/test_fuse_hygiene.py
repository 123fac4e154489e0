"""Evaluation hygiene: evaluation partitions stay out of training unless asked; folds that cannot
represent every class are reported."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from emo.fuse.eval.protocols import Fold, ProtocolError, fold_warnings, make_folds


def _fs(n: int = 80):
    splits = ["train"] * 50 + ["test1"] * 10 + ["test2"] * 10 + ["test3"] * 10
    return SimpleNamespace(splits=splits[:n], speakers=[f"s{i % 5}" for i in range(n)])


def test_mer2023_test_partitions_never_enter_training_unless_asked():
    fs = _fs()
    y = {"discrete": np.arange(80) % 4}
    rows = np.arange(80)
    folds, test = make_folds("5", fs, y, rows, 0, [])
    used = np.concatenate([np.concatenate([f.train, f.val, f.test]) for f in folds])
    assert test is None and set(used) == set(range(50))  # only the train partition
    folds, test = make_folds("5", fs, y, rows, 0, ["test1"])
    used = np.concatenate([np.concatenate([f.train, f.val]) for f in folds])
    assert set(test) == set(range(50, 60)) and set(used) <= set(range(50))
    folds, test = make_folds("5", fs, y, rows, 0, ["test3"], train_splits=["test1", "test2"])
    used = set(np.concatenate([np.concatenate([f.train, f.val, f.test]) for f in folds]))
    assert used == set(range(70)) and set(test) == set(range(70, 80))
    with pytest.raises(ProtocolError, match="--train-splits"):
        make_folds("5", SimpleNamespace(splits=["test1"] * 20, speakers=["a"] * 20), {"discrete": np.arange(20) % 2},
                   np.arange(20), 0, [])


def test_fold_warnings_name_absent_classes():
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    ok = Fold("a", np.array([0, 2, 4, 1]), np.array([3, 5, 6]), np.array([7]))
    bad = Fold("b", np.array([0, 1, 2, 3]), np.array([6, 7]), np.array([4, 5]))
    assert fold_warnings([ok], y, 3) == []
    w = fold_warnings([bad], y, 3)
    assert any("class(es) [2] absent from the training rows" in m for m in w)
    assert any("inner validation split (2 samples) lacks class(es) [2]" in m for m in w)
    assert fold_warnings([bad], None, 3) == []


def test_leave_one_out_sweep_selects_on_pooled_out_of_fold_metrics(tmp_path):
    from test_fuse_sweep import make_dataset

    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.sweep import run_sweep

    root, _ = make_dataset(tmp_path, n=24, n_layers=3, informative=(1,))
    cfg = TrainConfig(head="linear", seeds=1, optimizer="lbfgs", normalize="global")
    s = run_sweep(root, "toy", "enc", cfg=cfg, protocol="24", out=tmp_path / "sw", progress=False)
    assert all(r.get("pooled") for r in s["rows"]) and "pooled out-of-fold" in s["selected_on"]
    assert all(c["n_test"] == 1 for c in s["cells"])
    # the informative layer is selected; its UAR is one score over all 24 pooled predictions
    assert s["best"]["window"] == "1" and s["rows"][1]["uar_mean"] > 0.5


@pytest.mark.parametrize("protocol", ["split", "speaker", "3"])
def test_make_folds_reads_the_per_row_lists_once_not_per_row(protocol):
    """``FeatureSet.splits``/``speakers`` build a list over every row on each access; reading them
    per row made the split protocol quadratic (12 s of a 13,708-utterance MELD sweep)."""
    n = 300
    reads = {"splits": 0, "speakers": 0}

    class Counting:
        @property
        def splits(self):
            reads["splits"] += 1
            return ["train" if i < 200 else ("dev" if i < 250 else "test") for i in range(n)]

        @property
        def speakers(self):
            reads["speakers"] += 1
            return [f"s{i % 5}" for i in range(n)]

    y = {"discrete": np.arange(n) % 3}
    rows = np.arange(250) if protocol != "split" else np.arange(n)
    folds, _ = make_folds(protocol, Counting(), y, rows, 0, ["test"])
    assert folds
    assert reads["splits"] <= 2 and reads["speakers"] <= 2, reads
