"""Dataset adapter interface, the sample record and the per-dataset manifest."""

from __future__ import annotations

import csv
import warnings
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

#: Containers emo decodes (PyAV); used to discover media files.
MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".mpg", ".mpeg", ".m4v", ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac")

#: Class order of the MER 2023/2024 challenges (discrete track).
MER_CLASSES = ["neutral", "angry", "happy", "sad", "worried", "surprise"]


class DatasetError(ValueError):
    """A dataset root or label file that cannot be used; the message names the file and the problem."""


class DatasetOptionError(DatasetError):
    """A bad adapter option from the command line (``--track 9``, ``--subset x``): a usage error (exit 2)."""


@dataclass
class Sample:
    """One utterance (clip) of a dataset.

    Attributes:
        name: unique within the dataset; the key in every feature store.
        media: path to the video or audio file (``None`` for text-only datasets).
        transcript: may be empty.
        discrete: discrete emotion label (a member of the adapter's ``classes``) or ``None``.
        valence, arousal, dominance: continuous labels or ``None`` (scale as in the source:
            MER valence is in [-5, 5]).
        speaker: speaker id or ``None``.
        split: the source's partition (``train``, ``test1``, ``labeled``, ...) or ``None``.
        emotions: multi-label emotion words (MER-FG / OV-MER open vocabulary, UniVA multi-label),
            lower case, in the source's order, or ``None`` when the source has no such labels.
            Stored in ``samples.csv`` as one ``;``-separated cell.
        labels: further named label columns (e.g. ``{"intent": "questioning"}`` for MEIJU), or
            ``None``. Stored in ``samples.csv`` as one JSON object cell.
        audio: a pre-extracted audio file of the same clip (MER 2025/2026 ``audio/NAME.wav``) or
            ``None``; when set, audio encoders read it instead of ``media``'s audio track.
    """

    name: str
    media: Path | None
    transcript: str = ""
    discrete: str | None = None
    valence: float | None = None
    arousal: float | None = None
    dominance: float | None = None
    speaker: str | None = None
    split: str | None = None
    emotions: list[str] | None = None
    labels: dict[str, str] | None = None
    audio: Path | None = None


class DatasetAdapter:
    """Base class: subclasses set ``name`` and ``classes`` and implement :meth:`load`.

    :meth:`samples` validates what :meth:`load` returns (unique names, labels in
    ``classes``) so every adapter gets the same checks.
    """

    name: ClassVar[str] = ""
    classes: list[str] | None = None
    #: (low, high) of the source's valence labels when it has them on its own scale (MER: (-5, 5));
    #: recorded in dataset.json and in every run's config.json.
    valence_scale: ClassVar[tuple[float, float] | None] = None

    def __init__(self, root: str | os.PathLike, **options: Any) -> None:
        self.root = Path(root)
        dataset_name = options.pop("dataset_name", None)
        self.options = options
        if not self.root.is_dir():
            raise DatasetError(f"{self.name}: dataset root {self.root} is not a directory")
        #: The dataset's name: the folder under ``--out`` its stores go to and the ``--dataset`` of
        #: ``emo fuse`` (``--name``; default :meth:`default_name`). Instance attribute: ``name``
        #: (the class attribute) stays the adapter's registry key.
        self.dataset = check_dataset_name(dataset_name) if dataset_name else self.default_name()

    def default_name(self) -> str:
        """The dataset name when ``--name`` is not given: the adapter's name (one corpus per adapter)."""
        return self.name

    def load(self) -> list[Sample]:
        raise NotImplementedError

    def samples(self) -> list[Sample]:
        """All samples, validated.

        Raises:
            DatasetError: duplicate names (both files named), labels outside ``classes``.
        """
        out = self.load()
        seen: dict[str, Sample] = {}
        for s in out:
            if s.name in seen:
                raise DatasetError(
                    f"{self.name}: duplicate sample name {s.name!r}: {seen[s.name].media} and {s.media}"
                )
            seen[s.name] = s
            if s.discrete is not None and self.classes is not None and s.discrete not in self.classes:
                raise DatasetError(
                    f"{self.name}: sample {s.name!r} has label {s.discrete!r}, not one of {self.classes}"
                )
        return out


#: adapter name -> class, filled by :func:`register_dataset` (read it through
#: :func:`emo.extract.datasets.adapters`, which imports every adapter module first).
ADAPTERS: dict[str, type[DatasetAdapter]] = {}


def check_dataset_name(name: str) -> str:
    """Validate a ``--name``: one path component of letters, digits, ``_``, ``-``, ``.`` (not starting with ``.``).

    Raises:
        DatasetError: anything else (a name becomes a folder under ``--out``).
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", name or ""):
        raise DatasetError(f"--name {name!r}: use letters, digits, '_', '-' and '.' (not first), at most 100 characters; "
                           "it becomes the folder of the stores under --out")
    return name


def register_dataset(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: register a :class:`DatasetAdapter` under its ``name`` (``--dataset NAME``).

    Raises:
        ValueError: empty name, or the name is taken by another class.
    """
    if not cls.name:
        raise ValueError(f"{cls.__qualname__}: a registered dataset adapter needs a name")
    old = ADAPTERS.get(cls.name)
    if old is not None and old is not cls and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"dataset {cls.name!r} is registered twice ({old.__module__}.{old.__qualname__} and "
                         f"{cls.__module__}.{cls.__qualname__})")
    ADAPTERS[cls.name] = cls
    return cls


def inside_root(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` with ``..`` collapsed lexically; refuse paths that escape ``root``.

    Containment is about where the path *lives*, not where a symlink on it points: a label row
    naming ``clips/a.wav`` inside the root is accepted even when ``clips`` or ``a.wav`` is a link
    to storage elsewhere (corpora are often assembled from links), while ``../x.wav``,
    ``clips/../../x.wav`` and absolute paths are refused.

    Returns:
        The normalised path (not resolved through links), absolute when ``root`` is.

    Raises:
        DatasetError: naming ``what`` (the file the path came from) and the offending path.
    """
    r = Path(os.path.normpath(root))
    if os.path.isabs(rel):
        raise DatasetError(f"{what}: path {rel!r} is absolute; give it relative to the dataset root {root}")
    p = Path(os.path.normpath(r / rel))
    if p != r and r not in p.parents:
        raise DatasetError(f"{what}: path {rel!r} escapes the dataset root {root}")
    return p


def walk_media(root: Path) -> list[Path]:
    """Media files (:data:`MEDIA_SUFFIXES`) below ``root``, sorted, following directory symlinks.

    Each real directory is entered once (loop detection by ``(st_dev, st_ino)``), so a link cycle
    or two links to one folder cannot list files twice. The returned paths are the paths *through*
    the links (inside ``root``), so sample names follow the layout the user built. Broken links
    are skipped.
    """
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for f in filenames:
            p = Path(dirpath) / f
            if p.suffix.lower() in MEDIA_SUFFIXES:
                if p.is_file():
                    out.append(p)
                elif p.exists() and not p.is_dir():  # a FIFO, socket or device with a media name: said, never read
                    warnings.warn(f"{p}: not a regular file (a FIFO, socket or device): skipped", stacklevel=2)
    return sorted(out)


def read_csv(path: Path, required: list[str], any_of: list[list[str]] | None = None) -> list[dict[str, str]]:
    """Read a UTF-8 CSV into dicts with stripped, lower-cased column names, strictly: the one CSV reader of
    every label, transcript, track and pseudo-label file (adapters included; see :func:`read_csv_text`).

    Strict (issue 11): a record with more or fewer fields than the header, a quoted field that
    runs over several lines or to the end of the file (an unmatched quote), or any other CSV
    syntax error is an error naming the file and the line where the record starts; nothing is
    silently merged or dropped.

    Raises:
        DatasetError: missing file, missing required columns (named), empty header, malformed record (line).
    """
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e})") from e
    return read_csv_text(text, path, required, any_of)[1]


def read_csv_text(text: str, path: Path, required: list[str] = (), any_of: list[list[str]] | None = None,
                  strip: bool = True) -> tuple[list[str], list[dict[str, str]]]:
    """The strict reader behind :func:`read_csv`, on text already read (``path`` names it in messages;
    ``strip=False`` keeps cells' surrounding white space).

    Returns:
        (header columns stripped and lower-cased, rows as dicts with stripped cells).

    Raises:
        DatasetError: as :func:`read_csv`.
    """
    import io

    start = 1
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        if reader.fieldnames is None:
            raise DatasetError(f"{path}: empty file (no header row)")
        cols = [c.strip().lower() for c in reader.fieldnames]
        missing = [c for c in required if c not in cols]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(cols)}")
        for group in any_of or []:
            if not any(c in cols for c in group):
                raise DatasetError(f"{path}: needs one of the columns {', '.join(group)}; found {', '.join(cols)}")
        rows = []
        start = reader.line_num + 1
        for row in reader:
            end = reader.line_num
            if None in row or any(v is None for v in row.values()):
                n = len(row) - (None in row) + len(row.get(None) or []) - sum(v is None for v in row.values())
                raise DatasetError(f"{path}: line {start}: {n} field(s), the header has {len(cols)} "
                                   "(a stray comma, a missing cell or an unmatched quote?)")
            if end > start and any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in row.values()):
                raise DatasetError(f"{path}: line {start}: a quoted field runs over lines {start}-{end} "
                                   "(an unmatched quote?)")
            rows.append({(k or "").strip().lower(): ((v.strip() if strip else v) if isinstance(v, str) else "")
                         for k, v in row.items()})
            start = end + 1
        return cols, rows
    except csv.Error as e:
        raise DatasetError(f"{path}: line {start}: malformed CSV ({e}; an unmatched quote?)") from e


def parse_float(value: str | None, path: Path, name: str, column: str) -> float | None:
    """Parse a label cell; empty -> ``None``. Raises :class:`DatasetError` naming file, sample and column."""
    if value is None or value == "" or value.lower() in ("nan", "none"):
        return None
    try:
        x = float(value)
    except ValueError:
        raise DatasetError(f"{path}: sample {name!r} has non-numeric {column} {value!r}") from None
    if not math.isfinite(x):
        raise DatasetError(f"{path}: sample {name!r} has non-finite {column} {value!r}")
    return x


def index_media(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for media files directly or recursively under ``folder``.

    Raises:
        DatasetError: two media files share a stem (both named).
    """
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in walk_media(folder):
        if p.stem in out:
            raise DatasetError(f"duplicate sample name {p.stem!r}: {out[p.stem]} and {p}")
        out[p.stem] = p
    return out


# ---------------------------------------------------------------------------
# Manifest: what `emo extract` saw, so `emo fuse` needs only features/<dataset>/
# ---------------------------------------------------------------------------

MANIFEST = "samples.csv"
DATASET_JSON = "dataset.json"


def write_manifest(out_dir: Path, adapter: DatasetAdapter, samples: list[Sample]) -> None:
    """Write ``samples.csv`` and ``dataset.json`` into ``out_dir`` atomically (:mod:`emo.fsio`: never
    through a link; CSV cells escaped against formula injection, undone by :func:`read_manifest`)."""
    from emo import fsio

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Sample)]
    rows = []
    for s in samples:
        row = asdict(s)
        row["media"] = "" if s.media is None else str(s.media)
        row["emotions"] = None if s.emotions is None else ";".join(s.emotions)
        row["labels"] = None if s.labels is None else json.dumps(s.labels, ensure_ascii=False, sort_keys=True)
        row["audio"] = None if s.audio is None else str(s.audio)
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    fsio.write_csv(out_dir / MANIFEST, rows, header=names)
    root = "" if getattr(adapter, "ad_hoc", False) else str(adapter.root.resolve())
    meta = {"dataset": getattr(adapter, "dataset", adapter.name), "adapter": adapter.name, "root": root,
            "classes": adapter.classes, "n": len(samples),
            "options": {k: str(v) for k, v in sorted((getattr(adapter, "options", None) or {}).items()) if v is not None},
            "valence_scale": list(scale) if (scale := getattr(adapter, "valence_scale", None)) else None}
    fsio.write_text(out_dir / DATASET_JSON, json.dumps(meta, indent=2, ensure_ascii=False))


def read_manifest(dataset_dir: Path) -> tuple[dict[str, Any], list[Sample]]:
    """Read what :func:`write_manifest` wrote.

    Raises:
        DatasetError: no manifest (run ``emo extract`` first).
    """
    path = dataset_dir / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path} not found: run `emo extract --dataset ... --out {dataset_dir.parent}` first")
    meta = json.loads((dataset_dir / DATASET_JSON).read_text(encoding="utf-8")) if (dataset_dir / DATASET_JSON).is_file() else {}
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        from emo.fsio import csv_unescape

        for row in csv.DictReader(fh):
            row = {k: csv_unescape(v) if isinstance(v, str) else v for k, v in row.items()}  # see write_manifest
            out.append(
                Sample(
                    name=row["name"],
                    media=Path(row["media"]) if row["media"] else None,
                    transcript=row.get("transcript", ""),
                    discrete=row.get("discrete") or None,
                    valence=float(row["valence"]) if row.get("valence") else None,
                    arousal=float(row["arousal"]) if row.get("arousal") else None,
                    dominance=float(row["dominance"]) if row.get("dominance") else None,
                    speaker=row.get("speaker") or None,
                    split=row.get("split") or None,
                    emotions=[w for w in row["emotions"].split(";") if w] if row.get("emotions") else None,
                    labels=json.loads(row["labels"]) if row.get("labels") else None,
                    audio=Path(row["audio"]) if row.get("audio") else None,
                )
            )
    return meta, out
