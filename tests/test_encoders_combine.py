"""Layer combinations (``mean(21-24)``, ``sum(..)``, ``mean(lastN)``) computed from a layer-wise store at read
time, recorded in a run's provenance, and refused where they cannot be computed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emo.extract.encoders.base import Encoded
from emo.extract.layers import LayerSpecError, parse_layers, select_layers
from emo.extract.store import FeatureStore, StoreError, StoreWriter

from helpers import toy_provenance


def _store(path, n=12, layers=("0", "1", "2", "3", "4"), d=6, frames=False, seed=0):
    rng = np.random.default_rng(seed)
    vals = {}
    with StoreWriter(path, toy_provenance(encoder=path.stem, modality="audio"), list(layers), frames=frames, dtype="float32") as w:
        for i in range(n):
            name = f"s{i:02d}"
            vals[name] = {k: rng.normal(size=d).astype(np.float32) for k in layers}
            fr = {k: rng.normal(size=(3 + i % 2, d)).astype(np.float32) for k in layers} if frames else None
            w.add(name, Encoded(layers=vals[name], frames=fr))
        w.finalize()
    return vals


def test_grammar():
    assert parse_layers("16-21,mean(21,22,23,24),sum(last2)") == [str(i) for i in range(16, 22)] + ["mean(21-24)", "sum(last2)"]
    assert parse_layers("mean(0,6,12)") == ["mean(0,6,12)"]
    for bad in ("mean()", "mean(proj)", "mean(last0)", "max(1-2)", "mean(4-1)"):
        with pytest.raises(LayerSpecError):
            parse_layers(bad)
    # extraction stores the layers a combination needs; the combination is made when they are read
    assert select_layers(["0", "mean(1-2)", "sum(last2)"], ["0", "1", "2", "3", "proj"], "x") == ["0", "1", "2", "3"]
    with pytest.raises(LayerSpecError, match="only 4 numbered"):
        select_layers(["mean(last5)"], ["0", "1", "2", "3", "proj"], "x")


def test_store_reads_combinations(tmp_path):
    vals = _store(tmp_path / "enc.h5", frames=True)
    s = FeatureStore(tmp_path / "enc.h5")
    names = ["s03", "s00"]
    x = s.read(["mean(1-3)", "0", "sum(last2)", "mean(last5)"], names)
    for r, n in enumerate(names):
        v = vals[n]
        assert np.allclose(x[r, 0], (v["1"] + v["2"] + v["3"]) / 3, atol=1e-6)
        assert np.allclose(x[r, 1], v["0"])
        assert np.allclose(x[r, 2], v["3"] + v["4"], atol=1e-6)
        assert np.allclose(x[r, 3], sum(v[k] for k in "01234") / 5, atol=1e-6)
    fr = s.read_frames("mean(0,4)", names)
    f0, f4 = s.read_frames("0", names), s.read_frames("4", names)
    assert all(np.allclose(a, (b + c) / 2, atol=1e-6) for a, b, c in zip(fr, f0, f4))
    with pytest.raises(StoreError, match="no layer"):
        s.read(["mean(3-7)"])
    with pytest.raises(StoreError, match="only 5 numbered"):
        s.read(["mean(last6)"])


def test_fuse_train_with_last_four_mean_records_the_combination(tmp_path):
    """A MERTools-style last-four mean and a layer window from one store, one command apart."""
    from emo.extract.datasets.base import Sample, write_manifest
    from emo.fuse.training.data import load_features
    from helpers import run_emo

    feats = tmp_path / "features"
    ds = feats / "toy"
    n = 60
    rng = np.random.default_rng(1)
    y = np.arange(n) % 3
    centers = rng.normal(size=(3, 6)) * 2
    with StoreWriter(ds / "enc.h5", toy_provenance(encoder="enc", modality="audio"), [str(i) for i in range(6)],
                     dtype="float32") as w:
        for i in range(n):
            w.add(f"u{i:02d}", Encoded(layers={str(k): (centers[y[i]] * (k / 5) + rng.normal(size=6)).astype(np.float32)
                                               for k in range(6)}))
        w.finalize()
    samples = [Sample(name=f"u{i:02d}", media=None, speaker=f"spk{i % 4}", discrete=["a", "b", "c"][y[i]]) for i in range(n)]

    class Adapter:
        name = dataset = "toy"
        root = tmp_path
        classes = ["a", "b", "c"]
        ad_hoc = True

    write_manifest(ds, Adapter(), samples)
    fs = load_features(feats, "toy", ["enc:mean(last4)"])
    inp = fs.inputs[0]
    assert inp.layers == ["mean(2-5)"] and inp.spec.endswith(":mean(2-5)") and fs.blocks["enc"].shape == (n, 1, 6)
    assert inp.provenance["layer_combinations"] == {"mean(2-5)": {"op": "mean", "layers": ["2", "3", "4", "5"]}}
    st = FeatureStore(ds / "enc.h5")
    assert np.allclose(fs.blocks["enc"][:, 0], st.read(["2", "3", "4", "5"], fs.names).mean(1), atol=1e-6)
    for spec in ("enc:mean(last4)", "enc:2-5"):
        out = tmp_path / "runs" / spec.replace(":", "_").replace("(", "").replace(")", "")
        run_emo("fuse", "train", "--dataset", "toy", "--features-dir", str(feats), "--features", spec, "--head", "afg",
                "--task", "discrete", "--folds", "2", "--out", str(out), "--epochs", "3", "--hidden", "8", "--seeds", "1")
        conf = json.loads((out / "config.json").read_text())
        (ci,) = conf["inputs"]
        if "mean" in spec:
            assert ci["layers"] == ["mean(2-5)"]
            assert ci["provenance"]["layer_combinations"]["mean(2-5)"]["layers"] == ["2", "3", "4", "5"]
        else:
            assert ci["layers"] == ["2", "3", "4", "5"] and "layer_combinations" not in ci["provenance"]


def test_score_a_run_trained_on_a_combination(shared, tmp_path):
    """emo score recomputes mean(3-4) from media (extracting layers 3 and 4) and reuses a matching store:
    both give the run's predictions."""
    import csv
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from typer.testing import CliRunner

    from emo.cli import app
    from helpers import link_clips
    from tiny_encoders import tiny_wavlm

    def run_emo(*args):  # in-process: five CLI calls, one torch import
        r = CliRunner().invoke(app, list(args))
        assert r.exit_code == 0, r.output
        return r

    ckpt = tiny_wavlm(tmp_path / "wavlm")
    wavs = sorted((shared / "emodb" / "wav").glob("*.wav"))
    pick = [w for w in wavs if w.stem[5] == "W"][:6] + [w for w in wavs if w.stem[5] == "N"][:6]
    root = link_clips(pick, tmp_path / "clips")
    (root / "labels.csv").write_text("name,discrete\n" + "".join(f"{w.stem},{w.stem[5]}\n" for w in pick), encoding="utf-8")
    feats = tmp_path / "features"
    run_emo("extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder",
            f"wavlm_large={ckpt}:mean(3-4),2", "--out", str(feats), "--device", "cpu", "--no-progress")
    assert FeatureStore(feats / "folder" / "wavlm_large.h5").layers == ["3", "4", "2"]  # the layers, not the combination
    run = tmp_path / "run"
    run_emo("fuse", "train", "--dataset", "folder", "--features-dir", str(feats), "--features", "wavlm_large:mean(3-4),2",
            "--head", "mlp", "--folds", "2", "--epochs", "3", "--hidden", "8", "--seeds", "1", "--out", str(run))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run_emo("score", str(root), "--run", str(run), "--out", str(a), "--device", "cpu", "--no-progress")
    run_emo("score", str(root), "--run", str(run), "--out", str(b), "--device", "cpu", "--no-progress",
            "--features-dir", str(feats / "folder"))
    ra, rb = (list(csv.DictReader(open(p, encoding="utf-8"))) for p in (a, b))
    assert len(ra) == 12 and all(r["status"] == "ok" for r in ra)
    for x, y in zip(sorted(ra, key=lambda r: r["name"]), sorted(rb, key=lambda r: r["name"])):
        probs = [k for k in x if k.startswith("prob_")]
        assert len(probs) == 2 and x["pred"] == y["pred"]
        assert all(abs(float(x[k]) - float(y[k])) < 1e-3 for k in probs)
