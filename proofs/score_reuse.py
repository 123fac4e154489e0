"""`emo score --features-dir`: scoring the EmoDB recordings reuses the stores of `emo extract` instead of
extracting again, with the same predictions.

Runs (argument lists, no shell):

1. ``emo extract --dataset emodb --root <shared>/emodb --encoder egemaps --encoder mfcc --out <work>/features``;
2. ``emo fuse train --dataset emodb --features egemaps --features mfcc --head afg --folds speaker ...``;
3. ``emo score <shared>/emodb/wav --run RUN --out fresh.csv`` (extracts every file again);
4. ``emo score <shared>/emodb/wav --run RUN --out reuse.csv --features-dir <work>/features/emodb``.

Step 4 works because `emo score` names files by their stem, the datasets' naming rule (``03a01Fa``), so
the plain folder's names match the store's. Writes ``results/score_reuse.json``: wall time of steps 3
and 4, the files and features reused, the largest probability difference between the two CSVs, and the
machine load (``os.getloadavg``) before and after.

Usage: ``flock /work/coord/heavy.lock .venv/bin/python proofs/score_reuse.py --shared /work/shared/data``
"""

from __future__ import annotations

import csv
import os
import shutil
import time

from _common import command_line, emo, parse_args, write_result  # noqa: E402  (proofs/ is on sys.path)


def read(path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def main() -> None:
    a = parse_args(__doc__)
    work = a.work / "score_reuse"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = os.getloadavg()
    feats, run = work / "features", work / "run"
    t = time.perf_counter()
    emo("extract", "--dataset", "emodb", "--root", str(a.shared / "emodb"), "--encoder", "egemaps", "--encoder", "mfcc",
        "--out", str(feats), "--no-progress", "--device", "cpu")
    t_extract = time.perf_counter() - t
    emo("fuse", "train", "--dataset", "emodb", "--features-dir", str(feats), "--features", "egemaps", "--features", "mfcc",
        "--head", "afg", "--task", "discrete", "--folds", "speaker", "--normalize", "global", "--seeds", "1",
        "--epochs", "40", "--out", str(run))
    wav = a.shared / "emodb" / "wav"
    t = time.perf_counter()
    r1 = emo("score", str(wav), "--run", str(run), "--out", str(work / "fresh.csv"), "--no-progress", "--device", "cpu")
    t_fresh = time.perf_counter() - t
    t = time.perf_counter()
    r2 = emo("score", str(wav), "--run", str(run), "--out", str(work / "reuse.csv"), "--no-progress", "--device", "cpu",
             "--features-dir", str(feats / "emodb"))
    t_reuse = time.perf_counter() - t
    fresh, reuse = read(work / "fresh.csv"), read(work / "reuse.csv")
    prob_cols = [c for c in next(iter(fresh.values())) if c.startswith("prob_")]
    diff = max(abs(float(fresh[n][c]) - float(reuse[n][c])) for n in fresh for c in prob_cols)
    same_pred = sum(fresh[n]["pred"] == reuse[n]["pred"] for n in fresh)
    write_result("score_reuse", {
        "what": "emo score on the 535 EmoDB wav files with an egemaps+mfcc AFG run: extracting again vs "
                "--features-dir reusing the emo extract stores",
        "files": len(fresh), "names_match_store": sorted(fresh) == sorted(reuse),
        "seconds_extract_once": round(t_extract, 1),
        "seconds_score_fresh": round(t_fresh, 1), "seconds_score_reuse": round(t_reuse, 1),
        "speedup": round(t_fresh / t_reuse, 2),
        "score_reuse_stdout": r2.stdout.strip(), "score_fresh_stdout": r1.stdout.strip(),
        "max_abs_prob_difference": diff, "same_predicted_class": same_pred,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "command": command_line(),
    })


if __name__ == "__main__":
    main()
