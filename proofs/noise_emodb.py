"""EmoDB under speech noise (MER-NOISE style): clean training vs clean + noise-augmented training,
each evaluated on clean clips and on noisy copies at 5 and 10 dB SNR.

Runs (argument lists, no shell):

1. ``emo extract --dataset emodb --encoder egemaps`` (clean store), then one
   ``emo extract --dataset emodb --encoder egemaps --augment ... --augment ... --augment ...``
   writing three augmented stores from other speakers' EmoDB utterances (the noise for a clip is
   never its own speaker's speech):
   ``egemaps+noise`` (SNR drawn from {5..11} dB, seed 0; the training copies),
   ``egemaps+noise5`` (5 dB, seed 1) and ``egemaps+noise10`` (10 dB, seed 2): the evaluation copies,
   drawn independently of the training copies.
2. Twelve ``emo fuse train`` runs, leave-one-speaker-out (10 folds), AFG head: normalisation
   {``global`` (statistics of the fold's clean + copied training rows), ``speaker`` (each speaker's
   clips of one condition normalised by their own statistics: a noisy test speaker by its noisy
   clips)} × training {clean, clean + ``--augmented egemaps+noise``} × evaluation {clean,
   ``--evaluate-on noise5``, ``--evaluate-on noise10``}, every run ``--recipe adamw`` (minibatch
   AdamW, 5 seeds per fold: the recipe augmented and noisy-evaluation runs need, so the cells differ
   only in data).

Writes ``results/noise_emodb.json`` with UAR (pooled over the 535 out-of-fold predictions, and the
mean over speaker folds) per cell, the exact commands and the machine load.

Usage: ``.venv/bin/python proofs/noise_emodb.py --shared /work/shared/data``
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from _common import ROOT, command_line, emo, parse, parser, write_result  # noqa: E402  (proofs/ is on sys.path when run as a script)


#: Feature normalisations compared (each: 6 runs).
NORMS = ("global", "speaker")


def run(args: list[str]):
    print("$ emo " + " ".join(shlex.quote(a) for a in args), flush=True)
    return emo(*args)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features" / "proofs15"), help="feature root (emo extract --out)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "noise_emodb"), help="where the run directories go")
    a = parse(ap)
    shared = Path(a.shared).resolve()
    root = shared / "emodb"
    if not root.is_dir():
        sys.exit(f"EmoDB not found under {shared} (pass --shared or set EMO_SHARED_DATA)")
    feats, runs = Path(a.features), Path(a.runs)
    specs = [f"noise:snr=5-11,source={root / 'wav'},seed=0", f"noise:snr=5,source={root / 'wav'},seed=1,name=noise5",
             f"noise:snr=10,source={root / 'wav'},seed=2,name=noise10"]
    t0 = time.perf_counter()
    clean_cmd = ["extract", "--dataset", "emodb", "--root", str(root), "--encoder", "egemaps", "--out", str(feats), "--no-progress"]
    run(clean_cmd)
    aug_cmd = [*clean_cmd, *[x for s in specs for x in ("--augment", s)]]
    run(aug_cmd)
    extract_s = time.perf_counter() - t0
    from emo.extract.store import FeatureStore, store_path

    prov = {}
    for tag in ("noise", "noise5", "noise10"):
        st = FeatureStore(store_path(feats, "emodb", f"egemaps+{tag}"))
        prov[f"egemaps+{tag}"] = {k: st.attrs.get(k) for k in ("augment", "augment_seed", "noise_files", "noise_files_hash",
                                                                 "noise_snr_db", "clean_weights_hash")}
    cells, commands, drop = {}, {}, {}

    def write(done: list[str]) -> None:
        """results/noise_emodb.json with what has finished (written after each normalisation, so a
        cut-off run still leaves its finished cells)."""
        cfg = json.loads((runs / "global_train-clean-noise_eval-noise_5db" / "config.json").read_text()) \
            if (runs / "global_train-clean-noise_eval-noise_5db" / "config.json").is_file() else {}
        result = {
            "dataset": "EmoDB (535 utterances, 10 speakers, 7 classes)", "features": "eGeMAPSv02 functionals (88-d)",
            "protocol": "leave-one-speaker-out (10 folds), inner validation = one training speaker; UAR pooled over all "
                        "out-of-fold predictions (uar_fold_mean: mean over the speaker folds)",
            "normalizations": {"global": "statistics of the fold's training rows (clean, plus copies when augmented)",
                               "speaker": "each speaker's clips of one condition (clean, or one augmentation) normalised "
                                          "by their own statistics, test speakers included (unsupervised)"},
            "noise": "other speakers' EmoDB utterances (never the clip's own speaker, never the clip itself), mixed at the "
                     "drawn SNR over the whole clip; training copies: SNR from {5..11} dB (seed 0); evaluation copies: 5 dB "
                     "(seed 1) and 10 dB (seed 2), independent draws",
            "caveat": "the noise pool is EmoDB itself, so a training clip's noise may be speech of the held-out speaker "
                      "(as unlabelled background); evaluation clips never get their own speaker's speech",
            "complete": done == list(NORMS), "normalizations_done": done,
            "uar": cells, "uar_drop_from_clean": drop,
            "augmented_training_copies_per_fold": cfg.get("augmentation", {}).get("copies_per_fold"),
            "stores": prov, "extract_seconds": round(extract_s, 1),
            "commands": {"extract_clean": "emo " + " ".join(shlex.quote(x) for x in clean_cmd),
                         "extract_augmented": "emo " + " ".join(shlex.quote(x) for x in aug_cmd), **commands},
            "command": command_line(),
            "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
        }
        out = ROOT / "results" / "noise_emodb.json"
        out.parent.mkdir(exist_ok=True)
        write_result(out, result, quiet=True)
        print(json.dumps({k: result[k] for k in ("uar", "uar_drop_from_clean")}, indent=2), flush=True)

    done: list[str] = []
    for norm in NORMS:
        base = ["fuse", "train", "--dataset", "emodb", "--features-dir", str(feats), "--features", "egemaps", "--head", "afg",
                "--task", "discrete", "--folds", "speaker", "--normalize", norm,
                # one recipe for every cell: augmented and --evaluate-on rows train in the minibatch loop, and the
                # auto recipe would give the clean cell full-batch L-BFGS, making the drop from clean a recipe change
                "--recipe", "adamw"]
        for train_name, extra in (("clean", []), ("clean+noise", ["--augmented", "egemaps+noise"])):
            for eval_name, ev in (("clean", []), ("noise_5db", ["--evaluate-on", "noise5"]), ("noise_10db", ["--evaluate-on", "noise10"])):
                out = runs / f"{norm}_train-{train_name}_eval-{eval_name}".replace("+", "-")
                args = [*base, *extra, *ev, "--out", str(out)]
                t = time.perf_counter()
                r = run(args)
                print(r.stdout.splitlines()[-3] if r.stdout else "", flush=True)
                m = json.loads((out / "metrics.json").read_text())
                recipe = json.loads((out / "config.json").read_text())["recipe"]["recipe"]
                if recipe != "adamw":
                    sys.exit(f"{out}: trained with recipe {recipe}; every cell must share one recipe")
                cells.setdefault(f"normalize_{norm}", {}).setdefault(train_name, {})[eval_name] = {
                    "uar": round(m["pooled"]["uar"], 4), "accuracy": round(m["pooled"]["accuracy"], 4),
                    "uar_fold_mean": round(m["mean"]["uar"], 4), "uar_fold_std": round(m["std"]["uar"], 4),
                    "recipe": recipe, "seconds": round(time.perf_counter() - t, 1)}
                commands[f"{norm}: {train_name} -> {eval_name}"] = "emo " + " ".join(shlex.quote(x) for x in args)
        c = cells[f"normalize_{norm}"]
        drop[f"normalize_{norm}"] = {t: {e: round(c[t]["clean"]["uar"] - c[t][e]["uar"], 4) for e in ("noise_5db", "noise_10db")}
                                     for t in c}
        done.append(norm)
        write(done)

if __name__ == "__main__":
    main()
