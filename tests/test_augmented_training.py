"""Training on clean + augmented copies of the training clips only (issue 15, MER-NOISE)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.methods.augmented import apply_augmentation, expand_with_copies, load_copy_groups, split_store_name
from emo.fuse.eval.protocols import Fold

CLASSES = ["a", "b"]


def _store(path: Path, prov: dict, x: dict[str, np.ndarray]) -> None:
    w = StoreWriter(path, prov, ["functionals"], dtype="float32")
    for name, v in x.items():
        w.add(name, Encoded(layers={"functionals": v}))
    w.finalize()
    w.close()


def make(root: Path, n: int = 20, skip_noisy: int = 0, clean_hash: str = "h") -> Path:
    feats = root / "features"
    samples = [Sample(f"u{i:02d}", None, discrete=CLASSES[i % 2], speaker=f"s{i % 4}") for i in range(n)]
    write_manifest(feats / "d", SimpleNamespace(name="d", root=root, classes=CLASSES), samples)
    base = {"source": "", "modality": "audio", "dataset": "d"}
    _store(feats / "d" / "egemaps.h5", {**base, "encoder": "egemaps", "weights_hash": "h"},
           {s.name: np.full(3, i, np.float32) for i, s in enumerate(samples)})
    noisy = {s.name: np.full(3, 1000 + i, np.float32) for i, s in enumerate(samples) if i >= skip_noisy}
    _store(feats / "d" / "egemaps+noise.h5", {**base, "encoder": "egemaps+noise", "weights_hash": "x", "clean_weights_hash": clean_hash,
                                              "augment": "noise:snr=5-11", "augment_seed": 0}, noisy)
    return feats


def test_split_store_name():
    assert split_store_name("egemaps+noise") == ("egemaps", "noise")
    with pytest.raises(ValueError, match="ENCODER\\+TAG"):
        split_store_name("egemaps")


def test_copies_join_training_rows_only(tmp_path):
    from emo.fuse.training.data import load_features

    feats = make(tmp_path, skip_noisy=2)
    fs = load_features(feats, "d", ["egemaps"])
    groups = load_copy_groups(feats, "d", fs, ["egemaps+noise"])
    assert groups[0].tag == "noise" and groups[0].present.tolist() == [False, False] + [True] * 18
    assert groups[0].provenance["egemaps+noise"]["augment"] == "noise:snr=5-11"
    n = len(fs.names)
    y = {"discrete": np.arange(n) % 2}
    fold = Fold("f", np.arange(0, 12), np.arange(12, 15), np.arange(15, 20))
    ex = expand_with_copies(fs.blocks, y, [fold], np.arange(15, 17), groups, ["noise"], names=fs.names, speakers=fs.speakers)
    f = ex["folds"][0]
    x = ex["blocks"]["egemaps"][:, 0, 0]
    assert sorted(x[f.train].tolist()) == sorted(list(range(12)) + [1000 + i for i in range(2, 12)])  # rows 0,1 have no copy
    assert x[f.val].tolist() == [12, 13, 14] and x[f.test].tolist() == [15, 16, 17, 18, 19]  # clean val and evaluation
    assert ex["counts"] == [10] and ex["y"]["discrete"][f.train].tolist() == [i % 2 for i in range(12)] + [i % 2 for i in range(2, 12)]
    assert ex["names"][n + 5] == fs.names[5] and ex["speakers"][n + 5] == fs.speakers[5] + "+noise"
    # noisy evaluation: the same clips' copies, training still clean + copies of the training rows
    ev = expand_with_copies(fs.blocks, y, [fold], np.arange(15, 17), groups, [], eval_tag="noise", names=fs.names)
    g = ev["folds"][0]
    xe = ev["blocks"]["egemaps"][:, 0, 0]
    assert xe[g.test].tolist() == [1015, 1016, 1017, 1018, 1019] and xe[g.train].tolist() == list(range(12))
    assert xe[ev["test_idx"]].tolist() == [1015, 1016]
    bad = Fold("f", np.arange(2, 12), np.arange(12, 15), np.arange(0, 2))
    with pytest.raises(ValueError, match="no augmented copy .*u00"):
        expand_with_copies(fs.blocks, y, [bad], None, groups, [], eval_tag="noise", names=fs.names)
    with pytest.raises(ValueError, match="no augmented stores with tag 'blur'"):
        expand_with_copies(fs.blocks, y, [fold], None, groups, ["blur"])


def test_refuses_copies_of_other_weights_and_unknown_encoders(tmp_path):
    from emo.fuse.training.data import load_features

    feats = make(tmp_path, clean_hash="other")
    fs = load_features(feats, "d", ["egemaps"])
    with pytest.raises(ValueError, match="same checkpoint"):
        load_copy_groups(feats, "d", fs, ["egemaps+noise"])
    with pytest.raises(ValueError, match="not among the --features"):
        load_copy_groups(feats, "d", fs, ["hubert+noise"])


def test_apply_augmentation_evaluate_only_and_config_info(tmp_path):
    from emo.fuse.training.data import load_features

    feats = make(tmp_path)
    fs = load_features(feats, "d", ["egemaps"])
    y = {"discrete": np.arange(20) % 2}
    folds = [Fold("f", np.arange(0, 12), np.arange(12, 15), np.arange(15, 20))]
    assert apply_augmentation(feats, "d", fs, y, folds, None, [], None) is None
    a = apply_augmentation(feats, "d", fs, y, folds, None, [], "noise")
    x = a.blocks["egemaps"][:, 0, 0]
    assert x[a.folds[0].train].tolist() == list(range(12)) and x[a.folds[0].test].tolist() == [1015, 1016, 1017, 1018, 1019]
    assert a.info["evaluate_on"] == "noise" and a.info["copies_per_fold"] == [0]
    b = apply_augmentation(feats, "d", fs, y, folds, None, ["egemaps+noise"], None)
    assert b.info["copies_per_fold"] == [12] and b.info["groups"]["noise"]["provenance"]["egemaps+noise"]["augment_seed"] == 0
    with pytest.raises(ValueError, match="no store egemaps\\+blur.h5"):
        apply_augmentation(feats, "d", fs, y, folds, None, [], "blur")
