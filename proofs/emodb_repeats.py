"""Proof: numbers a reviewer can trust on EmoDB (issue 18): seed spread, bootstrap intervals, nested ensemble.

EmoDB (535 utterances, 10 speakers, 7 emotions), eGeMAPS and MFCC statistics extracted by
``emo extract``, leave-one-speaker-out, speaker normalisation, all from the CLI:

1. ``emo fuse train --repeats 5`` for the AFG and the attention head on eGeMAPS and the AFG head on
   MFCC: five reseeded cross-validations each, pooled out-of-fold UAR as mean ± std over the
   repeats, and the 95 % bootstrap interval over the 10 speakers of the repeat-averaged UAR.
2. ``emo fuse ensemble`` of the eGeMAPS and MFCC AFG runs: posterior-fusion weights tuned nested (each held-out
   speaker fused with weights tuned on the other nine), plus the optimistic same-data score.
3. ``emo fuse compare``: the paired speaker-bootstrap difference of the nested ensemble and the best
   single run, with its interval.

Writes results/emodb_repeats.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _common import command_line, emo, parse_args, write_result


def main() -> None:
    a = parse_args(__doc__)
    feats, runs = a.work / "emodb_repeats" / "features", a.work / "emodb_repeats" / "runs"
    t0 = time.perf_counter()
    if not all((feats / "emodb" / f"{e}.h5").is_file() for e in ("egemaps", "mfcc")):
        emo("extract", "--dataset", "emodb", "--root", str(a.shared / "emodb"), "--encoder", "egemaps", "--encoder", "mfcc",
            "--out", str(feats), "--no-progress")
    extract_s = time.perf_counter() - t0
    common = ["--dataset", "emodb", "--features-dir", str(feats), "--folds", "speaker", "--normalize", "speaker", "--repeats", "5"]
    plan = {"egemaps_afg": ["--features", "egemaps", "--head", "afg"],
            "egemaps_attention": ["--features", "egemaps", "--head", "attention"],
            "mfcc_afg": ["--features", "mfcc", "--head", "afg"]}
    out: dict = {"command": command_line(), "dataset": "EmoDB (Burkhardt et al., Interspeech 2005): 535 utterances, 10 speakers, 7 emotions",
                 "protocol": "leave-one-speaker-out, speaker normalisation, trainer defaults; 5 repeats = seeds 0, 1000, ..., 4000",
                 "extract_seconds": round(extract_s, 1), "runs": {}}
    for name, args in plan.items():
        t = time.perf_counter()
        r = emo("fuse", "train", *common, *args, "--out", str(runs / name), "--restart")
        m = json.loads((runs / name / "metrics.json").read_text())
        rep = m["repeats"]["metrics"]
        out["runs"][name] = {
            "cli": "emo fuse train " + " ".join(common + args) + f" --out runs/{name}",
            **{k: {"mean": round(rep[k]["mean"], 4), "std": round(rep[k]["std"], 4), "values": rep[k]["values"]}
               for k in ("uar", "accuracy", "waf")},
            "uar_interval_95": {k: round(m["interval"][k], 4) for k in ("estimate", "low", "high")} | {
                "unit": m["interval"]["group"], "n_groups": m["interval"]["n_groups"], "n_boot": m["interval"]["n_boot"]},
            "seconds": round(time.perf_counter() - t, 1),
            "printed": [ln for ln in r.stdout.splitlines() if ln.startswith(("over ", "95%"))],
        }
    ens_dir = runs / "ensemble"
    r = emo("fuse", "ensemble", str(runs / "egemaps_afg"), str(runs / "mfcc_afg"), "--metric", "uar", "--optimistic",
            "--out", str(ens_dir))
    ens = json.loads((ens_dir / "ensemble.json").read_text())
    out["ensemble"] = {"cli": "emo fuse ensemble runs/egemaps_afg runs/mfcc_afg --metric uar --optimistic --out runs/ensemble",
                       "weights_all_speakers": {Path(k).name: v for k, v in ens["weights"].items()},
                       "nested": {k: round(ens["validation"]["fused"][k], 4) for k in ("uar", "accuracy", "waf")},
                       "optimistic_same_rows": {k: round(ens["validation"]["fused_optimistic"][k], 4) for k in ("uar", "accuracy", "waf")},
                       "members_repeat0_uar": {Path(k).name: round(v["uar"], 4) for k, v in ens["validation"]["runs"].items()}}
    best = max(out["runs"], key=lambda n: out["runs"][n]["uar"]["values"][0])
    cmp_json = runs / "compare.json"
    r = emo("fuse", "compare", str(ens_dir), str(runs / best), "--metric", "uar", "--out", str(cmp_json))
    c = json.loads(cmp_json.read_text())
    out["ensemble_vs_best_single"] = {"cli": f"emo fuse compare runs/ensemble runs/{best} --metric uar",
                                      "best_single_run": best, "printed": r.stdout.strip().splitlines(),
                                      **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items() if k not in ("a", "b")}}
    out["note"] = ("repeat-to-repeat spread (std) and the speaker-bootstrap interval answer different questions: the first is the "
                   "training randomness, the second how much the pooled UAR depends on which 10 speakers were recorded; "
                   "compare the interval's width with differences between methods before claiming one is better")
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_result("emodb_repeats", out)


if __name__ == "__main__":
    main()
