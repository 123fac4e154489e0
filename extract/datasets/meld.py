"""MELD, the Multimodal EmotionLines Dataset (Poria et al., ACL 2019), text side.

Layout: ``{train,dev,test}_sent_emo.csv`` under the root, columns ``Sr No., Utterance, Speaker,
Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime``. The
released CSVs mix encodings (UTF-8 in some copies; cp1252 bytes such as ``\\x92`` for the
apostrophe, or UTF-8 read as cp1252, ``â€™``, in others); :func:`clean_text` repairs both.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from emo.extract.datasets.base import DatasetAdapter, DatasetError, Sample, read_csv_text, register_dataset

#: MELD's seven emotions; this order (neutral first, then alphabetical) is the class index order.
MELD_CLASSES = ["neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"]
MELD_SPLITS = ("train", "dev", "test")

# Typographic punctuation -> ASCII, so "let’s" and "let's" tokenize alike in every vocabulary.
_PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2026": "...", "\u00a0": " ",
})
_C1 = re.compile("[\u0080-\u009f]")
_CONT = "[\u0080-\u00bf\u20ac\u201a-\u201e\u2018-\u201d\u2122\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u2020-\u2022\u2026\u2030\u2039\u203a]"
# A UTF-8 lead byte then 1-3 continuation bytes, as cp1252 shows them (``â€™`` is ’ read as cp1252).
_MOJIBAKE = re.compile(f"[\u00c2-\u00f4]{_CONT}{{1,3}}")


def _unmojibake(m: re.Match) -> str:
    try:
        return m.group().encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return m.group()


# Bytes cp1252 leaves undefined come out of ``surrogateescape`` as U+DC80+b; map them to chr(b) (Latin-1).
_CP1252_UNDEFINED = {0xDC00 + b: b for b in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}


def decode_bytes(data: bytes) -> str:
    """Decode a MELD CSV: UTF-8 (with or without BOM), else cp1252 (bytes cp1252 leaves
    undefined, 0x81 0x8D 0x8F 0x90 0x9D, are read as Latin-1)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="surrogateescape").translate(_CP1252_UNDEFINED)


def clean_text(text: str) -> str:
    """Repair MELD's encoding damage and normalise punctuation.

    1. UTF-8 read as cp1252 (``â€™`` -> ``’``): each such run is re-decoded when that round-trips.
    2. C1 control characters (cp1252 bytes read as Latin-1, e.g. ``\\x92``) become their
       cp1252 characters (``’``).
    3. NFKC, typographic quotes/dashes/ellipsis -> ASCII, whitespace collapsed.

    Returns the cleaned string (``""`` for whitespace-only input).
    """
    text = _MOJIBAKE.sub(_unmojibake, text)
    if _C1.search(text):
        text = _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="ignore"), text)
    text = unicodedata.normalize("NFKC", text).translate(_PUNCT)
    return " ".join(text.split())


def _read(path: Path) -> list[dict[str, str]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e})") from e
    return read_csv_text(decode_bytes(data), path, ["utterance", "speaker", "emotion", "dialogue_id", "utterance_id"],
                         strip=False)[1]


@register_dataset
class MELD(DatasetAdapter):
    """MELD text: one :class:`Sample` per utterance, ``media=None``.

    ``name`` = ``{split}_dia{Dialogue_ID}_utt{Utterance_ID}``; ``transcript`` = the cleaned
    ``Utterance`` (or the column named by the ``text_column`` option); ``speaker`` = ``Speaker``;
    ``discrete`` = ``Emotion`` (one of :data:`MELD_CLASSES`, in that index order); ``split`` =
    ``train``/``dev``/``test``; ``labels["sentiment"]`` = ``Sentiment`` (negative/neutral/positive,
    the second label set of multi-task runs). Absent split files are skipped (at least one must exist).

    Raises:
        DatasetError: no split file, a missing column, an unknown emotion or a non-integer
            dialogue/utterance id (file and row named), duplicate names.
    """

    name = "meld"
    classes = MELD_CLASSES

    def load(self) -> list[Sample]:
        text_column = (self.options.get("text_column") or "utterance").strip().lower()
        out: list[Sample] = []
        found = False
        for split in MELD_SPLITS:
            path = self.root / f"{split}_sent_emo.csv"
            if not path.is_file():
                continue
            found = True
            rows = _read(path)
            if rows and text_column not in rows[0]:
                raise DatasetError(f"{path}: no transcript column {text_column!r}; found {', '.join(rows[0])}")
            for line, row in enumerate(rows, start=2):
                dia, utt = row["dialogue_id"].strip(), row["utterance_id"].strip()
                if not (dia.isdigit() and utt.isdigit()):
                    raise DatasetError(f"{path}, line {line}: Dialogue_ID {dia!r} / Utterance_ID {utt!r} are not integers")
                name = f"{split}_dia{int(dia)}_utt{int(utt)}"
                emotion = row["emotion"].strip().lower()
                if emotion not in MELD_CLASSES:
                    raise DatasetError(f"{path}, line {line} ({name}): unknown emotion {row['emotion']!r}; "
                                       f"MELD classes: {', '.join(MELD_CLASSES)}")
                out.append(Sample(
                    name=name, media=None, transcript=clean_text(row.get(text_column, "") or ""),
                    discrete=emotion, speaker=clean_text(row["speaker"]) or None, split=split,
                    labels={"sentiment": row["sentiment"].strip().lower()} if (row.get("sentiment") or "").strip() else None,
                ))
        if not found:
            raise DatasetError(f"meld: no {'/'.join(MELD_SPLITS)}_sent_emo.csv under {self.root}")
        return out
