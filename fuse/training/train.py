"""``emo fuse train``'s Python entry point: :func:`train` (stores in, run directory out).

It loads features and labels (:mod:`emo.fuse.training.data`), builds the protocol's folds
(:func:`emo.fuse.eval.protocols.make_folds`), trains with cross-validation
(:func:`emo.fuse.eval.cv.train_cv`) and writes the run directory (:func:`emo.fuse.run.save_run`).

The pieces live in their own modules: :mod:`emo.fuse.config` (:class:`TrainConfig`),
:mod:`emo.fuse.training.minibatch` (minibatches), :mod:`emo.fuse.training.fit` (one model's fit loop),
:mod:`emo.fuse.eval.cv` (:func:`train_cv`, :class:`CVResult`), :mod:`emo.fuse.eval.protocols` (folds),
:mod:`emo.fuse.eval.report` (tables). Their public names are re-exported here for scripts written
against the single ``emo.fuse.training.train`` module.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.fuse.config import TrainConfig, check_run_rules
from emo.fuse.eval.contract import input_contract
from emo.fuse.eval.cv import CVResult, train_cv
from emo.fuse.training.fit import average_outputs, fit_model, predict_model
from emo.fuse.eval.metrics import degenerate_warnings, evaluate
from emo.fuse.eval.protocols import fold_warnings, make_folds, protocol_record, resolve_for
from emo.fuse.eval.report import results_table, write_report
from emo.fuse.run import save_run

__all__ = ["TrainConfig", "CVResult", "train_cv", "train", "fit_model", "predict_model", "average_outputs", "evaluate",
           "make_folds", "results_table"]


#: Seed offset between repeats (``--repeats``): repeat r trains with seed ``seed + REPEAT_STRIDE * r``,
#: so its per-fold seeds (``seed + s`` for ``s < seeds``) never overlap another repeat's.
REPEAT_STRIDE = 1000


def fingerprint(config: dict[str, Any], folds: list, test_idx: np.ndarray | None) -> dict[str, Any]:
    """Everything that changes a fold's numbers: the run config without its record-only keys
    (``command``, torch ``threads``) plus a hash of every fold's rows (see :mod:`emo.fuse.training.resume`)."""
    from emo.fuse.training.resume import rows_hash

    fp = {k: v for k, v in config.items() if k not in ("command",)}
    fp["training"] = {k: v for k, v in config["training"].items() if k != "threads"}
    fp["fold_rows"] = [[f.name, rows_hash(f.train), rows_hash(f.val), rows_hash(f.test)] for f in folds]
    fp["test_rows"] = None if test_idx is None else rows_hash(test_idx)
    return fp


def train(features_dir: str | Path, dataset: str, features: list[str], cfg: TrainConfig, protocol: str = "auto",
          out: str | Path | None = None, align: str = "strict", test_splits: list[str] | None = None,
          command: list[str] | None = None, progress: Callable[[str], None] | None = None,
          repeats: int = 1, resume: bool = True, restart: bool = False, pseudo_labels: str | Path | None = None,
          pseudo_weight: float = 0.5, lexicon: str | Path | None = None,
          train_splits: list[str] | None = None, allow_rare_classes: bool = False, augmented: list[str] | None = None,
          evaluate_on: str | None = None) -> tuple[CVResult, dict[str, Any]]:
    """Load features and labels, build the protocol's folds, :func:`train_cv`, and write the run directory.

    Args:
        features_dir, dataset, features: see :func:`emo.fuse.training.data.load_features`.
        cfg: :class:`TrainConfig`. protocol: ``"auto"`` (default: leave-one-speaker-out when every
            sample has a speaker, else stratified 5-fold, stated as speaker-dependent;
            :func:`emo.fuse.eval.protocols.resolve_protocol`), ``"K"`` (k-fold), ``"speaker"``, ``"split"``
            or ``"file:PATH"`` (fold lists, e.g. EmoBox's; :func:`emo.fuse.eval.protocols.read_fold_lists`).
            The run's ``config.json`` and ``metrics.json`` carry the ``protocol`` record
            (:func:`emo.fuse.eval.protocols.protocol_record`).
        out: run directory (``None``: write nothing). align: ``strict``/``intersect``.
        test_splits: partitions held out as the test set (default for ``split``: ``["test"]``).
        train_splits: evaluation partitions (:data:`emo.fuse.eval.protocols.EVAL_SPLITS`, e.g. MER 2023's
            labelled ``test1``) allowed into the cross-validation pool; by default they never are.
        command: argv recorded in the config.
        repeats: N independent repetitions of the whole cross-validation (seed ``seed + 1000 r``;
            k-fold assignments and inner validation splits are redrawn). Repeat 0 is the run
            written to ``out``; the others go to ``out/repeats/seed-S/`` (complete run directories),
            and ``out/metrics.json`` gains ``repeats`` (mean ± std of each pooled metric) and
            ``interval`` (95 % group-bootstrap interval of the repeat-averaged pooled metric,
            :mod:`emo.fuse.eval.stats`).
        pseudo_labels, pseudo_weight: a ``pseudo.csv`` of ``emo fuse pseudo-label`` whose clips join
            the training part of every fold with this loss weight (:mod:`emo.fuse.methods.pseudo`).
        lexicon: NRC-VAD file for ``cfg.univa`` (valence-arousal of labels/transcripts, the UniVA eq. 8 matrix).
        resume: keep each finished fold in ``<parent>/.<out>.partial/`` (:mod:`emo.fuse.training.resume`) and
            continue from there when rerun with the same configuration. restart: discard it first.
        allow_rare_classes: accept classes with fewer than 2 labelled samples (by default they are
            refused: a typo in a label file silently becomes a class of its own).
        augmented, evaluate_on: ``--augmented ENCODER+TAG`` stores whose copies of the training
            clips join training, ``--evaluate-on TAG`` copies that replace the evaluated clips
            (:func:`emo.fuse.methods.augmented.apply_augmentation`; not with ``repeats`` > 1).

    Returns:
        (result of repeat 0, its config).

    Raises:
        emo.fuse.training.resume.ResumeError: a partial run with a different configuration exists (named).
    """
    from emo.fuse.methods.augmented import apply_augmentation
    from emo.fuse.training.data import load_features, targets
    from emo.fuse.model.decoders import task_parts
    from emo.fuse.training.resume import FoldCache, partial_dir
    from emo.fuse.eval.runcheck import check_run_out
    from emo.fuse.methods.tune import rename_fold_inputs, resolve_fold_features, train_cv_fold_stores

    t_call = time.perf_counter()
    t_process = process_seconds()
    clock = {"first_fold": None}
    if progress is not None or out is not None:  # the first finished fold ("fold 1/K ...") marks the time to first fold
        user_progress = progress

        def progress(line: str, _p=user_progress) -> None:
            if clock["first_fold"] is None and line.startswith("fold "):
                clock["first_fold"] = time.perf_counter()
            if _p is not None:
                _p(line)
    check_run_rules(cfg, repeats=repeats, pseudo_labels=pseudo_labels, augmented=augmented or (), evaluate_on=evaluate_on)
    if out is not None:
        check_run_out(out)  # a bad --out fails now, not after hours of training
    # HLFT features come as one store per fold (emo extract --adapters): fold k reads fold k's store
    features, fold_features = resolve_fold_features(features_dir, dataset, features)
    check_run_rules(cfg, repeats=repeats, pseudo_labels=pseudo_labels, augmented=augmented or (), evaluate_on=evaluate_on,
                    fold_stores=bool(fold_features))
    fs = load_features(features_dir, dataset, features, align, frames=cfg.frames)
    rename_fold_inputs(fs, fold_features)
    if test_splits is None:
        test_splits = ["test"] if protocol == "split" else []
    classes = fs.classes
    label_space = None
    if cfg.task == "multilabel":  # label list from the words of the CV pool (every clip outside the test partitions)
        from emo.fuse.methods.semi import multilabel_targets

        from emo.fuse.training.data import label_source

        wheels = None
        if cfg.emotion_wheel:  # MER-FG: one class per word family (emotion-wheel word forms, format.csv)
            from emo.lexicon.wheel import load_wheels

            wheels = load_wheels(cfg.emotion_wheel)
        sp = np.asarray([s or "" for s in fs.splits], dtype=object)
        y, mask, label_space = multilabel_targets(fs.samples, np.flatnonzero(~np.isin(sp, test_splits)), wheels=wheels,
                                                  allow_rare=allow_rare_classes, source=label_source(features_dir, dataset),
                                                  log=progress)  # rare/unknown words refused, empty word sets warned (issue 25)
        classes = label_space.classes
    else:
        y, mask = targets(fs.samples, cfg.task, fs.classes, cfg.vad_targets, lexicon)
    rows = np.flatnonzero(mask)
    if cfg.task in ("discrete", "discrete+valence") and fs.classes:
        check_class_counts(fs.classes, y["discrete"][rows], allow_rare_classes, progress)
    if out is not None and restart and partial_dir(out).exists():
        import shutil

        shutil.rmtree(partial_dir(out))
    requested = protocol
    protocol, why = resolve_for(protocol, fs, rows, test_splits, train_splits)  # --folds auto: speakers known -> speaker
    if progress:
        progress(f"protocol: {why}")
    runs = []
    t_train = time.perf_counter()
    for r in range(repeats):
        cfg_r = replace(cfg, seed=cfg.seed + REPEAT_STRIDE * r)
        folds, test_idx = make_folds(protocol, fs, y, rows, cfg_r.seed, test_splits, train_splits)
        recipe = select_recipe(cfg_r, fs, folds, y, fold_features, pseudo_labels, augmented or evaluate_on)
        if recipe["recipe"] == "lbfgs":  # deterministic: dropout off, one model per fold unless --seeds says otherwise
            cfg_r = replace(cfg_r, recipe="lbfgs", dropout=0.0, seeds=cfg_r.seeds or 1)
        elif cfg_r.recipe == "auto":
            cfg_r = replace(cfg_r, recipe="adamw")
        if progress and r == 0:
            progress(f"recipe: {recipe['recipe']} ({recipe['reason']})")
        cfg_r = cfg_r.resolve(max((len(f.train) for f in folds), default=0))  # the run records the settings used
        disc = task_parts(cfg_r.task)[0]
        n_classes = len(classes) if disc else 0
        y_r, semi_info = y, {}
        if pseudo_labels is not None or cfg_r.univa:  # rows join training parts only (emo.fuse.methods.semi)
            from emo.fuse.methods.semi import correlation_for, prepare_semi

            folds, y_r, semi_info = prepare_semi(fs.samples, fs.names, y, mask, folds, test_idx, classes, univa=cfg_r.univa,
                                                 va_source=cfg_r.va_source, lexicon=lexicon, pseudo_labels=pseudo_labels,
                                                 pseudo_weight=pseudo_weight)
            if cfg_r.univa:
                M, why = correlation_for(classes, lexicon)
                if M is not None:
                    y_r["correlation"] = M
                semi_info["univa"] = {"lambda": cfg_r.univa_lambda, "delta": cfg_r.univa_delta, "tau": cfg_r.univa_tau, "eta_weight": cfg_r.univa_eta,
                                      "va": semi_info.pop("univa_va"), "unlabelled_rows": semi_info.pop("unlabelled_rows"),
                                      "correlation": None if M is None else M.round(6).tolist(), "correlation_note": why,
                                      "source": "Zheng, Yu, Xia, UniVA, eq. 3-11"}
                if M is not None and cfg_r.univa_eta > 0:  # issue 23: eq. 9's η rewards one constant class
                    from emo.fuse.methods.univa import eta_vertex_minimum

                    vm = eta_vertex_minimum(M, classes)
                    semi_info["univa"]["eta_vertex_minimum"] = vm
                    if vm["collapses"] and progress and r == 0:
                        progress(f"warning: UniVA η (eq. 9, weight {cfg_r.univa_eta:g}) is negative when every clip is predicted one of "
                                 f"{vm['negative']} (down to {vm['eta_min']:.3f} for {vm['argmin']!r}) and 0 for a uniform prediction: "
                                 "eq. 11 rewards predicting one class for every clip (try --univa-eta 0 or a small weight)")
        config = {
            "command": command, "dataset": fs.dataset, "features_dir": str(features_dir),
            "feature_specs": [inp.spec for inp in fs.inputs], "inputs": [inp.to_dict() for inp in fs.inputs],
            "task": cfg_r.task, "classes": classes if disc else None,
            "model": cfg_r.model_args(fs.inputs, n_classes), "training": asdict(cfg_r),
            "protocol": {**protocol_record(requested, protocol, why, folds, fs.speakers, cfg_r.normalize),
                         "seed": cfg_r.seed, "align": align, "test_splits": test_splits,
                         "train_splits": list(train_splits or []),
                         "n_samples": len(fs.names), "n_labelled": int(mask.sum())},
        }
        warn = fold_warnings(folds, y.get("discrete") if disc else None, n_classes, classes if disc else None)
        if warn or label_space is not None and label_space.warnings:
            config["warnings"] = (label_space.warnings if label_space is not None else []) + warn  # printed by multilabel_targets
            if progress and r == 0:
                for w in warn:
                    progress(f"warning: {w}")
        config["recipe"] = recipe
        config["input_contract"] = input_contract(fs.inputs, fs.samples, cfg_r.normalize)  # what emo score must match
        config.update(label_scales(cfg_r, fs, lexicon))
        config.update(semi_info)
        if label_space is not None:
            config["label_space"] = label_space.to_dict()
        if repeats > 1:
            config["repeat"] = {"index": r, "of": repeats, "seed": cfg_r.seed}
        blocks, names, speakers, y_save = fs.blocks, fs.names, fs.speakers, y  # predictions.csv shows the true labels (y)
        aug = apply_augmentation(features_dir, dataset, fs, y, folds, test_idx, augmented, evaluate_on)
        if aug is not None:  # rows N.. hold augmented copies; folds gain/swap them (training clips only)
            blocks, y_r, folds, test_idx, names, speakers = aug.blocks, aug.y, aug.folds, aug.test_idx, aug.names, aug.speakers
            y_save = aug.y
            config["augmentation"] = aug.info
        cache = FoldCache(out, fingerprint(config, folds, test_idx), part=f"seed-{cfg_r.seed}") if (out is not None and resume) else None
        if progress and repeats > 1:
            progress(f"repeat {r + 1}/{repeats} (seed {cfg_r.seed})")
        if fold_features:
            result = train_cv_fold_stores(blocks, fold_features, None, names, fs.inputs, y_r, folds, cfg_r,
                                          n_classes, speakers, test_idx, progress)
        elif recipe["recipe"] == "lbfgs":  # every fold in one full-batch L-BFGS solve (emo.fuse.training.batched.fit_lbfgs_path)
            from emo.fuse.training.batched import train_cv_batched

            result = train_cv_batched(blocks, fs.inputs, y_r, folds, cfg_r, n_classes, speakers, test_idx, progress,
                                      log=progress, optimizer="path", fold_cache=cache)
        elif cfg_r.batched or cfg_r.optimizer == "lbfgs":  # every fold x seed at once (emo.fuse.training.batched)
            from emo.fuse.training.batched import train_cv_batched

            result = train_cv_batched(blocks, fs.inputs, y_r, folds, cfg_r, n_classes, speakers, test_idx, progress,
                                      log=progress, optimizer=cfg_r.optimizer, fold_cache=cache)
        else:
            result = train_cv(blocks, fs.inputs, y_r, folds, cfg_r, n_classes, speakers, test_idx, progress, cache)
        degenerate = degenerate_warnings(result.pooled, classes if disc else None, "pooled out-of-fold")
        if result.test is not None and "metrics" in result.test:
            degenerate += degenerate_warnings(result.test["metrics"], classes if disc else None, "held-out test")
        if degenerate:
            config["warnings"] = config.get("warnings", []) + degenerate
            if progress and r == 0:
                for w in degenerate:
                    progress(f"warning: {w}")
        result.protocol, result.warnings = config["protocol"], list(config.get("warnings", []))
        if repeats > 1:
            result.label = f"repeat {r + 1} of {repeats} (seed {cfg_r.seed}); the other repeats are summarised below"
        if result.threshold_tuning is not None:  # ζ chosen on inner-validation rows: the run's threshold from now on
            config["training"]["threshold"] = result.threshold_tuning["threshold"]
            config["threshold_tuning"] = result.threshold_tuning
        runs.append((result, config, folds, test_idx, names, y_save))
    train_s = time.perf_counter() - t_train
    result, config, folds, test_idx, names, y_save = runs[0]
    if cfg.emotion_wheel:  # MER-FG: the emotion-wheel F1 of the pooled out-of-fold multi-label predictions
        config["emotion_wheel"] = add_wheel_metrics(result, fs.samples, config["classes"], cfg.emotion_wheel,
                                                    config["training"]["threshold"])
    if out is not None:
        from emo.fuse.methods.pseudo import write_fold_names

        save_run(out, config, result, names, folds, y_save)
        write_fold_names(out, names, folds, test_idx)  # what the run saw, for emo fuse pseudo-label
        for res_r, cfg_dict, folds_r, test_r, names_r, y_rr in runs[1:]:
            d = Path(out) / "repeats" / f"seed-{cfg_dict['protocol']['seed']}"
            save_run(d, cfg_dict, res_r, names_r, folds_r, y_rr)
            write_fold_names(d, names_r, folds_r, test_r)
        if repeats > 1:
            summary = repeats_summary([r[0] for r in runs], fs, y, config)
            config["repeats_summary"] = summary
            _add_to_metrics(Path(out) / "metrics.json", summary)
        _add_timing(Path(out) / "metrics.json", config["recipe"], timing(t_call, t_process, clock["first_fold"], train_s))
        if resume:
            import shutil

            shutil.rmtree(partial_dir(out), ignore_errors=True)
    elif repeats > 1:
        config["repeats_summary"] = repeats_summary([r[0] for r in runs], fs, y, config)
    return result, config


def select_recipe(cfg: TrainConfig, fs, folds: list, y: dict[str, np.ndarray], fold_features=None, pseudo_labels=None,
                  augmented=None) -> dict[str, Any]:
    """The run's training recipe and why (:func:`emo.fuse.training.batched.choose_recipe`): ``lbfgs`` for
    utterance-level inputs that fit in memory, ``adamw`` otherwise; recorded in ``config.json``
    and ``metrics.json`` under ``recipe`` and printed.

    Raises:
        ValueError: ``--recipe lbfgs`` for a run it cannot train (the reason).
    """
    from emo.fuse.training.batched import choose_recipe

    other = None
    if fold_features:
        other = "per-fold feature stores (HLFT adapters) train fold by fold"
    elif pseudo_labels is not None or cfg.univa:
        other = "pseudo-labelled / UniVA rows (soft targets, row weights) train in the minibatch loop"
    elif cfg.task not in ("discrete", "valence", "vad", "discrete+valence"):
        other = f"--task {cfg.task} trains in the minibatch loop"
    elif augmented:
        other = "--augmented/--evaluate-on rows train in the minibatch loop"
    speakers = fs.speakers
    missing = cfg.normalize == "speaker" and any(not s for s in speakers)
    rows = max((len(f.train) + len(f.val) for f in folds), default=0)
    return choose_recipe(cfg, fs.inputs, len(folds) * max(1, cfg.seeds), rows, y, missing, other)


def process_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``; ``None`` elsewhere), so that a run can
    report its cold-start cost (imports, loading) and not only the time spent in :func:`train`."""
    try:
        import os

        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def timing(t_call: float, t_process: float | None, t_first: float | None, train_s: float) -> dict[str, Any]:
    """``metrics.json`` ``timing``: seconds from process start (or, where unknown, from the
    :func:`train` call) to the first finished fold and to the end of training + writing, and the
    training time (cross-validation of every repeat)."""
    now = time.perf_counter()
    offset = t_process if t_process is not None else 0.0
    return {"since": "process start" if t_process is not None else "train() call",
            "startup_seconds": round(offset, 3),
            "seconds_to_first_fold": None if t_first is None else round(offset + t_first - t_call, 3),
            "train_seconds": round(train_s, 3), "total_seconds": round(offset + now - t_call, 3)}


def _add_timing(path: Path, recipe: dict[str, Any], t: dict[str, Any]) -> None:
    import json

    from emo.fuse.run import write_json

    m = json.loads(path.read_text(encoding="utf-8"))
    m["recipe"] = recipe
    m["timing"] = t
    write_json(path, m)


def check_class_counts(classes: list[str], labels: np.ndarray, allow_rare: bool = False,
                       progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Count the labelled samples per class, report them, refuse classes with fewer than 2.

    A class with 0 or 1 samples cannot be split into training and evaluation folds and is almost
    always a typo in a label file (``angyr``), which would otherwise silently become a class.

    Args:
        classes: class order. labels: int class index per labelled row (``-1``: unlabelled, ignored).
        allow_rare: only warn (``--allow-rare-classes``). progress: receives the one-line count report.

    Returns:
        ``{class: count}``.

    Raises:
        ValueError: a class with fewer than 2 samples, naming it and its count (unless ``allow_rare``).
    """
    counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    if progress:
        progress("class counts: " + ", ".join(f"{c}={n}" for c, n in counts.items()))
    rare = {c: n for c, n in counts.items() if n < 2}
    if rare:
        what = ", ".join(f"{c!r} ({n} sample{'s' if n != 1 else ''})" for c, n in rare.items())
        if not allow_rare:
            raise ValueError(f"class(es) with fewer than 2 samples: {what}; a typo in the label file? "
                             "Fix the labels, or pass --allow-rare-classes to train anyway")
        if progress:
            progress(f"warning: class(es) with fewer than 2 samples: {what} (--allow-rare-classes)")
    return counts


def add_wheel_metrics(result: CVResult, samples, classes: list[str], wheel_dir: str, threshold: float) -> dict[str, Any]:
    """Add ``wheel_f1``, ``wheel_precision``, ``wheel_recall`` (and ``wheelK_f1``) of the pooled
    out-of-fold predictions (and the test predictions) of a multi-label run to ``result``.

    Predicted words: the classes whose probability exceeds ``threshold``; true words: each sample's
    own ``emotions`` (all of them, also words outside the class list). Metric:
    :func:`emo.fuse.eval.metrics.multilabel_wheel_metrics` (MER 2025 baseline, ``wheel_metric_calculation``).

    Returns:
        the ``config.json`` entry: folder, level, threshold, source.
    """
    from emo.fuse.eval.metrics import multilabel_wheel_metrics
    from emo.lexicon.wheel import load_wheels

    wheels = load_wheels(wheel_dir)

    def words(rows) -> list[list[str]]:
        return [list(samples[i].emotions or ([samples[i].discrete] if samples[i].discrete else [])) for i in rows]

    result.pooled.update(multilabel_wheel_metrics(result.oof["probs"], classes, words(result.oof["index"]), wheels, threshold))
    if result.test is not None and "probs" in result.test:
        result.test.setdefault("metrics", {}).update(
            multilabel_wheel_metrics(result.test["probs"], classes, words(result.test["index"]), wheels, threshold))
    return {"dir": str(wheel_dir), "level": "level1", "threshold": threshold,
            "source": "MER 2025 baseline wheel_metric_calculation (emo.lexicon.wheel)"}


def label_scales(cfg: TrainConfig, fs, lexicon=None) -> dict[str, Any]:
    """What the run's regression outputs mean, for ``config.json``: ``valence_scale`` of a valence
    output trained on the dataset's own labels (MER: [-5, 5]), and ``vad_targets`` (source, scale
    [-1, 1], lexicon file and its SHA-256) of a VAD output."""
    from emo.fuse.model.decoders import task_parts

    _, val, vad = task_parts(cfg.task)
    out: dict[str, Any] = {}
    if val:
        out["valence_scale"] = fs.valence_scale
    if vad and cfg.vad_targets == "lexicon":
        import hashlib

        from emo.lexicon.nrc import resolve_lexicon_path

        path = resolve_lexicon_path(lexicon)
        out["vad_targets"] = {"source": "lexicon", "scale": [-1.0, 1.0], "classes": fs.classes, "lexicon": str(path),
                              "lexicon_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                              "mapping": "NRC-VAD of each discrete label's canonical word, 2x - 1; neutral = origin "
                                         "(emo.lexicon.bridge.label_targets)"}
    elif vad:
        out["vad_targets"] = {"source": "dataset", "scale": None}
    return out


def repeats_summary(results: list[CVResult], fs, y: dict[str, np.ndarray], config: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over repeats of each scalar pooled metric, and a 95 % group-bootstrap interval of
    the repeat-averaged pooled primary metric (UAR for classification, else valence CCC / VAD CCC).

    The resampling unit is the speaker when every evaluated sample has one (the held-out speaker
    for leave-one-speaker-out), else the sample (:mod:`emo.fuse.eval.stats`)."""
    from emo.fuse.eval.metrics import evaluate as _evaluate
    from emo.fuse.eval.stats import bootstrap_ci, class_metric, mean_std

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
    speakers = fs.speakers  # a property building a list: once, not per row
    spk = [speakers[i] for i in idx]
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
    write_report(path.parent, json.loads((path.parent / "config.json").read_text(encoding="utf-8")), m)  # with the repeats
