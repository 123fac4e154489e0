"""Multi-task runs (issue 15, MEIJU): task parsing, labels, JRBM, the joint module, run directories."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.methods.multitask import (
    LabelTask,
    MultiConfig,
    is_multitask,
    jrbm,
    parse_tasks,
    task_metrics,
    task_targets,
    train_multitask,
    train_multitask_cv,
)
from emo.fuse.eval.protocols import Fold
from emo.fuse.config import TrainConfig
from emo.fuse.eval.cv import train_cv

EMO = ["neutral", "angry", "happy"]
INTENTS = ["agreeing", "questioning"]


def synth(n: int = 150, seed: int = 0):
    """Features (N, 2, 8): emotion lives in dims 0-2, intent in dims 3-4 (and partly in the emotion)."""
    rng = np.random.default_rng(seed)
    ye = np.arange(n) % 3
    yi = ((np.arange(n) // 3) % 2 + (ye == 2)) % 2
    x = rng.normal(size=(n, 2, 8)).astype(np.float32)
    r = np.arange(n)
    x[r, 0, ye] += 2.0
    x[r, 1, 3 + yi] += 1.5
    return x, ye.astype(np.int64), yi.astype(np.int64)


def small_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"head": "mlp", "hidden": 16, "dropout": 0.1, "epochs": 6, "patience": 6, "seeds": 2,
                          "batch_size": 32, "lr": 0.01, "threads": 1, **kw})


INPUTS = [{"name": "enc", "modality": "audio", "layers": ["1", "2"], "dim": 8}]
TASKS = [LabelTask("emotion", "discrete", tuple(EMO)), LabelTask("intent", "intent", tuple(INTENTS))]


def folds(n: int) -> list[Fold]:
    idx = np.arange(n)
    return [Fold("f0", idx[idx % 5 >= 2], idx[idx % 5 == 1], idx[idx % 5 == 0]),
            Fold("f1", idx[idx % 5 != 1][: n // 2], idx[idx % 5 == 0], idx[idx % 5 == 1])]


def test_jrbm_formula():
    assert jrbm([0.5, 0.25]) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert jrbm([0.6, 0.6]) == pytest.approx(0.6)
    assert jrbm([0.0, 0.9]) == 0.0
    assert jrbm([0.5, 0.25, 0.5]) == pytest.approx(3 / (2 + 4 + 2))
    assert jrbm([0.4, 0.9]) < np.mean([0.4, 0.9])  # the harmonic mean punishes the weaker task
    with pytest.raises(ValueError):
        jrbm([])
    with pytest.raises(ValueError):
        jrbm([1.2, 0.5])
    m = task_metrics({"emotion": np.eye(3)[[0, 1, 2, 0]], "intent": np.eye(2)[[0, 0, 1, 1]]},
                     {"emotion": np.array([0, 1, 2, 1]), "intent": np.array([0, 1, 1, 1])}, TASKS)
    assert m["emotion_micro_f1"] == pytest.approx(0.75) and m["intent_micro_f1"] == pytest.approx(0.75)
    assert m["jrbm"] == pytest.approx(2 * m["emotion_waf"] * m["intent_waf"] / (m["emotion_waf"] + m["intent_waf"]))
    assert m["jrbm_micro"] == pytest.approx(0.75)


def test_parse_tasks_and_targets():
    assert not is_multitask("discrete") and not is_multitask("discrete+valence")
    assert is_multitask("emotion+intent") and is_multitask("discrete", ["discrete=emotion"])
    assert parse_tasks("emotion+intent", ["intent=intention"]) == [("emotion", "discrete"), ("intent", "intention")]
    for bad, lc, msg in (("emotion+emotion", [], "twice"), ("emotion+valence", [], "regression"),
                         ("emotion+intent", ["x=y"], "not one of the tasks"), ("emotion+intent", ["intent"], "NAME=COLUMN")):
        with pytest.raises(ValueError, match=msg):
            parse_tasks(bad, lc)
    samples = [Sample("a", None, discrete="happy", labels={"intention": "questioning"}),
               Sample("b", None, discrete="angry", labels={"intention": "agreeing"}),
               Sample("c", None, discrete="neutral", labels=None)]
    tasks, y, mask = task_targets(samples, parse_tasks("emotion+intent", ["intent=intention"]), EMO)
    assert tasks[0].classes == tuple(EMO) and tasks[1].classes == ("agreeing", "questioning")
    assert y["emotion"].tolist() == [2, 1, 0] and y["intent"].tolist() == [1, 0, -1]
    assert mask.tolist() == [True, True, False]
    from emo.fuse.training.data import FeatureError

    with pytest.raises(FeatureError, match="no sample has a 'topic' label"):
        task_targets(samples, parse_tasks("emotion+topic"), EMO)


@pytest.mark.slow
def test_joint_none_equals_independent_single_task_heads():
    x, ye, yi = synth()
    f = folds(len(x))
    cfg = small_cfg(epochs=4, patience=4)
    multi = train_multitask_cv({"enc": x}, INPUTS, {"emotion": ye, "intent": yi}, TASKS, f, cfg, MultiConfig("none"),
                               test_idx=np.arange(10))
    for t, yt, c in (("emotion", ye, 3), ("intent", yi, 2)):
        single = train_cv({"enc": x}, INPUTS, {"discrete": yt}, f, cfg, c, test_idx=np.arange(10))
        np.testing.assert_allclose(multi.oof[f"probs/{t}"], single.oof["probs"], atol=1e-6)
        np.testing.assert_allclose(multi.test[f"probs/{t}"], single.test["probs"], atol=1e-6)
        for k in ("waf", "uar", "accuracy"):
            assert multi.pooled[f"{t}_{k}"] == pytest.approx(single.pooled[k])
    assert multi.pooled["jrbm"] == pytest.approx(jrbm([multi.pooled["emotion_waf"], multi.pooled["intent_waf"]]))


def test_crossattn_keeps_frozen_task_models_and_learns():
    x, ye, yi = synth(180, seed=1)
    f = folds(len(x))[:1]
    cfg = small_cfg(seeds=1, epochs=10, patience=10)
    y = {"emotion": ye, "intent": yi}
    none = train_multitask_cv({"enc": x}, INPUTS, y, TASKS, f, cfg, MultiConfig("none"))
    joint = train_multitask_cv({"enc": x}, INPUTS, y, TASKS, f, cfg, MultiConfig("crossattn", joint_hidden=16))
    s_none, s_joint = none.states[0][0], joint.states[0][0]
    task_keys = [k for k in s_none if not k.startswith("joint.")]
    assert task_keys and all(np.array_equal(s_none[k].numpy(), s_joint[k].numpy()) for k in task_keys)  # frozen
    assert any(k.startswith("joint.attn.") for k in s_joint) and any(k.startswith("joint.gate.") for k in s_joint)
    gates = joint.diagnostics[0]["joint_gates"][0]
    assert len(gates) == 2 and all(0 < g < 1 for g in gates)
    assert joint.pooled["emotion_waf"] > 0.5 and joint.pooled["intent_waf"] > 0.5  # well above chance
    shared = train_multitask_cv({"enc": x}, INPUTS, y, TASKS, f, cfg, MultiConfig("shared"))
    assert set(shared.oof) >= {"probs/emotion", "probs/intent"} and shared.oof["probs/intent"].shape == (len(f[0].test), 2)
    with pytest.raises(ValueError, match="at least two tasks"):
        train_multitask_cv({"enc": x}, INPUTS, {"emotion": ye}, TASKS[:1], f, cfg, MultiConfig("crossattn"))


def _dataset(root: Path, n: int = 120) -> Path:
    x, ye, yi = synth(n, seed=2)
    feats = root / "features"
    samples = [Sample(f"u{i:03d}", None, discrete=EMO[ye[i]], speaker=f"s{i % 4}",
                      labels={"intention": INTENTS[yi[i]]} if i != 7 else None) for i in range(n)]
    write_manifest(feats / "synth", SimpleNamespace(name="synth", root=root, classes=EMO), samples)
    w = StoreWriter(feats / "synth" / "enc.h5", {"encoder": "enc", "source": "s", "weights_hash": "h", "modality": "audio",
                                                 "dataset": "synth"}, ["1", "2"], dtype="float32")
    for i, s in enumerate(samples):
        w.add(s.name, Encoded(layers={"1": x[i, 0], "2": x[i, 1]}))
    w.finalize()
    w.close()
    return feats


def test_train_multitask_writes_run(tmp_path):
    feats = _dataset(tmp_path)
    out = tmp_path / "run"
    result, config = train_multitask(feats, "synth", ["enc"], small_cfg(seeds=1), "emotion+intent", ["intent=intention"],
                                     MultiConfig("crossattn", 16), protocol="3", out=out, command=["emo", "fuse", "train"])
    assert config["protocol"]["n_missing_a_label"] == 1 and config["protocol"]["n_labelled"] == 119
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"jrbm", "jrbm_micro", "emotion_waf", "intent_waf"} <= set(metrics["mean"])
    assert metrics["pooled"]["jrbm"] == pytest.approx(jrbm([metrics["pooled"]["emotion_waf"], metrics["pooled"]["intent_waf"]]))
    conf = json.loads((out / "config.json").read_text())
    assert conf["kind"] == "multitask" and conf["tasks"][1] == {"name": "intent", "column": "intention", "classes": INTENTS}
    assert conf["joint"]["joint"] == "crossattn" and len(conf["folds"]) == 3
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["name", "fold", "emotion_true", "emotion_pred"] and "intent_prob_questioning" in header
    from safetensors.numpy import load_file

    keys = load_file(str(out / "fold-0.safetensors"))
    assert any(k.startswith("s0.emotion.") for k in keys) and any(k.startswith("s0.joint.") for k in keys)


@pytest.mark.slow
def test_cli_two_tasks_joint_and_errors(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    feats = _dataset(tmp_path)
    out = tmp_path / "cli"
    base = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "enc", "--folds", "3",
            "--head", "mlp", "--hidden", "16", "--epochs", "4", "--seeds", "1", "--lr", "0.01"]
    r = CliRunner().invoke(app, [*base, "--task", "emotion+intent", "--label-column", "intent=intention", "--joint", "crossattn",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "jrbm" in r.output and "intent_waf" in r.output and "mean ± std" in r.output
    conf = json.loads((out / "config.json").read_text())
    assert "--joint" in conf["command"] and conf["joint"]["joint"] == "crossattn"
    assert "jrbm" in json.loads((out / "metrics.json").read_text())["pooled"]
    bad = CliRunner().invoke(app, [*base, "--task", "discrete", "--joint", "crossattn", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "needs several tasks" in bad.output
    bad = CliRunner().invoke(app, [*base, "--task", "emotion+topic", "--out", str(tmp_path / "y")])
    assert bad.exit_code == 1 and "no sample has a 'topic' label" in bad.output


@pytest.mark.slow
def test_load_run_refuses_multitask_runs_clearly(tmp_path):
    from emo.fuse.run import RunError, load_run

    feats = _dataset(tmp_path)
    train_multitask(feats, "synth", ["enc"], small_cfg(seeds=1, epochs=2), "emotion+intent", ["intent=intention"],
                    protocol="3", out=tmp_path / "run")
    with pytest.raises(RunError, match="multi-task run"):
        load_run(tmp_path / "run")


@pytest.mark.slow
def test_sweep_two_tasks_selects_on_jrbm(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    feats = _dataset(tmp_path)
    out = tmp_path / "sweep"
    r = CliRunner().invoke(app, ["fuse", "sweep", "--dataset", "synth", "--features-dir", str(feats), "--features", "enc",
                                 "--task", "emotion+intent", "--label-column", "intent=intention", "--folds", "3",
                                 "--epochs", "3", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["metric"] == "jrbm" and summary["tasks"][1]["column"] == "intention"
    assert {"jrbm_mean", "emotion_waf_mean", "intent_waf_mean"} <= set(summary["rows"][0])
    assert "jrbm mean" in r.output


@pytest.mark.slow
def test_cli_reproduces_a_multitask_run_from_its_config(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    feats = _dataset(tmp_path)
    base = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "enc", "--folds", "3",
            "--head", "mlp", "--hidden", "16", "--epochs", "3", "--seeds", "1", "--lr", "0.01"]
    r = CliRunner().invoke(app, [*base, "--task", "emotion+intent", "--label-column", "intent=intention", "--joint", "shared",
                                 "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in ("a", "b"))
    assert b["pooled"]["jrbm"] == pytest.approx(a["pooled"]["jrbm"])
    assert json.loads((tmp_path / "b" / "config.json").read_text())["joint"]["joint"] == "shared"
