"""`emo extract` and `emo store ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emo.exitcodes import ExitCode
from emo.extract.datasets import dataset_names

store_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain feature stores.")


def extract(
    dataset: str = typer.Option(..., "--dataset", "-d", help=f"Dataset adapter: {', '.join(dataset_names())}."),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root directory."),
    encoder: list[str] = typer.Option(..., "--encoder", "-e", help="NAME[=SOURCE][:LAYERS], repeatable, e.g. hubert_large:16-21."),
    out: Path = typer.Option(Path("features"), "--out", "-o", help="Feature root: stores go to OUT/NAME/ENCODER.h5 (NAME: --name, default the dataset; for folder, the root folder's name)."),
    device: str = typer.Option("auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N (bf16 autocast on GPU)."),
    batch_seconds: Optional[float] = typer.Option(None, help="Padded audio seconds per forward pass (default 200 GPU / 60 CPU)."),
    frames: bool = typer.Option(False, "--frames", help="Also store frame-level features (ragged, per layer)."),
    fps: float = typer.Option(2.0, help="Face-frame sampling rate, frames per second."),
    face_detector: str = typer.Option("mtcnn", help="mtcnn or haar (no download)."),
    mtcnn_weights: Optional[Path] = typer.Option(None, help="Directory with pnet.pt, rnet.pt, onet.pt."),
    text_column: Optional[str] = typer.Option(None, help="Transcript column (e.g. chinese, english, sentence)."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help="NRC-VAD-Lexicon.txt or its folder, for nrc_vad (else $EMO_LEXICON, then emo's data dir)."),
    subset: Optional[str] = typer.Option(None, help="mer2024/mer2025/mer2026: all, labeled or unlabeled."),
    track: Optional[str] = typer.Option(None, "--track", help="mer2025: 1 or 2; mer2026: 1, 2 or 3 (picks the label files)."),
    label_source: Optional[str] = typer.Option(None, "--label-source", help="mer2025/mer2026 track 2: all (default), ovmerd, human or mercaptionplus."),
    labels: Optional[Path] = typer.Option(None, help="folder: label CSV (default ROOT/labels.csv)."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name: the folder under --out and the --dataset of emo fuse (default: the adapter's name; for folder, the root folder's name)."),
    decode_workers: int = typer.Option(2, "--decode-workers", min=1, help="CPU decode workers per process (threads; see --decode-pool)."),
    decode_pool: str = typer.Option("thread", help="thread or process: pool that decodes media ahead of the models."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Run on a local dask cluster of N worker processes (one GPU each with --device cuda)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run on an existing dask cluster, e.g. tcp://host:8786 (OUT must be shared storage)."),
    naive: bool = typer.Option(False, "--naive", help="MER-baseline reference path (one clip per forward, fp32, all hidden states): benchmarks only."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the speech models (pays on GPU for long runs)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N samples (quick tries)."),
    max_seconds: Optional[float] = typer.Option(None, help="Decode at most this many seconds per clip."),
    overwrite: bool = typer.Option(False, help="Replace existing stores instead of resuming."),
    strict: bool = typer.Option(False, help="Stop at the first per-sample error (exit 1)."),
    progress: bool = typer.Option(True, help="Show progress bars (also the model-loading bars of the Hugging Face libraries)."),
    shard_size: int = typer.Option(64, min=1, help="Samples per shard file: a kill loses at most this many per encoder."),
    flush_seconds: float = typer.Option(60.0, help="Also write a shard at least this often (seconds); 0: only by --shard-size."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow encoders whose model repository ships Python code (Baichuan2) to run it. Review that code first: it runs with your permissions."),
    adapters: Optional[Path] = typer.Option(None, "--adapters", help="An `emo tune hlft` run: HLFT features, one store per fold (ENCODER+hlft.foldK.h5)."),
    special_tokens: bool = typer.Option(False, "--special-tokens", help="Text encoders: keep [CLS]/[SEP] in frames and pooling (needed for an HLFT text prefix)."),
    text_pooling: Optional[str] = typer.Option(None, "--text-pooling", help="Text encoders: mean (default) | last | cls ([CLS]/<s> token of BERT-style encoders)."),
    augment: list[str] = typer.Option([], "--augment", help="Corrupt the inputs first and write ENCODER+TAG stores: noise:snr=5-11,source=DIR (speech noise, other speakers) or video:solarize=T,blur=S,rotate=DEG,cutout=F; repeatable."),
    augment_seed: int = typer.Option(0, "--augment-seed", help="Default seed of --augment specs without seed=."),
) -> None:
    """Extract layer-wise features of one dataset with one or more encoders.

    Resumable: a rerun skips finished samples (safe after SIGKILL: finished shards are
    atomic). SIGTERM/SIGINT flush finished samples before exiting (exit 130). Exit status: 0 all
    done, 3 some samples failed (listed in the summary and in each store's failed/ group),
    1 a fatal error (store in use or from another checkpoint, disk full, or any per-sample
    error with --strict), 2 a bad command line.
    """
    from emo.exitcodes import install_signal_handlers, interrupt_message

    install_signal_handlers()  # SIGTERM -> same clean path as Ctrl-C; a signal a C callback swallows is still seen
    if augment:  # checked before any model loads: a bad spec is a bad command line (exit 2)
        from emo.extract.augment import AugmentError, check_spec

        for spec in augment:
            try:
                check_spec(spec)
            except AugmentError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(ExitCode.USAGE) from None
    from emo.extract.adapters import AdapterError
    from emo.extract.datasets import DatasetError, get_dataset
    from emo.extract.datasets.base import DatasetOptionError
    from emo.extract.encoders.base import EncoderError
    from emo.extract.engine import Extractor, StrictError
    from emo.extract.faces.core import FaceError
    from emo.extract.layers import LayerSpecError
    from emo.extract.progress import model_loading_bars
    from emo.extract.registry import UnknownEncoderError, parse_encoder_spec
    from emo.extract.types import resolve_device
    from emo.extract.store import StoreError

    try:
        specs = [parse_encoder_spec(e) for e in encoder]
        adapter = get_dataset(dataset, str(root), text_column=text_column, subset=subset, track=track,
                              label_source=label_source, labels=str(labels) if labels else None, dataset_name=name)
        samples = adapter.samples()
        if limit is not None:
            samples = samples[:limit]
        opts = {"batch_seconds": batch_seconds} if batch_seconds else {}
        if lexicon is not None:
            opts["lexicon"] = str(lexicon)
        if text_pooling is not None:
            opts["pooling"] = text_pooling
        device = resolve_device(device)
        if compile_model:
            opts["compile"] = True
        if trust_remote_code:
            opts["trust_remote_code"] = True
        if special_tokens:
            opts["special_tokens"] = True
        hlft_encoders = None
        if adapters is not None:  # one adapted encoder per fold of the tuning run (emo.extract.adapters)
            from emo.extract.adapters import hlft_run_encoders

            if workers is not None or scheduler is not None or naive:
                raise ValueError("--adapters runs in this process: drop --workers/--scheduler/--naive")
            hlft_encoders = [e for s in specs for e in hlft_run_encoders(s, adapters, device, frames, **opts)]
        if augment and (workers is not None or scheduler is not None or naive):
            raise ValueError("--augment runs in one process: drop --workers/--scheduler/--naive")
        if workers is not None or scheduler is not None:
            from emo.extract.distributed import ExtractConfig, run_distributed

            if workers is not None and scheduler is not None:
                raise ValueError("give either --workers N (local cluster) or --scheduler ADDRESS, not both")
            config = ExtractConfig(encoders=tuple(encoder), device=device, frames=frames, fps=fps,
                                   face_detector=face_detector, mtcnn_weights=str(mtcnn_weights) if mtcnn_weights else None,
                                   decode_workers=decode_workers, max_seconds=max_seconds, naive=naive,
                                   encoder_options=opts)
            with model_loading_bars(progress):  # also in the workers (environment variable)
                summary = run_distributed(config, adapter, samples, out, scheduler=scheduler, workers=workers,
                                          shard_size=shard_size, overwrite=overwrite, progress=progress)
            typer.echo(summary.table())
            if summary.n_failed:
                raise typer.Exit(ExitCode.PARTIAL)
            return
        with model_loading_bars(progress):  # --no-progress also silences the libraries' model-loading bars
            ex = Extractor(specs, out=out, device=device, frames=frames, fps=fps, face_detector=face_detector,
                           mtcnn_weights=str(mtcnn_weights) if mtcnn_weights else None, decode_workers=decode_workers,
                           max_seconds=max_seconds, overwrite=overwrite, strict=strict, progress=progress,
                           encoder_options=opts, shard_size=shard_size, flush_seconds=flush_seconds or None,
                           decode_pool=decode_pool, naive=naive, encoders=hlft_encoders)
            if augment:  # the encoders see corrupted inputs and write <encoder>+<tag> stores
                from emo.extract.augment import augment_encoders

                if hlft_encoders is not None:
                    raise ValueError("--augment and --adapters cannot go together: extract the HLFT features first")
                rate = next((e.sample_rate for e in ex.encoders if e.modality == "audio" and e.sample_rate), 16000)
                ex.encoders = augment_encoders(ex.encoders, list(augment), samples, rate, augment_seed)
            summary = ex.run(adapter, samples)
    except StrictError as e:
        typer.echo(f"error (--strict): {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    except KeyboardInterrupt:
        typer.echo(interrupt_message("finished samples are saved; rerun the same command to resume"), err=True)
        raise typer.Exit(ExitCode.INTERRUPTED)
    except (DatasetOptionError, LayerSpecError) as e:  # a bad command-line value: usage error
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.USAGE)
    except (DatasetError, UnknownEncoderError, StoreError, EncoderError, FaceError, ValueError,
            OSError, AdapterError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    typer.echo(summary.table())
    if summary.n_failed:
        raise typer.Exit(ExitCode.PARTIAL)


@store_app.command("info")
def info(path: Path = typer.Argument(..., help="A store file features/<dataset>/<encoder>.h5."),
         verify: bool = typer.Option(False, "--verify", help="Read every dataset of the store and of its pending shards completely: Fletcher-32 checksums, structure, finite values (exit 1 naming the first damaged file).")) -> None:
    """Print a store's provenance, layers, counts, flag counts, face-frame coverage (face stores), shards
    not merged yet and failures as JSON."""
    import warnings

    from emo.extract.store_check import StoreCorruptError, verify_store_file

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
    if verify:
        for f in [Path(path), *pending_shards(path)]:
            try:
                verify_store_file(f, check_data=True)
            except StoreCorruptError as e:
                typer.echo(f"error: {e} (`emo extract` into the same --out moves it aside and recomputes its samples)", err=True)
                raise typer.Exit(ExitCode.ERROR) from None
        d["verified"] = f"{1 + d['pending_shards']} file(s): every checksum and value read back intact"
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
