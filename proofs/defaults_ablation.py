"""Do emo's training defaults that differ from the papers help? EmoDB, eGeMAPS, leave-one-speaker-out.

emo's defaults (``emo fuse train``): label smoothing 0.1, dropout 0.5, lr 1e-3. The papers emo
follows do not use label smoothing and the MER 2024-SEMI paper (Zhao et al., MRAC '24) trains
with lr 1e-4. This script runs ``emo fuse train --head afg --folds speaker --normalize speaker``
(5 seeds per fold, batched, ``--recipe adamw``: these are the minibatch recipe's defaults; on
EmoDB the auto recipe is full-batch L-BFGS, which uses no dropout or lr and would make the
comparison empty) on the real EmoDB eGeMAPS features with the defaults and with each
changed setting (one at a time), three times each (base seeds 0, 1000, 2000), and writes pooled UAR/WAF of each to
``results/defaults_ablation.json``. A default stays only if its mean UAR is at least the
paper value's here.

Usage: ``.venv/bin/python proofs/defaults_ablation.py --shared /work/shared/data`` (extracts
eGeMAPS into ``features/`` when missing).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402
EMO = [str(Path(sys.executable).with_name("emo"))]

SETTINGS = {
    "defaults (ls 0.1, dropout 0.5, lr 1e-3)": [],
    "label smoothing 0 (papers)": ["--label-smoothing", "0"],
    "lr 1e-4 (MER 2024-SEMI paper)": ["--lr", "1e-4"],
    "dropout 0.2": ["--dropout", "0.2"],
}
#: Base seeds of the repeated runs (each run trains 5 seeds per fold from its base): disjoint seed sets.
SEEDS = (0, 1000, 2000)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "defaults_ablation"))
    a = parse(ap)
    feats = Path(a.features)
    if not (feats / "emodb" / "egemaps.h5").is_file():
        subprocess.run(EMO + ["extract", "--dataset", "emodb", "--root", str(Path(a.shared) / "emodb"), "--encoder", "egemaps",
                              "--out", str(feats), "--no-progress"], check=True)
    rows = {}
    for name, extra in SETTINGS.items():
        reps = []
        for seed in SEEDS:
            out = Path(a.runs) / f"{name.split(' (')[0].replace(' ', '_')}_seed{seed}"
            cmd = EMO + ["fuse", "train", "--dataset", "emodb", "--features-dir", str(feats), "--features", "egemaps", "--head", "afg",
                         "--folds", "speaker", "--normalize", "speaker", "--recipe", "adamw", "--seed", str(seed), *extra, "--out", str(out),
                         "--restart"]
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"{shlex.join(cmd)} failed:\n{p.stderr[-2000:]}")
            m = json.loads((out / "metrics.json").read_text())
            c = json.loads((out / "config.json").read_text())["training"]
            if c["recipe"] != "adamw":  # these settings belong to the minibatch recipe: never ablate a recipe that ignores them
                sys.exit(f"{out}: trained with recipe {c['recipe']}, not adamw")
            reps.append({"seed": seed, "uar": round(m["pooled"]["uar"], 4), "waf": round(m["pooled"]["waf"], 4),
                         "accuracy": round(m["pooled"]["accuracy"], 4), "seconds": round(time.perf_counter() - t, 1),
                         "label_smoothing": c["label_smoothing"], "dropout": c["dropout"], "lr": c["lr"], "recipe": c["recipe"],
                         "command": "emo " + shlex.join(cmd[1:]).replace(str(ROOT) + "/", "")})
            print(name, reps[-1], flush=True)
        u = np.array([r["uar"] for r in reps])
        w = np.array([r["waf"] for r in reps])
        rows[name] = {"uar_mean": round(float(u.mean()), 4), "uar_std": round(float(u.std(ddof=1)), 4),
                      "waf_mean": round(float(w.mean()), 4), "waf_std": round(float(w.std(ddof=1)), 4), "repeats": reps}
    base_name = next(iter(SETTINGS))
    base = rows[base_name]
    diffs = {k: round(base["uar_mean"] - v["uar_mean"], 4) for k, v in rows.items() if k != base_name}
    res = {"dataset": "EmoDB (535 utterances, 10 speakers, 7 classes), eGeMAPS, leave-one-speaker-out, AFG, 5 seeds per fold",
           "recipe": "adamw (--recipe adamw: minibatch AdamW with early stopping, whose defaults these are; EmoDB's auto "
                     "recipe is the full-batch L-BFGS one, which uses label smoothing but not dropout or lr)",
           "metric": f"pooled UAR over all out-of-fold predictions, mean and std over {len(SEEDS)} runs (--seed {', '.join(map(str, SEEDS))})",
           "settings": rows, "default_minus_alternative_uar": diffs,
           "decision": {k: ("keep emo's default" if d >= 0 else "the alternative is better here") for k, d in diffs.items()},
           "command": command_line(),
           "load_average_1min": round(os.getloadavg()[0], 2)}
    out = ROOT / "results" / "defaults_ablation.json"
    write_result(out, res, quiet=True)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
