"""Resumable cross-validation (emo.fuse.training.resume): finished folds kept, configuration changes refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emo.fuse.training.resume import FoldCache, ResumeError, partial_dir, rows_hash


def test_fold_cache_round_trip_and_refusal(tmp_path):
    out = tmp_path / "runs" / "r"
    fp = {"training": {"lr": 0.001, "seeds": 2}, "folds": [rows_hash(np.arange(5))]}
    c = FoldCache(out, fp)
    assert c.dir == partial_dir(out) and c.finished() == []
    states = [{"head.weight": torch.randn(3, 4)}, {"head.weight": torch.randn(3, 4)}]
    outs = {"probs": np.random.rand(5, 3).astype(np.float32)}
    tests = [{"probs": np.random.rand(2, 3).astype(np.float32)}] * 2
    c.save(0, states, outs, tests, {"name": "fold-0", "metrics": {"uar": 0.5}})
    again = FoldCache(out, fp)  # same configuration: the finished fold is there
    assert again.finished() == [0] and again.has(0) and not again.has(1)
    st, o, t, row = again.load(0)
    assert len(st) == 2 and torch.equal(st[1]["head.weight"], states[1]["head.weight"])
    assert np.array_equal(o["probs"], outs["probs"]) and len(t) == 2 and row["metrics"]["uar"] == 0.5
    changed = {"training": {"lr": 0.0001, "seeds": 2}, "folds": fp["folds"]}
    with pytest.raises(ResumeError, match=r"training.lr: 0.001 -> 0.0001.*--restart"):
        FoldCache(out, changed)
    fresh = FoldCache(out, changed, restart=True)
    assert fresh.finished() == []
    fresh.remove()
    assert not partial_dir(out).exists()


def test_incomplete_fold_does_not_count(tmp_path):
    c = FoldCache(tmp_path / "r", {"a": 1})
    (c.dir / "fold-3.safetensors").write_bytes(b"partial")  # killed before the json was written
    assert not c.has(3) and c.finished() == []


def _cfg():
    from emo.fuse.config import TrainConfig

    # the sequential loop: it resumes model by model (the batched path trains all folds at once and
    # resumes whole folds from the same cache)
    return TrainConfig(head="mlp", hidden=16, epochs=6, patience=6, seeds=2, lr=0.01, batch_size=16, batched=False)


def test_resume_after_kill_equals_uninterrupted(tmp_path, monkeypatch):
    """A run killed after two finished folds continues from the third and writes the same predictions
    (bitwise) as an uninterrupted run; the finished folds are not retrained."""
    import emo.fuse.eval.cv as cv
    from emo.fuse.training.train import train
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    ref, _ = train(feats, "synth", ["hubert_large:1-3"], _cfg(), protocol="speaker", out=tmp_path / "ref")

    real_fit, calls = cv.fit_model, {"n": 0}

    def dying_fit(*a, **k):
        calls["n"] += 1
        if calls["n"] > 4:  # 2 folds x 2 seeds finished, then the kill
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(cv, "fit_model", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        train(feats, "synth", ["hubert_large:1-3"], _cfg(), protocol="speaker", out=tmp_path / "run")
    assert not (tmp_path / "run").exists() and len(list(partial_dir(tmp_path / "run").glob("*/fold-*.json"))) == 2
    monkeypatch.setattr(cv, "fit_model", real_fit)
    lines: list[str] = []
    res, _ = train(feats, "synth", ["hubert_large:1-3"], _cfg(), protocol="speaker", out=tmp_path / "run", progress=lines.append)
    assert sum("resumed" in ln for ln in lines) == 2
    assert np.array_equal(res.oof["index"], ref.oof["index"]) and np.array_equal(res.oof["probs"], ref.oof["probs"])
    assert (tmp_path / "ref" / "predictions.csv").read_text() == (tmp_path / "run" / "predictions.csv").read_text()
    assert not partial_dir(tmp_path / "run").exists()  # cleaned up once the run directory is written

    monkeypatch.setattr(cv, "fit_model", dying_fit)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        train(feats, "synth", ["hubert_large:1-3"], _cfg(), protocol="speaker", out=tmp_path / "run2")
    from dataclasses import replace
    with pytest.raises(ResumeError, match="training.lr"):
        train(feats, "synth", ["hubert_large:1-3"], replace(_cfg(), lr=0.02), protocol="speaker", out=tmp_path / "run2")
    # another emo (trainer sources) or another torch left the partial folds: refused, named, not mixed
    import emo.fuse.training.resume as resume

    real_code = resume.trainer_code()
    for key, other in (("fuse_sources", "0" * 16), ("torch", "1.0.0")):
        monkeypatch.setattr(resume, "trainer_code", lambda k=key, o=other: {**real_code, k: o})
        with pytest.raises(ResumeError, match=rf"trainer_code\.{key}"):
            train(feats, "synth", ["hubert_large:1-3"], _cfg(), protocol="speaker", out=tmp_path / "run2")
    assert len(real_code["fuse_sources"]) == 16 and real_code["torch"] == __import__("torch").__version__
    pkg = Path(resume.__file__).resolve().parents[2]
    assert all((pkg / m).is_file() for m in resume.TRAINER_MODULES), resume.TRAINER_MODULES  # a renamed module would drop out of the hash


def test_repeats_report_mean_std_and_interval(tmp_path):
    import json

    from emo.fuse.training.train import train
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    res, config = train(feats, "synth", ["hubert_large:1-3"], _cfg(), protocol="5", out=tmp_path / "rep", repeats=3)
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    uar = m["repeats"]["metrics"]["uar"]
    assert uar["n"] == 3 and len(set(uar["values"])) > 1  # different seeds and folds give different draws
    assert uar["mean"] == pytest.approx(np.mean(uar["values"])) and uar["values"][0] == pytest.approx(res.pooled["uar"], abs=1e-6)
    ci = m["interval"]
    assert ci["metric"] == "uar" and ci["group"] == "speaker" and ci["low"] <= ci["estimate"] <= ci["high"]
    assert ci["estimate"] == pytest.approx(uar["mean"])
    subs = sorted(p.name for p in (tmp_path / "rep" / "repeats").iterdir())
    assert subs == ["seed-1000", "seed-2000"] and (tmp_path / "rep" / "repeats" / "seed-1000" / "predictions.csv").is_file()


def test_cli_repeats_prints_interval(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    args = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "egemaps", "--head", "mlp",
            "--hidden", "8", "--epochs", "3", "--patience", "3", "--seeds", "1", "--folds", "3", "--repeats", "2",
            "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "over 2 repeats" in r.output and "bootstrap interval of uar" in r.output
    # each fold's metrics printed once: in the table, not in the progress lines
    progress = [ln for ln in r.output.splitlines() if "trained in" in ln]
    assert len(progress) == 6 and not any(m in ln for ln in progress for m in ("uar", "waf", "accuracy"))
