"""`emo fuse ...` commands. Heavy imports (torch) stay inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import typer

app = typer.Typer(no_args_is_help=True, help="Train fusion heads on cached features.")


def _features_with_layers(features: list[str], layers: list[str], features_dir: Path, dataset: str) -> list[str]:
    """Attach ``--layers`` to feature specs.

    One ``--layers``: it applies to the only ``--features`` without explicit layers whose store has
    several layers (``--features egemaps --features hubert_large --layers 16-21``). Several
    ``--layers``: each applies to the ``--features`` given just before it on the command line.

    Raises:
        typer.BadParameter: ambiguous or misplaced ``--layers``.
    """
    from emo.extract.store import FeatureStore, store_path
    from emo.fuse.data import parse_feature_spec

    out = list(features)
    if not layers:
        return out
    if len(layers) == 1:
        cand = []
        for j, f in enumerate(out):
            spec = parse_feature_spec(f)
            if spec.layers is None:
                p = store_path(features_dir, dataset, spec.name)
                n = len(FeatureStore(p).layers) if p.exists() else 0
                if n > 1 or len(out) == 1:
                    cand.append(j)
        if len(cand) != 1:
            raise typer.BadParameter(f"--layers {layers[0]}: {'no' if not cand else 'more than one'} multi-layer --features "
                                     "without layers to apply it to; write the layers into the spec (hubert_large:16-21)")
        out[cand[0]] = f"{out[cand[0]]}:{layers[0]}"
        return out
    argv = sys.argv[1:]
    pos_f = [i for i, a in enumerate(argv) if a == "--features" or a.startswith("--features=")]
    pos_l = [i for i, a in enumerate(argv) if a == "--layers" or a.startswith("--layers=")]
    if len(pos_f) != len(features) or len(pos_l) != len(layers):
        raise typer.BadParameter("with several --layers, write the layers into each spec (hubert_large:16-21)")
    for spec, lp in zip(layers, pos_l):
        prev = [j for j, fp in enumerate(pos_f) if fp < lp]
        if not prev:
            raise typer.BadParameter(f"--layers {spec} comes before any --features")
        j = prev[-1]
        if parse_feature_spec(out[j]).layers is not None:
            raise typer.BadParameter(f"--features {out[j]} already names layers; drop --layers {spec}")
        out[j] = f"{out[j]}:{spec}"
    return out


@app.command()
def train(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (the folder under --features-dir)."),
    features: List[str] = typer.Option(..., "--features", help="Encoder spec NAME[=SOURCE][:LAYERS]; repeatable."),
    layers: List[str] = typer.Option([], "--layers", help="Layer spec (16-21) for the only multi-layer --features (or, repeated, the --features before it)."),
    features_dir: Path = typer.Option(Path("features"), "--features-dir", help="Where emo extract wrote the stores."),
    head: str = typer.Option("afg", "--head", help="afg | attention | transformer | mlp | linear"),
    structure: int = typer.Option(1, "--structure", help="AFG structure 1, 2 or 3 (MER 2023 paper, Fig. 1)."),
    layer_weights: bool = typer.Option(False, "--layer-weights", help="Learnable weighted sum over each encoder's layers."),
    task: str = typer.Option("discrete", "--task", help="discrete | valence | vad | discrete+valence"),
    decoder: str = typer.Option("separate", "--decoder", help="separate | jdev (joint emotion-valence decoding)"),
    loss_weighting: str = typer.Option("fixed", "--loss-weighting", help="fixed | uncertainty (eq. 9)"),
    class_weights: bool = typer.Option(False, "--class-weights", help="Balanced class weights in the cross-entropy."),
    folds: str = typer.Option("5", "--folds", help="K (stratified k-fold) | speaker (leave-one-speaker-out) | split"),
    test_split: List[str] = typer.Option([], "--test-split", help="Partition(s) held out as test set (fold models averaged)."),
    normalize: str = typer.Option("none", "--normalize", help="none | global | speaker"),
    seed: int = typer.Option(0, "--seed"),
    seeds: int = typer.Option(0, "--seeds", help="Models per fold, outputs averaged (0 = auto: 5 below 2000 training samples, else 1)."),
    epochs: int = typer.Option(100, "--epochs", help="Maximum epochs (early stopping on the inner validation split)."),
    patience: int = typer.Option(0, "--patience", help="Epochs without a lower validation loss before stopping (0 = auto: 15 small, 5 large)."),
    lr: float = typer.Option(1e-3, "--lr"),
    weight_decay: float = typer.Option(1e-2, "--weight-decay"),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", help="Cross-entropy label smoothing."),
    batch_size: int = typer.Option(0, "--batch-size", help="0 = auto: 32 below 2000 training samples, else 256."),
    hidden: int = typer.Option(256, "--hidden"),
    dropout: float = typer.Option(0.5, "--dropout"),
    device: str = typer.Option("cpu", "--device"),
    threads: int = typer.Option(0, "--threads", help="torch threads for training (0 = auto: 1 below 2000 training samples, else all cores; 1 is best on a busy CPU)."),
    frames: bool = typer.Option(False, "--frames", "--sequence", help="Encoders whose store has frame-level features (emo extract --frames) feed an LSTM whose output is their token."),
    frame_bidirectional: bool = typer.Option(True, "--bidirectional/--unidirectional", help="With --frames: bidirectional LSTM."),
    frame_pooling: str = typer.Option("mean", "--frame-pooling", help="With --frames: mean (of the LSTM outputs over the valid frames) | last (final hidden states)."),
    align: str = typer.Option("strict", "--align", help="strict | intersect (for stores with different samples)"),
    out: Path = typer.Option(..., "--out", help="Run directory to write (runs/NAME)."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Independent reseeded repetitions of the whole cross-validation: mean ± std and a 95% group-bootstrap interval (others in OUT/repeats/)."),
    restart: bool = typer.Option(False, "--restart", help="Discard the finished folds of an interrupted run with this --out instead of continuing it."),
) -> None:
    """Train a fusion head with cross-validation and write a run directory.

    Early stopping uses an inner validation split held out from the training folds (one training speaker for --folds speaker, a stratified 10% for k-fold, the dev partition for split), so the evaluation fold stays unseen. Prints fold metrics, mean ± std and pooled out-of-fold metrics.
    """
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.data import FeatureError
    from emo.fuse.config import TrainConfig
    from emo.fuse.protocols import ProtocolError
    from emo.fuse.report import results_table
    from emo.fuse.train import train as train_run

    try:
        specs = _features_with_layers(features, layers, features_dir, dataset)
    except (FeatureError, StoreError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    cfg = TrainConfig(head=head, structure=structure, layer_weights=layer_weights, task=task, decoder=decoder,
                      loss_weighting=loss_weighting, class_weights=class_weights, hidden=hidden, dropout=dropout,
                      epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, patience=patience,
                      seeds=seeds, seed=seed, normalize=normalize, device=device, threads=threads,
                      label_smoothing=label_smoothing, frames=frames, frame_bidirectional=frame_bidirectional,
                      frame_pooling=frame_pooling)
    command = ["emo", "fuse", "train", "--dataset", dataset, "--features-dir", str(features_dir)]
    for f in specs:
        command += ["--features", f]
    command += ["--head", head, "--structure", str(structure), *(["--layer-weights"] if layer_weights else []), "--task", task,
                "--decoder", decoder, "--loss-weighting", loss_weighting, *(["--class-weights"] if class_weights else []),
                "--folds", folds, *[a for t in test_split for a in ("--test-split", t)], "--normalize", normalize,
                "--seed", str(seed), "--seeds", str(seeds), "--epochs", str(epochs), "--patience", str(patience), "--lr", str(lr),
                "--weight-decay", str(weight_decay), "--label-smoothing", str(label_smoothing), "--batch-size", str(batch_size), "--hidden", str(hidden),
                "--dropout", str(dropout), "--device", device, "--threads", str(threads), "--align", align, "--out", str(out),
                "--repeats", str(repeats)]
    if frames:
        command += ["--frames", "--bidirectional" if frame_bidirectional else "--unidirectional", "--frame-pooling", frame_pooling]
    try:
        result, run_config = train_run(features_dir, dataset, specs, cfg, protocol=folds, out=out, align=align,
                              test_splits=list(test_split) or None, command=command,
                              progress=lambda line: typer.echo(line, err=True), repeats=repeats, restart=restart)
    except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(results_table(result, task))
    if repeats > 1:
        from emo.fuse.report import repeats_table

        typer.echo(repeats_table(run_config["repeats_summary"]))
    typer.echo(f"run written to {out}")


from emo.fuse.sweep import sweep_cmd  # noqa: E402  (numpy and typer only; torch loads inside the command)

app.command("sweep")(sweep_cmd)

from emo.fuse.ensemble import ensemble_cmd  # noqa: E402  (numpy and typer only)

app.command("ensemble")(ensemble_cmd)

from emo.fuse.compare import compare_cmd  # noqa: E402  (numpy and typer only)

app.command("compare")(compare_cmd)
