"""`emo fuse ...` commands. Heavy imports (torch) stay inside the commands."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from emo.cliargs import GroupedCommand, command, command_line
from emo.fuse.config import HEAD, INPUTS, METHODS, OPTIM, OUTPUT, PROTOCOL, TASK, TrainConfig
from emo.fuse.options import RunOptions, read_config_file

app = typer.Typer(no_args_is_help=True, help="Train fusion heads on cached features.")


@app.command(cls=GroupedCommand)
@command(RunOptions, TrainConfig, read_config=read_config_file,
         config_help="Experiment file (YAML or JSON) with option values, or a run's config.json to reproduce that run; "
                     "options given on the command line override it.",
         panels=(INPUTS, HEAD, TASK, OPTIM, PROTOCOL, METHODS, OUTPUT))
def train(ctx: typer.Context, run: RunOptions, cfg: TrainConfig) -> None:
    """Train a fusion head with cross-validation and write a run directory.

    Early stopping uses an inner validation split held out from the training folds (one training speaker for --folds speaker, a stratified 10% for k-fold, the dev partition for split), so the evaluation fold stays unseen. Prints fold metrics, mean ± std and pooled out-of-fold metrics.

    Settings can come from a file: --config exp.yaml (option names as keys), or --config runs/X/config.json to reproduce run X (give a new --out). Options on the command line override the file; the run records the full command.
    """
    import time

    from emo.exitcodes import ExitCode
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.data import FeatureError
    from emo.fuse.multitask import LabelTask, MultiConfig, is_multitask, multitask_table, train_multitask
    from emo.fuse.protocols import ProtocolError
    from emo.fuse.report import repeats_table, results_table, training_speed
    from emo.fuse.train import train as train_run

    try:
        run.validate(cfg)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    config = ctx.params.get("config")
    if config is not None and (config.parent / "config.json").resolve() == (run.out / "config.json").resolve():
        raise typer.BadParameter(f"--out {run.out} is the run being reproduced; give a new run directory")
    try:
        specs = run.feature_specs()
    except FeatureError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    command = command_line(ctx, {**ctx.params, "features": [str(s) for s in specs], "layers": []})
    progress = lambda line: typer.echo(line, err=True)  # noqa: E731
    t0 = time.perf_counter()
    if is_multitask(cfg.task, list(run.label_column)):
        try:
            result, run_config = train_multitask(run.features_dir, run.dataset, specs, replace(cfg, task="discrete"), cfg.task,
                                                 list(run.label_column), MultiConfig(run.joint), protocol=run.folds, out=run.out,
                                                 align=run.align, test_splits=list(run.test_split) or None, command=command,
                                                 progress=progress, augmented=list(run.augmented), evaluate_on=run.evaluate_on)
        except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(ExitCode.ERROR) from None
        typer.echo(multitask_table(result, [LabelTask(t["name"], t["column"], tuple(t["classes"])) for t in run_config["tasks"]]))
        typer.echo(f"run written to {run.out}")
        return
    try:
        result, run_config = train_run(run.features_dir, run.dataset, specs, cfg, protocol=run.folds, out=run.out, align=run.align,
                                       test_splits=list(run.test_split) or None, command=command, progress=progress,
                                       repeats=run.repeats, restart=run.restart, train_splits=list(run.train_splits) or None,
                                       pseudo_labels=run.pseudo_labels, pseudo_weight=run.pseudo_weight, lexicon=run.lexicon,
                                       allow_rare_classes=run.allow_rare_classes, augmented=list(run.augmented),
                                       evaluate_on=run.evaluate_on)
    except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError, KeyError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    typer.echo(results_table(result, cfg.task))
    if run.repeats > 1:
        typer.echo(repeats_table(run_config["repeats_summary"]))
    typer.echo(f"run written to {run.out}")
    typer.echo(training_speed(sum(len(s) for s in result.states) * run.repeats, time.perf_counter() - t0))


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
