"""MER 2023 and MER 2024 challenge layouts (Lian et al., ACM MM 2023 / IJCAI 2024 workshops)."""

from __future__ import annotations

from pathlib import Path

from emo.extract.datasets.base import (
    MER_CLASSES,
    DatasetAdapter,
    DatasetError,
    Sample,
    index_media,
    parse_float,
    read_csv,
    register_dataset,
)

# Spellings met in the released label files, mapped onto the six MER classes.
_MER_ALIASES = {"neutral": "neutral", "angry": "angry", "anger": "angry", "happy": "happy", "happiness": "happy",
                "sad": "sad", "sadness": "sad", "worried": "worried", "worry": "worried", "surprise": "surprise",
                "surprised": "surprise"}


def mer_label(value: str, path: Path, name: str) -> str | None:
    """Normalise a MER discrete label; empty -> ``None``. Unknown -> :class:`DatasetError` naming file and sample."""
    v = value.strip().lower()
    if not v:
        return None
    if v not in _MER_ALIASES:
        raise DatasetError(f"{path}: sample {name!r} has unknown label {value!r}; MER classes: {', '.join(MER_CLASSES)}")
    return _MER_ALIASES[v]


def _check_unique(rows: list[dict[str, str]], path: Path) -> None:
    """Raise :class:`DatasetError` naming the label file and both rows when a name repeats."""
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        n = row.get("name", "")
        if n in seen:
            raise DatasetError(f"{path}: duplicate sample name {n!r} in rows {seen[n]} and {i}")
        seen[n] = i


def _transcripts(path: Path, column: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    rows = read_csv(path, ["name"])
    if rows and column not in rows[0]:
        raise DatasetError(f"{path}: no transcript column {column!r}; found {', '.join(rows[0])}")
    return {r["name"]: r.get(column, "") for r in rows}


@register_dataset
class MER2023(DatasetAdapter):
    """MER 2023: ``train-label.csv``, ``test{1,2,3}-label.csv`` (``name,discrete,valence``),
    clips under ``train/``, ``test1/``, ...; transcripts in ``transcription.csv`` (``name,sentence``).

    Options: ``text_column`` (default ``sentence``). A label file that is absent is skipped;
    clips with no label file are not listed.
    """

    name = "mer2023"
    classes = MER_CLASSES
    splits = ("train", "test1", "test2", "test3")

    def load(self) -> list[Sample]:
        text = _transcripts(self.root / "transcription.csv", self.options.get("text_column") or "sentence")
        out: list[Sample] = []
        found_any = False
        for split in self.splits:
            label_path = self.root / f"{split}-label.csv"
            if not label_path.is_file():
                continue
            found_any = True
            media = index_media(self.root / split)
            rows = read_csv(label_path, ["name"], any_of=[["discrete", "valence"]])
            _check_unique(rows, label_path)
            for row in rows:
                name = row["name"]
                if name not in media:
                    raise DatasetError(f"{label_path}: no clip for sample {name!r} under {self.root / split}")
                out.append(Sample(
                    name=name, media=media[name], transcript=text.get(name, ""),
                    discrete=mer_label(row.get("discrete", ""), label_path, name),
                    valence=parse_float(row.get("valence"), label_path, name, "valence"), split=split,
                ))
        if not found_any:
            raise DatasetError(f"mer2023: no label file (train-label.csv, test1-label.csv, ...) under {self.root}")
        return out


@register_dataset
class MER2024(DatasetAdapter):
    """MER 2024: ``label-disdim.csv`` (``name,discrete[,valence]``), ``label-transcription.csv``
    (``name,chinese[,english]``), labelled clips in ``video-labeled/``, unlabelled in ``video-unlabeled*/``.

    Options: ``subset`` = ``all`` (default; the challenge's test clips hide among the unlabelled),
    ``labeled`` or ``unlabeled``; ``text_column`` = ``chinese`` (default) or ``english``.
    """

    name = "mer2024"
    classes = MER_CLASSES

    def load(self) -> list[Sample]:
        subset = self.options.get("subset") or "all"
        if subset not in ("all", "labeled", "unlabeled"):
            raise DatasetError(f"mer2024: subset must be all, labeled or unlabeled, not {subset!r}")
        text = _transcripts(self.root / "label-transcription.csv", self.options.get("text_column") or "chinese")
        out: list[Sample] = []
        label_path = self.root / "label-disdim.csv"
        labeled_names: set[str] = set()
        if subset in ("all", "labeled"):
            if not label_path.is_file():
                raise DatasetError(f"mer2024: {label_path} not found")
            media = index_media(self.root / "video-labeled")
            rows = read_csv(label_path, ["name", "discrete"])
            _check_unique(rows, label_path)
            for row in rows:
                name = row["name"]
                if name not in media:
                    raise DatasetError(f"{label_path}: no clip for sample {name!r} under {self.root / 'video-labeled'}")
                labeled_names.add(name)
                out.append(Sample(
                    name=name, media=media[name], transcript=text.get(name, ""),
                    discrete=mer_label(row["discrete"], label_path, name),
                    valence=parse_float(row.get("valence"), label_path, name, "valence"), split="labeled",
                ))
        if subset in ("all", "unlabeled"):
            for folder in sorted(p for p in self.root.glob("video-unlabeled*") if p.is_dir()):
                for name, path in index_media(folder).items():
                    if name in labeled_names:
                        continue
                    out.append(Sample(name=name, media=path, transcript=text.get(name, ""), split="unlabeled"))
        return out
