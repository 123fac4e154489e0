"""Discrete emotion labels <-> valence-arousal-dominance, through the NRC-VAD lexicon.

Public API (imported lazily, so ``import emo.lexicon`` stays light for the CLI):

* :func:`load_nrc_vad`, :func:`load_emolex`, :class:`VADLexicon` (:mod:`emo.lexicon.nrc`)
* :data:`LABEL_SETS`, :func:`label_set`, :func:`label_vad`, :func:`canonical_label` (:mod:`emo.lexicon.labels`)
* :class:`Vocabulary`, :func:`affect_vocabulary`, :func:`emotion_vocabulary`, :func:`nearest_words` (:mod:`emo.lexicon.vocabulary`)
* :class:`VADClassifier` (:mod:`emo.lexicon.classifier`)
* :func:`correlation_matrix`, :func:`correlation_prior_loss`, :func:`labels_va`
  (:mod:`emo.lexicon.correlation`, UniVA eq. 8/9)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "nrc": (
        "VADLexicon", "LexiconNotFoundError", "LexiconFormatError", "load_nrc_vad", "load_emolex",
        "resolve_lexicon_path", "resolve_emolex_path", "data_dir", "tokenize", "text_vad", "EMOLEX_EMOTIONS",
    ),
    "labels": ("LABEL_SETS", "SYNONYMS", "CANONICAL_WORD", "UnknownLabelError", "canonical_label", "label_set", "label_vad", "labels_vad"),
    "vocabulary": ("Vocabulary", "DEFAULT_RADIUS", "AFFECT_TERMS", "affect_vocabulary", "get_vocabulary", "emotion_vocabulary", "vocabulary_from_words", "read_word_list", "nearest_words"),
    "classifier": ("VADClassifier",),
    "correlation": ("correlation_matrix", "correlation_prior_loss", "labels_va"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'emo.lexicon' has no attribute {name!r}")
    return getattr(importlib.import_module(f"emo.lexicon.{mod}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
