"""The emotion vocabulary and open-vocabulary look-up (words near a VAD point).

Two vocabularies are provided; how each is chosen:

* ``"affect"`` (the default, :func:`affect_vocabulary`): emo's curated list
  :data:`AFFECT_TERMS` of 185 English words that name a felt state (adjectives
  such as *delighted*, *anxious*, *bored*, plus *contempt*), grouped by family
  (positive, low-arousal/neutral, sadness, anger/disgust, fear/anxiety, other),
  every one present in NRC-VAD. It mirrors Jia et al. (2024), who used 195
  emotion words: the list was written from the affect families before any
  measurement and was not tuned to the results (8 words absent from NRC-VAD were
  removed). It needs only NRC-VAD.
* ``"emolex"`` (:func:`emotion_vocabulary`): every single-word NRC-VAD entry that
  EmoLex marks with at least ``min_emotions`` of Plutchik's eight emotions
  (anger, anticipation, disgust, fear, joy, sadness, surprise, trust; the
  ``positive``/``negative`` sentiment marks do not count). With
  ``min_emotions=1`` that is 4,463 words: mostly emotion-*associated* words
  (*accident*, *birthday*), not names of states, and so dense that a 0.25 radius
  holds about 137 of them.

A user list (e.g. MER 2024's open-vocabulary labels) can be used instead with
:func:`vocabulary_from_words` or :func:`read_word_list`. ``proofs/lexicon.py``
measures both built-in vocabularies.

Open vocabulary (Jia et al., 2024, "Bridging Discrete and Continuous: A
Multimodal Strategy for Complex Emotion Detection", arXiv:2409.07901): every
vocabulary word whose NRC-VAD lies within L2 distance ``r`` of a predicted VAD
point, nearest first; the paper uses ``r = 0.25`` (about five words on average
with its vocabulary).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_RADIUS = 0.25
#: Slack on the radius so float32 rounding of the lexicon does not drop a word at exactly ``r``.
_EPS = 1e-6

#: emo's curated affect-state words (see the module docstring); all are NRC-VAD entries.
AFFECT_TERMS: tuple[str, ...] = tuple((
    "happy joyful cheerful delighted glad pleased content satisfied elated ecstatic euphoric "
    "excited thrilled enthusiastic eager hopeful optimistic proud confident grateful thankful "
    "relieved relaxed calm peaceful serene tranquil comfortable secure safe loving "
    "affectionate tender caring compassionate sympathetic amused playful inspired amazed "
    "astonished surprised awed impressed curious interested fascinated determined brave "
    "courageous triumphant victorious blissful jubilant merry carefree admiring adoring "
    "passionate romantic longing nostalgic sentimental touched "
    "indifferent bored tired sleepy weary apathetic listless pensive thoughtful contemplative "
    "nonchalant detached numb "
    "sad unhappy sorrowful gloomy melancholy depressed miserable heartbroken grieving mournful "
    "lonely hopeless helpless disappointed discouraged dejected despondent regretful "
    "remorseful guilty ashamed embarrassed humiliated hurt wounded pitiful resigned defeated "
    "powerless vulnerable insecure inferior "
    "angry furious enraged irate irritated annoyed frustrated resentful bitter hostile "
    "aggressive indignant outraged vengeful jealous envious contempt contemptuous disdainful "
    "scornful disgusted hateful "
    "afraid fearful scared frightened terrified horrified panicked anxious nervous worried "
    "tense uneasy apprehensive alarmed startled shocked stressed restless agitated distressed "
    "overwhelmed confused bewildered puzzled perplexed suspicious doubtful skeptical shy timid "
    "awkward impatient exasperated upset disturbed troubled dismayed dissatisfied displeased "
    "grumpy moody cranky sullen tearful anguished tormented desperate jittery edgy hysterical "
    "energetic lively vigorous alert "
).split())


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """A set of emotion words with their VAD.

    Attributes:
        words: N distinct lower-case words.
        vad: float32, shape (N, 3), NRC-VAD in [-1, 1] (valence, arousal, dominance).
        description: how the words were chosen (recorded in results).
    """

    words: tuple[str, ...]
    vad: np.ndarray
    description: str = ""

    def __len__(self) -> int:
        return len(self.words)

    def nearest(self, vad, radius: float = DEFAULT_RADIUS) -> list[tuple[str, float]]:
        """Words within L2 distance ``radius`` of one VAD point, nearest first.

        Args:
            vad: array-like of 3 floats in the [-1, 1] VAD space.
            radius: inclusive L2 radius (>= 0; 1e-6 slack for float32 rounding).

        Returns:
            ``[(word, distance), ...]`` sorted by distance then word; ``[]`` when none.

        Raises:
            ValueError: ``vad`` is not 3 finite numbers, or ``radius`` is negative or not finite.
        """
        p = _point(vad)
        radius = _radius(radius)
        d = np.sqrt(((self.vad.astype(np.float64) - p) ** 2).sum(axis=1))
        hit = np.flatnonzero(d <= radius + _EPS)
        order = hit[np.lexsort((np.asarray(self.words, dtype=object)[hit], d[hit]))] if hit.size else hit
        return [(self.words[i], float(d[i])) for i in order]

    def count_within(self, radius: float = DEFAULT_RADIUS, points=None) -> np.ndarray:
        """Number of vocabulary words within ``radius`` of each point (scipy cKDTree).

        Args:
            radius: inclusive L2 radius.
            points: (M, 3) VAD points; ``None`` means the vocabulary's own words, and then
                each word does not count itself.

        Returns:
            int64, shape (M,) (or (N,) for ``points=None``).
        """
        from scipy.spatial import cKDTree

        radius = _radius(radius)
        tree = cKDTree(self.vad.astype(np.float64))
        own = points is None
        q = self.vad.astype(np.float64) if own else np.asarray(points, dtype=np.float64).reshape(-1, 3)
        counts = np.asarray(tree.query_ball_point(q, r=radius + _EPS, return_length=True), dtype=np.int64)
        return counts - 1 if own else counts


def _point(vad) -> np.ndarray:
    p = np.asarray(vad, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"a VAD point must be 3 finite numbers (valence, arousal, dominance), got {vad!r}")
    return p


def _radius(radius: float) -> float:
    r = float(radius)
    if not np.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return r


@functools.lru_cache(maxsize=16)
def _emotion_vocabulary(lex_path: str, emolex_path: str, min_emotions: int, mtimes: tuple[int, int]) -> Vocabulary:
    from emo.lexicon.nrc import EMOLEX_EMOTIONS, load_emolex, load_nrc_vad

    lex = load_nrc_vad(lex_path)
    emolex = load_emolex(emolex_path)
    emotions = frozenset(EMOLEX_EMOTIONS)
    idx = [
        i for i, w in enumerate(lex.words)
        if w.isalpha() and len(emolex.get(w, frozenset()) & emotions) >= min_emotions
    ]
    vad = lex.vad[np.asarray(idx, dtype=np.int64)]
    desc = (
        f"NRC-VAD words that EmoLex marks with >= {min_emotions} of its 8 emotions "
        f"(sentiment marks excluded, single words only): {len(idx)} words"
    )
    return Vocabulary(words=tuple(lex.words[i] for i in idx), vad=vad, description=desc)


def emotion_vocabulary(lexicon=None, emolex=None, min_emotions: int = 1) -> Vocabulary:
    """The EmoLex-based vocabulary (see the module docstring for how it is chosen). Cached.

    Args:
        lexicon: NRC-VAD path (or ``None`` to locate it).
        emolex: EmoLex path (or ``None`` to locate it).
        min_emotions: how many of EmoLex's 8 emotions a word needs (1..8).

    Raises:
        ValueError: ``min_emotions`` outside 1..8, or no word qualifies.
        LexiconNotFoundError: a lexicon file is missing.
    """
    from emo.lexicon.nrc import VADLexicon, resolve_emolex_path, resolve_lexicon_path

    if not 1 <= int(min_emotions) <= 8:
        raise ValueError(f"min_emotions must be in 1..8, got {min_emotions!r}")
    lex_path = lexicon.path if isinstance(lexicon, VADLexicon) else resolve_lexicon_path(lexicon)
    emo_path = resolve_emolex_path(emolex)
    vocab = _emotion_vocabulary(
        str(lex_path), str(emo_path), int(min_emotions),
        (Path(lex_path).stat().st_mtime_ns, emo_path.stat().st_mtime_ns),
    )
    if len(vocab) == 0:
        raise ValueError(f"no NRC-VAD word in {lex_path} is marked with >= {min_emotions} emotions in {emo_path}")
    return vocab


def vocabulary_from_words(words, lexicon=None, source: str = "") -> Vocabulary:
    """A vocabulary from a word list (case-insensitive; duplicates dropped, first order kept).

    Words absent from NRC-VAD are dropped with a :class:`UserWarning` that names them.

    Args:
        words: iterable of strings.
        lexicon: :class:`~emo.lexicon.nrc.VADLexicon`, a path, or ``None`` to locate it.
        source: where the list came from (for the description and messages).

    Raises:
        ValueError: none of the words is in the lexicon (the message names ``source``).
    """
    from emo.lexicon.labels import as_lexicon
    from emo.lexicon.nrc import normalize_word

    lex = as_lexicon(lexicon)
    seen: dict[str, None] = {}
    for w in words:
        k = normalize_word(str(w))
        if k:
            seen.setdefault(k, None)
    keys = list(seen)
    vad, found = lex.lookup_many(keys)
    missing = [k for k, f in zip(keys, found) if not f]
    where = f" ({source})" if source else ""
    if not found.any():
        raise ValueError(f"none of the {len(keys)} vocabulary words{where} is in the NRC-VAD lexicon {lex.path}")
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        warnings.warn(f"{len(missing)} vocabulary words{where} not in NRC-VAD, dropped: {shown}", stacklevel=2)
    kept = [k for k, f in zip(keys, found) if f]
    desc = f"user word list{where}: {len(kept)} words in NRC-VAD"
    return Vocabulary(words=tuple(kept), vad=vad[found], description=desc)


def read_word_list(path: str | os.PathLike, lexicon=None) -> Vocabulary:
    """A vocabulary from a text file: one word per line, or comma-separated; ``#`` starts a comment.

    Raises:
        FileNotFoundError: no such file (naming it).
        ValueError: the file has no word in NRC-VAD (naming it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {p}")
    words: list[str] = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0]
        words.extend(x for x in (s.strip() for s in line.split(",")) if x)
    if not words:
        raise ValueError(f"{p}: no words")
    return vocabulary_from_words(words, lexicon, source=str(p))


@functools.lru_cache(maxsize=8)
def _affect_vocabulary(lex_path: str, mtime: int) -> Vocabulary:
    from emo.lexicon.nrc import load_nrc_vad

    vocab = vocabulary_from_words(AFFECT_TERMS, load_nrc_vad(lex_path), source="emo AFFECT_TERMS")
    return Vocabulary(
        words=vocab.words, vad=vocab.vad,
        description=f"emo's curated affect-state terms (AFFECT_TERMS) found in NRC-VAD: {len(vocab)} words",
    )


def affect_vocabulary(lexicon=None) -> Vocabulary:
    """The default vocabulary: :data:`AFFECT_TERMS` with their NRC-VAD (cached per lexicon file).

    Args:
        lexicon: :class:`~emo.lexicon.nrc.VADLexicon`, a path, or ``None`` to locate it.

    Raises:
        LexiconNotFoundError: no NRC-VAD file.
        ValueError: none of the terms is in the given lexicon.
    """
    from emo.lexicon.nrc import VADLexicon, resolve_lexicon_path

    p = lexicon.path if isinstance(lexicon, VADLexicon) else resolve_lexicon_path(lexicon)
    return _affect_vocabulary(str(p), Path(p).stat().st_mtime_ns)


def get_vocabulary(kind: str | os.PathLike = "affect", lexicon=None, emolex=None, min_emotions: int = 1) -> Vocabulary:
    """A vocabulary by name: ``"affect"`` (default), ``"emolex"``, or a word-list file path.

    Raises:
        FileNotFoundError: ``kind`` is neither a known name nor an existing file.
        LexiconNotFoundError: a lexicon file is missing.
    """
    if str(kind) == "affect":
        return affect_vocabulary(lexicon)
    if str(kind) == "emolex":
        return emotion_vocabulary(lexicon, emolex, min_emotions)
    if not Path(kind).is_file():
        raise FileNotFoundError(f"vocabulary {str(kind)!r} is neither 'affect', 'emolex' nor an existing word-list file")
    return read_word_list(kind, lexicon)


def nearest_words(vad, radius: float = DEFAULT_RADIUS, vocabulary: Vocabulary | None = None) -> list[tuple[str, float]]:
    """Open vocabulary: every vocabulary word within L2 distance ``radius`` of a VAD point, nearest first.

    Jia et al. (2024, arXiv:2409.07901) use ``radius = 0.25``.

    Args:
        vad: 3 numbers (valence, arousal, dominance) in [-1, 1].
        radius: inclusive L2 radius.
        vocabulary: a :class:`Vocabulary`; ``None`` uses :func:`affect_vocabulary` with the
            lexicon found through ``$EMO_LEXICON`` or emo's data directory.

    Returns:
        ``[(word, distance), ...]``, ascending distance.

    Raises:
        ValueError: bad point or radius.
    """
    vocab = vocabulary if vocabulary is not None else affect_vocabulary()
    return vocab.nearest(vad, radius)
