"""MER 2025 and MER 2026 challenge layouts (Lian et al., MER 2025 @ ACM MM 2025; MER 2026).

Both releases (Hugging Face ``MERChallenge/MER2025`` and ``MERChallenge/MER2026``) put every
clip in one pool and every label in CSV files at the root:

* ``video/NAME.mp4``, ``audio/NAME.wav`` (pre-extracted 16 kHz mono wav; when it is there the
  audio encoders read it instead of decoding the video), ``openface_face/NAME/`` (OpenFace
  crops; ignored: emo detects and aligns faces itself);
* ``subtitle_chieng.csv`` (``name,chinese,english``): the transcript, ``--text-column``
  ``chinese`` (default) or ``english``.

MER 2025 (:class:`MER2025`), ``--track``:

* ``1`` (MER-SEMI, discrete): ``track1_train_disdim.csv`` (``name,discrete[,valence]``; six
  MER classes, valence in [-5, 5]);
* ``2`` (MER-FG, fine-grained / open vocabulary): ``track2_train_ovmerd.csv`` and
  ``track2_train_mercaptionplus.csv`` (``name,openset``; the word list read as the baseline's
  ``string_to_list`` does, see :func:`emo.lexicon.wheel.split_words`; an empty list becomes
  ``["neutral"]`` as in the baseline's OV-MERD/MER-Caption+ loaders);
* both tracks: ``track_all_candidates.csv`` (``name``): the clips to predict, loaded unlabelled.

MER 2026 (:class:`MER2026`), ``--track``:

* ``1`` (MER-Cross): ``track1_train.csv`` (``name,discrete``), and ``track1_test.csv`` when present;
* ``2`` (MER-FG): ``track2_train_human.csv`` and ``track2_train_mercaptionplus.csv`` (``name,openset``);
* ``1``/``2``: ``track1_track2_candidate.csv`` (``name``), unlabelled;
* ``3`` (MER-Prefer): ``track3_emoprefer*.csv`` (``name,a1,a2,preference``) and
  ``track3_candidate.csv`` (``name,a1,a2``): one sample per row, both descriptions in
  ``Sample.labels`` (``a1``, ``a2``, plus ``preference`` where given) and the one named by
  ``--text-column`` (``a1`` default, ``a2``, ``chinese`` or ``english``) as the transcript, so
  ``emo extract`` run once per description gives text features of each. A clip that appears
  in several rows keeps its name in the first and gets ``NAME#2``, ``NAME#3``, ... in the
  later ones (file order; files sorted by name). Training a preference model is out of scope.

Options: ``track`` (required: ``1``, ``2``, or for MER 2026 ``3``), ``subset`` = ``all``
(default), ``labeled`` or ``unlabeled`` (the candidates), ``label_source`` (track 2: which
label files, ``all`` default; MER 2025 ``ovmerd``/``mercaptionplus``, MER 2026
``human``/``mercaptionplus``), ``text_column``. ``Sample.split`` records where a sample came
from (``train``, ``test1``, ``ovmerd``, ``mercaptionplus``, ``human``, ``candidate``, or the
Track 3 file stem).

One ``samples.csv`` per dataset folder: extract each track under its own name (``emo extract
--dataset mer2025 --track 2 --name mer2025_t2``), since ``emo fuse`` refuses stores that hold
clips its manifest lacks. Valence labels are on the MER scale [-5, 5] (``valence_scale``).

Column names are those of the challenge baselines (zeroQiaoba/MERTools ``MER2025``/``MER2026``:
``toolkit/dataloader/mer2025.py``, ``toolkit/preprocess/mer2026.py``, ``my_affectgpt/datasets/
datasets/ovmerd_dataset.py``, ``MER2026_Track3/main_dpo_batch.py``); a file with another column
layout is refused with the columns found and expected. A clip with neither video nor audio is
kept with ``media=None`` (extraction reports it per sample and goes on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emo.extract.datasets.base import (
    DatasetOptionError,
    read_csv_text,
    MER_CLASSES,
    DatasetAdapter,
    DatasetError,
    Sample,
    index_media,
    parse_float,
    register_dataset,
)
from emo.extract.datasets.mer import mer_label

SUBTITLES = "subtitle_chieng.csv"
SUBSETS = ("all", "labeled", "unlabeled")
#: MER valence scale (MER 2023-2025 ``discrete,valence`` files).
VALENCE_RANGE = (-5.0, 5.0)


def read_label_csv(path: Path, expected: list[str], optional: tuple[str, ...] = (),
                   unique: bool = True) -> list[dict[str, str]]:
    """Read a challenge CSV whose header must contain ``expected`` (``optional`` may be there too).

    Column names are stripped and lower-cased; cells stripped.

    Raises:
        DatasetError: missing file, not UTF-8, malformed CSV, or a header without the expected
            columns (the message lists the columns found and the ones expected), or a name that
            repeats (both rows named).
    """
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    cols, rows = read_csv_text(text, path)  # the strict reader: an unmatched quote never merges rows
    if not set(expected) <= set(cols):
        want = ", ".join(expected) + (f" (optional: {', '.join(optional)})" if optional else "")
        raise DatasetError(f"{path}: unknown column layout: found {', '.join(cols) or 'no header'}; "
                           f"expected {want}")
    if "name" in expected:
        seen: dict[str, int] = {}
        for i, row in enumerate(rows, start=2):
            n = row["name"]
            if not n:
                raise DatasetError(f"{path}, line {i}: empty name")
            if unique and n in seen:
                raise DatasetError(f"{path}: duplicate sample name {n!r} in lines {seen[n]} and {i}")
            seen.setdefault(n, i)
    return rows


def read_subtitles(root: Path, column: str) -> dict[str, str]:
    """``subtitle_chieng.csv`` -> name -> the ``column`` text (``{}`` when the file is absent).

    Raises:
        DatasetError: the file lacks ``name`` or ``column`` (columns found and expected listed).
    """
    path = root / SUBTITLES
    if not path.is_file():
        return {}
    return {r["name"]: r[column] for r in read_label_csv(path, ["name", column], optional=("chinese", "english"))}


def open_vocabulary(cell: str) -> list[str]:
    """An ``openset`` cell -> lower-case words, first occurrence order, duplicates dropped;
    an empty list becomes ``["neutral"]`` (as the MER 2025/2026 baseline loaders do)."""
    from emo.lexicon.wheel import split_words

    out: list[str] = []
    for w in split_words(cell):
        w = " ".join(w.lower().split())
        if w and w not in out:
            out.append(w)
    return out or ["neutral"]


class MERPool(DatasetAdapter):
    """Shared logic of the MER 2025/2026 layouts (one clip pool, root-level label CSVs).

    Subclasses set ``name``, ``tracks``, ``track1_files`` ((file, split) pairs; the first must
    exist), ``track1_columns``, ``track2_files`` ((label source, file) pairs) and ``candidates``.
    """

    tracks: tuple[str, ...] = ("1", "2")
    track1_files: tuple[tuple[str, str], ...] = ()
    track1_columns: tuple[str, ...] = ("name", "discrete")
    track1_optional: tuple[str, ...] = ()
    track2_files: tuple[tuple[str, str], ...] = ()
    candidates: str = ""
    valence_scale = VALENCE_RANGE

    def __init__(self, root, **options: Any) -> None:
        super().__init__(root, **options)
        track = options.get("track")
        if track is None or str(track) not in self.tracks:
            raise DatasetOptionError(f"{self.name}: --track must be one of {', '.join(self.tracks)} "
                               f"(got {track!r}): it picks the label files")
        self.track = str(track)
        self.subset = options.get("subset") or "all"
        if self.subset not in SUBSETS:
            raise DatasetOptionError(f"{self.name}: subset must be one of {', '.join(SUBSETS)}, not {self.subset!r}")
        # discrete classes only for the discrete track; open-vocabulary tracks have none
        self.classes = list(MER_CLASSES) if self.track == "1" else None
        self._video: dict[str, Path] | None = None
        self._audio: dict[str, Path] | None = None

    # -- media ----------------------------------------------------------------

    def media(self, name: str) -> tuple[Path | None, Path | None]:
        """(video, audio) paths of a clip; either may be ``None``."""
        if self._video is None:
            self._video = index_media(self.root / "video")
            self._audio = {k: v for k, v in index_media(self.root / "audio").items() if v.suffix.lower() == ".wav"}
        return self._video.get(name), (self._audio or {}).get(name)

    def make(self, name: str, text: dict[str, str], **fields: Any) -> Sample:
        """A :class:`Sample` for clip ``name`` (media = video, else audio; the wav in ``audio``)."""
        video, audio = self.media(name)
        # the pre-extracted wav goes in ``audio``: the audio encoders read it, not the video's track
        return Sample(name=fields.pop("sample_name", name), media=video or audio,
                      transcript=fields.pop("transcript", text.get(name, "")), audio=audio, **fields)

    # -- labels -----------------------------------------------------------------

    def load(self) -> list[Sample]:
        col = (self.options.get("text_column") or ("a1" if self.track == "3" else "chinese")).strip().lower()
        if self.track == "3":
            return self._load_track3(col)
        if col not in ("chinese", "english"):
            raise DatasetOptionError(f"{self.name}: text_column must be chinese or english, not {col!r}")
        text = read_subtitles(self.root, col)
        out: list[Sample] = []
        if self.subset in ("all", "labeled"):
            out += self._load_track1(text) if self.track == "1" else self._load_track2(text)
        if self.subset in ("all", "unlabeled"):
            labelled = {s.name for s in out}
            path = self.root / self.candidates
            if not path.is_file():
                if self.subset == "unlabeled":
                    raise DatasetError(f"{self.name}: {path} not found (the candidate clips)")
            else:
                for row in read_label_csv(path, ["name"]):
                    if row["name"] not in labelled:
                        out.append(self.make(row["name"], text, split="candidate"))
        return out

    def _load_track1(self, text: dict[str, str]) -> list[Sample]:
        out: list[Sample] = []
        for i, (fname, split) in enumerate(self.track1_files):
            path = self.root / fname
            if i > 0 and not path.is_file():
                continue
            for row in read_label_csv(path, list(self.track1_columns), self.track1_optional):
                name = row["name"]
                val = parse_float(row.get("valence"), path, name, "valence") if "valence" in row else None
                if val is not None and not VALENCE_RANGE[0] <= val <= VALENCE_RANGE[1]:
                    raise DatasetError(f"{path}: sample {name!r} has valence {val} outside the MER scale "
                                       f"[{VALENCE_RANGE[0]:g}, {VALENCE_RANGE[1]:g}]")
                out.append(self.make(name, text, discrete=mer_label(row["discrete"], path, name), valence=val, split=split))
        return out

    def _load_track2(self, text: dict[str, str]) -> list[Sample]:
        source = (self.options.get("label_source") or "all").strip().lower()
        known = dict(self.track2_files)
        if source != "all" and source not in known:
            raise DatasetOptionError(f"{self.name}: label_source must be all or one of {', '.join(known)}, not {source!r}")
        files = known if source == "all" else {source: known[source]}
        out: list[Sample] = []
        where: dict[str, Path] = {}
        for src, fname in files.items():
            path = self.root / fname
            if source == "all" and not path.is_file():
                continue
            for row in read_label_csv(path, ["name", "openset"]):
                name = row["name"]
                if name in where:
                    raise DatasetError(f"{self.name}: sample {name!r} is labelled in both {where[name]} and {path}; "
                                       f"pick one with label_source")
                where[name] = path
                out.append(self.make(name, text, emotions=open_vocabulary(row["openset"]), split=src))
        if not where and source == "all":
            raise DatasetError(f"{self.name}: no track-2 label file ({', '.join(known.values())}) under {self.root}")
        return out

    def _load_track3(self, col: str) -> list[Sample]:
        raise DatasetError(f"{self.name}: no track 3")


@register_dataset
class MER2025(MERPool):
    """MER 2025 (see the module docstring): ``--track 1`` discrete + valence, ``--track 2`` open vocabulary."""

    name = "mer2025"
    track1_files = (("track1_train_disdim.csv", "train"),)
    track1_optional = ("valence",)
    track2_files = (("ovmerd", "track2_train_ovmerd.csv"), ("mercaptionplus", "track2_train_mercaptionplus.csv"))
    candidates = "track_all_candidates.csv"


@register_dataset
class MER2026(MERPool):
    """MER 2026 (see the module docstring): ``--track 1`` discrete, ``2`` open vocabulary, ``3`` preference pairs."""

    name = "mer2026"
    tracks = ("1", "2", "3")
    track1_files = (("track1_train.csv", "train"), ("track1_test.csv", "test1"))
    track2_files = (("human", "track2_train_human.csv"), ("mercaptionplus", "track2_train_mercaptionplus.csv"))
    candidates = "track1_track2_candidate.csv"

    def _load_track3(self, col: str) -> list[Sample]:
        if col not in ("a1", "a2", "chinese", "english"):
            raise DatasetOptionError(f"{self.name}: track 3 text_column must be a1, a2, chinese or english, not {col!r}")
        text = read_subtitles(self.root, col) if col in ("chinese", "english") else {}
        files: list[tuple[Path, bool]] = []
        if self.subset in ("all", "labeled"):
            files += [(p, True) for p in sorted(self.root.glob("track3_emoprefer*.csv"))]
        if self.subset in ("all", "unlabeled") and (self.root / "track3_candidate.csv").is_file():
            files.append((self.root / "track3_candidate.csv", False))
        if not files:
            raise DatasetError(f"{self.name}: no track-3 file (track3_emoprefer*.csv, track3_candidate.csv) under {self.root}")
        out: list[Sample] = []
        count: dict[str, int] = {}
        for path, labelled in files:
            expected = ["name", "a1", "a2"] + (["preference"] if labelled else [])
            for row in read_label_csv(path, expected, unique=False):
                clip = row["name"]
                count[clip] = count.get(clip, 0) + 1
                sample_name = clip if count[clip] == 1 else f"{clip}#{count[clip]}"
                labels = {"a1": row["a1"], "a2": row["a2"], "file": path.name}
                if labelled:
                    labels["preference"] = row["preference"]
                transcript = text.get(clip, "") if col in ("chinese", "english") else row[col]
                out.append(self.make(clip, text, sample_name=sample_name, transcript=transcript,
                                     labels=labels, split=path.stem))
        return out
