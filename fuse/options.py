"""Command-line plumbing shared by the ``emo fuse`` commands: option values from an experiment
file overridden by the command line (:func:`merge_config_file`), and the full command line that
reproduces a run (:func:`command_line`).

Works on the context typer gives a command (``ctx: typer.Context``), so it needs no list of the
options: a new option of ``emo fuse train`` is at once settable from a file and recorded in the
run's ``command``. Typer ships its own copy of click, so parameters are recognised by their
click attributes (``param_type_name``), not by ``isinstance`` against the ``click`` package.
"""

from __future__ import annotations

from typing import Any, Mapping

import typer


def _is_option(p: Any) -> bool:
    return getattr(p, "param_type_name", None) == "option"


def merge_config_file(ctx: typer.Context, values: dict[str, Any], file_values: Mapping[str, Any],
                      source: str = "config file") -> dict[str, Any]:
    """``values`` (the command's parameters as parsed) with every parameter that was *not* given
    on the command line (or through an environment variable) taken from ``file_values``.

    File values are converted and validated by the option itself (``process_value``), as if typed
    (``"1e-3"`` and ``0.001`` are the same ``--lr``; ``"abc"`` for ``--epochs`` is an error);
    repeatable options take a list or a single value. Precedence: command line > file > default.

    Args:
        ctx: the command's click context. values: parameter name → parsed value.
        file_values: option name → value, from :func:`emo.fuse.config.read_config_file`.
        source: how error messages name the file.

    Returns:
        A new dict of parameter values.

    Raises:
        typer.BadParameter: a value the option's type rejects, or a key that is no option of this command.
    """
    params = {p.name: p for p in ctx.command.params if p.name and _is_option(p)}
    unknown = sorted(k for k in file_values if k not in params)
    if unknown:
        raise typer.BadParameter(f"{source}: {', '.join(unknown)} is not an option of this command")
    out = dict(values)
    for name, raw in file_values.items():
        src = ctx.get_parameter_source(name)
        if src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        p = params[name]
        if p.multiple and not isinstance(raw, (list, tuple)):
            raw = [raw]
        if not p.multiple and isinstance(raw, (list, tuple)):
            raise typer.BadParameter(f"{source}: {name} takes one value, not a list ({raw!r})", ctx=ctx, param=p)
        if raw is None:
            out[name] = None
            continue
        try:
            val = p.process_value(ctx, [v if isinstance(v, bool) else str(v) for v in raw] if p.multiple else
                                  (raw if isinstance(raw, bool) else str(raw)))
        except typer.BadParameter as e:
            raise typer.BadParameter(f"{source}: {raw!r}: {e.message}", ctx=ctx, param=p) from None
        out[name] = list(val) if p.multiple else val
    return out


def _flag(p: Any) -> str:
    longs = [o for o in p.opts if o.startswith("--")]
    return (longs or p.opts)[0]


def command_line(ctx: typer.Context, values: Mapping[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """The argv (``["emo", "fuse", "train", "--dataset", ...]``) that runs this command with
    ``values``, every option written out (boolean flags as their on or off form, repeatable
    options once per value, unset options left out), in the command's declaration order, so the
    recorded command reproduces the run without the experiment file.

    Args:
        ctx: the command's click context (its ``command_path`` starts the argv).
        values: parameter name → value. skip: parameter names to leave out (``config``).
    """
    argv = ctx.command_path.split()
    if argv and argv[0] != "emo":  # run as a sub-app (tests, python -m): name it as the emo CLI does
        argv = ["emo", *argv[1:]] if len(argv) > 1 else ["emo"]
    for p in ctx.command.params:
        if not _is_option(p) or p.name in skip or p.name not in values:
            continue
        v = values[p.name]
        if p.is_flag:
            if p.secondary_opts:
                argv.append(_flag(p) if v else p.secondary_opts[0])
            elif v:
                argv.append(_flag(p))
            continue
        if v is None:
            continue
        for item in (v if p.multiple else [v]):
            argv += [_flag(p), str(item)]
    return argv
