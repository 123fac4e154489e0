"""Layer combinations computed from a layer-wise store at read time (``mean(21-24)``, ``sum(last2)``).

Grammar: :mod:`emo.extract.layers`. A combination is one virtual layer: the element-wise mean (or
sum) over its stored layers, computed in float64 from the stored values and cast to the requested
dtype. ``lastN`` resolves to the last N *numbered* layers of the store (named layers such as
``proj`` never count), so ``whisper_large_v3:mean(last4)`` is ``mean(29-32)``: MERTools'
utterance feature (the mean of the last four hidden layers, ``extract_audio_huggingface.py``)
taken from a store that also serves every single layer and window.

Nothing here writes or imports the store module (the store imports this one):
:meth:`emo.extract.store.FeatureStore.read` and ``read_frames`` hand combination keys to
:func:`read_combined` / :func:`read_combined_frames`, and
:func:`combination_provenance` is what a run records for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.layers import LayerSpecError, combination_parts, format_layers, is_combination


def resolve(key: str, stored: list[str]) -> str:
    """The canonical key of ``key`` against a store's layer list: ``mean(last4)`` -> ``mean(21-24)``
    for layers 0..24; plain keys and explicit combinations are returned unchanged.

    Raises:
        LayerSpecError: ``lastN`` with fewer than N numbered layers stored.
    """
    if not is_combination(key):
        return key
    op, parts = combination_parts(key)
    if isinstance(parts, int):
        numbered = sorted((k for k in stored if k.isdigit()), key=int)
        if len(numbered) < parts:
            raise LayerSpecError(f"{key}: the store has only {len(numbered)} numbered layer(s) ({format_layers(numbered)})")
        return f"{op}({format_layers(numbered[-parts:])})"
    return key


def parts_of(key: str, stored: list[str]) -> tuple[str, list[str]]:
    """(operation, stored layer keys) of a combination; ``("", [key])`` for a plain layer.

    Raises:
        LayerSpecError: a part the store lacks (named, with what is stored).
    """
    if not is_combination(key):
        return "", [key]
    op, parts = combination_parts(resolve(key, stored))
    missing = [k for k in parts if k not in stored]
    if missing:
        raise LayerSpecError(f"{key}: the store has no layer(s) {', '.join(missing)}; stored: {format_layers(stored)}")
    return op, list(parts)


def layer_dim(store, key: str) -> int:
    """Dimension D of a plain or combined layer of ``store`` (a :class:`~emo.extract.store.FeatureStore`).

    Raises:
        LayerSpecError: missing parts, or parts of different dimensions.
    """
    _, parts = parts_of(key, store.layers)
    dims = {int(store.dims[k]) for k in parts}
    if len(dims) > 1:
        raise LayerSpecError(f"{store.path}: the layers of {key} differ in dimension ({sorted(dims)})")
    return dims.pop()


def _combine(op: str, stack: np.ndarray, axis: int) -> np.ndarray:
    total = stack.sum(axis=axis, dtype=np.float64)
    return total / stack.shape[axis] if op == "mean" else total


def read_combined(store, layers: list[str], names: list[str] | None, dtype=np.float32) -> np.ndarray:
    """``store.read`` for keys that may include combinations: (N, L, D) of ``dtype``.

    Each plain layer is read once even when several combinations share it.

    Raises:
        LayerSpecError: a combination whose layers the store lacks (the store's reader turns it
            into a ``StoreError``).
        emo.extract.store.StoreError: missing samples, or layers of different dimensions.
    """
    plan = [parts_of(k, store.layers) for k in layers]
    plain = list(dict.fromkeys(k for _, ps in plan for k in ps))
    raw = store.read(plain, names, dtype=np.float32)  # checks dimensions and samples
    col = {k: j for j, k in enumerate(plain)}
    out = np.empty((raw.shape[0], len(layers), raw.shape[2]), dtype=dtype)
    for j, (op, ps) in enumerate(plan):
        if not op:
            out[:, j] = raw[:, col[ps[0]]]
        else:
            out[:, j] = _combine(op, raw[:, [col[k] for k in ps]], axis=1)
    return out


def read_combined_frames(store, key: str, names: list[str] | None, dtype=np.float32) -> list[np.ndarray]:
    """``store.read_frames`` for a combination: per sample (T_i, D), frame by frame over its layers.

    Raises:
        LayerSpecError: layers the store lacks.
    """
    op, ps = parts_of(key, store.layers)
    per = [store.read_frames(k, names, dtype=np.float32) for k in ps]
    return [_combine(op, np.stack(seqs), axis=0).astype(dtype) for seqs in zip(*per)]


def combination_provenance(layers: list[str], stored: list[str]) -> dict[str, Any]:
    """``{key: {"op": "mean", "layers": [...]}}`` for the combinations among ``layers`` (empty when none):
    what a run records so the virtual layer can be recomputed from the store."""
    out = {}
    for k in layers:
        if is_combination(k):
            op, ps = parts_of(k, stored)
            out[k] = {"op": op, "layers": ps}
    return out
