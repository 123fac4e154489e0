"""Discrete emotion labels -> valence-arousal-dominance.

Every dataset names its classes differently (MELD ``joy``, EmoDB ``happiness``,
MER ``happy``). Each name is first resolved, through the explicit
:data:`SYNONYMS` table, to one *canonical label*; the VAD of a label is then the
NRC-VAD (mapped to [-1, 1]) of its canonical word, :data:`CANONICAL_WORD`.

Choice of canonical words: the adjective naming the felt state, because MER,
RAVDESS and MEAD name their classes that way and the issue asks for
``joy -> happy`` and ``surprise -> surprised``. So ``anger``/``angry`` use the
NRC-VAD of *angry*, ``fear``/``fearful`` of *fearful*, ``disgust``/``disgusted``
of *disgusted*, ``boredom``/``bored`` of *bored*, ``worried``/``worry`` of
*worried*; ``calm`` and ``contempt`` are their own words. ``neutral`` is
(0, 0, 0) by definition (the midpoint of every scale), not the NRC-VAD of the
word *neutral*.

Label sets (:data:`LABEL_SETS`) keep each dataset's own spelling and order, so
classifiers return the names the dataset uses.
"""

from __future__ import annotations

import numpy as np

#: Each dataset's class names, in its own spelling.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    # MER 2023/2024 discrete track (Lian et al.): 6 classes.
    "mer": ("neutral", "angry", "happy", "sad", "worried", "surprise"),
    # MELD (Poria et al., ACL 2019): 7 classes.
    "meld": ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"),
    # EmoDB (Burkhardt et al., Interspeech 2005): 7 classes.
    "emodb": ("neutral", "anger", "boredom", "disgust", "fear", "happiness", "sadness"),
    # MEAD / CREMA-D / RAVDESS names together (9 classes).
    "mead": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgusted", "surprised", "contempt"),
    # RAVDESS alone (8) and CREMA-D alone (6), as their file-name codes define them.
    "ravdess": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    "cremad": ("neutral", "happy", "sad", "angry", "fearful", "disgust"),
}

#: Canonical label -> the NRC-VAD word whose scores it takes (``None``: neutral, fixed at 0).
CANONICAL_WORD: dict[str, str | None] = {
    "neutral": None,
    "angry": "angry",
    "happy": "happy",
    "sad": "sad",
    "worried": "worried",
    "surprised": "surprised",
    "fearful": "fearful",
    "disgusted": "disgusted",
    "bored": "bored",
    "calm": "calm",
    "contempt": "contempt",
}

#: Every accepted label name (lower-case) -> canonical label. Explicit; nothing is guessed.
SYNONYMS: dict[str, str] = {
    **{c: c for c in CANONICAL_WORD},
    # anger
    "anger": "angry", "ang": "angry",
    # happiness
    "joy": "happy", "happiness": "happy", "hap": "happy",
    # sadness
    "sadness": "sad",
    # worry
    "worry": "worried",
    # surprise
    "surprise": "surprised", "sur": "surprised",
    # fear
    "fear": "fearful", "fea": "fearful",
    # disgust
    "disgust": "disgusted", "dis": "disgusted",
    # boredom
    "boredom": "bored",
    # neutral
    "neu": "neutral",
}


class UnknownLabelError(ValueError):
    """A label name (or label-set name) emo has no entry for; the message lists the known ones."""


def canonical_label(label: str) -> str:
    """Resolve a dataset's label name to its canonical label (``joy`` -> ``happy``).

    Case and surrounding space are ignored.

    Raises:
        UnknownLabelError: the name is not in :data:`SYNONYMS`.
    """
    key = label.strip().lower()
    try:
        return SYNONYMS[key]
    except KeyError:
        raise UnknownLabelError(
            f"unknown emotion label {label!r}; known: {', '.join(sorted(SYNONYMS))}"
        ) from None


def label_set(name: str) -> list[str]:
    """The class names of a label set (``mer``, ``meld``, ``emodb``, ``mead``, ``ravdess``, ``cremad``).

    Raises:
        UnknownLabelError: unknown set name (the message lists the known ones).
    """
    try:
        return list(LABEL_SETS[name.strip().lower()])
    except KeyError:
        raise UnknownLabelError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


def label_vad(label: str, lexicon=None) -> np.ndarray:
    """VAD of a discrete emotion label: the NRC-VAD of its canonical word, in [-1, 1].

    Args:
        label: any name in :data:`SYNONYMS` (case-insensitive).
        lexicon: a :class:`~emo.lexicon.nrc.VADLexicon`, a path to the NRC-VAD file, or
            ``None`` to locate it (``$EMO_LEXICON``, emo's data directory).

    Returns:
        float32, shape (3,): valence, arousal, dominance; exactly (0, 0, 0) for neutral.

    Raises:
        UnknownLabelError: unknown label.
        LexiconNotFoundError: no lexicon file (only when the label is not neutral).
        KeyError: the canonical word is missing from the supplied lexicon.
    """
    canon = canonical_label(label)
    word = CANONICAL_WORD[canon]
    if word is None:
        return np.zeros(3, dtype=np.float32)
    lex = as_lexicon(lexicon)
    vad = lex.lookup(word)
    if vad is None:
        raise KeyError(f"{lex.path}: canonical word {word!r} of label {label!r} is not in the lexicon")
    return vad


def labels_vad(labels, lexicon=None) -> np.ndarray:
    """:func:`label_vad` for several labels: float32, shape (C, 3), in the given order."""
    lex = None if all(canonical_label(x) == "neutral" for x in labels) else as_lexicon(lexicon)
    return np.stack([label_vad(x, lex) for x in labels]) if len(labels) else np.zeros((0, 3), np.float32)


def as_lexicon(lexicon):
    """A :class:`~emo.lexicon.nrc.VADLexicon` as is, or one loaded from a path / ``None`` (the
    default location) by :func:`~emo.lexicon.nrc.load_nrc_vad` (whose errors it raises)."""
    from emo.lexicon.nrc import VADLexicon, load_nrc_vad

    if isinstance(lexicon, VADLexicon):
        return lexicon
    return load_nrc_vad(lexicon)
