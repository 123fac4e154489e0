"""Options generated from dataclasses (emo.optspec / emo.cliargs): grouped help, --config through
click's default_map on every generated command, one place for the rules, --layers as a structured
field, and TrainConfig split into parts while old flat config.json files still load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, fields

import pytest
from typer.testing import CliRunner

from emo.exitcodes import ExitCode
from emo.fuse.config import HeadConfig, MethodConfig, OptimConfig, TrainConfig
from emo.fuse.options import RunOptions

#: TrainConfig's fields at 20e060e, before the split (a run's config.json "training" mapping).
OLD_FLAT = ("head structure afg_scores layer_weights layer_weights_init task decoder loss_weighting class_weights hidden dropout "
            "epochs lr weight_decay batch_size patience seeds seed normalize label_smoothing device threads frames "
            "frame_bidirectional frame_pooling batched optimizer vad_targets emotion_wheel threshold tune_threshold univa "
            "univa_lambda univa_delta univa_tau univa_eta va_source frame_encoder frame_tokens max_frame_tokens").split()
NEW_FIELDS = {"recipe", "l2"}  # issue 24: the training recipe (a run without them trained with AdamW)


def test_fuse_train_help_is_grouped_by_concern_when_piped():
    env = {**os.environ, "COLUMNS": "100"}
    r = subprocess.run([sys.executable, "-m", "emo.cli", "fuse", "train", "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    sections = [line[:-1] for line in r.stdout.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections[:7] == ["Inputs", "Head", "Task", "Optimisation", "Protocol", "Methods", "Output"], sections
    head = r.stdout.split("\nHead:")[1].split("\nTask:")[0]
    assert "--head" in head and "--structure" in head and "--lr" not in head
    assert "One of: afg, attention, transformer, mlp, linear, univa" in " ".join(head.split())  # the registry, not prose


def test_trainconfig_parts_partition_the_flat_fields_and_old_config_loads():
    parts = [{f.name for f in fields(c)} for c in (HeadConfig, OptimConfig, MethodConfig)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == {f.name for f in fields(TrainConfig)} == set(OLD_FLAT) | NEW_FIELDS
    cfg = TrainConfig(head="mlp", lr=0.01, univa_tau=0.2)
    assert asdict(cfg.head_part())["head"] == "mlp" and cfg.optim_part().lr == 0.01 and cfg.method_part().univa_tau == 0.2
    old = {n: getattr(TrainConfig(), n) for n in OLD_FLAT}  # a config.json "training" written by the old code
    assert TrainConfig(**old) == TrainConfig()
    assert cfg.model_args([], 4) == HeadConfig.model_args(cfg.head_part(), [], 4, cfg.task)


def test_rules_live_on_the_config():
    with pytest.raises(ValueError, match="--head must be one of afg"):
        TrainConfig(head="nope").validate()
    with pytest.raises(ValueError, match="--structure must be one of 1, 2, 3"):
        TrainConfig(structure=4).validate()
    with pytest.raises(ValueError, match="--decoder jdev needs --task discrete\\+valence"):
        TrainConfig(decoder="jdev").validate()
    run = RunOptions(dataset="d", features=["egemaps"], out="o", joint="shared")
    with pytest.raises(ValueError, match="--joint shared needs several tasks"):
        run.validate(TrainConfig())
    with pytest.raises(ValueError, match="missing --dataset"):
        RunOptions(features=["x"], out="o").validate(TrainConfig())


def test_layers_is_a_structured_field():
    spec, = RunOptions(features=["hubert_large=/ckpt"], layers=["16-18"]).feature_specs()
    assert (spec.name, spec.source, spec.layers) == ("hubert_large", "/ckpt", ("16", "17", "18"))
    with pytest.raises(ValueError, match="single --features"):
        RunOptions(features=["a", "b"], layers=["1"]).feature_specs()
    with pytest.raises(ValueError, match="already names layers"):
        RunOptions(features=["a:1-2"], layers=["1"]).feature_specs()


@pytest.mark.parametrize("path", [("fuse", "sweep"), ("fuse", "search"), ("tune", "hlft"), ("extract",)])
def test_every_generated_command_takes_config(path, tmp_path):
    from emo.cli import app

    bad = tmp_path / "exp.json"
    bad.write_text(json.dumps({"no_such_option": 1}))
    r = CliRunner().invoke(app, [*path, "--config", str(bad)])
    assert r.exit_code == ExitCode.USAGE and "exp.json" in r.output and "no_such_option" in r.output, r.output
    good = tmp_path / "exp.yaml"
    good.write_text("dataset: nowhere\n")  # a required option from the file: the command runs past parsing
    r = CliRunner().invoke(app, [*path, "--config", str(good), "--help"])
    assert r.exit_code == 0


def test_sweep_config_file_values_reach_the_command(tmp_path):
    from test_fuse_run import make_dataset

    from emo.cli import app
    from emo.cliargs import command_line  # noqa: F401  (the sweep records its command through it)

    feats = make_dataset(tmp_path, n=45)
    exp = tmp_path / "sweep.yaml"
    out = tmp_path / "sw"
    exp.write_text(f"dataset: synth\nfeatures: hubert_large\nfeatures-dir: {feats}\nfolds: '3'\nout: {out}\nprogress: false\n")
    r = CliRunner().invoke(app, ["fuse", "sweep", "--config", str(exp), "--window", "2"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["options"]["window"] == 2 and summary["options"]["folds"] == "3" and summary["options"]["progress"] is False
    # the resolved options read back: the same sweep again (every cell reused)
    r = CliRunner().invoke(app, ["fuse", "sweep", "--config", str(out / "sweep.json")])
    assert r.exit_code == 0 and "0 cell(s) trained" in r.output, r.output


def test_a_run_with_the_old_flat_config_still_loads_and_predicts(tmp_path):
    """config.json keeps the flat ``training`` mapping of the code before the split: a run written
    then (the same keys, OLD_FLAT) loads and predicts, and reproduces through --config."""
    import numpy as np
    from test_fuse_run import make_dataset

    from emo.cli import app
    from emo.fuse.training.data import load_features
    from emo.fuse.run import load_run

    feats = make_dataset(tmp_path, n=45)
    run = tmp_path / "run"
    args = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "egemaps", "--epochs", "3",
            "--seeds", "1", "--hidden", "8", "--folds", "3"]
    r = CliRunner().invoke(app, [*args, "--out", str(run)])
    assert r.exit_code == 0, r.output
    conf = json.loads((run / "config.json").read_text())
    assert set(conf["training"]) == set(OLD_FLAT) | NEW_FIELDS
    # the old code wrote the same mapping (field order then: OLD_FLAT); rewrite it in that order
    conf["training"] = {k: conf["training"][k] for k in OLD_FLAT}
    conf.pop("content_sha256", None)  # the old code wrote no content seal either
    (run / "config.json").write_text(json.dumps(conf))
    fs = load_features(feats, "synth", conf["feature_specs"])
    probs = load_run(run).predict(fs.blocks)["probs"]
    assert probs.shape == (len(fs.names), len(conf["classes"])) and np.isfinite(probs).all()
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(run / "config.json"), "--out", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "again" / "config.json").read_text())["training"]
    assert {k: again[k] for k in OLD_FLAT} == conf["training"] and again["recipe"] == "adamw"  # as the old code trained it
