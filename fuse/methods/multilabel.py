"""Multi-label emotion recognition: class lists, targets, the KL loss, thresholding, metrics.

A sample may carry several emotion words (``Sample.emotions``: a ``folder`` dataset's
``emotions`` column, MER 2025/2026 fine-grained lists). Following UniVA (Zheng, Yu, Xia,
"A Unimodal Valence-Arousal Driven Contrastive Learning Framework for Multimodal Multi-Label
Emotion Recognition", ACM MM 2024):

* the model outputs one softmax distribution over the C labels (eq. 7);
* the target is the *normalised* multi-hot vector ``y_i / Σ_j y_ij`` and the loss is the KL
  divergence between it and the prediction (eq. 10), :func:`kl_loss`;
* label ``j`` is predicted when ``p_ij > ζ`` (ζ = 0.18 in the paper, :data:`DEFAULT_THRESHOLD`),
  :func:`predict_multihot`; ζ can be tuned on validation data, :func:`tune_threshold`;
* metrics as UniVA (after HHMPN): example-based accuracy (Jaccard), Hamming loss, micro-F1 and
  macro-F1, :func:`multilabel_metrics`.

Single-label data is the special case of one word per sample: the normalised target is one-hot
(KL = cross-entropy), and the metrics reduce to accuracy, ``2 (1 - accuracy) / C``, accuracy and
the macro-F1 of the class indices (tested).

Everything here is plain numpy (torch only inside :func:`kl_loss`), so other modules (issue 16's
emotion-wheel metric) can build on :class:`LabelSpace` with their own word mapping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: UniVA's decision threshold ζ on the softmax output (paper, Sec. 4.2).
DEFAULT_THRESHOLD = 0.18

#: Candidate ζ values searched by :func:`tune_threshold`.
THRESHOLD_GRID = tuple(round(x, 2) for x in np.arange(0.02, 0.62, 0.02))


class MultiLabelError(ValueError):
    """Unusable multi-label data (no words, bad shapes, non-finite probabilities)."""


def sample_words(sample: Any) -> list[str] | None:
    """The emotion words of a :class:`emo.extract.datasets.base.Sample`: its ``emotions`` list, else
    its ``discrete`` label as a one-word list, else ``None`` (unlabelled)."""
    if getattr(sample, "emotions", None):
        return list(sample.emotions)
    if getattr(sample, "discrete", None):
        return [sample.discrete]
    return None


@dataclass
class LabelSpace:
    """The ordered label list of a multi-label task and the word → label mapping.

    Build with :meth:`from_words` from the *training* samples' words. A word is lower-cased and
    stripped, then passed through ``word_map`` (an optional callable: word → label, or ``None`` to
    drop the word; e.g. a mapping through the emotion wheels to a coarser level). The mapping is
    not serialised (a callable); its name is kept in ``word_map_name`` for the run config.

    Attributes:
        classes: the C label names, sorted alphabetically.
        counts: training occurrences of each label (after mapping), same order.
        word_map_name: description of ``word_map`` (``"identity"`` without one).
        warnings: what building the targets left out or accepted on request (clips with an empty
            word set, rare or unknown words under ``--allow-rare-classes``), for the run's
            ``warnings`` (:func:`emo.fuse.methods.semi.multilabel_targets`); not serialised.
    """

    classes: list[str]
    counts: list[int] = field(default_factory=list)
    word_map: Callable[[str], str | None] | None = field(default=None, repr=False, compare=False)
    word_map_name: str = "identity"
    warnings: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise MultiLabelError(f"duplicate labels in {self.classes}")
        self.index = {c: i for i, c in enumerate(self.classes)}

    @staticmethod
    def _norm(word: str, word_map) -> str | None:
        w = " ".join(str(word).strip().lower().split())
        if not w:
            return None
        if word_map is not None:
            w = word_map(w)
            w = None if w is None else " ".join(str(w).strip().lower().split()) or None
        return w

    def map_words(self, words: Iterable[str] | None) -> list[str]:
        """Normalised, mapped, de-duplicated words of one sample (order kept); ``[]`` for ``None``."""
        out: list[str] = []
        for w in words or []:
            m = self._norm(w, self.word_map)
            if m is not None and m not in out:
                out.append(m)
        return out

    @classmethod
    def from_words(cls, word_lists: Iterable[Sequence[str] | None], word_map: Callable[[str], str | None] | None = None,
                   min_count: int = 1, word_map_name: str | None = None) -> LabelSpace:
        """Label list from the words of the training samples (``None`` entries: unlabelled, skipped).

        Args:
            word_lists: per sample, its emotion words (any case).
            word_map: optional word → label callable (``None`` result drops the word).
            min_count: labels seen in fewer training samples are left out (their words are then
                ignored in targets, see :meth:`encode`).
            word_map_name: recorded name of ``word_map`` (default: its ``__name__``).

        Raises:
            MultiLabelError: no word left.
        """
        tmp = cls([], word_map=word_map)
        counts: Counter[str] = Counter()
        for words in word_lists:
            counts.update(tmp.map_words(words))
        classes = sorted(c for c, n in counts.items() if n >= min_count)
        if not classes:
            raise MultiLabelError(f"no emotion word occurs in at least {min_count} training sample(s)")
        name = word_map_name or ("identity" if word_map is None else getattr(word_map, "__name__", repr(word_map)))
        return cls(classes, [counts[c] for c in classes], word_map, name)

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, word_lists: Sequence[Sequence[str] | None]) -> tuple[np.ndarray, np.ndarray, int]:
        """Multi-hot matrix of N samples.

        Returns:
            ``(Y, labelled, n_unknown)``: Y float32 (N, C) in {0, 1}; ``labelled`` bool (N,), True
            where the sample has at least one word inside the label list; ``n_unknown``: word
            occurrences not in the label list (ignored).
        """
        y = np.zeros((len(word_lists), len(self.classes)), dtype=np.float32)
        unknown = 0
        for i, words in enumerate(word_lists):
            for w in self.map_words(words):
                j = self.index.get(w)
                if j is None:
                    unknown += 1
                else:
                    y[i, j] = 1.0
        return y, y.sum(axis=1) > 0, unknown

    def decode(self, multihot: np.ndarray) -> list[list[str]]:
        """Label names of each row of a (N, C) bool/0-1 matrix."""
        m = np.asarray(multihot).astype(bool)
        return [[self.classes[j] for j in np.flatnonzero(row)] for row in m]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{classes, counts, word_map}``."""
        return {"classes": list(self.classes), "counts": [int(c) for c in self.counts], "word_map": self.word_map_name}


def normalized_targets(multihot: np.ndarray) -> np.ndarray:
    """UniVA eq. 10's target: each row divided by its sum, float32 (N, C); all-zero rows stay zero."""
    y = np.asarray(multihot, dtype=np.float32)
    if y.ndim != 2:
        raise MultiLabelError(f"multi-hot targets must be (N, C), got shape {y.shape}")
    s = y.sum(axis=1, keepdims=True)
    return np.divide(y, s, out=np.zeros_like(y), where=s > 0)


def kl_loss(logits, target, weight=None):
    """UniVA eq. 10: ``KL(t_i ‖ softmax(logits_i)) = Σ_j t_ij (log t_ij − log p_ij)`` (0 log 0 = 0),
    averaged over rows (weighted by ``weight`` when given).

    With a one-hot target this is the cross-entropy. Differentiable in ``logits``.

    Args:
        logits: float tensor (B, C) (eq. 7's softmax is applied here).
        target: float tensor (B, C), rows summing to 1 (:func:`normalized_targets`).
        weight: optional float tensor (B,) ≥ 0 (e.g. 0.5 for pseudo-labelled rows, 0 to skip a row).

    Returns:
        Scalar tensor ≥ 0 (0 for an empty batch or all-zero weights).

    Raises:
        ValueError: shapes differ.
    """
    import torch

    if logits.shape != target.shape or logits.ndim != 2:
        raise ValueError(f"kl_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (B, C)")
    logp = torch.log_softmax(logits, dim=-1)
    t = target.to(logits.dtype)
    per_row = (torch.xlogy(t, t) - t * logp).sum(dim=-1)
    if weight is None:
        return per_row.mean() if len(per_row) else logits.sum() * 0.0
    w = weight.to(logits.dtype)
    den = w.sum()
    return (per_row * w).sum() / den if float(den) > 0 else logits.sum() * 0.0


def predict_multihot(probs: np.ndarray, threshold: float = DEFAULT_THRESHOLD, at_least_one: bool = True) -> np.ndarray:
    """Labels whose probability exceeds ζ (UniVA: ``p_ij > ζ``).

    Args:
        probs: float (N, C) softmax outputs.
        threshold: ζ.
        at_least_one: where no label exceeds ζ, predict the most probable one (the paper is silent
            on empty predictions; emo chooses to always predict at least one label, since every
            sample of an emotion dataset has one). ``False``: empty rows stay empty.

    Returns:
        bool (N, C).

    Raises:
        MultiLabelError: non-finite probabilities or a non-2-d array.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise MultiLabelError(f"probabilities must be (N, C), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise MultiLabelError("probabilities contain NaN or inf")
    pred = p > threshold
    if at_least_one and len(p):
        empty = ~pred.any(axis=1)
        pred[np.flatnonzero(empty), p[empty].argmax(axis=1)] = True
    return pred


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if t.shape != p.shape or t.ndim != 2:
        raise MultiLabelError(f"multilabel_metrics: y_true {t.shape} and y_pred {p.shape} must both be (N, C)")
    if t.shape[0] == 0:
        raise MultiLabelError("multilabel_metrics: no samples")
    return t, p


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Multi-label metrics of UniVA (Sec. 4.1, after HHMPN; definitions of Zhang & Zhou, TKDE 2014).

    With ``T_i``, ``P_i`` the true and predicted label sets of sample i (N samples, C labels):

    * ``ml_accuracy`` (example-based accuracy, Jaccard): ``(1/N) Σ_i |T_i ∩ P_i| / |T_i ∪ P_i|``,
      1 for a sample with both sets empty (= ``sklearn.metrics.jaccard_score(average="samples",
      zero_division=1)``);
    * ``hamming_loss``: ``(1/(N C)) Σ_i |T_i Δ P_i|`` (= ``sklearn.metrics.hamming_loss``);
    * ``micro_f1``: ``2 Σ tp / (2 Σ tp + Σ fp + Σ fn)`` over all labels (``f1_score(average="micro")``);
    * ``macro_f1``: mean over the labels present in ``y_true`` of ``2 tp / (2 tp + fp + fn)``
      (= ``f1_score(average="macro", labels=present)``; emo averages over present labels, as its
      single-label WAF/UAR do, so a label absent from an evaluation fold does not count as 0).

    Args:
        y_true, y_pred: bool or 0/1 arrays (N, C).

    Returns:
        dict of floats. For one label per sample on both sides: ``ml_accuracy`` = ``micro_f1`` =
        accuracy and ``hamming_loss`` = ``2 (1 − accuracy) / C``.

    Raises:
        MultiLabelError: shapes differ or are not (N, C), no samples.
    """
    t, p = _check(y_true, y_pred)
    n, c = t.shape
    inter = (t & p).sum(axis=1)
    union = (t | p).sum(axis=1)
    jac = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    tp = (t & p).sum(axis=0).astype(np.float64)
    fp = (~t & p).sum(axis=0).astype(np.float64)
    fn = (t & ~p).sum(axis=0).astype(np.float64)
    den_micro = 2 * tp.sum() + fp.sum() + fn.sum()
    present = t.any(axis=0)
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    return {
        "ml_accuracy": float(jac.mean()),
        "hamming_loss": float((t ^ p).sum() / (n * c)),
        "micro_f1": float(2 * tp.sum() / den_micro) if den_micro > 0 else 1.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def tune_threshold(probs: np.ndarray, y_true: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID,
                   metric: str = "micro_f1", at_least_one: bool = True) -> tuple[float, dict[str, float]]:
    """ζ maximising ``metric`` (``hamming_loss`` minimised) on validation data.

    Args:
        probs: float (N, C) validation probabilities; y_true: (N, C) bool multi-hot.
        grid: candidate thresholds (ties: the one closest to :data:`DEFAULT_THRESHOLD`).

    Returns:
        (ζ, metrics at ζ).
    """
    if metric not in ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1"):
        raise MultiLabelError(f"unknown threshold metric {metric!r}")
    sign = -1.0 if metric == "hamming_loss" else 1.0
    best = None
    for z in grid:
        m = multilabel_metrics(y_true, predict_multihot(probs, z, at_least_one))
        key = (sign * m[metric], -abs(z - DEFAULT_THRESHOLD))
        if best is None or key > best[0]:
            best = (key, float(z), m)
    assert best is not None
    return best[1], best[2]
