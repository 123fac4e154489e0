"""Proof: feature fusion beats each feature alone on EmoDB, leave-one-speaker-out.

Two weight-free acoustic feature sets of the real EmoDB recordings (535 utterances, 10
speakers, 7 emotions), extracted by ``emo extract`` into HDF5 stores:

* ``egemaps``: openSMILE eGeMAPSv02 functionals (88-d);
* ``mfcc``: librosa MFCC statistics (160-d).

Then, in this one run, with the same leave-one-speaker-out folds (``--folds speaker``, inner
validation = one other training speaker), speaker normalisation and head settings:

1. AFG head on ``egemaps`` alone; 2. AFG head on ``mfcc`` alone;
3. AFG feature-level fusion of both (Wang et al., MER 2023, eq. 1–3);
4. decision-level (posterior) fusion of runs 1 and 2 (after Wang et al., MER 2023): (a) ``emo fuse ensemble`` with the
   weights tuned on all out-of-fold predictions (optimistic by construction: tuned and scored on
   the same predictions); (b) nested, unbiased: for each held-out speaker the weights are tuned
   on the other nine speakers' out-of-fold predictions and applied to the held-out speaker.

UAR (unweighted average recall), accuracy and WAF are computed over the pooled out-of-fold
predictions (every utterance predicted by a model that never saw its speaker) and as mean ± std
over the 10 speaker folds.

    .venv/bin/python proofs/emodb_fusion.py --shared /work/shared/data
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features" / "proof_emodb_fusion"), help="feature root (--out of emo extract)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "proof_emodb_fusion"), help="where the run directories go")
    ap.add_argument("--out", default=str(ROOT / "results" / "emodb_fusion.json"))
    ap.add_argument("--head", default="afg", choices=["afg", "attention", "mlp"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--also-heads", default="attention", help="comma list of further heads run side by side (same folds)")
    args = parse(ap)

    from emo.extract.store import store_path
    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.ensemble import ensemble
    from emo.fuse.training.train import train

    shared = Path(args.shared)
    feats, runs = Path(args.features), Path(args.runs)
    emo_bin = str(Path(sys.executable).with_name("emo"))
    t0 = time.perf_counter()
    if not all(store_path(feats, "emodb", e).exists() for e in ("egemaps", "mfcc")):
        cmd = [emo_bin, "extract", "--dataset", "emodb", "--root", str(shared / "emodb"), "--encoder", "egemaps",
               "--encoder", "mfcc", "--out", str(feats)]
        print("$ " + shlex.join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    extract_s = time.perf_counter() - t0

    # the trainer's defaults (the same settings as results/emodb_egemaps.json); train() resolves the recipe
    cfg = TrainConfig(head=args.head, seeds=args.seeds, normalize="speaker")
    settings: dict = {}  # what the runs were trained with: read back from the first run's config.json below
    res: dict[str, dict] = {}
    for name, specs in (("egemaps", ["egemaps"]), ("mfcc", ["mfcc"]), ("fused", ["egemaps", "mfcc"])):
        t = time.perf_counter()
        r, conf = train(feats, "emodb", specs, cfg, protocol="speaker", out=runs / name,
                        progress=lambda line: print(f"  {name} {line}", file=sys.stderr))
        keys = ("uar", "accuracy", "waf")
        if not settings:  # the settings the recipe actually used (auto: L-BFGS drops dropout and uses one model per fold)
            t_ = conf["training"]
            settings = {"recipe": conf["recipe"], "head": t_["head"], "hidden": t_["hidden"], "dropout": t_["dropout"],
                        "label_smoothing": t_["label_smoothing"], "seeds_per_fold": t_["seeds"], "normalize": t_["normalize"],
                        **({"epochs_max": t_["epochs"], "patience": t_["patience"], "lr": t_["lr"], "batch_size": t_["batch_size"]}
                           if t_["recipe"] == "adamw" else {"l2": t_["l2"] or "chosen per fold on inner validation"}),
                        "folds": "speaker (leave-one-speaker-out, inner validation = one other training speaker)"}
        res[name] = {"features": conf["feature_specs"], "dims": [i["dim"] for i in conf["inputs"]],
                     **{k: round(r.pooled[k], 4) for k in keys},
                     "per_fold_mean": {k: round(r.summary["mean"][k], 4) for k in keys},
                     "per_fold_std": {k: round(r.summary["std"][k], 4) for k in keys},
                     "n": int(len(r.oof["index"])), "n_folds": len(r.folds), "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name}: UAR {res[name]['uar']:.4f}  acc {res[name]['accuracy']:.4f}  WAF {res[name]['waf']:.4f}", file=sys.stderr)

    # emo fuse ensemble's default is nested tuning: each held-out speaker's fold is fused with posterior weights
    # tuned on the other nine speakers' out-of-fold predictions; --optimistic adds the same-data score.
    ens = ensemble([runs / "egemaps", runs / "mfcc"], runs / "ensemble", metric="uar", optimistic=True)
    opt = ens["validation"]["fused_optimistic"]
    res["decision_fusion"] = {"weights": {Path(k).name: v for k, v in ens["weights"].items()},
                              **{k: round(opt[k], 4) for k in ("uar", "accuracy", "waf")},
                              "note": "posterior-fusion weights tuned on the same out-of-fold predictions they are scored on (optimistic)"}
    nested = ens["validation"]["fused"]
    res["decision_fusion_nested"] = {**{k: round(nested[k], 4) for k in ("uar", "accuracy", "waf")},
                                     "egemaps_weight_per_held_out_speaker": {
                                         g.split("=", 1)[-1]: round(w[str(runs / "egemaps")], 3)
                                         for g, w in ens["weights_per_held_out_group"].items()},
                                     "note": "emo fuse ensemble default: posterior-fusion weights tuned on the other 9 speakers' "
                                             "out-of-fold predictions (unbiased)"}

    from dataclasses import replace

    other_heads: dict[str, dict] = {}
    for h in [x.strip() for x in args.also_heads.split(",") if x.strip() and x.strip() != args.head]:
        oh: dict[str, dict] = {}
        for name, specs in (("egemaps", ["egemaps"]), ("mfcc", ["mfcc"]), ("fused", ["egemaps", "mfcc"])):
            r, _ = train(feats, "emodb", specs, replace(cfg, head=h), protocol="speaker", out=runs / f"{h}-{name}")
            oh[name] = {k: round(r.pooled[k], 4) for k in ("uar", "accuracy", "waf")}
        oh["fused_beats_each"] = bool(oh["fused"]["uar"] > max(oh["egemaps"]["uar"], oh["mfcc"]["uar"]))
        other_heads[h] = oh
        print(f"--head {h}: " + ", ".join(f"{k} UAR {v['uar']:.4f}" for k, v in oh.items() if isinstance(v, dict)), file=sys.stderr)

    best_single = max(res["egemaps"]["uar"], res["mfcc"]["uar"])
    result = {
        "command": command_line(),
        "dataset": "EmoDB (Burkhardt et al., Interspeech 2005): 535 utterances, 10 speakers, 7 emotions",
        "protocol": "leave-one-speaker-out; metrics over pooled out-of-fold predictions (per_fold_*: mean/std over the 10 speakers)",
        "training": settings,
        "egemaps": res["egemaps"], "mfcc": res["mfcc"], "fused": res["fused"], "decision_fusion": res["decision_fusion"],
        "decision_fusion_nested": res["decision_fusion_nested"],
        "nested_decision_fusion_minus_best_single_uar": round(res["decision_fusion_nested"]["uar"] - best_single, 4),
        "fused_minus_best_single_uar": round(res["fused"]["uar"] - best_single, 4),
        "fused_beats_each": bool(res["fused"]["uar"] > best_single),
        "other_heads": other_heads,
        "extract_seconds": round(extract_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, result, quiet=True)
    print(json.dumps({k: result[k] for k in ("egemaps", "mfcc", "fused", "decision_fusion", "decision_fusion_nested", "fused_minus_best_single_uar")}, indent=1))


if __name__ == "__main__":
    main()
