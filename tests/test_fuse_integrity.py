"""Training, ensembles and scoring refuse what would give a wrong answer: non-finite inputs, losses,
weights and predictions, checkpoint hashes, atomic run directories, rare classes (issue 11, classes
2, 4 and 6)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from emo.cli import app
from emo.exitcodes import ExitCode
from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter

CLASSES = ["neutral", "angry", "happy"]


def _dataset(root: Path, n: int = 30, poison: dict[int, float] | None = None) -> Path:
    rng = np.random.default_rng(0)
    feats = root / "features"
    y = np.arange(n) % 3
    samples = [Sample(name=f"u{i:03d}", media=None, discrete=CLASSES[y[i]]) for i in range(n)]
    write_manifest(feats / "synth", SimpleNamespace(name="synth", root=root, classes=CLASSES), samples)
    w = StoreWriter(feats / "synth" / "egemaps.h5", {"encoder": "egemaps", "source": "s", "weights_hash": "h", "modality": "audio",
                                                     "dataset": "synth"}, ["functionals"], dtype="float32")
    for i, s in enumerate(samples):
        w.add(s.name, Encoded(layers={"functionals": (rng.normal(size=6) + y[i]).astype(np.float32)}))
    w.finalize()
    w.close()
    if poison:
        with h5py.File(feats / "synth" / "egemaps.h5", "r+") as f:
            ds = f["layers/functionals"]
            for i, v in poison.items():
                row = ds[i]
                row[0] = v
                ds[i] = row
    return feats


TRAIN = ["fuse", "train", "--dataset", "synth", "--features", "egemaps", "--folds", "3", "--epochs", "3", "--seeds", "1",
         "--hidden", "8", "--head", "mlp"]


def _train(tmp_path, name="run", *extra) -> Path:
    feats = tmp_path / "features"
    if not feats.exists():
        _dataset(tmp_path)
    out = tmp_path / name
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), *extra, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_train_refuses_non_finite_inputs_naming_samples(tmp_path):
    feats = _dataset(tmp_path, poison={1: np.nan, 4: np.inf})
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--out", str(tmp_path / "run")])
    assert r.exit_code == ExitCode.ERROR
    assert "non-finite" in r.output and "u001" in r.output and "u004" in r.output and "egemaps.h5" in r.output
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_the_fold(tmp_path):
    feats = _dataset(tmp_path, poison={i: 3e38 for i in range(30)})
    for trainer in ("--sequential", "--batched"):  # both loops carry the guard
        out = tmp_path / f"run{trainer}"
        r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--lr", "10", "--normalize", "none", trainer,
                                             "--recipe", "adamw", "--out", str(out)])
        assert r.exit_code == ExitCode.ERROR, r.output
        assert "loss became non-finite" in r.output and ("fold" in r.output or "seed" in r.output)
        assert not out.exists()
    # the full-batch L-BFGS recipe: a clean error too (exit 1, no traceback), nothing written
    out = tmp_path / "run-lbfgs"
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--normalize", "none", "--recipe", "lbfgs",
                                         "--out", str(out)])
    assert r.exit_code == ExitCode.ERROR and r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "non-finite" in r.output and not out.exists()


def test_checkpoint_sha256_recorded_and_verified(tmp_path):
    from emo.fuse.run import RunError, load_run

    run = _train(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    assert all(len(f["sha256"]) == 64 for f in cfg["folds"])
    load_run(run).models()
    ck = run / "fold-1.safetensors"
    data = bytearray(ck.read_bytes())
    data[-40:] = os.urandom(40)
    ck.write_bytes(bytes(data))
    with pytest.raises(RunError, match="fold-1.safetensors: SHA-256 does not match"):
        load_run(run)


def test_nan_weights_refused_even_with_matching_hash(tmp_path):
    from safetensors.numpy import load_file, save_file

    from emo.fuse.run import RunError, load_run
    from emo.fsio import seal_json
    from emo.fuse.eval.runcheck import checkpoint_digests

    run = _train(tmp_path)
    ck = run / "fold-0.safetensors"
    t = {k: np.full_like(v, np.nan) for k, v in load_file(str(ck)).items()}
    save_file(t, str(ck), metadata={"fold": "0", "seeds": "1"})
    cfg = json.loads((run / "config.json").read_text())
    cfg["folds"][0]["sha256"] = checkpoint_digests(run, ["fold-0.safetensors"])["fold-0.safetensors"]
    (run / "config.json").write_text(json.dumps(seal_json(cfg)))  # a consistent forgery: hashes and seal both match
    with pytest.raises(RunError, match="non-finite weights"):
        load_run(run).models()


def test_ensemble_refuses_nan_predictions(tmp_path):
    from emo.fuse.eval.ensemble import EnsembleError, ensemble

    a, b = _train(tmp_path, "a"), _train(tmp_path, "b", "--seed", "3")
    p = b / "predictions.csv"
    lines = p.read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[1].split(",")
    cells[head.index("prob_angry")] = "nan"
    lines[1] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(EnsembleError, match="predictions.csv \\(probs\\): non-finite"):
        ensemble([a, b], tmp_path / "ens")


def test_bad_out_refused_before_training(tmp_path):
    feats = _dataset(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--out", str(f)])
    assert r.exit_code == ExitCode.ERROR and "exists and is not a directory" in r.output
    assert "fold" not in r.output.lower().split("error")[0]  # nothing was trained before the refusal
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("x")
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--out", str(other)])
    assert r.exit_code == ExitCode.ERROR and "not an emo run" in r.output and (other / "chapter1.tex").exists()


def test_retrain_replaces_run_as_a_whole_and_kill_keeps_previous(tmp_path, monkeypatch):
    import emo.fuse.run as run_mod

    run = _train(tmp_path)
    (run / "fold-9.safetensors").write_bytes(b"stale")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def killed(*a, **k):
        raise KeyboardInterrupt  # a kill while saving

    monkeypatch.setattr(run_mod, "_save_run_into", killed)
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(tmp_path / "features"), "--seed", "5", "--out", str(run)])
    assert r.exit_code != 0
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # the previous run, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    _train(tmp_path, "run", "--seed", "5")
    assert not (run / "fold-9.safetensors").exists()


def test_score_refuses_unfinished_temporary_run(tmp_path):
    from emo.fuse.run import RunError, load_run

    run = _train(tmp_path)
    tmp = tmp_path / ".run.x1y2.tmp"
    shutil.copytree(run, tmp)
    with pytest.raises(RunError, match="incomplete run"):
        load_run(tmp)


def test_rare_class_refused_unless_allowed(tmp_path):
    from emo.fuse.training.train import check_class_counts

    lines = []
    counts = check_class_counts(["a", "b", "angyr"], np.array([0, 0, 1, 1, 2]), True, lines.append)
    assert counts == {"a": 2, "b": 2, "angyr": 1} and lines[0] == "class counts: a=2, b=2, angyr=1"
    with pytest.raises(ValueError, match="'angyr' \\(1 sample\\).*--allow-rare-classes"):
        check_class_counts(["a", "b", "angyr"], np.array([0, 0, 1, 1, 2]))

