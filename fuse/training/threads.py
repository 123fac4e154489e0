"""Thread pinning for emo's training: torch's intra-op threads and the BLAS / OpenMP pools that
numpy and scipy start (two OpenBLAS copies in the tested wheels), set together.

Why both: ``torch.set_num_threads`` does not reach numpy's or scipy's OpenBLAS, which start one
thread per core each. In a process that should use one core (a search worker beside another, or
``--threads 1``) those pools oversubscribe the machine. Measured on the 2-core reference machine,
``emo fuse search`` of EmoDB's default space (48 candidates, 2 workers): 296.7 s wall and 578.4 s
CPU with the pools at their default (``proofs/search_emodb.py`` at 2b6f788); see ``results/search_emodb.json``
for the run with the pools pinned.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Within the block, ``n`` threads for torch (``torch.set_num_threads``) and for every BLAS /
    OpenMP pool ``threadpoolctl`` finds (``threadpool_limits(n)``); both are restored afterwards.

    Args:
        n: threads (values below 1 mean 1).
    """
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(prev)


def pin_process(n: int) -> None:
    """:func:`pinned_threads` for the rest of the process (a worker's initializer): the pools keep
    ``n`` threads until the process ends."""
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def thread_record() -> dict[str, Any]:
    """What a run records about its threads now: ``{"torch": int, "pools": [{"api", "library", "threads"}]}``
    (``threadpoolctl``'s view: ``internal_api`` such as openblas / openmp, the library file name)."""
    import torch
    from threadpoolctl import threadpool_info

    return {"torch": int(torch.get_num_threads()),
            "pools": [{"api": i.get("internal_api"), "library": str(i.get("filepath", "")).rsplit("/", 1)[-1],
                       "threads": int(i.get("num_threads", 0))} for i in threadpool_info()]}
