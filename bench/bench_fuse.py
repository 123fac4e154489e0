"""Fusion-stage speed at MER 2024 size: ``emo fuse train`` (AFG, 5 folds) and a 25-layer linear sweep.

A synthetic feature root of the size of MER 2024's labelled set is written in a temporary
directory, in the store schema of :mod:`emo.extract.store` (h5py, float16) with a manifest
(:func:`emo.extract.datasets.write_manifest`): 5,030 utterances, the 6 MER classes, and

* ``hubert_large``: 25 layers (0–24) x 1024,
* ``clip_vit_l``: 1 layer (``proj``) x 768,
* ``manet``: 1 layer (``functionals``) x 512,

with a weak class signal in some layers so that early stopping behaves as on real features.
Measured (wall clock, by this script; nothing is asserted):

1. ``emo fuse train --dataset ... --features hubert_large --layers 16-21 --features clip_vit_l
   --features manet --head afg --folds 5`` as a subprocess (including interpreter start-up and
   imports) and the same training in-process (:func:`emo.fuse.train.train`); target 20 s.
2. ``emo fuse sweep --features hubert_large --layers 0-24 --folds 5 --head linear`` (125 cells)
   as a subprocess; target 90 s.

Targets and pass/fail flags are in the result; with ``--profile`` (alone) a cProfile of the
in-process training is printed. Run alone: ``.venv/bin/python bench/bench_fuse.py [--gpu]``
(writes ``results/bench_fuse.json`` through ``bench/run_all.py``'s writer).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N, N_CLASSES = 5030, 6
ENCODERS = {"hubert_large": ([str(i) for i in range(25)], 1024, "audio"), "clip_vit_l": (["proj"], 768, "face"),
            "manet": (["functionals"], 512, "face")}
TARGET_TRAIN_S, TARGET_SWEEP_S = 20.0, 90.0


def write_synthetic(root: Path, dataset: str = "mer2024_synth", seed: int = 0) -> Path:
    """Write the synthetic feature root described in the module docstring; returns ``root``."""
    import h5py

    from emo.extract.datasets import MER_CLASSES, Sample, write_manifest

    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, N)
    names = [f"sample_{i:05d}" for i in range(N)]
    samples = [Sample(name=n, media=None, discrete=MER_CLASSES[c], split="train") for n, c in zip(names, y)]
    write_manifest(root / dataset, types.SimpleNamespace(name=dataset, root=root, classes=MER_CLASSES), samples)
    s = h5py.string_dtype("utf-8")
    for enc, (layers, d, modality) in ENCODERS.items():
        centers = rng.normal(size=(N_CLASSES, d)).astype(np.float32)
        with h5py.File(root / dataset / f"{enc}.h5", "w") as f:
            f.attrs.update({"schema": 1, "encoder": enc, "source": "synthetic", "weights_hash": "0" * 16, "pooling": "mean",
                            "modality": modality, "layers": json.dumps(layers), "dims": json.dumps({k: d for k in layers}),
                            "dtype": "float16", "frames": False, "dataset": dataset})
            f.create_dataset("names", data=np.array(names, dtype=object), dtype=s)
            f.create_dataset("flags", data=np.zeros(N, np.uint8))
            for j, k in enumerate(layers):
                # class signal peaks in the upper-middle layers, as in HuBERT-large on emotion
                snr = 0.15 * np.exp(-((j - 18) / 6.0) ** 2) if len(layers) > 1 else 0.1
                x = rng.standard_normal((N, d), dtype=np.float32) + snr * centers[y]
                f.create_dataset(f"layers/{k}", data=x.astype(np.float16), chunks=(min(N, 1024), d))
            f.create_dataset("failed/names", data=np.array([], dtype=object), dtype=s)
            f.create_dataset("failed/errors", data=np.array([], dtype=object), dtype=s)
    return root


def _timed(cmd: list[str], timeout: float) -> float | None:
    """Wall seconds of ``cmd`` (list argv, no shell), or None when it ran past ``timeout`` (killed).

    Raises:
        RuntimeError: the command failed (its stderr tail is in the message).
    """
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return dt


def main(gpu: bool = False, profile: bool = False, timeout: float = 600.0) -> dict:
    """Run the fusion benchmarks (see module docstring); returns the measured numbers.

    A command still running after ``timeout`` seconds is killed and recorded as
    ``timed_out_after_seconds`` (and fails its target). The 1-minute load average before and
    after is recorded: on a shared box the wall times include other processes' load.

    Raises:
        RuntimeError: ``gpu`` without CUDA, or a command that fails.
    """
    import torch

    from emo.fuse.config import TrainConfig
    from emo.fuse.train import train

    device = "cuda" if gpu else "cpu"
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("--gpu given but CUDA is not available")
    emo = str(Path(sys.executable).with_name("emo"))
    res: dict = {"units": "seconds (wall clock)", "n_samples": N, "n_classes": N_CLASSES,
                 "features": {k: {"layers": f"{v[0][0]}-{v[0][-1]}" if len(v[0]) > 1 else v[0][0], "dim": v[1]} for k, v in ENCODERS.items()},
                 "device": device, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "load_average_1min_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="emo-bench-fuse-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_synthetic(tmp / "features")
        res["write_store_seconds"] = round(time.perf_counter() - t, 2)
        res["store_mb"] = round(sum(p.stat().st_size for p in (tmp / "features").rglob("*.h5")) / 2**20, 1)
        feat = str(tmp / "features")

        cmd = [emo, "fuse", "train", "--dataset", "mer2024_synth", "--features-dir", feat, "--features", "hubert_large",
               "--layers", "16-21", "--features", "clip_vit_l", "--features", "manet", "--head", "afg", "--folds", "5",
               "--device", device, "--out", str(tmp / "run_afg")]
        wall = _timed(cmd, timeout)
        res["train_afg"] = {"command": shlex.join(["emo", *cmd[1:]]).replace(str(tmp), "$TMP"), "target_seconds": TARGET_TRAIN_S,
                            "pass": wall is not None and wall <= TARGET_TRAIN_S}
        if wall is None:
            res["train_afg"]["timed_out_after_seconds"] = timeout
        else:
            m = json.loads((tmp / "run_afg" / "metrics.json").read_text())
            c = json.loads((tmp / "run_afg" / "config.json").read_text())
            res["train_afg"].update({
                "subprocess_seconds": round(wall, 2), "folds": m["n_folds"], "seeds_per_fold": c["training"]["seeds"],
                "batch_size": c["training"]["batch_size"], "epochs_per_model": [e for f in m["folds"] for e in f["epochs"]],
                "waf_mean": round(m["mean"]["waf"], 4)})
        cfg = TrainConfig(head="afg", device=device)
        specs = ["hubert_large:16-21", "clip_vit_l", "manet"]
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        if wall is not None or profile:  # in-process only when the subprocess finished (it takes as long)
            t = time.perf_counter()
            train(feat, "mer2024_synth", specs, cfg, protocol="5", out=tmp / "run_afg2")
            res["train_afg"]["in_process_seconds"] = round(time.perf_counter() - t, 2)
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)

        cmd = [emo, "fuse", "sweep", "--dataset", "mer2024_synth", "--features-dir", feat, "--features", "hubert_large",
               "--layers", "0-24", "--folds", "5", "--head", "linear", "--device", device, "--out", str(tmp / "sweep")]
        wall = _timed(cmd, timeout)
        res["sweep_linear"] = {"command": shlex.join(["emo", *cmd[1:]]).replace(str(tmp), "$TMP"), "target_seconds": TARGET_SWEEP_S,
                               "pass": wall is not None and wall <= TARGET_SWEEP_S}
        done = list((tmp / "sweep" / "cells").glob("*.json"))
        if wall is None:
            res["sweep_linear"].update({"timed_out_after_seconds": timeout, "cells_finished": len(done), "cells": 125})
        else:
            sw = json.loads((tmp / "sweep" / "sweep.json").read_text())
            cell_s = [cc["seconds"] for cc in sw["cells"]]
            res["sweep_linear"].update({
                "subprocess_seconds": round(wall, 2), "cells": len(sw["cells"]),
                "cell_seconds_mean": round(float(np.mean(cell_s)), 3), "cell_train_seconds_total": round(float(np.sum(cell_s)), 2),
                "seeds_per_cell": sw["training"]["seeds"], "batch_size": sw["training"]["batch_size"],
                "best_layer": sw["best"]["window"], "best_waf": round(sw["best"]["waf"], 4)})
            wall2 = _timed(cmd, timeout)
            res["sweep_linear"]["rerun_all_cached_seconds"] = None if wall2 is None else round(wall2, 2)
    res["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    res["pass"] = bool(res["train_afg"]["pass"] and res["sweep_linear"]["pass"])
    return res


if __name__ == "__main__":
    gpu, profile = "--gpu" in sys.argv, "--profile" in sys.argv
    if profile:
        print(json.dumps(main(gpu, profile=True), indent=2))
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        import run_all

        out = run_all.run_one(Path(__file__), gpu, ROOT / "results",
                              shlex.join([".venv/bin/python", "bench/bench_fuse.py", *sys.argv[1:]]))
        print(out.read_text())
