"""MER 2025 / MER 2026 end to end on folders built from the real av clips: `emo extract` (the
`make features` command), `emo fuse train` (Track 1 discrete, discrete+VAD through the NRC-VAD
bridge) and `emo score` (VAD, k-means label and open-vocabulary words)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_emo as run
from mer_fixtures import build_mer_pool

from emo.extract.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
MER = ["neutral", "angry", "happy", "sad", "worried", "surprise"]




@pytest.mark.slow
def test_mer2025_track1_extract_train_score(shared, tmp_path):
    data = tmp_path / "mer2025"
    info = build_mer_pool(shared / "av", data, 2025, wavs=2)
    feats = tmp_path / "f1"
    run("extract", "--dataset", "mer2025", "--root", str(data), "--track", "1", "--encoder", "egemaps",
        "--out", str(feats), "--device", "cpu", "--no-progress")
    st = FeatureStore(feats / "mer2025" / "egemaps.h5")
    assert len(st) == len(info["labelled"]) + len(info["candidates"])
    meta = json.loads((feats / "mer2025" / "dataset.json").read_text())
    assert meta["options"]["track"] == "1" and meta["valence_scale"] == [-5.0, 5.0]

    # the pre-extracted wav (the clip's audio at half amplitude) is what the audio encoder read
    from emo.extract.encoders.acoustic import EGeMAPSEncoder
    from emo.extract.media import load_audio
    from emo.extract.types import AudioInput

    enc = EGeMAPSEncoder("egemaps")
    name = info["wav"][0]
    video = next((data / "video").glob(f"{name}.*"))
    from_wav = enc.encode([AudioInput(name, load_audio(data / "audio" / f"{name}.wav", 16000))])[0].layers
    from_video = enc.encode([AudioInput(name, load_audio(video, 16000))])[0].layers
    stored = st.read(names=[name])[0, 0]
    key = next(iter(from_wav))
    np.testing.assert_allclose(stored, from_wav[key], rtol=1e-5, atol=1e-5)
    assert not np.allclose(from_wav[key], from_video[key], rtol=1e-3, atol=1e-3)

    # Track 1: discrete, and discrete + VAD with lexicon targets in the same run
    lex = shared / "lexicon" / "NRC-VAD-Lexicon.txt"
    r1 = tmp_path / "runs" / "t1"
    run("fuse", "train", "--dataset", "mer2025", "--features-dir", str(feats), "--features", "egemaps", "--head", "mlp",
        "--task", "discrete+vad", "--vad-targets", "lexicon", "--lexicon", str(lex), "--folds", "3", "--epochs", "20",
        "--seeds", "1", "--out", str(r1))
    metrics = json.loads((r1 / "metrics.json").read_text())
    config = json.loads((r1 / "config.json").read_text())
    pooled = metrics["pooled"]
    for k in ("uar", "precision_macro", "recall_macro", "vad_l2", "vad_mse", "vad_mae", "vad_pcc", "vad_ccc"):
        assert k in pooled and np.isfinite(pooled[k]), k
    assert pooled["recall_macro"] == pytest.approx(pooled["uar"])
    vt = config["vad_targets"]
    assert vt["source"] == "lexicon" and vt["scale"] == [-1.0, 1.0] and len(vt["lexicon_sha256"]) == 64
    with open(r1 / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(info["labelled"])  # candidates are never trained on
    happy = next(r for r in rows if r["true"] == "happy")
    from emo.lexicon import label_vad

    np.testing.assert_allclose([float(happy[f"{d}_true"]) for d in ("valence", "arousal", "dominance")],
                               label_vad("happy", lex), atol=1e-5)
    neutral = next(r for r in rows if r["true"] == "neutral")
    assert [float(neutral[f"{d}_true"]) for d in ("valence", "arousal", "dominance")] == [0.0, 0.0, 0.0]

    # a valence head keeps MER's [-5, 5] scale, and the run says so
    rv = tmp_path / "runs" / "val"
    run("fuse", "train", "--dataset", "mer2025", "--features-dir", str(feats), "--features", "egemaps", "--head", "linear",
        "--task", "valence", "--folds", "3", "--epochs", "5", "--seeds", "1", "--out", str(rv))
    assert json.loads((rv / "config.json").read_text())["valence_scale"] == [-5.0, 5.0]

    # score the candidates: VAD, its k-means label and its words
    preds = tmp_path / "preds.csv"
    run("score", "--dataset", "mer2025", "--root", str(data), "--track", "1", "--run", str(r1), "--features-dir", str(feats),
        "--out", str(preds), "--radius", "0.3", "--no-progress")
    with open(preds, newline="") as fh:
        out = list(csv.DictReader(fh))
    # a challenge dataset scores its candidates by default (--subset candidates): no training clip in-sample
    assert sorted(r["name"] for r in out) == sorted(info["candidates"]) and {r["split"] for r in out} == {"candidate"}
    ok = [r for r in out if r["status"] == "ok"]
    assert ok and all(r["vad_label"] in MER and r["pred"] in MER for r in ok)
    assert any(r["vad_words"] for r in ok)
    from emo.lexicon.bridge import VADBridge

    bridge = VADBridge(MER, radius=0.3, lexicon=lex)
    r0 = ok[0]
    dec = bridge.decode([[float(r0[d]) for d in ("valence", "arousal", "dominance")]])
    assert r0["vad_label"] == dec.labels[0] and r0["vad_words"] == ";".join(w for w, _ in dec.words[0])


@pytest.mark.slow
def test_mer2026_track1_make_features_and_train(shared, tmp_path):
    """The headline command on the MER 2026 layout: `make features DATASET=mer2026 DATA_ROOT=... TRACK=1`."""
    data = tmp_path / "mer2026"
    info = build_mer_pool(shared / "av", data, 2026, wavs=0)
    feats = tmp_path / "f"
    r = subprocess.run(["make", "-C", str(ROOT), "features", "DATASET=mer2026", f"DATA_ROOT={data}", f"OUT={feats}",
                        "MODELS=egemaps", "TRACK=1", "DEVICE=cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    st = FeatureStore(feats / "mer2026" / "egemaps.h5")
    assert len(st) == len(info["labelled"]) + len(info["candidates"])  # candidates come in unlabelled
    r = tmp_path / "run"
    run("fuse", "train", "--dataset", "mer2026", "--features-dir", str(feats), "--features", "egemaps", "--head", "mlp",
        "--folds", "3", "--epochs", "10", "--seeds", "1", "--allow-rare-classes", "--out", str(r))  # the fixture has 1 'worried' clip
    pooled = json.loads((r / "metrics.json").read_text())["pooled"]
    assert 0 <= pooled["precision_macro"] <= 1 and len(pooled["confusion"]) == 6
    assert json.loads((r / "config.json").read_text())["classes"] == MER
    with open(r / "predictions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(info["labelled"])


@pytest.mark.slow
def test_mer2025_track2_manifest_carries_the_words(shared, tmp_path):
    """Track 2 extracted under its own --name: the manifest holds each clip's open-vocabulary words,
    which score against themselves with emotion-wheel F1 = 1."""
    from emo.extract.datasets import read_manifest
    from emo.fuse.eval.metrics import wheel_metrics

    data = tmp_path / "mer2025"
    info = build_mer_pool(shared / "av", data, 2025, wavs=0)
    feats = tmp_path / "f"
    run("extract", "--dataset", "mer2025", "--root", str(data), "--track", "2", "--subset", "labeled", "--name", "mer2025_t2",
        "--encoder", "egemaps", "--out", str(feats), "--device", "cpu", "--no-progress")
    meta, samples = read_manifest(feats / "mer2025_t2")
    assert meta["classes"] is None and meta["options"]["track"] == "2"
    assert len(samples) == len(info["labelled"]) and all(s.emotions for s in samples)
    words = [s.emotions for s in samples]
    m = wheel_metrics(words, words, shared / "emotion_wheel")
    assert m["wheel_f1"] == pytest.approx(1.0)
    r = run("fuse", "train", "--dataset", "mer2025_t2", "--features-dir", str(feats), "--features", "egemaps",
            "--folds", "3", "--out", str(tmp_path / "run"), ok=(1,))
    assert "no class list" in r.stderr  # a discrete task on open-vocabulary labels is refused, not guessed

    # Track 2 multi-label (issue 14's task) with the emotion-wheel metric and word forms
    wheel = shared / "emotion_wheel"
    out = tmp_path / "ml"
    run("fuse", "train", "--dataset", "mer2025_t2", "--features-dir", str(feats), "--features", "egemaps", "--head", "mlp",
        "--task", "multilabel", "--emotion-wheel", str(wheel), "--folds", "3", "--epochs", "10", "--seeds", "1",
        "--tune-threshold", "--allow-rare-classes", "--out", str(out))  # the fixture has 1 'worried' clip (its 3 words: 1 clip each)
    pooled = json.loads((out / "metrics.json").read_text())["pooled"]
    config = json.loads((out / "config.json").read_text())
    for k in ("wheel_f1", "wheel_precision", "wheel_recall", "wheel1_f1", "wheel5_f1"):
        assert 0.0 <= pooled[k] <= 1.0, k
    assert config["emotion_wheel"]["dir"] == str(wheel) and config["emotion_wheel"]["level"] == "level1"
    from emo.lexicon.wheel import load_wheels

    w = load_wheels(wheel)
    want = sorted({w.base_form(x) for s in samples for x in s.emotions})
    assert config["classes"] == want and "joy" in want and "joyful" not in want  # word forms merged

    # emo score on the multi-label run: a `labels` column at the run's (tuned) threshold
    zeta = config["training"]["threshold"]
    assert config["threshold_tuning"]["threshold"] == zeta and config["threshold_tuning"]["given"] == 0.18
    preds = tmp_path / "ml_scores.csv"
    run("score", str(data / "video"), "--run", str(out), "--out", str(preds), "--no-progress")
    with open(preds, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
    assert rows
    from emo.fuse.methods.multilabel import predict_multihot

    classes = config["classes"]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    want = predict_multihot(probs, zeta)
    assert [r["labels"] for r in rows] == [";".join(c for c, p in zip(classes, w) if p) for w in want]
