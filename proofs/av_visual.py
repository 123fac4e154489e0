"""Proof: visual encoders on the 49 real talking-face clips, through `emo extract`.

Runs the CLI on ``<shared>/av`` with CLIP ViT-L/14 via open_clip (random init, full
size), CLIP ViT-L/14 via transformers (a randomly initialised full-size
``CLIPVisionModelWithProjection`` saved to a temporary directory), ResNet-50 and
MANet (random init), then opens every store with :class:`FeatureStore` and records
layers, dims, samples, failures, finiteness and ``no_face`` counts. Frames per second
of each encoder are measured directly on real aligned face crops (after one warm-up
call), on this machine's CPU.

    .venv/bin/python proofs/av_visual.py --shared /work/shared/data

Writes ``results/av_visual.json``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402
from emo.extract.media import DEFAULT_FPS  # noqa: E402


def save_hf_clip_vit_l(d: Path) -> None:
    """A randomly initialised CLIP ViT-L/14 vision tower + projection (768) with its processor."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    CLIPVisionModelWithProjection(cfg).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(d)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--fps", type=float, default=DEFAULT_FPS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timing-clips", type=int, default=4, help="clips whose face crops are used for timing")
    ap.add_argument("--out", default=str(ROOT / "results" / "av_visual.json"))
    args = parse(ap)
    shared = Path(args.shared)
    av = shared / "av"
    if not (av / "clips.csv").is_file():
        sys.exit(f"{av / 'clips.csv'} not found (pass --shared or set EMO_SHARED_DATA)")
    with open(av / "clips.csv", newline="") as fh:
        clips = [row["path"] for row in csv.DictReader(fh)]
    expected = sorted(str(Path(p).with_suffix("")) for p in clips)

    from emo.extract.faces.weights import default_mtcnn_dir

    detector = "mtcnn" if all((default_mtcnn_dir() / f).is_file() for f in ("pnet.pt", "rnet.pt", "onet.pt")) else "haar"
    result: dict = {"clips": len(expected), "fps_sampling": args.fps, "face_detector": detector,
                    "device": args.device, "torch_threads": None}
    import torch

    result["torch_threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="emo_av_visual_") as tmp:
        tmp = Path(tmp)
        hf_dir = tmp / "hf_clip_vit_l_random"
        save_hf_clip_vit_l(hf_dir)
        specs = {
            "clip_vit_l": "clip_vit_l=ViT-L-14/random",
            "hf_clip_vit_l": f"hf_clip_vit_l={hf_dir}",
            "resnet50": "resnet50=random",
            "manet": "manet=random",
        }
        out = tmp / "features"
        emo_bin = Path(sys.executable).with_name("emo")
        cmd = [str(emo_bin), "extract", "--dataset", "folder", "--name", "folder", "--root", str(av), "--out", str(out),
               "--device", args.device, "--fps", str(args.fps), "--face-detector", detector]
        for s in specs.values():
            cmd += ["--encoder", s]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result["extract_wall_s"] = round(time.perf_counter() - t0, 1)
        result["extract_exit_status"] = proc.returncode
        result["extract_log_tail"] = (proc.stdout + proc.stderr)[-3000:]
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")

        from emo.extract.store import FeatureStore, store_path

        encoders: dict = {}
        lost_all: set[str] = set()
        for name in specs:
            path = store_path(out, "folder", name)
            if not path.exists():
                encoders[name] = {"error": f"no store at {path}"}
                lost_all |= set(expected)
                continue
            st = FeatureStore(path)
            finite = all(bool(np.isfinite(st.read_layer(k)).all()) for k in st.layers)
            lost = sorted(set(expected) - set(st.names))
            lost_all |= set(lost)
            encoders[name] = {
                "source": st.attrs.get("source"), "layers": st.layers, "dims": st.dims,
                "samples": len(st), "failed": len(st.failed), "failed_errors": dict(list(st.failed.items())[:5]),
                "all_finite": finite, "no_face": int(st.flag_mask("no_face").sum()), "lost": lost,
                "input_size": st.attrs.get("input_size"), "resize": st.attrs.get("resize"),
                "image_mean": [float(x) for x in np.atleast_1d(st.attrs.get("image_mean", []))],
                "image_std": [float(x) for x in np.atleast_1d(st.attrs.get("image_std", []))],
                "weights_hash": st.attrs.get("weights_hash"),
            }

        # direct timing on real aligned crops
        from emo.extract.encoders.base import FaceInput
        from emo.extract.faces import FaceCropper
        from emo.extract.media import load_frames
        from emo.extract.registry import parse_encoder_spec

        cropper = FaceCropper(detector=detector, device=args.device)
        frames = [load_frames(av / p, fps=args.fps)[0] for p in clips[: args.timing_clips]]
        crops = [FaceInput(p, t.crops) for p, t in zip(clips, cropper.process(frames))]
        n_frames = sum(len(c.crops) for c in crops)
        for name, spec in specs.items():
            enc = parse_encoder_spec(spec).build(device=args.device)
            enc.encode([FaceInput("warmup", crops[0].crops[:2])])
            t0 = time.perf_counter()
            enc.encode(crops)
            dt = time.perf_counter() - t0
            encoders[name]["frames_per_second"] = round(n_frames / dt, 2)
            encoders[name]["timing_frames"] = n_frames
            del enc
        result["encoders"] = encoders
        result["ok"] = len(expected) - len(lost_all)
        result["lost"] = sorted(lost_all)
        result["command"] = command_line()
        result["extract_command"] = " ".join(cmd).replace(str(tmp), "$TMP")
    write_result(args.out, result, quiet=True)
    print(json.dumps({k: v for k, v in result.items() if k != "extract_log_tail"}, indent=2))


if __name__ == "__main__":
    main()
