"""The emotion-wheel F1 of the MER 2025 / MER 2026 fine-grained track (MER-FG, OV-MER).

Source: the challenge baseline, zeroQiaoba/MERTools ``MER2025/MER2025_Track23/
my_affectgpt/evaluation/wheel.py`` (``wheel_metric_calculation``; Lian et al., "OV-MER:
Towards Open-Vocabulary Multimodal Emotion Recognition", ICML 2025, Sec. 4 "EW-based
metric"). Re-implemented here from its description and code (not copied); the folder it
reads is the one the challenge ships as ``emotion_wheel/``:

* ``format.csv`` (``name,format``): each word and its inflected forms ("angered" ->
  "anger"), comma-separated;
* ``synonym.xlsx`` (``word_run1..8``, ``synonym_run1..8``): each emotion-wheel word with
  synonym lists from eight runs;
* ``wheel1.xlsx`` .. ``wheel5.xlsx`` (``level1, level2, level3``; a blank cell repeats the
  value above it): five emotion wheels.

A word ``w`` is mapped onto wheel ``k`` at level ``L`` in three steps (the baseline's
``case3``): (1) every base form ``r`` listed for ``w`` in ``format.csv`` (``w`` itself when
it is a ``name``); (2) every wheel word that ``r`` is a synonym of (union over the eight
runs); (3) the alphabetically first of those that lies on wheel ``k``, replaced by its
level-1 ancestor (``level="level1"``, the challenge's main score) or its level-2 ancestor
(``level="level2"``; a level-1 word goes to its alphabetically first level-2 child). A word
that fails any step is dropped. Per sample, the predicted and true words are mapped to
sets ``P`` and ``T``; samples whose ``T`` is empty are skipped; precision is
``|P & T| / |P|`` (0 when ``P`` is empty), recall ``|P & T| / |T|``; both are averaged over
the samples, ``F1 = 2PR / (P + R)`` per wheel, and the reported score is the mean over the
five wheels of F1 (and of P and R).

Where the MER 2025 code is silent or fails, emo follows the MER 2026 version of the same
function (``MER2026/MER2026_Track2/my_affectgpt/evaluation/wheel.py``): ``F1 = 0`` when
``P + R = 0`` and ``P = R = 0`` on a wheel where no sample's true words land (MER 2025 gives
NaN for both); such a wheel is reported with ``n = 0``. A base form with no synonym entry
contributes nothing (MER 2025 raises ``KeyError``). MER 2026 reads the same three mappings
from a pickled ``wheel_mapping.npz``, which emo does not load (no pickles); the MER 2025
folder gives them.

``.xlsx`` files are read with the standard library (``zipfile`` + ``xml.etree``): the first
worksheet, shared and inline strings, numbers as their text; no openpyxl is needed.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

WHEELS: tuple[str, ...] = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
LEVELS: tuple[str, ...] = ("level1", "level2")
SYNONYM_RUNS = 8

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_SPLIT = re.compile(r"['\",]")


class WheelError(ValueError):
    """An emotion-wheel folder or file that cannot be used; the message names the file."""


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def split_words(value: str | None) -> list[str]:
    """A label cell -> its words, as the MER baseline's ``string_to_list`` reads it.

    ``"['happy', 'sad']"``, ``"happy, sad"`` and ``"happy,sad"`` all give ``["happy", "sad"]``:
    one leading ``[`` and one trailing ``]`` are removed, the rest is split at commas and
    quote characters, items are stripped and empty ones dropped. ``None``/``""`` -> ``[]``.
    Case is kept (callers lower-case).
    """
    if value is None:
        return []
    s = str(value).strip()
    if not s:
        return []
    if s[0] == "[":
        s = s[1:]
    if s and s[-1] == "]":
        s = s[:-1]
    return [w.strip() for w in _SPLIT.split(s) if w.strip()]


def _parse_xml(data: bytes, where: str):
    """Parse one XML part of an xlsx; parts with a DTD are refused (xlsx never has one, and a DTD is
    what entity-expansion attacks need), so the standard parser is safe here."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise WheelError(f"{where}: contains a DTD/entity declaration, which .xlsx files never do; refusing to parse")
    return ET.fromstring(data)  # noqa: S314 - DTDs refused above


def _col_index(ref: str) -> int:
    letters = "".join(ch for ch in ref if ch.isalpha())
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def read_xlsx(path: str | os.PathLike) -> list[dict[str, str | None]]:
    """Rows of the first worksheet of an ``.xlsx`` file as dicts keyed by the header row.

    Returns:
        one dict per data row (header row excluded): column name (as written) -> cell text,
        ``None`` for an empty cell. Trailing rows that are entirely empty are dropped.

    Raises:
        WheelError: not a readable xlsx (zip) file, or no header row.
    """
    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as e:
        raise WheelError(f"{p}: not a readable .xlsx file ({e})") from None
    with zf:
        names = set(zf.namelist())
        strings: list[str] = []
        if "xl/sharedStrings.xml" in names:
            root = _parse_xml(zf.read("xl/sharedStrings.xml"), f"{p}:xl/sharedStrings.xml")
            for si in root.findall("m:si", _NS):
                # plain <t> or rich-text runs <r><t>; phonetic runs (<rPh>) are not part of the text
                parts = [t.text or "" for t in si.findall("m:t", _NS)]
                parts += [t.text or "" for t in si.findall("m:r/m:t", _NS)]
                strings.append("".join(parts))
        sheet = "xl/worksheets/sheet1.xml"
        try:
            wb = _parse_xml(zf.read("xl/workbook.xml"), f"{p}:xl/workbook.xml")
            rels = _parse_xml(zf.read("xl/_rels/workbook.xml.rels"), f"{p}:xl/_rels/workbook.xml.rels")
            first = wb.find("m:sheets/m:sheet", _NS)
            rid = first.get(f"{{{_REL_NS}}}id") if first is not None else None
            for rel in rels:
                if rel.get("Id") == rid:
                    target = rel.get("Target", "")
                    sheet = target.lstrip("/") if target.startswith("/") else "xl/" + target
        except KeyError:
            pass
        if sheet not in names:
            raise WheelError(f"{p}: no worksheet {sheet} inside")
        root = _parse_xml(zf.read(sheet), f"{p}:{sheet}")
    rows: list[list[str | None]] = []
    for row in root.findall("m:sheetData/m:row", _NS):
        cells: dict[int, str | None] = {}
        for c in row.findall("m:c", _NS):
            kind = c.get("t")
            if kind == "inlineStr":
                text: str | None = "".join(t.text or "" for t in c.iter(f"{{{_NS['m']}}}t"))
            else:
                v = c.find("m:v", _NS)
                text = None if v is None or v.text is None else v.text
                if text is not None and kind == "s":
                    text = strings[int(text)]
            cells[_col_index(c.get("r", "A"))] = text
        width = max(cells) + 1 if cells else 0
        rows.append([cells.get(i) for i in range(width)])
    if not rows or not any(rows[0]):
        raise WheelError(f"{p}: no header row")
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    out = []
    for r in rows[1:]:
        vals = [None if (x is None or str(x).strip() == "") else x for x in r]
        out.append({h: (vals[i] if i < len(vals) else None) for i, h in enumerate(header) if h})
    while out and all(v is None for v in out[-1].values()):
        out.pop()
    return out


def read_wheel(path: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """One wheel file -> ``{level1: {level2: [level3, ...]}}``, lower-cased, in file order.

    Blank cells repeat the value above (forward fill), as in the baseline's ``read_wheel_to_map``.

    Raises:
        WheelError: missing ``level1``/``level2``/``level3`` columns (the message lists those found).
    """
    rows = read_xlsx(path)
    if rows and not {"level1", "level2", "level3"} <= set(rows[0]):
        raise WheelError(f"{path}: expected columns level1, level2, level3; found {', '.join(rows[0])}")
    tree: dict[str, dict[str, list[str]]] = {}
    cur = {"level1": "", "level2": "", "level3": ""}
    for r in rows:
        for k in cur:
            if r.get(k) is not None:
                cur[k] = str(r[k])
        l1, l2, l3 = (cur[k].lower().strip() for k in ("level1", "level2", "level3"))
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    return tree


def wheel_cluster(tree: dict[str, dict[str, list[str]]], level: str) -> dict[str, str]:
    """Every word of a wheel -> its level-1 (``level1``) or level-2 (``level2``) ancestor.

    With ``level2`` a level-1 word goes to its alphabetically first level-2 child. Later
    occurrences of a word overwrite earlier ones (file order), as in the baseline.

    Raises:
        ValueError: unknown level.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    out: dict[str, str] = {}
    for l1, children in tree.items():
        out[l1] = l1 if level == "level1" else min(children)
        for l2, leaves in children.items():
            out[l2] = l1 if level == "level1" else l2
            for l3 in leaves:
                out[l3] = l1 if level == "level1" else l2
    return out


# ---------------------------------------------------------------------------
# The wheels
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EmotionWheels:
    """The MER emotion-wheel folder, parsed.

    Attributes:
        directory: the folder read.
        forms: any word form -> its base forms (``format.csv``; a base form maps to itself).
        synonyms: base form -> the wheel words it is a synonym of (union of the eight runs;
            a wheel word maps to itself).
        trees: wheel name -> ``{level1: {level2: [level3, ...]}}``.
    """

    directory: Path
    forms: dict[str, tuple[str, ...]]
    synonyms: dict[str, tuple[str, ...]]
    trees: dict[str, dict[str, dict[str, list[str]]]]
    _clusters: dict = field(default_factory=dict, repr=False)

    def cluster(self, wheel: str, level: str = "level1") -> dict[str, str]:
        """:func:`wheel_cluster` of one wheel (cached)."""
        key = (wheel, level)
        if key not in self._clusters:
            if wheel not in self.trees:
                raise ValueError(f"unknown wheel {wheel!r}; known: {', '.join(self.trees)}")
            self._clusters[key] = wheel_cluster(self.trees[wheel], level)
        return self._clusters[key]

    def base_form(self, word: str) -> str:
        """Word-form normalisation (the baseline's ``case1``): lower-cased, stripped, then the
        alphabetically first base form ``format.csv`` lists for it; the word itself when it
        has none. Used to map open-vocabulary training labels onto one class per word family.
        """
        w = word.lower().strip()
        bases = self.forms.get(w)
        return min(bases) if bases else w

    def wheel_label(self, word: str, wheel: str, level: str = "level1") -> str | None:
        """The label of ``word`` on ``wheel`` (see the module docstring), or ``None``.

        Args:
            word: any case; stripped and lower-cased first.
        """
        w = word.lower().strip()
        if w not in self.forms:
            return None
        cmap = self.cluster(wheel, level)
        candidates = [s for base in self.forms[w] for s in self.synonyms.get(base, ())]
        for c in sorted(candidates):
            if c in cmap:
                return cmap[c]
        return None

    def map_words(self, words: Iterable[str], wheel: str, level: str = "level1") -> set[str]:
        """The set of wheel labels of ``words`` (words that do not map are dropped)."""
        out = set()
        for w in words:
            lab = self.wheel_label(w, wheel, level)
            if lab is not None:
                out.add(lab)
        return out


def _merge(into: dict[str, set[str]], key: str, values: Iterable[str]) -> None:
    into.setdefault(key, set()).update(values)


def load_wheels(directory: str | os.PathLike) -> EmotionWheels:
    """Read an ``emotion_wheel/`` folder (``format.csv``, ``synonym.xlsx``, ``wheel1..5.xlsx``).

    Raises:
        WheelError: the folder or a file is missing (named), or a file lacks its columns
            (the message lists those found and those expected).
    """
    d = Path(directory)
    if not d.is_dir():
        raise WheelError(f"emotion-wheel folder {d} does not exist (--emotion-wheel DIR: the MER 2025 "
                         "baseline's emotion_wheel/ folder with format.csv, synonym.xlsx, wheel1..5.xlsx)")
    needed = ["format.csv", "synonym.xlsx", *(f"{w}.xlsx" for w in WHEELS)]
    missing = [n for n in needed if not (d / n).is_file()]
    if missing:
        raise WheelError(f"emotion-wheel folder {d} lacks {', '.join(missing)}")

    # format.csv: name,format -> forms
    forms: dict[str, set[str]] = {}
    fmt = d / "format.csv"
    try:
        with open(fmt, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            if not {"name", "format"} <= set(cols):
                raise WheelError(f"{fmt}: expected columns name, format; found {', '.join(cols) or 'none'}")
            for row in reader:
                row = {(k or "").strip().lower(): v for k, v in row.items()}
                raw = (row.get("name") or "").strip()
                if not raw:
                    continue
                for form in split_words(row.get("format")):
                    _merge(forms, form, [raw])
                _merge(forms, raw, [raw])
    except UnicodeDecodeError as e:
        raise WheelError(f"{fmt}: not UTF-8 text ({e})") from None

    # synonym.xlsx: word_runK, synonym_runK -> synonyms
    synonyms: dict[str, set[str]] = {}
    syn_path = d / "synonym.xlsx"
    rows = read_xlsx(syn_path)
    expected = [f"{p}_run{k}" for k in range(1, SYNONYM_RUNS + 1) for p in ("word", "synonym")]
    if rows and not set(expected) <= set(rows[0]):
        raise WheelError(f"{syn_path}: expected columns {', '.join(expected)}; found {', '.join(rows[0])}")
    for k in range(1, SYNONYM_RUNS + 1):
        for r in rows:
            raw = r.get(f"word_run{k}")
            if raw is None:
                continue
            raw = str(raw).strip().lower()
            _merge(synonyms, raw, [raw])
            for s in split_words(r.get(f"synonym_run{k}")):
                _merge(synonyms, s.strip().lower(), [raw])

    trees = {w: read_wheel(d / f"{w}.xlsx") for w in WHEELS}
    return EmotionWheels(
        directory=d,
        forms={k: tuple(sorted(v)) for k, v in forms.items()},
        synonyms={k: tuple(sorted(v)) for k, v in synonyms.items()},
        trees=trees,
    )


# ---------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------


def wheel_scores(
    predicted: Sequence[Iterable[str]],
    true: Sequence[Iterable[str]],
    wheels: EmotionWheels,
    level: str = "level1",
) -> dict:
    """Emotion-wheel precision, recall and F1 (MER 2025 baseline ``wheel_metric_calculation``).

    Args:
        predicted: per sample, the predicted emotion words (any case; a string is read with
            :func:`split_words`).
        true: per sample, the true emotion words, same length and order.
        wheels: from :func:`load_wheels`.
        level: ``"level1"`` (the challenge's score) or ``"level2"``.

    Returns:
        ``{"f1", "precision", "recall"}``: means over the five wheels (floats in [0, 1]);
        ``"per_wheel"``: wheel -> ``{"f1", "precision", "recall", "n"}`` (``n`` = samples
        whose true words map onto that wheel); ``"level"``; ``"n_samples"``.

    Raises:
        ValueError: lengths differ, no samples, or unknown level.
    """
    if len(predicted) != len(true):
        raise ValueError(f"wheel_scores: {len(predicted)} predictions but {len(true)} true label lists")
    if not len(true):
        raise ValueError("wheel_scores: no samples")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")

    def words(x) -> list[str]:
        return split_words(x) if isinstance(x, str) else [str(w) for w in x]

    pred_words = [words(p) for p in predicted]
    true_words = [words(t) for t in true]
    per_wheel = {}
    for wheel in WHEELS:
        precision, recall = [], []
        for p, t in zip(pred_words, true_words):
            ts = wheels.map_words(t, wheel, level)
            if not ts:
                continue
            ps = wheels.map_words(p, wheel, level)
            hit = len(ps & ts)
            precision.append(hit / len(ps) if ps else 0.0)
            recall.append(hit / len(ts))
        pm = sum(precision) / len(precision) if precision else 0.0
        rm = sum(recall) / len(recall) if recall else 0.0
        f1 = 2 * pm * rm / (pm + rm) if pm + rm > 0 else 0.0
        per_wheel[wheel] = {"f1": f1, "precision": pm, "recall": rm, "n": len(recall)}
    mean = {k: sum(v[k] for v in per_wheel.values()) / len(per_wheel) for k in ("f1", "precision", "recall")}
    return {**mean, "per_wheel": per_wheel, "level": level, "n_samples": len(true)}
