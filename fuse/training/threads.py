"""Thread pinning for emo's training: torch's intra-op threads and the BLAS / OpenMP pools that
numpy and scipy start (two OpenBLAS copies in the tested wheels), set together.

Why both: ``torch.set_num_threads`` does not reach numpy's or scipy's OpenBLAS, which start one
thread per core each. In a process that should use one core (a search worker beside another, or
``--threads 1``) those pools oversubscribe the machine. Measured on the 2-core reference machine,
``emo fuse search`` of EmoDB's default space (48 candidates, 2 workers, ``proofs/search_emodb.py``):
296.7 s wall and 578.4 s CPU with the pools at their default (2b6f788, not committed as a result);
87.1 s and 164.0 s with them pinned (e9ae9d6, ``results/search_emodb.json``), the same numbers.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_LOCK = threading.Lock()
#: depth: blocks open in the process; torch / limiter: what the outermost block restores; gen: bumped
#: at each restore, so that what a thread noted before it (:data:`_THREAD`) no longer counts; last:
#: the count set last in the process (torch's and the BLAS pools' settings are process-wide).
_STATE: dict[str, Any] = {"depth": 0, "torch": None, "limiter": None, "gen": 0, "last": None}
#: ``(n, gen)``: the thread count this thread last set (OpenMP's setting is per thread) and when. A
#: block inside another block, or inside a process pinned by :func:`pin_process`, at the same count
#: sets nothing again: ``threadpool_limits`` walks every loaded library, 3.4-3.8 ms per block
#: (measured, 2-core machine), paid once per search unit and per nested trainer call before.
_THREAD = threading.local()


def _load_pools() -> None:
    """Import the libraries whose BLAS pools should be pinned, so that ``threadpoolctl`` sees them
    (it only finds libraries already loaded; scipy's OpenBLAS loads with ``scipy.optimize``)."""
    import numpy  # noqa: F401
    import scipy.optimize  # noqa: F401
    import torch  # noqa: F401


def _set(n: int):
    """``n`` threads for torch and every BLAS / OpenMP pool, from this thread (noted in
    :data:`_THREAD`); returns the ``threadpool_limits`` object that undoes the pools."""
    import torch
    from threadpoolctl import threadpool_limits

    _load_pools()
    limiter = threadpool_limits(limits=n)
    torch.set_num_threads(n)
    _THREAD.state = (n, _STATE["gen"])
    _STATE["last"] = n
    return limiter


def _already(n: int) -> bool:
    """Whether this thread set ``n`` since the last restore and no thread set another count since."""
    return getattr(_THREAD, "state", None) == (n, _STATE["gen"]) and _STATE["last"] == n


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Within the block, ``n`` threads for torch (``torch.set_num_threads``) and for every BLAS /
    OpenMP pool ``threadpoolctl`` finds (``threadpool_limits(n)``); the settings from before the
    outermost block come back when it ends.

    The settings are per process (OpenMP's per thread). Blocks may nest and may run in several
    threads of one process at once (a dask worker runs units in threads): the first block in sets
    them, the last one out restores them; a thread already at ``n`` (an enclosing block, or
    :func:`pin_process`), with no other count set in the process since, sets nothing again, and a block that asks for another ``n`` meanwhile sets
    its own (the last asked holds until the outermost block ends). Measured caveat: OpenBLAS did not
    always follow a limit set from a thread other than the main one (after an earlier limit was
    restored in the main thread, the thread still read 2 threads); training and the search's process
    workers pin from their main thread.

    Args:
        n: threads (values below 1 mean 1).
    """
    import torch

    n = max(1, int(n))
    with _LOCK:
        if not _already(n):
            if _STATE["depth"] == 0:
                _STATE["torch"] = torch.get_num_threads()
                _STATE["limiter"] = _set(n)
            else:
                _set(n)  # restored with the outermost block's original limits
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0 and _STATE["limiter"] is not None:
                _STATE["limiter"].restore_original_limits()
                torch.set_num_threads(_STATE["torch"])
                _STATE["limiter"] = _STATE["torch"] = None
                _STATE["gen"] += 1


def pin_process(n: int) -> None:
    """``n`` threads for torch and the BLAS / OpenMP pools for the rest of the process (a worker's
    initializer, from its main thread)."""
    with _LOCK:
        _set(max(1, int(n)))


def thread_record() -> dict[str, Any]:
    """What a run records about its threads now: ``{"torch": int, "pools": [{"api", "library", "threads"}]}``
    (``threadpoolctl``'s view: ``internal_api`` such as openblas / openmp, the library file name)."""
    import torch
    from threadpoolctl import threadpool_info

    return {"torch": int(torch.get_num_threads()),
            "pools": [{"api": i.get("internal_api"), "library": str(i.get("filepath", "")).rsplit("/", 1)[-1],
                       "threads": int(i.get("num_threads", 0))} for i in threadpool_info()]}
