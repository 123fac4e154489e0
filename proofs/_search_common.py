"""Shared bits of proofs/search_*.py (the commit, dirty flag and versions are each result file's
``generated_by`` block, written by ``_common.write_result``): the
search command, and the result record (relative paths only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rel(p: Path | str) -> str:
    """``p`` relative to the repository root when inside it (as given, e.g. a symlinked ``features/``
    of a worktree, or after resolving links); else its name."""
    for q in (Path(p).absolute(), Path(p).resolve()):
        try:
            return str(q.relative_to(ROOT))
        except ValueError:
            continue
    return Path(p).name


def run_search(args: list[str]) -> tuple[dict, dict]:
    """Run ``python -m emo.cli fuse search ARGS``; returns (search.json, timing: wall seconds, CPU
    seconds of the command and its worker processes, load average before/after, cached units found
    at the start: a resumed search trains only the others). Exits with the output on failure."""
    import resource

    out = Path(args[args.index("--out") + 1])
    cached = len(list((out / "cache").glob("*.npz"))) if (out / "cache").is_dir() else 0
    la0 = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "emo.cli", "fuse", "search", *args], capture_output=True, text=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"emo fuse search failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}")
    print(r.stdout, file=sys.stderr)
    timing = {"wall_seconds": round(dt, 1), "cpu_seconds": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 1),
              "load_average_1min_before_after": [round(la0, 2), round(os.getloadavg()[0], 2)],
              "cached_units_at_start": cached}
    return json.loads((out / "search.json").read_text()), timing


def summary(s: dict) -> dict:
    """The numbers a result file keeps from a search.json."""
    n = s["nested"]
    return {"metric": s["metric"], "protocol": s["protocol"], "normalize": s["normalize"],
            "nested": {"estimate": round(n["estimate"], 4), "low": None if n.get("low") is None else round(n["low"], 4),
                       "high": None if n.get("high") is None else round(n["high"], 4), "n_boot": n.get("n_boot"),
                       "unit": "speaker" if s["protocol"] == "speaker" else n.get("unit"), "how": n["how"]},
            "optimistic_same_data": {"estimate": round(s["optimistic_same_data"]["estimate"], 4),
                                     "candidate": s["optimistic_same_data"]["candidate"], "how": s["optimistic_same_data"]["how"]},
            "top10_of_50": {"estimate": round(s["top10_of_50"]["estimate"], 4), "how": s["top10_of_50"]["how"]},
            "gap_optimistic_minus_nested": s["gap_optimistic_minus_nested"],
            "chosen_counts": s["chosen_counts"], "grid_edges": s.get("grid_edges"),
            "per_fold": [{"fold": p["fold"], "chosen": p["chosen_labels"], "weights": [round(w, 3) for w in p["weights"]],
                          "inner": round(p["inner_score"], 4), "outer": round(p["outer_score"], 4)} for p in s["per_fold"]],
            "final": {"labels": s["final"]["labels"], "weights": s["final"]["weights"], "how": s["final"]["how"]},
            "candidates": s["space"], "halving": s["halving"], "ensemble": s["ensemble"],
            "leaderboard_top10": [{k: r[k] for k in ("candidate", "inner_score", "outer_score_same_data", "seconds")}
                                  for r in s["leaderboard"][:10]],
            "search_seconds_internal": s["seconds"], "workers": s["workers"], "executor": s["executor"]}


def write(name: str, data: dict) -> Path:
    p = ROOT / "results" / f"{name}.json"
    from _common import write_result  # the proofs' one result writer (generated_by, portable paths, atomic)

    write_result(Path(p), data, quiet=True)
    print(json.dumps(data, indent=1)[:2500])
    return p
