"""One source of configuration for `emo fuse train`: TrainConfig and the CLI options agree, experiment
files (YAML/JSON) and a run's config.json drive the CLI, command-line options override them."""

from __future__ import annotations

import csv
import json
from dataclasses import MISSING, fields

import pytest
from typer.testing import CliRunner

from emo.exitcodes import ExitCode
from emo.fuse.config import TrainConfig
from emo.fuse.options import RUN_OPTIONS, ConfigFileError, read_config_file

#: TrainConfig fields whose option flag is not ``--<field-with-dashes>`` (the flag pair reads better).
FLAG_ALIASES = {"frame_bidirectional": "--bidirectional"}


def _train_params():
    import typer

    from emo.fuse.cli import app

    cmd = typer.main.get_command(app).commands["train"]
    return {p.name: p for p in cmd.params}


def test_every_trainconfig_field_is_an_option_with_the_same_name_and_default():
    params = _train_params()
    for f in fields(TrainConfig):
        assert f.name in params, f"TrainConfig.{f.name} has no `emo fuse train` option"
        p = params[f.name]
        default = f.default if f.default is not MISSING else f.default_factory()
        assert p.default == default, f"--{f.name}: option default {p.default!r} != TrainConfig default {default!r}"
        flag = FLAG_ALIASES.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in p.opts, f"TrainConfig.{f.name}: option flags {p.opts} lack {flag}"
    others = set(params) - {f.name for f in fields(TrainConfig)} - {"ctx", "config"}
    assert others == set(RUN_OPTIONS), "an option is neither a TrainConfig field nor in config.RUN_OPTIONS"


def test_read_config_file_yaml_json_and_errors(tmp_path):
    y = tmp_path / "exp.yaml"
    y.write_text("dataset: synth\nfeatures: egemaps\nfeatures-dir: feats\ntraining:\n  lr: 0.01\n  head: mlp\n")
    assert read_config_file(y) == {"dataset": "synth", "features": "egemaps", "features_dir": "feats", "lr": 0.01, "head": "mlp"}
    j = tmp_path / "exp.json"
    j.write_text(json.dumps({"dataset": "synth", "epochs": 3}))
    assert read_config_file(j) == {"dataset": "synth", "epochs": 3}
    j.write_text(json.dumps({"dataset": "synth", "learning_rate": 3}))
    with pytest.raises(ConfigFileError, match=r"exp.json: unknown key\(s\) learning_rate"):
        read_config_file(j)
    j.write_text("[1, 2]")
    with pytest.raises(ConfigFileError, match="expected a mapping"):
        read_config_file(j)
    y.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigFileError, match="invalid YAML"):
        read_config_file(y)
    with pytest.raises(ConfigFileError, match="cannot read config file"):
        read_config_file(tmp_path / "missing.yaml")


def test_run_config_json_gives_the_options_of_that_run(tmp_path):
    run = {"dataset": "synth", "features_dir": "feats", "feature_specs": ["egemaps=src", "hubert_large=src:1-3"],
           "protocol": {"folds": "speaker", "seed": 3, "align": "intersect", "test_splits": ["test"]},
           "training": {"head": "afg", "seed": 3, "batch_size": 32}, "repeat": {"index": 0, "of": 4, "seed": 3}}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(run))
    assert read_config_file(p) == {"dataset": "synth", "features_dir": "feats", "features": run["feature_specs"], "folds": "speaker",
                                   "align": "intersect", "test_split": ["test"], "head": "afg", "seed": 3, "batch_size": 32,
                                   "repeats": 4, "recipe": "adamw"}  # a run without 'recipe' was trained with AdamW (issue 24)
    p.write_text(json.dumps({**run, "repeat": {"index": 2, "of": 4, "seed": 2003}}))
    assert "repeats" not in read_config_file(p)  # one repeat's own directory: that single run
    p.write_text(json.dumps({**run, "training": {"head": "afg", "new_knob": 1}}))
    with pytest.raises(ConfigFileError, match="new_knob unknown to this emo version"):
        read_config_file(p)


FAST = {"epochs": 6, "patience": 6, "hidden": 16, "seeds": 1, "lr": 0.01, "folds": "3", "normalize": "global"}


def _predictions(run):
    with open(run / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_config_file_with_overrides_and_reproducing_a_run(tmp_path):
    from test_fuse_run import make_dataset

    from emo.cli import app

    feats = make_dataset(tmp_path)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"dataset: synth\nfeatures-dir: {feats}\nfeatures: [egemaps, 'hubert_large:1-3']\nhead: attention\n"
                   + "".join(f"{k}: {json.dumps(v)}\n" for k, v in FAST.items()))
    a = tmp_path / "runs" / "a"
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(exp), "--epochs", "5", "--out", str(a)])
    assert r.exit_code == 0, r.output
    conf = json.loads((a / "config.json").read_text())
    assert conf["training"]["head"] == "attention" and conf["training"]["lr"] == 0.01  # from the file
    assert conf["training"]["epochs"] == 5  # the command line wins
    assert conf["protocol"]["folds"] == "3" and conf["feature_specs"][1] == "hubert_large=src-hubert_large:1-3"
    cmd = conf["command"]
    assert cmd[:3] == ["emo", "fuse", "train"] and "--config" not in cmd and cmd[cmd.index("--epochs") + 1] == "5" and cmd[cmd.index("--head") + 1] == "attention"

    # the recorded command alone reproduces the run
    b = tmp_path / "runs" / "b"
    r = CliRunner().invoke(app, [*cmd[1:cmd.index("--out")], "--out", str(b), *cmd[cmd.index("--out") + 2:]])
    assert r.exit_code == 0, r.output
    assert _predictions(b) == _predictions(a)

    # --config runs/a/config.json reproduces run a; an override changes only what it names
    c = tmp_path / "runs" / "c"
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(a / "config.json"), "--out", str(c)])
    assert r.exit_code == 0, r.output
    assert _predictions(c) == _predictions(a)
    assert json.loads((c / "metrics.json").read_text())["pooled"] == json.loads((a / "metrics.json").read_text())["pooled"]
    d = tmp_path / "runs" / "d"
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(a / "config.json"), "--seed", "7", "--out", str(d)])
    assert r.exit_code == 0, r.output
    conf_d = json.loads((d / "config.json").read_text())
    assert conf_d["training"] == {**conf["training"], "seed": 7}


def test_config_file_errors_are_usage_errors(tmp_path):
    from emo.cli import app

    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps({"dataset": "synth", "features": ["egemaps"], "epochs": "many"}))
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(exp), "--out", str(tmp_path / "r")])
    assert r.exit_code == ExitCode.USAGE and "exp.json" in r.output and "many" in r.output, r.output
    exp.write_text(json.dumps({"dataset": "synth", "features": ["egemaps"], "epochs": True}))
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(exp), "--out", str(tmp_path / "r")])
    assert r.exit_code == ExitCode.USAGE and "True" in r.output, r.output
    exp.write_text(json.dumps({"dataset": "synth", "features": ["egemaps"], "lr": [0.1, 0.2]}))
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(exp), "--out", str(tmp_path / "r")])
    assert r.exit_code == ExitCode.USAGE and "lr takes one value" in r.output, r.output
    exp.write_text(json.dumps({"dataset": "synth", "feature": ["egemaps"]}))
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(exp), "--out", str(tmp_path / "r")])
    assert r.exit_code == ExitCode.USAGE and "unknown key(s) feature" in r.output, r.output
    exp.write_text(json.dumps({"dataset": "synth"}))
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(exp)])
    assert r.exit_code == ExitCode.USAGE and "missing --features, --out" in r.output, r.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "synth", "feature_specs": ["egemaps"], "training": {"lr": 0.1},
                                                 "protocol": {"folds": "3"}}))
    r = CliRunner().invoke(app, ["fuse", "train", "--config", str(run / "config.json"), "--out", str(run)])
    assert r.exit_code == ExitCode.USAGE and "is the run being reproduced" in r.output, r.output
