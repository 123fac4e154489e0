"""Batching by size: pack variable-length inputs into batches whose padded cost fits a budget.

Used by the engine (every encoder's batches) and by the speech encoders (chunks of long clips).
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def pack(items: Sequence[T], cost: Callable[[T], float], budget: float) -> list[list[int]]:
    """Bucket by size: sort items by cost and pack consecutive ones while ``max_cost * count <= budget``.

    ``cost`` is in the budget's unit (audio seconds, frames, tokens); a batch's padded cost is
    its largest item times its size, so the budget bounds the padded tensor a forward pass
    sees (memory), not the item count. Sorting first keeps padding small (see
    :func:`padding_fraction`); a budget of 0 gives one item per batch.

    Returns:
        Lists of indices into ``items``, in increasing cost. An item larger than the budget
        forms a batch of its own.
    """
    costs = [cost(it) for it in items]  # once per item (a cost function may be non-trivial)
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(range(len(items)), key=costs.__getitem__):
        if cur and costs[i] * (len(cur) + 1) > budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def padding_fraction(costs: list[float] | np.ndarray, batches: list[list[int]]) -> float:
    """Share of a batched run's padded cost that is padding: ``1 - sum(cost) / sum_b(max_b * n_b)``.

    Args:
        costs: per-item cost (e.g. audio seconds), indexed like the batches' indices.
        batches: index lists, e.g. from :func:`pack`.

    Returns:
        A float in [0, 1): 0 means no padding at all.
    """
    c = np.asarray(costs, dtype=np.float64)
    padded = sum(float(c[b].max()) * len(b) for b in batches if len(b))
    return 0.0 if padded <= 0 else 1.0 - float(sum(c[b].sum() for b in batches if len(b))) / padded
