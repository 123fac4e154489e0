"""The pipeline: both stages together. Owns `emo score` (extract + a trained fusion run).

This module sits above :mod:`emo.extract` and :mod:`emo.fuse` (dependencies point one way:
lexicon <- extract <- fuse <- pipeline <- cli).

`emo score`: apply a trained run to new files or folders, or to a dataset through its adapter.

Extracts exactly the features the run was trained on (same encoders, sources and
layers; frame-level features for the encoders a ``--frames`` run reads as sequences),
applies the fold ensemble (mean of probabilities) and writes one row per file. A broken
file gets an error row and a line in the summary; it never stops the batch.

- Transcripts: ``--transcripts CSV`` (``name,transcript``) or ``--dataset NAME --root DIR``
  (the adapter's transcripts and names). A run with a text input and no transcript for a file
  gets a zero text vector flagged ``no_text``: a warning says so, and every row carries its flags.
- ``--features-dir DIR`` reuses stores of ``emo extract`` (``DIR/<encoder>.h5``) for the files they
  already hold, when their provenance matches the run's; only the rest is extracted.
- Names follow the datasets' rule: the file stem (``sample_00000167``), or the adapter's names with
  ``--dataset``; the path relative to the folder given is in the ``relpath`` column.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emo import fsio
from emo.exitcodes import Interrupted, interrupt_pending
from emo.extract.datasets.base import MEDIA_SUFFIXES, DatasetAdapter, Sample
from emo.extract.media import DEFAULT_FPS

if TYPE_CHECKING:
    from emo.fuse.training.inputs import FeatureInput


class FileList(DatasetAdapter):
    """An ad-hoc dataset over explicit files and folders (folders are searched recursively).

    Sample names follow the datasets' naming rule: the file stem (``sample_00000167``), so they
    match the names of ``emo extract`` stores and label files. Two files with one stem get ``~2``,
    ``~3``... (in path order); :attr:`relpaths` keeps each file's path relative to the folder given
    (prefixed by that folder's name; a plain file: its name).
    """

    name = "score"
    #: samples are identified by content alone: the store records no root (files come from anywhere)
    ad_hoc = True

    def __init__(self, paths: list[str | os.PathLike]) -> None:  # no single root
        self.root = Path(".")
        self.options = {}
        self.dataset = self.name
        self.paths = [Path(p) for p in paths]
        self.relpaths: dict[str, str] = {}

    def load(self) -> list[Sample]:
        out: list[Sample] = []
        names: set[str] = set()
        self.relpaths = {}

        def add(name: str, path: Path, rel: str) -> None:
            base, k = name, 1
            while name in names:
                k += 1
                name = f"{base}~{k}"
            names.add(name)
            self.relpaths[name] = rel
            out.append(Sample(name=name, media=path))

        for p in self.paths:
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES:
                        add(f.stem, f, f"{p.name}/{f.relative_to(p).as_posix()}")
            else:
                add(p.stem, p, p.name)  # missing or broken files are reported per sample by the engine
        return out


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """``name -> transcript`` from a CSV with columns ``name`` and ``transcript`` (UTF-8, header row).

    Raises:
        emo.extract.datasets.DatasetError: missing file or column, a duplicate name (file and row named).
    """
    from emo.extract.datasets.base import DatasetError, read_csv

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"transcript file {path} does not exist")
    out: dict[str, str] = {}
    for i, row in enumerate(read_csv(path, ["name", "transcript"]), start=2):
        name = row["name"]
        if not name:
            raise DatasetError(f"{path} row {i}: empty name")
        if name in out:
            raise DatasetError(f"{path} row {i}: duplicate name {name!r}")
        out[name] = row["transcript"]
    return out


def _reusable(store, inp: FeatureInput, face_detector: str | None) -> str | None:
    """Why the store cannot serve the run's input ``inp`` (``None``: it can).

    Same encoder, source, weights hash, pooling, sample rate, face-frame rate and dtype as the
    features the run was trained on; the run's layers stored; frames stored for a frame-level input;
    the same face detector as this scoring run.
    """
    trained = inp.provenance
    for k in ("encoder", "source", "weights_hash", "pooling", "sample_rate", "fps", "dtype"):
        a, b = trained.get(k), store.attrs.get(k)
        if a not in (None, "") and b not in (None, "") and a != b:
            return f"{k}: store has {b!r}, the run was trained on {a!r}"
    if not trained.get("weights_hash") and store.attrs.get("weights_hash"):
        return "the run records no weights hash to compare with"
    from emo.extract.combine import parts_of  # a combination (mean(21-24)) needs the layers it combines
    from emo.extract.layers import LayerSpecError

    try:
        needed = [p for k in inp.layers for p in parts_of(k, store.layers)[1]]
    except LayerSpecError as e:
        return str(e)
    missing = [k for k in needed if k not in store.layers]
    if missing:
        return f"no layer(s) {', '.join(missing)}"
    if inp.frames and not store.has_frames:
        return "no frame-level features (the run reads frames)"
    det = store.attrs.get("face_detector")
    if face_detector and det and det != face_detector:
        return f"face detector {det!r}, this scoring run uses {face_detector!r}"
    return None


def _read(store, inp: FeatureInput, names: list[str]):
    """The run's layers of ``inp`` for ``names``: float32 (N, L, D), or for a frame-level input a list of
    N arrays (T_i, L, D)."""
    if not inp.frames:
        return store.read(inp.layers, names)
    per_layer = [store.read_frames(k, names) for k in inp.layers]
    return [np.stack([seqs[i] for seqs in per_layer], axis=1) for i in range(len(names))]


def derived_inputs(inputs) -> dict[str, dict[str, Any]]:
    """The run's inputs that are derived stores (``derived_from`` in their provenance: CLIPL-A), by name:
    ``{"spec"`` (the source encoder's extraction spec with its one layer), ``"encoder"``, ``"layer"``,
    ``"weights_hash"`` (of the source features), ``"mlp_file"``, ``"mlp_sha256"``, ``"name"}``.

    Raises:
        emo.fuse.run.RunError: an unknown derivation method, or an alignment that did not record the
            source encoder's spec (``encoder_source``; aligned before emo recorded it) whose source store
            is no longer there to read it from.
    """
    from emo.extract.spec import format_spec
    from emo.fuse.run import RunError

    out: dict[str, dict[str, Any]] = {}
    for inp in inputs:
        raw = inp.provenance.get("derived_from")
        if not raw:
            continue
        d = json.loads(raw) if isinstance(raw, str) else dict(raw)
        if d.get("method") != "clipla":
            raise RunError(f"{inp.name}: derived by {d.get('method')!r}, which emo score cannot recompute")
        src = d["source"]
        source_attr = src.get("encoder_source")
        if source_attr is None:  # older alignments: read the source store's attribute where it still is
            p = Path(src.get("path", ""))
            if not p.is_file():
                raise RunError(f"{inp.name}: the alignment does not record the source encoder's spec and its source store "
                               f"{p} is gone; re-run emo fuse align to score from media")
            from emo.extract.store import FeatureStore

            source_attr = FeatureStore(p).attrs.get("source", "")
        out[inp.name] = {"name": inp.name, "encoder": src["encoder"], "layer": src["layer"],
                         "spec": format_spec(src["encoder"], source_attr or None, [src["layer"]]),
                         "weights_hash": src.get("weights_hash"), "mlp_file": d["mlp_file"], "mlp_sha256": d["mlp_sha256"]}
    return out


def apply_derived(d: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """A CLIPL-A derived input from its source features ``x`` (N, d_v): float32 (N, d_a), through the MLP file the
    derived store recorded, after checking its SHA-256 against both the store's record and the alignment run's.

    Raises:
        emo.fuse.run.RunError: the MLP file or its alignment run is missing, or its SHA-256 differs.
    """
    from emo.fuse.methods.align import AlignError, apply_alignment, load_alignment
    from emo.fuse.run import RunError

    mlp = Path(d["mlp_file"])
    try:
        model, cfg = load_alignment(mlp.parent)
        if cfg.get("mlp_sha256") != d["mlp_sha256"]:
            raise AlignError(f"{mlp}: SHA-256 {str(cfg.get('mlp_sha256'))[:16]} is not the {d['mlp_sha256'][:16]} "
                             f"the {d['name']} store was written with (the alignment was retrained)")
        return apply_alignment(model, cfg, x)
    except AlignError as e:
        raise RunError(f"{d['name']}: {e}") from None


#: ``emo score --speaker-fallback``: what a ``--normalize speaker`` run does with a clip whose speaker
#: is unknown or has fewer than ``--min-speaker-clips`` clips: ``refuse`` (default) or ``global``
#: (each fold's global training statistics; written into the clip's ``normalization`` cell).
SPEAKER_FALLBACKS = ("refuse", "global")

#: Fewest scored clips of a speaker whose own statistics normalise them (``--min-speaker-clips``).
MIN_SPEAKER_CLIPS = 5


@dataclass
class ScoreJob:
    """What :func:`score` resolved before any extraction (stage 1, :func:`resolve_inputs`)."""

    run: Any
    samples: list[Sample]
    adapter: DatasetAdapter
    relpaths: dict[str, str]
    specs: dict[str, Any]
    derived: dict[str, dict[str, Any]]
    hlft: dict[str, dict[str, Any]]
    fps: float
    face_detector: str
    modalities: dict[str, str]
    speakers: dict[str, str | None] = field(default_factory=dict)
    normalization: dict[str, str] = field(default_factory=dict)


@dataclass
class ScoreFeatures:
    """The run's inputs for the clips that extracted (stage 2, :func:`reuse_or_extract`)."""

    names: list[str]
    feats: dict[str, Any]
    fold_feats: list[dict[str, Any]]
    flags: dict[str, set[str]]
    failed: dict[str, str]
    reused: dict[str, int]
    extracted: dict[str, int]
    #: files an interrupt (SIGINT/SIGTERM) left without features: their rows say so and a rerun resumes
    interrupted: set[str] = field(default_factory=set)


def score(paths: list[str | os.PathLike] | None, run_dir: str | os.PathLike, out_csv: str | os.PathLike,
          device: str = "auto", cache: str | os.PathLike | None = None, face_detector: str | None = None,
          mtcnn_weights: str | None = None, progress: bool = True, *, transcripts: str | os.PathLike | None = None,
          adapter: DatasetAdapter | None = None, features_dir: str | os.PathLike | None = None,
          lexicon: str | os.PathLike | None = None, warn=None, radius: float = 0.25,
          vocabulary: str | os.PathLike = "affect", vad_labels: list[str] | str | None = None,
          trust_remote_code: bool = False, speakers: str | os.PathLike | None = None, speaker_column: str = "speaker",
          speaker_fallback: str = "refuse", min_speaker_clips: int = MIN_SPEAKER_CLIPS,
          audio_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score media files (or a dataset's samples) with a trained run, in four stages: resolve the
    inputs and check them against the run's contract (:func:`resolve_inputs`), reuse stores or
    extract (:func:`reuse_or_extract`), predict (:func:`predict_scores`), write (:func:`write_scores`).

    Args:
        paths: files and/or folders (``None`` or empty with ``adapter``).
        run_dir: a directory written by ``emo fuse train``.
        out_csv: output CSV: ``name, relpath, path, split, status, flags, normalization``, then
            ``pred, prob_<class>...`` (discrete tasks), ``valence`` and/or ``valence, arousal,
            dominance`` (regression tasks). ``split``: the sample's partition (MER: ``train``,
            ``candidate``...). ``normalization``: how the clip's features were standardised (the
            run's mode; for ``--normalize speaker`` runs, own statistics or the chosen fallback).
            ``flags`` joins the samples' store flags (``no_face;no_text``) over the run's encoders.
            A run with a VAD output also gets ``vad_label`` and ``vad_words``
            (:class:`emo.lexicon.bridge.VADBridge`, Jia et al. 2024 Sec. 3). Scales: VAD in
            [-1, 1] for lexicon-target runs; ``valence`` in the training labels' scale (``valence_scale``).
        device: extraction and inference device (``auto``: CUDA when available).
        cache: keep the extracted features here (default: a temporary directory, removed).
        face_detector: ``mtcnn`` or ``haar``; default the run's (its ``input_contract``); another
            than the run's is refused.
        transcripts: CSV ``name,transcript`` (names as in the ``name`` column: file stems).
        adapter: score a dataset through its adapter (its names, transcripts and speakers) instead of ``paths``.
        features_dir: a folder of ``emo extract`` stores (``<encoder>.h5``) reused when their provenance matches.
        lexicon, radius, vocabulary, vad_labels: NRC-VAD lexicon and VAD-bridge settings (see :func:`vad_bridge`).
        speakers: CSV with ``name`` and ``speaker_column`` (speaker per scored file), for
            ``--normalize speaker`` runs; with ``adapter`` its speakers are used unless this is given.
        speaker_fallback: :data:`SPEAKER_FALLBACKS`. min_speaker_clips: see :data:`MIN_SPEAKER_CLIPS`.
        audio_dir: a folder of pre-extracted wav files (``NAME.wav``) that audio encoders read
            instead of the media's own track (what MER 2025/2026 training reads from ``audio/``).
        warn: called with each warning line (default: :func:`warnings.warn`).

    Returns:
        Summary dict: ``n``, ``ok``, ``failed`` (name -> error), ``out``, ``reused`` (encoder -> samples
        read from ``features_dir``), ``extracted`` (encoder -> samples extracted), ``warnings``,
        ``normalization`` (label -> clips).

    Raises:
        emo.fuse.run.RunError: the run directory is unusable; the scored inputs differ from the
            run's contract (audio source, face detector, transcript column; named); speakers needed
            and missing; extracted features from other weights.
        emo.extract.datasets.DatasetError: unreadable transcript or speaker file.
        ValueError: no input files, or both ``paths`` and ``adapter``.
    """
    import warnings as _warnings

    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        (warn or (lambda m: _warnings.warn(m, stacklevel=3)))(msg)

    job = resolve_inputs(paths, run_dir, out_csv, adapter=adapter, transcripts=transcripts, face_detector=face_detector,
                         speakers=speakers, speaker_column=speaker_column, speaker_fallback=speaker_fallback,
                         min_speaker_clips=min_speaker_clips, audio_dir=audio_dir, note=note)
    bridge = vad_bridge(job.run.config, lexicon, radius, vocabulary, vad_labels, note)
    got = reuse_or_extract(job, features_dir, cache, device, mtcnn_weights, progress, lexicon, trust_remote_code, note,
                           out_csv)
    preds = predict_scores(job, got)
    ok = write_scores(job, got, preds, bridge, fsio.check_not_link(out_csv), note)
    if got.interrupted:
        raise ScoreInterrupted(len(job.samples) - len(got.interrupted), len(job.samples), Path(out_csv))
    counts: dict[str, int] = {}
    for smp in job.samples:
        lab = job.normalization.get(smp.name, "")
        counts[lab] = counts.get(lab, 0) + 1
    return {"n": len(job.samples), "ok": ok, "failed": got.failed, "out": str(out_csv), "reused": got.reused,
            "extracted": got.extracted, "warnings": notes, "normalization": counts}


def _samples(paths, adapter: DatasetAdapter | None, audio_dir) -> tuple[DatasetAdapter, list[Sample], dict[str, str]]:
    """The adapter (a :class:`FileList` for ``paths``), its samples and their relative paths; with
    ``audio_dir``, each sample's ``audio`` is ``audio_dir/NAME.wav`` where that file exists."""
    if adapter is not None and paths:
        raise ValueError("give either files/folders or --dataset/--root, not both")
    relpaths: dict[str, str] = {}
    if adapter is None:
        adapter = FileList(paths or [])
        samples = adapter.samples()
        relpaths = adapter.relpaths
        if not samples:
            raise ValueError(f"no media files found in {', '.join(map(str, paths or [])) or '(nothing given)'}")
    else:
        samples = adapter.samples()
        for smp in samples:
            try:
                relpaths[smp.name] = Path(smp.media).relative_to(adapter.root).as_posix() if smp.media else ""
            except ValueError:  # media outside the root (an adapter's own layout): the path as is
                relpaths[smp.name] = str(smp.media)
        if not samples:
            raise ValueError(f"dataset {adapter.dataset} at {adapter.root} has no samples")
    if audio_dir is not None:
        for smp in samples:
            wav = Path(audio_dir) / f"{Path(smp.name).name}.wav"
            if wav.is_file():
                smp.audio = wav
    return adapter, samples, relpaths


def read_speakers(path: str | os.PathLike, column: str = "speaker") -> dict[str, str]:
    """``{name: speaker}`` from a CSV with columns ``name`` and ``column`` (empty cells: unknown).

    Raises:
        emo.extract.datasets.DatasetError: unreadable file or missing columns (named).
    """
    import csv

    from emo.extract.datasets import DatasetError

    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "name" not in reader.fieldnames or column not in reader.fieldnames:
                raise DatasetError(f"{path}: needs the columns name and {column} (found {reader.fieldnames}); "
                                   "name the speaker column with --speaker-column")
            return {r["name"].strip(): (r[column] or "").strip() for r in reader if r.get("name")}
    except OSError as e:
        raise DatasetError(f"cannot read speakers file {path}: {e.strerror or e}") from None


def speaker_normalization(run, samples: list[Sample], speakers: dict[str, str | None], fallback: str,
                          min_clips: int) -> dict[str, str]:
    """How each scored clip is standardised: ``{name: label}`` for the output's ``normalization`` column.

    ``--normalize speaker`` runs: a clip whose speaker is known and has at least ``min_clips`` scored
    clips uses that speaker's own statistics (as in training, where every speaker's statistics came
    from its own clips); any other clip is refused unless ``fallback`` is ``global`` (each fold's
    global training statistics, the label says so). Other runs: the run's mode.

    Raises:
        emo.fuse.run.RunError: clips without usable speaker statistics and ``fallback`` ``refuse``
            (counted, with an example and the options that fix it).
    """
    from emo.fuse.run import RunError

    mode = (run.config.get("normalization") or {}).get("mode", "none")
    if mode != "speaker":
        return {s.name: {"global": "global: training-fold statistics", "none": "none"}.get(mode, mode) for s in samples}
    if fallback not in SPEAKER_FALLBACKS:
        raise ValueError(f"--speaker-fallback must be one of {', '.join(SPEAKER_FALLBACKS)}, not {fallback!r}")
    count: dict[str, int] = {}
    for s in samples:
        if speakers.get(s.name):
            count[speakers[s.name]] = count.get(speakers[s.name], 0) + 1
    out, bad = {}, []
    for s in samples:
        spk = speakers.get(s.name)
        if spk and count[spk] >= min_clips:
            out[s.name] = f"speaker: own statistics of {spk} ({count[spk]} clips)"
            continue
        why = "speaker unknown" if not spk else f"speaker {spk} has {count[spk]} clip(s) < {min_clips}"
        bad.append((s.name, why))
        out[s.name] = f"fallback global: {why}"
    if bad and fallback == "refuse":
        raise RunError(f"{run.path}: the run was trained with --normalize speaker; {len(bad)} of {len(samples)} clips have no "
                       f"usable speaker statistics (e.g. {bad[0][0]}: {bad[0][1]}); give speakers (--dataset with speakers, "
                       f"--speakers CSV with --speaker-column) or --min-speaker-clips, or accept --speaker-fallback global "
                       "(each fold's global training statistics, written into every row)")
    return out


def resolve_inputs(paths, run_dir, out_csv, *, adapter=None, transcripts=None, face_detector=None, speakers=None,
                   speaker_column="speaker", speaker_fallback="refuse", min_speaker_clips=MIN_SPEAKER_CLIPS,
                   audio_dir=None, note=print) -> ScoreJob:
    """Stage 1 of :func:`score`: load the run, list the samples (transcripts, speakers, audio files),
    check them against the run's ``input_contract`` (:func:`emo.fuse.eval.contract.contract_differences`)
    and resolve what to extract. Nothing is extracted here.

    Raises:
        emo.fuse.run.RunError: unusable run, or inputs that differ from the contract (named).
        ValueError: bad output path, no input files.
    """
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.spec import format_spec, spec_name
    from emo.fuse.eval.contract import audio_source, contract_differences
    from emo.fuse.run import RunError, load_run
    from emo.fuse.methods.tune import hlft_inputs

    run = load_run(run_dir)
    out_csv = fsio.check_not_link(out_csv)  # a bad output is refused before any extraction
    if out_csv.is_dir():
        raise ValueError(f"--out {out_csv} is a directory: give the path of a CSV file")
    adapter, samples, relpaths = _samples(paths, adapter, audio_dir)
    modalities = {inp.name: inp.modality for inp in run.inputs}
    if transcripts is not None:
        text = read_transcripts(transcripts)
        unknown = sorted(set(text) - {smp.name for smp in samples})
        if unknown:
            note(f"{transcripts}: {len(unknown)} name(s) match no scored file (e.g. {unknown[0]!r}); names are file stems")
        for smp in samples:
            if smp.name in text:
                smp.transcript = text[smp.name]
    text_inputs = [n for n, m in modalities.items() if m == "text"]
    if text_inputs:
        n_text = sum(bool((smp.transcript or "").strip()) for smp in samples)
        if n_text == 0:
            note(f"the run uses text features ({', '.join(text_inputs)}) but no file has a transcript: their text "
                 "vectors are zeros (flag no_text); pass --transcripts CSV (name,transcript) or --dataset/--root")
        elif n_text < len(samples):
            note(f"{len(samples) - n_text} of {len(samples)} files have no transcript: their text features "
                 f"({', '.join(text_inputs)}) are zeros (flag no_text)")
    contract = run.config.get("input_contract") or {}
    trained_det = next((r.get("face_detector") for r in contract.get("inputs", {}).values() if r.get("face_detector")), None)
    face_detector = face_detector or trained_det or "mtcnn"
    col = None if (transcripts is not None or getattr(adapter, "ad_hoc", False)) else ((adapter.options or {}).get("text_column") or "default")
    diff = contract_differences(contract, audio=audio_source(samples), face_detector=face_detector, text_column=col)
    if diff:
        raise RunError(f"{run.path}: scoring would not compute what the run was trained on: " + "; ".join(diff)
                       + " (MER 2025/2026: score with --dataset/--root, which reads audio/NAME.wav, or --audio-dir DIR; "
                         "faces: the run's --face-detector)")
    spk = {s.name: s.speaker for s in samples}
    if speakers is not None:
        spk = {s.name: None for s in samples} | {k: v or None for k, v in read_speakers(speakers, speaker_column).items()}
    norm = speaker_normalization(run, samples, spk, speaker_fallback, min_speaker_clips)
    hlft = hlft_inputs(run.inputs)  # per-fold HLFT features: fold k's model gets fold k's adapters (emo.fuse.methods.tune)
    derived = derived_inputs(run.inputs)  # CLIPL-A stores: recomputed from their source encoder (emo.fuse.methods.align)
    specs = {s.name: s for s in (_run_spec(run, t) for t in run.feature_specs
                                 if spec_name(t) not in hlft and spec_name(t) not in derived)}
    for n, d in derived.items():
        src = _run_spec(run, d["spec"])
        have = specs.get(src.name)
        if have is not None and have.layers is not None and d["layer"] not in have.layers:
            specs[src.name] = parse_encoder_spec(format_spec(src.name, have.source, [*have.layers, d["layer"]]))
        elif have is None:
            specs[src.name] = src
    fps = next((float(i.provenance["fps"]) for i in run.inputs if i.provenance.get("fps")), DEFAULT_FPS)
    return ScoreJob(run, samples, adapter, relpaths, specs, derived, hlft, fps, face_detector, modalities, spk, norm)


def _run_spec(run, text: str):
    """The extraction spec ``text`` a run recorded, parsed (:func:`emo.extract.registry.parse_encoder_spec`).

    Raises:
        emo.fuse.run.RunError: an encoder this emo does not know, or a malformed spec, naming the run's
            ``config.json`` (an edited file, or a run of another emo version or plugin).
    """
    from emo.extract.layers import LayerSpecError
    from emo.extract.registry import UnknownEncoderError, parse_encoder_spec
    from emo.fuse.run import RunError

    try:
        return parse_encoder_spec(text)
    except (UnknownEncoderError, LayerSpecError) as e:
        raise RunError(f"{Path(run.path) / 'config.json'}: the run's feature spec {text!r} cannot be extracted: {e} "
                       "(a run of another emo version or plugin, or an edited config.json)") from None


def _reusable_stores(job: ScoreJob, features_dir, note) -> tuple[dict[str, Any], dict[str, set[str]], dict[str, dict[str, Any]]]:
    """Stores under ``features_dir`` that can serve the run's inputs (:func:`_reusable`); per input, the
    sample names they hold with unchanged content and finite features; and per input the rows read for
    the finiteness check (``{name: row}``), which :func:`_read_inputs` scores without reading again."""
    from emo.extract.engine import identities
    from emo.extract.store import FeatureStore, StoreError

    reuse: dict[str, Any] = {}
    from_store: dict[str, set[str]] = {}
    held_rows: dict[str, dict[str, Any]] = {}
    if features_dir is None:
        return reuse, from_store, held_rows
    ids_now = identities(job.samples)
    for inp in job.run.inputs:
        p = Path(features_dir) / f"{inp.name}.h5"
        if inp.name in job.derived or not p.exists():  # derived inputs: recomputed from their source features
            continue
        try:
            st = FeatureStore(p)
        except StoreError as e:
            note(f"{p}: not reused ({e})")
            continue
        why = _reusable(st, inp, job.face_detector if job.modalities.get(inp.name) == "face" else None)
        if why:
            note(f"{p}: not reused ({why})")
            continue
        reuse[inp.name] = st
        held = {smp.name for smp in job.samples if smp.name in st.index}
        stale = {n for n in held if st.identity(n) and ids_now.get(n) and st.identity(n) != ids_now[n]}
        if stale:
            note(f"{p}: {len(stale)} file(s) differ in content from the stored sample of that name "
                 f"(e.g. {sorted(stale)[0]!r}): extracted anew")
        keep = sorted(held - stale)
        if keep:  # a NaN/inf row of the store is the store's fault, not the run's: never reused, extracted anew (issue 25)
            from emo.fuse.eval.runcheck import nonfinite_rows

            rows = _read(st, inp, keep)
            bad = {keep[i] for i in nonfinite_rows(rows)}
            held_rows[inp.name] = {x: r for x, r in zip(keep, rows) if x not in bad}
            if bad:
                shown = ", ".join(repr(x) for x in sorted(bad)[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                note(f"{p}: {len(bad)} sample(s) of dataset {st.attrs.get('dataset')!r} hold non-finite features (NaN/inf) in this "
                     f"store: {shown}; not reused, extracted anew from their files (re-extract the store to repair it)")
                stale |= bad
        from_store[inp.name] = held - stale
    return reuse, from_store, held_rows


def reuse_or_extract(job: ScoreJob, features_dir, cache, device, mtcnn_weights, progress, lexicon, trust_remote_code,
                     note, out_csv: str | os.PathLike) -> ScoreFeatures:
    """Stage 2 of :func:`score`: read what matching stores hold, extract the rest (with the run's
    face-frame rate and face detector), check the weights hashes, and read every input of the clips
    that did not fail. Extracted stores go to ``cache`` or to ``.<out>.score-cache`` beside ``out_csv``,
    removed before it returns unless SIGINT/SIGTERM stopped the extraction: then the files without
    features are returned in ``interrupted`` and the cache is kept, so the same command resumes.

    Raises:
        emo.fuse.run.RunError: extracted features from other weights than the run's (named).
    """
    from emo.extract.engine import Extractor
    from emo.extract.store import FeatureStore, store_path
    from emo.extract.types import resolve_device
    from emo.fuse.run import RunError
    from emo.fuse.methods.tune import hlft_score_encoders

    run, samples, specs = job.run, job.samples, job.specs
    device = resolve_device(device)
    reuse, from_store, held_rows = _reusable_stores(job, features_dir, note)
    need = {n: [smp for smp in samples if smp.name not in from_store.get(n, set())] for n in specs}
    tmp = None
    if cache is None and (any(need.values()) or job.hlft):
        tmp = _resumable_cache(out_csv)  # kept when interrupted: the rerun resumes from it
        cache = str(tmp)
    interrupted: set[str] = set()  # files not scored because SIGINT/SIGTERM stopped the extraction
    failed: dict[str, str] = {}
    flags: dict[str, set[str]] = {smp.name: set() for smp in samples}
    feats: dict[str, Any] = {}
    fold_feats: list[dict[str, Any]] = []
    try:
        stores: dict[str, Any] = {}
        todo = [n for n in specs if need[n]]
        if todo:
            ex = Extractor([specs[n] for n in todo], out=cache, device=device, frames=set(run.frame_inputs), fps=job.fps,
                           face_detector=job.face_detector, mtcnn_weights=mtcnn_weights, progress=progress,
                           encoder_options={**({"lexicon": str(lexicon)} if lexicon else {}),
                                            **({"trust_remote_code": True} if trust_remote_code else {})} or None)
            groups: dict[tuple[str, ...], list[str]] = {}
            for n in todo:
                groups.setdefault(tuple(smp.name for smp in need[n]), []).append(n)
            for key, encs in groups.items():
                chosen = set(key)
                try:
                    summary = ex.for_encoders(encs).run(job.adapter, [smp for smp in samples if smp.name in chosen])
                except KeyboardInterrupt:  # finished clips are in the cache's shards: score those, mark the rest
                    interrupted = _unfinished_after_interrupt(cache, job.adapter.dataset, todo, need)
                    break
                for r in summary.encoders:
                    for n, e in r.failed.items():
                        failed.setdefault(n, e)
            stores = {n: FeatureStore(store_path(cache, job.adapter.dataset, n)) for n in todo
                      if not interrupted or store_path(cache, job.adapter.dataset, n).exists()}
        hlft_stores: dict[str, list[Any]] = {}
        if interrupted and job.hlft:
            interrupted = {smp.name for smp in samples}
        for n, inp in ({} if interrupted else job.hlft).items():
            encs = hlft_score_encoders(inp, device)
            summary = Extractor([], out=cache, device=device, progress=progress, encoders=encs).run(job.adapter, samples)
            for r in summary.encoders:
                for x, e in r.failed.items():
                    failed.setdefault(x, e)
            hlft_stores[n] = [FeatureStore(store_path(cache, job.adapter.dataset, e.name)) for e in encs]
        for inp in run.inputs:
            st = stores.get(inp.name)
            trained, now = inp.provenance.get("weights_hash"), (st.attrs.get("weights_hash") if st is not None else None)
            if trained and now and trained != now:
                raise RunError(f"{inp.name}: the run was trained on features of weights {trained}, "
                               f"but scoring extracted {now}; score with the same checkpoint")
        for n, d in job.derived.items():
            st = stores.get(d["encoder"]) or reuse.get(d["encoder"])
            now = st.attrs.get("weights_hash") if st is not None else None
            if now != d["weights_hash"]:
                raise RunError(f"{n}: the alignment was trained on {d['encoder']} features of weights {d['weights_hash']}, "
                               f"but scoring extracted {now}; score with the same checkpoint")
        names = [smp.name for smp in samples if smp.name not in failed and smp.name not in interrupted]
        _read_inputs(job, names, reuse, stores, from_store, flags, feats, held_rows)
        if names and job.hlft:  # fold k: its model on the features of its own adapters
            for k in range(min(len(v) for v in hlft_stores.values())):
                fk = dict(feats)
                for n, sts in hlft_stores.items():
                    fk[n] = sts[k].read(job.hlft[n]["layers"], names)
                    for x in names:
                        flags[x] |= sts[k].flags(x)
                fold_feats.append(fk)
    finally:
        if tmp is not None and not interrupted and interrupt_pending() is None:
            shutil.rmtree(tmp, ignore_errors=True)
    names_all = {smp.name for smp in samples}
    return ScoreFeatures(names, feats, fold_feats, flags, failed,
                         {n: len(from_store.get(n, set()) & names_all) for n in specs}, {n: len(need[n]) for n in specs},
                         interrupted)


def _read_inputs(job: ScoreJob, names: list[str], reuse, stores, from_store, flags, feats,
                 held_rows: dict[str, dict[str, Any]] | None = None) -> None:
    """Fill ``feats`` with every (non-HLFT) input of ``names``, from the reused or the new store of
    each clip (derived inputs through their recorded MLP), and ``flags`` with their store flags.
    Reused rows already read by :func:`_reusable_stores` (``held_rows``) are taken from there."""
    for n, d in job.derived.items():  # the source layer of every clip through the recorded, hash-checked MLP
        enc = d["encoder"]
        have = from_store.get(enc, set())
        src_rows: dict[str, np.ndarray] = {}
        for st, part in ((reuse.get(enc), [x for x in names if x in have]), (stores.get(enc), [x for x in names if x not in have])):
            if part:
                for x, v in zip(part, st.read([d["layer"]], part)[:, 0]):
                    src_rows[x] = v
                for x in part:
                    flags[x] |= st.flags(x)
        if names:
            feats[n] = apply_derived(d, np.stack([src_rows[x] for x in names]))[:, None, :]
    for inp in job.run.inputs:
        n = inp.name
        if n in job.hlft or n in job.derived:
            continue
        have = from_store.get(n, set())
        got: dict[str, Any] = {}
        for src, part in ((reuse.get(n), [x for x in names if x in have]), (stores.get(n), [x for x in names if x not in have])):
            if not part:
                continue
            held = (held_rows or {}).get(n, {}) if src is reuse.get(n) else {}
            unread = [x for x in part if x not in held]
            got.update({x: held[x] for x in part if x in held})
            if unread:
                got.update(zip(unread, _read(src, inp, unread)))
            for x in part:
                flags[x] |= src.flags(x)
        rows = [got[x] for x in names]
        feats[n] = rows if inp.frames else (np.stack(rows) if rows else np.zeros((0, 0, 0), np.float32))


def predict_scores(job: ScoreJob, got: ScoreFeatures) -> dict[str, np.ndarray]:
    """Stage 3 of :func:`score`: the fold ensemble's outputs for ``got.names``. ``--normalize speaker``
    runs standardise each clip by its own speaker's statistics over the scored clips (those whose
    ``normalization`` label says so), the rest by each fold's global statistics (the chosen fallback)."""
    if not got.names:
        return {}
    run = job.run
    spk, stats = None, None
    if (run.config.get("normalization") or {}).get("mode") == "speaker":
        from emo.fuse.training.data import Frames, Normalizer

        own = [job.speakers.get(x) if job.normalization.get(x, "").startswith("speaker:") else None for x in got.names]
        rows = np.flatnonzero([s is not None for s in own])
        blocks = {k: (v if isinstance(v, (np.ndarray, Frames)) else Frames.from_list([np.asarray(a) for a in v]))
                  for k, v in got.feats.items()}
        stats = Normalizer("speaker").fit(blocks, rows if len(rows) else np.arange(len(own)), own).speaker if len(rows) else {}
        spk = own
    if job.hlft:
        outs = [run.predict(fk, speakers=spk, folds=[k], speaker_stats=stats) for k, fk in enumerate(got.fold_feats)]
        return {key: np.mean([o[key] for o in outs], axis=0).astype(np.float32) for key in outs[0]}
    return run.predict(got.feats, speakers=spk, speaker_stats=stats)


def write_scores(job: ScoreJob, got: ScoreFeatures, preds: dict[str, np.ndarray], bridge, out_csv: Path, note) -> int:
    """Stage 4 of :func:`score`: one CSV row per sample (see :func:`score` for the columns; a failed
    clip or a non-finite prediction is an error row), written atomically. Returns the rows scored."""
    from emo.fuse.eval.runcheck import nonfinite_rows

    run, failed = job.run, got.failed
    index = {x: i for i, x in enumerate(got.names)}
    classes = run.classes or []
    cols = ["name", "relpath", "path", "split", "status", "flags", "normalization"]
    multilabel = run.config.get("task") == "multilabel" and "probs" in preds
    if "probs" in preds:
        cols += ["pred"] + [f"prob_{c}" for c in classes]
    if multilabel:  # the run's ζ (given, or tuned on inner-validation rows: --tune-threshold)
        from emo.fuse.methods.multilabel import DEFAULT_THRESHOLD, predict_multihot

        zeta = float((run.config.get("training") or {}).get("threshold", DEFAULT_THRESHOLD))
        cols += ["labels"]
        ml_pred = predict_multihot(preds["probs"], zeta) if len(preds["probs"]) else np.zeros((0, len(classes)), bool)
    if "valence" in preds:
        cols += ["valence"]
    decoded = None
    if "vad" in preds:
        cols += ["valence", "arousal", "dominance"]
        decoded = bridge.decode(preds["vad"]) if (bridge is not None and len(preds["vad"])) else None
        if decoded is not None:
            cols += ["vad_label", "vad_words"]
            if decoded.outside:
                note(f"{decoded.outside} predicted VAD point(s) fall outside [-1, 1]; labels and words are still those nearest")
    by_name = {smp.name: smp for smp in job.samples}
    for key in ("probs", "valence", "vad"):  # never emit NaN as a result: such a row is an error row
        for i in nonfinite_rows(preds[key]) if key in preds else []:
            bad_in = [n for n, v in got.feats.items() if not np.all(np.isfinite(np.asarray(v[i], dtype=np.float64)))]
            failed.setdefault(got.names[i], f"{by_name[got.names[i]].media}: " + (
                f"its {', '.join(bad_in)} features are not finite (NaN/inf), so the prediction ({key}) is not" if bad_in
                else f"the run's prediction ({key}) is not finite (NaN/inf)"))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    for smp in job.samples:
        row: list[Any] = [smp.name, job.relpaths.get(smp.name, ""), str(smp.media or ""), smp.split or ""]
        if smp.name in got.interrupted:  # the CSV is incomplete: these rows say so, and a rerun resumes
            rows.append(row + [INTERRUPTED_STATUS] + [""] * (len(cols) - 5))
            continue
        if smp.name in failed:
            rows.append(row + [f"error: {failed[smp.name]}"] + [""] * (len(cols) - 5))
            continue
        i = index[smp.name]
        row += ["ok", ";".join(sorted(got.flags[smp.name])), job.normalization.get(smp.name, "")]
        if "probs" in preds:
            p = preds["probs"][i]
            row += [classes[int(np.argmax(p))]] + [f"{x:.6f}" for x in p]
        if multilabel:
            row.append(";".join(classes[j] for j in np.flatnonzero(ml_pred[i])))
        if "valence" in preds:
            row.append(f"{float(preds['valence'][i]):.6f}")
        if "vad" in preds:
            row += [f"{float(x):.6f}" for x in preds["vad"][i]]
            if decoded is not None:
                row += [decoded.labels[i], ";".join(word for word, _ in decoded.words[i])]
        rows.append(row)
    fsio.write_csv(out_csv, rows, header=cols)  # atomic, never through a link, cells escaped (formula injection)
    ok = [x for x in got.names if x not in failed]
    for n, k in flag_counts({x: got.flags[x] for x in got.names}).items():
        if k:
            note(f"{k} of {len(ok)} scored files are flagged {n}")
    return len(ok)


#: ``status`` of a file that an interrupt (SIGINT/SIGTERM) left unscored: the CSV is incomplete.
INTERRUPTED_STATUS = "interrupted: not scored yet (rerun the same command to resume)"


class ScoreInterrupted(Interrupted):
    """``emo score`` stopped by SIGINT/SIGTERM after writing the rows finished so far (``done`` of ``n``, the
    others with status :data:`INTERRUPTED_STATUS`) to ``out``."""

    def __init__(self, done: int, n: int, out: Path) -> None:
        super().__init__(interrupt_pending() or 2)
        self.done, self.n, self.out = done, n, out


def _resumable_cache(out_csv) -> Path:
    """``.<out>.score-cache`` beside the output CSV: the features extracted for it. Removed after a finished run,
    kept after an interrupt so that the same command resumes (the extractor skips clips it holds, by content)."""
    d = Path(out_csv).absolute().parent / f".{Path(out_csv).name}.score-cache"
    fsio.check_not_link(d)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _unfinished_after_interrupt(cache: str, dataset: str, encoders: list[str], need: dict[str, list]) -> set[str]:
    """After an interrupted extraction: merge each cache store's finished shards and return the files some
    encoder has no features for (those rows are marked interrupted)."""
    from emo.extract.store import FeatureStore, StoreError, merge, pending_shards, store_path

    held: dict[str, set[str]] = {}
    for n in encoders:
        p = store_path(cache, dataset, n)
        try:
            if pending_shards(p) or p.exists():
                merge(p)
            held[n] = set(FeatureStore(p).names) if p.exists() else set()
        except StoreError:
            held[n] = set()
    out: set[str] = set()
    for n in encoders:
        out |= {smp.name for smp in need[n] if smp.name not in held[n]}
    return out


def vad_bridge(config: dict[str, Any], lexicon, radius: float, vocabulary, vad_labels, note):
    """The :class:`emo.lexicon.bridge.VADBridge` for a run with a VAD output, or ``None``.

    Classes: ``vad_labels`` (a label-set name or list), else the classes the run's lexicon targets
    came from, else the run's classes, else the MER label set. Lexicon: ``lexicon``, else the file
    the run was trained with (when it still exists), else ``$EMO_LEXICON`` / emo's data directory.
    No lexicon found: ``None`` and a note (the VAD columns are still written).

    Raises:
        ValueError: bad radius, vocabulary or label names (before any extraction).
    """
    from emo.fuse.model.decoders import task_parts
    from emo.lexicon.bridge import VADBridge
    from emo.lexicon.labels import label_set
    from emo.lexicon.nrc import LexiconNotFoundError

    try:
        has_vad = task_parts(config.get("task", ""))[2]
    except ValueError:
        has_vad = False
    if not has_vad:
        return None
    targets = config.get("vad_targets") or {}
    if isinstance(vad_labels, str):
        classes = label_set(vad_labels) if "," not in vad_labels else [x.strip() for x in vad_labels.split(",") if x.strip()]
    else:
        classes = list(vad_labels or targets.get("classes") or config.get("classes") or label_set("mer"))
    lex = lexicon
    if lex is None and targets.get("lexicon") and Path(targets["lexicon"]).is_file():
        lex = targets["lexicon"]
    try:
        return VADBridge(classes, vocabulary=vocabulary, radius=radius, lexicon=lex)
    except LexiconNotFoundError as e:
        note(f"no NRC-VAD lexicon, so vad_label/vad_words are left out ({e})")
        return None


def flag_counts(flags: dict[str, set[str]]) -> dict[str, int]:
    """``{flag: number of samples carrying it}`` from ``{sample: flags}``."""
    out: dict[str, int] = {}
    for fs in flags.values():
        for f in fs:
            out[f] = out.get(f, 0) + 1
    return dict(sorted(out.items()))


#: ``emo score --subset`` -> the MER adapters' ``subset`` option.
SUBSET_OPTION = {"candidates": "unlabeled", "train": "labeled", "all": "all"}

#: Datasets whose challenge defines the clips to predict (``--subset candidates`` by default).
CHALLENGE_DATASETS = ("mer2025", "mer2026")


def resolve_subset(dataset: str | None, subset: str | None) -> str | None:
    """The MER adapter ``subset`` option for ``--subset`` (``None``: not a MER dataset and none given).

    Raises:
        ValueError: an unknown value, or ``--subset`` with a dataset that has no subsets (``emo score`` exits 2).
    """
    if subset is not None and subset not in SUBSET_OPTION:
        raise ValueError(f"--subset must be one of {', '.join(SUBSET_OPTION)}, not {subset!r}")
    if dataset is None or not dataset.startswith("mer"):
        if subset is not None:
            raise ValueError("--subset applies to --dataset mer2023/mer2024/mer2025/mer2026")
        return None
    return SUBSET_OPTION[subset or ("candidates" if dataset in CHALLENGE_DATASETS else "all")]


#: MER 2025/2026 Track 1 classes, in MERTools' order.
MER_SUBMISSION_CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")


def write_submission(scores_csv: str | os.PathLike, path: str | os.PathLike, track: str | None) -> Path:
    """The challenge file from ``emo score``'s CSV: the rows of ``split`` ``candidate`` scored ``ok``;
    Track 1 (discrete run): ``name,discrete`` with one of :data:`MER_SUBMISSION_CLASSES`; Track 2
    (multi-label run): ``name,openset`` (the predicted words, ``,``-joined, as MERTools' open-vocabulary
    files). Written atomically.

    Raises:
        ValueError: no candidate rows, failed candidate rows (named), a predicted class outside the
            six MER classes, or a CSV without a ``pred``/``labels`` column.
    """
    import csv

    with open(scores_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cand = [r for r in rows if r.get("split") == "candidate"]
    if not cand:
        raise ValueError(f"{scores_csv}: no candidate rows (split=candidate); score with --subset candidates")
    bad = [r["name"] for r in cand if r.get("status") != "ok"]
    if bad:
        raise ValueError(f"{scores_csv}: {len(bad)} candidate(s) failed (e.g. {bad[0]}); the submission needs every candidate")
    open_vocab = "labels" in cand[0] and (track == "2" or "pred" not in cand[0])
    if open_vocab:
        out = [[r["name"], ", ".join(w for w in r["labels"].split(";") if w)] for r in cand]
        header = ["name", "openset"]
    else:
        if "pred" not in cand[0]:
            raise ValueError(f"{scores_csv}: no pred column (a discrete run is needed for Track 1)")
        wrong = sorted({r["pred"] for r in cand} - set(MER_SUBMISSION_CLASSES))
        if wrong:
            raise ValueError(f"{scores_csv}: predicted class(es) {wrong} are not MER classes {list(MER_SUBMISSION_CLASSES)}")
        out = [[r["name"], r["pred"]] for r in cand]
        header = ["name", "discrete"]
    fsio.write_csv(Path(path), out, header=header)
    return Path(path)
