"""`emo tune ...` commands: adapting encoder layers (HLFT) on cached prefixes. Heavy imports stay inside."""

from __future__ import annotations

import typer

from emo.cliargs import GroupedCommand, command, command_line
from emo.fuse.config import INPUTS, METHODS, OPTIM, OUTPUT, PROTOCOL, TASK
from emo.fuse.options import TuneOptions

app = typer.Typer(no_args_is_help=True, help="Tune encoder layers with adapters on cached layer prefixes (HLFT).")


@app.command(cls=GroupedCommand)
@command(TuneOptions, panels=(INPUTS, TASK, PROTOCOL, METHODS, OPTIM, OUTPUT))
def hlft(ctx: typer.Context, o: TuneOptions) -> None:
    """Train one HLFT adapter set per fold (Zhao et al., MRAC '24, eq. 1-4) on the cached prefix; report WAF/UAR/accuracy."""
    from emo.exitcodes import ExitCode
    from emo.extract.adapters import AdapterError
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fsio import write_json
    from emo.fuse.methods.tune import results_table, tune_hlft
    from emo.optspec import resolved_options

    cfg = o.hlft_config()
    try:
        cfg.validate()
        if o.task != "discrete":
            raise ValueError(f"--task must be discrete (HLFT's loss is a classification loss, eq. 2), not {o.task!r}")
        a, sep, b = o.layers.partition("-")
        if not (sep and a.strip().isdigit() and b.strip().isdigit()) or int(a) > int(b) or int(a) < 1:
            raise ValueError(f"--layers must be an adapter window A-B with 1 <= A <= B (e.g. 16-21), not {o.layers!r}")
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    try:
        res = tune_hlft(o.features_dir, o.dataset, o.encoder, layers=o.layers, protocol=o.folds, out=o.out, cfg=cfg,
                        prefix_store=o.prefix_store, source=o.source, task=o.task, test_splits=o.test_split or None,
                        command=command_line(ctx, ctx.params), progress=lambda s: typer.echo(s, err=True))
    except (ValueError, AdapterError, StoreError, DatasetError, OSError) as e:  # TuneError, ProtocolError: ValueErrors
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    write_json(o.out / "options.json", {"command": command_line(ctx, ctx.params), "options": resolved_options(o)})  # --config reads it back
    typer.echo(results_table(res["metrics"]))
    typer.echo(f"run written to {o.out}")
