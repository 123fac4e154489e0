"""Loading the NRC lexicons (user-supplied; emo never ships them).

Two files are used, both by Saif M. Mohammad, National Research Council Canada:

* **NRC-VAD** (Mohammad, ACL 2018, "Obtaining Reliable Human Ratings of Valence,
  Arousal, and Dominance for 20,000 English Words"): ``NRC-VAD-Lexicon.txt``,
  tab-separated, header ``Word Valence Arousal Dominance``, scores in [0, 1].
  emo maps every score to [-1, 1] with ``2x - 1`` on load, so 0 is the neutral
  midpoint of each scale.
* **EmoLex** (Mohammad & Turney, 2013): ``NRC-Emotion-Lexicon-Wordlevel-v0.92.txt``,
  ``word<TAB>category<TAB>0|1``, no header; categories are Plutchik's eight emotions
  (anger, anticipation, disgust, fear, joy, sadness, surprise, trust) plus the
  sentiments ``positive`` and ``negative``.

Where the files are looked for, first hit wins:

1. an explicit path (``--lexicon`` / ``--emolex`` on the command line, or the
   ``path`` argument);
2. the environment variable ``EMO_LEXICON`` / ``EMO_EMOLEX``: the file itself or a
   directory containing it under its standard name;
3. emo's data directory: ``$EMO_HOME/lexicon/`` when ``EMO_HOME`` is set, else
   ``~/.cache/emo/lexicon/``.

When none has the file, :class:`LexiconNotFoundError` lists every place looked.

Words and case: entries are lower-cased on load and looked up lower-cased with
runs of whitespace collapsed to one space. NRC-VAD has 137 entries that are not a
single lower-case word: multi-word terms (``apple juice``) and hyphenated ones
(``alarm-clock``). They are kept as they are and can be looked up by their exact
text, but the transcript tokeniser (:func:`tokenize`) yields single words only, so
they never match running text. If lower-casing makes two entries collide, the
first one in the file is kept.

Parsed lexicons are cached per resolved path (and file modification time) with
:func:`functools.lru_cache`.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VAD_FILENAME = "NRC-VAD-Lexicon.txt"
EMOLEX_FILENAME = "NRC-Emotion-Lexicon-Wordlevel-v0.92.txt"

#: EmoLex's emotion categories (Plutchik's eight); ``positive``/``negative`` are sentiments.
EMOLEX_EMOTIONS: tuple[str, ...] = (
    "anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust",
)
EMOLEX_CATEGORIES: tuple[str, ...] = EMOLEX_EMOTIONS + ("negative", "positive")


class LexiconNotFoundError(FileNotFoundError):
    """The lexicon file was found in none of the places emo looks (the message lists them)."""


class LexiconFormatError(ValueError):
    """A lexicon file that does not parse; the message names the file and line."""


# ---------------------------------------------------------------------------
# Locating the files
# ---------------------------------------------------------------------------


def data_dir() -> Path:
    """emo's lexicon data directory: ``$EMO_HOME/lexicon`` or ``~/.cache/emo/lexicon``."""
    home = os.environ.get("EMO_HOME")
    if home:
        return Path(home).expanduser() / "lexicon"
    return Path("~/.cache/emo/lexicon").expanduser()


def _resolve(path: str | os.PathLike | None, env: str, filename: str, flag: str) -> Path:
    looked: list[str] = []

    def candidate(p: Path, how: str) -> Path | None:
        p = p.expanduser()
        f = p / filename if p.is_dir() else p
        looked.append(f"{f} ({how})")
        return f if f.is_file() else None

    if path is not None and str(path) != "":
        hit = candidate(Path(path), flag)
        if hit is None:
            raise LexiconNotFoundError(f"{filename}: not found at {looked[0]}")
        return hit.resolve()
    env_value = os.environ.get(env)
    if env_value:
        hit = candidate(Path(env_value), f"${env}")
        if hit is not None:
            return hit.resolve()
    hit = candidate(data_dir() / filename, "emo data directory")
    if hit is not None:
        return hit.resolve()
    if not env_value:
        looked.insert(0, f"${env} (not set)")
    raise LexiconNotFoundError(
        f"{filename} not found; looked in: " + "; ".join(looked)
        + f". Pass {flag} PATH, set {env}, or copy the file into {data_dir()}."
    )


def resolve_lexicon_path(path: str | os.PathLike | None = None) -> Path:
    """Locate ``NRC-VAD-Lexicon.txt`` (explicit path, ``$EMO_LEXICON``, data directory).

    Raises:
        LexiconNotFoundError: listing every place looked.
    """
    return _resolve(path, "EMO_LEXICON", VAD_FILENAME, "--lexicon")


def resolve_emolex_path(path: str | os.PathLike | None = None) -> Path:
    """Locate the EmoLex word-level file (explicit path, ``$EMO_EMOLEX``, data directory).

    Raises:
        LexiconNotFoundError: listing every place looked.
    """
    return _resolve(path, "EMO_EMOLEX", EMOLEX_FILENAME, "--emolex")


# ---------------------------------------------------------------------------
# NRC-VAD
# ---------------------------------------------------------------------------


def normalize_word(word: str) -> str:
    """Lookup key of a word: lower-case, surrounding space stripped, inner whitespace runs -> one space."""
    return " ".join(word.lower().split())


@dataclass(frozen=True, eq=False)
class VADLexicon:
    """NRC-VAD scores mapped to [-1, 1].

    Attributes:
        words: lower-cased entries in file order, length N.
        vad: float32, shape (N, 3), columns valence, arousal, dominance, each ``2x - 1``
            of the published [0, 1] score.
        path: the file it was read from.
    """

    words: tuple[str, ...]
    vad: np.ndarray
    path: Path
    index: dict[str, int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and normalize_word(word) in self.index

    def lookup(self, word: str) -> np.ndarray | None:
        """VAD of one word (case-insensitive), float32 shape (3,) in [-1, 1]; ``None`` when absent."""
        i = self.index.get(normalize_word(word))
        return None if i is None else self.vad[i].copy()

    def lookup_many(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """VAD of many words.

        Returns:
            ``(vad, found)``: float32 (N, 3) with zero rows for absent words, and a bool
            mask (N,) that is True where the word is in the lexicon.
        """
        idx = np.array([self.index.get(normalize_word(w), -1) for w in words], dtype=np.int64)
        found = idx >= 0
        out = np.zeros((len(words), 3), dtype=np.float32)
        out[found] = self.vad[idx[found]]
        return out, found


@functools.lru_cache(maxsize=8)
def _parse_nrc_vad(path: str, mtime_ns: int) -> VADLexicon:
    words: list[str] = []
    rows: list[tuple[float, float, float]] = []
    index: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        if [h.strip().lower() for h in header] != ["word", "valence", "arousal", "dominance"]:
            raise LexiconFormatError(
                f"{path}: line 1: expected header 'Word<TAB>Valence<TAB>Arousal<TAB>Dominance', "
                f"got {header!r}; is this the NRC-VAD lexicon?"
            )
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise LexiconFormatError(f"{path}: line {lineno}: expected 4 tab-separated fields, got {len(parts)}: {line!r}")
            try:
                v, a, d = (float(x) for x in parts[1:])
            except ValueError:
                raise LexiconFormatError(f"{path}: line {lineno}: scores are not numbers: {line!r}") from None
            if not all(0.0 <= x <= 1.0 for x in (v, a, d)):
                raise LexiconFormatError(f"{path}: line {lineno}: scores must lie in [0, 1] (NRC-VAD v1): {line!r}")
            key = normalize_word(parts[0])
            if not key:
                raise LexiconFormatError(f"{path}: line {lineno}: empty word")
            if key in index:  # lower-case collision: keep the first
                continue
            index[key] = len(words)
            words.append(key)
            rows.append((v, a, d))
    if not words:
        raise LexiconFormatError(f"{path}: no entries after the header")
    vad = (2.0 * np.asarray(rows, dtype=np.float64) - 1.0).astype(np.float32)
    vad.setflags(write=False)
    return VADLexicon(words=tuple(words), vad=vad, path=Path(path), index=index)


def load_nrc_vad(path: str | os.PathLike | None = None) -> VADLexicon:
    """Load (cached) the NRC-VAD lexicon with scores mapped to [-1, 1] by ``2x - 1``.

    Args:
        path: the file or a directory holding ``NRC-VAD-Lexicon.txt``; ``None`` looks in
            ``$EMO_LEXICON`` then emo's data directory (see the module docstring).

    Raises:
        LexiconNotFoundError: no file in any of the places looked.
        LexiconFormatError: bad header, field count, non-numeric or out-of-[0, 1] score
            (the message names the file and line).
    """
    p = resolve_lexicon_path(path)
    return _parse_nrc_vad(str(p), p.stat().st_mtime_ns)


# ---------------------------------------------------------------------------
# EmoLex
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _parse_emolex(path: str, mtime_ns: int) -> dict[str, frozenset[str]]:
    marks: dict[str, set[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3 or parts[2] not in ("0", "1"):
                raise LexiconFormatError(
                    f"{path}: line {lineno}: expected 'word<TAB>category<TAB>0|1', got {line!r}; is this EmoLex word-level?"
                )
            word, cat, flag = normalize_word(parts[0]), parts[1].strip().lower(), parts[2]
            if cat not in EMOLEX_CATEGORIES:
                raise LexiconFormatError(f"{path}: line {lineno}: unknown category {cat!r} (known: {', '.join(EMOLEX_CATEGORIES)})")
            s = marks.setdefault(word, set())
            if flag == "1":
                s.add(cat)
    if not marks:
        raise LexiconFormatError(f"{path}: empty file")
    return {w: frozenset(s) for w, s in marks.items()}


def load_emolex(path: str | os.PathLike | None = None) -> dict[str, frozenset[str]]:
    """Load (cached) EmoLex: lower-cased word -> set of categories marked 1.

    Categories include the sentiments ``positive``/``negative``; use
    :data:`EMOLEX_EMOTIONS` to keep emotions only. Every word in the file is a key
    (an empty set when nothing is marked).

    Raises:
        LexiconNotFoundError: no file in any of the places looked.
        LexiconFormatError: a line that is not ``word<TAB>category<TAB>0|1`` or an unknown category.
    """
    p = resolve_emolex_path(path)
    return _parse_emolex(str(p), p.stat().st_mtime_ns)


# ---------------------------------------------------------------------------
# Text -> VAD
# ---------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*")


def tokenize(text: str | None) -> list[str]:
    """Lower-cased word tokens: runs of ASCII letters with inner apostrophes (``don't``).

    Curly apostrophes are treated as ``'``. ``None`` or text without Latin letters
    (e.g. a Chinese transcript) gives ``[]``.
    """
    if not text:
        return []
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


def text_vad(text: str | None, lexicon: VADLexicon) -> tuple[np.ndarray, float, int]:
    """Mean NRC-VAD of a transcript's word tokens.

    Each token is looked up as is; a token ending in the possessive ``'s`` that is
    absent is retried without it (``mother's`` -> ``mother``). The mean is over token
    occurrences found (a repeated word counts each time).

    Returns:
        ``(vad, coverage, n_tokens)``: float32 (3,) mean valence/arousal/dominance in
        [-1, 1] (zeros when no token is found), the fraction of tokens found in [0, 1]
        (0 when there are no tokens), and the number of tokens.
    """
    tokens = tokenize(text)
    if not tokens:
        return np.zeros(3, dtype=np.float32), 0.0, 0
    idx = []
    for t in tokens:
        i = lexicon.index.get(t)
        if i is None and t.endswith("'s"):
            i = lexicon.index.get(t[:-2])
        if i is not None:
            idx.append(i)
    if not idx:
        return np.zeros(3, dtype=np.float32), 0.0, len(tokens)
    vad = lexicon.vad[np.asarray(idx)].astype(np.float64).mean(axis=0).astype(np.float32)
    return vad, len(idx) / len(tokens), len(tokens)
