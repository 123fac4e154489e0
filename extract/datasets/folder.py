"""Any folder of media files, with an optional ``labels.csv``."""

from __future__ import annotations

import os
from pathlib import Path

from emo.extract.datasets.base import (
    DatasetAdapter,
    DatasetError,
    Sample,
    check_dataset_name,
    inside_root,
    parse_float,
    read_csv,
    register_dataset,
    walk_media,
)

_LABEL_COLUMNS = ("discrete", "emotion", "label")
_TEXT_COLUMNS = ("transcript", "text", "sentence", "utterance")


@register_dataset
class Folder(DatasetAdapter):
    """Every media file under ``root`` (recursive). The sample name is the path relative
    to the root without its suffix (``cremad/1001_DFA_ANG_XX``).

    ``labels.csv`` (optional, at the root, or ``labels=PATH``): a ``name`` or ``path`` column,
    then any of ``discrete``/``emotion``/``label``, ``valence``, ``arousal``, ``dominance``,
    ``speaker``, ``split`` and a transcript column (``transcript``/``text``/..., or ``text_column``).
    ``name`` matches the sample name or, when unique, the bare file stem. Rows naming no file,
    or a path outside the root, are errors that name the label file and row.
    Options: ``classes`` (comma list) fixes the class order; otherwise labels are sorted.
    """

    name = "folder"

    def default_name(self) -> str:
        """The root folder's name (``/data/cremad`` -> ``cremad``), so two folder corpora never share stores;
        ``folder`` when that name is not a valid ``--name``."""
        name = Path(os.path.abspath(self.root)).name
        try:
            return check_dataset_name(name)
        except DatasetError:
            return self.name

    def load(self) -> list[Sample]:
        files = walk_media(self.root)  # follows directory links (once each), names by the path inside the root
        samples: dict[str, Sample] = {}
        for p in files:
            rel = p.relative_to(self.root).with_suffix("").as_posix()
            if rel in samples:
                raise DatasetError(f"folder: duplicate sample name {rel!r}: {samples[rel].media} and {p}")
            samples[rel] = Sample(name=rel, media=p)
        label_path = Path(self.options["labels"]) if self.options.get("labels") else self.root / "labels.csv"
        if label_path.is_file():
            self._apply_labels(label_path, samples)
        elif self.options.get("labels"):
            raise DatasetError(f"folder: label file {label_path} does not exist")
        labels = sorted({s.discrete for s in samples.values() if s.discrete})
        if self.options.get("classes"):
            self.classes = [c.strip() for c in str(self.options["classes"]).split(",") if c.strip()]
        else:
            self.classes = labels or None
        return list(samples.values())

    def _apply_labels(self, path: Path, samples: dict[str, Sample]) -> None:
        rows = read_csv(path, [], any_of=[["name", "path"]])
        by_stem: dict[str, list[str]] = {}
        for n in samples:
            by_stem.setdefault(n.rsplit("/", 1)[-1], []).append(n)
        text_col = self.options.get("text_column")
        seen: dict[str, int] = {}
        for i, row in enumerate(rows, start=2):
            where = f"{path} row {i}"
            if row.get("path"):
                p = inside_root(self.root, row["path"], where)
                key = p.relative_to(os.path.normpath(self.root)).with_suffix("").as_posix()
            else:
                raw = row.get("name", "")
                if not raw:
                    raise DatasetError(f"{where}: empty name")
                inside_root(self.root, raw, where)
                key = raw
                if key not in samples:
                    hits = by_stem.get(key, [])
                    if len(hits) > 1:
                        raise DatasetError(f"{where}: name {raw!r} matches several files: {', '.join(hits)}")
                    key = hits[0] if hits else key
            if key not in samples:
                raise DatasetError(f"{where}: no media file for sample {key!r} under {self.root}")
            if key in seen:
                raise DatasetError(f"{where}: duplicate sample {key!r} (also row {seen[key]})")
            seen[key] = i
            s = samples[key]
            for c in _LABEL_COLUMNS:
                if row.get(c):
                    s.discrete = row[c].lower()
                    break
            s.valence = parse_float(row.get("valence"), path, key, "valence")
            s.arousal = parse_float(row.get("arousal"), path, key, "arousal")
            s.dominance = parse_float(row.get("dominance"), path, key, "dominance")
            s.speaker = row.get("speaker") or None
            s.split = row.get("split") or None
            if text_col:
                if text_col not in row:
                    raise DatasetError(f"{path}: no transcript column {text_col!r}")
                s.transcript = row[text_col]
            else:
                for c in _TEXT_COLUMNS:
                    if row.get(c):
                        s.transcript = row[c]
                        break
