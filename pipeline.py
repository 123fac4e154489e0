"""The pipeline: both stages together. Owns `emo score` (extract + a trained fusion run).

This module sits above :mod:`emo.extract` and :mod:`emo.fuse` (dependencies point one way:
lexicon <- extract <- fuse <- pipeline <- cli).

`emo score`: apply a trained run to new files or folders.

Extracts exactly the features the run was trained on (same encoders, sources and
layers; frame-level features for the encoders a ``--frames`` run reads as sequences),
applies the fold ensemble (mean of probabilities) and writes one row per file. A broken file gets an error row and a line in the summary; it never stops
the batch.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from emo.exitcodes import ExitCode
from emo.extract.datasets.base import MEDIA_SUFFIXES, DatasetAdapter, Sample


class FileList(DatasetAdapter):
    """An ad-hoc dataset over explicit files and folders (folders are searched recursively).

    Sample names: the file's path relative to the folder it was found in (without suffix),
    prefixed by that folder's name; a plain file is named by its stem. Clashes get ``~N``.
    """

    name = "score"

    def __init__(self, paths: list[str | os.PathLike]) -> None:  # no single root
        self.root = Path(".")
        self.options = {}
        self.paths = [Path(p) for p in paths]

    def load(self) -> list[Sample]:
        out: list[Sample] = []
        names: set[str] = set()

        def add(name: str, path: Path) -> None:
            base, k = name, 1
            while name in names:
                k += 1
                name = f"{base}~{k}"
            names.add(name)
            out.append(Sample(name=name, media=path))

        for p in self.paths:
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES:
                        add(f"{p.name}/{f.relative_to(p).with_suffix('').as_posix()}", f)
            else:
                add(p.stem, p)  # missing or broken files are reported per sample by the engine
        return out


def score(paths: list[str | os.PathLike], run_dir: str | os.PathLike, out_csv: str | os.PathLike,
          device: str = "cpu", cache: str | os.PathLike | None = None, face_detector: str = "mtcnn",
          mtcnn_weights: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Score media files with a trained run.

    Args:
        paths: files and/or folders.
        run_dir: a directory written by ``emo fuse train``.
        out_csv: output CSV: ``name, path, status, pred, prob_<class>...`` (discrete tasks),
            ``valence`` and/or ``valence, arousal, dominance`` columns (regression tasks).
        device: extraction and inference device.
        cache: keep the extracted features here (default: a temporary directory, removed).

    Returns:
        Summary dict: ``n``, ``ok``, ``failed`` (name -> error), ``out``.

    Raises:
        emo.fuse.run.RunError: the run directory is unusable.
        ValueError: no input files.
    """
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.store import FeatureStore, store_path
    from emo.fuse.data import read_frames
    from emo.fuse.run import RunError, load_run

    run = load_run(run_dir)
    adapter = FileList(paths)
    samples = adapter.samples()
    if not samples:
        raise ValueError(f"no media files found in {', '.join(map(str, paths))}")
    specs = [parse_encoder_spec(s) for s in run.feature_specs]
    fps = next((float(i["provenance"]["fps"]) for i in run.inputs if i.get("provenance", {}).get("fps")), 2.0)
    tmp = None
    if cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="emo-score-")
        cache = tmp.name
    try:
        seq = set(run.frame_inputs)  # frame-level inputs get frame features; one extraction, one decode per clip
        ex = Extractor(specs, out=cache, device=device, frames=seq, fps=fps, face_detector=face_detector,
                       mtcnn_weights=mtcnn_weights, progress=progress)
        summary = ex.run(adapter, samples)
        stores = {s.name: FeatureStore(store_path(cache, adapter.name, s.name)) for s in specs}
        for inp in run.inputs:
            trained = (inp.get("provenance") or {}).get("weights_hash")
            now = stores[inp["name"]].attrs.get("weights_hash")
            if trained and now and trained != now:
                raise RunError(f"{inp['name']}: the run was trained on features of weights {trained}, "
                               f"but scoring extracted {now}; score with the same checkpoint")
        failed: dict[str, str] = {}
        for r in summary.encoders:
            for n, e in r.failed.items():
                failed.setdefault(n, e)
        ok = [s for s in samples if s.name not in failed]
        preds: dict[str, np.ndarray] = {}
        if ok:
            names = [s.name for s in ok]
            feats = {inp["name"]: (read_frames(stores[inp["name"]], inp["layers"], names) if inp["name"] in seq
                                   else stores[inp["name"]].read(inp["layers"], names)) for inp in run.inputs}
            preds = run.predict(feats)
    finally:
        if tmp is not None:
            tmp.cleanup()
    index = {s.name: i for i, s in enumerate(ok)}
    classes = run.classes or []
    cols = ["name", "path", "status"]
    if "probs" in preds:
        cols += ["pred"] + [f"prob_{c}" for c in classes]
    if "valence" in preds:
        cols += ["valence"]
    if "vad" in preds:
        cols += ["valence", "arousal", "dominance"]
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp_csv = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for s in samples:
            row: list[Any] = [s.name, str(s.media)]
            if s.name in failed:
                w.writerow(row + [f"error: {failed[s.name]}"] + [""] * (len(cols) - 3))
                continue
            i = index[s.name]
            row.append("ok")
            if "probs" in preds:
                p = preds["probs"][i]
                row += [classes[int(np.argmax(p))]] + [f"{x:.6f}" for x in p]
            if "valence" in preds:
                row.append(f"{float(preds['valence'][i]):.6f}")
            if "vad" in preds:
                row += [f"{float(x):.6f}" for x in preds["vad"][i]]
            w.writerow(row)
    os.replace(tmp_csv, out_csv)
    return {"n": len(samples), "ok": len(ok), "failed": failed, "out": str(out_csv)}


def score_cmd(
    paths: list[Path] = typer.Argument(..., help="Media files and/or folders (searched recursively)."),
    run: Path = typer.Option(..., "--run", help="Run directory written by `emo fuse train`."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output CSV."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    cache: Optional[Path] = typer.Option(None, help="Keep extracted features here (default: temporary)."),
    face_detector: str = typer.Option("mtcnn", help="mtcnn or haar, for runs with face features."),
    mtcnn_weights: Optional[Path] = typer.Option(None, help="Directory with pnet.pt, rnet.pt, onet.pt."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Score new files with a trained run: name, predicted label, one probability column per class.

    Broken files get an error row and are listed in the summary; exit status 2 when any failed.
    """
    from emo.fuse.run import RunError

    try:
        res = score(paths, run, out, device=device, cache=cache, face_detector=face_detector,
                    mtcnn_weights=str(mtcnn_weights) if mtcnn_weights else None, progress=progress)
    except (RunError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    typer.echo(f"scored {res['ok']}/{res['n']} files -> {res['out']}")
    for n, e in res["failed"].items():
        typer.echo(f"  failed {n}: {e}")
    if res["failed"]:
        raise typer.Exit(ExitCode.PARTIAL)
