"""UniVA's emotion-correlation prior (Zheng, Yu, Xia, "A Unimodal Valence-Arousal Driven
Contrastive Learning Framework for Multimodal Multi-Label Emotion Recognition", ACM MM 2024, eq. 8–9).

* Eq. 8, the emotion correlation matrix: ``M_jl = cos((V_j, A_j), (V_l, A_l))``, the cosine of
  the labels' valence-arousal vectors (:func:`correlation_matrix`). The VA of a label is the
  NRC-VAD (mapped to [-1, 1]) of its canonical word (:mod:`emo.lexicon.labels`); a class name
  that is no known label (open-vocabulary emotion words, e.g. MER-FG's) is looked up in NRC-VAD
  as a word.

  Neutral: :func:`emo.lexicon.labels.label_vad` puts *neutral* at the VA origin (the midpoint of
  both scales), where the cosine is undefined and would make neutral's row of M zero (neutral
  uncorrelated with everything, not even itself). For M only, emo therefore uses NRC-VAD's own
  entry for the word "neutral" (valence 0.469, arousal 0.184 on the published [0, 1] scale, i.e.
  (−0.062, −0.632) after ``2x − 1``): a low-arousal, slightly negative point, so neutral
  correlates with calm/sad/bored and anti-correlates with excited states.

* Eq. 9, the label-free prior loss, minimised during training (:func:`correlation_prior_loss`)::

      η = (1/N) Σ_i Σ_{j,l} M_jl ‖ŷ_ij − ŷ_il‖²

  with ŷ_ij the predicted probability of label j for sample i. Pairs of positively correlated
  labels (M_jl > 0) are pulled towards equal probabilities, anti-correlated ones (M_jl < 0)
  pushed apart. It reads no label, so it also applies to unlabelled samples. Computed as
  ``η_i = 2 Σ_j ŷ_ij² r_j − 2 ŷ_iᵀ M ŷ_i`` with ``r_j = Σ_l M_jl`` (M symmetric), equal to the
  double sum (tested against a direct double loop).

  Caution, measured: as written η is not bounded below by 0 and does not depend on the input.
  For one sample it is smallest for a one-hot prediction of the class j minimising
  ``Σ_{l≠j} M_jl`` (the class most anti-correlated with the others, e.g. *sad*), so at full weight
  it can pull every prediction to that class (on a 4-class toy set with λ = 0.3 it did: WAF 1.0
  without η, 0.375 with it). ``emo fuse train --univa-eta`` scales it (1 = eq. 11, 0 = off).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def labels_va(names: Sequence[str], lexicon=None, neutral_word: bool = True) -> np.ndarray:
    """Valence-arousal of class names for eq. 8, float32 (C, 2) in [-1, 1].

    A name known to :mod:`emo.lexicon.labels` takes its canonical word's NRC-VAD; any other name is
    looked up in NRC-VAD directly. With ``neutral_word`` (default), *neutral* takes NRC-VAD's entry
    for the word "neutral" instead of the origin (see the module docstring).

    Raises:
        KeyError: a name that is neither a known label nor an NRC-VAD word (all such names listed).
        LexiconNotFoundError: no lexicon file found.
    """
    from emo.lexicon.labels import SYNONYMS, canonical_label, label_vad
    from emo.lexicon.nrc import VADLexicon, load_nrc_vad

    lex = lexicon if isinstance(lexicon, VADLexicon) else load_nrc_vad(lexicon)
    out = np.zeros((len(names), 2), dtype=np.float32)
    missing = []
    for i, name in enumerate(names):
        key = name.strip().lower()
        if key in SYNONYMS and not (neutral_word and canonical_label(key) == "neutral"):
            out[i] = label_vad(key, lex)[:2]
            continue
        v = lex.lookup(key)
        if v is None:
            missing.append(name)
        else:
            out[i] = v[:2]
    if missing:
        raise KeyError(f"{lex.path}: no valence-arousal for class name(s) {', '.join(map(repr, missing))} "
                       "(neither a known emotion label nor an NRC-VAD word)")
    return out


def correlation_matrix(labels: str | Sequence[str], lexicon=None) -> np.ndarray:
    """UniVA eq. 8: ``M_jl`` = cosine similarity of the labels' (valence, arousal) vectors.

    Args:
        labels: a label-set name (``"mer"``, ``"meld"``, ...) or class names (known labels or NRC-VAD words).
        lexicon: :class:`~emo.lexicon.nrc.VADLexicon`, path, or ``None`` to locate it.

    Returns:
        float32 (C, C), symmetric, entries in [-1, 1], unit diagonal. Neutral uses NRC-VAD's
        "neutral" entry (module docstring). A class whose VA is exactly the origin (possible only
        with a lexicon scoring a word 0.5/0.5) has 1 with itself and 0 elsewhere.

    Raises:
        UnknownLabelError: unknown label-set name. KeyError: a class name without VA.
    """
    from emo.lexicon.labels import label_set

    names = label_set(labels) if isinstance(labels, str) else list(labels)
    va = labels_va(names, lexicon).astype(np.float64)
    norm = np.linalg.norm(va, axis=1)
    zero = norm < 1e-12
    unit = np.where(zero[:, None], 0.0, va / np.where(zero, 1.0, norm)[:, None])
    m = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m.astype(np.float32)


def correlation_prior_loss(probs, M):
    """UniVA eq. 9: ``η = (1/N) Σ_i Σ_{j,l} M_jl (ŷ_ij − ŷ_il)²`` (label-free; minimised).

    Args:
        probs: float tensor (N, C), the predicted label probabilities ŷ (softmax outputs, eq. 7).
        M: (C, C) symmetric correlation matrix (tensor or array), e.g. :func:`correlation_matrix`.

    Returns:
        Scalar tensor, dtype of ``probs`` (may be negative where anti-correlated labels get
        different probabilities); 0 for N = 0. Differentiable in ``probs``.

    Raises:
        ValueError: ``probs`` not (N, C), or ``M`` not (C, C).
    """
    import torch

    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {tuple(probs.shape)}")
    n, c = probs.shape
    M = torch.as_tensor(M, dtype=probs.dtype, device=probs.device)
    if M.shape != (c, c):
        raise ValueError(f"M must be ({c}, {c}) to match probs, got {tuple(M.shape)}")
    if n == 0:
        return probs.sum() * 0.0
    M = (M + M.T) / 2  # eq. 9 only sees the symmetric part
    r = M.sum(dim=1)  # (C,)
    per = 2 * (probs ** 2 @ r) - 2 * ((probs @ M) * probs).sum(dim=1)
    return per.mean()
