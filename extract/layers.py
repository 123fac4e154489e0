"""Layer selection syntax shared by every encoder.

A layer spec is a comma-separated list of items; each item is an integer
(``18``), an inclusive integer range (``16-21``) or a named entry (``proj``,
``functionals``). ``all`` selects every layer the encoder has.

Numbering follows the papers and ``transformers``' ``output_hidden_states``:
hidden state ``k`` is the output of transformer layer ``k``, and ``0`` is the
input to layer 1 (the embeddings).

Layer combinations (read time only, never extracted): ``mean(21-24)`` / ``sum(21-24)`` is one
virtual layer, the element-wise mean / sum of the stored layers inside the parentheses (any
layer spec of numbers and ranges, e.g. ``mean(0,6,12)``), and ``mean(last4)`` the mean of the
last four numbered layers of the store (MERTools' audio feature: the mean of the last four
hidden layers). They are computed from a layer-wise store when features are read
(:mod:`emo.extract.combine`), so ``hubert_large:mean(21-24)`` and ``hubert_large:16-21`` are
one command apart without re-extraction.
"""


from __future__ import annotations

import re

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$|^([A-Za-z_][A-Za-z0-9_]*)$")
_COMBO = re.compile(r"^(mean|sum)\((.*)\)$")
_LAST = re.compile(r"^last(\d+)$")
#: Operations of a layer combination.
COMBINE_OPS = ("mean", "sum")


def _split_items(spec: str) -> list[str]:
    """Split a layer spec on the commas outside parentheses."""
    items, depth, cur = [], 0, ""
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return items


def _parse_combo(item: str, spec: str) -> str:
    """Canonical key of ``mean(...)`` / ``sum(...)``: ``mean(21,22,23,24)`` -> ``mean(21-24)``."""
    m = _COMBO.match(item)
    op, inner = m.group(1), m.group(2).strip()
    last = _LAST.match(inner)
    if last:
        if int(last.group(1)) < 1:
            raise LayerSpecError(f"bad layer combination {item!r} in spec {spec!r}: last0 selects nothing")
        return f"{op}(last{int(last.group(1))})"
    try:
        keys = parse_layers(inner)
    except LayerSpecError as e:
        raise LayerSpecError(f"bad layer combination {item!r} in spec {spec!r}: {e}") from None
    if not keys or any(not k.isdigit() for k in keys):
        raise LayerSpecError(f"bad layer combination {item!r} in spec {spec!r}: use numbered layers, e.g. {op}(21-24) or {op}(last4)")
    return f"{op}({format_layers(keys)})"


def is_combination(key: str) -> bool:
    """True for a layer-combination key such as ``mean(21-24)`` or ``sum(last2)``."""
    return bool(_COMBO.match(str(key)))


def combination_parts(key: str) -> tuple[str, list[str] | int]:
    """``("mean", ["21", "22", "23", "24"])`` for ``mean(21-24)``; ``("mean", 4)`` for the unresolved ``mean(last4)``.

    Raises:
        LayerSpecError: ``key`` is not a combination.
    """
    m = _COMBO.match(str(key))
    if not m:
        raise LayerSpecError(f"{key!r} is not a layer combination (mean(...) or sum(...))")
    last = _LAST.match(m.group(2).strip())
    if last:
        return m.group(1), int(last.group(1))
    return m.group(1), parse_layers(m.group(2)) or []


class LayerSpecError(ValueError):
    """A layer spec that does not parse, or names layers the encoder lacks."""


def parse_layers(spec: str | None) -> list[str] | None:
    """Parse a layer spec into a list of layer keys (strings), in the given order.

    Args:
        spec: e.g. ``"16-21"``, ``"0,3,5-7"``, ``"12-24,proj"``, ``"mean(21-24)"``, ``"all"`` or ``None``.

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
    for raw in _split_items(spec):
        item = raw.strip()
        if _COMBO.match(item):
            key = _parse_combo(item, spec)
            if key not in out:
                out.append(key)
            continue
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
    """Check ``requested`` against ``available``; ``None`` selects all. A layer combination
    (``mean(21-24)``, ``mean(last4)``) selects the layers it combines: stores hold layers, the
    combination is computed when they are read (:mod:`emo.extract.combine`).

    Raises:
        LayerSpecError: naming the encoder, the missing layers and what exists.
    """
    if requested is None:
        return list(available)
    if any(is_combination(k) for k in requested):  # extraction stores the parts; the combination is made when read
        numbered = sorted((k for k in available if k.isdigit()), key=int)
        expanded: list[str] = []
        for k in requested:
            if not is_combination(k):
                parts = [k]
            else:
                parts = combination_parts(k)[1]
                if isinstance(parts, int):
                    if parts > len(numbered):
                        raise LayerSpecError(f"{encoder} has only {len(numbered)} numbered layers; {k} needs {parts}")
                    parts = numbered[-parts:]
            expanded += [p for p in parts if p not in expanded]
        requested = expanded
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
