"""Command-line options generated from dataclasses (the way Hugging Face's ``HfArgumentParser``
builds a parser from dataclasses): a configuration dataclass is the single source of every
option's name, default, type, help, choices and ``--help`` group.

A field declares its option with :func:`emo.optspec.opt` (no typer in the library modules)::

    @dataclass
    class SweepOptions:
        window: int = opt(1, "Consecutive layers per probe.", group="Layers", min=1)
        head: str = opt("linear", "Fusion head.", group="Head", choices=head_names)

and :func:`command` turns one or more such dataclasses into a typer command whose body receives
the filled-in instances::

    @app.command("sweep", cls=GroupedCommand)
    @command(SweepOptions)
    def sweep(ctx: typer.Context, opts: SweepOptions) -> None: ...

Every generated command takes ``--config FILE`` (YAML or JSON, option names as keys): its values
become click's ``default_map`` (so precedence is command line > file > default, click's own rule),
each converted by its option's type as if typed, a key that is no option of the command refused
(exit 2, the file named). :func:`command_line` writes back the argv that reproduces a command and
:func:`emo.optspec.resolved_options` the option values a command ran with (what ``--config``
reads back). The ``group`` of a field is its ``--help`` section (typer's ``rich_help_panel``;
:class:`GroupedCommand` makes it a section of the plain help too). See ``docs/cli.md``.

This module imports typer only (no torch): ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import typer
from typer.core import TyperCommand

from emo.optspec import OWN_KEYS, choices_of, cli_fields, hints, read_options_file, resolved_options


def _annotation(tp: Any) -> Any:
    """The typer annotation of a field type: ``Literal`` becomes its values' type (choices are
    checked by :func:`check_choices`, so the messages stay emo's); containers become ``List``."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0])
    if origin in (list, tuple, typing.List):
        return typing.List[typing.get_args(tp)[0] if typing.get_args(tp) else str]
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return Optional[_annotation(args[0])] if len(args) == 1 else tp
    return tp


def _parameter(cls: type, f: Field, default: Any = MISSING) -> inspect.Parameter:
    md = dict(f.metadata)
    if default is MISSING:
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else ...)
    flags = md.get("flags") or ("--" + f.name.replace("_", "-"),)
    kwargs = {k: v for k, v in md.items() if k not in OWN_KEYS}
    help_text = md.get("help") or None
    c = md.get("choices")
    allowed = None if callable(c) else choices_of(cls, f)
    if allowed is not None and help_text is not None:
        help_text = f"{help_text} One of: {', '.join(map(str, allowed))}."
    if md.get("argument"):
        option = typer.Argument(default, help=help_text, **kwargs)
    else:
        option = typer.Option(default, *flags, help=help_text, rich_help_panel=md.get("group"), **kwargs)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_annotation(hints(cls)[f.name]))


def _is_option(p: Any) -> bool:
    return getattr(p, "param_type_name", None) == "option"


def apply_config_file(ctx: typer.Context, file_values: Mapping[str, Any], source: str) -> None:
    """Make ``file_values`` (option name -> value) the command's click ``default_map``: options not
    given on the command line take them (click's precedence: command line > environment >
    default_map > default). Each value is converted by its option's type now, as if typed
    (``"1e-3"`` and ``0.001`` are the same ``--lr``; ``true`` for ``--epochs`` is an error).

    Raises:
        typer.BadParameter: a key that is no option of this command, a list for a single-valued
            option, or a value its option's type rejects (``source`` named).
    """
    params = {p.name: p for p in ctx.command.params if p.name and p.name != "config"}
    unknown = sorted(k for k in file_values if k not in params)
    if unknown:
        raise typer.BadParameter(f"{source}: {', '.join(unknown)} is not an option of this command")
    defaults: dict[str, Any] = {}
    for name, raw in file_values.items():
        p = params[name]
        many = bool(p.multiple) or p.nargs != 1
        if many and not isinstance(raw, (list, tuple)):
            raw = [raw]
        if not many and isinstance(raw, (list, tuple)):
            raise typer.BadParameter(f"{source}: {name} takes one value, not a list ({raw!r})", ctx=ctx, param=p)
        if raw is None:
            defaults[name] = None
            continue
        flag = bool(getattr(p, "is_flag", False))
        as_typed = lambda v: v if (flag and isinstance(v, bool)) else str(v)  # noqa: E731  (true for --epochs fails like "True")
        try:
            p.process_value(ctx, [as_typed(v) for v in raw] if many else as_typed(raw))
        except typer.BadParameter as e:
            raise typer.BadParameter(f"{source}: {raw!r}: {e.message}", ctx=ctx, param=p) from None
        defaults[name] = [as_typed(v) for v in raw] if many else as_typed(raw)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _config_callback(reader: Callable[[Path], Mapping[str, Any]]) -> Callable:
    def callback(ctx: typer.Context, param: Any, value: Optional[Path]) -> Optional[Path]:
        if value is None or ctx.resilient_parsing:
            return value
        try:
            values = reader(value)
        except ValueError as e:
            raise typer.BadParameter(str(e), ctx=ctx, param=param) from None
        apply_config_file(ctx, values, str(value))
        return value
    return callback


CONFIG_HELP = ("Options from a YAML or JSON file (option names as keys); options given on the command line override it. "
               "A command's written options (its resolved config) are read back the same way.")


def command(*classes: type, defaults: Mapping[str, Any] | None = None,
            read_config: Callable[[Path], Mapping[str, Any]] = read_options_file,
            config_help: str = CONFIG_HELP, panels: tuple[str, ...] = (), unpack: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: a typer command function generated from the command-line fields of ``classes``.

    The decorated ``body(ctx, *instances)`` receives the typer context and one instance of each
    class, filled from the parsed options (fields kept off the command line take their defaults).
    The generated function has ``ctx``, ``--config`` (eager: :func:`apply_config_file` with the
    values ``read_config`` returns) and one keyword parameter per field, so typer, click's
    ``default_map`` and :func:`command_line` see ordinary options.

    Args:
        classes: dataclasses whose fields are options (:func:`opt`); no name in two of them.
        defaults: field name -> default of this command where it differs from the dataclass.
        read_config: reads a ``--config`` file into option values (ValueError for a bad file).
        panels: the order of the ``--help`` groups (others follow in order of appearance).
        unpack: call ``body(ctx?, **fields)`` (one keyword per field) instead of with instances.
    """
    pairs = cli_fields(*classes)
    defaults = dict(defaults or {})
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
              inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                default=typer.Option(None, "--config", help=config_help, is_eager=True,
                                                     callback=_config_callback(read_config), rich_help_panel="Config"))]
    order = {name: i for i, name in enumerate(panels)}
    pairs = sorted(pairs, key=lambda cf: order.get(cf[1].metadata.get("group"), len(order)))
    params += [_parameter(cls, f, defaults.get(f.name, MISSING)) for cls, f in pairs]
    lazy = {f.name: f.metadata["choices"] for _cls, f in pairs if callable(f.metadata.get("choices"))}

    def decorate(body: Callable) -> Callable:
        def generated(ctx: typer.Context, **values: Any) -> Any:
            values.pop("config", None)
            instances = []
            for cls in classes:
                names = {f.name for f in fields(cls) if f.init}
                instances.append(cls(**{k: v for k, v in values.items() if k in names}))
            ctx.meta[_RESOLVED] = resolved_options(*instances)
            if unpack:  # body(field=value, ...), with ctx when it takes one
                takes_ctx = "ctx" in inspect.signature(body).parameters
                return body(ctx, **values) if takes_ctx else body(**values)
            return body(ctx, *instances)

        generated.__name__, generated.__qualname__ = body.__name__, body.__qualname__
        generated.__doc__, generated.__module__ = body.__doc__, body.__module__
        generated.__signature__ = inspect.Signature(params)
        generated.__annotations__ = {p.name: p.annotation for p in params}
        generated.lazy_choices = lazy  # read by GroupedCommand when help is shown
        generated.option_classes = classes
        return generated

    return decorate


_RESOLVED = "emo.resolved_options"


def current_options(ctx: typer.Context) -> dict[str, Any]:
    """The option values the running generated command was called with (after ``--config`` and
    defaults), as JSON: what it writes as its resolved config (``--config`` reads it back).

    Raises:
        RuntimeError: not inside a command generated by :func:`command`.
    """
    c = ctx
    while c is not None:
        if _RESOLVED in c.meta:
            return dict(c.meta[_RESOLVED])
        c = c.parent
    raise RuntimeError("current_options() outside a generated command")


class GroupedCommand(TyperCommand):
    """A typer command whose ``--help`` lists the options under their groups (``rich_help_panel``)
    in plain (piped) help too, and appends choices that come from a registry (computed when help
    is shown, so plug-ins are listed and no heavy module loads otherwise)."""

    def _fill_lazy_help(self) -> None:
        lazy = getattr(self.callback, "lazy_choices", None) or {}
        if getattr(self, "_lazy_done", False) or not lazy:
            return
        self._lazy_done = True
        for p in self.params:
            if p.name in lazy:
                p.help = f"{p.help or ''} One of: {', '.join(map(str, lazy[p.name]()))}.".strip()

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._fill_lazy_help()
        super().format_help(ctx, formatter)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        groups: dict[str | None, list] = {}
        for p in self.get_params(ctx):
            rec = p.get_help_record(ctx)
            if rec is not None:
                group = "Arguments" if getattr(p, "param_type_name", None) == "argument" else getattr(p, "rich_help_panel", None)
                groups.setdefault(group, []).append(rec)
        for name, recs in sorted(groups.items(), key=lambda kv: (kv[0] != "Arguments", kv[0] in (None, "Config"))):
            with formatter.section(name or "Other options"):
                formatter.write_dl(recs)


def _flag(p: Any) -> str:
    longs = [o for o in p.opts if o.startswith("--")]
    return (longs or p.opts)[0]


def command_line(ctx: typer.Context, values: Mapping[str, Any], skip: tuple[str, ...] = ("config",)) -> list[str]:
    """The argv (``["emo", "fuse", "train", "--dataset", ...]``) that runs this command with
    ``values``, every option written out (boolean flags as their on or off form, repeatable
    options once per value, unset options left out), in the command's declaration order, so the
    recorded command reproduces the run without the experiment file.

    Args:
        ctx: the command's click context (its subcommand names, below the program, follow ``emo``).
        values: parameter name → value. skip: parameter names to leave out (``config``).
    """
    names, c = [], ctx
    while c.parent is not None:  # the subcommand path below the program (which may be "python -m emo.cli")
        names.append(c.info_name)
        c = c.parent
    argv = ["emo", *reversed(names)]
    for p in ctx.command.params:  # positional arguments first, in order
        if getattr(p, "param_type_name", None) == "argument" and p.name in values and values[p.name] is not None:
            v = values[p.name]
            argv += [str(item) for item in (v if p.multiple or p.nargs != 1 else [v])]
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


