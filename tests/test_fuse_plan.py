"""The fold plan of `emo fuse train` (emo.fuse.training.plan): methods as plug-ins, per-fold HLFT
stores only when the store layout asks for them."""

from __future__ import annotations

import numpy as np
import pytest

from emo.fuse.config import TrainConfig
from test_augmented_training import make


def _run_data(feats, protocol="2"):
    from emo.fuse.training.train import load_run_data

    return load_run_data(feats, "d", ["egemaps"], TrainConfig(), protocol, "strict", None, None, None, False, {}, None)


def test_find_fold_stores_reads_the_store_layout(tmp_path):
    from emo.fuse.methods.tune import TuneError, find_fold_stores

    d = tmp_path / "ds"
    d.mkdir()
    (d / "plain.h5").write_bytes(b"")
    for k in (0, 1):
        (d / f"tuned.fold{k}.h5").write_bytes(b"")
        (d / f"plain.fold{k}.h5").write_bytes(b"")  # the plain store exists: its fold stores are not asked for
    found = find_fold_stores(tmp_path, "ds", ["plain", "tuned:2-3"])
    assert list(found) == ["tuned"] and [p.name for p in found["tuned"]] == ["tuned.fold0.h5", "tuned.fold1.h5"]
    assert find_fold_stores(tmp_path, "ds", ["plain"]) == {}
    (d / "gap.fold0.h5").write_bytes(b"")
    (d / "gap.fold2.h5").write_bytes(b"")
    with pytest.raises(TuneError, match="expected 0..1"):
        find_fold_stores(tmp_path, "ds", ["gap"])


def test_ordinary_run_never_takes_the_fold_store_path(tmp_path, monkeypatch):
    """Stores that exist: no folder listing for fold stores, no stand-in load, no per-fold backend."""
    import emo.fuse.methods.tune as tune
    from emo.fuse.training.train import train

    def boom(*a, **k):
        raise AssertionError("HLFT fold-store path taken on an ordinary run")

    for name in ("fold_stores", "load_fold_store_features", "rename_fold_inputs", "train_cv_fold_stores"):
        monkeypatch.setattr(tune, name, boom)
    feats = make(tmp_path)
    res, cfg = train(feats, "d", ["egemaps"], TrainConfig(epochs=2, seeds=1, hidden=4), protocol="2")
    assert cfg["protocol"]["n_folds"] == 2 and "hlft_fold_stores" not in cfg["inputs"][0]["provenance"]


def test_plug_ins_transform_the_plan(tmp_path):
    """augment_plan adds copies to the training rows and leaves the clip folds (the protocol record)
    alone; semi_plan (off here) and augment_plan (off) return the plan unchanged."""
    from emo.fuse.methods.augmented import augment_plan
    from emo.fuse.methods.semi import semi_plan
    from emo.fuse.training.plan import MethodContext, apply_methods, make_plan

    feats = make(tmp_path)
    data = _run_data(feats)
    plan = make_plan(data, seed=0)
    assert plan.clip_folds is plan.folds and len(plan.folds) == 2 and plan.info == {}
    off = MethodContext(feats, "d", data.fs, TrainConfig(), data.classes)
    assert semi_plan(plan, off) is plan and augment_plan(plan, off) is plan and apply_methods(plan, off) is plan
    on = MethodContext(feats, "d", data.fs, TrainConfig(), data.classes, augmented=["egemaps+noise"])
    aug = apply_methods(plan, on)
    n = len(data.fs.names)
    assert len(aug.names) == 2 * n and aug.clip_folds is plan.folds and aug.info["augmentation"]["evaluate_on"] == "clean"
    for f, g in zip(plan.folds, aug.folds):
        assert np.array_equal(g.train[:len(f.train)], f.train) and (g.train[len(f.train):] >= n).all()
        assert np.array_equal(g.test, f.test) and np.array_equal(g.val, f.val)
    assert aug.y_true["discrete"].shape == (2 * n,) and plan.y["discrete"].shape == (n,)  # the original plan is untouched
