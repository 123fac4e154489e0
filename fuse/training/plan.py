"""The fold plan of one repeat of ``emo fuse train``, the paper methods that transform it, and the
training backend that fits it.

:func:`make_plan` draws the protocol's folds over the run's loaded rows (one :class:`FoldPlan` per
repeat). Each paper method is a plug-in ``(plan, ctx) -> plan`` in its own module, applied in the
order of :func:`plan_methods`; a plug-in returns the plan unchanged when its option is off:

* :func:`emo.fuse.methods.semi.semi_plan`: pseudo-labelled clips (``--pseudo-labels``) and, with
  ``--univa``, unlabelled clips join each fold's training rows with their row weights; UniVA's
  valence-arousal and eq. 8 matrix join the targets (Zheng, Yu, Xia, UniVA, eq. 3-11);
* :func:`emo.fuse.methods.augmented.augment_plan`: augmented copies of the training clips
  (``--augmented``) join training; copies replace the evaluated clips (``--evaluate-on``).

Per-fold HLFT feature stores (``emo extract --adapters``) are found before loading
(:func:`emo.fuse.methods.tune.find_fold_stores`, from the store layout) and ride on the plan as
``fold_stores``; :func:`fit_plan` then trains fold by fold on each fold's own store. Which options
may be combined is decided in one place, :func:`emo.fuse.config.check_run_rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.fuse.eval.protocols import Fold, make_folds


@dataclass
class RunData:
    """What every repeat of a run shares: the loaded :class:`emo.fuse.training.data.FeatureSet` ``fs``,
    the targets ``y`` (name -> (N, ...) arrays over its N rows) and ``mask`` (bool (N,), labelled rows),
    ``classes`` (the label list: the dataset's classes or the multi-label word list; ``None`` for
    regression), ``label_space`` (multi-label, else ``None``), the resolved ``protocol`` with the
    ``requested`` one and ``why``, the partitions ``test_splits``/``train_splits``, and the per-fold
    HLFT stores ``fold_stores`` (name -> paths in fold order; empty for ordinary stores)."""

    fs: Any
    y: dict[str, np.ndarray]
    mask: np.ndarray
    classes: list[str] | None
    label_space: Any
    protocol: str
    requested: str
    why: str
    test_splits: list[str]
    train_splits: list[str] | None
    fold_stores: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        """int64 indices of the labelled rows (the cross-validation pool and held-out test rows)."""
        return np.flatnonzero(self.mask)


@dataclass
class FoldPlan:
    """The rows, targets and weights of each fold of one repeat.

    Attributes:
        blocks: encoder -> features over the plan's rows ((R, L, D) float arrays, or frame lists).
        names, speakers: per row (R).
        y: the targets the models train on (plug-ins add ``weight``, ``va``, ``va_known``,
            ``correlation``, pseudo classes); y_true: the labels ``predictions.csv`` shows.
        mask: bool (N,) labelled clips of the loaded feature set.
        folds: the :class:`emo.fuse.eval.protocols.Fold` list the models train and evaluate on;
            test_idx: held-out test rows or ``None``.
        clip_folds: the folds over clips that ``config.json``'s ``protocol`` record and fold warnings
            describe (pseudo-labelled and unlabelled clips included; augmented copies, which are
            not clips of their own, are not).
        info: what the methods add to ``config.json`` (one key per method, in plug-in order).
        fold_stores: per-fold HLFT stores (name -> paths in fold order) or empty.
    """

    blocks: dict[str, Any]
    names: list[str]
    speakers: list[str | None]
    y: dict[str, np.ndarray]
    y_true: dict[str, np.ndarray]
    mask: np.ndarray
    folds: list[Fold]
    test_idx: np.ndarray | None
    clip_folds: list[Fold]
    info: dict[str, Any] = field(default_factory=dict)
    fold_stores: dict[str, list[Path]] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What the method plug-ins read besides the plan: the run's feature store folder and dataset,
    the loaded feature set ``fs``, this repeat's resolved :class:`emo.fuse.config.TrainConfig` ``cfg``,
    the label list ``classes``, the method options of :func:`emo.fuse.training.train.train`, and
    ``say`` (prints warnings; ``None`` after the first repeat)."""

    features_dir: str | Path
    dataset: str
    fs: Any
    cfg: Any
    classes: list[str] | None
    lexicon: Any = None
    pseudo_labels: str | Path | None = None
    pseudo_weight: float = 0.5
    augmented: list[str] = field(default_factory=list)
    evaluate_on: str | None = None
    say: Callable[[str], None] | None = None


def make_plan(data: RunData, seed: int) -> FoldPlan:
    """The protocol's folds over the labelled rows of ``data`` for one repeat (``seed``:
    :func:`emo.fuse.eval.protocols.make_folds`), as a :class:`FoldPlan` over the loaded rows."""
    fs = data.fs
    folds, test_idx = make_folds(data.protocol, fs, data.y, data.rows, seed, data.test_splits, data.train_splits)
    return FoldPlan(fs.blocks, fs.names, fs.speakers, data.y, data.y, data.mask, folds, test_idx, folds,
                    fold_stores=data.fold_stores)


def plan_methods() -> list[Callable[[FoldPlan, MethodContext], FoldPlan]]:
    """The paper methods' plug-ins, in the order they transform the plan (module docstring)."""
    from emo.fuse.methods.augmented import augment_plan
    from emo.fuse.methods.semi import semi_plan

    return [semi_plan, augment_plan]


def apply_methods(plan: FoldPlan, ctx: MethodContext) -> FoldPlan:
    """``plan`` transformed by every plug-in of :func:`plan_methods`, in order."""
    for method in plan_methods():
        plan = method(plan, ctx)
    return plan


def fit_plan(plan: FoldPlan, inputs: list, cfg: Any, recipe: dict[str, Any], n_classes: int,
             progress: Callable[[str], None] | None = None, cache: Any = None):
    """Train and evaluate every fold of ``plan`` with the run's backend; returns a
    :class:`emo.fuse.eval.cv.CVResult`.

    * per-fold HLFT stores: fold by fold, each on its own store (:func:`emo.fuse.methods.tune.train_cv_fold_stores`; no resume);
    * recipe ``lbfgs``: every fold in one full-batch L-BFGS solve (:func:`emo.fuse.training.batched.fit_lbfgs_path`);
    * ``cfg.batched`` or ``--optimizer lbfgs``: every fold x seed at once (:func:`emo.fuse.training.batched.train_cv_batched`);
    * else one model after another (:func:`emo.fuse.eval.cv.train_cv`).

    ``cache``: a :class:`emo.fuse.training.resume.FoldCache` or ``None``.
    """
    args = (plan.blocks, inputs, plan.y, plan.folds, cfg, n_classes, plan.speakers, plan.test_idx, progress)
    if plan.fold_stores:
        from emo.fuse.methods.tune import train_cv_fold_stores

        return train_cv_fold_stores(plan.blocks, plan.fold_stores, None, plan.names, *args[1:])
    if recipe["recipe"] == "lbfgs" or cfg.batched or cfg.optimizer == "lbfgs":
        from emo.fuse.training.batched import train_cv_batched

        optimizer = "path" if recipe["recipe"] == "lbfgs" else cfg.optimizer
        return train_cv_batched(*args, log=progress, optimizer=optimizer, fold_cache=cache)
    from emo.fuse.eval.cv import train_cv

    return train_cv(*args, cache)
