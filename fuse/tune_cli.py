"""`emo tune ...` commands: adapting encoder layers (HLFT) on cached prefixes. Heavy imports stay inside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Tune encoder layers with adapters on cached layer prefixes (HLFT).")


@app.command()
def hlft(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (the folder under --features-dir)."),
    encoder: str = typer.Option(..., "--encoder", help="Encoder (store) name, e.g. hubert_large."),
    layers: str = typer.Option("16-21", "--layers", help="Adapter window A-B: transformer layers A..B (the paper: 16-21)."),
    features_dir: Path = typer.Option(Path("features"), "--features-dir", help="Where emo extract wrote the stores."),
    prefix_store: Optional[Path] = typer.Option(None, "--prefix-store", help="Store with the frame-level hidden state A-1 "
                                                "(default FEATURES_DIR/DATASET/ENCODER.h5; extract it with ENCODER:A-1 --frames)."),
    source: Optional[str] = typer.Option(None, "--source", help="Checkpoint to load (default: the store's recorded source)."),
    task: str = typer.Option("discrete", "--task", help="discrete (HLFT's loss is a classification loss, eq. 2)."),
    folds: str = typer.Option("5", "--folds", help="K (stratified k-fold) | speaker (leave-one-speaker-out) | split"),
    test_split: List[str] = typer.Option([], "--test-split", help="With --folds split: the test partition(s) (default test)."),
    layer_weights_init: str = typer.Option("18", "--layer-weights-init", help="Layer whose weight starts at 1.0, or uniform."),
    mask_prob: float = typer.Option(0.065, "--mask-prob", help="HuBERT span-masking probability per frame."),
    mask_span: int = typer.Option(10, "--mask-span", help="Masked span length in frames."),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr"),
    weight_decay: float = typer.Option(0.02, "--weight-decay"),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (the paper's; weight decay as L2) or adamw (decoupled)."),
    epochs: int = typer.Option(30, "--epochs", help="Maximum epochs (early stopping on the inner validation split)."),
    patience: int = typer.Option(3, "--patience"),
    select: str = typer.Option("loss", "--select", help="Early stopping on inner-validation loss or waf."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Random training crop, frames (default: whole clips)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)."),
    out: Path = typer.Option(Path("runs/hlft"), "--out", help="Run directory."),
) -> None:
    """Train one HLFT adapter set per fold (Zhao et al., MRAC '24, eq. 1-4) on the cached prefix; report WAF/UAR/accuracy."""
    from emo.exitcodes import ExitCode
    from emo.extract.adapters import AdapterError
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.hlft import HLFTConfig
    from emo.fuse.tune import results_table, tune_hlft

    cfg = HLFTConfig(init_layer=layer_weights_init, mask_prob=mask_prob, mask_span=mask_span, batch_size=batch_size, lr=lr,
                     weight_decay=weight_decay, optimizer=optimizer, epochs=epochs, patience=patience, select=select, max_frames=max_frames,
                     seed=seed, threads=threads)
    try:
        cfg.validate()
        if task != "discrete":
            raise ValueError(f"--task must be discrete (HLFT's loss is a classification loss, eq. 2), not {task!r}")
        a, sep, b = layers.partition("-")
        if not (sep and a.strip().isdigit() and b.strip().isdigit()) or int(a) > int(b) or int(a) < 1:
            raise ValueError(f"--layers must be an adapter window A-B with 1 <= A <= B (e.g. 16-21), not {layers!r}")
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    try:
        res = tune_hlft(features_dir, dataset, encoder, layers=layers, protocol=folds, out=out, cfg=cfg,
                        prefix_store=prefix_store, source=source, task=task, test_splits=test_split or None,
                        command=["emo", *sys.argv[1:]], progress=lambda s: typer.echo(s, err=True))
    except (ValueError, AdapterError, StoreError, DatasetError, OSError) as e:  # TuneError, ProtocolError: ValueErrors
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    typer.echo(results_table(res["metrics"]))
    typer.echo(f"run written to {out}")
