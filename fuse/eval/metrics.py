"""Evaluation metrics for discrete and dimensional emotion recognition.

Classification metrics come from scikit-learn, correlations from scipy; the few that
neither library has (CCC, the MER 2023 combined score, VAD L2 distance) are written out
here with their equations.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{what}: y_true has shape {y_true.shape}, y_pred has shape {y_pred.shape}")
    if y_true.shape[0] == 0:
        raise ValueError(f"{what}: no samples")
    return y_true, y_pred


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Discrete-emotion metrics.

    Args:
        y_true, y_pred: int class indices, shape (N,), values in ``[0, n_classes)``.
        n_classes: C, the size of the class list (fixes the confusion-matrix size).

    Returns:
        ``waf``: weighted F1 (WAF, the MER challenges' metric; ``sklearn.metrics.f1_score(average="weighted")``),
        ``accuracy``, ``uar``: unweighted average recall over the classes present in ``y_true``
        (= balanced accuracy), ``precision_macro`` / ``recall_macro``: unweighted means over the
        classes present in ``y_true`` of per-class precision (0 for a class never predicted) and
        recall (``recall_macro`` equals ``uar``; both reported because the NRC-VAD bridge paper
        reports precision and recall), ``confusion``: (C, C) list of ints, rows = true class,
        columns = predicted.

    Raises:
        ValueError: shapes differ, no samples, or indices outside ``[0, n_classes)``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

    y_true, y_pred = _check_pair(y_true, y_pred, "classification_metrics")
    for arr, name in ((y_true, "y_true"), (y_pred, "y_pred")):
        if arr.min() < 0 or arr.max() >= n_classes:
            raise ValueError(f"classification_metrics: {name} has class indices outside [0, {n_classes})")
    present = np.unique(y_true)
    return {
        "waf": float(f1_score(y_true, y_pred, average="weighted", labels=present, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "uar": float(recall_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
        "precision_macro": float(precision_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
        "recall_macro": float(recall_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).tolist(),
    }


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin, Biometrics 1989, eq. 2a).

    ``ccc = 2 s_xy / (s_x^2 + s_y^2 + (m_x - m_y)^2)`` with population (1/N) moments.
    Shapes (N,), any float dtype; returns a float in [-1, 1] (0 when both inputs are constant).
    """
    x, y = _check_pair(y_true, y_pred, "ccc")
    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = x.mean(), y.mean()
    sxy = ((x - mx) * (y - my)).mean()
    den = x.var() + y.var() + (mx - my) ** 2
    return float(2 * sxy / den) if den > 0 else 0.0


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metrics for one continuous dimension (valence, arousal or dominance).

    Args:
        y_true, y_pred: float arrays, shape (N,), in the label's own units (MER valence: [-5, 5]).

    Returns:
        ``mse``, ``mae`` (scikit-learn), ``pcc`` (Pearson r, scipy; 0 when an input is constant), ``ccc`` (:func:`ccc`).
    """
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    y_true, y_pred = _check_pair(y_true, y_pred, "regression_metrics")
    y_true, y_pred = y_true.astype(np.float64), y_pred.astype(np.float64)
    if len(y_true) > 1 and np.std(y_true) > 0 and np.std(y_pred) > 0:
        pcc = float(pearsonr(y_true, y_pred)[0])
    else:
        pcc = 0.0
    return {
        "mse": float(mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "pcc": pcc,
        "ccc": ccc(y_true, y_pred),
    }


VAD = ("valence", "arousal", "dominance")


def vad_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metrics for 3-d valence-arousal-dominance regression.

    Args:
        y_true, y_pred: float arrays, shape (N, 3), columns valence, arousal, dominance.

    Returns:
        ``<dim>_<metric>`` for each dimension and :func:`regression_metrics` metric, their means
        ``mse``, ``mae``, ``pcc``, ``ccc``, and ``l2``: mean Euclidean distance ``mean_i ||y_i - ŷ_i||_2``.

    Raises:
        ValueError: shapes differ or are not (N, 3).
    """
    y_true, y_pred = _check_pair(y_true, y_pred, "vad_metrics")
    if y_true.ndim != 2 or y_true.shape[1] != 3:
        raise ValueError(f"vad_metrics: expected shape (N, 3), got {y_true.shape}")
    out: dict[str, float] = {}
    for j, dim in enumerate(VAD):
        for k, v in regression_metrics(y_true[:, j], y_pred[:, j]).items():
            out[f"{dim}_{k}"] = v
    for k in ("mse", "mae", "pcc", "ccc"):
        out[k] = float(np.mean([out[f"{d}_{k}"] for d in VAD]))
    out["l2"] = float(np.linalg.norm(y_true.astype(np.float64) - y_pred, axis=1).mean())
    return out


def mer2023_score(waf: float, valence_mse: float) -> float:
    """MER 2023 MER-MULTI combined score: ``WAF - 0.25 * MSE_valence`` (Lian et al., MER 2023 baseline paper)."""
    return float(waf - 0.25 * valence_mse)


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and (population) std over folds of every scalar metric; lists such as ``confusion`` are skipped."""
    keys = [k for k, v in per_fold[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)] if per_fold else []
    mean = {k: float(np.mean([f[k] for f in per_fold])) for k in keys}
    std = {k: float(np.std([f[k] for f in per_fold])) for k in keys}
    return {"mean": mean, "std": std}


def evaluate(outputs: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int, threshold: float = 0.18) -> dict[str, Any]:
    """Metrics of model outputs against labels (rows aligned): classification metrics on ``probs`` (N, C),
    regression metrics prefixed ``valence_`` on ``valence``, :func:`emo.fuse.eval.metrics.vad_metrics`
    prefixed ``vad_`` on ``vad``, and the MER 2023 combined score when both emotion and valence are there.
    With multi-hot labels ``y["multihot"]`` (``--task multilabel``): the multi-label metrics of
    :func:`emo.fuse.methods.multilabel.multilabel_metrics` for the labels whose probability exceeds ``threshold``."""
    m: dict[str, Any] = {}
    if "probs" in outputs and "multihot" in y:
        from emo.fuse.methods.multilabel import multilabel_metrics, predict_multihot

        m.update(multilabel_metrics(y["multihot"] > 0, predict_multihot(outputs["probs"], threshold)))
    elif "probs" in outputs:
        m.update(classification_metrics(y["discrete"], outputs["probs"].argmax(1), n_classes))
    if "valence" in outputs:
        m.update({f"valence_{k}": v for k, v in regression_metrics(y["valence"], outputs["valence"]).items()})
    if "vad" in outputs:
        m.update({f"vad_{k}": v for k, v in vad_metrics(y["vad"], outputs["vad"]).items()})
    if "waf" in m and "valence_mse" in m:
        m["mer2023_score"] = mer2023_score(m["waf"], m["valence_mse"])
    return m


def wheel_metrics(predicted: list[list[str]], true: list[list[str]], wheels, level: str = "level1") -> dict[str, float]:
    """The MER-FG emotion-wheel scores of multi-label (open-vocabulary) predictions, for ``metrics.json``.

    Args:
        predicted, true: per sample, the predicted / true emotion words (same length and order).
        wheels: :class:`emo.lexicon.wheel.EmotionWheels` or the ``--emotion-wheel`` folder.
        level: ``level1`` (the challenge's score) or ``level2``.

    Returns:
        ``wheel_f1``, ``wheel_precision``, ``wheel_recall`` (means over the five wheels;
        :func:`emo.lexicon.wheel.wheel_scores`, the MER 2025 baseline's ``wheel_metric_calculation``)
        and ``wheel_<k>_f1`` per wheel.

    Raises:
        ValueError: lengths differ or no samples; :class:`emo.lexicon.wheel.WheelError`: unusable folder.
    """
    from emo.lexicon.wheel import EmotionWheels, load_wheels, wheel_scores

    w = wheels if isinstance(wheels, EmotionWheels) else load_wheels(wheels)
    s = wheel_scores(predicted, true, w, level)
    out = {"wheel_f1": s["f1"], "wheel_precision": s["precision"], "wheel_recall": s["recall"]}
    out.update({f"{k}_f1": v["f1"] for k, v in s["per_wheel"].items()})
    return out


def multilabel_wheel_metrics(probs: np.ndarray, classes: list[str], true_words: list[list[str]], wheels,
                             threshold: float, level: str = "level1") -> dict[str, float]:
    """:func:`wheel_metrics` of a multi-label model's outputs: the predicted words of sample ``i`` are
    the classes whose probability exceeds ``threshold`` (UniVA's rule; ``--task multilabel``) or,
    where none does, the most probable class: the same label sets as every other multi-label metric
    (:func:`emo.fuse.methods.multilabel.predict_multihot` with ``at_least_one``); the true words are the
    sample's own label words (all of them, also those outside the class list).

    Args:
        probs: float (N, C) class probabilities, rows aligned with ``true_words``.
        classes: the C class names (emotion words).
        true_words: per sample, its emotion words as the dataset gives them.
        wheels, level: as :func:`wheel_metrics`.

    Raises:
        ValueError: shapes disagree or non-finite probabilities.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(true_words), len(classes)):
        raise ValueError(f"multilabel_wheel_metrics: probs shape {p.shape}, expected ({len(true_words)}, {len(classes)})")
    if not np.all(np.isfinite(p)):
        raise ValueError("multilabel_wheel_metrics: non-finite probabilities")
    pred = [[classes[j] for j in (np.flatnonzero(row > threshold) if (row > threshold).any() else [int(row.argmax())])] for row in p]
    return wheel_metrics(pred, [list(t) for t in true_words], wheels, level)


def degenerate_warnings(metrics: dict[str, Any], classes: list[str] | None, where: str = "pooled") -> list[str]:
    """Warnings for a classification result that is not a model of the classes (empty when fine).

    * one predicted class for every row: the confusion matrix (rows true, columns predicted) has
      a single non-zero column; the warning names the class;
    * chance-level UAR: ``uar <= 1/C + 0.02`` with ``C`` the classes present among the true labels
      (a classifier that guesses, or predicts one class, scores ``1/C`` in expectation).

    Args:
        metrics: a dict of :func:`classification_metrics` (``confusion``, ``uar``).
        classes: class names in confusion-matrix order (indices are shown without them).
        where: which predictions (``pooled``, ``test``, a fold's name), for the message.
    """
    cm = metrics.get("confusion")
    if cm is None:
        return []
    cm = np.asarray(cm)
    if cm.size == 0 or cm.sum() == 0:
        return []
    name = (lambda j: classes[j]) if classes and len(classes) == cm.shape[1] else (lambda j: str(j))  # noqa: E731
    out = []
    cols = np.flatnonzero(cm.sum(0))
    present = int((cm.sum(1) > 0).sum())
    if len(cols) == 1 and present > 1:
        out.append(f"{where}: degenerate result: every one of the {int(cm.sum())} rows is predicted {name(int(cols[0]))!r}")
    uar = metrics.get("uar")
    if uar is not None and present > 1 and float(uar) <= 1.0 / present + 0.02:
        out.append(f"{where}: chance-level UAR {float(uar):.4f} (chance for {present} classes is {1.0 / present:.4f})")
    return out
