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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emo import fsio
from emo.exitcodes import Interrupted, interrupt_pending
from emo.extract.datasets.base import MEDIA_SUFFIXES, DatasetAdapter, Sample
from emo.extract.media import DEFAULT_FPS

if TYPE_CHECKING:
    from emo.fuse.inputs import FeatureInput


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
    from emo.fuse.align import AlignError, apply_alignment, load_alignment
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


def score(paths: list[str | os.PathLike] | None, run_dir: str | os.PathLike, out_csv: str | os.PathLike,
          device: str = "auto", cache: str | os.PathLike | None = None, face_detector: str = "mtcnn",
          mtcnn_weights: str | None = None, progress: bool = True, *, transcripts: str | os.PathLike | None = None,
          adapter: DatasetAdapter | None = None, features_dir: str | os.PathLike | None = None,
          lexicon: str | os.PathLike | None = None, warn=None, radius: float = 0.25,
          vocabulary: str | os.PathLike = "affect", vad_labels: list[str] | str | None = None,
          trust_remote_code: bool = False) -> dict[str, Any]:
    """Score media files (or a dataset's samples) with a trained run.

    Args:
        paths: files and/or folders (``None`` or empty with ``adapter``).
        run_dir: a directory written by ``emo fuse train``.
        out_csv: output CSV: ``name, relpath, path, status, flags``, then ``pred, prob_<class>...``
            (discrete tasks), ``valence`` and/or ``valence, arousal, dominance`` (regression tasks).
            ``flags`` joins the samples' store flags (``no_face;no_text``) over the run's encoders.
            A run with a VAD output also gets ``vad_label`` (the k-means label of the predicted
            point) and ``vad_words`` (vocabulary words within ``radius``, ``;``-separated, nearest
            first; :class:`emo.lexicon.bridge.VADBridge`, Jia et al. 2024 Sec. 3). Scales: VAD in
            [-1, 1] (NRC-VAD ``2x - 1``) for lexicon-target runs; ``valence`` in the training
            labels' scale, which the run's ``config.json`` states (``valence_scale``: MER [-5, 5]).
        device: extraction and inference device (``auto``: CUDA when available).
        cache: keep the extracted features here (default: a temporary directory, removed).
        transcripts: CSV ``name,transcript`` (names as in the ``name`` column: file stems).
        adapter: score a dataset through its adapter (its names and transcripts) instead of ``paths``.
        features_dir: a folder of ``emo extract`` stores (``<encoder>.h5``); samples they hold are
            read from them when their provenance matches the run (see :func:`_reusable`).
        lexicon: NRC-VAD lexicon file for a run with ``nrc_vad`` features (as ``emo extract --lexicon``)
            and for the VAD bridge (default: the run's own lexicon, then ``$EMO_LEXICON``).
        radius, vocabulary: the VAD bridge's word radius and vocabulary (``affect``, ``emolex`` or a
            word-list file), as in ``emo lexicon nearest``.
        vad_labels: the k-means classes (a label-set name or names); default: the run's classes,
            else ``mer``.
        warn: called with each warning line (default: :func:`warnings.warn`).

    Returns:
        Summary dict: ``n``, ``ok``, ``failed`` (name -> error), ``out``, ``reused`` (encoder -> samples
        read from ``features_dir``), ``extracted`` (encoder -> samples extracted), ``warnings``.

    Raises:
        emo.fuse.run.RunError: the run directory is unusable, or extracted features come from other weights.
        emo.extract.datasets.DatasetError: unreadable transcript file.
        ValueError: no input files, or both ``paths`` and ``adapter``.
    """
    import warnings as _warnings

    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.store import FeatureStore, StoreError, store_path
    from emo.extract.types import resolve_device
    from emo.fuse.run import RunError, load_run

    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        (warn or (lambda m: _warnings.warn(m, stacklevel=3)))(msg)

    run = load_run(run_dir)
    out_csv = fsio.check_not_link(out_csv)  # a bad output is refused before any extraction
    if out_csv.is_dir():
        raise ValueError(f"--out {out_csv} is a directory: give the path of a CSV file")
    bridge = vad_bridge(run.config, lexicon, radius, vocabulary, vad_labels, note)
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
    modalities = {inp.name: inp.modality for inp in run.inputs}
    if transcripts is not None:
        text = read_transcripts(transcripts)
        known = {smp.name for smp in samples}
        unknown = sorted(set(text) - known)
        if unknown:
            note(f"{transcripts}: {len(unknown)} name(s) match no scored file (e.g. {unknown[0]!r}); "
                 "names are file stems")
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
    device = resolve_device(device)
    from emo.extract.spec import format_spec, spec_name
    from emo.fuse.tune import hlft_inputs, hlft_score_encoders

    hlft = hlft_inputs(run.inputs)  # per-fold HLFT features: fold k's model gets fold k's adapters (emo.fuse.tune)
    derived = derived_inputs(run.inputs)  # CLIPL-A stores: recomputed from their source encoder (emo.fuse.align)
    specs = {s.name: s for s in (parse_encoder_spec(t) for t in run.feature_specs
                                 if spec_name(t) not in hlft and spec_name(t) not in derived)}
    for n, d in derived.items():
        src = parse_encoder_spec(d["spec"])
        have = specs.get(src.name)
        if have is not None and have.layers is not None and d["layer"] not in have.layers:
            specs[src.name] = parse_encoder_spec(format_spec(src.name, have.source, [*have.layers, d["layer"]]))
        elif have is None:
            specs[src.name] = src
    fps = next((float(i.provenance["fps"]) for i in run.inputs if i.provenance.get("fps")), DEFAULT_FPS)
    names_all = [smp.name for smp in samples]

    # 1. stores to reuse, per input: the samples they already hold (same name and same content)
    from emo.extract.engine import identities

    ids_now = identities(samples) if features_dir is not None else {}
    reuse: dict[str, Any] = {}
    from_store: dict[str, set[str]] = {}
    if features_dir is not None:
        for inp in run.inputs:
            if inp.name in derived:  # recomputed from its source features (extracted below)
                continue
            p = Path(features_dir) / f"{inp.name}.h5"
            if not p.exists():
                continue
            try:
                st = FeatureStore(p)
            except StoreError as e:
                note(f"{p}: not reused ({e})")
                continue
            why = _reusable(st, inp, face_detector if modalities.get(inp.name) == "face" else None)
            if why:
                note(f"{p}: not reused ({why})")
                continue
            reuse[inp.name] = st
            held = {n for n in names_all if n in st.index}
            stale = {n for n in held if st.identity(n) and ids_now.get(n) and st.identity(n) != ids_now[n]}
            if stale:
                note(f"{p}: {len(stale)} file(s) differ in content from the stored sample of that name "
                     f"(e.g. {sorted(stale)[0]!r}): extracted anew")
            from_store[inp.name] = held - stale
    # 2. extract the rest (grouped by the samples each encoder still needs)
    need = {n: [smp for smp in samples if smp.name not in from_store.get(n, set())] for n in specs}
    tmp = None
    if cache is None and (any(need.values()) or hlft):
        tmp = _resumable_cache(out_csv)  # kept when interrupted: the rerun resumes from it
        cache = str(tmp)
    interrupted: set[str] = set()  # files not scored because SIGINT/SIGTERM stopped the extraction
    failed: dict[str, str] = {}
    flags: dict[str, set[str]] = {n: set() for n in names_all}
    preds: dict[str, np.ndarray] = {}
    ok: list[Sample] = []
    try:
        stores: dict[str, Any] = {}
        todo = [n for n in specs if need[n]]
        if todo:
            seq = set(run.frame_inputs)  # frame-level inputs get frame features; one decode per clip
            ex = Extractor([specs[n] for n in todo], out=cache, device=device, frames=seq, fps=fps,
                           face_detector=face_detector, mtcnn_weights=mtcnn_weights, progress=progress,
                           encoder_options={**({"lexicon": str(lexicon)} if lexicon else {}),
                                            **({"trust_remote_code": True} if trust_remote_code else {})} or None)
            groups: dict[tuple[str, ...], list[str]] = {}
            for n in todo:
                groups.setdefault(tuple(smp.name for smp in need[n]), []).append(n)
            for key, encs in groups.items():
                chosen = set(key)
                try:
                    summary = ex.for_encoders(encs).run(adapter, [smp for smp in samples if smp.name in chosen])
                except KeyboardInterrupt:  # finished clips are in the cache's shards: score those, mark the rest
                    interrupted = _unfinished_after_interrupt(cache, adapter.dataset, todo, need)
                    break
                for r in summary.encoders:
                    for n, e in r.failed.items():
                        failed.setdefault(n, e)
            stores = {n: FeatureStore(store_path(cache, adapter.dataset, n)) for n in todo
                      if not interrupted or store_path(cache, adapter.dataset, n).exists()}
        hlft_stores: dict[str, list[Any]] = {}
        if interrupted and hlft:
            interrupted = set(names_all)
        for n, inp in ({} if interrupted else hlft).items():
            encs = hlft_score_encoders(inp, device)
            summary = Extractor([], out=cache, device=device, progress=progress, encoders=encs).run(adapter, samples)
            for r in summary.encoders:
                for x, e in r.failed.items():
                    failed.setdefault(x, e)
            hlft_stores[n] = [FeatureStore(store_path(cache, adapter.dataset, e.name)) for e in encs]
        for inp in run.inputs:
            st = stores.get(inp.name)
            trained = inp.provenance.get("weights_hash")
            now = st.attrs.get("weights_hash") if st is not None else None
            if trained and now and trained != now:
                raise RunError(f"{inp.name}: the run was trained on features of weights {trained}, "
                               f"but scoring extracted {now}; score with the same checkpoint")
        for n, d in derived.items():
            st = stores.get(d["encoder"]) or reuse.get(d["encoder"])
            now = st.attrs.get("weights_hash") if st is not None else None
            if now != d["weights_hash"]:
                raise RunError(f"{n}: the alignment was trained on {d['encoder']} features of weights {d['weights_hash']}, "
                               f"but scoring extracted {now}; score with the same checkpoint")
        ok = [smp for smp in samples if smp.name not in failed and smp.name not in interrupted]
        names = [smp.name for smp in ok]
        feats: dict[str, Any] = {}
        for n, d in derived.items():  # the source layer of every clip through the recorded, hash-checked MLP
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
        for inp in run.inputs:
            n = inp.name
            if n in hlft or n in derived:
                continue
            have = from_store.get(n, set())
            part_a = [x for x in names if x in have]
            part_b = [x for x in names if x not in have]
            got: dict[str, Any] = {}
            for src, part in ((reuse.get(n), part_a), (stores.get(n), part_b)):
                if not part:
                    continue
                vals = _read(src, inp, part)
                for x, v in zip(part, vals):
                    got[x] = v
                for x in part:
                    flags[x] |= src.flags(x)
            rows = [got[x] for x in names]
            feats[n] = rows if inp.frames else (np.stack(rows) if rows else np.zeros((0, 0, 0), np.float32))
        if ok and hlft:  # fold k: its model on the features of its own adapters; folds averaged
            outs = []
            for k in range(min(len(v) for v in hlft_stores.values())):
                fk = dict(feats)
                for n, sts in hlft_stores.items():
                    fk[n] = sts[k].read(hlft[n]["layers"], names)
                    for x in names:
                        flags[x] |= sts[k].flags(x)
                outs.append(run.predict(fk, folds=[k]))
            preds = {key: np.mean([o[key] for o in outs], axis=0).astype(np.float32) for key in outs[0]}
        elif ok:
            preds = run.predict(feats)
    finally:
        if tmp is not None and not interrupted and interrupt_pending() is None:
            shutil.rmtree(tmp, ignore_errors=True)
    index = {smp.name: i for i, smp in enumerate(ok)}
    classes = run.classes or []
    cols = ["name", "relpath", "path", "status", "flags"]
    multilabel = run.config.get("task") == "multilabel" and "probs" in preds
    if "probs" in preds:
        cols += ["pred"] + [f"prob_{c}" for c in classes]
    if multilabel:  # the run's ζ (given, or tuned on inner-validation rows: --tune-threshold)
        from emo.fuse.multilabel import DEFAULT_THRESHOLD, predict_multihot

        zeta = float((run.config.get("training") or {}).get("threshold", DEFAULT_THRESHOLD))
        cols += ["labels"]
        ml_pred = predict_multihot(preds["probs"], zeta) if len(preds["probs"]) else np.zeros((0, len(classes)), bool)
    if "valence" in preds:
        cols += ["valence"]
    if "vad" in preds:
        cols += ["valence", "arousal", "dominance"]
        decoded = bridge.decode(preds["vad"]) if (bridge is not None and len(preds["vad"])) else None
        if decoded is not None:
            cols += ["vad_label", "vad_words"]
            if decoded.outside:
                note(f"{decoded.outside} predicted VAD point(s) fall outside [-1, 1]; labels and words are still those nearest")
    from emo.fuse.runcheck import nonfinite_rows

    for key in ("probs", "valence", "vad"):  # never emit NaN as a result: such a row is an error row
        for i in nonfinite_rows(preds[key]) if key in preds else []:
            failed.setdefault(ok[i].name, f"{ok[i].media}: the run's prediction ({key}) is not finite (NaN/inf)")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    for smp in samples:
        row: list[Any] = [smp.name, relpaths.get(smp.name, ""), str(smp.media or "")]
        if smp.name in interrupted:  # the CSV is incomplete: these rows say so, and a rerun resumes
            rows.append(row + [INTERRUPTED_STATUS] + [""] * (len(cols) - 4))
            continue
        if smp.name in failed:
            rows.append(row + [f"error: {failed[smp.name]}"] + [""] * (len(cols) - 4))
            continue
        i = index[smp.name]
        row += ["ok", ";".join(sorted(flags[smp.name]))]
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
    if interrupted:
        raise ScoreInterrupted(len(samples) - len(interrupted), len(samples), out_csv)
    ok = [smp for smp in ok if smp.name not in failed]
    counts = {n: len(from_store.get(n, set()) & set(names_all)) for n in specs}
    for n, k in flag_counts(flags).items():
        if k:
            note(f"{k} of {len(ok)} scored files are flagged {n}")
    return {"n": len(samples), "ok": len(ok), "failed": failed, "out": str(out_csv), "reused": counts,
            "extracted": {n: len(need[n]) for n in specs}, "warnings": notes}


#: ``status`` of a file that an interrupt (SIGINT/SIGTERM) left unscored: the CSV is incomplete.
INTERRUPTED_STATUS = "interrupted: not scored yet (rerun the same command to resume)"


class ScoreInterrupted(Interrupted):
    """``emo score`` stopped by SIGINT/SIGTERM after writing the rows finished so far (``done`` of ``n``, the
    others with status :data:`INTERRUPTED_STATUS`) to ``out``."""

    def __init__(self, done: int, n: int, out: Path) -> None:
        super().__init__(interrupt_pending() or 2)
        self.done, self.n, self.out = done, n, out


def _resumable_cache(out_csv: Path) -> Path:
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
    from emo.fuse.decoders import task_parts
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
