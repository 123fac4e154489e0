"""Honest evaluation rows of a run or an ensemble, bootstrap intervals, and ``emo fuse compare``.

The *evaluation rows* of a directory are the predictions that no model (and no ensemble weight)
was fitted on: the out-of-fold rows of a cross-validated run (``predictions.csv`` rows whose
fold is not ``test``), or its ``test`` rows when it was trained with ``--folds split`` (whose
out-of-fold rows are the test partition) or holds a held-out test partition and nothing else;
for an ``emo fuse ensemble`` directory, its nested ``validation`` rows (or its ``test`` rows
when the validation was a single dev group); for an ``emo fuse search`` directory, its nested
predictions (``nested_predictions.csv``: every outer-test row, predicted by the configuration
chosen inside its outer fold). See :mod:`emo.fuse.eval.stats` for the bootstrap.

Resampling unit (``group``): ``fold`` (the evaluation group of each row: the held-out speaker
under leave-one-speaker-out), ``speaker`` (from the dataset manifest), ``sample``, or ``auto``:
the held-out speaker for leave-one-speaker-out runs (fold names ``speaker=...``), the speaker
when the manifest has speakers for every row, else the sample.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.fuse.eval.stats import N_BOOT, StatsError, bootstrap_ci, class_metric, paired_bootstrap

#: Metrics the comparison and interval commands understand, per output kind.
CLASS_METRICS = ("uar", "waf", "accuracy")
VALENCE_METRICS = ("valence_ccc", "valence_mse")
#: Every metric emo fuse compare takes.
METRICS = CLASS_METRICS + VALENCE_METRICS


@dataclass
class EvalRows:
    """A directory's evaluation rows (see the module docstring).

    Attributes:
        path: the run, ensemble or search directory. kind: ``run``, ``ensemble`` or ``search``. task,
            classes: as trained.
        names: (N,) sample names. folds: (N,) fold name per row.
        y: (N,) int class index (-1 unknown) or None. probs: (N, C) float64 or None.
        valence, valence_true: (N,) float64 or None.
        config: the run's ``config.json`` (for an ensemble, its first member's), to find the manifest.
    """

    path: Path
    kind: str
    task: str
    classes: list[str] | None
    names: list[str]
    folds: np.ndarray
    y: np.ndarray | None
    probs: np.ndarray | None
    valence: np.ndarray | None
    valence_true: np.ndarray | None
    config: dict[str, Any]


def _num(v: str | None) -> float:
    return float(v) if v not in ("", None) else math.nan


def read_eval_rows(path: str | Path) -> EvalRows:
    """Read the evaluation rows of a run directory (``config.json``), an ensemble directory
    (``ensemble.json``) or a search directory (``search.json`` and ``nested_predictions.csv``).

    Raises:
        StatsError: not a run, ensemble or search directory, or no evaluation rows (the message names the file).
    """
    path = Path(path)
    pred = path / "predictions.csv"
    if (path / "search.json").is_file():
        return _search_rows(path)
    if (path / "ensemble.json").is_file():
        from emo import fsio

        try:
            meta = fsio.read_sealed_json(path / "ensemble.json", "ensemble result")
        except fsio.ChecksumError as e:
            raise StatsError(str(e)) from None
        kind, task, classes = "ensemble", meta["task"], meta.get("classes")
        first = Path(meta["runs"][0]) / "config.json"
        config = json.loads(first.read_text(encoding="utf-8")) if first.is_file() else {}
    elif (path / "config.json").is_file():
        from emo.fuse.run import RunError, read_config

        try:
            config = read_config(path / "config.json")
        except RunError as e:
            raise StatsError(str(e)) from None
        kind, task, classes = "run", config.get("task", "discrete"), config.get("classes")
        meta = {}
    else:
        raise StatsError(f"{path}: neither a run directory (config.json) nor an ensemble directory (ensemble.json)")
    if not pred.is_file():
        raise StatsError(f"{pred} not found: not a finished emo run")
    with open(pred, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if kind == "ensemble":
        nested = meta.get("validation", {}).get("nested", False)
        rows = [r for r in rows if r.get("part") == ("validation" if nested else "test")]
    else:
        oof = [r for r in rows if r.get("fold") != "test"]
        split = config.get("protocol", {}).get("folds") == "split"
        rows = [r for r in rows if r.get("fold") == "test"] if (split or not oof) else oof
    if not rows:
        raise StatsError(f"{pred}: no evaluation rows (out-of-fold, nested validation or test)")
    y = probs = val = val_true = None
    if classes and f"prob_{classes[0]}" in rows[0]:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(r.get("true", ""), -1) for r in rows], dtype=np.int64)
        probs = np.array([[_num(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    if "valence" in rows[0]:
        val = np.array([_num(r["valence"]) for r in rows], dtype=np.float64)
        val_true = np.array([_num(r.get("valence_true")) for r in rows], dtype=np.float64)
    return EvalRows(path, kind, task, classes, [r["name"] for r in rows],
                    np.asarray([r.get("fold", "") for r in rows], dtype=object), y, probs, val, val_true, config)


def _search_rows(path: Path) -> EvalRows:
    """The nested predictions of an ``emo fuse search`` directory (see :func:`read_eval_rows`)."""
    meta = json.loads((path / "search.json").read_text(encoding="utf-8"))
    pred = path / "nested_predictions.csv"
    if not pred.is_file():
        raise StatsError(f"{pred} not found: a search written before emo kept its nested predictions; rerun it "
                         "(its cached units are reused)")
    with open(pred, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = meta.get("classes") or []
    if not rows:
        raise StatsError(f"{pred}: no evaluation rows")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(r.get("label", ""), -1) for r in rows], dtype=np.int64)
    probs = np.array([[_num(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    config = {"features_dir": meta.get("features_dir"), "dataset": meta.get("dataset"), "protocol": {"folds": meta.get("protocol")}}
    return EvalRows(path, "search", "discrete", classes, [r["name"] for r in rows],
                    np.asarray([r.get("fold", "") for r in rows], dtype=object), y, probs, None, None, config)


def fold_difference(names_a: list[str], folds_a, names_b: list[str], folds_b) -> str | None:
    """Why two runs' evaluation folds do not agree (``None``: same partition of the same rows into folds).

    Fold labels need not be equal (``fold-0`` vs ``speaker=03``), the partition must: every fold of A holds
    exactly the rows of one fold of B. Rows that one run evaluates and the other does not are reported too.
    """
    fa = {n: str(f) for n, f in zip(names_a, folds_a)}
    fb = {n: str(f) for n, f in zip(names_b, folds_b)}
    if set(fa) != set(fb):
        return f"their evaluation rows differ ({len(fa)} vs {len(fb)}, {len(set(fa) & set(fb))} shared)"
    ka, kb = len(set(fa.values())), len(set(fb.values()))
    if ka != kb:
        return f"{ka} folds vs {kb} folds"
    pairs = {(fa[n], fb[n]) for n in fa}
    if len(pairs) != ka:
        return f"both have {ka} folds, but they hold different rows (other --seed or --folds)"
    return None


def metric_fn(ev: EvalRows, metric: str, order: np.ndarray | None = None) -> Callable[[np.ndarray], float]:
    """``rows -> pooled metric`` over ``ev``'s rows (reordered by ``order`` first, if given).

    Raises:
        StatsError: the metric does not apply to the run's outputs, or unlabelled rows.
    """
    from emo.fuse.eval.metrics import ccc

    idx = np.arange(len(ev.names)) if order is None else order
    if metric in CLASS_METRICS:
        if ev.probs is None:
            raise StatsError(f"{ev.path}: --metric {metric} needs class posteriors; this run has none")
        y, p = ev.y[idx], ev.probs[idx].argmax(1)
        if (y < 0).any():
            raise StatsError(f"{ev.path}: {int((y < 0).sum())} evaluation rows have no label")
        n = len(ev.classes)

        def f(rows: np.ndarray) -> float:
            return class_metric(y[rows], p[rows], n, metric)
        return f
    if metric in VALENCE_METRICS:
        if ev.valence is None:
            raise StatsError(f"{ev.path}: --metric {metric} needs valence outputs; this run has none")
        v, t = ev.valence[idx], ev.valence_true[idx]
        if not np.isfinite(t).all():
            raise StatsError(f"{ev.path}: {int((~np.isfinite(t)).sum())} evaluation rows have no valence label")
        if metric == "valence_mse":
            return lambda rows: float(((v[rows] - t[rows]) ** 2).mean())
        return lambda rows: float(ccc(t[rows], v[rows]))
    raise StatsError(f"unknown metric {metric!r}; use one of {', '.join(CLASS_METRICS + VALENCE_METRICS)}")


def default_metric(ev: EvalRows) -> str:
    """``uar`` for runs with class posteriors, else ``valence_ccc``."""
    return "uar" if ev.probs is not None else "valence_ccc"


def groups_for(ev: EvalRows, group: str = "auto") -> tuple[np.ndarray, str]:
    """Resampling unit per evaluation row and its name (see the module docstring).

    Raises:
        StatsError: unknown unit, or ``speaker`` without speakers for every row in the manifest.
    """
    if group not in ("auto", "fold", "speaker", "sample"):
        raise StatsError(f"--group must be auto, fold, speaker or sample, not {group!r}")
    if group == "fold" or (group == "auto" and all(str(f).startswith("speaker=") for f in ev.folds)):
        return ev.folds, "fold" if group == "fold" else "speaker (held-out fold)"
    if group in ("speaker", "auto"):
        spk = _speakers(ev)
        if spk is not None:
            return spk, "speaker"
        if group == "speaker":
            raise StatsError(f"{ev.path}: --group speaker, but the dataset manifest has no speaker for every evaluation row")
    return np.asarray(ev.names, dtype=object), "sample"


def _speakers(ev: EvalRows) -> np.ndarray | None:
    from emo.extract.datasets.base import DatasetError, read_manifest

    fd, ds = ev.config.get("features_dir"), ev.config.get("dataset")
    if not fd or not ds:
        return None
    try:
        _, samples = read_manifest(Path(fd) / ds)
    except (DatasetError, OSError, ValueError):
        return None
    by = {s.name: s.speaker for s in samples}
    spk = [by.get(n) for n in ev.names]
    return None if any(s is None for s in spk) else np.asarray(spk, dtype=object)


def interval(path: str | Path, metric: str | None = None, group: str = "auto", n_boot: int = N_BOOT, seed: int = 0,
             level: float = 0.95) -> dict[str, Any]:
    """Group-bootstrap interval of a directory's pooled evaluation metric.

    Returns:
        :func:`emo.fuse.eval.stats.bootstrap_ci`'s dict plus ``metric``, ``group`` (unit) and ``n``.

    Raises:
        StatsError: see :func:`read_eval_rows`, :func:`metric_fn`, :func:`groups_for`.
    """
    ev = read_eval_rows(path)
    metric = metric or default_metric(ev)
    g, unit = groups_for(ev, group)
    res = bootstrap_ci(metric_fn(ev, metric), g, n_boot, level, seed)
    return {"metric": metric, "group": unit, "n": len(ev.names), **res}


def compare(path_a: str | Path, path_b: str | Path, metric: str | None = None, group: str = "auto", n_boot: int = N_BOOT,
            seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Paired group bootstrap of ``metric(A) - metric(B)`` on the evaluation rows both share.

    Returns:
        ``a``, ``b`` (paths), ``metric``, ``group`` (unit), ``n``, ``a_value``, ``b_value``,
        ``difference``, ``low``, ``high`` (percentile interval of the difference), ``p_le_0``
        (fraction of replicates with A not better, for ``*_mse`` metrics read "not worse"),
        ``level``, ``n_boot``, ``n_groups``, ``seed``; ``a_recipe``, ``b_recipe`` (:func:`run_recipe`)
        and, when they differ, ``note`` saying so (the difference then includes the recipe).

    Raises:
        StatsError: different tasks or classes, different evaluation rows or labels (named).
    """
    return compare_rows(read_eval_rows(path_a), read_eval_rows(path_b), metric, group, n_boot, seed, level)


def compare_rows(a: EvalRows, b: EvalRows, metric: str | None = None, group: str = "auto", n_boot: int = N_BOOT,
                 seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """:func:`compare` of two sets of evaluation rows already read (a run's, or rows built from another
    tool's predictions, e.g. a scikit-learn peer's in ``bench/bench_fuse.py``). Returns and raises as
    :func:`compare`; the resampling unit comes from ``a``."""
    if a.classes != b.classes:
        raise StatsError(f"{b.path}: classes {b.classes}, but {a.path} has {a.classes}")
    if set(a.names) != set(b.names):
        shared = len(set(a.names) & set(b.names))
        raise StatsError(f"{b.path}: its {len(b.names)} evaluation rows differ from the {len(a.names)} of {a.path} "
                         f"({shared} shared); compare runs of the same dataset and protocol")
    if a.kind in ("run", "search") and b.kind in ("run", "search"):
        why = fold_difference(a.names, a.folds, b.names, b.folds)
        if why:
            raise StatsError(f"{b.path}: its folds differ from those of {a.path} ({why}); a paired comparison needs both "
                             "runs trained with the same protocol (--folds, --seed)")
    pos = {n: i for i, n in enumerate(b.names)}
    order_b = np.array([pos[n] for n in a.names], dtype=np.int64)
    if a.y is not None and b.y is not None and not np.array_equal(a.y, b.y[order_b]):
        raise StatsError(f"{b.path}: its labels differ from those of {a.path}")
    metric = metric or default_metric(a)
    g, unit = groups_for(a, group)
    res = paired_bootstrap(metric_fn(a, metric), metric_fn(b, metric, order_b), g, n_boot, level, seed)
    out = {"a": str(a.path), "b": str(b.path), "metric": metric, "group": unit, "n": len(a.names),
           "a_value": res.pop("a"), "b_value": res.pop("b"), "a_recipe": run_recipe(a), "b_recipe": run_recipe(b)}
    if out["a_recipe"] and out["b_recipe"] and out["a_recipe"] != out["b_recipe"]:
        out["note"] = (f"A was trained with recipe {out['a_recipe']} and B with {out['b_recipe']}: the difference "
                       "includes the recipe (pass --recipe to train both the same way)")
    return {**out, **res}


def run_recipe(ev: EvalRows) -> str | None:
    """The training recipe a run records (``config.json`` ``recipe.recipe``: ``lbfgs`` | ``adamw``);
    ``None`` for an ensemble directory or a run from before recipes were recorded."""
    if ev.kind != "run":
        return None
    recipe = (ev.config or {}).get("recipe")
    return recipe.get("recipe") if isinstance(recipe, dict) else None
