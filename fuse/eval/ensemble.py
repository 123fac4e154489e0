"""Decision-level fusion of several runs (``emo fuse ensemble RUN... --out DIR``).

Wang et al., "Hierarchical Audio-Visual Information Fusion with Multi-label Joint Decoding for
MER 2023" (ACM MM 2023, arXiv:2309.07925), fuse their three structures at the posterior level.
Here the fused emotion posterior and valence of K runs are weighted sums with weights on the
simplex (emo does not cite the paper's equation numbers: they could not be verified):

    p = Σ_i w_i p_i          (p_i: run i's class posterior, (N, C))
    v = Σ_i w_i v_i          (v_i: run i's valence, (N,))
    w_i >= 0, Σ_i w_i = 1,

with one weight vector shared by both equations, tuned on validation predictions. The
validation predictions of a run are its out-of-fold predictions (``predictions.csv`` rows whose
fold is not ``test``: every sample is predicted by a model that never saw it); for runs trained
with ``--folds split`` (whose out-of-fold rows *are* the test partition) they are the run's
models applied to the ``dev`` partition of the stores named in its ``config.json``. Rows with
fold ``test`` (a held-out partition) are fused with the tuned weights and reported, never
used for tuning.

Search: every point of the simplex grid with spacing ``step`` (``C(1/step + K - 1, K - 1)``
points; 231 for K = 3 and step 0.05), or, when that exceeds ``max_points``, the vertices, the
centre and ``max_points`` seeded Dirichlet(1) samples. The criterion is the validation metric
(WAF by default; the MER 2023 score ``WAF - 0.25 · MSE_valence`` for ``discrete+valence``;
valence MSE, minimised, for ``valence``); ties are broken by the validation negative
log-likelihood of the fused posterior (discrete tasks) or the valence MSE, so a run that adds
nothing but noise gets no weight. Arousal and dominance (``vad`` runs) are fused like valence.

Multi-label runs (``--task multilabel``, UniVA; MER-FG): the weighted sum averages the runs' softmax outputs
over the same label list and a label is predicted when its fused probability exceeds ζ
(``threshold``: the runs' training ``--threshold`` unless given; at least one label per clip, as
``emo fuse train``). Reported: Jaccard accuracy, Hamming loss, micro- and macro-F1
(:func:`emo.fuse.methods.multilabel.multilabel_metrics`) and, with ``emotion_wheel``, the emotion-wheel F1
of the MER 2025 baseline (:func:`emo.fuse.eval.metrics.multilabel_wheel_metrics`: predicted words
``p > ζ`` or the most probable, true words each clip's own words from the dataset manifest, as ``emo fuse train``).
Weights are tuned on ``wheel_f1`` with wheels, else ``micro_f1`` (``hamming_loss`` is minimised);
ties are broken by the cross-entropy against the normalised multi-hot targets (UniVA eq. 10's KL
up to a constant). Multi-label runs are never fused with single-label ones, nor runs with
different label lists.

Honest scores (nested tuning, the default). Weights tuned on the very out-of-fold predictions
they are then scored on flatter the ensemble (the search picks whatever happens to fit those
rows). So the reported validation score is *nested*: for each evaluation group (the fold of the
out-of-fold rows: one held-out speaker for leave-one-speaker-out, one fold for k-fold) the weights
are tuned on the other groups' rows and applied to that group; the fused out-of-fold predictions
written to ``predictions.csv`` are these nested ones, so every fused prediction comes from
weights that never saw its group. The weights over all groups (``weights``) are what a user
applies to new data and to the held-out ``test`` rows (never used for tuning). The same-data
score is reported only with ``optimistic=True`` (``--optimistic``), under the key
``fused_optimistic``. Runs whose validation rows are one group (``--folds split``: the dev
partition) cannot be nested: their dev score is labelled optimistic and only the test rows are
an unbiased estimate.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo.fsio import write_csv, write_json

#: Default selection metric per task.
DEFAULT_METRIC = {"discrete": "waf", "discrete+valence": "mer2023_score", "valence": "valence_mse", "vad": "vad_mse",
                  "discrete+vad": "waf"}
#: Metrics of multi-label runs (``--task multilabel``); ``wheel_f1`` needs the emotion wheels.
ML_METRICS = ("micro_f1", "macro_f1", "ml_accuracy", "hamming_loss", "wheel_f1")
#: Metrics :func:`search_weights` can optimise.
METRICS = ("waf", "uar", "accuracy", "mer2023_score", "valence_mse", "valence_ccc", "vad_mse", *ML_METRICS)
_DIMS = ("valence", "arousal", "dominance")


class EnsembleError(ValueError):
    """Runs that cannot be fused (different tasks, classes or validation samples; missing files);
    the message names the run directory."""


@dataclass
class RunPredictions:
    """One run's predictions, split into validation (tuning) and test parts.

    Attributes:
        path: run directory. task: its task. classes: class order or None.
        val / test: dicts with ``names`` (list of str), ``probs`` (n, C) float64, ``y`` (n,) int
            (-1 unknown) for discrete tasks, ``valence`` (n,) / ``vad`` (n, 3) predictions and
            ``valence_true`` / ``vad_true`` (NaN unknown) for regression tasks; ``test`` is None
            when the run has no held-out test rows.
        val_source: ``"out-of-fold"`` or ``"dev partition"``.
    """

    path: Path
    task: str
    classes: list[str] | None
    val: dict[str, Any]
    test: dict[str, Any] | None
    val_source: str
    config: dict[str, Any] | None = None


def _lower_is_better(metric: str) -> bool:
    return metric.endswith("mse") or metric == "hamming_loss"


@dataclass
class MultiLabelScoring:
    """What scoring multi-label outputs needs besides the rows' multi-hot targets.

    Attributes:
        threshold: ζ (a label is predicted when its probability exceeds it).
        classes: the C labels. wheels: :class:`emo.lexicon.wheel.EmotionWheels` or None.
        wheel_maps: per wheel, a bool (C, L_w) matrix: class j maps to wheel label l (from
            :meth:`with_true_words`); the per-row true wheel labels go into ``y["wheel_true"]``
            (N, Σ L_w) so that row subsets (nested tuning) carry them.
    """

    threshold: float
    classes: list[str]
    wheels: Any = None
    wheel_maps: list[np.ndarray] | None = None

    def wheel_true(self, true_words: list[list[str]]) -> np.ndarray:
        """Per row, its true words' wheel labels (bool (N, Σ L_w)), and :attr:`wheel_maps` to match.

        The label columns of each wheel are the labels of the classes and of these words: call it
        for the rows the weights are tuned on (nested row subsets of them are fine).
        """
        from emo.lexicon.wheel import WHEELS

        maps, blocks = [], []
        for wheel in WHEELS:
            cls = [self.wheels.wheel_label(c, wheel) for c in self.classes]
            true = [self.wheels.map_words(ws, wheel) for ws in true_words]
            labels = sorted({x for x in cls if x is not None} | set().union(*true))
            col = {lab: k for k, lab in enumerate(labels)}
            a = np.zeros((len(self.classes), len(labels)), dtype=bool)
            for j, lab in enumerate(cls):
                if lab is not None:
                    a[j, col[lab]] = True
            t = np.zeros((len(true_words), len(labels)), dtype=bool)
            for i, labs in enumerate(true):
                t[i, [col[x] for x in labs]] = True
            maps.append(a)
            blocks.append(t)
        self.wheel_maps = maps
        return np.concatenate(blocks, axis=1)


def multilabel_scores(fp: np.ndarray, y: dict[str, np.ndarray], ml: MultiLabelScoring) -> dict[str, np.ndarray]:
    """Multi-label metrics of many fused outputs at once (the weight search's fast path).

    Args:
        fp: float (M, N, C) fused probabilities (M weight vectors). y: ``multihot`` (N, C) and, with
            wheels, ``wheel_true`` (:meth:`MultiLabelScoring.wheel_true`). ml: threshold, wheels.

    Returns:
        ``ml_accuracy``, ``hamming_loss``, ``micro_f1``, ``macro_f1`` (M,) as
        :func:`emo.fuse.methods.multilabel.multilabel_metrics` of ``predict_multihot(fp[m], ζ)``, and with
        wheels ``wheel_f1``, ``wheel_precision``, ``wheel_recall`` (M,) as
        :func:`emo.fuse.eval.metrics.multilabel_wheel_metrics` (same definitions; tested equal).
    """
    t = np.asarray(y["multihot"]) > 0
    m, n, c = fp.shape
    pred = fp > ml.threshold
    mi, ni = np.nonzero(~pred.any(2))  # at least one label per row: the most probable (predict_multihot)
    pred[mi, ni, fp[mi, ni].argmax(1)] = True
    inter = (pred & t).sum(2)
    union = (pred | t).sum(2)
    tp = (pred & t).sum(1).astype(np.float64)
    fpos = (pred & ~t).sum(1).astype(np.float64)
    fneg = (~pred & t).sum(1).astype(np.float64)
    den_micro = 2 * tp.sum(1) + fpos.sum(1) + fneg.sum(1)
    den = 2 * tp + fpos + fneg
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    present = t.any(0)
    out = {"ml_accuracy": np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean(1),
           "hamming_loss": (pred ^ t).sum((1, 2)) / (n * c),
           "micro_f1": np.divide(2 * tp.sum(1), den_micro, out=np.ones(m), where=den_micro > 0),
           "macro_f1": f1[:, present].mean(1) if present.any() else np.zeros(m)}
    if ml.wheels is not None:
        wt = np.asarray(y["wheel_true"], dtype=bool)
        sf = pred.astype(np.float32)  # the same label sets as the metrics above (at least one per row)
        prec, rec, f1s, start = [], [], [], 0
        for a in ml.wheel_maps:
            tw = wt[:, start:start + a.shape[1]]
            start += a.shape[1]
            pw = (sf @ a.astype(np.float32)) > 0  # (M, N, L_w): the wheel labels of the predicted words
            hit = (pw & tw).sum(2)
            n_pred, n_true = pw.sum(2), tw.sum(1)
            keep = n_true > 0  # the baseline skips samples whose true words map nowhere on this wheel
            if keep.any():
                pm = np.divide(hit, n_pred, out=np.zeros(hit.shape), where=n_pred > 0)[:, keep].mean(1)
                rm = (hit[:, keep] / n_true[keep]).mean(1)
            else:
                pm = rm = np.zeros(m)
            prec.append(pm)
            rec.append(rm)
            f1s.append(np.divide(2 * pm * rm, pm + rm, out=np.zeros(m), where=pm + rm > 0))
        out.update({"wheel_f1": np.mean(f1s, 0), "wheel_precision": np.mean(prec, 0), "wheel_recall": np.mean(rec, 0)})
    return out


def _f(v: str) -> float:
    return float(v) if v not in ("", None) else math.nan


def _part(rows: list[dict[str, str]], task: str, classes: list[str] | None, path: Path) -> dict[str, Any]:
    from emo.fsio import csv_unescape

    d: dict[str, Any] = {"names": [csv_unescape(r["name"]) for r in rows],
                         "group": np.asarray([r.get("fold", "") for r in rows], dtype=object)}
    if task.startswith("discrete") or task == "multilabel":
        cols = [f"prob_{c}" for c in classes]
        try:
            d["probs"] = np.array([[_f(r[c]) for c in cols] for r in rows], dtype=np.float64).reshape(len(rows), len(cols))
        except KeyError as e:
            raise EnsembleError(f"{path / 'predictions.csv'}: column {e.args[0]!r} missing (classes {classes})") from None
        index = {c: i for i, c in enumerate(classes)}
    if task == "multilabel":  # true: the ;-separated labels of the row (emo.fuse.run.prediction_columns)
        d["multihot"] = np.zeros((len(rows), len(classes)), dtype=np.float32)
        for i, r in enumerate(rows):
            for w in csv_unescape(r.get("true") or "").split(";"):
                if not w.strip():
                    continue
                if w.strip() not in index:
                    raise EnsembleError(f"{path / 'predictions.csv'}: sample {d['names'][i]!r}: true label {w.strip()!r} "
                                        f"is not one of the run's {len(classes)} labels")
                d["multihot"][i, index[w.strip()]] = 1.0
    elif task.startswith("discrete"):
        d["y"] = np.array([index.get(r.get("true", ""), -1) for r in rows], dtype=np.int64)
    if task in ("valence", "discrete+valence"):
        d["valence"] = np.array([_f(r["valence"]) for r in rows], dtype=np.float64)
        d["valence_true"] = np.array([_f(r.get("valence_true", "")) for r in rows], dtype=np.float64)
    if task in ("vad", "discrete+vad"):
        d["vad"] = np.array([[_f(r[k]) for k in _DIMS] for r in rows], dtype=np.float64).reshape(len(rows), 3)
        d["vad_true"] = np.array([[_f(r.get(f"{k}_true", "")) for k in _DIMS] for r in rows], dtype=np.float64).reshape(len(rows), 3)
    from emo.fuse.eval.runcheck import NonFiniteError, require_finite

    for key in ("probs", "valence", "vad"):  # predictions must be finite: a NaN would win or poison the weights
        if key in d:
            try:
                require_finite(d[key], d["names"], f"{path / 'predictions.csv'} ({key})")
            except NonFiniteError as e:
                raise EnsembleError(f"{e}: that run cannot be ensembled (retrain it)") from None
    return d


def _dev_part(run, task: str, classes: list[str] | None) -> dict[str, Any]:
    """The run's models on the dev partition of its stores (runs trained with ``--folds split``)."""
    from emo.fuse.training.data import load_features, targets
    from emo.fuse.eval.protocols import DEV_SPLITS

    cfg = run.config
    try:
        fs = load_features(cfg["features_dir"], cfg["dataset"], cfg["feature_specs"], cfg.get("protocol", {}).get("align", "strict"),
                           frames=list(run.frame_inputs))
    except Exception as e:  # noqa: BLE001 - re-raised with the run named
        raise EnsembleError(f"{run.path}: trained with --folds split, so its validation predictions are computed on the dev "
                            f"partition, but its features cannot be loaded ({e})") from None
    if task == "multilabel":  # the run's label list, words mapped as at training (emotion-wheel word forms)
        from emo.fuse.methods.multilabel import LabelSpace, sample_words

        word_map = None
        if (cfg.get("training") or {}).get("emotion_wheel"):
            from emo.lexicon.wheel import load_wheels

            try:
                word_map = load_wheels(cfg["training"]["emotion_wheel"]).base_form
            except ValueError as e:
                raise EnsembleError(f"{run.path}: its label list merges word forms through the emotion wheels, "
                                    f"which cannot be read ({e})") from None
        multihot, mask, _ = LabelSpace(list(classes), word_map=word_map).encode([sample_words(s) for s in fs.samples])
        y = {"multihot": multihot}
    else:
        y, mask = targets(fs.samples, task, fs.classes)
    rows = np.flatnonzero(mask & np.isin(np.asarray([s or "" for s in fs.splits], dtype=object), DEV_SPLITS))
    if not len(rows):
        raise EnsembleError(f"{run.path}: --folds split run, but dataset {cfg['dataset']} has no labelled dev partition to tune on")
    sub = fs.subset(rows)
    out = run.predict(sub.blocks, sub.speakers)
    d: dict[str, Any] = {"names": sub.names, "group": np.asarray(["dev"] * len(sub.names), dtype=object)}
    if "probs" in out:
        d["probs"] = out["probs"].astype(np.float64)
        if task == "multilabel":
            d["multihot"] = y["multihot"][rows]
        else:
            d["y"] = y["discrete"][rows]
    if "valence" in out:
        d["valence"] = out["valence"].astype(np.float64)
        d["valence_true"] = y["valence"][rows].astype(np.float64)
    if "vad" in out:
        d["vad"] = out["vad"].astype(np.float64)
        d["vad_true"] = y["vad"][rows].astype(np.float64)
    return d


class EnsembleUsageError(EnsembleError):
    """A command-line mistake (the same run twice, --threshold for single-label runs): exit 2."""


def _duplicate_runs(run_dirs: list, content: bool = True) -> str | None:
    """A message when a run is given twice: the same directory, or two directories with identical
    ``config.json`` and ``predictions.csv`` (a copy)."""
    from emo.fsio import sha256_file

    seen: dict[Any, Path] = {}
    for d in map(Path, run_dirs):
        key = d.resolve()
        if key in seen:
            return f"run {d} is given twice (same directory as {seen[key]}): each run counts once in an ensemble"
        seen[key] = d
        pred, cfg = d / "predictions.csv", d / "config.json"
        if content and pred.is_file() and cfg.is_file():
            digest = ("content", sha256_file(pred), sha256_file(cfg))
            if digest in seen:
                return (f"runs {seen[digest]} and {d} hold identical config.json and predictions.csv (a copy of one run?): "
                        "each run counts once in an ensemble")
            seen[digest] = d
    return None


def read_run_predictions(run_dir: str | Path) -> RunPredictions:
    """Read a run directory's ``config.json`` and ``predictions.csv`` (see :mod:`emo.fuse.run`).

    Raises:
        EnsembleError: missing/invalid files or columns (named); emo.fuse.run.RunError: bad config.
    """
    from emo.fuse.run import load_run

    run = load_run(run_dir)
    path = run.path
    pred = path / "predictions.csv"
    if not pred.is_file():
        raise EnsembleError(f"{pred} not found: not a finished emo run")
    with open(pred, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "name" not in rows[0] or "fold" not in rows[0]:
        raise EnsembleError(f"{pred}: no prediction rows or no name/fold columns")
    task, classes = run.task, run.classes
    split = run.config.get("protocol", {}).get("folds") == "split"
    try:
        if split:
            val = _dev_part(run, task, classes)
            test_rows = [r for r in rows if r["fold"] != "test"] + [r for r in rows if r["fold"] == "test"]
            source = "dev partition"
        else:
            val = _part([r for r in rows if r["fold"] != "test"], task, classes, path)
            test_rows = [r for r in rows if r["fold"] == "test"]
            source = "out-of-fold"
        test = _part(test_rows, task, classes, path) if test_rows else None
    except EnsembleError:
        raise
    except (ValueError, KeyError) as e:  # a non-numeric probability, a missing column
        raise EnsembleError(f"{pred}: malformed prediction rows ({type(e).__name__}: {e}); that run cannot be ensembled "
                            "(retrain it, or restore the file)") from None
    if not val["names"]:
        raise EnsembleError(f"{pred}: no validation (out-of-fold) rows")
    return RunPredictions(path, task, classes, val, test, source, run.config)


# ---------------------------------------------------------------------------
# Posterior-level fusion and fast vectorised scores for the weight search
# ---------------------------------------------------------------------------

def fuse_outputs(parts: list[dict[str, Any]], weights: np.ndarray) -> dict[str, np.ndarray]:
    """``p = Σ w_i p_i`` on ``probs`` and ``v = Σ w_i v_i`` on ``valence`` (and ``vad``).

    Args:
        parts: per run a dict with ``probs`` (N, C) and/or ``valence`` (N,) / ``vad`` (N, 3), rows aligned.
        weights: (K,) non-negative, summing to 1.

    Returns:
        The fused arrays, float64, same keys and shapes.

    Raises:
        EnsembleError: weights of the wrong length, negative, or not summing to 1 (±1e-6).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(parts),) or (w < -1e-12).any() or abs(w.sum() - 1.0) > 1e-6:
        raise EnsembleError(f"weights must be {len(parts)} non-negative numbers summing to 1, got {w.tolist()}")
    return {k: np.tensordot(w, np.stack([p[k] for p in parts]), axes=1) for k in ("probs", "valence", "vad") if k in parts[0]}


def simplex_grid(k: int, step: float = 0.05, max_points: int = 20000, seed: int = 0) -> np.ndarray:
    """Candidate weight vectors (M, k) on the probability simplex (rows sum to 1).

    All points with coordinates in multiples of ``step`` when there are at most ``max_points`` of
    them; otherwise the k vertices, the centre and ``max_points`` Dirichlet(1) samples (seeded).

    Raises:
        EnsembleError: ``k < 1`` or ``step`` not in (0, 1].
    """
    if k < 1 or not 0 < step <= 1:
        raise EnsembleError(f"need k >= 1 runs and 0 < step <= 1 (got k={k}, step={step})")
    n = int(round(1 / step))
    if math.comb(n + k - 1, k - 1) <= max_points:
        pts: list[list[int]] = []

        def rec(prefix: list[int], left: int, slots: int) -> None:
            if slots == 1:
                pts.append(prefix + [left])
                return
            for a in range(left, -1, -1):
                rec(prefix + [a], left - a, slots - 1)

        rec([], n, k)
        return np.asarray(pts, dtype=np.float64) / n
    rng = np.random.default_rng(seed)
    return np.vstack([np.eye(k), np.full((1, k), 1.0 / k), rng.dirichlet(np.ones(k), size=max_points)])


def _class_scores(pred: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """WAF, UAR and accuracy of many predictions at once: ``pred`` (M, N) int, ``y`` (N,) int.
    Same definitions as :func:`emo.fuse.eval.metrics.classification_metrics` (classes present in ``y``)."""
    m, cc = pred.shape[0], n_classes * n_classes
    flat = (np.arange(m)[:, None] * cc + y[None, :] * n_classes + pred).ravel()  # one bincount for all M confusions
    conf = np.bincount(flat, minlength=m * cc).reshape(m, n_classes, n_classes)
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    support = conf.sum(2).astype(np.float64)  # true counts per class
    predicted = conf.sum(1).astype(np.float64)
    present = support[0] > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    w = support[0, present] / support[0, present].sum()
    return {"waf": f1[:, present] @ w, "uar": recall[:, present].mean(1), "accuracy": tp.sum(1) / len(y)}


def _ccc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Lin's CCC (Lin 1989, eq. 2a) of each row of ``p`` (M, N) against ``y`` (N,)."""
    mx, my = y.mean(), p.mean(1)
    sxy = ((p - my[:, None]) * (y - mx)).mean(1)
    den = y.var() + p.var(1) + (mx - my) ** 2
    return np.divide(2 * sxy, den, out=np.zeros_like(sxy), where=den > 0)


def _score_grid(parts: list[dict[str, Any]], y: dict[str, np.ndarray], grid: np.ndarray, metric: str, n_classes: int,
                chunk: int = 256, ml: MultiLabelScoring | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(score, tie-break loss) for every weight vector in ``grid`` (M, K); higher score is better.
    Multi-label rows (``y["multihot"]``) are scored by :func:`multilabel_scores` with ``ml``."""
    score = np.empty(len(grid))
    loss = np.empty(len(grid))
    P = np.stack([p["probs"] for p in parts]) if "probs" in parts[0] else None  # (K, N, C)
    V = np.stack([p["valence"] for p in parts]) if "valence" in parts[0] else None  # (K, N)
    A = np.stack([p["vad"] for p in parts]) if "vad" in parts[0] else None  # (K, N, 3)
    multi = "multihot" in y
    if multi:
        if ml is None:
            raise EnsembleError("multi-label rows need the threshold (MultiLabelScoring)")
        chunk = max(1, min(chunk, int(5e6 // max(1, P.shape[1] * P.shape[2]))))  # (chunk, N, C) arrays: ~40 MB of float64
        target = np.asarray(y["multihot"], dtype=np.float64)
        target = target / np.maximum(target.sum(1, keepdims=True), 1e-12)
    for s in range(0, len(grid), chunk):
        w = grid[s:s + chunk]
        sc: dict[str, np.ndarray] = {}
        if P is not None and multi:
            fp = np.einsum("mk,knc->mnc", w, P)
            sc.update(multilabel_scores(fp, y, ml))
            nll = -(target[None] * np.log(np.clip(fp, 1e-12, None))).sum(2).mean(1)  # cross-entropy to UniVA's targets
        elif P is not None:
            fp = np.einsum("mk,knc->mnc", w, P)
            sc.update(_class_scores(fp.argmax(2), y["discrete"], n_classes))
            nll = -np.log(np.clip(np.take_along_axis(fp, y["discrete"][None, :, None], 2)[..., 0], 1e-12, None)).mean(1)
        if V is not None:
            fv = w @ V
            sc["valence_mse"] = ((fv - y["valence"]) ** 2).mean(1)
            sc["valence_ccc"] = _ccc_rows(y["valence"], fv)
        if A is not None:
            fa = np.einsum("mk,knd->mnd", w, A)
            sc["vad_mse"] = ((fa - y["vad"]) ** 2).mean((1, 2))
        if "waf" in sc and "valence_mse" in sc:
            sc["mer2023_score"] = sc["waf"] - 0.25 * sc["valence_mse"]
        if metric not in sc:
            raise EnsembleError(f"--metric {metric!r} does not apply to these runs; available: {', '.join(sorted(sc))}")
        score[s:s + chunk] = -sc[metric] if _lower_is_better(metric) else sc[metric]
        loss[s:s + chunk] = nll if P is not None else sc.get("valence_mse", sc.get("vad_mse"))
    return score, loss


def search_weights(parts: list[dict[str, Any]], y: dict[str, np.ndarray], metric: str, n_classes: int = 0,
                   step: float = 0.05, max_points: int = 20000, seed: int = 0,
                   ml: MultiLabelScoring | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Weights on the simplex maximising the validation ``metric`` of the fused outputs (see module docstring).

    Args:
        parts: per run, validation outputs (``probs`` (N, C), ``valence`` (N,), ``vad`` (N, 3)), rows aligned.
        y: labels of those rows: ``discrete`` int (N,), ``valence`` (N,), ``vad`` (N, 3); for
            multi-label runs ``multihot`` (N, C) (and ``wheel_true``, see :class:`MultiLabelScoring`).
        metric: one of :data:`METRICS` (``*mse`` metrics and ``hamming_loss`` are minimised).
        n_classes: C. step, max_points, seed: see :func:`simplex_grid`. ml: multi-label scoring (ζ, wheels).

    Returns:
        (weights (K,) float64 summing to 1, info: ``method``, ``n_points``, ``step``, best ``score``).

    Raises:
        EnsembleError: metric not applicable to the outputs.
    """
    grid = simplex_grid(len(parts), step, max_points, seed)
    score, loss = _score_grid(parts, y, grid, metric, n_classes, ml=ml)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    pick = best[np.argmin(loss[best])]
    exhaustive = len(grid) <= max_points and math.comb(int(round(1 / step)) + len(parts) - 1, len(parts) - 1) == len(grid)
    info = {"method": "simplex grid" if exhaustive else "vertices + centre + Dirichlet samples", "n_points": int(len(grid)),
            "step": step if exhaustive else None,
            "tie_break": ("cross-entropy to the normalised multi-hot targets" if "multihot" in y else "NLL") if "probs" in parts[0] else "MSE",
            "n_tied": int(len(best))}
    return grid[pick], info


def nested_fusion(parts: list[dict[str, Any]], y: dict[str, np.ndarray], groups: np.ndarray, metric: str,
                  n_classes: int = 0, step: float = 0.05, max_points: int = 20000,
                  seed: int = 0, ml: MultiLabelScoring | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Nested posterior-level fusion: each group's rows are fused with weights tuned on the other groups.

    Args:
        parts: per run, outputs (``probs`` (N, C), ``valence`` (N,), ``vad`` (N, 3)), rows aligned
            and all labelled. y: labels of those rows. groups: (N,) evaluation group per row.
        metric, n_classes, step, max_points, seed, ml: as :func:`search_weights`.

    Returns:
        (fused outputs (same keys and shapes as the parts, float64), weights per group (K,)).

    Raises:
        EnsembleError: fewer than two groups (nothing to hold out).
    """
    g = np.asarray(groups, dtype=object)
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise EnsembleError(f"nested tuning needs at least two evaluation groups, got {names}")
    keys = [k for k in ("probs", "valence", "vad") if k in parts[0]]
    fused = {k: np.zeros_like(parts[0][k], dtype=np.float64) for k in keys}
    per_group = {}
    for name in names:
        held = g == name
        w, _ = search_weights([{k: p[k][~held] for k in keys} for p in parts], {k: v[~held] for k, v in y.items()},
                              metric, n_classes, step, max_points, seed, ml)
        out = fuse_outputs([{k: p[k][held] for k in keys} for p in parts], w)
        for k in keys:
            fused[k][held] = out[k]
        per_group[str(name)] = w
    return fused, per_group


# ---------------------------------------------------------------------------
# Runs in, ensemble directory out
# ---------------------------------------------------------------------------

def _align(runs: list[RunPredictions], part: str) -> tuple[list[str], list[dict[str, Any]]]:
    base = runs[0]
    names = getattr(base, part)["names"]
    out = []
    for r in runs:
        p = getattr(r, part)
        if set(p["names"]) != set(names) or len(p["names"]) != len(names):
            raise EnsembleError(f"{r.path}: its {part} predictions cover {len(p['names'])} samples, {base.path} covers "
                                f"{len(names)} ({len(set(p['names']) & set(names))} shared); fuse runs of the same dataset and protocol")
        pos = {n: i for i, n in enumerate(p["names"])}
        idx = np.array([pos[n] for n in names], dtype=np.int64)
        out.append({k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in p.items() if k != "names"})
    for k in ("y", "multihot", "valence_true", "vad_true"):
        if k in out[0]:
            for r, o in zip(runs[1:], out[1:]):
                a, b = out[0][k], o[k]
                if not np.array_equal(np.nan_to_num(a, nan=-999), np.nan_to_num(b, nan=-999)):
                    raise EnsembleError(f"{r.path}: its {part} labels ({k}) differ from those of {base.path}")
    return names, out


def _labels(p: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    y, mask = {}, None
    if "y" in p:
        y["discrete"] = p["y"]
        mask = p["y"] >= 0
    if "multihot" in p:
        y["multihot"] = p["multihot"]
        mask = p["multihot"].any(1)
    if "valence_true" in p:
        y["valence"] = p["valence_true"]
        m = np.isfinite(p["valence_true"])
        mask = m if mask is None else mask & m
    if "vad_true" in p:
        y["vad"] = p["vad_true"]
        m = np.isfinite(p["vad_true"]).all(1)
        mask = m if mask is None else mask & m
    return y, mask


def _metrics(outs: dict[str, np.ndarray], y: dict[str, np.ndarray], mask: np.ndarray, n_classes: int,
             ml: MultiLabelScoring | None = None, words: list[list[str]] | None = None) -> dict[str, Any]:
    """Reported metrics of the labelled rows (``mask``): :func:`emo.fuse.eval.metrics.evaluate` (at ζ for
    multi-label rows) and, with wheels, :func:`emo.fuse.eval.metrics.multilabel_wheel_metrics` against
    ``words`` (each row's own true words)."""
    from emo.fuse.eval.metrics import evaluate, multilabel_wheel_metrics
    from emo.fuse.methods.multilabel import DEFAULT_THRESHOLD

    keys = [k for k in ("discrete", "multihot", "valence", "vad") if k in y]
    m = evaluate({k: v[mask] for k, v in outs.items()}, {k: y[k][mask] for k in keys}, n_classes,
                 ml.threshold if ml is not None else DEFAULT_THRESHOLD)  # (the threshold applies to multi-hot rows only)
    if ml is not None and ml.wheels is not None and "probs" in outs:
        m.update(multilabel_wheel_metrics(outs["probs"][mask], ml.classes, [words[i] for i in np.flatnonzero(mask)],
                                          ml.wheels, ml.threshold))
    return {k: v for k, v in m.items() if k != "confusion"}


def ensemble(run_dirs: list[str | Path], out: str | Path, metric: str | None = None, step: float = 0.05,
             max_points: int = 20000, seed: int = 0, optimistic: bool = False, threshold: float | None = None,
             emotion_wheel: str | Path | None = None) -> dict[str, Any]:
    """Tune the fusion weights on the runs' validation predictions and write the fused run; the
    validation score is nested (see the module docstring), the same-data score only if ``optimistic``.

    Args:
        run_dirs: two or more run directories of the same dataset, task, classes and samples.
        out: output directory: ``ensemble.json`` (weights, search, validation and test metrics per
            run and fused) and ``predictions.csv`` (fused ``validation`` and ``test`` rows).
        metric: see :data:`DEFAULT_METRIC` (by task) and :data:`METRICS`.
        step, max_points, seed: see :func:`simplex_grid`.
        optimistic: also report ``validation.fused_optimistic``: the weights tuned on all validation
            rows scored on those same rows (biased upwards; labelled so).
        threshold: multi-label runs: ζ (default: the runs' training ``threshold``, which must agree).
        emotion_wheel: multi-label runs: the MER ``emotion_wheel/`` folder; adds the emotion-wheel
            F1 (true words: each clip's own words in the dataset manifest of the first run).

    Returns:
        The ``ensemble.json`` dict: ``validation.fused`` is the nested score (``validation.nested``
        true) or, for single-group validation (dev partition), the optimistic one (``nested`` false).

    Raises:
        EnsembleError: fewer than two runs, mismatched runs (named: a multi-label run with a
            single-label one, different label lists, different thresholds), no labelled validation
            rows, ``threshold``/``emotion_wheel`` for single-label runs, an unreadable wheel folder
            or manifest.
    """
    if len(run_dirs) < 2:
        raise EnsembleError("give at least two run directories to fuse")
    runs = [read_run_predictions(d) for d in run_dirs]
    base = runs[0]
    from emo.fuse.eval.compare import fold_difference

    for r in runs[1:]:  # nested weights are tuned per held-out fold: the runs' folds must be the same partition
        if base.val_source == "out-of-fold" and r.val_source == "out-of-fold":
            same_rows = set(base.val["names"]) == set(r.val["names"])  # different rows: reported below, by name
            why = fold_difference(list(base.val["names"]), base.val["group"], list(r.val["names"]), r.val["group"]) if same_rows else None
            if why:
                raise EnsembleError(f"{r.path}: its folds differ from those of {base.path} ({why}); ensemble runs trained "
                                    "with the same protocol (--folds, --seed), or the nested weights mix folds")
    for r in runs[1:]:
        if (r.task == "multilabel") != (base.task == "multilabel"):
            ml_run, single = (r, base) if r.task == "multilabel" else (base, r)
            raise EnsembleError(f"{ml_run.path} is a multi-label run (--task multilabel: several labels per clip, threshold) and "
                                f"{single.path} a single-label one (--task {single.task}); their outputs cannot be fused")
        if r.task != base.task:
            raise EnsembleError(f"{r.path}: task {r.task!r}, but {base.path} has {base.task!r}; fuse runs of one task")
        if r.classes != base.classes:
            raise EnsembleError(f"{r.path}: classes differ from those of {base.path} "
                                f"({class_difference(r.classes, base.classes, str(r.path), str(base.path))}); fuse runs of one label list")
    multilabel = base.task == "multilabel"
    ml, words = None, None
    if multilabel:
        ml, words = _multilabel_setup(runs, threshold, emotion_wheel)
    elif threshold is not None or emotion_wheel:
        raise EnsembleUsageError(f"--threshold and --emotion-wheel apply to multi-label runs; {base.path} is a --task {base.task} run")
    metric = metric or (("wheel_f1" if ml.wheels is not None else "micro_f1") if multilabel else DEFAULT_METRIC[base.task])
    if metric not in METRICS:
        raise EnsembleError(f"unknown --metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric in ML_METRICS and not multilabel:
        raise EnsembleError(f"--metric {metric} scores multi-label runs; {base.path} is a --task {base.task} run")
    if multilabel and metric not in ML_METRICS:
        raise EnsembleError(f"--metric {metric} does not apply to multi-label runs; use one of {', '.join(ML_METRICS)}")
    if metric == "wheel_f1" and ml.wheels is None:
        raise EnsembleError("--metric wheel_f1 needs --emotion-wheel DIR (the MER emotion_wheel/ folder)")
    dup = _duplicate_runs(run_dirs)  # a copy of one run given twice
    if dup:
        raise EnsembleUsageError(dup)
    n_classes = len(base.classes) if base.classes else 0
    names, val = _align(runs, "val")
    y, mask = _labels(val[0])
    if not mask.any():
        raise EnsembleError(f"{base.path}: no labelled validation rows to tune the weights on")
    keys = [k for k in ("probs", "valence", "vad") if k in val[0]]
    parts = [{k: p[k][mask] for k in keys} for p in val]
    ym = {k: v[mask] for k, v in y.items()}
    val_words = None
    if words is not None:  # multi-label with wheels: each clip's own words for the wheel F1
        val_words = [words[n] for n in names]
        ym["wheel_true"] = ml.wheel_true([val_words[i] for i in np.flatnonzero(mask)])
    w, info = search_weights(parts, ym, metric, n_classes, step, max_points, seed, ml)
    fused_all = fuse_outputs([{k: p[k] for k in keys} for p in val], w)
    groups = val[0]["group"]
    nested = len(set(groups[mask].tolist())) >= 2
    fused_val = fused_all
    per_group: dict[str, Any] = {}
    if nested:
        nested_out, wg = nested_fusion(parts, ym, groups[mask], metric, n_classes, step, max_points, seed, ml)
        fused_val = {k: v.copy() for k, v in fused_all.items()}
        for k in keys:
            fused_val[k][mask] = nested_out[k]
        per_group = {g: {str(r.path): round(float(x), 6) for r, x in zip(runs, wv)} for g, wv in wg.items()}
    result: dict[str, Any] = {
        "command": None, "method": "posterior-level fusion after Wang et al. 2023 (arXiv:2309.07925): weighted sum of posteriors and valences, weights on the simplex",
        "runs": [str(r.path) for r in runs], "task": base.task, "classes": base.classes, "metric": metric,
        "weights": {str(r.path): round(float(x), 6) for r, x in zip(runs, w)}, "search": info,
        "validation": {"source": sorted({r.val_source for r in runs}), "n": int(mask.sum()),
                       "runs": {str(r.path): _metrics({k: p[k] for k in keys}, y, mask, n_classes, ml, val_words) for r, p in zip(runs, val)},
                       "fused": _metrics(fused_val, y, mask, n_classes, ml, val_words), "nested": nested,
                       "note": ("nested: each evaluation group fused with weights tuned on the other groups (unbiased)" if nested else
                                "optimistic: one validation group (dev partition), weights tuned and scored on the same rows; "
                                "the test rows are the unbiased estimate")},
    }
    if multilabel:
        result["multilabel"] = {
            "threshold": ml.threshold, "rule": "a label is predicted when its fused probability exceeds the threshold "
            "(at least one per clip: the most probable; the wheel F1 uses p > threshold only, as emo fuse train)",
            "emotion_wheel": None if ml.wheels is None else {
                "dir": str(emotion_wheel), "level": "level1", "true_words": "each clip's own words (dataset manifest)",
                "source": "MER 2025 baseline wheel_metric_calculation (emo.lexicon.wheel)"}}
    if nested:
        result["weights_per_held_out_group"] = per_group
        if optimistic:
            result["validation"]["fused_optimistic"] = {**_metrics(fused_all, y, mask, n_classes, ml, val_words),
                                                        "note": "weights tuned on these same rows: biased upwards"}
    thr = None if ml is None else ml.threshold
    rows = _pred_rows(names, "validation", fused_val, y, base.classes, groups, thr)
    if all(r.test is not None for r in runs):
        tnames, tst = _align(runs, "test")
        fused_test = fuse_outputs([{k: p[k] for k in keys} for p in tst], w)
        ty, tmask = _labels(tst[0])
        result["test"] = {"n": len(tnames)}
        test_words = None if words is None else [words[n] for n in tnames]
        if tmask.any():
            result["test"].update({"n_labelled": int(tmask.sum()),
                                   "runs": {str(r.path): _metrics({k: p[k] for k in keys}, ty, tmask, n_classes, ml, test_words)
                                            for r, p in zip(runs, tst)},
                                   "fused": _metrics(fused_test, ty, tmask, n_classes, ml, test_words)})
        rows += _pred_rows(tnames, "test", fused_test, ty, base.classes, ["test"] * len(tnames), thr)
    result.update(_ensemble_extras(runs, result, fused_val, y, mask, groups, n_classes, base.classes, metric, seed))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "predictions.csv", rows)
    write_json(out / "ensemble.json", result)
    from emo.fuse.eval.report import write_ensemble_report

    write_ensemble_report(out, result)
    return result


def _ensemble_extras(runs, result, fused_val, y, mask, groups, n_classes, classes, metric, seed) -> dict[str, Any]:
    """Issue 23: the members' protocol (refused when they differ), a 95 % group-bootstrap interval of
    the fused validation metric (resampling the evaluation groups: folds, i.e. speakers under
    leave-one-speaker-out), and degenerate-result warnings of the fused predictions."""
    from emo.fuse.eval.metrics import degenerate_warnings, evaluate
    from emo.fuse.eval.stats import StatsError, bootstrap_ci, class_metric

    protos = [(r.config or {}).get("protocol") or {} for r in runs]
    kinds = {(p.get("folds"), p.get("speaker_independent")) for p in protos}
    if len(kinds) > 1:
        raise EnsembleError(f"the runs were evaluated under different protocols ({sorted(map(str, kinds))}); fuse runs of one protocol")
    extra: dict[str, Any] = {"protocol": protos[0] if protos and protos[0] else {"statement": "protocol: not recorded by the member runs"}}
    warnings: list[str] = []
    if n_classes and "probs" in fused_val and metric in ("uar", "waf", "accuracy") and "discrete" in y:
        yv, pv = y["discrete"][mask], fused_val["probs"][mask].argmax(1)
        try:
            ci = bootstrap_ci(lambda rows: class_metric(yv[rows], pv[rows], n_classes, metric), groups[mask], seed=seed)
            extra["interval"] = {"metric": metric, "group": "evaluation group (fold)", "of": "fused validation predictions", **ci}
        except StatsError as e:
            warnings.append(f"no interval: {e}")
        m = evaluate({"probs": fused_val["probs"][mask]}, {"discrete": yv}, n_classes)
        warnings += degenerate_warnings(m, classes, "fused validation")
    extra["warnings"] = warnings
    import datetime as _dt

    extra["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return extra


def _pred_rows(names, part, outs, y, classes, groups, threshold: float | None = None) -> list[dict[str, Any]]:
    from emo.fuse.run import prediction_columns

    return [{"name": n, "part": part, "fold": str(groups[i]), **prediction_columns(outs, i, y, i, classes, threshold)}
            for i, n in enumerate(names)]


def class_difference(a: list[str] | None, b: list[str] | None, a_name: str = "the first", b_name: str = "the second") -> str:
    """How two class lists differ, short enough for an error message (open vocabularies have hundreds
    of labels): their sizes and the labels only in one of them (up to 10 each), or the same labels
    in another order."""
    a, b = list(a or []), list(b or [])
    only_a, only_b = [c for c in a if c not in set(b)], [c for c in b if c not in set(a)]

    def show(xs: list[str]) -> str:
        return ", ".join(xs[:10]) + (f" and {len(xs) - 10} more" if len(xs) > 10 else "")

    if not only_a and not only_b:
        return f"the same {len(a)} labels in a different order" if a != b else "none"
    parts = [f"{len(a)} vs {len(b)} labels"]
    if only_a:
        parts.append(f"only in {a_name}: {show(only_a)}")
    if only_b:
        parts.append(f"only in {b_name}: {show(only_b)}")
    return "; ".join(parts)


def _multilabel_setup(runs: list[RunPredictions], threshold: float | None,
                      emotion_wheel: str | Path | None) -> tuple[MultiLabelScoring, dict[str, list[str]] | None]:
    """ζ (given, or the runs' common training threshold), the wheels, and (with wheels) each clip's
    true words from the first run's dataset manifest (``features_dir/dataset/samples.csv``)."""
    from emo.fuse.methods.multilabel import DEFAULT_THRESHOLD, sample_words

    if threshold is None:
        used = {str(r.path): float(((r.config or {}).get("training") or {}).get("threshold", DEFAULT_THRESHOLD)) for r in runs}
        if len(set(used.values())) > 1:
            raise EnsembleError("the runs were trained with different --threshold values ("
                                + ", ".join(f"{k}: {v}" for k, v in used.items()) + "); give --threshold to fuse them at one")
        threshold = next(iter(used.values()))
    if not 0.0 < threshold < 1.0:
        raise EnsembleError(f"--threshold must be in (0, 1), not {threshold}")
    wheels, words = None, None
    if emotion_wheel:
        from emo.lexicon.wheel import load_wheels

        try:
            wheels = load_wheels(emotion_wheel)
        except ValueError as e:  # WheelError: names the file
            raise EnsembleError(str(e)) from None
        from emo.extract.datasets.base import DatasetError, read_manifest

        cfg = runs[0].config or {}
        where = Path(str(cfg.get("features_dir", ""))) / str(cfg.get("dataset", ""))
        try:
            _, samples = read_manifest(where)
        except (DatasetError, OSError) as e:
            raise EnsembleError(f"{runs[0].path}: the emotion-wheel F1 scores each clip's own words, read from the dataset "
                                f"manifest {where / 'samples.csv'} named in its config.json, which cannot be read ({e})") from None
        words = {s.name: sample_words(s) or [] for s in samples}
        for r in runs:
            for part in (r.val, r.test):
                missing = [n for n in (part or {}).get("names", []) if n not in words]
                if missing:
                    raise EnsembleError(f"{r.path}: {len(missing)} predicted sample(s) are not in the manifest "
                                        f"{where / 'samples.csv'} (e.g. {missing[0]!r})")
    return MultiLabelScoring(float(threshold), list(runs[0].classes or []), wheels), words
