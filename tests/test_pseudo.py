"""Self-training: pseudo-labels from a run's fold ensemble; they reach training rows only."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.types import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.eval.protocols import Fold
from emo.fuse.methods.pseudo import (
    PseudoLabelError, add_pseudo_labels, pseudo_label, read_pseudo_labels, seen_names, select_rows, write_fold_names,
)

CLASSES = ["neutral", "angry", "happy"]


def _dataset(root, n_lab=60, n_unl=40, seed=0):
    rng = np.random.default_rng(seed)
    feats = root / "features"
    centers = rng.normal(size=(3, 6)) * 3
    y = np.arange(n_lab + n_unl) % 3
    samples = [Sample(f"u{i:03d}", None, discrete=CLASSES[y[i]] if i < n_lab else None,
                      split=("train" if i % 4 else "test") if i < n_lab else "unlabeled") for i in range(n_lab + n_unl)]
    write_manifest(feats / "toy", SimpleNamespace(name="toy", root=root, classes=CLASSES), samples)
    with StoreWriter(feats / "toy" / "egemaps.h5", {"encoder": "egemaps", "source": "s", "weights_hash": "h", "modality": "audio"},
                     ["functionals"], dtype="float32") as w:
        for i, s in enumerate(samples):
            w.add(s.name, Encoded({"functionals": (centers[y[i]] + rng.normal(size=6)).astype(np.float32)}))
        w.finalize()
    return feats, samples, y


def _train(feats, out):
    from emo.fuse.training.data import load_features, targets
    from emo.fuse.training.train import TrainConfig, make_folds, train

    cfg = TrainConfig(head="mlp", epochs=15, patience=15, hidden=16, seeds=1, lr=1e-2)
    train(feats, "toy", ["egemaps"], cfg, protocol="split", out=out)
    # what the wired `emo fuse train` does after save_run (issue 14, phase B)
    fs = load_features(feats, "toy", ["egemaps"])
    y, mask = targets(fs.samples, "discrete", fs.classes)
    folds, test_idx = make_folds("split", fs, y, np.flatnonzero(mask), 0, ["test"])
    write_fold_names(out, fs.names, folds, test_idx)
    return fs, folds, mask


def test_pseudo_label_keeps_confident_unlabelled_clips(tmp_path):
    feats, samples, y = _dataset(tmp_path)
    fs, folds, mask = _train(feats, tmp_path / "run")
    seen = seen_names(tmp_path / "run")
    assert seen == {n for f in folds for part in (f.train, f.val) for n in np.asarray(fs.names)[part]}
    assert not seen & {s.name for s in samples if s.split == "test"}
    meta = pseudo_label(tmp_path / "run", feats, "toy", tmp_path / "pseudo.csv", threshold=0.6, command=["emo"])
    rows = list(csv.DictReader(open(tmp_path / "pseudo.csv")))
    assert meta["n_scored"] == 40 and meta["n_kept"] == len(rows) > 20
    assert all(r["name"] >= "u060" and float(r["confidence"]) >= 0.6 for r in rows)
    acc = np.mean([CLASSES.index(r["label"]) == y[int(r["name"][1:])] for r in rows])
    assert acc > 0.9
    assert sum(meta["per_class"].values()) == len(rows)
    top = pseudo_label(tmp_path / "run", feats, "toy", tmp_path / "top.csv", threshold=0.0, top_k=2)
    assert top["n_kept"] == sum(top["per_class"].values()) <= 6 and max(top["per_class"].values()) <= 2
    p = read_pseudo_labels(tmp_path / "pseudo.csv")
    assert p.names == [r["name"] for r in rows] and p.classes == CLASSES and p.seen == seen
    with pytest.raises(PseudoLabelError, match="threshold"):
        pseudo_label(tmp_path / "run", feats, "toy", tmp_path / "x.csv", threshold=1.5)


def test_pseudo_labels_never_reach_an_evaluation_fold(tmp_path):
    feats, samples, y = _dataset(tmp_path)
    fs, folds, mask = _train(feats, tmp_path / "run")
    pseudo_label(tmp_path / "run", feats, "toy", tmp_path / "pseudo.csv", threshold=0.0)
    p = read_pseudo_labels(tmp_path / "pseudo.csv")
    new, disc, weight, info = add_pseudo_labels(folds, fs.names, mask, CLASSES, p, weight=0.5)
    rows = np.flatnonzero(disc >= 0)
    assert info["n_added"] == len(rows) == 40
    for f_old, f in zip(folds, new):
        assert np.array_equal(f.val, f_old.val) and np.array_equal(f.test, f_old.test)
        assert set(f.train) == set(f_old.train) | set(rows)
        assert not set(rows) & (set(f.val) | set(f.test))
    assert np.all(weight[rows] == 0.5) and np.all(weight[mask] == 1.0)
    # a 5-fold CV over all labelled clips: the pseudo-labelling run trained on evaluation clips -> refused
    from emo.fuse.eval.protocols import stratified_kfold

    lab = np.flatnonzero(mask)
    cv = [Fold(f.name, lab[f.train], lab[f.val], lab[f.test]) for f in stratified_kfold(None, 5, 0, n=len(lab))]
    with pytest.raises(PseudoLabelError, match=r"fold .*evaluation clips \(u0"):
        add_pseudo_labels(cv, fs.names, mask, CLASSES, p)
    # pseudo-labels for clips that are labelled here, or over other classes, are refused
    lab_mask = mask.copy()
    lab_mask[np.flatnonzero(disc >= 0)[:1]] = True
    with pytest.raises(PseudoLabelError, match="labelled clips of this run"):
        add_pseudo_labels(folds, fs.names, lab_mask, CLASSES, p)
    with pytest.raises(PseudoLabelError, match="classes"):
        add_pseudo_labels(folds, fs.names, mask, ["a", "b", "c"], p)
    with pytest.raises(PseudoLabelError, match="pseudo-weight"):
        add_pseudo_labels(folds, fs.names, mask, CLASSES, p, weight=0.0)


def test_bad_pseudo_files_are_named(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("name,label,confidence\na,happy,0.9\n")
    with pytest.raises(PseudoLabelError, match="p.csv.json not found"):
        read_pseudo_labels(f)
    (tmp_path / "p.csv.json").write_text(json.dumps({"classes": CLASSES}))
    assert read_pseudo_labels(f).names == ["a"]
    f.write_text("name,label,confidence\na,sleepy,0.9\n")
    with pytest.raises(PseudoLabelError, match="row 2: label 'sleepy'"):
        read_pseudo_labels(f)
    f.write_text("name,label,confidence\na,happy,nan\n")
    with pytest.raises(PseudoLabelError, match="finite"):
        read_pseudo_labels(f)
    with pytest.raises(PseudoLabelError, match="folds.json not found"):
        seen_names(tmp_path)
    s = [Sample("a", None, discrete="happy", split="train"), Sample("b", None, split="unlabeled"), Sample("c", None, split="test")]
    assert select_rows(s, "unlabeled").tolist() == [1, 2] and select_rows(s, "test").tolist() == [2]
