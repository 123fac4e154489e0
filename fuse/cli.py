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
    head: str = typer.Option("afg", "--head", help="afg | attention | transformer | mlp | linear | univa (per-modality encoders, for --univa)"),
    structure: int = typer.Option(1, "--structure", help="AFG structure 1, 2 or 3 (MER 2023 paper, Fig. 1)."),
    afg_scores: str = typer.Option("concat", "--afg-scores", help="AFG attention scores: concat (eq. 2 of the MER 2023 paper: from all N features concatenated) | per-input (each feature scored alone)."),
    layer_weights: bool = typer.Option(False, "--layer-weights", help="Learnable weighted sum over each encoder's layers."),
    layer_weights_init: str = typer.Option("18", "--layer-weights-init", help="With --layer-weights: the layer whose weight starts at 1 (others 0; 1/L each when absent)."),
    task: str = typer.Option("discrete", "--task", help="discrete | valence | vad | discrete+valence | discrete+vad | multilabel (several emotions per clip: KL loss, threshold), or label columns NAME[+NAME...] (emotion = the dataset's emotion label; e.g. emotion+intent: one classifier per task, JRBM)."),
    label_column: List[str] = typer.Option([], "--label-column", help="NAME=COLUMN: task NAME reads the manifest label column COLUMN (default: the column named NAME); repeatable."),
    joint: str = typer.Option("none", "--joint", help="With --task A+B: none (independent models) | crossattn (frozen task models + gated cross-attention joint module, MEIJU) | shared (one head, one classifier per task)."),
    vad_targets: str = typer.Option("dataset", "--vad-targets", help="VAD targets: dataset (its valence/arousal/dominance columns) | lexicon (the NRC-VAD point of each discrete label, neutral = origin; the file: --lexicon)."),
    emotion_wheel: str = typer.Option("", "--emotion-wheel", help="--task multilabel: the MER emotion_wheel/ folder (format.csv, synonym.xlsx, wheel1-5.xlsx): word forms merged in the class list, emotion-wheel F1 (MER-FG metric) in metrics.json."),
    decoder: str = typer.Option("separate", "--decoder", help="separate | jdev (joint emotion-valence decoding)"),
    loss_weighting: str = typer.Option("fixed", "--loss-weighting", help="fixed | uncertainty (Wang et al., MER 2023: uncertainty-weighted multi-task loss)"),
    class_weights: bool = typer.Option(False, "--class-weights", help="Balanced class weights in the cross-entropy."),
    folds: str = typer.Option("auto", "--folds", help="auto (leave-one-speaker-out when every sample has a speaker, else stratified 5-fold, stated as speaker-dependent) | K (stratified k-fold) | speaker (leave-one-speaker-out) | split | file:PATH (fold lists: an EmoBox data/<dataset> folder or a name,fold CSV)"),
    test_split: List[str] = typer.Option([], "--test-split", help="Partition(s) held out as test set (fold models averaged)."),
    train_splits: List[str] = typer.Option([], "--train-splits", help="Evaluation partition(s) (test, test1, test2, test3) allowed into the cross-validation pool; by default they never enter training."),
    normalize: str = typer.Option("global", "--normalize", help="none | global (training-fold statistics; the default, shared with emo fuse sweep) | speaker"),
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
    batched: bool = typer.Option(True, "--batched/--sequential", help="Train every fold x seed at once as one batched model (default), or one model after another (the reference loop)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | lbfgs (full-batch L-BFGS to the optimum; --head linear only)."),
    threshold: float = typer.Option(0.18, "--threshold", help="--task multilabel: a label is predicted when its probability exceeds this (UniVA: 0.18)."),
    tune_threshold: bool = typer.Option(False, "--tune-threshold", help="--task multilabel: choose the threshold on the folds' inner-validation rows (micro-F1 over a grid; never on evaluation rows); config.json records it and emo score uses it."),
    univa: bool = typer.Option(False, "--univa/--no-univa", help="UniVA losses (needs --head univa): VA-driven contrastive loss per modality + emotion-correlation prior; unlabelled clips with a valence-arousal join training."),
    univa_lambda: float = typer.Option(0.3, "--univa-lambda", help="UniVA eq. 11: L = λ Σ_m L_CL + (1 − λ) L_KL + η."),
    univa_delta: float = typer.Option(0.1, "--univa-delta", help="UniVA: valence-arousal distance below which two clips are positives."),
    univa_tau: float = typer.Option(0.07, "--univa-tau", help="UniVA: temperature of the contrastive loss."),
    univa_eta: float = typer.Option(1.0, "--univa-eta", help="UniVA: weight of the emotion-correlation prior η (1 in eq. 11; 0 leaves it out). With anti-correlated classes η favours one class for every clip; see the docs."),
    va_source: str = typer.Option("auto", "--va-source", help="Valence-arousal of a clip for --univa: auto | dataset (its columns) | label (NRC-VAD of its label) | transcript (NRC-VAD of its words)."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help="NRC-VAD lexicon file for --univa and --vad-targets lexicon (default: $EMO_LEXICON or emo's data directory)."),
    pseudo_labels: Optional[Path] = typer.Option(None, "--pseudo-labels", help="pseudo.csv of emo fuse pseudo-label: added to the training part of every fold (never validation or evaluation)."),
    pseudo_weight: float = typer.Option(0.5, "--pseudo-weight", help="Loss weight of a pseudo-labelled clip (labelled clips: 1)."),
    frame_encoder: str = typer.Option("lstm", "--frame-encoder", help="With --frames: lstm | textcnn (Kim 2014: widths 3,4,5 x 100 maps, max-over-time)."),
    frame_tokens: bool = typer.Option(False, "--frame-tokens", help="With --frames --head transformer: attend over every frame token of every modality (padding-masked) instead of one pooled token per input."),
    max_frame_tokens: int = typer.Option(64, "--max-frame-tokens", help="With --frame-tokens: most frames per input stream (longer sequences are evenly subsampled)."),
    align: str = typer.Option("strict", "--align", help="strict | intersect (for stores with different samples)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (runs/NAME). Required (here or in --config)."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Independent reseeded repetitions of the whole cross-validation: mean ± std and a 95% group-bootstrap interval (others in OUT/repeats/)."),
    restart: bool = typer.Option(False, "--restart", help="Discard the finished folds of an interrupted run with this --out instead of continuing it."),
    allow_rare_classes: bool = typer.Option(False, "--allow-rare-classes", help="Train even when a class has fewer than 2 labelled samples (refused by default: usually a typo in the labels)."),
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
    for name in ("features_dir", "out", "lexicon", "pseudo_labels"):
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
    import time

    t0 = time.perf_counter()
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
                              train_splits=list(v["train_splits"]) or None,
                              pseudo_labels=v["pseudo_labels"], pseudo_weight=v["pseudo_weight"], lexicon=v["lexicon"],
                              allow_rare_classes=v["allow_rare_classes"], augmented=list(v["augmented"]), evaluate_on=v["evaluate_on"])
    except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError, KeyError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    out = v["out"]
    typer.echo(results_table(result, cfg.task))
    if v["repeats"] > 1:
        from emo.fuse.report import repeats_table

        typer.echo(repeats_table(run_config["repeats_summary"]))
    typer.echo(f"run written to {out}")
    from emo.fuse.report import training_speed

    typer.echo(training_speed(sum(len(s) for s in result.states) * v["repeats"], time.perf_counter() - t0))


from emo.fuse.sweep import sweep_cmd  # noqa: E402  (numpy and typer only; torch loads inside the command)

app.command("sweep")(sweep_cmd)

from emo.fuse.ensemble import ensemble_cmd  # noqa: E402  (numpy and typer only)

app.command("ensemble")(ensemble_cmd)


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="A run directory written by emo fuse train.")) -> None:
    """(Re)write a run's report.md and confusion-matrix PNG from its config.json and metrics.json."""
    import json

    from emo.exitcodes import ExitCode
    from emo.fuse.report import write_report

    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        typer.echo(f"error: {run}: not a readable emo run directory ({e})", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    try:
        typer.echo(f"wrote {write_report(run, config, metrics)}")
    except OSError as e:  # e.g. a symbolic link planted at report.md: refused, never written through
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None


from emo.fuse.compare import compare_cmd  # noqa: E402  (numpy and typer only)

app.command("compare")(compare_cmd)

from emo.fuse.semi_cli import align_cmd, pseudo_label_cmd  # noqa: E402  (typer only; torch loads inside the commands)

app.command("align")(align_cmd)
app.command("pseudo-label")(pseudo_label_cmd)
