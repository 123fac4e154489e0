"""Extraction throughput: HuBERT-large 16-21 (fast vs naive), CLIP ViT-L/14, MTCNN, decoding.

Models are randomly initialised at their real sizes (compute does not depend on the
weights) and loaded through the same ``from_pretrained`` / open_clip code paths as real
checkpoints. One run measures, side by side:

* HuBERT-large layers 16-21: audio seconds per second (real-time factor) of the fast path
  (batched by padded-seconds budget, bf16 autocast on GPU, SDPA, truncated after layer 21,
  optionally ``torch.compile``) and of the naive MER-baseline path (:mod:`emo.extract.naive`:
  one clip per forward, fp32, eager attention, all 24 layers, all hidden states); speedup;
  model FLOP utilisation (MFU) = FLOPs of the CNN front-end, feature projection, positional
  convolution and the transformer layers actually run (on the clips' real lengths, padding
  not counted) / time / peak. The peak is stated: on CPU a measured large fp32 matmul; on
  GPU the datasheet dense bf16 peak (H100/H200 SXM: 989.4 TFLOP/s) and a measured bf16 matmul.
* CLIP ViT-L/14 (open_clip, all 24 blocks + projection) on 224x224 face crops: frames/s.
* MTCNN (random weights: P-Net pyramid cost is weight-independent; R/O-Net cost depends on
  how many candidates pass, so this is indicative) on real decoded frames: frames/s.
* Decoding (PyAV, audio at 16 kHz + frames at 2 fps, as the engine does) of the real av/ clips:
  clips/s and audio seconds/s, threads vs processes.
* Peak RSS and peak GPU memory; a projection of a MER-2024-sized run from the measured rates.

CPU (``make bench``): small, a few minutes on 2 cores; GPU (``make bench-gpu``): full size,
a few thousand clips of real-length audio.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emo.extract.media import DEFAULT_FPS

ROOT = Path(__file__).resolve().parents[1]

#: MER 2024: 5,030 labelled + 115,595 unlabelled clips, about 106 h in all (the issue's figures).
MER2024_CLIPS = 5030 + 115595
MER2024_HOURS = 106.0
#: Datasheet dense bf16 peak of an H100/H200 SXM (FLOP/s); other GPUs use the measured matmul peak.
DATASHEET_BF16 = {"H200": 989.4e12, "H100": 989.4e12}


def shared_dir() -> Path:
    return Path(os.environ.get("EMO_SHARED_DATA", ROOT.parent / "shared" / "data"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype_name: str = "float32", n: int = 2048, reps: int = 5) -> float:
    """Best measured FLOP/s of an (n x n) @ (n x n) matmul (2 n^3 FLOPs) on ``device``."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


# --- HuBERT FLOPs ------------------------------------------------------------------------------
def hubert_flops(n_samples: int, cfg, n_layers: int) -> float:
    """Forward FLOPs (multiply-add = 2) of a HuBERT/wav2vec2 model on one clip of ``n_samples``.

    CNN front-end: sum over conv layers of 2 * C_in * C_out * k * L_out; feature projection
    2 * C_last * D * F; positional conv (groups G, kernel K) 2 * D * (D/G) * K * F; per
    transformer layer 8 F D^2 (Q, K, V, output projections) + 4 F^2 D (scores and weighted
    sum) + 4 F D I (feed-forward). Norms, activations and softmax are not counted.
    """
    L, c_in, total = n_samples, 1, 0.0
    for c_out, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride):
        L = (L - k) // s + 1
        if L <= 0:
            return total
        total += 2.0 * c_in * c_out * k * L
        c_in = c_out
    F, D, inter = L, cfg.hidden_size, cfg.intermediate_size
    total += 2.0 * c_in * D * F
    total += 2.0 * D * (D / cfg.num_conv_pos_embedding_groups) * cfg.num_conv_pos_embeddings * F
    total += n_layers * (8.0 * F * D * D + 4.0 * F * F * D + 4.0 * F * D * inter)
    return total


def hubert_large_dir(tmp: Path) -> Path:
    """A randomly initialised HuBERT-large (chinese-hubert-large layout) saved to ``tmp``."""
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    d = tmp / "hubert-large-random"
    HubertModel(cfg).save_pretrained(d)
    return d


def real_durations() -> list[float]:
    """Real utterance durations (EmoDB, 535 clips, 1.2-9.0 s) or, without the data, a log-normal
    stand-in with the same median."""
    from emo.extract.datasets.base import read_csv

    f = shared_dir() / "emodb" / "labels.csv"
    if f.is_file():
        return [float(r["duration_s"]) for r in read_csv(f, ["duration_s"])]
    rng = np.random.default_rng(0)
    return list(np.clip(rng.lognormal(np.log(2.6), 0.4, 535), 1.0, 10.0))


def audio_clips(n: int, total_seconds: float | None, seed: int = 0) -> list[np.ndarray]:
    """``n`` clips (or as many as fit ``total_seconds``) with real durations, noise at 16 kHz."""
    rng = np.random.default_rng(seed)
    durs = real_durations()
    out, tot = [], 0.0
    for i in range(n):
        d = durs[i % len(durs)]
        if total_seconds is not None and tot + d > total_seconds:
            break
        out.append((0.1 * rng.standard_normal(int(d * 16000))).astype(np.float32))
        tot += d
    return out


def bench_hubert(gpu: bool, device: str, tmp: Path, peak: float) -> dict:
    import torch

    from emo.extract.packing import pack, padding_fraction
    from emo.extract.encoders.base import AudioInput
    from emo.extract.naive import NaiveSpeechEncoder
    from emo.extract.registry import parse_encoder_spec

    src = hubert_large_dir(tmp)
    layers = [str(i) for i in range(16, 22)]
    clips = audio_clips(4000, None, seed=1) if gpu else audio_clips(1000, 20.0, seed=1)
    items = [AudioInput(f"c{i}", a) for i, a in enumerate(clips)]
    secs = float(sum(len(a) for a in clips) / 16000)
    res: dict = {"clips": len(items), "audio_seconds": round(secs, 1), "layers": "16-21", "device": device,
                 "dtype_fast": "bf16 autocast" if gpu else "fp32", "dtype_naive": "fp32"}

    def run_fast(enc, batch_budget: float) -> tuple[float, float]:
        cost = enc.cost  # audio seconds
        pool = 8 * batch_budget  # the engine's bucket pool (8 batch budgets)
        groups, cur, held = [], [], 0.0
        for it in items:
            cur.append(it)
            held += cost(it)
            if held >= pool:
                groups.append(cur)
                cur, held = [], 0.0
        if cur:
            groups.append(cur)
        pads, padded_total = [], 0.0
        warm = pack(groups[0], cost, batch_budget)[0]
        enc.encode([groups[0][i] for i in warm])  # warm-up (kernels, compile)
        _sync(device)
        t = time.perf_counter()
        for g in groups:
            bs = pack(g, cost, batch_budget)
            c = [cost(x) for x in g]
            pads.append(padding_fraction(c, bs) * sum(c))
            padded_total += sum(c)
            for b in bs:
                enc.encode([g[i] for i in b])
        _sync(device)
        return time.perf_counter() - t, float(sum(pads) / padded_total)

    if gpu:
        torch.cuda.reset_peak_memory_stats()
    budget = 200.0 if gpu else 60.0
    fast = parse_encoder_spec(f"hubert_large={src}:16-21").build(device=device, batch_seconds=budget)
    assert len(fast.model.encoder.layers) == 21
    t_fast, pad = run_fast(fast, budget)
    flops_fast = sum(hubert_flops(len(a), fast.config, 21) for a in clips)
    res["fast"] = {"seconds": round(t_fast, 3), "rtf_x": round(secs / t_fast, 2), "batch_seconds": budget,
                   "padding_fraction": round(pad, 4), "tflop": round(flops_fast / 1e12, 3),
                   "mfu": round(flops_fast / t_fast / peak, 4), "attention": fast.model.config._attn_implementation}
    if gpu:
        res["fast"]["gpu_peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del fast
        torch.cuda.empty_cache()
        try:
            comp = parse_encoder_spec(f"hubert_large={src}:16-21").build(device=device, batch_seconds=budget, compile=True)
            t_first, _ = run_fast(comp, budget)  # first pass: compiles for the shapes seen
            t_c, _ = run_fast(comp, budget)
            res["fast_compiled"] = {"seconds": round(t_c, 3), "rtf_x": round(secs / t_c, 2),
                                    "mfu": round(flops_fast / t_c / peak, 4), "first_pass_seconds": round(t_first, 1)}
            del comp
        except Exception as e:  # compile is optional: record why it did not pay / run
            res["fast_compiled"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        torch.cuda.empty_cache()
    # naive: one clip per forward; on GPU a subset (rate is per clip, extrapolated to the same audio)
    naive = NaiveSpeechEncoder("hubert_large", str(src), layers, device=device)
    sub = items[:200] if gpu else items
    naive.encode(sub[:1])
    _sync(device)
    t = time.perf_counter()
    for it in sub:
        naive.encode([it])
    _sync(device)
    t_naive_sub = time.perf_counter() - t
    sub_secs = float(sum(len(i.audio) for i in sub) / 16000)
    rtf_naive = sub_secs / t_naive_sub
    flops_naive = sum(hubert_flops(len(i.audio), naive.config, 24) for i in sub)
    res["naive"] = {"seconds": round(t_naive_sub, 3), "clips": len(sub), "audio_seconds": round(sub_secs, 1),
                    "rtf_x": round(rtf_naive, 2), "mfu": round(flops_naive / t_naive_sub / peak, 4),
                    "attention": "eager", "layers_run": 24}
    best = max(res["fast"]["rtf_x"], res.get("fast_compiled", {}).get("rtf_x", 0) or 0)
    res["speedup_vs_naive_x"] = round(best / rtf_naive, 2)
    res["flop_ratio_naive_over_fast"] = round((flops_naive / sub_secs) / (flops_fast / secs), 3)
    if gpu:
        res["gpu_peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del naive
    return res


def bench_clip(gpu: bool, device: str) -> dict:
    import torch

    from emo.extract.encoders.base import FaceInput
    from emo.extract.registry import parse_encoder_spec

    n = 8192 if gpu else 10
    mf = 512 if gpu else 10
    enc = parse_encoder_spec("clip_vit_l=ViT-L-14/random:24,proj").build(device=device, max_frames=mf)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (min(n, 512), 224, 224, 3), dtype=np.uint8)
    per_clip = 10  # about 5 s at 2 fps
    items = [FaceInput(f"f{i}", crops[(i * per_clip) % len(crops):][:per_clip]) for i in range(n // per_clip)]
    items = [it for it in items if len(it.crops) == per_clip]
    frames = per_clip * len(items)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    enc.encode(items[: max(1, mf // per_clip)])
    _sync(device)
    t = time.perf_counter()
    step = max(1, mf // per_clip)
    for i in range(0, len(items), step):
        enc.encode(items[i:i + step])
    _sync(device)
    dt = time.perf_counter() - t
    out = {"frames": frames, "seconds": round(dt, 3), "frames_per_s": round(frames / dt, 2), "blocks": enc.depth,
           "dtype": "bf16 autocast" if gpu else "fp32", "frames_per_forward": mf}
    if gpu:
        out["gpu_peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _decoded_frames(n: int) -> list[np.ndarray]:
    from emo.extract.media import load_frames

    av = shared_dir() / "av"
    files = sorted(p for p in av.rglob("*") if p.suffix in (".mp4", ".flv", ".mpg")) if av.is_dir() else []
    frames: list[np.ndarray] = []
    for f in files:
        try:
            fr, _ = load_frames(f, DEFAULT_FPS, max_frames=4, max_side=640)
        except Exception:
            continue
        frames.extend(list(fr))
        if len(frames) >= n:
            break
    if not frames:  # no data: synthetic 640x360 frames
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(8)]
    while len(frames) < n:
        frames = frames + frames
    return frames[:n]


def bench_mtcnn(gpu: bool, device: str) -> dict:
    import torch

    from emo.extract.faces.mtcnn import MTCNN

    n = 2048 if gpu else 16
    frames = _decoded_frames(n)
    det = MTCNN(None, device=device)
    det.detect(frames[:4])
    _sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, 64):
            det.detect(frames[i:i + 64])
    _sync(device)
    dt = time.perf_counter() - t
    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    return {"frames": n, "seconds": round(dt, 3), "frames_per_s": round(n / dt, 2), "frame_sizes": sizes,
            "weights": "random (indicative: R/O-Net work depends on candidates passing P-Net)"}


def bench_decode(gpu: bool) -> dict:
    from emo.extract.datasets import get_dataset
    from emo.extract.engine import decode_sample

    av = shared_dir() / "av"
    if not av.is_dir():
        return {"skipped": f"no real clips at {av}"}
    samples = get_dataset("folder", str(av)).samples()
    if not gpu:
        samples = samples[:24]
    workers = os.cpu_count() or 2
    out = {"clips": len(samples), "what": "audio 16 kHz mono + frames at 2 fps (max side 640)"}
    # as the engine decodes: audio and frames, 16 kHz, 2 fps, max side 640, whole clips
    decode = functools.partial(decode_sample, need_audio=True, need_frames=True, sample_rate=16000, fps=DEFAULT_FPS,
                               max_side=640, max_seconds=None)
    n = len(samples)
    for kind, cls in (("threads", cf.ThreadPoolExecutor), ("processes", cf.ProcessPoolExecutor)):
        with cls(workers) as pool:
            list(pool.map(decode, samples[:2]))  # warm-up (worker start, codec init)
            t = time.perf_counter()
            res = list(pool.map(decode, samples))
            dt = time.perf_counter() - t
        secs = sum(len(d.audio) for d in res if d.audio is not None) / 16000
        out[kind] = {"workers": workers, "seconds": round(dt, 3), "clips_per_s": round(n / dt, 2),
                     "audio_seconds_per_s": round(secs / dt, 1)}
    return out


def project_mer2024(h: dict, clip: dict, mtcnn: dict, dec: dict, fps: float = DEFAULT_FPS) -> dict:
    """Hours for a MER-2024-sized run from the measured rates (audio + faces + CLIP)."""
    audio_s = MER2024_HOURS * 3600
    frames = audio_s * fps
    rtf = max(h["fast"]["rtf_x"], h.get("fast_compiled", {}).get("rtf_x", 0) or 0)
    t_audio = audio_s / rtf
    t_clip = frames / clip["frames_per_s"]
    t_mtcnn = frames / mtcnn["frames_per_s"]
    best_dec = max((v["audio_seconds_per_s"] for k, v in dec.items() if isinstance(v, dict)), default=0)
    t_dec = audio_s / best_dec if best_dec else float("nan")
    gpu_h = (t_audio + t_clip + t_mtcnn) / 3600
    return {"audio_hours": MER2024_HOURS, "clips": MER2024_CLIPS, "face_frames": int(frames), "fps": fps,
            "hubert_hours": round(t_audio / 3600, 3), "clip_hours": round(t_clip / 3600, 3),
            "mtcnn_hours": round(t_mtcnn / 3600, 3), "decode_hours": round(t_dec / 3600, 3),
            "model_hours_serial": round(gpu_h, 3),
            "total_hours_if_decode_overlaps": round(max(gpu_h, t_dec / 3600), 3),
            "total_hours_serial": round(gpu_h + t_dec / 3600, 3)}


def main(gpu: bool = False) -> dict:
    """Run the extraction benchmarks; see the module docstring. Raises when ``gpu`` and no CUDA."""
    import torch

    device = "cuda" if gpu else "cpu"
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("bench_extract --gpu: CUDA is not available")
    res: dict = {"device": device}
    if gpu:
        name = torch.cuda.get_device_name(0)
        measured = matmul_peak(device, "bfloat16", n=8192, reps=5)
        sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
        peak = sheet or measured
        res["peak"] = {"flops_per_s": peak, "source": f"datasheet dense bf16 ({name})" if sheet else "measured bf16 matmul 8192^3",
                       "measured_bf16_matmul_flops_per_s": measured}
    else:
        peak = matmul_peak("cpu", "float32", n=2048, reps=5)
        res["peak"] = {"flops_per_s": peak, "source": f"measured fp32 matmul 2048^3 on {torch.get_num_threads()} threads"}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        res["hubert_large"] = bench_hubert(gpu, device, Path(tmp), peak)
        res["hubert_large"]["wall_s"] = round(time.time() - t, 1)
    res["clip_vit_l14"] = bench_clip(gpu, device)
    res["mtcnn"] = bench_mtcnn(gpu, device)
    res["decode"] = bench_decode(gpu)
    if isinstance(res["decode"].get("threads"), dict):
        res["projection_mer2024"] = project_mer2024(res["hubert_large"], res["clip_vit_l14"], res["mtcnn"], res["decode"])
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if gpu:
        res["gpu_peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["targets"] = {
            "hubert_rtf_x>=5000": max(res["hubert_large"]["fast"]["rtf_x"], res["hubert_large"].get("fast_compiled", {}).get("rtf_x", 0) or 0) >= 5000,
            "hubert_speedup_vs_naive>=20": res["hubert_large"]["speedup_vs_naive_x"] >= 20,
            "clip_frames_per_s>=1500": res["clip_vit_l14"]["frames_per_s"] >= 1500,
            "mer2024_projection<1h": res.get("projection_mer2024", {}).get("total_hours_if_decode_overlaps", 99) < 1.0,
        }
    return res


if __name__ == "__main__":
    import json

    out = main(gpu="--gpu" in sys.argv)
    print(json.dumps(out, indent=2, default=str))
