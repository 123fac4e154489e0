"""Layer-ablation sweeps (``emo fuse sweep``): one probe per layer, or per window of consecutive
layers, of one encoder, across folds, with a resumable on-disk cell cache.

A *cell* is one (layer window, fold) pair: a head trained on the window's layers with
:func:`emo.fuse.eval.cv.train_cv` on that fold only. Each finished cell is written to
``<out>/cells/<window>-fold<k>.json`` (``<window>-seed<r>.json`` for ``--folds split``) together
with a key hashing everything that determines it (store provenance, layers, fold indices,
training settings); a rerun reuses every cell whose key matches and trains only the rest, and
reads from the store only the layers those remaining cells need (one sequential HDF5 read per
layer, :meth:`emo.extract.store.FeatureStore.read`).

Outputs in ``<out>``: ``sweep.csv`` (one row per window: mean and std over folds of every
scalar metric), ``sweep.json`` (settings, rows, cells, the selected window) and ``sweep.png``
(mean score against layer with fold standard-deviation error bars, like the layer-wise figure of
Zhao, Chen, Li, Jiang, Xie, "Improving Multimodal Emotion Recognition by Leveraging Acoustic
Adaptation and Visual Alignment", MRAC '24).

Protocols: ``--folds K`` (stratified k-fold) and ``--folds speaker`` (leave-one-speaker-out)
score each window on every fold's evaluation part. ``--folds split`` follows "select on dev,
report test": each model trains on ``train``, stops early on ``dev`` and is scored on ``dev``
(the selection score) and on ``test`` (the reported score); since there is a single fold, the
repeats are seeds (cells (window, seed), one model each) and the error bars are the standard
deviation over seeds.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.fsio import write_csv, write_json, write_with
from emo.fuse.config import TrainConfig
from emo.fuse.options import SWEEP_DEFAULTS

#: Default selection metric per task (higher is better unless :func:`lower_is_better`).
DEFAULT_METRIC = {"discrete": "waf", "valence": "valence_ccc", "vad": "vad_ccc", "discrete+valence": "mer2023_score",
                  "discrete+vad": "waf"}



class SweepError(ValueError):
    """Unusable sweep settings (window larger than the layer list, unknown metric, ...)."""


def default_metric(task: str) -> str:
    """The selection metric of ``task``: WAF (discrete), valence CCC, VAD CCC, or the MER 2023
    combined score ``WAF - 0.25 * MSE_valence`` (discrete+valence).

    Raises:
        SweepError: unknown task.
    """
    if task not in DEFAULT_METRIC:
        raise SweepError(f"unknown task {task!r}; use one of {', '.join(DEFAULT_METRIC)}")
    return DEFAULT_METRIC[task]


def lower_is_better(metric: str) -> bool:
    """True for error metrics (``*mse``, ``*mae``, ``*l2``, ``hamming_loss``), False for scores (WAF, UAR, CCC, F1, ...)."""
    return metric.endswith(("mse", "mae", "l2", "hamming_loss"))


def multilabel_metric(wheels: bool) -> str:
    """The selection metric of a multi-label sweep (``--task multilabel``): the emotion-wheel F1
    (``wheel_f1``, the MER-FG score) when ``--emotion-wheel`` is given, else the micro-F1 of the
    labels whose probability exceeds ζ (``--threshold``)."""
    return "wheel_f1" if wheels else "micro_f1"


def _multilabel_cell_metrics(probs: np.ndarray, index: np.ndarray, multihot: np.ndarray, true_words: list, classes: list[str],
                             threshold: float, wheels) -> tuple[dict[str, float], dict[str, list]]:
    """Metrics of one multi-label cell's predictions and their compact record.

    Args:
        probs: float (n, C) softmax outputs of the cell's evaluated rows ``index`` (n,).
        multihot: (N, C) targets of all rows; true_words: per row of the dataset, its own words
            (the wheel metric scores them all, also words outside the class list, as ``emo fuse train``).
        threshold: ζ. wheels: :class:`emo.lexicon.wheel.EmotionWheels` or None.

    Returns:
        (metrics: :func:`emo.fuse.methods.multilabel.multilabel_metrics` of ``p > ζ`` (at least one label
        per row) and, with wheels, :func:`emo.fuse.eval.metrics.multilabel_wheel_metrics` (the same
        label sets, as ``emo fuse train``); record ``{"index", "labels", "top"}``: per row the class indices
        with ``p > ζ`` and the argmax, from which every metric can be recomputed).
    """
    from emo.fuse.eval.metrics import evaluate, multilabel_wheel_metrics

    p = np.asarray(probs, dtype=np.float64)
    idx = np.asarray(index, dtype=np.int64)
    m = _scalars(evaluate({"probs": p}, {"multihot": multihot[idx]}, len(classes), threshold))
    if wheels is not None:
        m.update(multilabel_wheel_metrics(p, classes, [true_words[i] for i in idx], wheels, threshold))
    rec = {"index": idx.tolist(), "labels": [np.flatnonzero(row > threshold).tolist() for row in p],
           "top": p.argmax(1).tolist()}
    return m, rec


def layer_windows(layers: list[str], window: int = 1, stride: int = 1) -> list[tuple[str, ...]]:
    """Consecutive windows of ``window`` layers over ``layers`` (in the given order), moved by ``stride``.

    ``layer_windows(["0", ..., "24"], 3)`` → ``("0","1","2"), ("1","2","3"), ..., ("22","23","24")``.
    A final partial window is never produced.

    Raises:
        SweepError: ``window`` or ``stride`` < 1, or ``window`` larger than the number of layers.
    """
    if window < 1 or stride < 1:
        raise SweepError(f"--window and --stride must be >= 1 (got window {window}, stride {stride})")
    if window > len(layers):
        raise SweepError(f"--window {window} is larger than the {len(layers)} layer(s) selected")
    return [tuple(layers[i:i + window]) for i in range(0, len(layers) - window + 1, stride)]


def sized_windows(layers: list[str], dims: dict[str, int], window: int = 1, stride: int = 1) -> list[tuple[str, ...]]:
    """:func:`layer_windows` within each run of consecutive layers of one size (``dims``: layer ->
    feature dimension), so no window mixes sizes: fer_xception's ``1,2,3,4,logits`` (16/32/64/128/7-d)
    with ``--window 1`` gives five windows, CLIP's ``0..24`` and ``proj`` never share a window.

    Raises:
        SweepError: bad ``window``/``stride``, or no run of equal-sized layers as long as ``window``
            (the sizes are named).
    """
    runs: list[list[str]] = []
    for k in layers:
        if runs and dims[runs[-1][-1]] == dims[k]:
            runs[-1].append(k)
        else:
            runs.append([k])
    if len(runs) <= 1:  # one size: the plain windows (and their messages)
        return layer_windows(layers, window, stride)
    if window < 1 or stride < 1:
        raise SweepError(f"--window and --stride must be >= 1 (got window {window}, stride {stride})")
    out = [w for run in runs if len(run) >= window for w in layer_windows(run, window, stride)]
    if not out:
        raise SweepError(f"--window {window}: no {window} consecutive layers of one size "
                         f"({', '.join(f'{r[0]}..{r[-1]}: {dims[r[0]]}-d' for r in runs)})")
    return out


def window_label(win: tuple[str, ...]) -> str:
    """Short label of a window: ``"18"`` for one layer, ``"16-21"`` for a numeric run, else keys joined by ``+``."""
    if len(win) == 1:
        return win[0]
    if all(k.isdigit() for k in win) and [int(k) for k in win] == list(range(int(win[0]), int(win[-1]) + 1)):
        return f"{win[0]}-{win[-1]}"
    return "+".join(win)


def _window_center(win: tuple[str, ...], pos: int) -> float:
    return float(np.mean([int(k) for k in win])) if all(k.isdigit() for k in win) else float(pos)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _idx_hash(a: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(a, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass
class _Cell:
    window: tuple[str, ...]
    wpos: int
    rep: int  # fold index, or seed repeat for split
    rep_name: str
    path: Path
    key: str


def _scalars(m: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_sweep(features_dir: str | Path, dataset: str, feature: str, layers: str | list[str] | None = None,
              window: int = 1, stride: int = 1, cfg=None, protocol: str = "auto", metric: str | None = None,
              out: str | Path = "runs/sweep", align: str = "strict", test_splits: list[str] | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None,
              train_splits: list[str] | None = None, label_columns: list[str] | None = None,
              joint: str = "none", allow_rare_classes: bool = False) -> dict[str, Any]:
    """Train one probe per layer window and fold, reusing cached cells; write sweep.csv/json/png.

    Multi-task (``cfg.task`` = ``A+B`` label columns, ``label_columns``/``joint`` as in ``emo fuse
    train``; :mod:`emo.fuse.methods.multitask`): every cell trains all tasks, its metrics are each task's
    (``<task>_waf``, ...) and ``jrbm``, the default selection metric.

    Multi-label (``cfg.task == "multilabel"``, as ``emo fuse train --task multilabel``; UniVA KL
    loss, sequential AdamW loop): the label list comes from the words of the samples outside the
    test partitions (through the emotion-wheel word forms when ``cfg.emotion_wheel`` is set); each
    cell reports Jaccard accuracy (``ml_accuracy``), ``hamming_loss``, ``micro_f1`` and
    ``macro_f1`` of the labels with ``p > cfg.threshold`` (ζ; at least one per clip) and, with
    wheels, the emotion-wheel F1 (``wheel_f1``, ``wheel_precision``, ``wheel_recall``,
    ``wheelK_f1``; MER 2025 baseline, as ``emo fuse train``); the selection metric defaults to
    ``wheel_f1`` with wheels, else ``micro_f1`` (:func:`multilabel_metric`). Each cell file keeps its
    predicted label sets (``predictions``: ``index``, ``labels`` with ``p > ζ``, ``top`` argmax).

    Steps: settings (:func:`_sweep_settings`) -> samples and targets from the manifest
    (:func:`_sweep_labels`) -> the protocol's folds or seeds (:func:`_sweep_reps`) -> one cell per
    (window, fold) with its key (:func:`_plan_cells`) -> reuse finished cells (:func:`_reuse_cells`)
    -> train the rest (:func:`_train_cells`) -> one row per window (:func:`_window_rows`) -> write
    ``sweep.csv``, ``sweep.png``, ``sweep.json`` (:func:`_sweep_summary`).

    Args:
        features_dir: the ``--out`` of ``emo extract``; dataset: its sub-folder.
        feature: one encoder spec ``NAME[=SOURCE][:LAYERS]`` (see :func:`emo.fuse.training.data.parse_feature_spec`).
        layers: layer spec (``"0-24"``) or list of keys; overrides the spec's layers; default all stored.
        window, stride: see :func:`layer_windows`. A window's layers enter the head as separate
            tokens (the linear probe concatenates them, AFG attends over them).
        cfg: :class:`emo.fuse.config.TrainConfig` (default: :data:`SWEEP_DEFAULTS`).
        protocol: ``"auto"`` (leave-one-speaker-out when every sample has a speaker, else 5-fold;
            :func:`emo.fuse.eval.protocols.resolve_protocol`), ``"K"``, ``"speaker"``, ``"split"`` or
            ``"file:PATH"`` (see module docstring); ``sweep.json`` holds its ``protocol_record``.
        allow_rare_classes: as ``emo fuse train``: classes with fewer than 2 labelled samples are
            refused unless this is set.
        Layers of different sizes are read one size at a time and windows never mix sizes
        (:func:`sized_windows`).
        metric: the score plotted and used to select a window (default :func:`default_metric` of the task).
        out: output directory (``cells/``, ``sweep.csv``, ``sweep.json``, ``sweep.png``).
        align: passed to :func:`emo.fuse.training.data.load_features`.
        test_splits: for ``split``, the reported partition(s) (default ``["test"]``); for ``K`` and
            ``speaker``, partitions held out of the folds and scored by every fold's probe
            (``test_<metric>`` columns, mean over folds).
        train_splits: evaluation partitions (:data:`emo.fuse.eval.protocols.EVAL_SPLITS`) allowed into
            the folds (by default they never enter training).
        progress: show a tqdm bar over the cells (stderr).
        log: optional callable receiving one line per trained cell.

    Returns:
        The ``sweep.json`` dict: ``settings``, ``rows`` (per window: ``window``, ``layers``,
        ``center``, ``n``, ``<metric>_mean``/``_std`` for every scalar metric, ``test_<metric>_*``
        for split), ``cells``, ``best`` (the selected window), ``metric``, ``trained`` and
        ``reused`` cell counts.

    Raises:
        SweepError: bad window/metric; emo.fuse.training.data.FeatureError, emo.extract.store.StoreError,
        emo.fuse.eval.protocols.ProtocolError, emo.extract.datasets.DatasetError: unusable data
        (the messages name the file).
    """
    from emo.extract.store import FeatureStore, store_path
    from emo.fuse.training.data import parse_feature_spec, store_layers

    cfg, multi_task, task_specs, layers = _sweep_settings(cfg, label_columns, joint, layers)
    spec = parse_feature_spec(feature) if isinstance(feature, str) else feature
    out = Path(out)
    store = FeatureStore(store_path(features_dir, dataset, spec.name))
    keys = store_layers(spec, store, layers)
    windows = sized_windows(keys, {k: int(store.dims[k]) for k in keys}, window, stride)
    metric = metric or ("jrbm" if multi_task else None if cfg.task == "multilabel" else default_metric(cfg.task))
    lab, cfg, metric = _sweep_labels(features_dir, dataset, store, cfg, metric, protocol, align, test_splits, multi_task,
                                     task_specs, allow_rare_classes, log)
    lab.label_columns, lab.joint = label_columns, joint
    reps = _sweep_reps(lab, cfg, protocol, dataset, test_splits, train_splits, multi_task, log)
    cells, cell_cfg, prov = _plan_cells(windows, reps, store, lab, cfg, align, out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    results, todo = _reuse_cells(cells)
    _train_cells(todo, len(cells), results, store, spec.name, keys, lab, reps, cfg, cell_cfg, metric, progress, log)
    table = _window_rows(windows, reps, results, lab, cfg, out)
    return _sweep_summary(out, table, cells, todo, results, lab, reps, cfg, metric, spec.name, keys, store, prov,
                          window, stride, train_splits)


def _sweep_settings(cfg, label_columns: list[str] | None, joint: str, layers):
    """The sweep's training settings (multi-task: the first task trains as ``discrete``), its
    multi-task string and task specs (or ``None``), and ``layers`` parsed. Raises SweepError."""
    from emo.extract.layers import LayerSpecError, parse_layers
    from emo.fuse.methods.multitask import MultiConfig, is_multitask, parse_tasks

    cfg = cfg or TrainConfig(**SWEEP_DEFAULTS)
    multi_task = cfg.task if is_multitask(cfg.task, label_columns) else None
    task_specs = None
    if multi_task:
        task_specs = parse_tasks(multi_task, label_columns)
        MultiConfig(joint).validate()
        cfg = replace(cfg, task="discrete")
    cfg.validate()
    if cfg.layer_weights:
        raise SweepError("a layer sweep probes layers separately; --layer-weights does not apply")
    if isinstance(layers, str):
        try:
            layers = parse_layers(layers)
        except LayerSpecError as e:
            raise SweepError(f"--layers: {e}") from None
    return cfg, multi_task, task_specs, layers


@dataclass
class _Labels:
    """A sweep's samples and targets (from the manifest, no feature read): the feature set ``fs``
    (names, samples, classes; no blocks), ``y``/``mask``, the multi-task ``tasks``, the multi-label
    ``label_space``, ``true_words`` and ``wheels``, and the run's multi-task options."""

    fs: Any
    y: dict[str, np.ndarray]
    mask: np.ndarray
    multi_task: str | None = None
    tasks: list = field(default_factory=list)
    label_space: Any = None
    true_words: list | None = None
    wheels: Any = None
    label_columns: list[str] | None = None
    joint: str = "none"

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.mask)

    @property
    def multilabel(self) -> bool:
        return self.label_space is not None

    @property
    def names(self) -> list[str]:
        return self.fs.names


def _manifest_samples(features_dir: str | Path, dataset: str, store, align: str):
    """(manifest metadata, the store's samples in manifest order), aligned like ``load_features``."""
    from emo.extract.datasets.base import read_manifest
    from emo.fuse.training.data import FeatureError

    meta, samples = read_manifest(Path(features_dir) / dataset)
    in_store = set(store.names)
    unknown = in_store - {s.name for s in samples}
    if unknown:
        raise FeatureError(f"{store.path}: {len(unknown)} sample(s) not in the manifest {Path(features_dir) / dataset / 'samples.csv'} "
                           f"(e.g. {sorted(unknown)[0]!r}); re-run emo extract")
    samples = [s for s in samples if s.name in in_store]
    if align == "strict" and len(samples) != len(in_store):
        raise FeatureError(f"{store.path}: store and manifest differ")
    if not samples:
        raise FeatureError(f"{store.path}: no samples")
    return meta, samples


def _sweep_labels(features_dir, dataset: str, store, cfg, metric: str | None, protocol: str, align: str,
                  test_splits: list[str] | None, multi_task: str | None, task_specs, allow_rare_classes: bool,
                  log: Callable[[str], None] | None):
    """(:class:`_Labels`, cfg, metric): the targets of ``cfg.task`` as ``emo fuse train`` builds them
    (multi-label: the label list from the words of the CV pool, the default metric, the sequential
    AdamW loop; the class-count refusal for discrete tasks). Raises SweepError on a metric the
    multi-label task does not compute."""
    from emo.fuse.model.decoders import task_parts
    from emo.fuse.training.data import FeatureSet, targets

    meta, samples = _manifest_samples(features_dir, dataset, store, align)
    fs = FeatureSet([s.name for s in samples], {}, [], samples, meta.get("classes"), meta.get("dataset", dataset))
    lab = None
    if cfg.task == "multilabel":  # as emo fuse train: the label list from the words of the CV pool (outside the test partitions)
        lab, cfg, metric = _multilabel_labels(fs, cfg, metric, protocol, test_splits, allow_rare_classes, log)
    elif multi_task:
        from emo.fuse.methods.multitask import task_targets

        tasks, y, mask = task_targets(samples, task_specs, fs.classes)
        y["discrete"] = y[tasks[0].name]  # folds are stratified on the first task
        lab = _Labels(fs, y, mask, multi_task, tasks)
    else:
        lab = _Labels(fs, *targets(samples, cfg.task, fs.classes, cfg.vad_targets))
    if task_parts(cfg.task)[0] and not multi_task and not lab.multilabel and fs.classes:  # the refusal emo fuse train applies
        from emo.fuse.training.train import check_class_counts

        check_class_counts(fs.classes, lab.y["discrete"][lab.rows], allow_rare_classes, log)
    return lab, cfg, metric


def _multilabel_labels(fs, cfg, metric: str | None, protocol: str, test_splits: list[str] | None, allow_rare_classes: bool, log):
    """:func:`_sweep_labels` for ``--task multilabel``."""
    from emo.fuse.methods.multilabel import sample_words
    from emo.fuse.methods.semi import multilabel_targets

    wheels = None
    if cfg.emotion_wheel:  # MER-FG: one class per word family (word forms), emotion-wheel F1 per cell
        from emo.lexicon.wheel import load_wheels

        wheels = load_wheels(cfg.emotion_wheel)
    sp_all = np.asarray([s or "" for s in fs.splits], dtype=object)
    held_splits = list(test_splits or (["test"] if protocol == "split" else []))
    y, mask, label_space = multilabel_targets(fs.samples, np.flatnonzero(~np.isin(sp_all, held_splits)),
                                              wheels=wheels, allow_rare=allow_rare_classes, log=log)
    fs.classes = label_space.classes
    true_words = [sample_words(s) or [] for s in fs.samples]
    if metric is None:
        metric = multilabel_metric(wheels is not None)
    known = ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1") + (
        ("wheel_f1", "wheel_precision", "wheel_recall", *(f"wheel{k}_f1" for k in range(1, 6))) if wheels is not None else ())
    if metric not in known:
        raise SweepError(f"--metric {metric!r} is not computed for --task multilabel"
                         + (" without --emotion-wheel DIR" if metric.startswith("wheel") else "") + f"; available: {', '.join(known)}")
    if cfg.optimizer == "lbfgs" or cfg.batched:  # KL loss on soft targets: the sequential AdamW loop (emo.fuse.methods.univa.soft_fit)
        if log and cfg.optimizer == "lbfgs":
            log("AdamW instead of L-BFGS: multi-label training (KL loss on normalised multi-hot targets) runs in the sequential loop")
        cfg = replace(cfg, optimizer="adamw", batched=False)
    return _Labels(fs, y, mask, label_space=label_space, true_words=true_words, wheels=wheels), cfg, metric


@dataclass
class _Reps:
    """The repeats of every window: ``(index, name, fold)`` for each fold (or, for ``split``, each seed of
    the one train/dev fold), the resolved ``protocol`` (``requested``, ``why``), held-out ``test_idx``
    and ``test_splits``, and ``pooled`` (an evaluation fold of fewer than 2 samples: windows are scored
    on their pooled out-of-fold predictions)."""

    reps: list[tuple[int, str, Any]]
    protocol: str
    requested: str
    why: str
    test_idx: np.ndarray | None
    test_splits: list[str] | None
    pooled: bool

    @property
    def tag(self) -> str:
        return "seed" if self.protocol == "split" else "fold"

    @property
    def split(self) -> bool:
        return self.protocol == "split"

    def fold_of(self) -> dict[int, Any]:
        return {r: f for r, _, f in self.reps}


def _sweep_reps(lab: _Labels, cfg, protocol: str, dataset: str, test_splits: list[str] | None,
                train_splits: list[str] | None, multi_task: str | None, log: Callable[[str], None] | None) -> _Reps:
    """The protocol's folds (printing fold warnings), or for ``split`` one train/dev fold repeated over
    ``cfg.seeds`` seeds (once for a convex L-BFGS probe). Raises ProtocolError: split without dev."""
    from emo.fuse.eval.protocols import DEV_SPLITS, Fold, ProtocolError, fold_warnings, make_folds, predefined_split, resolve_for
    from emo.fuse.model.decoders import task_parts

    fs, y, rows = lab.fs, lab.y, lab.rows
    requested = protocol
    protocol, why = resolve_for(protocol, fs, rows, list(test_splits or []), train_splits)
    if log:
        log(f"protocol: {why}")
    if protocol == "split":
        test_splits = test_splits or ["test"]
        splits = fs.splits  # a property building a list: once, not per row
        f0 = predefined_split([splits[i] for i in rows], None if "discrete" not in y else y["discrete"][rows], test_splits, cfg.seed)[0]
        sp = np.asarray([s or "" for s in fs.splits], dtype=object)
        if not np.isin(sp[rows[f0.val]], DEV_SPLITS).all():
            raise ProtocolError(f"--folds split in a sweep selects on the dev partition; {dataset} has none "
                                f"(partitions: {sorted(set(sp) - {''})})")
        # train on train, stop early and select on dev, report the test partition(s)
        fold = Fold("split", rows[f0.train], rows[f0.val], rows[f0.val])
        n_reps = cfg.seeds
        if cfg.optimizer == "lbfgs" and cfg.seeds > 1 and not multi_task:
            from emo.fuse.training.batched import lbfgs_unsupported

            if lbfgs_unsupported(cfg) is None:  # a convex probe fitted to its optimum: every seed gives the same model
                n_reps = 1
                if log:
                    log(f"--seeds {cfg.seeds} with the L-BFGS probe: one model per window (its optimum does not depend on the seed)")
        return _Reps([(r, f"seed{cfg.seed + r}", fold) for r in range(n_reps)], protocol, requested, why, rows[f0.test],
                     test_splits, False)
    folds, test_idx = make_folds(protocol, fs, y, rows, cfg.seed, list(test_splits or []), train_splits)
    disc = task_parts(cfg.task)[0]
    for w in fold_warnings(folds, y.get("discrete") if disc else None, len(fs.classes) if disc else 0, fs.classes if disc else None):
        if log:
            log(f"warning: {w}")
    # leave-one-out-like folds (an evaluation fold of fewer than 2 samples): per-fold scores are
    # meaningless, so every window is scored on its pooled out-of-fold predictions (as emo fuse
    # train reports them) and selected on those; the cells then keep their predictions
    return _Reps([(k, f.name, f) for k, f in enumerate(folds)], protocol, requested, why, test_idx, test_splits,
                 min(len(f.test) for f in folds) < 2)


def _plan_cells(windows: list[tuple[str, ...]], reps: _Reps, store, lab: _Labels, cfg, align: str, out: Path):
    """(cells, the cells' training settings, the store provenance): one :class:`_Cell` per (window,
    repeat), its file under ``out/cells`` and its key (a hash of everything that determines it)."""
    prov = {k: store.attrs.get(k) for k in ("encoder", "source", "weights_hash", "pooling", "dtype", "created")}
    cell_cfg = replace(cfg, seeds=1) if reps.split else cfg
    base_key = {"store": prov, "n": len(lab.names), "task": lab.multi_task or cfg.task, "protocol": reps.protocol, "align": align,
                **({"label_columns": list(lab.label_columns or []), "joint": lab.joint} if lab.multi_task else {}),
                **({"classes": list(lab.fs.classes)} if lab.multilabel else {}),  # ζ and the wheel folder are in cfg
                "test": None if reps.test_idx is None else _idx_hash(reps.test_idx)}
    cells: list[_Cell] = []
    for wpos, win in enumerate(windows):
        for r, rname, fold in reps.reps:
            c = asdict(replace(cell_cfg, seed=cfg.seed + r)) if reps.split else asdict(cell_cfg)
            key = _hash({**base_key, "layers": list(win), "fold": [rname, _idx_hash(fold.train), _idx_hash(fold.val), _idx_hash(fold.test)],
                         "cfg": {k: v for k, v in c.items() if k != "device"}})
            cells.append(_Cell(win, wpos, r, rname, out / "cells" / f"{_slug(window_label(win))}-{reps.tag}{r}.json", key))
    return cells, cell_cfg, prov


def _reuse_cells(cells: list[_Cell]) -> tuple[dict[tuple[int, int], dict[str, Any]], list[_Cell]]:
    """(finished cells whose file holds the same key, by (window position, repeat); the cells to train)."""
    results: dict[tuple[int, int], dict[str, Any]] = {}
    todo = []
    for c in cells:
        try:
            d = json.loads(c.path.read_text(encoding="utf-8"))
            if d.get("key") == c.key:
                results[(c.wpos, c.rep)] = d
                continue
        except (OSError, json.JSONDecodeError):
            pass
        todo.append(c)
    return results, todo


def _train_cells(todo: list[_Cell], n_cells: int, results: dict, store, name: str, keys: list[str], lab: _Labels, reps: _Reps,
                 cfg, cell_cfg, metric: str, progress: bool, log: Callable[[str], None] | None) -> None:
    """Train the cells of ``todo`` into ``results`` (and their files), one layer size at a time (fer_xception
    16/32/64/128/7, CLIP 0-24 + proj): only the layers of that size the remaining cells use are read;
    batched (every cell at once, :func:`emo.fuse.training.batched.train_cells`) or one cell after another."""
    from tqdm.auto import tqdm

    from emo.fuse.training.data import store_modality
    from emo.fuse.training.inputs import FeatureInput

    bar = tqdm(total=n_cells, initial=n_cells - len(todo), desc=f"sweep {name}", unit="cell",
               disable=not progress or not todo, dynamic_ncols=True)
    by_dim: dict[int, list[_Cell]] = {}
    for c in todo:
        by_dim.setdefault(int(store.dims[c.window[0]]), []).append(c)
    fold_of = reps.fold_of()
    for dim, group in by_dim.items():
        need = [k for k in keys if any(k in c.window for c in group)]
        x = store.read(need, lab.names)  # (N, L_needed, D), only the layers of this size the remaining cells use
        col = {k: j for j, k in enumerate(need)}
        modality = store_modality(name, store.attrs)
        batched = None
        if (cell_cfg.batched or cell_cfg.optimizer == "lbfgs") and not lab.multi_task:  # every remaining cell at once (emo.fuse.training.batched)
            from emo.fuse.training.batched import train_cells

            rcfg = cell_cfg.resolve(max(len(f.train) for f in fold_of.values()))
            batched = train_cells(x, FeatureInput(name, modality, [], dim),
                                  [([col[k] for k in c.window], fold_of[c.rep], cfg.seed + c.rep if reps.split else cfg.seed)
                                   for c in group], rcfg, lab.y, _n_classes(lab, cfg), lab.fs.speakers, reps.test_idx, log)
        for ci, c in enumerate(group):
            if batched is not None:
                d = _batched_cell(c, batched[ci], reps)
            else:
                d = _train_cell(c, x[:, [col[k] for k in c.window]], FeatureInput(name, modality, list(c.window), dim),
                                fold_of[c.rep], lab, reps, cfg, cell_cfg)
            write_json(c.path, d)
            results[(c.wpos, c.rep)] = d
            if metric not in d["metrics"]:
                bar.close()
                raise SweepError(f"--metric {metric!r} is not computed for task {cfg.task!r}; available: {', '.join(d['metrics'])}")
            if batched is None:
                bar.set_postfix_str(f"{window_label(c.window)} {c.rep_name} {metric} {d['metrics'][metric]:.4f}")
            bar.update(1)
            if log:
                log(f"{window_label(c.window)} {c.rep_name}: {metric} {d['metrics'][metric]:.4f}")
    bar.close()


def _n_classes(lab: _Labels, cfg) -> int:
    from emo.fuse.model.decoders import task_parts

    return len(lab.fs.classes) if task_parts(cfg.task)[0] else 0


def _batched_cell(c: _Cell, fr: dict[str, Any], reps: _Reps) -> dict[str, Any]:
    """The cell file of one cell of :func:`emo.fuse.training.batched.train_cells`."""
    d = {"key": c.key, "window": window_label(c.window), "layers": list(c.window), reps.tag: c.rep,
         "fold_name": c.rep_name, **{k: fr[k] for k in ("n_train", "n_val", "n_test", "epochs", "seconds")},
         "metrics": _scalars(fr["metrics"])}
    if "test_metrics" in fr:
        d["test_metrics"] = _scalars(fr["test_metrics"])
    if reps.pooled:
        d["oof"] = {k: np.asarray(v).tolist() for k, v in fr["pred"].items()}
    return d


def _train_cell(c: _Cell, xw: np.ndarray, inp, fold, lab: _Labels, reps: _Reps, cfg, cell_cfg) -> dict[str, Any]:
    """Train one cell on its fold (:func:`emo.fuse.eval.cv.train_cv`, or the multi-task trainer) and
    return its cell file (multi-label: metrics recomputed from the probabilities, label sets kept)."""
    from emo.fuse.eval.cv import train_cv

    blocks, inputs = {inp.name: xw}, [inp]
    ccfg = replace(cell_cfg, seed=cfg.seed + c.rep) if reps.split else cell_cfg
    y, speakers = lab.y, lab.fs.speakers
    if lab.multi_task:
        from emo.fuse.methods.multitask import MultiConfig, train_multitask_cv

        res = train_multitask_cv(blocks, inputs, {t.name: y[t.name] for t in lab.tasks}, lab.tasks, [fold], ccfg,
                                 MultiConfig(lab.joint), speakers, reps.test_idx)
    else:
        res = train_cv(blocks, inputs, y, [fold], ccfg, _n_classes(lab, cfg), speakers, reps.test_idx)
    fr = res.folds[0]
    d = {"key": c.key, "window": window_label(c.window), "layers": list(c.window), reps.tag: c.rep,
         "fold_name": c.rep_name, "n_train": fr["n_train"], "n_val": fr["n_val"], "n_test": fr["n_test"],
         "epochs": fr["epochs"], "seconds": fr["seconds"], "metrics": _scalars(fr["metrics"])}
    if res.test is not None and "metrics" in res.test:
        d["test_metrics"] = _scalars(res.test["metrics"])
    if lab.multilabel:  # recomputed from the probabilities (+ wheel F1); the label sets at ζ kept for checking
        d["metrics"], d["predictions"] = _multilabel_cell_metrics(res.oof["probs"], res.oof["index"], y["multihot"],
                                                                  lab.true_words, lab.fs.classes, ccfg.threshold, lab.wheels)
        if res.test is not None and "probs" in res.test and lab.mask[res.test["index"]].all():
            d["test_metrics"], d["test_predictions"] = _multilabel_cell_metrics(
                res.test["probs"], res.test["index"], y["multihot"], lab.true_words, lab.fs.classes, ccfg.threshold, lab.wheels)
    if reps.pooled:
        d["oof"] = {k: np.asarray(v).tolist() for k, v in res.oof.items() if k != "fold"}
    return d


def _window_rows(windows: list[tuple[str, ...]], reps: _Reps, results: dict, lab: _Labels, cfg, out: Path) -> list[dict[str, Any]]:
    """One ``sweep.csv`` row per window: mean and std over its cells of every scalar metric (and
    ``test_`` metric), or with ``reps.pooled`` the scores of its pooled out-of-fold predictions."""
    from emo.fuse.model.decoders import task_parts

    table = []
    for wpos, win in enumerate(windows):
        cs = [results[(wpos, r)] for r, _, _ in reps.reps]
        row: dict[str, Any] = {"window": window_label(win), "layers": " ".join(win), "center": _window_center(win, wpos), "n": len(cs)}
        for prefix, field_ in (("", "metrics"), ("test_", "test_metrics")):
            if all(field_ in c for c in cs):
                for k in cs[0][field_]:
                    v = np.array([c[field_][k] for c in cs], dtype=np.float64)
                    row[f"{prefix}{k}_mean"] = float(v.mean())
                    row[f"{prefix}{k}_std"] = float(v.std())
        if reps.pooled:  # scores of the pooled out-of-fold predictions replace the means of one-sample folds
            from emo.fuse.eval.metrics import evaluate

            if not all("oof" in c for c in cs):
                raise SweepError(f"{out / 'cells'}: cells without out-of-fold predictions; rerun with a new --out")
            y, disc = lab.y, task_parts(cfg.task)[0]
            idx = np.concatenate([np.asarray(c["oof"]["index"], dtype=np.int64) for c in cs])
            outs = {k: np.concatenate([np.asarray(c["oof"][k], dtype=np.float32) for c in cs]) for k in cs[0]["oof"] if k != "index"}
            needed = [k for k in ("discrete", "valence", "vad", "multihot") if k in y and (k != "discrete" or disc)]
            if lab.multilabel:
                pooled_m, _ = _multilabel_cell_metrics(outs["probs"], idx, y["multihot"], lab.true_words, lab.fs.classes,
                                                       cfg.threshold, lab.wheels)
            else:
                pooled_m = _scalars(evaluate(outs, {k: y[k][idx] for k in needed}, _n_classes(lab, cfg), cfg.threshold))
            for k, val in pooled_m.items():
                row[f"{k}_mean"], row[f"{k}_std"] = val, 0.0
            row["pooled"] = True
        table.append(row)
    return table


def _sweep_summary(out: Path, table: list[dict[str, Any]], cells: list[_Cell], todo: list[_Cell], results: dict, lab: _Labels,
                   reps: _Reps, cfg, metric: str, name: str, keys: list[str], store, prov: dict[str, Any], window: int,
                   stride: int, train_splits: list[str] | None) -> dict[str, Any]:
    """Select the best window on ``metric``, write ``sweep.csv``, ``sweep.png`` and ``sweep.json`` and
    return the ``sweep.json`` dict. Raises SweepError: a metric the rows do not have."""
    from emo.fuse.eval.protocols import protocol_record
    from emo.fuse.training.data import FeatureSpec

    if f"{metric}_mean" not in table[0]:
        raise SweepError(f"--metric {metric!r} is not computed for task {cfg.task!r}; "
                         f"available: {', '.join(k[:-5] for k in table[0] if k.endswith('_mean') and not k.startswith('test_'))}")
    sign = -1.0 if lower_is_better(metric) else 1.0
    best = max(table, key=lambda r: sign * r[f"{metric}_mean"])
    protocol = reps.protocol
    selected_on = "dev" if protocol == "split" else ("leave-one-speaker-out folds" if protocol == "speaker" else f"{protocol}-fold CV")
    if reps.pooled:
        selected_on += " (pooled out-of-fold predictions: an evaluation fold holds fewer than 2 samples)"
    fs, wheels = lab.fs, lab.wheels
    summary = {
        "command": None, "dataset": fs.dataset, "feature": str(FeatureSpec(name, store.attrs.get("source") or None, tuple(keys))),
        "store": prov, "metric": metric, "higher_is_better": not lower_is_better(metric), "protocol": protocol,
        "protocol_record": protocol_record(reps.requested, protocol, reps.why, [f for _, _, f in reps.reps], fs.speakers, cfg.normalize),
        "selected_on": selected_on, "window": window, "stride": stride, "training": asdict(cfg),
        "n_samples": len(lab.names), "n_labelled": int(lab.mask.sum()), "rows": table,
        **({"tasks": [t.as_dict() for t in lab.tasks], "joint": lab.joint} if lab.multi_task else {}),
        **({"label_space": lab.label_space.to_dict(), "threshold": cfg.threshold,
            "emotion_wheel": None if wheels is None else {"dir": str(cfg.emotion_wheel), "level": "level1",
                                                          "source": "MER 2025 baseline wheel_metric_calculation (emo.lexicon.wheel)"}}
           if lab.multilabel else {}),
        **({"n_test_partition": int(len(reps.test_idx)), "test_splits": reps.test_splits} if reps.test_idx is not None else {}),
        "train_splits": list(train_splits or []),
        "best": {"window": best["window"], "layers": best["layers"], metric: best[f"{metric}_mean"], f"{metric}_std": best[f"{metric}_std"],
                 **({f"test_{metric}": best[f"test_{metric}_mean"], f"test_{metric}_std": best[f"test_{metric}_std"]}
                    if f"test_{metric}_mean" in best else {})},
        "cells": [{k: v for k, v in results[(c.wpos, c.rep)].items() if k != "key"} for c in cells],
        "trained": len(todo), "reused": len(cells) - len(todo),
        "models_trained": int(sum(len(results[(c.wpos, c.rep)]["epochs"]) for c in todo)),
    }
    _write_table(out / "sweep.csv", table)
    plot_sweep(summary, out / "sweep.png")
    write_json(out / "sweep.json", summary)
    return summary


def _write_table(path: Path, table: list[dict[str, Any]]) -> None:
    write_csv(path, [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in table])


_METRIC_NAMES = {"waf": "WAF", "uar": "UAR", "accuracy": "accuracy", "valence_ccc": "valence CCC", "valence_mse": "valence MSE",
                 "micro_f1": "micro-F1 (p > ζ)", "macro_f1": "macro-F1 (p > ζ)", "ml_accuracy": "Jaccard accuracy (p > ζ)",
                 "hamming_loss": "Hamming loss (p > ζ)", "wheel_f1": "emotion-wheel F1 (MER-FG)",
                 "mer2023_score": "MER 2023 score (WAF − 0.25·MSE)", "vad_ccc": "VAD CCC (mean)", "vad_mse": "VAD MSE (mean)"}


def plot_sweep(summary: dict[str, Any], path: str | Path) -> Path:
    """Plot mean score against layer (window centre) with ±1 std error bars over folds (or seeds
    for ``split``, with the test score as a second line); the selected window is starred.
    Written with matplotlib's Agg backend (no display needed); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metric = summary["metric"]
    rows = summary["rows"]
    xs = np.array([r["center"] for r in rows])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(rows) + 3), 3.6), dpi=120)
    split = summary["protocol"] == "split"
    label = f"dev (selection), ± std over {rows[0]['n']} seeds" if split else f"mean ± std over {rows[0]['n']} folds"
    ax.errorbar(xs, [r[f"{metric}_mean"] for r in rows], yerr=[r[f"{metric}_std"] for r in rows], marker="o", ms=4,
                capsize=3, lw=1.4, label=label)
    if split and f"test_{metric}_mean" in rows[0]:
        ax.errorbar(xs, [r[f"test_{metric}_mean"] for r in rows], yerr=[r[f"test_{metric}_std"] for r in rows], marker="s",
                    ms=4, capsize=3, lw=1.2, ls="--", label="test (reported)")
    best = next(r for r in rows if r["window"] == summary["best"]["window"])
    ax.plot([best["center"]], [best[f"{metric}_mean"]], marker="*", ms=14, color="tab:red", ls="none",
            label=f"selected: {best['window']}")
    numeric = all(r["layers"].replace(" ", "").isdigit() for r in rows)
    ax.set_xlabel("layer" if summary["window"] == 1 else f"layer (centre of {summary['window']}-layer window)")
    if not numeric:
        ax.set_xticks(xs, [r["window"] for r in rows], rotation=45, ha="right")
    elif len(rows) <= 30:
        ax.set_xticks(xs if summary["window"] == 1 else np.round(xs, 1))
    ax.set_ylabel(_METRIC_NAMES.get(metric, metric))
    head = summary["training"]["head"]
    ax.set_title(f"{summary['dataset']} · {summary['feature'].split('=')[0].split(':')[0]} · {head} probe · selected on {summary['selected_on']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)
    return path


def sweep_repeats(features_dir: str | Path, dataset: str, feature: str, layers: str | list[str] | None = None,
                  window: int = 1, stride: int = 1, cfg=None, protocol: str = "auto", metric: str | None = None,
                  out: str | Path = "runs/sweep", repeats: int = 2, progress: bool = True, **kw: Any) -> dict[str, Any]:
    """:func:`run_sweep` ``repeats`` times with seeds ``seed + 1000 r`` (k-fold assignments and inner
    validation splits redrawn), repeat 0 in ``out`` and the others in ``out/repeats/seed-S/``, and the
    per-window mean ± std over the repeats of the selection metric; the window is selected on the
    repeat mean (issue 18: one seed is one draw).

    Returns:
        ``{"metric", "repeats", "seeds", "rows": [{"window", "values", "mean", "std", "n"}], "best"}``;
        also written to ``out/sweep_repeats.json``.

    Raises:
        As :func:`run_sweep`; ValueError: ``repeats < 2``.
    """
    from dataclasses import replace

    from emo.fuse.eval.stats import mean_std

    if repeats < 2:
        raise ValueError(f"sweep_repeats needs --repeats >= 2, got {repeats}")
    cfg = cfg or TrainConfig(**SWEEP_DEFAULTS)
    summaries, seeds = [], []
    for r in range(repeats):
        cfg_r = replace(cfg, seed=cfg.seed + 1000 * r)
        out_r = Path(out) if r == 0 else Path(out) / "repeats" / f"seed-{cfg_r.seed}"
        summaries.append(run_sweep(features_dir, dataset, feature, layers, window, stride, cfg_r, protocol, metric, out_r,
                                   progress=progress, **kw))
        seeds.append(cfg_r.seed)
    m = summaries[0]["metric"]
    key = f"test_{m}_mean" if protocol == "split" and f"test_{m}_mean" in summaries[0]["rows"][0] else f"{m}_mean"
    sel_key = f"{m}_mean"
    rows = []
    for i, row in enumerate(summaries[0]["rows"]):
        sel = [s["rows"][i][sel_key] for s in summaries]
        rep = [s["rows"][i][key] for s in summaries]
        rows.append({"window": row["window"], "selection_values": sel, "values": rep, **mean_std(rep),
                     "selection_mean": float(np.mean(sel))})
    pick = (min if lower_is_better(m) else max)(rows, key=lambda r: r["selection_mean"])
    res = {"metric": m, "reported": key, "repeats": repeats, "seeds": seeds, "rows": rows,
           "best": {"window": pick["window"], "mean": pick["mean"], "std": pick["std"]},
           "selected_on": summaries[0].get("selected_on")}
    write_json(Path(out) / "sweep_repeats.json", res)
    return res
