"""Proof: frame-level candidates in `emo fuse search` on EmoDB (eGeMAPS LLD frames through a BiLSTM),
nested leave-one-speaker-out, against the same space without them, paired by speaker.

1. The weight-free stores of proofs/search_emodb.py (extracted there; resumed when present):
   eGeMAPSv02 functionals, MFCC statistics, ComParE 2016 functionals, and the eGeMAPS low-level
   descriptors with their (T, 25) frame sequences (`emo extract --frames`).
2. Search A (`frames.yaml` below): egemaps, mfcc and compare as utterance vectors (L-BFGS linear
   probe and the batched MLP) and `egemaps_lld` as frames (`frames: true`: the MLP head on a
   bidirectional LSTM over the frames), weight decay 0.01 and 1, hidden 64.
3. Search B: the same space without the frame store (the same candidates otherwise).
4. Both nested (outer: leave-one-speaker-out; inner: 3 speaker groups, successive halving on 1 of
   them), an ensemble of up to 3 members tuned on the inner predictions. The paired speaker
   bootstrap of UAR A - B from the two `nested_predictions.csv` files says whether searching frames
   changed the nested estimate.
5. When A's final configuration holds a frame-level member, `emo score` applies `OUT/run` to the
   EmoDB clips, reading the frames from the store (in-sample agreement, labelled so).

Hidden 64 and 3 inner speaker groups are our choices for a 2-core machine: a BiLSTM fold with
hidden 256 took about 2 minutes on one thread, with hidden 64 about 26 s (measured before this run).
The space was fixed before either search ran; neither looks at another result.

    python proofs/search_emodb_frames.py --shared /work/shared/data
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse, parser  # noqa: E402
from _search_common import ROOT, rel, run_search, summary, write  # noqa: E402

SPACE_A = """\
# EmoDB: utterance-level weight-free stores beside eGeMAPS LLD frames (searched as sequences)
stores:
  - name: egemaps
  - name: mfcc
  - name: compare
  - name: egemaps_lld
    frames: true
heads: [linear, mlp]
frame_encoder: [lstm]
weight_decay: [0.01, 1.0]
hidden: [64]
class_weights: [false]
"""
#: search B: the same space without the frame-level store
SPACE_B = SPACE_A.replace("  - name: egemaps_lld\n    frames: true\n", "").replace(
    "beside eGeMAPS LLD frames (searched as sequences)", "only (search B: no frames)")


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features" / "search"), help="feature root (emo extract --out)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "search_emodb_frames"), help="output directory (A and B below it)")
    ap.add_argument("--workers", type=int, default=2)
    args = parse(ap)
    shared, feats, out = Path(args.shared), Path(args.features), Path(args.out)
    from search_emodb import STORES, extract_stores

    extract_s = extract_stores(shared, feats, STORES)
    out.mkdir(parents=True, exist_ok=True)
    results, timings = {}, {}
    for tag, text in (("A_frames", SPACE_A), ("B_no_frames", SPACE_B)):
        space = out / f"{tag}.yaml"
        space.write_text(text)
        search_args = ["--config", str(space), "--dataset", "emodb", "--features-dir", str(feats), "--folds", "speaker",
                       "--inner-folds", "3", "--metric", "uar", "--ensemble", "3", "--workers", str(args.workers),
                       "--out", str(out / tag)]
        results[tag], timings[tag] = run_search(search_args)
        timings[tag]["command"] = "emo fuse search " + " ".join(rel(a) if a.startswith("/") else a for a in search_args)

    from emo.fuse.eval.compare import compare

    # emo fuse compare on the two search directories: the paired speaker bootstrap of their nested predictions
    diff = compare(out / "A_frames", out / "B_no_frames", "uar", group="auto", n_boot=2000, seed=0)
    sa = results["A_frames"]
    frame_rows = [r for r in sa["leaderboard"] if "frames(" in r["candidate"]]
    chosen_frames = sum(n for k, n in sa["chosen_counts"].items() if "frames(" in k)
    score_check = {"ran": False, "why": "A's final configuration has no frame-level member"}
    if any("frames(" in lab for lab in sa["final"]["labels"]):
        scores = out / "A_score_check.csv"
        r = subprocess.run([sys.executable, "-m", "emo.cli", "score", "--dataset", "emodb", "--root", str(shared / "emodb"),
                            "--run", str(out / "A_frames" / "run"), "--features-dir", str(feats), "--out", str(scores),
                            "--no-progress"], capture_output=True, text=True, cwd=ROOT)
        score_check = {"ran": True, "exit_code": r.returncode}
        if r.returncode == 0:
            labels = {Path(row["file"]).stem: row["emotion"] for row in csv.DictReader(open(shared / "emodb" / "labels.csv"))}
            rows = [row for row in csv.DictReader(open(scores)) if row["status"] == "ok"]
            hit = [row["pred"] == labels[row["name"]] for row in rows if row["name"] in labels]
            score_check.update(n=len(hit), in_sample_accuracy=round(sum(hit) / max(1, len(hit)), 4),
                               note="OUT/run is refitted on all 535 clips: in-sample agreement, not an estimate")
        else:
            score_check["stderr"] = r.stderr[-1500:]
    res = {
        "command": "python proofs/search_emodb_frames.py --shared /work/shared/data",
        "cpu_count": os.cpu_count(),
        "dataset": "EmoDB (Burkhardt et al., Interspeech 2005): 535 utterances, 10 speakers, 7 emotions",
        "protocol": "outer leave-one-speaker-out (10 folds); inner 3 speaker groups of the 9 training speakers; "
                    "successive halving eta 3 (rung 0 on 1 inner group); speakers independent at both levels",
        "extract_seconds": round(extract_s, 1),
        "spaces": {"A_frames": SPACE_A, "B_no_frames": SPACE_B},
        "searches": {tag: {"timing": timings[tag], **summary(results[tag])} for tag in results},
        "frame_candidates_A": [{k: r[k] for k in ("candidate", "inner_score", "outer_score_same_data", "seconds",
                                                  "full_inner_folds_pct", "chosen_in_folds")} for r in frame_rows],
        "outer_folds_choosing_a_frame_member_A": chosen_frames,
        "paired_difference_A_minus_B": {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in diff.items()
                                           if k not in ("a", "b")},
                                        "how": "emo fuse compare A_frames B_no_frames (nested predictions; auto: the held-out speaker)"},
        "score_check": score_check,
        "output_dir": rel(out),
    }
    write("search_emodb_frames", res)
    if score_check.get("exit_code"):
        sys.exit(f"emo score of A's run failed (exit {score_check['exit_code']}); recorded in the result file")


if __name__ == "__main__":
    main()
