"""Frame-level (sequence) fusion: packed frames, length-aware LSTM encoders, frame normalisation,
the sequence model against utterance pooling, run directories with frames and `emo fuse train --frames`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emo.exitcodes import ExitCode
from emo.extract.datasets.base import Sample, read_csv, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import FeatureStore, StoreWriter
from emo.fuse.training.data import FeatureError, Frames, Normalizer, load_features, read_frames

CLASSES = ["calm", "tense"]


def order_sequences(n: int, d: int = 3, seed: int = 0, layers: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """Class = temporal order of two bursts: class 0 has a burst on dim 0 before one on dim 1, class 1
    the reverse. Both classes hold the same bursts, so the frame mean (any pooling over time) carries
    no class information; only the order does. Returns N arrays (T_i, layers, d) and labels (N,)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    seqs = []
    for i in range(n):
        t = int(rng.integers(6, 15))
        x = rng.normal(scale=0.3, size=(t, layers, d)).astype(np.float32)
        a, b = sorted(rng.choice(t, 2, replace=False))
        first, second = (0, 1) if y[i] == 0 else (1, 0)
        x[a, :, first] += 3.0
        x[b, :, second] += 3.0
        seqs.append(x)
    return seqs, y


def make_frame_dataset(root: Path, n: int = 72, seed: int = 0) -> Path:
    """features/seq/{speech,egemaps}.h5 + manifest: ``speech`` (2 layers "1", "2", 3-d) stored with
    frames (the class is in the burst order), ``egemaps`` utterance-level only (noise)."""
    rng = np.random.default_rng(seed)
    feats = root / "features"
    seqs, y = order_sequences(n, seed=seed, layers=2)
    samples = [Sample(name=f"u{i:03d}", media=None, discrete=CLASSES[y[i]], speaker=f"spk{i % 4}") for i in range(n)]
    write_manifest(feats / "seq", SimpleNamespace(name="seq", root=root, classes=CLASSES), samples)
    w = StoreWriter(feats / "seq" / "speech.h5", {"encoder": "speech", "source": "src-speech", "weights_hash": "h-speech",
                                                  "modality": "audio", "dataset": "seq"}, ["1", "2"], frames=True, dtype="float32")
    for s, x in zip(samples, seqs):
        w.add(s.name, Encoded(layers={k: x[:, j].mean(0) for j, k in enumerate(["1", "2"])},
                              frames={k: x[:, j] for j, k in enumerate(["1", "2"])}))
    w.finalize()
    w.close()
    w = StoreWriter(feats / "seq" / "egemaps.h5", {"encoder": "egemaps", "modality": "audio", "dataset": "seq"}, ["functionals"],
                    dtype="float32")
    for s in samples:
        w.add(s.name, Encoded(layers={"functionals": rng.normal(size=5).astype(np.float32)}))
    w.finalize()
    w.close()
    return feats


# ---------------------------------------------------------------------------
# Containers and normalisation
# ---------------------------------------------------------------------------

def test_frames_pack_select_pad_and_pool():
    from emo.fuse.model.frames import PackedFrames

    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(t, 2, 3)).astype(np.float32) for t in (4, 0, 7, 2)]
    fr = Frames.from_list(seqs)
    assert fr.data.shape == (13, 2, 3) and fr.lengths.tolist() == [4, 0, 7, 2] and fr.frame_shape == (2, 3)
    sub = fr[np.array([2, 0, 1])]
    assert sub.data is fr.data  # a view: no frame copy
    for got, want in zip(sub.to_list(), [seqs[2], seqs[0], seqs[1]]):
        assert np.array_equal(got, want)
    comp = sub.compact()
    assert comp.data.shape[0] == 11 and comp.starts.tolist() == [0, 7, 11]
    assert all(np.array_equal(a, b) for a, b in zip(comp.to_list(), sub.to_list()))
    pooled = fr.mean_pooled()
    assert np.allclose(pooled[2], seqs[2].mean(0)) and np.all(pooled[1] == 0)
    x, lengths = PackedFrames.from_frames(fr)[torch.tensor([3, 2, 1])].padded()
    assert x.shape == (3, 7, 2, 3) and lengths.tolist() == [2, 7, 0]
    assert np.allclose(x[0, :2].numpy(), seqs[3]) and torch.all(x[0, 2:] == 0) and torch.all(x[2] == 0)
    assert np.allclose(x[1].numpy(), seqs[2])
    with pytest.raises(FeatureError, match="sequence 1 has shape"):
        Frames.from_list([np.zeros((3, 4)), np.zeros((3, 5))])


def test_frame_normalisation_uses_all_training_frames():
    rng = np.random.default_rng(2)
    seqs = [rng.normal(loc=5.0, scale=3.0, size=(int(t), 1, 4)).astype(np.float32) for t in rng.integers(1, 30, size=20)]
    fr = Frames.from_list(seqs)
    train = np.arange(12)
    norm = Normalizer("global").fit({"a": fr}, train)
    every = np.concatenate([seqs[i] for i in train])  # frame-weighted, not utterance-weighted
    mean, std = norm.global_["a"]
    assert np.allclose(mean, every.mean(0), atol=1e-5) and np.allclose(std, every.std(0), atol=1e-5)
    out = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict()))).transform({"a": fr[train]})["a"]
    z = np.concatenate(out.to_list())
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-4)
    # per-speaker statistics over each speaker's frames
    spk = ["a" if i % 2 else "b" for i in range(20)]
    sn = Normalizer("speaker").fit({"a": fr}, train, spk)
    za = np.concatenate([s for s, k in zip(sn.transform({"a": fr}, spk)["a"].to_list(), spk) if k == "a"])
    assert np.allclose(za.mean(0), 0, atol=1e-4)


@pytest.mark.parametrize("pooling,bidirectional", [("mean", True), ("last", True), ("last", False)])
def test_frame_lstm_ignores_padding(pooling, bidirectional):
    from emo.fuse.model.frames import FrameLSTM

    torch.manual_seed(0)
    lstm = FrameLSTM(3, 8, bidirectional, pooling).eval()
    assert lstm.out_dim == 8
    a, b = torch.randn(5, 3), torch.randn(9, 3)
    x = torch.full((2, 9, 3), 7.0)  # garbage after each sequence's end
    x[0, :5], x[1] = a, b
    with torch.no_grad():
        both = lstm(x, torch.tensor([5, 9]))
        alone = lstm(a[None], torch.tensor([5]))
    assert both.shape == (2, 8)
    assert torch.allclose(both[0], alone[0], atol=1e-5)


def test_length_sorted_evaluation_batches_keep_row_order(monkeypatch):
    from emo.fuse.training import minibatch as batching
    from emo.fuse.training.fit import predict_model
    from emo.fuse.model.frames import PackedFrames
    from emo.fuse.model.multimodal import FusionModel

    rng = np.random.default_rng(4)
    fr = Frames.from_list([rng.normal(size=(int(t), 2, 3)).astype(np.float32) for t in rng.integers(0, 20, size=17)])
    xs = [PackedFrames.from_frames(fr), torch.as_tensor(rng.normal(size=(17, 1, 4)).astype(np.float32))]
    inputs = [{"name": "s", "modality": "audio", "layers": ["1", "2"], "dim": 3, "frames": True},
              {"name": "u", "modality": "face", "layers": ["0"], "dim": 4}]
    torch.manual_seed(0)
    model = FusionModel(inputs, head="attention", task="discrete", n_classes=3, hidden=8).eval()
    with torch.no_grad():
        whole = torch.softmax(model(xs)["logits"], -1).numpy()
    monkeypatch.setattr(batching, "EVAL_ELEMENTS", 6 * 25)  # at most 25 padded frames of L*D = 6 per batch
    batches = batching.eval_batches(xs)
    assert len(batches) > 3 and sorted(torch.cat(batches).tolist()) == list(range(17))
    assert all(len(b) * max(int(fr.lengths[b].max()), 1) <= 25 or len(b) == 1 for b in batches)
    assert np.allclose(predict_model(model, xs)["probs"], whole, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_frame_lstm_equals_packed_bidirectional_lstm(pooling):
    """The masked two-LSTM implementation computes what a packed bidirectional nn.LSTM computes."""
    from torch import nn

    from emo.fuse.model.frames import FrameLSTM

    torch.manual_seed(1)
    m = FrameLSTM(5, 12, True, pooling)
    ref = nn.LSTM(5, 6, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, n).copy_(getattr(m.fwd, n))
            getattr(ref, n + "_reverse").copy_(getattr(m.bwd, n))
        x, lengths = torch.randn(4, 11, 5), torch.tensor([11, 3, 7, 1])
        out, (h, _) = ref(nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        if pooling == "last":
            want = h.transpose(0, 1).reshape(4, -1)
        else:
            want = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0].sum(1) / lengths[:, None]
        assert torch.allclose(m(x, lengths), want, atol=1e-5)


# ---------------------------------------------------------------------------
# Learning: order in time is only visible to the sequence model
# ---------------------------------------------------------------------------

def test_sequence_model_beats_utterance_pooling_on_temporal_order():
    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.cv import train_cv
    from emo.fuse.eval.protocols import stratified_kfold

    seqs, y = order_sequences(120)
    fr = Frames.from_list(seqs)
    folds = stratified_kfold(y, 3, 0)
    kw = dict(head="transformer", hidden=16, epochs=30, patience=8, seeds=1, lr=1e-2, dropout=0.1, normalize="global", batch_size=16)
    inp = {"name": "speech", "modality": "audio", "layers": ["0"], "dim": 3}
    seq = train_cv({"speech": fr}, [{**inp, "frames": True}], {"discrete": y}, folds,
                   TrainConfig(frames=True, frame_pooling="last", **kw), n_classes=2)
    pooled = train_cv({"speech": fr.mean_pooled()}, [{**inp, "frames": False}], {"discrete": y}, folds, TrainConfig(**kw), n_classes=2)
    assert seq.pooled["uar"] > 0.85, seq.pooled
    assert pooled.pooled["uar"] < 0.7, pooled.pooled
    assert seq.pooled["uar"] > pooled.pooled["uar"] + 0.2


# ---------------------------------------------------------------------------
# Loading, run directories, CLI
# ---------------------------------------------------------------------------

def test_load_features_with_frames(tmp_path):
    feats = make_frame_dataset(tmp_path, n=12)
    fs = load_features(feats, "seq", ["speech:1-2", "egemaps"], frames=True)
    assert isinstance(fs.blocks["speech"], Frames) and fs.blocks["egemaps"].shape == (12, 1, 5)
    assert [i["frames"] for i in fs.inputs] == [True, False] and fs.inputs[0]["dim"] == 3
    st = FeatureStore(feats / "seq" / "speech.h5")
    want = st.read_frames("2", fs.names)
    assert all(np.array_equal(a[:, 1], b) for a, b in zip(fs.blocks["speech"].to_list(), want))
    assert fs.subset(np.array([3, 1])).blocks["speech"].lengths.tolist() == [len(want[3]), len(want[1])]
    assert isinstance(load_features(feats, "seq", ["speech"]).blocks["speech"], np.ndarray)  # frames off: utterance vectors
    with pytest.raises(FeatureError, match="egemaps.h5 has no frame-level features"):
        load_features(feats, "seq", ["speech", "egemaps"], frames=["egemaps"])
    with pytest.raises(FeatureError, match="none of the stores"):
        load_features(feats, "seq", ["egemaps"], frames=True)
    assert read_frames(st, ["1"], ["u002"]).frame_shape == (1, 3)


def test_run_round_trip_with_frames(tmp_path):
    from emo.fuse.config import TrainConfig
    from emo.fuse.run import RunError, load_run
    from emo.fuse.training.train import train

    feats = make_frame_dataset(tmp_path)
    cfg = TrainConfig(head="afg", structure=3, layer_weights=True, frames=True, epochs=6, patience=6,
                      hidden=8, seeds=2, lr=1e-2, dropout=0.1, normalize="global")
    out = tmp_path / "run"
    train(feats, "seq", ["speech:1-2", "egemaps"], cfg, protocol="3", out=out)
    conf = json.loads((out / "config.json").read_text())
    assert [i["frames"] for i in conf["inputs"]] == [True, False] and conf["training"]["frames"] is True
    assert conf["model"]["frame_pooling"] == "mean" and len(conf["folds"][0]["normalization"]["global"]["speech"]["mean"]) == 2
    run = load_run(out)
    assert run.frame_inputs == ["speech"]
    rows = read_csv(out / "predictions.csv", [])
    st, eg = FeatureStore(feats / "seq" / "speech.h5"), FeatureStore(feats / "seq" / "egemaps.h5")
    for k, entry in enumerate(conf["folds"]):
        fold_rows = [r for r in rows if r["fold"] == entry["name"]]
        names = [r["name"] for r in fold_rows]
        seqs = [np.stack([a, b], axis=1) for a, b in zip(st.read_frames("1", names), st.read_frames("2", names))]
        got = run.predict({"speech/frames": seqs, "egemaps": eg.read(["functionals"], names)}, folds=[k])["probs"]
        want = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in fold_rows])
        assert np.allclose(got, want, atol=2e-6), entry["name"]
    names = ["u000", "u001", "u002"]
    allp = run.predict({"speech": read_frames(st, ["1", "2"], names), "egemaps": eg.read(["functionals"], names)})["probs"]
    assert allp.shape == (3, 2) and np.allclose(allp.sum(1), 1, atol=1e-5)
    with pytest.raises(RunError, match="frame-level input"):
        run.predict({"speech": st.read(["1", "2"], names), "egemaps": eg.read(["functionals"], names)})
    with pytest.raises(RunError, match=r"the run needs \(T, 2, 3\)"):
        run.predict({"speech": st.read_frames("1", names), "egemaps": eg.read(["functionals"], names)})


def test_cli_fuse_train_transformer_frames(tmp_path):
    from emo.cli import app

    feats = make_frame_dataset(tmp_path, n=96)
    out = tmp_path / "runs" / "frames"
    args = ["fuse", "train", "--dataset", "seq", "--features-dir", str(feats), "--features", "speech:2", "--features", "egemaps",
            "--head", "transformer", "--folds", "3", "--normalize", "global", "--epochs", "30", "--patience", "8", "--hidden", "16",
            "--seeds", "1", "--lr", "0.01", "--dropout", "0.1", "--batch-size", "16", "--out", str(out)]
    r = CliRunner().invoke(app, args + ["--frames", "--frame-pooling", "last"])
    assert r.exit_code == 0, r.output
    conf = json.loads((out / "config.json").read_text())
    assert "--frames" in conf["command"] and conf["model"]["inputs"][0]["frames"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 96 and metrics["pooled"]["uar"] > 0.75, metrics["pooled"]
    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "seq", "--features-dir", str(feats), "--features", "egemaps",
                                 "--frames", "--out", str(tmp_path / "bad")])
    assert r.exit_code == ExitCode.ERROR and "emo extract --frames" in r.output


def test_score_extracts_frames_for_a_frames_run(tmp_path):
    """Real extraction end to end: chirps whose class is the pitch direction (rising vs falling: the
    same frequencies in the opposite order), MFCC frames + eGeMAPS functionals, `emo fuse train
    --frames`, then `score` extracts frames for the frame-level input only and reproduces the run's
    predictions on the stored features."""
    from scipy.io import wavfile

    from emo.cli import app
    from emo.extract.datasets.folder import Folder
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.fuse.run import load_run
    from emo.pipeline import score

    rng = np.random.default_rng(3)
    sr, data = 16000, tmp_path / "chirps"
    data.mkdir()
    rows = []
    for i in range(36):
        lo, hi = rng.uniform(200, 400), rng.uniform(1200, 2000)
        label = "up" if i % 2 else "down"
        f = np.linspace(lo, hi, int(0.5 * sr)) if label == "up" else np.linspace(hi, lo, int(0.5 * sr))
        x = 0.5 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.01 * rng.normal(size=f.size)
        wavfile.write(data / f"c{i:02d}.wav", sr, (x * 32767).astype(np.int16))
        rows.append(f"c{i:02d},{label}")
    (data / "labels.csv").write_text("name,discrete\n" + "\n".join(rows) + "\n")
    feats = tmp_path / "features"
    Extractor([parse_encoder_spec("mfcc")], out=feats, frames=True, progress=False).run(Folder(data, dataset_name="folder"))
    Extractor([parse_encoder_spec("egemaps")], out=feats, progress=False).run(Folder(data, dataset_name="folder"))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "folder", "--features-dir", str(feats), "--features", "mfcc",
                                 "--features", "egemaps", "--frames", "--head", "transformer", "--folds", "3", "--normalize", "global",
                                 "--epochs", "5", "--patience", "5", "--hidden", "8", "--seeds", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    run = load_run(out)
    assert run.frame_inputs == ["mfcc"]
    cache = tmp_path / "cache"
    files = [data / "c00.wav", data / "c01.wav", data / "c07.wav"]
    summary = score(files, out, tmp_path / "pred.csv", cache=cache, progress=False)
    assert summary["ok"] == 3 and not summary["failed"]
    assert FeatureStore(cache / "score" / "mfcc.h5").has_frames and not FeatureStore(cache / "score" / "egemaps.h5").has_frames
    got = np.array([[float(r[f"prob_{c}"]) for c in run.classes] for r in read_csv(tmp_path / "pred.csv", [])])
    names = ["c00", "c01", "c07"]
    st = FeatureStore(feats / "folder" / "mfcc.h5")
    want = run.predict({"mfcc": read_frames(st, st.layers, names),
                        "egemaps": FeatureStore(feats / "folder" / "egemaps.h5").read(None, names)})["probs"]
    assert np.allclose(got, want, atol=1e-5)
