"""Proof: the NRC-VAD bridge wired through training: EmoDB, eGeMAPS, leave-one-speaker-out.

Runs (argument lists, no shell):

1. ``emo extract --dataset emodb --root <shared>/emodb --encoder egemaps --out <work>/features``
   when that store is missing;
2. ``emo fuse train --dataset emodb --features egemaps --head afg --task discrete+vad
   --vad-targets lexicon --lexicon <shared>/lexicon --folds speaker --normalize speaker``:
   one model with a discrete head (7 EmoDB classes) and a VAD head trained on the NRC-VAD
   points of the labels (neutral = origin; Jia et al. 2024, Sec. 3);
3. reads the run's out-of-fold predictions and decodes each predicted VAD point with
   :class:`emo.lexicon.bridge.VADBridge` (k-means over emo's 185 affect terms, centres started
   at the 7 classes' points; words within L2 0.25).

Writes ``results/vad_bridge_emodb.json``: the VAD metrics (L2, MSE, MAE, PCC, CCC; pooled over
the 535 out-of-fold predictions), the UAR/accuracy of the k-means labels against the true
labels next to the discrete head's UAR/accuracy in the same run, and example rows.

    flock /work/coord/heavy.lock nice -n 5 .venv/bin/python proofs/vad_bridge_emodb.py --shared /work/shared/data
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, emo, parse_args, write_result


def uar(y: list[str], p: list[str]) -> float:
    present = sorted(set(y))
    return float(np.mean([np.mean([b == c for a, b in zip(y, p) if a == c]) for c in present]))


def main() -> None:
    args = parse_args(__doc__)
    shared = args.shared
    features = args.work / "features"
    run_dir = args.work / "runs" / "vad_bridge_emodb"
    lexicon = shared / "lexicon" / "NRC-VAD-Lexicon.txt"
    if not (features / "emodb" / "egemaps.h5").is_file():
        emo("extract", "--dataset", "emodb", "--root", str(shared / "emodb"), "--encoder", "egemaps", "--out", str(features))
    train = ["fuse", "train", "--dataset", "emodb", "--features-dir", str(features), "--features", "egemaps",
             "--head", "afg", "--task", "discrete+vad", "--vad-targets", "lexicon", "--lexicon", str(lexicon),
             "--folds", "speaker", "--normalize", "speaker", "--out", str(run_dir)]
    t0 = time.perf_counter()
    emo(*train)
    train_s = time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    with open(run_dir / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = config["classes"]

    from emo.lexicon.bridge import VADBridge

    bridge = VADBridge(classes, vocabulary="affect", radius=0.25, lexicon=lexicon)
    vad = np.array([[float(r[d]) for d in ("valence", "arousal", "dominance")] for r in rows])
    dec = bridge.decode(vad)
    y = [r["true"] for r in rows]
    head = [r["pred"] for r in rows]
    km = dec.labels
    n_words = [len(w) for w in dec.words]
    pooled = metrics["pooled"]
    examples = []
    for i in np.random.default_rng(0).choice(len(rows), size=8, replace=False):
        examples.append({"name": rows[i]["name"], "true": y[i], "discrete_head": head[i], "vad": np.round(vad[i], 3).tolist(),
                         "kmeans_label": km[i], "words": [w for w, _ in dec.words[i]][:8]})
    result = {
        "command": command_line(),
        "fuse_command": "emo " + " ".join(shlex.quote(x) for x in train),
        "n": len(rows), "folds": metrics.get("n_folds"), "classes": classes,
        "vad_targets": "NRC-VAD of each label's canonical word, 2x - 1 ([-1, 1]); neutral = (0, 0, 0)",
        "vad_metrics_pooled": {k: pooled[f"vad_{k}"] for k in ("l2", "mse", "mae", "pcc", "ccc") if f"vad_{k}" in pooled},
        "vad_metrics_per_dimension": {k[len("vad_"):]: v for k, v in pooled.items()
                                      if k.startswith("vad_") and k.split("_")[1] in ("valence", "arousal", "dominance")},
        "discrete_head": {"uar": uar(y, head), "accuracy": float(np.mean([a == b for a, b in zip(y, head)])),
                          "uar_metrics_json": pooled.get("uar")},
        "kmeans_labels_from_predicted_vad": {"uar": uar(y, km), "accuracy": float(np.mean([a == b for a, b in zip(y, km)]))},
        "kmeans_labels_from_true_label_points": {
            "note": "the bridge applied to the targets themselves (upper bound of the decoding step)",
            "uar": uar(y, bridge.decode(np.array([[float(r[f'{d}_true']) for d in ('valence', 'arousal', 'dominance')]
                                                   for r in rows])).labels),
        },
        "open_vocabulary": {"radius": 0.25, "vocabulary": bridge.vocabulary.description,
                            "mean_words": float(np.mean(n_words)), "no_word": int(sum(n == 0 for n in n_words)),
                            "points_outside_range": dec.outside},
        "bridge": bridge.describe(),
        "examples": examples,
        "train_seconds": round(train_s, 1),
        "machine_load": "load average {:.2f} {:.2f} {:.2f} (1, 5, 15 min; 2 cores)".format(*os.getloadavg()),
    }
    write_result("vad_bridge_emodb", result)


if __name__ == "__main__":
    main()
