"""``emo fuse train``'s Python entry point: :func:`train` (stores in, run directory out).

One sequence: check the run rules (:func:`emo.fuse.config.check_run_rules`) -> load features and
targets (:func:`load_run_data`) -> resolve the protocol -> per repeat: the fold plan
(:func:`emo.fuse.training.plan.make_plan`), its recipe (:func:`plan_recipe`), the paper methods'
plug-ins (:func:`emo.fuse.training.plan.apply_methods`), the config (:func:`run_config`), the fit
(:func:`emo.fuse.training.plan.fit_plan`), warnings (:func:`finish_repeat`) -> write the run
directory (:func:`write_runs`, :func:`emo.fuse.run.save_run`).

The pieces live in their own modules: :mod:`emo.fuse.config` (:class:`TrainConfig`),
:mod:`emo.fuse.training.minibatch` (minibatches), :mod:`emo.fuse.training.fit` (one model's fit loop),
:mod:`emo.fuse.eval.cv` (:func:`train_cv`, :class:`CVResult`), :mod:`emo.fuse.eval.protocols` (folds),
:mod:`emo.fuse.eval.report` (tables). Their public names are re-exported here for scripts written
against the single ``emo.fuse.training.train`` module.
"""

from __future__ import annotations

import shutil
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
from emo.fuse.eval.protocols import fold_warnings, make_folds, protocol_record
from emo.fuse.eval.report import results_table, write_report
from emo.fuse.eval.runcheck import check_run_out
from emo.fuse.run import save_run
from emo.fuse.training.batched import fit_warnings
from emo.fuse.training.plan import FoldPlan, MethodContext, RunData, apply_methods, fit_plan, make_plan
from emo.fuse.training.resume import FoldCache, partial_dir
from emo.fuse.training.threads import pinned_threads, thread_record

__all__ = ["TrainConfig", "CVResult", "train_cv", "train", "fit_model", "predict_model", "average_outputs", "evaluate",
           "make_folds", "results_table"]


#: Seed offset between repeats (``--repeats``): repeat r trains with seed ``seed + REPEAT_STRIDE * r``,
#: so its per-fold seeds (``seed + s`` for ``s < seeds``) never overlap another repeat's.
REPEAT_STRIDE = 1000


def fingerprint(config: dict[str, Any], folds: list, test_idx: np.ndarray | None) -> dict[str, Any]:
    """Everything that changes a fold's numbers: the run config without its record-only keys
    (``command``, torch ``threads``), a hash of every fold's rows and the trainer's code and library
    versions (:func:`emo.fuse.training.resume.trainer_code`; see :mod:`emo.fuse.training.resume`)."""
    from emo.fuse.training.resume import rows_hash, trainer_code

    fp = {k: v for k, v in config.items() if k not in ("command",)}
    fp["training"] = {k: v for k, v in config["training"].items() if k != "threads"}
    fp["fold_rows"] = [[f.name, rows_hash(f.train), rows_hash(f.val), rows_hash(f.test)] for f in folds]
    fp["test_rows"] = None if test_idx is None else rows_hash(test_idx)
    fp["trainer_code"] = trainer_code()
    return fp


def train(features_dir: str | Path, dataset: str, features: list[str], cfg: TrainConfig, protocol: str = "auto",
          out: str | Path | None = None, align: str = "strict", test_splits: list[str] | None = None,
          command: list[str] | None = None, progress: Callable[[str], None] | None = None,
          repeats: int = 1, resume: bool = True, restart: bool = False, pseudo_labels: str | Path | None = None,
          pseudo_weight: float = 0.5, lexicon: str | Path | None = None,
          train_splits: list[str] | None = None, allow_rare_classes: bool = False, augmented: list[str] | None = None,
          evaluate_on: str | None = None) -> tuple[CVResult, dict[str, Any]]:
    """Load features and labels, then per repeat: the fold plan (:mod:`emo.fuse.training.plan`), its
    recipe, the paper methods' plug-ins, the fit; then write the run directory.

    Args:
        features_dir, dataset, features: see :func:`emo.fuse.training.data.load_features` (a name with
            per-fold HLFT stores ``NAME.fold<K>.h5`` trains fold K on fold K's store).
        cfg: :class:`TrainConfig`. protocol: ``"auto"`` (leave-one-speaker-out when every sample has a
            speaker, else stratified 5-fold, stated as speaker-dependent), ``"K"``, ``"speaker"``, ``"split"``
            or ``"file:PATH"`` (:func:`emo.fuse.eval.protocols.resolve_protocol`); recorded as ``protocol``
            in ``config.json`` and ``metrics.json`` (:func:`emo.fuse.eval.protocols.protocol_record`).
        out: run directory (``None``: write nothing). align: ``strict``/``intersect``. command: argv recorded.
        test_splits: partitions held out as the test set (default for ``split``: ``["test"]``);
            train_splits: evaluation partitions (e.g. MER 2023's ``test1``) allowed into the CV pool.
        repeats: N repetitions of the whole cross-validation (seed ``seed + 1000 r``; folds redrawn).
            Repeat 0 is written to ``out``, the others to ``out/repeats/seed-S/``; ``out/metrics.json`` gains
            ``repeats`` (mean ± std) and ``interval`` (95 % group bootstrap, :mod:`emo.fuse.eval.stats`).
        pseudo_labels, pseudo_weight: ``pseudo.csv`` of ``emo fuse pseudo-label``, its rows' loss weight.
        lexicon: NRC-VAD file (UniVA's valence-arousal and eq. 8 matrix; lexicon VAD targets).
        resume: keep finished folds in ``<parent>/.<out>.partial/`` and continue from them
            (:mod:`emo.fuse.training.resume`); restart: discard them first.
        allow_rare_classes: accept classes with fewer than 2 labelled samples (else refused).
        augmented, evaluate_on: augmented copies that join training / replace the evaluated clips
            (:mod:`emo.fuse.methods.augmented`).

    Returns: (result of repeat 0, its config).

    Raises:
        ValueError: options that exclude each other (:func:`emo.fuse.config.check_run_rules`), rare classes.
        emo.fuse.training.resume.ResumeError: a partial run with a different configuration exists (named).
    """
    from emo.fuse.methods.tune import find_fold_stores

    clock = RunClock(progress, watch=out is not None)
    progress = clock.progress
    rules = dict(repeats=repeats, pseudo_labels=pseudo_labels, augmented=augmented or (), evaluate_on=evaluate_on)
    check_run_rules(cfg, **rules)
    if out is not None:
        check_run_out(out)  # a bad --out fails now, not after hours of training
    fold_stores = find_fold_stores(features_dir, dataset, features)  # HLFT: one store per fold (store layout)
    if fold_stores:
        check_run_rules(cfg, **rules, fold_stores=True)
    data = load_run_data(features_dir, dataset, features, cfg, protocol, align, test_splits, train_splits, lexicon,
                         allow_rare_classes, fold_stores, progress)
    if out is not None and restart and partial_dir(out).exists():
        shutil.rmtree(partial_dir(out))
    if progress:
        progress(f"protocol: {data.why}")
    runs = []
    clock.start_training()
    for r in range(repeats):
        say = progress if r == 0 else None
        cfg_r = replace(cfg, seed=cfg.seed + REPEAT_STRIDE * r)
        plan = make_plan(data, cfg_r.seed)
        cfg_r, recipe = plan_recipe(cfg_r, data, plan, pseudo_labels, augmented or evaluate_on, say)
        ctx = MethodContext(features_dir, dataset, data.fs, cfg_r, data.classes, lexicon, pseudo_labels, pseudo_weight,
                            list(augmented or []), evaluate_on, say)
        plan = apply_methods(plan, ctx)
        config = run_config(data, plan, cfg_r, recipe, command=command, features_dir=features_dir, align=align,
                            lexicon=lexicon, repeat=(r, repeats), say=say)
        cache = FoldCache(out, fingerprint(config, plan.folds, plan.test_idx), part=f"seed-{cfg_r.seed}") if (out is not None and resume) else None
        if progress and repeats > 1:
            progress(f"repeat {r + 1}/{repeats} (seed {cfg_r.seed})")
        with pinned_threads(cfg_r.threads):  # torch and numpy's / scipy's BLAS pools, as recorded
            if r == 0:
                clock.threads = thread_record()
            result = fit_plan(plan, data.fs.inputs, cfg_r, recipe, n_classes_of(config), progress, cache)
        finish_repeat(result, config, (r, repeats), say)
        runs.append((result, config, plan))
    clock.stop_training()
    result, config, _ = runs[0]
    if cfg.emotion_wheel:  # MER-FG: the emotion-wheel F1 of the pooled out-of-fold multi-label predictions
        config["emotion_wheel"] = add_wheel_metrics(result, data.fs.samples, config["classes"], cfg.emotion_wheel,
                                                    config["training"]["threshold"])
    if out is not None:
        write_runs(out, runs, data, clock, resume)
    elif repeats > 1:
        config["repeats_summary"] = repeats_summary([r[0] for r in runs], data.fs, data.y, config)
    return result, config


def load_run_data(features_dir: str | Path, dataset: str, features: list[str], cfg: TrainConfig, protocol: str, align: str,
                  test_splits: list[str] | None, train_splits: list[str] | None, lexicon, allow_rare_classes: bool,
                  fold_stores: dict[str, list[Path]], progress: Callable[[str], None] | None) -> RunData:
    """Load the features (per-fold HLFT stores through :func:`emo.fuse.methods.tune.load_fold_store_features`),
    build the targets (:func:`load_targets`), check the class counts, resolve the protocol."""
    from emo.fuse.eval.protocols import resolve_for
    from emo.fuse.training.data import load_features

    if fold_stores:
        from emo.fuse.methods.tune import load_fold_store_features

        fs = load_fold_store_features(features_dir, dataset, features, fold_stores, align, frames=cfg.frames)
    else:
        fs = load_features(features_dir, dataset, features, align, frames=cfg.frames)
    if test_splits is None:
        test_splits = ["test"] if protocol == "split" else []
    from emo.fuse.training.data import label_source

    y, mask, classes, label_space = load_targets(fs, cfg, test_splits, lexicon, allow_rare_classes, progress,
                                                 label_source(features_dir, dataset))
    rows = np.flatnonzero(mask)
    if cfg.task in ("discrete", "discrete+valence") and fs.classes:
        check_class_counts(fs.classes, y["discrete"][rows], allow_rare_classes, progress)
    used, why = resolve_for(protocol, fs, rows, test_splits, train_splits)  # --folds auto: speakers known -> speaker
    return RunData(fs, y, mask, classes, label_space, used, protocol, why, test_splits, train_splits, fold_stores)


def load_targets(fs, cfg: TrainConfig, test_splits: list[str], lexicon=None, allow_rare_classes: bool = False,
                 progress: Callable[[str], None] | None = None, source: str | None = None,
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, list[str] | None, Any]:
    """``(y, mask, classes, label_space)`` of ``cfg.task``: :func:`emo.fuse.training.data.targets`, or for
    ``multilabel`` :func:`emo.fuse.methods.semi.multilabel_targets` with the label list from the words of
    the CV pool (every clip outside ``test_splits``; with ``cfg.emotion_wheel`` one class per
    emotion-wheel word family, MER-FG). ``label_space`` is ``None`` for the other tasks. Multi-label
    words carried by fewer than 2 clips or unknown to the wheel are refused unless
    ``allow_rare_classes``; empty word sets are warned (printed through ``progress``; ``source`` names
    the label file in messages)."""
    from emo.fuse.training.data import targets

    if cfg.task != "multilabel":
        y, mask = targets(fs.samples, cfg.task, fs.classes, cfg.vad_targets, lexicon)
        return y, mask, fs.classes, None
    from emo.fuse.methods.semi import multilabel_targets

    wheels = None
    if cfg.emotion_wheel:  # MER-FG: one class per word family (emotion-wheel word forms, format.csv)
        from emo.lexicon.wheel import load_wheels

        wheels = load_wheels(cfg.emotion_wheel)
    sp = np.asarray([s or "" for s in fs.splits], dtype=object)
    y, mask, label_space = multilabel_targets(fs.samples, np.flatnonzero(~np.isin(sp, test_splits)), wheels=wheels,
                                              allow_rare=allow_rare_classes, source=source or "",
                                              log=progress)  # rare/unknown words refused, empty word sets warned (issue 25)
    return y, mask, label_space.classes, label_space



#: Settings of the minibatch AdamW recipe that the full-batch L-BFGS recipe does not use.
ADAMW_ONLY = ("lr", "epochs", "batch_size", "patience", "weight_decay", "dropout")


def lbfgs_ignored(cfg: TrainConfig, n_train: int = 0) -> list[str]:
    """The AdamW-only settings (:data:`ADAMW_ONLY`) of ``cfg`` that a run on the L-BFGS recipe would
    silently not use, as ``--option value`` strings: those that differ both from their default and
    from the default resolved for ``n_train`` training rows (a config read back from a run's
    ``config.json`` holds resolved values), a dropout of 0 excepted (the recipe's own)."""
    from dataclasses import fields

    default = {f.name: f.default for f in fields(TrainConfig)}
    resolved = TrainConfig().resolve(n_train)
    out = []
    for name in ADAMW_ONLY:
        v = getattr(cfg, name)
        if v not in (default[name], getattr(resolved, name)) and not (name == "dropout" and v == 0.0):
            out.append(f"--{name.replace('_', '-')} {v}")
    return out


def plan_recipe(cfg: TrainConfig, data: RunData, plan: FoldPlan, pseudo_labels=None, augmented=None,
                say: Callable[[str], None] | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The repeat's recipe (:func:`select_recipe`, printed through ``say``) chosen on the protocol's folds,
    before the methods add rows, and ``cfg`` with it and its auto settings resolved
    (:meth:`TrainConfig.resolve` from the largest training part)."""
    recipe = select_recipe(cfg, data.fs, plan.folds, data.y, plan.fold_stores, pseudo_labels, augmented)
    if recipe["recipe"] == "lbfgs":  # deterministic: dropout off, one model per fold unless --seeds says otherwise
        ignored = lbfgs_ignored(cfg, max((len(f.train) for f in plan.folds), default=0))
        if ignored:  # a setting the user changed that this recipe does not use: said, and recorded in the run
            recipe = {**recipe, "ignored": ignored}
            if say:
                say(f"warning: recipe lbfgs does not use {', '.join(ignored)} (full-batch L-BFGS, no dropout; "
                    "--recipe adamw trains with them)")
        cfg = replace(cfg, recipe="lbfgs", dropout=0.0, seeds=cfg.seeds or 1)
    elif cfg.recipe == "auto":
        cfg = replace(cfg, recipe="adamw")
    if say:
        say(f"recipe: {recipe['recipe']} ({recipe['reason']})")
    return cfg.resolve(max((len(f.train) for f in plan.folds), default=0)), recipe  # the run records the settings used


def run_config(data: RunData, plan: FoldPlan, cfg: TrainConfig, recipe: dict[str, Any], *, command, features_dir, align: str,
               lexicon, repeat: tuple[int, int], say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The repeat's ``config.json``: inputs, task, model, training settings, the protocol record of the
    plan's clip folds, fold warnings (printed through ``say``), recipe, input contract, label scales,
    the methods' ``info``, the multi-label label space and (``repeat`` = (r, of), of > 1) the repeat."""
    from emo.fuse.model.decoders import task_parts

    fs, classes = data.fs, data.classes
    disc = task_parts(cfg.task)[0]
    n_classes = len(classes) if disc else 0
    config = {
        "command": command, "dataset": fs.dataset, "features_dir": str(features_dir),
        "feature_specs": [inp.spec for inp in fs.inputs], "inputs": [inp.to_dict() for inp in fs.inputs],
        "task": cfg.task, "classes": classes if disc else None,
        "model": cfg.model_args(fs.inputs, n_classes), "training": asdict(cfg),
        "protocol": {**protocol_record(data.requested, data.protocol, data.why, plan.clip_folds, fs.speakers, cfg.normalize),
                     "seed": cfg.seed, "align": align, "test_splits": data.test_splits,
                     "train_splits": list(data.train_splits or []),
                     "n_samples": len(fs.names), "n_labelled": int(data.mask.sum())},
    }
    warn = fold_warnings(plan.clip_folds, plan.y_true.get("discrete") if disc else None, n_classes, classes if disc else None)
    label_warn = data.label_space.warnings if data.label_space is not None else []  # printed by multilabel_targets
    if warn or label_warn:
        config["warnings"] = label_warn + warn
        for w in warn if say else ():
            say(f"warning: {w}")
    config["recipe"] = recipe
    config["input_contract"] = input_contract(fs.inputs, fs.samples, cfg.normalize)  # what emo score must match
    config.update(label_scales(cfg, fs, lexicon))
    config.update(plan.info)
    if data.label_space is not None:
        config["label_space"] = data.label_space.to_dict()
    if repeat[1] > 1:
        config["repeat"] = {"index": repeat[0], "of": repeat[1], "seed": cfg.seed}
    return config


def n_classes_of(config: dict[str, Any]) -> int:
    """Classes of a run config's discrete / multi-label output (0 for regression only)."""
    return len(config["classes"]) if config.get("classes") else 0


def finish_repeat(result: CVResult, config: dict[str, Any], repeat: tuple[int, int],
                  say: Callable[[str], None] | None = None) -> None:
    """After a repeat's fit: L2-path (:func:`emo.fuse.training.batched.fit_warnings`) and
    degenerate-prediction warnings into ``config`` (printed through ``say``),
    the protocol and warnings onto ``result``, its label among repeats, and a tuned threshold (ζ chosen on
    inner-validation rows) as the run's threshold."""
    classes = config["classes"]
    degenerate = fit_warnings(result.folds) + degenerate_warnings(result.pooled, classes, "pooled out-of-fold")
    if result.test is not None and "metrics" in result.test:
        degenerate += degenerate_warnings(result.test["metrics"], classes, "held-out test")
    if degenerate:
        config["warnings"] = config.get("warnings", []) + degenerate
        for w in degenerate if say else ():
            say(f"warning: {w}")
    result.protocol, result.warnings = config["protocol"], list(config.get("warnings", []))
    r, repeats = repeat
    if repeats > 1:
        result.label = f"repeat {r + 1} of {repeats} (seed {config['training']['seed']}); the other repeats are summarised below"
    if result.threshold_tuning is not None:
        config["training"]["threshold"] = result.threshold_tuning["threshold"]
        config["threshold_tuning"] = result.threshold_tuning


def write_runs(out: str | Path, runs: list, data: RunData, clock: "RunClock", resume: bool) -> None:
    """Write repeat 0 to ``out`` and the others to ``out/repeats/seed-S/`` (run directory, fold names for
    ``emo fuse pseudo-label``), the repeats summary and the timing into ``out/metrics.json``, and drop the
    partial folds (``resume``)."""
    from emo.fuse.methods.pseudo import write_fold_names

    for k, (res, config, plan) in enumerate(runs):
        d = Path(out) if k == 0 else Path(out) / "repeats" / f"seed-{config['protocol']['seed']}"
        save_run(d, config, res, plan.names, plan.folds, plan.y_true)
        write_fold_names(d, plan.names, plan.folds, plan.test_idx)  # what the run saw, for emo fuse pseudo-label
    config = runs[0][1]
    if len(runs) > 1:
        summary = repeats_summary([r[0] for r in runs], data.fs, data.y, config)
        config["repeats_summary"] = summary
        _add_to_metrics(Path(out) / "metrics.json", summary)
    _add_timing(Path(out) / "metrics.json", config["recipe"], {**clock.timing(), "threads": clock.threads})
    if resume:
        shutil.rmtree(partial_dir(out), ignore_errors=True)


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


class RunClock:
    """The timing of one :func:`train` call for ``metrics.json``: the call's start, the first finished
    fold (seen in the progress lines: ``progress`` wraps the caller's callback, or is ``None`` when
    there is neither a callback nor a run directory to time), and the training seconds."""

    def __init__(self, progress: Callable[[str], None] | None = None, watch: bool = False):
        self.t_call = time.perf_counter()
        self.t_process = process_seconds()
        self.first_fold: float | None = None
        self.t_train, self.train_s = 0.0, 0.0
        self.threads: dict[str, Any] | None = None  # emo.fuse.training.threads.thread_record() while training
        self.user = progress
        self.progress = self._progress if (progress is not None or watch) else None

    def _progress(self, line: str) -> None:
        if self.first_fold is None and line.startswith("fold "):  # "fold 1/K ..." marks the time to first fold
            self.first_fold = time.perf_counter()
        if self.user is not None:
            self.user(line)

    def start_training(self) -> None:
        self.t_train = time.perf_counter()

    def stop_training(self) -> None:
        self.train_s = time.perf_counter() - self.t_train

    def timing(self) -> dict[str, Any]:
        """:func:`timing` now."""
        return timing(self.t_call, self.t_process, self.first_fold, self.train_s)


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
