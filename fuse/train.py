"""``emo fuse train``'s Python entry point: :func:`train` (stores in, run directory out).

It loads features and labels (:mod:`emo.fuse.data`), builds the protocol's folds
(:func:`emo.fuse.protocols.make_folds`), trains with cross-validation
(:func:`emo.fuse.cv.train_cv`) and writes the run directory (:func:`emo.fuse.run.save_run`).

The pieces live in their own modules: :mod:`emo.fuse.config` (:class:`TrainConfig`),
:mod:`emo.fuse.batching` (minibatches), :mod:`emo.fuse.fit` (one model's fit loop),
:mod:`emo.fuse.cv` (:func:`train_cv`, :class:`CVResult`), :mod:`emo.fuse.protocols` (folds),
:mod:`emo.fuse.report` (tables). Their public names are re-exported here for scripts written
against the single ``emo.fuse.train`` module.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.fuse.config import TrainConfig
from emo.fuse.cv import CVResult, train_cv
from emo.fuse.fit import average_outputs, fit_model, predict_model
from emo.fuse.metrics import evaluate
from emo.fuse.protocols import make_folds
from emo.fuse.report import results_table
from emo.fuse.run import save_run

__all__ = ["TrainConfig", "CVResult", "train_cv", "train", "fit_model", "predict_model", "average_outputs", "evaluate",
           "make_folds", "results_table"]


def train(features_dir: str | Path, dataset: str, features: list[str], cfg: TrainConfig, protocol: str = "5",
          out: str | Path | None = None, align: str = "strict", test_splits: list[str] | None = None,
          command: list[str] | None = None, progress: Callable[[str], None] | None = None) -> tuple[CVResult, dict[str, Any]]:
    """Load features and labels, build the protocol's folds, :func:`train_cv`, and write the run directory.

    Args:
        features_dir, dataset, features: see :func:`emo.fuse.data.load_features`.
        cfg: :class:`TrainConfig`. protocol: ``"5"`` (k-fold), ``"speaker"`` or ``"split"``.
        out: run directory (``None``: write nothing). align: ``strict``/``intersect``.
        test_splits: partitions held out as the test set (default for ``split``: ``["test"]``).
        command: argv recorded in the config.

    Returns:
        (result, config).
    """
    from emo.fuse.data import load_features, targets

    cfg.validate()
    fs = load_features(features_dir, dataset, features, align, frames=cfg.frames)
    y, mask = targets(fs.samples, cfg.task, fs.classes)
    rows = np.flatnonzero(mask)
    if test_splits is None:
        test_splits = ["test"] if protocol == "split" else []
    folds, test_idx = make_folds(protocol, fs, y, rows, cfg.seed, test_splits)
    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))  # the run records the settings used
    disc = cfg.task in ("discrete", "discrete+valence")
    n_classes = len(fs.classes) if disc else 0
    result = train_cv(fs.blocks, fs.inputs, y, folds, cfg, n_classes, fs.speakers, test_idx, progress)
    config = {
        "command": command, "dataset": fs.dataset, "features_dir": str(features_dir),
        "feature_specs": [inp.spec for inp in fs.inputs], "inputs": [inp.to_dict() for inp in fs.inputs],
        "task": cfg.task, "classes": fs.classes if disc else None,
        "model": cfg.model_args(fs.inputs, n_classes), "training": asdict(cfg),
        "protocol": {"folds": protocol, "seed": cfg.seed, "align": align, "test_splits": test_splits,
                     "n_samples": len(fs.names), "n_labelled": int(mask.sum()),
                     "inner_validation": "one training speaker" if protocol == "speaker" else
                     ("dev partition or 10% of train" if protocol == "split" else "stratified 10% of the training folds")},
    }
    if out is not None:
        save_run(out, config, result, fs.names, folds, y)
    return result, config
