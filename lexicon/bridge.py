"""The NRC-VAD bridge wired for training and scoring (Jia et al., 2024, arXiv:2409.07901, Sec. 3).

Forward (training targets): a discretely labelled sample gets the NRC-VAD point of its label
in [-1, 1] (:func:`emo.lexicon.labels.label_vad`; neutral is the origin, as in the paper), so a
VAD regression head can be trained on any discretely labelled dataset.

Backward (decoding a predicted VAD point): the k-means label of the point
(:class:`emo.lexicon.classifier.VADClassifier`, centres started at the classes' own points)
and the open-vocabulary words within L2 radius ``r`` of it, nearest first
(:meth:`emo.lexicon.vocabulary.Vocabulary.nearest`; the paper uses ``r = 0.25``).

The VAD space here is NRC-VAD mapped to [-1, 1] (``2x - 1``). :func:`check_vad` refuses points
outside it; predicted points of a regression head may overshoot slightly, so the decoder
itself does not refuse them (the nearest centre and the words within the radius are still
defined) but :class:`VADBridge` reports how many fell outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emo.lexicon.classifier import as_vad_points

#: The accepted range of each of valence, arousal, dominance (NRC-VAD mapped with 2x - 1).
VAD_RANGE = (-1.0, 1.0)
DIMS = ("valence", "arousal", "dominance")


def check_vad(point, what: str = "VAD point") -> np.ndarray:
    """Validate one VAD point: 3 finite numbers, each in [-1, 1].

    Returns:
        float64 (3,).

    Raises:
        ValueError: naming the dimension, its value and the accepted range.
    """
    p = np.asarray(point, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"a {what} must be 3 finite numbers (valence, arousal, dominance), got {point!r}")
    lo, hi = VAD_RANGE
    for dim, v in zip(DIMS, p):
        if not lo <= v <= hi:
            raise ValueError(f"{what}: {dim} {v:g} is outside the accepted range [{lo:g}, {hi:g}] "
                             "(NRC-VAD scores mapped from [0, 1] with 2x - 1)")
    return p


def label_targets(labels: Sequence[str | None], classes: Sequence[str], lexicon=None) -> np.ndarray:
    """VAD regression targets of discretely labelled samples (the bridge's forward direction).

    Args:
        labels: per sample, a class name from ``classes`` or ``None`` (unlabelled).
        classes: the dataset's class names (any spelling :func:`~emo.lexicon.labels.canonical_label`
            knows: ``joy``, ``happiness``, ``worried``, ...).
        lexicon: :class:`~emo.lexicon.nrc.VADLexicon`, a path, or ``None`` to locate it.

    Returns:
        float32 (N, 3) in [-1, 1]: the NRC-VAD of each sample's label (neutral = (0, 0, 0));
        NaN rows for unlabelled samples.

    Raises:
        UnknownLabelError: a class emo has no VAD for (the message lists the known names).
        ValueError: a label not in ``classes``.
    """
    from emo.lexicon.labels import labels_vad

    table = labels_vad(list(classes), lexicon)
    index = {c: i for i, c in enumerate(classes)}
    out = np.full((len(labels), 3), np.nan, dtype=np.float32)
    for i, lab in enumerate(labels):
        if lab is None:
            continue
        if lab not in index:
            raise ValueError(f"label {lab!r} is not one of the classes {list(classes)}")
        out[i] = table[index[lab]]
    return out


@dataclass
class Decoded:
    """The bridge's reading of VAD points.

    Attributes:
        labels: k-means label per point (a class name).
        words: per point, ``[(word, distance), ...]`` within the radius, nearest first.
        outside: number of points with a coordinate outside [-1, 1].
    """

    labels: list[str]
    words: list[list[tuple[str, float]]]
    outside: int


class VADBridge:
    """Decode predicted VAD points into a discrete label and open-vocabulary words.

    Args:
        classes: the class names the k-means labels use (a dataset's own spelling).
        vocabulary: ``"affect"`` (default), ``"emolex"``, a word-list path, or a
            :class:`~emo.lexicon.vocabulary.Vocabulary`.
        radius: L2 radius for the words (0.25 as in the paper).
        lexicon, emolex: lexicon paths (or ``None`` to locate them).

    Raises:
        UnknownLabelError, ValueError, LexiconNotFoundError: as :class:`VADClassifier` and
            :func:`get_vocabulary` raise them.
    """

    def __init__(self, classes: Sequence[str], vocabulary="affect", radius: float = 0.25, lexicon=None, emolex=None) -> None:
        from emo.lexicon.classifier import VADClassifier
        from emo.lexicon.nrc import VADLexicon, load_nrc_vad
        from emo.lexicon.vocabulary import Vocabulary, get_vocabulary

        r = float(radius)
        if not np.isfinite(r) or r < 0:
            raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
        lex = lexicon if isinstance(lexicon, VADLexicon) else load_nrc_vad(lexicon)
        self.vocabulary = vocabulary if isinstance(vocabulary, Vocabulary) else get_vocabulary(vocabulary, lex, emolex)
        self.radius = r
        self.classifier = VADClassifier(list(classes), vocabulary=self.vocabulary, lexicon=lex)
        self.classes = list(classes)

    def decode(self, vad) -> Decoded:
        """k-means label and words within the radius for each point.

        Args:
            vad: (N, 3) or (3,) finite floats.

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        x = as_vad_points(vad)
        labels = [self.classes[k] for k in self.classifier.assign(x)]
        words = [self.vocabulary.nearest(p, self.radius) for p in x]
        lo, hi = VAD_RANGE
        outside = int(((x < lo) | (x > hi)).any(axis=1).sum())
        return Decoded(labels=labels, words=words, outside=outside)

    def describe(self) -> dict:
        """Provenance for results/config: classes, radius, vocabulary description and size, k-means centres."""
        return {
            "classes": self.classes,
            "radius": self.radius,
            "vocabulary": self.vocabulary.description,
            "vocabulary_size": len(self.vocabulary),
            "centres": np.round(self.classifier.centres, 6).tolist(),
            "source": "Jia et al. 2024 (arXiv:2409.07901) Sec. 3: k-means over the vocabulary's NRC-VAD, "
                      "centres started at the classes' points; words within L2 radius",
        }
