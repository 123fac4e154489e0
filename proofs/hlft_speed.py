"""Proof: HLFT training with a cached layer prefix vs running the whole encoder each step.

Full-size HuBERT-large (the chinese-hubert-large configuration: 24 layers x 1024, layer-norm
front-end, stable layer norm; random initialisation, seeded: speed does not depend on the
weights), 64 real EmoDB clips (every 8th file, first ``--max-seconds`` seconds of each).

1. The prefix cache, once: ``emo extract --encoder hubert_large=DIR:15 --frames`` (hidden state
   15 = the input of layer 16, frame-level float16, offsets layout), timed.
2. (a) adapters in layers 16–21 trained from the cached prefix (only layers 16–21 run);
   (b) the same adapters and head with the whole encoder (CNN front-end and layers 1–15 under
   ``no_grad``, they are frozen; then layers 16–21) run every step.
   Same batches (16 clips, fixed order), same masks, same loss (eq. 2–4), same machine, each in
   its own process (so peak RSS is per method); one untimed warm-up step, then one timed epoch.

    python proofs/hlft_speed.py --shared /work/shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402
WINDOW = (16, 21)


def hubert_large_config():
    """chinese-hubert-large's architecture (TencentGameMate/chinese-hubert-large config.json)."""
    from transformers import HubertConfig

    return HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                        conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True, hidden_act="gelu",
                        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def clips(shared: Path, n: int) -> list[Path]:
    wavs = sorted((shared / "emodb" / "wav").glob("*.wav"))
    step = max(1, len(wavs) // n)
    return wavs[::step][:n]


def batches(n: int, bs: int) -> list[list[int]]:
    return [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]


def child(args) -> None:
    """One method in its own process; prints a JSON line."""
    import numpy as np
    import torch

    from emo.extract.adapters import AdaptedWindow, frame_mask, load_encoder_model, pad_sequences
    from emo.extract.datasets.emodb import EMODB_CODES
    from emo.extract.media import load_audio
    from emo.extract.store import FeatureStore
    from emo.fuse.methods.hlft import HLFTModel, hlft_loss, span_mask

    torch.manual_seed(0)
    model = load_encoder_model(args.model, "sdpa")
    window = AdaptedWindow(model, *WINDOW)
    hlft = HLFTModel(window, n_classes=7, init_layer="18")
    opt = torch.optim.Adam(hlft.trainable(), lr=1e-4, weight_decay=0.02)
    paths = [Path(p) for p in json.loads(Path(args.clips).read_text())]
    names = [p.stem for p in paths]
    classes = sorted(EMODB_CODES.values())
    y = torch.tensor([classes.index(EMODB_CODES[n[5]]) for n in names])
    if args.method == "cached":
        store = FeatureStore(args.store)
        seqs = store.read_frames(str(WINDOW[0] - 1), names, dtype=np.float16)
    else:
        audio = [load_audio(p, 16000, max_seconds=args.max_seconds) for p in paths]
        audio = [(a - a.mean()) / np.sqrt(a.var() + 1e-7) for a in audio]  # do_normalize, as emo extract
    bl = batches(len(names), args.batch)
    t_prefix = t_window = 0.0

    def step(idx: list[int]) -> None:
        nonlocal t_prefix, t_window
        t0 = time.perf_counter()
        if args.method == "cached":
            h, m = pad_sequences([seqs[i] for i in idx])
        else:
            t = max(len(audio[i]) for i in idx)
            x = torch.zeros(len(idx), t)
            am = torch.zeros(len(idx), t, dtype=torch.long)
            for r, i in enumerate(idx):
                x[r, :len(audio[i])] = torch.from_numpy(audio[i])
                am[r, :len(audio[i])] = 1
            inputs = {"input_values": x, "attention_mask": am}
            h = window.prefix(inputs)  # CNN + layers 1-15, no_grad (frozen)
            m = frame_mask(model, inputs)
        t1 = time.perf_counter()
        hlft.train()
        fm = span_mask(m, 0.065, 10, torch.Generator().manual_seed(idx[0]))
        loss, _ = hlft_loss(hlft(h, m, fm), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t_prefix += t1 - t0
        t_window += time.perf_counter() - t1

    step(bl[0])  # warm-up (allocator, kernels), not timed
    t_prefix = t_window = 0.0
    t0 = time.perf_counter()
    for idx in bl:
        step(idx)
    epoch = time.perf_counter() - t0
    frames = int(sum(len(seqs[i]) for i in range(len(names)))) if args.method == "cached" else None
    print(json.dumps({"method": args.method, "epoch_seconds": round(epoch, 2), "steps": len(bl),
                      "input_seconds": round(t_prefix, 2), "window_fwd_bwd_seconds": round(t_window, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "threads": torch.get_num_threads(), "prefix_frames": frames}))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--work", default=str(ROOT / "features" / "_proofs" / "hlft_speed"))
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=3.0, help="clip length cap, same for (a) and (b)")
    ap.add_argument("--repeats", type=int, default=3, help="(a) and (b) are run alternately this many times each; "
                    "the fastest epoch of each is compared (least disturbed by other jobs on a shared CPU)")
    ap.add_argument("--method", choices=["cached", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = parse(ap)
    if args.method:
        args.clips = str(Path(args.work) / "clips.json")
        child(args)
        return

    import torch

    shared, work = Path(args.shared), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "hubert_large_random"
    if not (model_dir / "config.json").is_file():
        from transformers import HubertModel

        torch.manual_seed(0)
        HubertModel(hubert_large_config()).eval().save_pretrained(model_dir)
    sel = clips(shared, args.clips)
    (work / "clips.json").write_text(json.dumps([str(p) for p in sel]))
    root = work / "emodb64" / "wav"
    root.mkdir(parents=True, exist_ok=True)
    for p in sel:
        if not (root / p.name).exists():
            (root / p.name).symlink_to(p)
    feats = work / "features"
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "emo.cli", "extract", "--dataset", "emodb", "--root", str(root.parent), "--encoder",
           f"hubert_large={model_dir}:{WINDOW[0] - 1}", "--frames", "--max-seconds", str(args.max_seconds),
           "--out", str(feats), "--overwrite", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"extraction failed:\n{r.stdout}\n{r.stderr}")
    cache_seconds = time.perf_counter() - t0
    store = feats / "emodb" / "hubert_large.h5"
    runs: dict[str, list[dict]] = {"cached": [], "full": []}
    for rep in range(args.repeats):
        for method in ("cached", "full"):
            cmd = [sys.executable, __file__, "--method", method, "--model", str(model_dir), "--store", str(store),
                   "--work", str(work), "--batch", str(args.batch), "--max-seconds", str(args.max_seconds)]
            load = round(os.getloadavg()[0], 2)
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if r.returncode:
                sys.exit(f"{method} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            runs[method].append({**json.loads(r.stdout.strip().splitlines()[-1]), "load_average_1min_before": load})
            print(runs[method][-1], file=sys.stderr)
    import statistics

    a = min(runs["cached"], key=lambda x: x["epoch_seconds"])
    b = min(runs["full"], key=lambda x: x["epoch_seconds"])
    ratio = b["epoch_seconds"] / a["epoch_seconds"]
    med = {m: statistics.median(x["epoch_seconds"] for x in v) for m, v in runs.items()}
    from emo.extract.media import load_audio

    audio_s = sum(len(load_audio(p, 16000, max_seconds=args.max_seconds)) for p in sel) / 16000
    result = {
        "command": command_line(),
        "model": "HuBERT-large architecture (chinese-hubert-large config: 24 x 1024, stable layer norm), random init, seed 0",
        "data": f"{len(sel)} EmoDB clips (every {max(1, 535 // args.clips)}th file), first {args.max_seconds} s each, "
                f"{audio_s:.1f} s of audio in all",
        "window": f"adapters in layers {WINDOW[0]}-{WINDOW[1]} (d_hat 128), prefix = hidden state {WINDOW[0] - 1}",
        "batch": args.batch, "optimizer": "Adam lr 1e-4, weight decay 0.02", "loss": "L_ce + L_mlm (eq. 2-4)",
        "prefix_cache": {"seconds": round(cache_seconds, 1), "store": "float16 frames, offsets layout",
                         "how": "emo extract --encoder hubert_large=DIR:15 --frames (one-time cost, incl. process start "
                                "and model load)", "bytes": store.stat().st_size},
        "a_cached_prefix": a, "b_whole_encoder": b,
        "speedup_b_over_a": round(ratio, 2), "target": ">= 2.5", "meets_target": bool(ratio >= 2.5),
        "comparison": f"fastest of {args.repeats} epochs per method, run alternately a, b, a, b, ...; "
                      "peak RSS per process (ru_maxrss)",
        "median_epoch_seconds": {"a_cached_prefix": round(med["cached"], 2), "b_whole_encoder": round(med["full"], 2)},
        "speedup_of_medians": round(med["full"] / med["cached"], 2),
        "all_runs": runs,
        "flop_estimate": "forward 35 GFLOP per audio second for the whole HuBERT-large vs 7.7 for layers 16-21, "
                         "plus a backward through layers 16-21 in both: about 2.8x",
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                    "torch": torch.__version__},
    }
    if ratio < 2.5:
        result["where_the_rest_goes"] = (
            f"(a) spends {a['window_fwd_bwd_seconds']} s in layers 16-21 forward+backward and {a['input_seconds']} s "
            f"padding the cached prefix; (b) spends {b['input_seconds']} s in the CNN + layers 1-15 (no_grad) and "
            f"{b['window_fwd_bwd_seconds']} s in layers 16-21. The part both pay, layers 16-21 forward + backward, is "
            f"{b['window_fwd_bwd_seconds'] / max(b['input_seconds'], 1e-9):.2f}x the uncached prefix here, more than "
            "the FLOP estimate's (7.7 + 7.7) / 27.3 = 0.56: on CPU the backward through attention and layer norms "
            "(input gradients plus the adapters' weight gradients) and autograd bookkeeping cost more than a forward, "
            "while the no_grad prefix runs lean inference kernels.")
    out = ROOT / "results" / "hlft_speed.json"
    write_result(out, result, quiet=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
