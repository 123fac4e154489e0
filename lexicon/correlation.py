"""UniVA's emotion correlation prior (ACM MM 2024).

UniVA ("Unimodal Valence-Arousal driven contrastive learning for multimodal
multi-label emotion recognition") places every emotion category in the
valence-arousal plane and uses the similarity of categories there as a prior.

* Eq. 8, the emotion correlation matrix: ``M_ij = cos((V_i, A_i), (V_j, A_j))``,
  implemented as written by :func:`correlation_matrix` (the VA of a label is its
  NRC-VAD, see :mod:`emo.lexicon.labels`). Neutral sits at the origin, where the
  cosine is undefined; emo defines ``M[neutral, neutral] = 1`` and
  ``M[neutral, j] = M[j, neutral] = 0`` (neutral is uncorrelated with every
  emotion), which keeps M symmetric with a unit diagonal.

* Eq. 9, the prior loss eta. The paper's exact formula could not be retrieved
  offline when this was written, so two documented readings are provided:

  - :func:`label_embedding_prior_loss`: the paper uses M "as priors to learn the
    emotion category representation"; this loss is the mean squared difference
    between the cosine-similarity matrix of learned category embeddings and M.
  - :func:`correlation_prior_loss` (what the fusion trainer calls, on logits): the
    expected VA dissimilarity of the prediction to the true class,
    ``eta = mean_b sum_c p_bc (1 - M[y_b, c]) / 2``, with ``p = softmax(logits)``.
    It is 0 for a one-hot prediction of the right class, at most 1, and
    penalises confusing opposed emotions (happy vs sad, ``M ~ -1``) more than
    neighbouring ones (happy vs surprised, ``M ~ 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def correlation_matrix(labels: str | Sequence[str], lexicon=None) -> np.ndarray:
    """UniVA eq. 8: cosine similarity of the labels' (valence, arousal) vectors.

    Args:
        labels: a label-set name (``"mer"``) or class names (any name in
            :data:`emo.lexicon.labels.SYNONYMS`).
        lexicon: :class:`~emo.lexicon.nrc.VADLexicon`, path, or ``None`` to locate it.

    Returns:
        float32, shape (C, C), symmetric, entries in [-1, 1], unit diagonal. A label whose
        (V, A) is the zero vector (neutral) has 1 with itself and 0 with every other label.

    Raises:
        UnknownLabelError: an unknown label or set name.
    """
    from emo.lexicon.labels import label_set, labels_vad

    names = label_set(labels) if isinstance(labels, str) else list(labels)
    va = labels_vad(names, lexicon)[:, :2].astype(np.float64)
    norm = np.linalg.norm(va, axis=1)
    zero = norm < 1e-12
    unit = np.where(zero[:, None], 0.0, va / np.where(zero, 1.0, norm)[:, None])
    m = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m.astype(np.float32)


def correlation_prior_loss(logits, targets, M):
    """Prior loss eta: expected VA dissimilarity ``mean_b sum_c softmax(logits)_bc (1 - M[y_b, c]) / 2``.

    A reading of UniVA eq. 9 (see the module docstring for why and for the
    alternative :func:`label_embedding_prior_loss`). Differentiable in ``logits``.

    Args:
        logits: float tensor (B, C).
        targets: int64 tensor (B,), class indices in [0, C).
        M: (C, C) correlation matrix (tensor or array), e.g. from :func:`correlation_matrix`.

    Returns:
        Scalar tensor in [0, 1] (for M in [-1, 1]), dtype of ``logits``; 0 for an empty batch.

    Raises:
        ValueError: shape mismatch, non-integer targets, or targets out of range.
    """
    import torch

    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    b, c = logits.shape
    M = torch.as_tensor(M, dtype=logits.dtype, device=logits.device)
    if M.shape != (c, c):
        raise ValueError(f"M must be ({c}, {c}) to match logits, got {tuple(M.shape)}")
    if targets.shape != (b,) or targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be an int64 tensor of shape ({b},), got {targets.dtype} {tuple(targets.shape)}")
    if b == 0:
        return logits.sum() * 0.0
    if int(targets.min()) < 0 or int(targets.max()) >= c:
        raise ValueError(f"targets must lie in [0, {c}), got range [{int(targets.min())}, {int(targets.max())}]")
    p = torch.softmax(logits, dim=-1)
    cost = (1.0 - M[targets.long()]) / 2.0  # (B, C)
    return (p * cost).sum(dim=-1).mean()


def label_embedding_prior_loss(embeddings, M):
    """Align learned category embeddings with the VA correlation prior: ``mean_ij (cos(e_i, e_j) - M_ij)^2``.

    The other reading of UniVA eq. 9 (category representations learned with M as
    prior); see the module docstring.

    Args:
        embeddings: float tensor (C, D), one learned vector per emotion category.
        M: (C, C) correlation matrix (tensor or array).

    Returns:
        Scalar tensor in [0, 4]; 0 when the embeddings' cosine matrix equals M.

    Raises:
        ValueError: shape mismatch.
    """
    import torch

    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (C, D), got shape {tuple(embeddings.shape)}")
    c = embeddings.shape[0]
    M = torch.as_tensor(M, dtype=embeddings.dtype, device=embeddings.device)
    if M.shape != (c, c):
        raise ValueError(f"M must be ({c}, {c}) to match {c} embeddings, got {tuple(M.shape)}")
    e = torch.nn.functional.normalize(embeddings, dim=-1)
    return ((e @ e.T - M) ** 2).mean()
