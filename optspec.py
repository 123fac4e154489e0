"""Options declared on dataclass fields, without typer (library modules import this; the command
line is generated from it by :mod:`emo.cliargs`).

A field declares its option with :func:`opt`: ``lr: float = opt(1e-3, "Learning rate.", group="Optimisation")``.
Metadata keys (all optional): ``help``; ``group`` (the ``--help`` panel); ``flags`` (the option's
names, default ``--field-name``; ``"--a/--b"`` for an on/off pair); ``choices`` (a tuple, or a
function returning one, called only when help is shown or a value checked: registries that
plug-ins extend); ``cli=False`` keeps a field off the command line; any other key is passed to
``typer.Option`` (``min``, ``hidden``, ...). ``Literal[...]`` field types give the choices too.
:func:`check_choices` is the one check of choice fields.
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

#: Metadata keys of :func:`opt` that are not ``typer.Option`` arguments.
OWN_KEYS = ("help", "group", "flags", "choices", "cli", "argument")


def opt(default: Any = MISSING, help: str = "", *, group: str | None = None, flags: Iterable[str] | None = None,
        choices: tuple | Callable[[], Iterable] | None = None, cli: bool = True, argument: bool = False, **option: Any) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default: the default (a list default is copied per instance); omitted: a required option.
        help: the option's help text (choices are appended by the generator).
        group: the ``--help`` section (``"Head"``, ``"Optimisation"``, ...).
        flags: the option's names; default ``--<name-with-dashes>``.
        choices: allowed values, or a zero-argument function returning them (a registry).
        cli: ``False`` keeps the field off the command line (set by code or a config file only).
        argument: a positional argument instead of an option (``emo fuse ensemble RUN...``).
        option: further ``typer.Option`` arguments (``min=1``, ``hidden=True``).
    """
    md = {"help": help, "group": group, "flags": tuple(flags) if flags else None, "choices": choices, "cli": cli,
          "argument": argument, **option}
    if isinstance(default, list):
        return field(default_factory=lambda d=tuple(default): list(d), metadata=md)
    return field(default=default, metadata=md)


def lazy_choices(module: str, name: str) -> Callable[[], tuple]:
    """Choices read from ``module.name`` when needed (help shown, value checked): the module may
    import torch, and a registry (``emo.fuse.model.heads.HEADS``) may grow by plug-ins."""
    def choices() -> tuple:
        import importlib

        return tuple(getattr(importlib.import_module(module), name))
    choices.__qualname__ = f"{module}.{name}"
    return choices


def like(cls: type, name: str, default: Any = MISSING, **changes: Any) -> Any:
    """A field declaring the same option as ``cls.name`` (help, group, choices, flags), with this
    command's ``default`` and other metadata ``changes`` (``help=...``): one option shared by two
    commands is declared once."""
    f = next(f for f in fields(cls) if f.name == name)
    md = {**f.metadata, **changes}
    if default is MISSING:
        default = f.default if f.default is not MISSING else f.default_factory()
    return opt(default, **md)


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def choices_of(cls: type, f: Field) -> tuple | None:
    """The allowed values of a field: its ``choices`` metadata (called if a function) or its
    ``Literal[...]`` type; ``None`` when any value of the type is allowed."""
    c = f.metadata.get("choices")
    if c is not None:
        return tuple(c() if callable(c) else c)
    tp = hints(cls)[f.name]
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    return None


def flag_of(f: Field) -> str:
    """The long option name of a field (``--lr``; the first of an on/off pair)."""
    flags = f.metadata.get("flags")
    if flags:
        return flags[0].split("/")[0]
    return "--" + f.name.replace("_", "-")


def check_choices(obj: Any) -> None:
    """Raise ValueError ``--head must be one of afg, ..., not 'x'`` for the first field of the
    dataclass instance ``obj`` whose value is not among its choices (:func:`choices_of`)."""
    for f in fields(obj):
        allowed = choices_of(type(obj), f)
        v = getattr(obj, f.name)
        if allowed is not None and v not in allowed:
            raise ValueError(f"{flag_of(f)} must be one of {', '.join(map(str, allowed))}, not {v!r}")


def cli_fields(*classes: type) -> list[tuple[type, Field]]:
    """(dataclass, field) of every command-line field of ``classes``, in declaration order.

    Raises:
        TypeError: two classes declare the same field name.
    """
    seen: dict[str, type] = {}
    out = []
    for cls in classes:
        for f in fields(cls):
            if not f.metadata.get("cli", True) or not f.init:
                continue
            if f.name in seen:
                raise TypeError(f"option {f.name} declared by both {seen[f.name].__name__} and {cls.__name__}")
            seen[f.name] = cls
            out.append((cls, f))
    return out


def read_options_file(path: str | Path) -> dict[str, Any]:
    """Option values from a YAML (``.yaml``/``.yml``) or JSON file: a mapping of option names
    (``-`` or ``_``) to values; a nested mapping (``training:``) is flattened one level; a file
    written by a command (a mapping with ``options``: ``sweep.json``, ``ensemble.json``, ``options.json``)
    gives those options.

    Raises:
        ValueError: unreadable file, invalid YAML/JSON, or not a mapping (the file named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read config file {path}: {e.strerror or e}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({e})") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
    d = {} if d is None else d
    if not isinstance(d, Mapping):
        raise ValueError(f"{path}: expected a mapping of option names to values, got {type(d).__name__}")
    if isinstance(d.get("options"), Mapping):  # no option is named "options": a file a command wrote
        d = d["options"]
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            flat.update({str(k2).replace("-", "_"): v2 for k2, v2 in v.items()})
        else:
            flat[str(k).replace("-", "_")] = v
    return flat


def resolved_options(*instances: Any) -> dict[str, Any]:
    """Option name -> JSON value of the command-line fields of dataclass ``instances`` (paths as
    strings, tuples as lists): what a command ran with, in the form ``--config`` reads back."""
    out: dict[str, Any] = {}
    for obj in instances:
        for _cls, f in cli_fields(type(obj)):
            v = getattr(obj, f.name)
            out[f.name] = [str(x) if isinstance(x, Path) else x for x in v] if isinstance(v, (list, tuple)) else (
                str(v) if isinstance(v, Path) else v)
    return out
