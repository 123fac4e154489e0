"""Cold start (issue 24): what a command costs before and beside its work.

* **Weight-free extraction** (`emo extract --encoder egemaps` on 3 EmoDB clips of
  ``$EMO_SHARED_DATA/emodb``): peak resident memory (target <= 300 MB; the process imports no
  torch) and wall time.
* **A refused input** (the same command on a root that does not exist): exit code 1, its peak
  resident memory and wall time (it should cost nothing).
* **`emo fuse train`** on a small synthetic eGeMAPS-shaped store (60 utterances, 4 speakers, 3
  classes, leave-one-speaker-out, default recipe): its peak resident memory and the timings it
  reports in ``metrics.json`` (``startup_seconds``, ``seconds_to_first_fold``, ``total_seconds``).

Each command runs in its own process, measured by a wrapper process whose only child it is
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), one thread. Numbers are measured, never
hard-coded; on a shared machine the wall times include its load (recorded).

    python bench/bench_coldstart.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "proofs"), str(ROOT / "bench")]
from _common import child_peak_rss  # noqa: E402  (one peak-RSS wrapper for proofs and benchmarks)
from bench_fuse import thread_env  # noqa: E402

TARGET_EXTRACT_RSS_MB = 300.0


def measured(cmd: list[str]) -> dict:
    """:func:`child_peak_rss` of ``cmd`` with one BLAS/OpenMP thread: exit code, wall seconds, peak RSS (MB)."""
    r = child_peak_rss(cmd, env=thread_env(1))
    return {"exit_code": r["exit_code"], "wall_seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            **({"stderr_tail": r["stderr_tail"][-300:]} if "stderr_tail" in r else {})}


def _toy_store(root: Path) -> None:
    """Dataset ``cold``: 60 utterances x 88-d (eGeMAPS-shaped), 4 speakers, 3 classes."""
    import types

    import numpy as np

    from bench_fuse import write_store
    from emo.extract.datasets.base import Sample, write_manifest

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (rng.normal(size=(60, 88)) + rng.normal(size=(3, 88))[y]).astype(np.float32)
    names = [f"c{i:03d}" for i in range(60)]
    classes = ["neutral", "angry", "happy"]
    write_manifest(root / "cold", types.SimpleNamespace(name="cold", root=root, classes=classes),
                   [Sample(name=n, media=None, discrete=classes[c], speaker=f"s{i % 4}") for i, (n, c) in enumerate(zip(names, y))])
    write_store(root / "cold" / "egemaps.h5", "egemaps", names, x[:, None], ["functionals"], "audio", "cold")


def main(gpu: bool = False) -> dict:
    if gpu:
        raise RuntimeError("bench_coldstart measures CPU processes only (no --gpu run)")
    emo = [sys.executable, "-m", "emo.cli"]
    shared = Path(os.environ.get("EMO_SHARED_DATA", ROOT.parent / "shared" / "data"))
    res: dict = {"units": {"peak_rss_mb": "MiB (ru_maxrss of the command's process)", "seconds": "wall seconds"},
                 "load_average_1min_before": round(os.getloadavg()[0], 2), "threads": 1}
    targets = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        labels = shared / "emodb" / "labels.csv"
        if labels.is_file():
            root = tmp / "emodb"
            (root / "wav").mkdir(parents=True)
            lines = labels.read_text(encoding="utf-8").splitlines()
            keep = [ln for ln in lines[1:] if ln.startswith("wav/03a01")][:3]
            (root / "labels.csv").write_text("\n".join([lines[0], *keep]) + "\n", encoding="utf-8")
            for ln in keep:
                rel = ln.split(",")[0]
                (root / rel).symlink_to(shared / "emodb" / rel)
            ex = measured([*emo, "extract", "--dataset", "emodb", "--root", str(root), "--encoder", "egemaps",
                           "--out", str(tmp / "f"), "--no-progress"])
            if ex["exit_code"] != 0:
                raise RuntimeError(f"emo extract failed: {ex}")
            res["extract_egemaps_3_clips"] = {"command": "emo extract --dataset emodb --root EMODB_3_CLIPS --encoder egemaps --out OUT --no-progress", **ex}
            targets["extract_weight_free_peak_rss_le_300mb"] = {"target": TARGET_EXTRACT_RSS_MB, "measured": ex["peak_rss_mb"],
                                                                 "pass": ex["peak_rss_mb"] <= TARGET_EXTRACT_RSS_MB}
        else:
            res["extract_egemaps_3_clips"] = {"skipped": "EmoDB not found (set EMO_SHARED_DATA)"}
        bad = measured([*emo, "extract", "--dataset", "emodb", "--root", str(tmp / "missing"), "--encoder", "egemaps",
                        "--out", str(tmp / "f2"), "--no-progress"])
        if bad["exit_code"] != 1:  # emo.exitcodes.ExitCode.ERROR: unreadable input
            raise RuntimeError(f"a missing dataset root should exit 1 (ERROR): {bad}")
        res["extract_refused_input"] = {"command": "emo extract --dataset emodb --root MISSING --encoder egemaps --out OUT --no-progress", **bad}
        _toy_store(tmp)
        out = tmp / "run"
        tr = measured([*emo, "fuse", "train", "--dataset", "cold", "--features-dir", str(tmp), "--features", "egemaps",
                       "--folds", "speaker", "--threads", "1", "--out", str(out)])
        if tr["exit_code"] != 0:
            raise RuntimeError(f"emo fuse train failed: {tr}")
        timing = json.loads((out / "metrics.json").read_text())["timing"]
        res["fuse_train_60_utterances"] = {"command": "emo fuse train --dataset cold --features egemaps --folds speaker --threads 1",
                                           **tr, "metrics_timing": timing}
    res["targets"] = targets
    res["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    res["pass"] = bool(targets) and all(t["pass"] for t in targets.values())
    return res


if __name__ == "__main__":
    print(json.dumps(main("--gpu" in sys.argv), indent=1))
