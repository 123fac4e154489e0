"""Run checkpoints: canonical safetensors bytes (bit-identical files for identical training), and
load_run after a non-atomic swap."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
from test_fuse_run import make_dataset


def _header(raw: bytes) -> dict:
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    return json.loads(raw[8:8 + n])


def test_safetensors_bytes_are_canonical_and_readable(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from emo.fsio import safetensors_bytes, write_safetensors

    rng = np.random.default_rng(0)
    tensors = {"s0.b": rng.normal(size=3).astype(np.float32), "s0.w": rng.normal(size=(3, 5)).astype(np.float32),
               "s1.idx": np.arange(4, dtype=np.int64)}
    meta = {f"k{i}": str(i * i) for i in range(8)}
    outs = set()
    for i in range(16):  # the library orders its metadata map by hash: vary the insertion order too
        keys = list(meta)
        np.random.default_rng(i).shuffle(keys)
        outs.add(safetensors_bytes(tensors, {k: meta[k] for k in keys}))
    assert len(outs) == 1
    raw = outs.pop()
    assert list(_header(raw)["__metadata__"]) == sorted(meta)
    p = write_safetensors(tmp_path / "x.safetensors", tensors, meta)
    assert p.read_bytes() == raw
    back = load_file(str(p))
    assert set(back) == set(tensors) and all(np.array_equal(back[k], tensors[k]) for k in tensors)
    with safe_open(str(p), "np") as fh:
        assert fh.metadata() == meta
    # no metadata at all: still a valid file
    assert set(load_file(str(write_safetensors(tmp_path / "y.safetensors", tensors)))) == set(tensors)


def test_same_training_twice_gives_bitwise_identical_checkpoints(tmp_path):
    """Two trainings with the same settings: checkpoint files and their recorded SHA-256 are identical
    (before the fix the safetensors metadata order changed between writes, so the crash proof saw
    'bitwise=False' for runs whose weights were equal)."""
    from emo.fuse.config import TrainConfig
    from emo.fuse.run import load_run
    from emo.fuse.training.train import train

    feats = make_dataset(tmp_path, n=45)
    cfg = TrainConfig(head="mlp", epochs=3, patience=3, hidden=8, seeds=1, lr=1e-2, normalize="global", threads=1)
    outs = [tmp_path / "runs" / f"r{i}" for i in range(2)]
    for out in outs:
        train(feats, "synth", ["egemaps"], cfg, protocol="5", out=out, resume=False)
    ck = sorted(p.name for p in outs[0].glob("fold-*.safetensors"))
    assert len(ck) == 5
    for name in ck:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    c0, c1 = (json.loads((o / "config.json").read_text()) for o in outs)
    assert [f["sha256"] for f in c0["folds"]] == [f["sha256"] for f in c1["folds"]]
    assert c0["folds"][0]["sha256"] == hashlib.sha256((outs[0] / ck[0]).read_bytes()).hexdigest()
    assert (outs[0] / "predictions.csv").read_bytes() == (outs[1] / "predictions.csv").read_bytes()
    load_run(outs[1]).models()  # digests verify, weights load


def test_load_run_names_the_previous_run_left_by_a_non_atomic_swap(tmp_path):
    """Where the file system has no atomic exchange, a kill between the two renames of
    emo.fsio.atomic_dir leaves no run at its path: load_run names the complete previous run."""
    import pytest

    from emo.fuse.run import RunError, load_run

    feats = make_dataset(tmp_path, n=45)
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.train import train

    run = tmp_path / "runs" / "r"
    train(feats, "synth", ["egemaps"], TrainConfig(head="mlp", epochs=2, hidden=8, seeds=1, threads=1), protocol="5",
          out=run, resume=False)
    old = run.parent / ".r.old-x1y2"
    run.rename(old)
    with pytest.raises(RunError, match=r"killed while replacing it.*\.r\.old-x1y2"):
        load_run(run)
    old.rename(run)
    load_run(run).models()
    with pytest.raises(RunError, match="not found"):
        load_run(tmp_path / "runs" / "nothing")

