"""Run directories (save → load_run → predict round trip), the store loader, and `emo fuse train` via the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from emo.exitcodes import ExitCode
from emo.extract.datasets.base import Sample, read_csv, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter

CLASSES = ["neutral", "angry", "happy"]


def make_dataset(root: Path, n: int = 90, n_speakers: int = 5, seed: int = 0, skip: dict[str, set[str]] | None = None,
                 splits: bool = False) -> Path:
    """Write features/synth/{hubert_large,egemaps}.h5 + manifest: hubert layers 1-3 (8-d, layer 2
    informative, speaker offsets), egemaps (6-d, weakly informative). Returns the features dir."""
    rng = np.random.default_rng(seed)
    feats = root / "features"
    y = np.arange(n) % 3
    spk = [f"spk{i % n_speakers}" for i in rng.permutation(n)]
    offs = {s: rng.normal(scale=2.0, size=8) for s in set(spk)}
    centers = rng.normal(size=(3, 8)) * 2.0
    samples = [Sample(name=f"u{i:03d}", media=None, discrete=CLASSES[y[i]], valence=float(y[i] - 1), speaker=spk[i],
                      split=("test" if i % 5 == 0 else "train") if splits else None) for i in range(n)]
    write_manifest(feats / "synth", SimpleNamespace(name="synth", root=root, classes=CLASSES), samples)
    stores = {"hubert_large": (["1", "2", "3"], 8, "audio"), "egemaps": (["functionals"], 6, "audio")}
    for enc, (layers, dim, modality) in stores.items():
        prov = {"encoder": enc, "source": f"src-{enc}", "weights_hash": f"hash-{enc}", "modality": modality, "dataset": "synth"}
        w = StoreWriter(feats / "synth" / f"{enc}.h5", prov, layers, dtype="float32")
        for i, s in enumerate(samples):
            if skip and s.name in skip.get(enc, set()):
                continue
            vec = {}
            for k in layers:
                base = centers[y[i]] if k == "2" else rng.normal(size=8) * 0.5
                v = base[:dim] * (0.5 if enc == "egemaps" else 1.0) + rng.normal(size=dim) + offs[spk[i]][:dim]
                vec[k] = v.astype(np.float32)
            w.add(s.name, Encoded(layers=vec))
        w.finalize()
        w.close()
    return feats


FAST = ["--epochs", "8", "--patience", "8", "--hidden", "16", "--seeds", "2", "--lr", "0.01"]


def test_train_writes_run_and_load_run_reproduces_predictions(tmp_path):
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.data import load_features
    from emo.fuse.run import load_run
    from emo.fuse.training.train import train

    feats = make_dataset(tmp_path)
    cfg = TrainConfig(head="afg", structure=3, epochs=8, patience=8, hidden=16, seeds=2, lr=1e-2, normalize="speaker")
    out = tmp_path / "runs" / "r1"
    result, config = train(feats, "synth", ["hubert_large:1-3", "egemaps"], cfg, protocol="speaker", out=out)
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.json", "predictions.csv", *(f"fold-{k}.safetensors" for k in range(5))}
    conf = json.loads((out / "config.json").read_text())
    assert conf["feature_specs"] == ["hubert_large=src-hubert_large:1-3", "egemaps=src-egemaps"]
    assert conf["inputs"][0]["provenance"]["weights_hash"] == "hash-hubert_large"
    assert conf["classes"] == CLASSES and conf["normalization"]["mode"] == "speaker"
    assert len(conf["folds"][0]["normalization"]["global"]["hubert_large"]["mean"]) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["folds"]) == 5 and metrics["n"] == 90
    assert metrics["mean"]["uar"] == pytest.approx(np.mean([f["uar"] for f in metrics["folds"]]))
    rows = read_csv(out / "predictions.csv", [])
    assert len(rows) == 90 and {"name", "fold", "true", "pred", "prob_neutral", "prob_angry", "prob_happy"} <= set(rows[0])

    run = load_run(out)
    assert run.classes == CLASSES and run.task == "discrete" and run.feature_specs == conf["feature_specs"]
    fs = load_features(feats, "synth", ["hubert_large:1-3", "egemaps"])
    pos = {n: i for i, n in enumerate(fs.names)}
    for k, entry in enumerate(conf["folds"]):
        fold_rows = [r for r in rows if r["fold"] == entry["name"]]
        idx = np.array([pos[r["name"]] for r in fold_rows])
        got = run.predict({n: b[idx] for n, b in fs.blocks.items()}, [fs.speakers[i] for i in idx], folds=[k])["probs"]
        want = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in fold_rows])
        assert np.allclose(got, want, atol=2e-6), entry["name"]
        assert [CLASSES[j] for j in got.argmax(1)] == [r["pred"] for r in fold_rows]
    # unknown speakers fall back to the fold's global statistics (documented), all folds averaged
    allp = run.predict({n: b[:4] for n, b in fs.blocks.items()}, ["nobody"] * 4)["probs"]
    assert allp.shape == (4, 3) and np.allclose(allp.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="egemaps"):
        run.predict({"hubert_large": fs.blocks["hubert_large"]})
    # the model learns the informative layer on held-out speakers
    assert result.pooled["uar"] > 0.6


def test_predefined_test_set_is_scored_by_averaged_fold_models(tmp_path):
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.data import load_features
    from emo.fuse.run import load_run
    from emo.fuse.training.train import train

    feats = make_dataset(tmp_path, splits=True)
    cfg = TrainConfig(head="attention", task="discrete+valence", decoder="jdev", loss_weighting="uncertainty",
                      epochs=6, patience=6, hidden=16, seeds=1, lr=1e-2, normalize="global")
    out = tmp_path / "run"
    result, _ = train(feats, "synth", ["hubert_large:2", "egemaps"], cfg, protocol="3", out=out, test_splits=["test"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 72 and "test" in metrics and "mer2023_score" in metrics["test"]
    rows = [r for r in read_csv(out / "predictions.csv", []) if r["fold"] == "test"]
    assert len(rows) == 18 and "valence" in rows[0]
    fs = load_features(feats, "synth", ["hubert_large:2", "egemaps"])
    idx = np.array([fs.names.index(r["name"]) for r in rows])
    pred = load_run(out).predict({n: b[idx] for n, b in fs.blocks.items()})
    assert np.allclose(pred["probs"], [[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows], atol=2e-6)
    assert np.allclose(pred["valence"], [float(r["valence"]) for r in rows], atol=2e-6)


def test_cli_fuse_train(tmp_path):
    from emo.cli import app

    feats = make_dataset(tmp_path)
    out = tmp_path / "runs" / "cli"
    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "egemaps",
                                 "--features", "hubert_large:1-3", "--head", "afg", "--task", "discrete",
                                 "--folds", "3", "--normalize", "global", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert "mean ± std" in r.output and "uar" in r.output
    conf = json.loads((out / "config.json").read_text())
    assert conf["feature_specs"] == ["egemaps=src-egemaps", "hubert_large=src-hubert_large:1-3"]
    assert conf["protocol"]["folds"] == "3" and conf["command"][:3] == ["emo", "fuse", "train"]
    assert len(json.loads((out / "metrics.json").read_text())["folds"]) == 3



def test_cli_layers_only_with_a_single_features(tmp_path):
    """--layers is unambiguous: it applies to the one --features; with several it is refused (no argv guessing)."""
    from emo.cli import app

    feats = make_dataset(tmp_path)
    base = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--folds", "3", *FAST]
    r = CliRunner().invoke(app, [*base, "--features", "egemaps", "--features", "hubert_large", "--layers", "1-3",
                                 "--out", str(tmp_path / "r1")])
    assert r.exit_code == 2 and "write the layers into each spec" in r.output
    r = CliRunner().invoke(app, [*base, "--features", "hubert_large:1-2", "--layers", "1-3", "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "already names layers" in r.output
    r = CliRunner().invoke(app, [*base, "--features", "hubert_large", "--layers", "2-3", "--out", str(tmp_path / "r3")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r3" / "config.json").read_text())["feature_specs"] == ["hubert_large=src-hubert_large:2-3"]


def test_cli_refuses_mismatched_stores_unless_intersect(tmp_path):
    from emo.cli import app

    feats = make_dataset(tmp_path, skip={"egemaps": {"u000", "u001"}})
    args = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "egemaps",
            "--features", "hubert_large:2", "--folds", "3", "--out", str(tmp_path / "r"), *FAST]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == ExitCode.ERROR and "--align intersect" in r.output and "egemaps.h5: 88 samples" in r.output
    with pytest.warns(UserWarning, match="88 samples every store has"):
        r = CliRunner().invoke(app, args + ["--align", "intersect", "--head", "linear"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 88


def test_loader_errors_name_the_problem(tmp_path):
    from emo.fuse.training.data import FeatureError, load_features, parse_feature_spec

    feats = make_dataset(tmp_path, n=30)
    with pytest.raises(FeatureError, match="no layer.*7"):
        load_features(feats, "synth", ["hubert_large:7"])
    with pytest.raises(FeatureError, match="source"):
        load_features(feats, "synth", ["hubert_large=other/model:1"])
    with pytest.raises(FeatureError, match="more than once"):
        load_features(feats, "synth", ["egemaps", "egemaps"])
    fs = load_features(feats, "synth", ["hubert_large:3,1"])
    assert fs.blocks["hubert_large"].shape == (30, 2, 8) and fs.inputs[0]["layers"] == ["3", "1"]
    assert parse_feature_spec("hubert_large=/ckpt/x:16-18").layers == ("16", "17", "18")
    assert parse_feature_spec("hubert_large=/ckpt/x:16-18").source == "/ckpt/x"
