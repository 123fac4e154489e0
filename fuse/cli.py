"""`emo fuse ...` commands. Heavy imports (torch) stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Train fusion heads on cached features.")


def _features_with_layers(features: list[str], layers: list[str]) -> list[str]:
    """Attach ``--layers`` to the feature spec. Layers belong in the spec (``--features
    hubert_large:16-21``); ``--layers`` is a shorthand allowed only with exactly one ``--features``
    that names no layers itself, so there is never a question which encoder it means.

    Raises:
        typer.BadParameter: ``--layers`` with several ``--features``, given twice, or with a spec that has layers.
    """
    from emo.fuse.data import parse_feature_spec

    if not layers:
        return list(features)
    if len(layers) > 1 or len(features) != 1:
        raise typer.BadParameter("--layers applies only to a single --features; with several, write the layers "
                                 "into each spec (--features hubert_large:16-21 --features egemaps)")
    if parse_feature_spec(features[0]).layers is not None:
        raise typer.BadParameter(f"--features {features[0]} already names layers; drop --layers {layers[0]}")
    return [f"{features[0]}:{layers[0]}"]


@app.command()
def train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="Experiment file (YAML or JSON) with option values, or a run's config.json to reproduce that run; options given on the command line override it."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name (the folder under --features-dir). Required (here or in --config)."),
    features: List[str] = typer.Option([], "--features", help="Encoder spec NAME[=SOURCE][:LAYERS]; repeatable. Required (here or in --config)."),
    layers: List[str] = typer.Option([], "--layers", help="Layer spec (16-21) when exactly one --features is given; otherwise put layers in each spec (hubert_large:16-21)."),
    features_dir: Path = typer.Option(Path("features"), "--features-dir", help="Where emo extract wrote the stores."),
    head: str = typer.Option("afg", "--head", help="afg | attention | transformer | mlp | linear"),
    structure: int = typer.Option(1, "--structure", help="AFG structure 1, 2 or 3 (MER 2023 paper, Fig. 1)."),
    layer_weights: bool = typer.Option(False, "--layer-weights", help="Learnable weighted sum over each encoder's layers."),
    layer_weights_init: str = typer.Option("18", "--layer-weights-init", help="With --layer-weights: the layer whose weight starts at 1 (others 0; 1/L each when absent)."),
    task: str = typer.Option("discrete", "--task", help="discrete | valence | vad | discrete+valence, or label columns NAME[+NAME...] (emotion = the dataset's emotion label; e.g. emotion+intent: one classifier per task, JRBM)."),
    label_column: List[str] = typer.Option([], "--label-column", help="NAME=COLUMN: task NAME reads the manifest label column COLUMN (default: the column named NAME); repeatable."),
    joint: str = typer.Option("none", "--joint", help="With --task A+B: none (independent models) | crossattn (frozen task models + gated cross-attention joint module, MEIJU) | shared (one head, one classifier per task)."),
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
    frame_encoder: str = typer.Option("lstm", "--frame-encoder", help="With --frames: lstm | textcnn (Kim 2014: widths 3,4,5 x 100 maps, max-over-time)."),
    frame_tokens: bool = typer.Option(False, "--frame-tokens", help="With --frames --head transformer: attend over every frame token of every modality (padding-masked) instead of one pooled token per input."),
    max_frame_tokens: int = typer.Option(64, "--max-frame-tokens", help="With --frame-tokens: most frames per input stream (longer sequences are evenly subsampled)."),
    align: str = typer.Option("strict", "--align", help="strict | intersect (for stores with different samples)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (runs/NAME). Required (here or in --config)."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Independent reseeded repetitions of the whole cross-validation: mean ± std and a 95% group-bootstrap interval (others in OUT/repeats/)."),
    restart: bool = typer.Option(False, "--restart", help="Discard the finished folds of an interrupted run with this --out instead of continuing it."),
    augmented: List[str] = typer.Option([], "--augmented", help="ENCODER+TAG store (emo extract --augment) whose copies of the training clips join training (never the validation or evaluation clips); repeatable."),
    evaluate_on: Optional[str] = typer.Option(None, "--evaluate-on", help="TAG: evaluate on the ENCODER+TAG copies of the evaluated clips instead of the clean clips."),
) -> None:
    """Train a fusion head with cross-validation and write a run directory.

    Early stopping uses an inner validation split held out from the training folds (one training speaker for --folds speaker, a stratified 10% for k-fold, the dev partition for split), so the evaluation fold stays unseen. Prints fold metrics, mean ± std and pooled out-of-fold metrics.

    Settings can come from a file: --config exp.yaml (option names as keys), or --config runs/X/config.json to reproduce run X (give a new --out). Options on the command line override the file; the run records the full command.
    """
    from dataclasses import fields

    from emo.exitcodes import ExitCode
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.config import ConfigFileError, TrainConfig, read_config_file
    from emo.fuse.data import FeatureError
    from emo.fuse.options import command_line, merge_config_file
    from emo.fuse.protocols import ProtocolError
    from emo.fuse.report import results_table
    from emo.fuse.train import train as train_run

    values = {k: v for k, v in ctx.params.items()}
    if config is not None:
        try:
            values = merge_config_file(ctx, values, read_config_file(config), source=str(config))
        except ConfigFileError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from None
    for name in ("features_dir", "out"):
        if values[name] is not None:
            values[name] = Path(values[name])
    missing = [f"--{n.replace('_', '-')}" for n in ("dataset", "features", "out") if not values[n]]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)} (give it on the command line or in --config)")
    if config is not None and (config.parent / "config.json").resolve() == (values["out"] / "config.json").resolve():
        raise typer.BadParameter(f"--out {values['out']} is the run being reproduced; give a new run directory")
    v = values
    try:
        specs = _features_with_layers(list(v["features"]), list(v["layers"]))
    except (FeatureError, StoreError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    from emo.fuse.multitask import MultiConfig, is_multitask, multitask_table, parse_tasks, train_multitask

    multi = is_multitask(v["task"], list(v["label_column"]))
    cfg = TrainConfig(**{f.name: v[f.name] for f in fields(TrainConfig)} | ({"task": "discrete"} if multi else {}))
    try:
        cfg.validate()
        if multi:
            parse_tasks(v["task"], list(v["label_column"]))
            MultiConfig(v["joint"]).validate()
            if v["repeats"] > 1:
                raise ValueError("--repeats is not available for multi-task runs (--task A+B)")
        elif v["joint"] != "none":
            raise ValueError(f"--joint {v['joint']} needs several tasks (--task A+B)")
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    command = command_line(ctx, {**v, "features": specs, "layers": []}, skip=("config",))
    if multi:
        try:
            result, run_config = train_multitask(v["features_dir"], v["dataset"], specs, cfg, v["task"], list(v["label_column"]),
                                                 MultiConfig(v["joint"]), protocol=v["folds"], out=v["out"], align=v["align"],
                                                 test_splits=list(v["test_split"]) or None, command=command,
                                                 progress=lambda line: typer.echo(line, err=True),
                                                 augmented=list(v["augmented"]), evaluate_on=v["evaluate_on"])
        except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(ExitCode.ERROR) from None
        from emo.fuse.multitask import LabelTask

        typer.echo(multitask_table(result, [LabelTask(t["name"], t["column"], tuple(t["classes"])) for t in run_config["tasks"]]))
        typer.echo(f"run written to {v['out']}")
        return
    try:
        result, run_config = train_run(v["features_dir"], v["dataset"], specs, cfg, protocol=v["folds"], out=v["out"], align=v["align"],
                              test_splits=list(v["test_split"]) or None, command=command,
                              progress=lambda line: typer.echo(line, err=True), repeats=v["repeats"], restart=v["restart"],
                              augmented=list(v["augmented"]), evaluate_on=v["evaluate_on"])
    except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    out = v["out"]
    typer.echo(results_table(result, cfg.task))
    if v["repeats"] > 1:
        from emo.fuse.report import repeats_table

        typer.echo(repeats_table(run_config["repeats_summary"]))
    typer.echo(f"run written to {out}")


from emo.fuse.sweep import sweep_cmd  # noqa: E402  (numpy and typer only; torch loads inside the command)

app.command("sweep")(sweep_cmd)

from emo.fuse.ensemble import ensemble_cmd  # noqa: E402  (numpy and typer only)

app.command("ensemble")(ensemble_cmd)

from emo.fuse.report import report_cmd  # noqa: E402  (numpy only; matplotlib loads inside the command)

app.command("report")(report_cmd)

from emo.fuse.compare import compare_cmd  # noqa: E402  (numpy and typer only)

app.command("compare")(compare_cmd)
