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

from dataclasses import asdict, replace
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


#: Seed offset between repeats (``--repeats``): repeat r trains with seed ``seed + REPEAT_STRIDE * r``,
#: so its per-fold seeds (``seed + s`` for ``s < seeds``) never overlap another repeat's.
REPEAT_STRIDE = 1000


def fingerprint(config: dict[str, Any], folds: list, test_idx: np.ndarray | None) -> dict[str, Any]:
    """Everything that changes a fold's numbers: the run config without its record-only keys
    (``command``, torch ``threads``) plus a hash of every fold's rows (see :mod:`emo.fuse.resume`)."""
    from emo.fuse.resume import rows_hash

    fp = {k: v for k, v in config.items() if k not in ("command",)}
    fp["training"] = {k: v for k, v in config["training"].items() if k != "threads"}
    fp["fold_rows"] = [[f.name, rows_hash(f.train), rows_hash(f.val), rows_hash(f.test)] for f in folds]
    fp["test_rows"] = None if test_idx is None else rows_hash(test_idx)
    return fp


def train(features_dir: str | Path, dataset: str, features: list[str], cfg: TrainConfig, protocol: str = "5",
          out: str | Path | None = None, align: str = "strict", test_splits: list[str] | None = None,
          command: list[str] | None = None, progress: Callable[[str], None] | None = None,
          repeats: int = 1, resume: bool = True, restart: bool = False, augmented: list[str] | None = None,
          evaluate_on: str | None = None) -> tuple[CVResult, dict[str, Any]]:
    """Load features and labels, build the protocol's folds, :func:`train_cv`, and write the run directory.

    Args:
        features_dir, dataset, features: see :func:`emo.fuse.data.load_features`.
        cfg: :class:`TrainConfig`. protocol: ``"5"`` (k-fold), ``"speaker"`` or ``"split"``.
        out: run directory (``None``: write nothing). align: ``strict``/``intersect``.
        test_splits: partitions held out as the test set (default for ``split``: ``["test"]``).
        command: argv recorded in the config.
        repeats: N independent repetitions of the whole cross-validation (seed ``seed + 1000 r``;
            k-fold assignments and inner validation splits are redrawn). Repeat 0 is the run
            written to ``out``; the others go to ``out/repeats/seed-S/`` (complete run directories),
            and ``out/metrics.json`` gains ``repeats`` (mean ± std of each pooled metric) and
            ``interval`` (95 % group-bootstrap interval of the repeat-averaged pooled metric,
            :mod:`emo.fuse.stats`).
        resume: keep each finished fold in ``<parent>/.<out>.partial/`` (:mod:`emo.fuse.resume`) and
            continue from there when rerun with the same configuration. restart: discard it first.
        augmented, evaluate_on: ``--augmented ENCODER+TAG`` stores whose copies of the training
            clips join training, ``--evaluate-on TAG`` copies that replace the evaluated clips
            (:func:`emo.fuse.augmented.apply_augmentation`; not with ``repeats`` > 1).

    Returns:
        (result of repeat 0, its config).

    Raises:
        emo.fuse.resume.ResumeError: a partial run with a different configuration exists (named).
    """
    from emo.fuse.augmented import apply_augmentation
    from emo.fuse.data import load_features, targets
    from emo.fuse.resume import FoldCache, partial_dir

    cfg.validate()
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    if repeats > 1 and (augmented or evaluate_on):
        raise ValueError("--repeats cannot be combined with --augmented/--evaluate-on")
    fs = load_features(features_dir, dataset, features, align, frames=cfg.frames)
    y, mask = targets(fs.samples, cfg.task, fs.classes)
    rows = np.flatnonzero(mask)
    if test_splits is None:
        test_splits = ["test"] if protocol == "split" else []
    if out is not None and restart and partial_dir(out).exists():
        import shutil

        shutil.rmtree(partial_dir(out))
    runs = []
    for r in range(repeats):
        cfg_r = replace(cfg, seed=cfg.seed + REPEAT_STRIDE * r)
        folds, test_idx = make_folds(protocol, fs, y, rows, cfg_r.seed, test_splits)
        cfg_r = cfg_r.resolve(max((len(f.train) for f in folds), default=0))  # the run records the settings used
        disc = cfg_r.task in ("discrete", "discrete+valence")
        n_classes = len(fs.classes) if disc else 0
        config = {
            "command": command, "dataset": fs.dataset, "features_dir": str(features_dir),
            "feature_specs": [inp.spec for inp in fs.inputs], "inputs": [inp.to_dict() for inp in fs.inputs],
            "task": cfg_r.task, "classes": fs.classes if disc else None,
            "model": cfg_r.model_args(fs.inputs, n_classes), "training": asdict(cfg_r),
            "protocol": {"folds": protocol, "seed": cfg_r.seed, "align": align, "test_splits": test_splits,
                         "n_samples": len(fs.names), "n_labelled": int(mask.sum()),
                         "inner_validation": "one training speaker" if protocol == "speaker" else
                         ("dev partition or 10% of train" if protocol == "split" else "stratified 10% of the training folds")},
        }
        if repeats > 1:
            config["repeat"] = {"index": r, "of": repeats, "seed": cfg_r.seed}
        blocks, y_r, names, speakers = fs.blocks, y, fs.names, fs.speakers
        aug = apply_augmentation(features_dir, dataset, fs, y, folds, test_idx, augmented, evaluate_on)
        if aug is not None:  # rows N.. hold augmented copies; folds gain/swap them (training clips only)
            blocks, y_r, folds, test_idx, names, speakers = aug.blocks, aug.y, aug.folds, aug.test_idx, aug.names, aug.speakers
            config["augmentation"] = aug.info
        cache = FoldCache(out, fingerprint(config, folds, test_idx), part=f"seed-{cfg_r.seed}") if (out is not None and resume) else None
        if progress and repeats > 1:
            progress(f"repeat {r + 1}/{repeats} (seed {cfg_r.seed})")
        result = train_cv(blocks, fs.inputs, y_r, folds, cfg_r, n_classes, speakers, test_idx, progress, cache)
        runs.append((result, config, folds, names, y_r))
    result, config, folds, names, y_r = runs[0]
    if out is not None:
        save_run(out, config, result, names, folds, y_r)
        for res_r, cfg_dict, folds_r, names_r, y_rr in runs[1:]:
            save_run(Path(out) / "repeats" / f"seed-{cfg_dict['protocol']['seed']}", cfg_dict, res_r, names_r, folds_r, y_rr)
        if repeats > 1:
            summary = repeats_summary([r[0] for r in runs], fs, y, config)
            config["repeats_summary"] = summary
            _add_to_metrics(Path(out) / "metrics.json", summary)
        if resume:
            import shutil

            shutil.rmtree(partial_dir(out), ignore_errors=True)
    elif repeats > 1:
        config["repeats_summary"] = repeats_summary([r[0] for r in runs], fs, y, config)
    return result, config


def repeats_summary(results: list[CVResult], fs, y: dict[str, np.ndarray], config: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over repeats of each scalar pooled metric, and a 95 % group-bootstrap interval of
    the repeat-averaged pooled primary metric (UAR for classification, else valence CCC / VAD CCC).

    The resampling unit is the speaker when every evaluated sample has one (the held-out speaker
    for leave-one-speaker-out), else the sample (:mod:`emo.fuse.stats`)."""
    from emo.fuse.metrics import evaluate as _evaluate
    from emo.fuse.stats import bootstrap_ci, class_metric, mean_std

    keys = [k for k, v in results[0].pooled.items() if isinstance(v, float)]
    out: dict[str, Any] = {"n": len(results), "metrics": {}}
    for k in keys:
        vals = [r.pooled[k] for r in results]
        out["metrics"][k] = {**mean_std(vals), "values": [round(v, 6) for v in vals]}
    primary = "uar" if "uar" in keys else ("valence_ccc" if "valence_ccc" in keys else ("vad_ccc" if "vad_ccc" in keys else keys[0]))
    idx = np.sort(results[0].oof["index"])
    n_classes = len(config["classes"]) if config.get("classes") else 0
    aligned = []
    for r in results:
        pos = np.empty(int(r.oof["index"].max()) + 1, dtype=np.int64)
        pos[r.oof["index"]] = np.arange(len(r.oof["index"]))
        order = pos[idx]
        aligned.append({k: r.oof[k][order] for k in ("probs", "valence", "vad") if k in r.oof})
    ys = {k: v[idx] for k, v in y.items() if k in ("discrete", "valence", "vad") and (k != "discrete" or n_classes)}
    spk = [fs.speakers[i] for i in idx] if fs.speakers is not None else [None]
    groups, unit = (np.asarray(spk, dtype=object), "speaker") if all(s is not None for s in spk) else (idx.astype(str), "sample")

    if primary in ("uar", "waf", "accuracy"):
        preds = [a["probs"].argmax(1) for a in aligned]

        def metric(rows: np.ndarray) -> float:  # fast path: one bincount per repeat and replicate
            return float(np.mean([class_metric(ys["discrete"][rows], pr[rows], n_classes, primary) for pr in preds]))
    else:
        def metric(rows: np.ndarray) -> float:
            return float(np.mean([_evaluate({k: a[k][rows] for k in a}, {k: v[rows] for k, v in ys.items()}, n_classes)[primary]
                                  for a in aligned]))
    ci = bootstrap_ci(metric, groups, n_boot=1000, seed=0)
    out["interval"] = {"metric": primary, "group": unit, **ci}
    return out


def _add_to_metrics(path: Path, summary: dict[str, Any]) -> None:
    import json

    from emo.fuse.run import write_json

    m = json.loads(path.read_text(encoding="utf-8"))
    m["repeats"] = {k: v for k, v in summary.items() if k != "interval"}
    m["interval"] = summary["interval"]
    write_json(path, m)
