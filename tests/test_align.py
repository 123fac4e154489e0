"""CLIPL-A (MRAC '24 eq. 5-7): InfoNCE, the vision MLP, retrieval, training, the derived store."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.types import Encoded
from emo.extract.store import FeatureStore, StoreWriter
from emo.fuse.methods.align import (
    CLIPLA, MAX_LOGIT_SCALE, AlignError, VisionMLP, align, info_nce, load_alignment, retrieval_metrics, train_alignment,
    write_aligned_store,
)


@pytest.fixture(autouse=True)
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_info_nce_equals_hand_computation_3x3():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    s = 10.0
    cos = np.array([[1, 1 / math.sqrt(2), 0], [0, 1 / math.sqrt(2), 1], [1 / math.sqrt(2), 1, 1 / math.sqrt(2)]])
    S = s * cos
    row = np.mean([-(S[i, i] - math.log(np.exp(S[i]).sum())) for i in range(3)])
    col = np.mean([-(S[i, i] - math.log(np.exp(S[:, i]).sum())) for i in range(3)])
    assert float(info_nce(v, a, s)) == pytest.approx((row + col) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        info_nce(v, a[:, :1], s)


def test_vision_mlp_is_eq5_and_logit_scale_is_clamped():
    torch.manual_seed(0)
    m = VisionMLP(5, 3)
    x = torch.randn(4, 5)
    by_hand = torch.relu(torch.relu(x @ m.w2.weight.T + m.w2.bias) @ m.w1.weight.T + m.w1.bias)
    torch.testing.assert_close(m(x), by_hand)
    c = CLIPLA(5, 3)
    assert c.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        c.log_scale.fill_(10.0)
    assert c.logit_scale().item() == pytest.approx(MAX_LOGIT_SCALE)


def test_retrieval_metrics_and_chance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 4))
    m = retrieval_metrics(a, a)
    assert m["audio_to_video"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.0}
    assert m["chance"] == {"R@1": 0.05, "R@5": 0.25, "R@10": 0.5, "median_rank": 10.5}
    rev = retrieval_metrics(a, a[::-1].copy())  # clip i's audio is clip N-1-i's video
    assert rev["audio_to_video"]["R@1"] <= 0.1


def _pairs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    audio = z @ rng.normal(size=(6, 10)) + 0.1 * rng.normal(size=(n, 10))
    video = z @ rng.normal(size=(6, 12)) + 0.1 * rng.normal(size=(n, 12))
    return video.astype(np.float32), audio.astype(np.float32)


def test_training_improves_held_out_retrieval():
    video, audio = _pairs()
    model, info = train_alignment(video, audio, epochs=80, batch_size=64, lr=5e-3, seed=0)
    assert info["n_holdout"] == 30 and info["n_train"] == 270
    before, after = info["retrieval"]["before"]["holdout"], info["retrieval"]["after"]["holdout"]
    assert after["audio_to_video"]["R@1"] > max(2 * before["audio_to_video"]["R@1"], 3 * after["n"] ** -1)
    assert info["loss_last_epoch"] < info["loss_first_epoch"]
    with pytest.raises(AlignError, match="at least 4"):
        train_alignment(video[:3], audio[:3])
    with pytest.raises(AlignError, match="same N"):
        train_alignment(video, audio[:-1])


def _stores(root, video, audio, no_face=()):
    feats = root / "features"
    samples = [Sample(f"c{i:03d}", None) for i in range(len(video))]  # unlabelled clips
    write_manifest(feats / "av", SimpleNamespace(name="av", root=root, classes=None), samples)
    for enc, x, mod, layer in (("faces", video, "face", "proj"), ("egemaps", audio, "audio", "functionals")):
        prov = {"encoder": enc, "source": f"src-{enc}", "weights_hash": f"hash-{enc}", "modality": mod, "dataset": "av"}
        with StoreWriter(feats / "av" / f"{enc}.h5", prov, [layer], dtype="float32") as w:
            for s, v in zip(samples, x):
                flags = {"no_face"} if (enc == "faces" and s.name in no_face) else set()
                w.add(s.name, Encoded({layer: np.zeros_like(v) if flags else v}, flags=flags))
            w.finalize()
    return feats


def test_align_run_and_derived_store(tmp_path):
    from emo.fuse.training.data import load_features

    video, audio = _pairs(120)
    feats = _stores(tmp_path, video, audio, no_face={"c005"})
    cfg = align(feats, "av", "faces:proj", "egemaps", tmp_path / "clipla", epochs=30, batch_size=64, lr=3e-3, command=["emo", "x"])
    assert cfg["excluded_all_zero"] == ["c005"] and cfg["n_train"] + cfg["n_holdout"] == 119 and cfg["labels_read"] is False
    assert cfg["source"]["weights_hash"] == "hash-faces" and len(cfg["source"]["sha256"]) == 64
    saved = json.loads((tmp_path / "clipla" / "align.json").read_text())
    assert saved["mlp_sha256"] == cfg["mlp_sha256"]
    path = write_aligned_store(tmp_path / "clipla")
    assert path.name == "faces+clipla.h5"
    st = FeatureStore(path)
    assert st.layers == ["clipla"] and st.dims == {"clipla": 10} and len(st) == 120
    assert st.attrs["modality"] == "face" and st.attrs["weights_hash"] == cfg["mlp_sha256"][:16]
    d = json.loads(st.attrs["derived_from"])
    assert d["source"]["sha256"] == cfg["source"]["sha256"] and d["target"]["encoder"] == "egemaps"
    assert st.flags("c005") == {"no_face"} and not st.read(["clipla"], ["c005"]).any()
    model, _ = load_alignment(tmp_path / "clipla")
    vm, vs = (np.asarray(cfg["stats"][k], np.float32) for k in ("video_mean", "video_std"))
    with torch.no_grad():
        expect = model.mlp(torch.as_tensor((video[:3] - vm) / vs)).numpy()
    np.testing.assert_allclose(st.read(["clipla"], ["c000", "c001", "c002"])[:, 0], expect, rtol=1e-5, atol=1e-6)
    fs = load_features(feats, "av", ["faces+clipla", "egemaps"])
    assert fs.blocks["faces+clipla"].shape == (120, 1, 10) and fs.inputs[0]["modality"] == "face"
    # a changed MLP file is refused
    (tmp_path / "clipla" / "clipla.safetensors").write_bytes(b"x" + (tmp_path / "clipla" / "clipla.safetensors").read_bytes())
    with pytest.raises(AlignError, match="SHA-256"):
        write_aligned_store(tmp_path / "clipla")
    with pytest.raises(AlignError, match="one layer"):
        _two = StoreWriter(feats / "av" / "two.h5", {"encoder": "two", "source": "s", "weights_hash": "h"}, ["1", "2"], dtype="float32")
        _two.add("c000", Encoded({"1": np.ones(2, np.float32), "2": np.ones(2, np.float32)}))
        _two.finalize()
        _two.close()
        align(feats, "av", "two", "egemaps", tmp_path / "bad")


def test_align_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from emo.fuse.semi_cli import align_cmd

    app = typer.Typer()
    app.command("align")(align_cmd)
    app.command("unused")(lambda: None)
    video, audio = _pairs(60)
    feats = _stores(tmp_path, video, audio)
    r = CliRunner().invoke(app, ["align", "--dataset", "av", "--features-dir", str(feats), "--source", "faces:proj",
                                 "--target", "egemaps", "--out", str(tmp_path / "run"), "--epochs", "5", "--write"])
    assert r.exit_code == 0, r.output
    assert "chance" in r.output and "faces+clipla" in r.output and (feats / "av" / "faces+clipla.h5").is_file()
    r = CliRunner().invoke(app, ["align", "--dataset", "av", "--features-dir", str(feats), "--source", "nope",
                                 "--target", "egemaps", "--out", str(tmp_path / "run2")])
    assert r.exit_code == 2 and "nope" in r.output
