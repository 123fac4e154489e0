"""VAD -> discrete label by k-means over an emotion vocabulary.

Jia et al. (2024), "Bridging Discrete and Continuous: A Multimodal Strategy for
Complex Emotion Detection" (arXiv:2409.07901), Sec. 3: the emotion vocabulary's
NRC-VAD points are clustered with k-means, k = number of basic classes, the
initial centres placed at the basic emotions; each cluster is named after the
basic emotion it started from, and a predicted VAD point gets the label of its
cluster (the nearest fitted centre).

Fitting moves the centres, so a basic emotion's own point may end up in another
cluster; :meth:`VADClassifier.own_cluster` reports that for every label (the
proof checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np



def as_vad_points(vad) -> np.ndarray:
    """``vad`` as float64 (N, 3) points (a single (3,) point becomes (1, 3)).

    Raises:
        ValueError: wrong shape or non-finite values.
    """
    x = np.asarray(vad, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != 3 or not np.all(np.isfinite(x)):
        raise ValueError(f"VAD input must be finite with shape (3,) or (N, 3), got shape {np.shape(vad)}")
    return x

class VADClassifier:
    """k-means classifier in VAD space (Jia et al., 2024).

    Args:
        labels: a label-set name (``"mer"``, ``"meld"``, ...) or the class names; predictions
            use these names. Two names that resolve to the same canonical label are refused.
        vocabulary: :class:`~emo.lexicon.vocabulary.Vocabulary` to cluster; ``None`` uses
            :func:`~emo.lexicon.vocabulary.affect_vocabulary` (185 affect terms, NRC-VAD only).
        lexicon: :class:`~emo.lexicon.nrc.VADLexicon`, a path, or ``None`` to locate it.
        max_iter, tol: passed to :class:`sklearn.cluster.KMeans` (``n_init=1``: the
            initial centres are given, so the fit is deterministic).

    Attributes:
        labels: class names, length K.
        init_centres: float64 (K, 3), the labels' VAD (neutral at the origin).
        centres: float64 (K, 3), fitted cluster centres; row k is named ``labels[k]``.
        kmeans: the fitted :class:`sklearn.cluster.KMeans`.

    Raises:
        UnknownLabelError: an unknown label name.
        ValueError: duplicate labels, or fewer vocabulary words than classes.
    """

    def __init__(
        self,
        labels: str | Sequence[str] = "mer",
        vocabulary=None,
        lexicon=None,
        max_iter: int = 300,
        tol: float = 1e-4,
    ) -> None:
        from sklearn.cluster import KMeans

        from emo.lexicon.labels import as_lexicon, canonical_label, label_set, labels_vad
        from emo.lexicon.vocabulary import affect_vocabulary

        names = label_set(labels) if isinstance(labels, str) else [str(x) for x in labels]
        if len(names) < 2:
            raise ValueError(f"a VADClassifier needs at least 2 labels, got {names!r}")
        canon = [canonical_label(x) for x in names]
        dup = sorted({c for c in canon if canon.count(c) > 1})
        if dup:
            raise ValueError(f"labels {names!r} resolve to the same canonical label(s) {dup}: their centres would coincide")
        lex = as_lexicon(lexicon)
        vocab = vocabulary if vocabulary is not None else affect_vocabulary(lex)
        if len(vocab) < len(names):
            raise ValueError(f"vocabulary has {len(vocab)} words, fewer than the {len(names)} classes")
        self.labels: list[str] = names
        self.vocabulary = vocab
        self.init_centres = labels_vad(names, lex).astype(np.float64)
        self.kmeans = KMeans(n_clusters=len(names), init=self.init_centres, n_init=1, max_iter=max_iter, tol=tol)
        self.kmeans.fit(vocab.vad.astype(np.float64))
        self.centres: np.ndarray = self.kmeans.cluster_centers_

    def assign(self, vad) -> np.ndarray:
        """Cluster index (nearest fitted centre) of VAD points.

        Args:
            vad: (3,) or (N, 3) finite floats.

        Returns:
            int64, shape (N,) (N = 1 for a single point).

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        x = as_vad_points(vad)
        d = ((x[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return d.argmin(axis=1).astype(np.int64)

    def predict(self, vad) -> str | list[str]:
        """Label of the cluster each VAD point falls in.

        Args:
            vad: (3,) -> one label; (N, 3) -> a list of N labels.

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        k = self.assign(vad)
        out = [self.labels[i] for i in k]
        return out[0] if np.ndim(vad) == 1 else out

    def own_cluster(self) -> dict[str, bool]:
        """For each label: does its own VAD point fall in the cluster named after it after fitting?"""
        k = self.assign(self.init_centres)
        return {name: bool(k[i] == i) for i, name in enumerate(self.labels)}

    def cluster_sizes(self) -> dict[str, int]:
        """Number of vocabulary words in each label's cluster."""
        counts = np.bincount(self.kmeans.labels_, minlength=len(self.labels))
        return {name: int(counts[i]) for i, name in enumerate(self.labels)}
