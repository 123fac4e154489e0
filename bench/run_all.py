"""Run every benchmark in bench/ and write results/<name>.json (``make bench``, ``make bench-gpu``).

Convention (how to add a benchmark):

* A benchmark is a module ``bench/bench_<topic>.py`` with a function
  ``main(gpu: bool) -> dict``. It returns a JSON-serialisable dict of measured
  numbers (never hard-coded ones), each with its unit in the key or in a ``units``
  entry, and raises if it cannot run.
* ``gpu=False`` is the small CPU run (a few minutes at most on the 2-core CI box:
  report ratios and rates, not full-size numbers); ``gpu=True`` is the full-size run
  on a CUDA device.
* This runner imports each module by path, calls ``main``, adds ``command``,
  ``benchmark``, ``gpu``, ``machine``, ``seconds`` and ``generated_by`` (commit, dirty flag,
  package versions: ``proofs/_common.py``'s :func:`write_result`, which also makes paths
  relative to the project or the data root) fields, and writes
  ``results/bench_<topic>.json`` (CPU) or ``results/bench_<topic>_gpu.json`` (GPU).
  A failing benchmark is reported and makes the exit status 1; the others still run.
* Every module also runs alone: ``python bench/bench_<topic>.py [--gpu]``.

Usage::

    .venv/bin/python bench/run_all.py [--gpu] [--only extract] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import write_result  # noqa: E402  (one result writer for proofs and benchmarks)


def machine() -> dict:
    """CPU model, core count, memory, torch version and GPU name (if any)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = None
    return {
        "cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "memory_gb": round(mem_gb, 1) if mem_gb else None, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def discover(only: list[str] | None = None) -> list[Path]:
    """``bench/bench_*.py`` files (all, or those whose topic is in ``only``)."""
    files = sorted((ROOT / "bench").glob("bench_*.py"))
    if only:
        files = [f for f in files if f.stem.removeprefix("bench_") in only or f.stem in only]
    return files


def run_one(path: Path, gpu: bool, out_dir: Path, command: str) -> Path:
    """Import ``path``, call ``main(gpu)``, write its JSON; returns the JSON path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    if not hasattr(mod, "main"):
        raise AttributeError(f"{path} has no main(gpu: bool) -> dict function")
    t0 = time.time()
    res = mod.main(gpu=gpu)
    if not isinstance(res, dict):
        raise TypeError(f"{path}: main() returned {type(res).__name__}, not a dict")
    doc = {"benchmark": path.stem, "command": command, "gpu": gpu, "machine": machine(),
           "seconds": round(time.time() - t0, 1), **res}
    out = out_dir / f"{path.stem}{'_gpu' if gpu else ''}.json"
    return write_result(out, json.loads(json.dumps(doc, default=str)), quiet=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="full-size run on CUDA (results/*_gpu.json)")
    ap.add_argument("--only", action="append", help="benchmark topic(s) to run, e.g. extract")
    ap.add_argument("--shared", default=os.environ.get("EMO_SHARED_DATA", str(ROOT.parent / "shared" / "data")),
                    help="real data root (default ../shared/data or $EMO_SHARED_DATA)")
    ap.add_argument("--out", default=str(ROOT / "results"))
    a = ap.parse_args(argv)
    os.environ["EMO_SHARED_DATA"] = a.shared
    if a.gpu:
        import torch

        if not torch.cuda.is_available():
            print("error: --gpu given but CUDA is not available on this machine", file=sys.stderr)
            return 1
    command = " ".join(["python", "bench/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    status = 0
    for f in discover(a.only):
        print(f"== {f.stem} ({'gpu' if a.gpu else 'cpu'})", flush=True)
        try:
            out = run_one(f, a.gpu, Path(a.out), command)
            print(f"   -> {out}", flush=True)
        except Exception:
            traceback.print_exc()
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
