"""`emo fuse ...` commands. Heavy imports (torch) stay inside the commands."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from emo.cliargs import GroupedCommand, command, command_line, current_options
from emo.fuse.config import HEAD, INPUTS, METHODS, OPTIM, OUTPUT, PROTOCOL, TASK, TrainConfig
from emo.fuse.options import LAYERS, CompareOptions, EnsembleOptions, ReportOptions, RunOptions, SweepOptions, read_config_file

#: ``--help`` group order of the smaller fuse commands.
PANELS = (INPUTS, TASK, PROTOCOL, METHODS, OPTIM, OUTPUT)

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
    from emo.fuse.training.data import FeatureError
    from emo.fuse.methods.multitask import LabelTask, MultiConfig, is_multitask, multitask_table, train_multitask
    from emo.fuse.eval.protocols import ProtocolError
    from emo.fuse.eval.report import repeats_table, results_table, training_speed
    from emo.fuse.training.train import train as train_run

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


@app.command("sweep", cls=GroupedCommand)
@command(SweepOptions, panels=(INPUTS, LAYERS, HEAD, TASK, OPTIM, PROTOCOL, OUTPUT))
def sweep_cmd(ctx: typer.Context, o: SweepOptions) -> None:
    """Layer ablation: one probe per layer (or window of layers) per fold; writes sweep.csv, sweep.json
    and sweep.png into --out and reuses finished cells when rerun."""
    import shlex
    import time

    from emo.exitcodes import ExitCode
    from emo.extract.datasets.base import DatasetError
    from emo.extract.spec import spec_name
    from emo.extract.store import StoreError
    from emo.fsio import write_json
    from emo.fuse.training.data import FeatureError
    from emo.fuse.methods.multitask import is_multitask
    from emo.fuse.eval.protocols import ProtocolError
    from emo.fuse.eval.report import training_speed
    from emo.fuse.eval.sweep import SweepError, run_sweep, sweep_repeats
    from emo.optspec import resolved_options

    out = o.out or Path("runs") / f"sweep-{o.dataset}-{spec_name(o.features)}-w{o.window}-{o.head}"
    multi = is_multitask(o.task, list(o.label_column))
    cfg = o.train_config(task="discrete" if multi else None)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    t0 = time.perf_counter()
    try:
        if multi:
            cfg = replace(cfg, task=o.task)  # run_sweep parses the tasks (and says what is wrong with them)
        summary = run_sweep(o.features_dir, o.dataset, o.features, o.layers or None, o.window, o.stride, cfg, o.folds, o.metric or None, out,
                            test_splits=list(o.test_split) or None, progress=o.progress,
                            log=lambda line: typer.echo(line, err=True) if line.startswith(("warning", "sequential", "AdamW", "protocol")) else None,
                            train_splits=list(o.train_splits) or None, label_columns=list(o.label_column), joint=o.joint,
                            allow_rare_classes=o.allow_rare_classes)
    except SweepError as e:  # settings that do not fit the data (window, metric): the command line is wrong
        raise typer.BadParameter(str(e)) from None
    except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError, OSError) as e:  # WheelError is a ValueError
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    summary["command"] = shlex.join(command_line(ctx, {**ctx.params, "out": out}))
    summary["options"] = resolved_options(replace(o, out=out))  # the resolved config: --config OUT/sweep.json reads it back
    write_json(Path(out) / "sweep.json", summary)
    if o.repeats > 1:
        try:
            rep = sweep_repeats(o.features_dir, o.dataset, o.features, o.layers or None, o.window, o.stride, cfg, o.folds, o.metric or None,
                                out, repeats=o.repeats, progress=o.progress, test_splits=list(o.test_split) or None,
                                train_splits=list(o.train_splits) or None)
        except (FeatureError, ProtocolError, StoreError, DatasetError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(ExitCode.ERROR) from None
        typer.echo(f"{'window':>10}  {rep['reported'] + ' over ' + str(o.repeats) + ' repeats':>32}")
        for r in rep["rows"]:
            star = " *" if r["window"] == rep["best"]["window"] else ""
            typer.echo(f"{r['window']:>10}  {r['mean']:>24.4f} ± {r['std']:.4f}{star}")
        typer.echo(f"selected window {rep['best']['window']} on the repeat mean; wrote {out}/sweep_repeats.json")
        return
    m = summary["metric"]
    typer.echo(summary["protocol_record"]["statement"])  # issue 23: how the numbers below were obtained
    test = any(f"test_{m}_mean" in r for r in summary["rows"])
    # multi-label sweeps: the other multi-label metrics (means over folds) next to the selection metric
    extra = [k for k in ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1", "wheel_f1")
             if "label_space" in summary and k != m and f"{k}_mean" in summary["rows"][0]]
    typer.echo(f"{'window':>10}  {m + ' mean':>14}  {'std':>7}" + (f"  {'test ' + m:>14}" if test else "") +
               "".join(f"  {k:>12}" for k in extra))
    for r in summary["rows"]:
        star = " *" if r["window"] == summary["best"]["window"] else ""
        typer.echo(f"{r['window']:>10}  {r[m + '_mean']:>14.4f}  {r[m + '_std']:>7.4f}" +
                   (f"  {r['test_' + m + '_mean']:>14.4f}" if test else "") + "".join(f"  {r[k + '_mean']:>12.4f}" for k in extra) + star)
    if "label_space" in summary:
        typer.echo(f"multi-label: {len(summary['label_space']['classes'])} labels, predicted when p > ζ = {summary['threshold']}"
                   + (f"; emotion-wheel F1 with {summary['emotion_wheel']['dir']}" if summary.get("emotion_wheel") else ""))
    typer.echo(f"selected window {summary['best']['window']} on {summary['selected_on']}; "
               f"{summary['trained']} cell(s) trained, {summary['reused']} reused; wrote {out}/sweep.csv, sweep.json, sweep.png")
    typer.echo(training_speed(summary["models_trained"], time.perf_counter() - t0))

@app.command("ensemble", cls=GroupedCommand)
@command(EnsembleOptions, panels=PANELS, unpack=True)
def ensemble_cmd(ctx: typer.Context, runs: list[Path], out: Path, metric: str, step: float, max_points: int, seed: int, optimistic: bool, threshold: Optional[float], emotion_wheel: str) -> None:
    """Decision-level fusion (posterior level, after Wang et al., MER 2023): weighted sum of the runs' posteriors and valences,
    weights summing to 1, tuned on validation (out-of-fold) predictions. The reported validation
    score is nested: each evaluation group (speaker or fold) is fused with weights tuned on the others."""
    import shlex

    from emo.exitcodes import ExitCode
    import math

    from emo import fsio
    from emo.fsio import write_json
    from emo.fuse.eval.ensemble import METRICS, EnsembleError, EnsembleUsageError, ensemble
    from emo.fuse.run import RunError

    if len(runs) < 2:
        raise typer.BadParameter("give at least two run directories to fuse")
    if metric and metric not in METRICS:
        raise typer.BadParameter(f"unknown --metric {metric!r}; use one of {', '.join(METRICS)}")
    if not 0 < step <= 1:
        raise typer.BadParameter(f"--step must be in (0, 1], not {step}")
    if threshold is not None and not (math.isfinite(threshold) and 0 < threshold < 1):
        raise typer.BadParameter(f"--threshold must be a probability in (0, 1), not {threshold}")
    if max_points < 1:
        raise typer.BadParameter(f"--max-points must be at least 1, not {max_points}")
    try:
        res = ensemble(runs, out, metric or None, step, max_points, seed, optimistic, threshold, emotion_wheel or None)
    except EnsembleUsageError as e:  # the same run twice, --threshold for single-label runs: a bad command line
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    except (EnsembleError, RunError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    res["command"] = shlex.join(["emo", "fuse", "ensemble", *map(str, runs), "--out", str(out), *(["--metric", metric] if metric else []),
                                 "--step", str(step), "--max-points", str(max_points), "--seed", str(seed),
                                 *(["--optimistic"] if optimistic else []),
                                 *(["--threshold", str(threshold)] if threshold is not None else []),
                                 *(["--emotion-wheel", emotion_wheel] if emotion_wheel else [])])
    res["options"] = current_options(ctx)  # the resolved config: --config OUT/ensemble.json reads it back
    write_json(Path(out) / "ensemble.json", fsio.seal_json(res))  # content SHA-256: checked where it is read back
    m = res["metric"]
    typer.echo(res["protocol"].get("statement", ""))
    typer.echo(f"{'run':<40} {'weight':>7} {'val ' + m:>18}" + (f" {'test ' + m:>18}" if "runs" in res.get("test", {}) else ""))
    for r in res["runs"]:
        line = f"{r[-40:]:<40} {res['weights'][r]:>7.3f} {res['validation']['runs'][r][m]:>18.4f}"
        if "runs" in res.get("test", {}):
            line += f" {res['test']['runs'][r][m]:>18.4f}"
        typer.echo(line)
    label = "fused, nested" if res["validation"]["nested"] else "fused, optimistic"
    wcol = "per grp" if res["validation"]["nested"] else "above"  # nested: each group's own weights (ensemble.json)
    line = f"{label:<40} {wcol:>7} {res['validation']['fused'][m]:>18.4f}"
    if "runs" in res.get("test", {}):
        line += f" {res['test']['fused'][m]:>18.4f}"
    typer.echo(line)
    if "fused_optimistic" in res["validation"]:
        typer.echo(f"{'fused, optimistic (same rows)':<40} {'':>7} {res['validation']['fused_optimistic'][m]:>18.4f}")
    if "multilabel" in res:  # every multi-label metric of the fused predictions
        shown = [k for k in ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1", "wheel_f1") if k in res["validation"]["fused"]]
        for part in ("validation", "test"):
            if "fused" in res.get(part, {}):
                typer.echo(f"fused {part} at threshold {res['multilabel']['threshold']}: "
                           + ", ".join(f"{k} {res[part]['fused'][k]:.4f}" for k in shown))
    if "interval" in res:
        ci = res["interval"]
        typer.echo(f"{int(ci['level'] * 100)}% bootstrap interval of fused {ci['metric']} ({ci['n_boot']} replicates over "
                   f"{ci['n_groups']} evaluation groups): {ci['estimate']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]")
    for w in res.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    from emo.fuse.eval.report import write_ensemble_report

    write_ensemble_report(Path(out), res)  # again, with the command
    typer.echo(f"wrote {out}/ensemble.json, {out}/predictions.csv and {out}/report.md")


@app.command("report", cls=GroupedCommand)
@command(ReportOptions, panels=PANELS, unpack=True)
def report_cmd(run: Path) -> None:
    """(Re)write a run's report.md and confusion-matrix PNG from its config.json and metrics.json."""
    import json

    from emo.exitcodes import ExitCode
    from emo.fuse.eval.report import write_report

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


@app.command("compare", cls=GroupedCommand)
@command(CompareOptions, panels=PANELS, unpack=True)
def compare_cmd(ctx: typer.Context, run_a: Path, run_b: Path, metric: str, group: str, n_boot: int, seed: int, out: Path) -> None:
    """Paired bootstrap of metric(A) - metric(B) over evaluation groups, with its 95% interval."""
    from emo.exitcodes import ExitCode
    from emo.fuse.eval.compare import METRICS, compare
    from emo.fuse.eval.stats import StatsError

    if metric and metric not in METRICS:
        raise typer.BadParameter(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if group not in ("auto", "fold", "speaker", "sample"):
        raise typer.BadParameter(f"--group must be auto, fold, speaker or sample, not {group!r}")
    if run_a.resolve() == run_b.resolve():
        raise typer.BadParameter(f"A and B are the same directory ({run_a}): compare two different runs")
    if n_boot < 1:
        raise typer.BadParameter(f"--n-boot must be at least 1, not {n_boot}")
    try:
        res = compare(run_a, run_b, metric or None, group, n_boot, seed)
    except StatsError as e:  # runs that cannot be compared (missing, different rows, labels, outputs)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    m = res["metric"]
    typer.echo(f"{m} A = {res['a_value']:.4f}  ({run_a})")
    typer.echo(f"{m} B = {res['b_value']:.4f}  ({run_b})")
    typer.echo(f"A - B = {res['difference']:+.4f}, {int(res['level'] * 100)}% interval [{res['low']:+.4f}, {res['high']:+.4f}] "
               f"({res['n_boot']} paired replicates over {res['n_groups']} {res['group']} groups); "
               f"fraction of replicates with A - B <= 0: {res['p_le_0']:.3f}")
    if res.get("note"):
        typer.echo(f"note: {res['note']}")
    if out is not None:
        from emo.fuse.run import write_json

        write_json(out, {**res, "options": current_options(ctx)})

from emo.fuse.semi_cli import align_cmd, pseudo_label_cmd  # noqa: E402  (typer only; torch loads inside the commands)

app.command("align", cls=GroupedCommand)(align_cmd)
app.command("pseudo-label", cls=GroupedCommand)(pseudo_label_cmd)

from emo.fuse.search_cli import search_cmd  # noqa: E402  (typer only; numpy and torch load inside the command)

app.command("search", cls=GroupedCommand)(search_cmd)
