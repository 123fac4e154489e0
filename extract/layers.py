"""Layer selection syntax shared by every encoder.

A layer spec is a comma-separated list of items; each item is an integer
(``18``), an inclusive integer range (``16-21``) or a named entry (``proj``,
``functionals``). ``all`` selects every layer the encoder has.

Numbering follows the papers and ``transformers``' ``output_hidden_states``:
hidden state ``k`` is the output of transformer layer ``k``, and ``0`` is the
input to layer 1 (the embeddings).
"""

from __future__ import annotations

import re

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$|^([A-Za-z_][A-Za-z0-9_]*)$")


class LayerSpecError(ValueError):
    """A layer spec that does not parse, or names layers the encoder lacks."""


def parse_layers(spec: str | None) -> list[str] | None:
    """Parse a layer spec into a list of layer keys (strings), in the given order.

    Args:
        spec: e.g. ``"16-21"``, ``"0,3,5-7"``, ``"12-24,proj"``, ``"all"`` or ``None``.

    Returns:
        Layer keys such as ``["16", "17", ...]``; ``None`` for ``None``, ``""`` or
        ``"all"`` (meaning: every layer the encoder offers). Duplicates are dropped.

    Raises:
        LayerSpecError: on malformed items or descending ranges (``21-16``).
    """
    if spec is None:
        return None
    spec = str(spec).strip()
    if spec in ("", "all"):
        return None
    out: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        m = _ITEM.match(item)
        if not m:
            raise LayerSpecError(f"bad layer item {item!r} in spec {spec!r}: use N, A-B or a name")
        if m.group(3):
            keys = [m.group(3)]
        else:
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise LayerSpecError(f"descending layer range {item!r} in spec {spec!r}")
            keys = [str(i) for i in range(lo, hi + 1)]
        for k in keys:
            if k not in out:
                out.append(k)
    return out


def is_layer_spec(text: str) -> bool:
    """True when ``text`` parses as a layer spec (used to split ``name=source:layers``)."""
    try:
        parse_layers(text)
    except LayerSpecError:
        return False
    return True


def select_layers(requested: list[str] | None, available: list[str], encoder: str) -> list[str]:
    """Check ``requested`` against ``available``; ``None`` selects all.

    Raises:
        LayerSpecError: naming the encoder, the missing layers and what exists.
    """
    if requested is None:
        return list(available)
    missing = [k for k in requested if k not in available]
    if missing:
        shown = format_layers(available)
        raise LayerSpecError(f"{encoder} has no layer(s) {', '.join(missing)}; available: {shown}")
    return list(requested)


def format_layers(keys: list[str]) -> str:
    """Compact a list of layer keys back into spec syntax: ``["16","17","18","proj"] -> "16-18,proj"``."""
    parts: list[str] = []
    run: list[int] = []

    def close() -> None:
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run.clear()

    for k in keys:
        if k.isdigit():
            i = int(k)
            if run and i == run[-1] + 1:
                run.append(i)
            else:
                close()
                run.append(i)
        else:
            close()
            parts.append(k)
    close()
    return ",".join(parts)
