"""Minibatches for training and evaluating fusion models on preloaded features.

Utterance-level inputs are float32 tensors (N, L, D) indexed straight by row (no DataLoader).
Frame-level inputs stay packed (:class:`emo.fuse.model.frames.PackedFrames`) and are padded per
minibatch; training minibatches are drawn from length buckets (shuffled rows, sorted by length
within windows of 50 batches, batch order shuffled) so each batch pads little, and evaluation
runs over length-sorted batches of at most :data:`EVAL_ELEMENTS` padded values.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from emo.fuse.training.inputs import FeatureInput, as_inputs


#: Most padded values (rows × longest sequence × L × D, float32) per evaluation batch with
#: frame-level inputs: 2**26 values = 256 MiB.
EVAL_ELEMENTS = 1 << 26


def torch_inputs(blocks: dict[str, Any], inputs: Iterable[FeatureInput | Mapping[str, Any]], device: str) -> list:
    """Model inputs from feature blocks: one entry per input, in ``inputs`` order: a float32 tensor
    (N, L, D) on ``device``, or :class:`emo.fuse.model.frames.PackedFrames` for :class:`emo.fuse.training.data.Frames`.

    Raises:
        KeyError: a block named by ``inputs`` is missing.
    """
    import torch

    from emo.fuse.training.data import Frames
    from emo.fuse.model.frames import PackedFrames

    out = []
    for inp in as_inputs(inputs):
        b = blocks[inp.name]
        if isinstance(b, Frames):
            out.append(PackedFrames.from_frames(b.compact(), device))
        else:
            out.append(torch.as_tensor(np.ascontiguousarray(b, dtype=np.float32), device=device))
    return out


def seq_lengths(xs: list):
    """Per row, the summed frame count of the frame-level inputs (int64 tensor), or None without any."""
    from emo.fuse.model.frames import PackedFrames

    seqs = [x for x in xs if isinstance(x, PackedFrames)]
    if not seqs:
        return None
    return sum(x.lengths.cpu() for x in seqs)


def eval_batches(xs: list, batch: int = 4096, max_elements: int | None = None) -> list:
    """Row batches for evaluation: consecutive slices of ``batch`` rows for utterance-level inputs;
    with frame-level inputs, rows sorted by (summed) length and cut so each batch's padded frames
    hold at most ``max_elements`` (default :data:`EVAL_ELEMENTS`) values, as int64 index tensors."""
    import torch

    from emo.fuse.model.frames import PackedFrames

    n = len(xs[0])
    lens = seq_lengths(xs)
    if lens is None:
        return [slice(s, s + batch) for s in range(0, n, batch)]
    per_frame = max(int(x.data.shape[1] * x.data.shape[2]) for x in xs if isinstance(x, PackedFrames))
    max_frames = max(1, (EVAL_ELEMENTS if max_elements is None else max_elements) // max(per_frame, 1))
    order = torch.argsort(lens, stable=True)
    out, start = [], 0
    longest = lens[order].clamp(min=1)
    while start < n:
        stop = start + 1
        while stop < n and stop - start < batch and (stop - start + 1) * int(longest[stop]) <= max_frames:
            stop += 1
        out.append(order[start:stop])
        start = stop
    return out


def train_batches(n: int, bs: int, lens, gen) -> list:
    """Shuffled training minibatches (index tensors) for one epoch. Without sequences: a random
    permutation cut into batches of ``bs`` (a last batch of one sample is dropped). With sequence
    lengths ``lens``: rows are shuffled, sorted by length inside windows of 50 batches, cut into
    batches and the batch order is shuffled (length bucketing: little padding per batch)."""
    import torch

    perm = torch.randperm(n, generator=gen)
    stop = n - (1 if n % bs == 1 and n > 1 else 0)
    if lens is None:
        return [perm[s:s + bs] for s in range(0, stop, bs)]
    window = 50 * bs
    parts = []
    for w in range(0, n, window):
        chunk = perm[w:w + window]
        parts.append(chunk[torch.argsort(lens[chunk], stable=True)])
    perm = torch.cat(parts)
    batches = [perm[s:s + bs] for s in range(0, stop, bs)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def scatter(parts: list, batches: list):
    """Concatenate per-batch outputs (tensors, rows first) and put them back in row order
    (``batches`` as :func:`eval_batches` returns them)."""
    import torch

    out = torch.cat(parts)
    if all(isinstance(b, slice) for b in batches):
        return out
    idx = torch.cat([b.to(out.device) for b in batches])
    res = torch.empty_like(out)
    res[idx] = out
    return res
