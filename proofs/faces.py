"""Proof: MTCNN finds the speaker's face in the real talking-face clips, and agrees with Haar.

Runs the batched MTCNN (and the Haar fallback) on every clip of ``<shared>/av``
(listed in ``clips.csv``), frames sampled at 2 fps with ``emo.extract.media.load_frames``.

Writes ``results/faces.json``: frames, frames_with_face, detection_rate (overall and
per source folder), haar_agreement_mean_iou (mean IoU of the kept MTCNN and Haar boxes
on frames where both fire), mtcnn_fps (frames per second of detection alone, decoding
excluded, on this machine), and the command; and ``results/faces.png``: a contact sheet
of one aligned crop (the middle detected frame) per clip.

    .venv/bin/python proofs/faces.py --shared /work/shared/data [--weights DIR] [--device cpu]
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402
from emo.extract.media import DEFAULT_FPS  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--weights", default=None, help="MTCNN weights dir (default: emo's cache; fetched if absent)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fps", type=float, default=DEFAULT_FPS)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = parse(ap)

    import torch

    from emo.extract.faces import FaceCropper, fetch_mtcnn
    from emo.extract.faces.core import box_iou
    from emo.extract.faces.cropper import select_speaker
    from emo.extract.media import load_frames

    if args.threads:
        torch.set_num_threads(args.threads)
    av_dir = Path(args.shared) / "av"
    with open(av_dir / "clips.csv", newline="") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    weights = args.weights or str(fetch_mtcnn())

    clips = [load_frames(av_dir / p, fps=args.fps)[0] for p in paths]
    frames = [f for c in clips for f in c]
    n = len(frames)

    mt = FaceCropper("mtcnn", weights=weights, device=args.device)
    mt.detect(frames[:2])  # warm-up (allocator, kernels), not timed
    t0 = time.perf_counter()
    dets = mt.detect(frames)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_mtcnn = time.perf_counter() - t0
    haar = FaceCropper("haar")
    t0 = time.perf_counter()
    hdets = haar.detect(frames)
    t_haar = time.perf_counter() - t0

    per_folder: dict[str, dict[str, float]] = {}
    ious, fractions, haar_hits = [], [], 0
    misses = []
    start = 0
    for p, c in zip(paths, clips):
        d, h = dets[start:start + len(c)], hdets[start:start + len(c)]
        start += len(c)
        pm, ph = select_speaker(d), select_speaker(h)
        folder = p.split("/")[0]
        f = per_folder.setdefault(folder, {"clips": 0, "frames": 0, "frames_with_face": 0})
        f["clips"] += 1
        f["frames"] += len(c)
        for t, (a, b) in enumerate(zip(pm, ph)):
            f["frames_with_face"] += a is not None
            haar_hits += b is not None
            if a is None:
                misses.append(f"{p}#{t}")
            if a is not None and b is not None:
                mb, hb = d[t].boxes[a], h[t].boxes[b]
                ious.append(float(box_iou(mb[None], hb[None])[0, 0]))
                if ious[-1] > 0.5:  # same face: where do MTCNN's landmarks sit inside the Haar box?
                    fractions.append((d[t].landmarks[a] - hb[:2]) / (hb[2:] - hb[:2]))
    for f in per_folder.values():
        f["detection_rate"] = f["frames_with_face"] / f["frames"]

    tracks = mt.process(clips)
    size = mt.size
    tiles = []
    for tr in tracks:
        tiles.append(tr.crops[len(tr.crops) // 2] if len(tr.crops) else np.zeros((size, size, 3), np.uint8))
    cols = 7
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * size, cols * size, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = t
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(out / "faces.png", sheet)

    with_face = sum(f["frames_with_face"] for f in per_folder.values())
    res = {
        "clips": len(paths),
        "fps_sampled": args.fps,
        "frames": n,
        "frames_with_face": int(with_face),
        "detection_rate": with_face / n,
        "per_folder": per_folder,
        "missed_frames": misses,
        "clips_with_no_face": int(sum(tr.no_face for tr in tracks)),
        "haar_frames_with_face": int(haar_hits),
        "haar_detection_rate": haar_hits / n,
        "haar_agreement_mean_iou": float(np.mean(ious)) if ious else None,
        "haar_agreement_frames": len(ious),
        "haar_landmark_fractions_measured": np.mean(fractions, axis=0).round(3).tolist() if fractions else None,
        "mtcnn_fps": n / t_mtcnn,
        "mtcnn_seconds": t_mtcnn,
        "haar_fps": n / t_haar,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "crop_size": size,
        "provenance": mt.provenance(),
        "command": command_line(),
    }
    write_result(out / "faces.json", res, quiet=True)
    print(json.dumps({k: v for k, v in res.items() if k not in ("per_folder", "missed_frames")}, indent=2))


if __name__ == "__main__":
    main()
