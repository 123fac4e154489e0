"""Self-training with pseudo-labels: score unlabelled clips with a trained run, keep the confident
ones, and add them to the *training* part of each fold of a later run.

* :func:`pseudo_label` (``emo fuse pseudo-label``): the fold ensemble of a run (mean of its fold
  models' probabilities, :meth:`emo.fuse.run.Run.predict`) scores the stored features of the
  clips of a subset (default: the unlabelled ones); a clip is kept when its top probability is at
  least ``threshold``, optionally only the ``top_k`` most confident per class (class balance).
  Writes ``pseudo.csv`` (``name, label, confidence, prob_<class>...``) and ``pseudo.csv.json``
  (provenance: the run, its config's SHA-256, the clips it trained or stopped early on, the
  settings and counts).
* :func:`add_pseudo_labels` (``emo fuse train --pseudo-labels``): appends the pseudo-labelled rows
  to each fold's training rows only, with a per-row weight (``--pseudo-weight``), never to the
  validation or evaluation rows, and refuses when the pseudo-labelling run trained on a clip that
  is in this run's evaluation rows (its pseudo-labels carry what it learnt from them) or when a
  pseudo-labelled clip is a labelled clip of this run.

Iterating (re-labelling with the new run, retraining) is a loop a user scripts; each round's
``pseudo.csv.json`` names the run it came from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo import fsio

FOLDS_FILE = "folds.json"
UNLABELLED = ("unlabeled", "unlabelled")


class PseudoLabelError(ValueError):
    """Unusable pseudo-labels (missing files, other classes, evaluation clips seen); named."""


def _atomic_text(path: Path, text: str) -> None:
    path = Path(path)
    if path.is_symlink():
        raise PseudoLabelError(f"{path} is a symbolic link; emo does not write through links")
    fsio.write_text(path, text)


def write_fold_names(run_dir: str | Path, names: list[str], folds: list, test_idx: np.ndarray | None = None) -> Path:
    """Record which clips each fold trained on, stopped early on and evaluated (``folds.json`` in
    the run directory), so a later :func:`pseudo_label` knows what the run has seen.

    Args:
        names: sample name per row; folds: :class:`emo.fuse.eval.protocols.Fold` list (row indices);
        test_idx: rows of the held-out test set, if any.
    """
    d = {"folds": [{"name": f.name, "train": [names[i] for i in f.train], "val": [names[i] for i in f.val],
                    "test": [names[i] for i in f.test]} for f in folds],
         "test": [names[i] for i in test_idx] if test_idx is not None else []}
    path = Path(run_dir) / FOLDS_FILE
    _atomic_text(path, json.dumps(d))
    return path


def seen_names(run_dir: str | Path) -> set[str]:
    """Clips a run trained on or used for early stopping (union over folds of train and val).

    Raises:
        PseudoLabelError: the run has no ``folds.json`` (trained by an emo that did not record it).
    """
    path = Path(run_dir) / FOLDS_FILE
    if not path.is_file():
        raise PseudoLabelError(f"{path} not found: the run does not record which clips it trained on; retrain it with this emo")
    d = json.loads(path.read_text(encoding="utf-8"))
    return {n for f in d["folds"] for part in ("train", "val") for n in f[part]}


def select_rows(samples: list, subset: str | None) -> np.ndarray:
    """Rows to pseudo-label: ``subset`` ``unlabeled``/``unlabelled``: clips whose partition is
    ``unlabeled`` and, in any partition, clips with neither a discrete label nor emotion words;
    another name: clips of that partition; ``None``/``all``: every clip."""
    if subset in (None, "all"):
        return np.arange(len(samples))
    if subset in UNLABELLED:
        return np.flatnonzero([(s.split in UNLABELLED) or (s.discrete is None and not s.emotions) for s in samples])
    return np.flatnonzero([s.split == subset for s in samples])


def pseudo_label(run_dir: str | Path, features_dir: str | Path, dataset: str, out: str | Path, subset: str | None = "unlabeled",
                 threshold: float = 0.9, top_k: int | None = None, align: str = "intersect",
                 command: list[str] | None = None) -> dict[str, Any]:
    """Pseudo-label the clips of ``subset`` with the fold ensemble of a discrete-task run.

    Args:
        run_dir: an ``emo fuse train --out`` directory (with ``folds.json``).
        features_dir, dataset: where the clips' features are (the run's feature specs are read).
        out: ``pseudo.csv`` path; the provenance goes to ``<out>.json``.
        subset: see :func:`select_rows`. Clips the run trained on are never pseudo-labelled.
        threshold: minimum top probability kept (in [0, 1]).
        top_k: keep at most this many clips per class (the most confident), or ``None``.
        align: ``strict``/``intersect`` as :func:`emo.fuse.training.data.load_features`.

    Returns:
        The provenance dict written to ``<out>.json`` (``n_scored``, ``n_kept``, ``per_class``, ...).

    Raises:
        PseudoLabelError: not a discrete run, bad threshold/top_k, no clip to score.
        emo.fuse.run.RunError, emo.fuse.training.data.FeatureError: unusable run or features.
    """
    from emo.fuse.training.data import load_features
    from emo.fuse.run import load_run

    if not 0.0 <= threshold <= 1.0:
        raise PseudoLabelError(f"--threshold must be in [0, 1], not {threshold}")
    if top_k is not None and top_k < 1:
        raise PseudoLabelError(f"--top-k must be >= 1, not {top_k}")
    run = load_run(run_dir)
    if not run.classes or run.task not in ("discrete", "discrete+valence"):
        raise PseudoLabelError(f"{run_dir}: pseudo-labels need a run with discrete classes (task {run.task!r})")
    seen = seen_names(run_dir)
    fs = load_features(features_dir, dataset, run.feature_specs, align, frames=run.frame_inputs or False)
    rows = select_rows(fs.samples, subset)
    skipped_seen = [i for i in rows if fs.names[i] in seen]
    rows = np.asarray([i for i in rows if fs.names[i] not in seen], dtype=np.int64)
    if len(rows) == 0:
        raise PseudoLabelError(f"{dataset}: no clip of subset {subset!r} to pseudo-label in {features_dir} "
                               f"({len(skipped_seen)} were training clips of the run)")
    feats = {inp["name"]: fs.blocks[inp["name"]][rows] for inp in run.inputs}
    speakers = fs.speakers  # a property building a list: once, not per row
    probs = run.predict(feats, [speakers[i] for i in rows])["probs"]
    if not np.all(np.isfinite(probs)):
        raise PseudoLabelError(f"{run_dir}: non-finite probabilities for some clips")
    label = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    keep = np.flatnonzero(conf >= threshold)
    if top_k is not None:
        kept = []
        for c in range(len(run.classes)):
            idx = keep[label[keep] == c]
            kept.extend(idx[np.argsort(-conf[idx], kind="stable")[:top_k]].tolist())
        keep = np.asarray(sorted(kept), dtype=np.int64)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_symlink():
        raise PseudoLabelError(f"{out} is a symbolic link; emo does not write through links")
    with fsio.atomic_open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "label", "confidence", *[f"prob_{c}" for c in run.classes]])
        for k in keep:
            w.writerow([fs.names[rows[k]], run.classes[label[k]], f"{conf[k]:.6f}", *[f"{p:.6f}" for p in probs[k]]])
    meta = {
        "command": command, "run": str(Path(run_dir).resolve()), "run_config_sha256": fsio.sha256_file(Path(run_dir) / "config.json"),
        "dataset": dataset, "features_dir": str(features_dir), "feature_specs": run.feature_specs, "subset": subset,
        "threshold": threshold, "top_k": top_k, "classes": run.classes, "n_scored": int(len(rows)),
        "n_skipped_training_clips": len(skipped_seen), "n_kept": int(len(keep)),
        "per_class": {c: int((label[keep] == i).sum()) for i, c in enumerate(run.classes)},
        "run_seen": sorted(seen),
    }
    _atomic_text(out.with_name(out.name + ".json"), json.dumps(meta, indent=1))
    return meta


@dataclass
class PseudoLabels:
    """Pseudo-labels read back by :func:`read_pseudo_labels`.

    Attributes:
        names: clip names (K); labels: class names (K); confidence: float32 (K,);
        classes: the pseudo-labelling run's class order; seen: clips that run trained on;
        meta: the whole ``<csv>.json`` provenance.
    """

    names: list[str]
    labels: list[str]
    confidence: np.ndarray
    classes: list[str]
    seen: set[str]
    meta: dict[str, Any]


def read_pseudo_labels(path: str | Path) -> PseudoLabels:
    """Read ``pseudo.csv`` and its ``pseudo.csv.json``.

    Raises:
        PseudoLabelError: a missing file, missing columns, a label outside the run's classes, a
            non-finite confidence, a duplicate name (file and row named).
    """
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    if not path.is_file():
        raise PseudoLabelError(f"pseudo-label file {path} does not exist")
    if not meta_path.is_file():
        raise PseudoLabelError(f"{meta_path} not found: pseudo-labels need the provenance `emo fuse pseudo-label` writes beside them")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    classes = list(meta["classes"])
    names, labels, conf = [], [], []
    from emo.extract.datasets.base import DatasetError, read_csv

    try:
        rows = read_csv(path, ["name", "label", "confidence"])  # the one strict CSV reader
    except DatasetError as e:
        raise PseudoLabelError(str(e)) from None
    if True:
        for i, row in enumerate(rows, start=2):
            if row["label"] not in classes:
                raise PseudoLabelError(f"{path}, row {i}: label {row['label']!r} is not one of {classes}")
            try:
                c = float(row["confidence"])
            except ValueError:
                c = float("nan")
            if not np.isfinite(c):
                raise PseudoLabelError(f"{path}, row {i}: confidence {row['confidence']!r} is not a finite number")
            if row["name"] in names:
                raise PseudoLabelError(f"{path}, row {i}: clip {row['name']!r} appears twice")
            names.append(row["name"])
            labels.append(row["label"])
            conf.append(c)
    return PseudoLabels(names, labels, np.asarray(conf, np.float32), classes, set(meta.get("run_seen", [])), meta)


def _some(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def add_pseudo_labels(folds: list, names: list[str], labelled: np.ndarray, classes: list[str], pseudo: PseudoLabels,
                      weight: float = 0.5) -> tuple[list, np.ndarray, np.ndarray, dict[str, Any]]:
    """Add pseudo-labelled rows to the training part of every fold.

    Args:
        folds: :class:`emo.fuse.eval.protocols.Fold` list over the rows of ``names``.
        names: sample name per row (all rows of the feature set, labelled or not).
        labelled: bool (N,): rows with a label of this run's task.
        classes: this run's class order (must equal the pseudo-labelling run's).
        pseudo: :func:`read_pseudo_labels`; weight: loss weight of a pseudo-labelled row (0, 1].

    Returns:
        ``(folds, discrete, row_weight, info)``: new folds (train rows extended), int64 (N,) class
        index per row for the pseudo rows (-1 elsewhere), float32 (N,) weight per row (1 for
        labelled rows, ``weight`` for pseudo rows, 0 otherwise), and info (counts, the
        pseudo-labelling run) for the run config.

    Raises:
        PseudoLabelError: other classes; a pseudo-labelled clip that is labelled in this run; the
            pseudo-labelling run trained on a clip of some fold's evaluation rows (the fold and
            the clips are named). Its having seen validation clips (early stopping) is allowed.
    """
    from emo.fuse.eval.protocols import Fold

    if not 0.0 < weight <= 1.0:
        raise PseudoLabelError(f"--pseudo-weight must be in (0, 1], not {weight}")
    if list(pseudo.classes) != list(classes):
        raise PseudoLabelError(f"pseudo-labels are over classes {pseudo.classes}, this run's are {classes}")
    index = {n: i for i, n in enumerate(names)}
    absent = [n for n in pseudo.names if n not in index]
    rows = np.asarray([index[n] for n in pseudo.names if n in index], dtype=np.int64)
    both = [names[i] for i in rows if labelled[i]]
    if both:
        raise PseudoLabelError(f"{len(both)} pseudo-labelled clip(s) are labelled clips of this run: {_some(both)}")
    for f in folds:
        leak = {names[i] for i in f.test} & pseudo.seen
        if leak:
            raise PseudoLabelError(f"fold {f.name}: the pseudo-labelling run {pseudo.meta.get('run')} trained on {len(leak)} of this "
                                   f"fold's evaluation clips ({_some(leak)}); its pseudo-labels would carry them into training. "
                                   "Pseudo-label with a run that held these clips out (e.g. trained on the training partition only)")
    disc = np.full(len(names), -1, dtype=np.int64)
    cidx = {c: i for i, c in enumerate(classes)}
    lab = dict(zip(pseudo.names, pseudo.labels))
    for i in rows:
        disc[i] = cidx[lab[names[i]]]
    row_weight = labelled.astype(np.float32)
    row_weight[rows] = weight
    new = [Fold(f.name, np.concatenate([f.train, rows]), f.val, f.test) for f in folds]
    for f in new:  # invariant: no pseudo row outside training
        assert not (np.isin(rows, f.val).any() or np.isin(rows, f.test).any())
    info = {"file_run": pseudo.meta.get("run"), "run_config_sha256": pseudo.meta.get("run_config_sha256"),
            "threshold": pseudo.meta.get("threshold"), "top_k": pseudo.meta.get("top_k"), "weight": weight,
            "n_added": int(len(rows)), "n_not_in_features": len(absent)}
    return new, disc, row_weight, info
