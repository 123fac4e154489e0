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
        (= balanced accuracy), ``confusion``: (C, C) list of ints, rows = true class, columns = predicted.

    Raises:
        ValueError: shapes differ, no samples, or indices outside ``[0, n_classes)``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    y_true, y_pred = _check_pair(y_true, y_pred, "classification_metrics")
    for arr, name in ((y_true, "y_true"), (y_pred, "y_pred")):
        if arr.min() < 0 or arr.max() >= n_classes:
            raise ValueError(f"classification_metrics: {name} has class indices outside [0, {n_classes})")
    present = np.unique(y_true)
    return {
        "waf": float(f1_score(y_true, y_pred, average="weighted", labels=present, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "uar": float(recall_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
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


def evaluate(outputs: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int) -> dict[str, Any]:
    """Metrics of model outputs against labels (rows aligned): classification metrics on ``probs`` (N, C),
    regression metrics prefixed ``valence_`` on ``valence``, :func:`emo.fuse.metrics.vad_metrics`
    prefixed ``vad_`` on ``vad``, and the MER 2023 combined score when both emotion and valence are there."""
    m: dict[str, Any] = {}
    if "probs" in outputs:
        m.update(classification_metrics(y["discrete"], outputs["probs"].argmax(1), n_classes))
    if "valence" in outputs:
        m.update({f"valence_{k}": v for k, v in regression_metrics(y["valence"], outputs["valence"]).items()})
    if "vad" in outputs:
        m.update({f"vad_{k}": v for k, v in vad_metrics(y["vad"], outputs["vad"]).items()})
    if "waf" in m and "valence_mse" in m:
        m["mer2023_score"] = mer2023_score(m["waf"], m["valence_mse"])
    return m
