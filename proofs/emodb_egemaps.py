"""EmoDB, eGeMAPS, leave-one-speaker-out, 7 classes: the AFG head vs a scikit-learn reference.

Runs (argument lists, no shell):

1. ``emo extract --dataset emodb --root <shared>/emodb --encoder egemaps --out features`` when
   ``features/emodb/egemaps.h5`` is missing;
2. ``emo fuse train --dataset emodb --features egemaps --head afg --task discrete --folds speaker
   --normalize speaker --out runs/emodb_egemaps``;
3. a scikit-learn reference on the same 88 features: per-speaker ``StandardScaler`` +
   ``LogisticRegression``, leave-one-speaker-out.

Writes ``results/emodb_egemaps.json``: ``uar``, ``accuracy``, ``waf`` (pooled over all 535
out-of-fold predictions), their means over the 10 speaker folds, ``n``, ``folds``, ``command``,
``sklearn_uar`` (and its fold mean), and the confusion matrix.

Usage: ``.venv/bin/python proofs/emodb_egemaps.py --shared /work/shared/data``
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import ROOT, command_line, emo, parse, parser, write_result  # noqa: E402  (proofs/ is on sys.path when run as a script)


def run(args: list[str]) -> subprocess.CompletedProcess:
    print("$ emo " + " ".join(shlex.quote(a) for a in args), flush=True)
    return emo(*args)


def sklearn_reference(features: Path) -> dict:
    """Per-speaker StandardScaler + LogisticRegression, leave-one-speaker-out, on the same store."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.preprocessing import StandardScaler

    from emo.fuse.training.data import load_features, targets
    from emo.fuse.eval.metrics import classification_metrics

    fs = load_features(features, "emodb", ["egemaps"])
    y, _ = targets(fs.samples, "discrete", fs.classes)
    y = y["discrete"]
    x = fs.blocks["egemaps"][:, 0].astype(np.float64)
    spk = np.asarray(fs.speakers)
    xn = np.empty_like(x)
    for s in np.unique(spk):  # per-speaker standardisation (features only, as in the emo run)
        xn[spk == s] = StandardScaler().fit_transform(x[spk == s])
    pred = np.empty(len(y), dtype=np.int64)
    fold_uar = []
    for tr, te in LeaveOneGroupOut().split(xn, y, spk):
        clf = LogisticRegression(max_iter=5000).fit(xn[tr], y[tr])
        pred[te] = clf.predict(xn[te])
        fold_uar.append(classification_metrics(y[te], pred[te], len(fs.classes))["uar"])
    m = classification_metrics(y, pred, len(fs.classes))
    return {"uar": m["uar"], "accuracy": m["accuracy"], "waf": m["waf"], "uar_fold_mean": float(np.mean(fold_uar))}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features"), help="feature root (emo extract --out)")
    ap.add_argument("--run", default=str(ROOT / "runs" / "emodb_egemaps"), help="run directory to write")
    a = parse(ap)
    shared = Path(a.shared).resolve()
    if not (shared / "emodb").is_dir():
        sys.exit(f"EmoDB not found under {shared} (pass --shared or set EMO_SHARED_DATA)")
    features = Path(a.features)
    if not (features / "emodb" / "egemaps.h5").is_file() or not (features / "emodb" / "samples.csv").is_file():
        run(["extract", "--dataset", "emodb", "--root", str(shared / "emodb"), "--encoder", "egemaps", "--out", str(features)])
    train_args = ["fuse", "train", "--dataset", "emodb", "--features-dir", str(features), "--features", "egemaps", "--head", "afg",
                  "--task", "discrete", "--folds", "speaker", "--normalize", "speaker", "--out", str(a.run)]
    t0 = time.perf_counter()
    r = run(train_args)
    train_s = time.perf_counter() - t0
    print(r.stdout)
    metrics = json.loads((Path(a.run) / "metrics.json").read_text())
    config = json.loads((Path(a.run) / "config.json").read_text())
    ref = sklearn_reference(features)
    pooled = metrics["pooled"]
    result = {
        "uar": pooled["uar"], "accuracy": pooled["accuracy"], "waf": pooled["waf"],
        "uar_fold_mean": metrics["mean"]["uar"], "uar_fold_std": metrics["std"]["uar"],
        "accuracy_fold_mean": metrics["mean"]["accuracy"],
        "n": metrics["n"], "folds": metrics["n_folds"],
        "sklearn_uar": ref["uar"], "sklearn_uar_fold_mean": ref["uar_fold_mean"], "sklearn_accuracy": ref["accuracy"],
        "target_uar": 0.80, "meets_target": bool(pooled["uar"] >= 0.80),
        "classes": config["classes"], "confusion": pooled["confusion"],
        "uar_definition": "unweighted average recall over the 7 classes, pooled over all out-of-fold predictions "
                          "(10 leave-one-speaker-out folds); *_fold_mean: mean of the per-speaker-fold values",
        "train_seconds": round(train_s, 1), "training": config["training"],
        "fuse_command": "emo " + " ".join(shlex.quote(x) for x in train_args),
        "command": command_line(),
    }
    out = ROOT / "results" / "emodb_egemaps.json"
    out.parent.mkdir(exist_ok=True)
    write_result(out, result, quiet=True)
    print(json.dumps({k: v for k, v in result.items() if k not in ("confusion", "training")}, indent=2))


if __name__ == "__main__":
    main()
