"""`emo store import`: MERTools feature folders and EmoBox dumps (built here on EmoDB's real sample names)
become stores that `emo fuse train` uses at once; mismatched names, shapes and values are refused
with the file named, before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emo.exitcodes import ExitCode
from emo.extract.importer import ImportFeaturesError, content_hash, plan_import
from emo.extract.store import FeatureStore
from helpers import run_emo

D = 8


@pytest.fixture(scope="module")
def emodb(shared):
    from emo.extract.datasets import get_dataset

    root = shared / "emodb"
    samples = get_dataset("emodb", str(root)).samples()
    return root, samples


def _class_features(samples, seed=0):
    rng = np.random.default_rng(seed)
    classes = sorted({s.discrete for s in samples})
    centers = {c: rng.normal(size=D) * 2 for c in classes}
    return rng, centers


def _mertools(tmp_path, samples, kind="UTT", model="chinese-hubert-large"):
    rng, centers = _class_features(samples)
    d = tmp_path / "mer" / "features" / f"{model}-{kind}"
    d.mkdir(parents=True)
    for s in samples:
        v = centers[s.discrete] + rng.normal(size=D)
        if kind == "FRAME":
            v = v[None] + rng.normal(size=(int(rng.integers(3, 7)), D)) * 0.1
        np.save(d / f"{s.name}.npy", v.astype(np.float32))
    return d


def _emobox(tmp_path, samples, layers=3):
    rng, centers = _class_features(samples, seed=1)
    d = tmp_path / "dump" / "emodb" / "wavlm_large"
    d.mkdir(parents=True)
    for s in samples:
        t = int(rng.integers(4, 9))
        v = centers[s.discrete][None, None, :] * np.arange(layers)[:, None, None] / layers + rng.normal(size=(layers, t, D))
        np.save(d / f"emodb-{s.name}.npy", v.astype(np.float32))
    return d


def test_mertools_and_emobox_imports_train(emodb, tmp_path):
    root, samples = emodb
    feats = tmp_path / "features"
    utt = _mertools(tmp_path, samples)
    box = _emobox(tmp_path, samples)
    r = run_emo("store", "import", "mertools", str(utt), "--dataset", "emodb", "--root", str(root), "--encoder", "hubert_mer",
                "--out", str(feats))
    assert "imported 535 file(s)" in r.stdout
    run_emo("store", "import", "emobox", str(box), "--dataset", "emodb", "--root", str(root), "--encoder", "wavlm_box",
            "--out", str(feats), "--frames")
    s = FeatureStore(feats / "emodb" / "hubert_mer.h5")
    assert len(s) == 535 and s.layers == ["utt"] and s.dims == {"utt": D}
    assert s.attrs["import_kind"] == "mertools-utt" and s.attrs["import_folder"] == "chinese-hubert-large-UTT"
    assert int(s.attrs["import_files"]) == 535 and s.attrs["import_root"] == str(utt.parent.resolve())
    assert s.attrs["import_hash"] == content_hash(sorted(utt.glob("*.npy"))) == s.attrs["weights_hash"]
    name = samples[7].name
    assert np.allclose(s.read(names=[name])[0, 0], np.load(utt / f"{name}.npy"))
    b = FeatureStore(feats / "emodb" / "wavlm_box.h5")
    assert b.layers == ["0", "1", "2"] and b.has_frames and b.attrs["import_folder"] == "emodb/wavlm_large"
    raw = np.load(box / f"emodb-{name}.npy")  # the emodb- key prefix maps to EmoDB's sample name
    assert np.allclose(b.read(names=[name])[0], raw.mean(axis=1), atol=1e-6)
    assert np.allclose(b.read_frames("2", [name])[0], raw[2])
    # both train at once, together and with a MERTools-style combination of the EmoBox layers
    out = tmp_path / "run"
    run_emo("fuse", "train", "--dataset", "emodb", "--features-dir", str(feats), "--features", "hubert_mer",
            "--features", "wavlm_box:mean(last2)", "--head", "afg", "--task", "discrete", "--folds", "2", "--out", str(out),
            "--epochs", "4", "--hidden", "8", "--seeds", "1")
    conf = json.loads((out / "config.json").read_text())
    prov = {i["name"]: i["provenance"] for i in conf["inputs"]}
    assert prov["hubert_mer"]["import_kind"] == "mertools-utt" and prov["hubert_mer"]["import_hash"] == s.attrs["import_hash"]
    assert prov["wavlm_box"]["import_folder"] == "emodb/wavlm_large"
    assert prov["wavlm_box"]["layer_combinations"] == {"mean(1-2)": {"op": "mean", "layers": ["1", "2"]}}
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["folds"]) == 2


def test_mertools_frame_folder(emodb, tmp_path):
    root, samples = emodb
    d = _mertools(tmp_path, samples[:20], kind="FRAME")
    plan = plan_import("mertools", d, [s.name for s in samples[:20]])
    assert plan.kind == "mertools-frame" and plan.layers == ["frame_mean"] and plan.frame_level and plan.dim == D


def test_refusals_name_the_file(emodb, tmp_path):
    root, samples = emodb
    names = [s.name for s in samples[:10]]
    d = tmp_path / "x" / "hubert-UTT"
    d.mkdir(parents=True)
    for n in names:
        np.save(d / f"{n}.npy", np.zeros(D, np.float32))
    assert plan_import("mertools", d, names).dim == D
    np.save(d / "not_a_sample.npy", np.zeros(D, np.float32))
    with pytest.raises(ImportFeaturesError, match=r"not_a_sample\.npy: 'not_a_sample' is not a sample"):
        plan_import("mertools", d, names)
    (d / "not_a_sample.npy").unlink()
    np.save(d / f"{names[3]}.npy", np.zeros(D + 1, np.float32))
    with pytest.raises(ImportFeaturesError, match=rf"{names[3]}\.npy: shape \(9,\) does not match"):
        plan_import("mertools", d, names)
    np.save(d / f"{names[3]}.npy", np.zeros((2, D), np.float32))
    with pytest.raises(ImportFeaturesError, match=rf"{names[3]}\.npy: shape \(2, 8\), expected \(D,\)"):
        plan_import("mertools", d, names)
    np.save(d / f"{names[3]}.npy", np.zeros(D, np.float32))
    with pytest.raises(ImportFeaturesError, match=r"no file for 1 of 11 samples"):
        plan_import("mertools", d, names + ["extra"])
    assert len(plan_import("mertools", d, names + ["extra"], allow_missing=True).files) == 10
    bad = np.zeros(D, np.float32)
    bad[2] = np.nan
    np.save(d / f"{names[5]}.npy", bad)
    out = tmp_path / "features"
    r = run_emo("store", "import", "mertools", str(d), "-d", "emodb", "-r", str(root), "-e", "h", "-o", str(out),
                "--allow-missing", ok=(ExitCode.ERROR,))
    assert f"{names[5]}.npy: 1 non-finite value(s)" in r.stderr
    assert not (out / "emodb" / "h.h5").exists()  # nothing half-imported
    (d / "pickled.npy").write_bytes(b"not numpy")
    with pytest.raises(ImportFeaturesError, match="pickled.npy"):
        plan_import("mertools", d, names + ["pickled"])
    with pytest.raises(ImportFeaturesError, match="<model>-UTT or <model>-FRAME"):
        plan_import("mertools", tmp_path / "x", names)
    r = run_emo("store", "import", "openface", str(d), "-d", "emodb", "-r", str(root), "-e", "h", "-o", str(out),
                ok=(ExitCode.USAGE,))
    assert "mertools, emobox" in r.stderr


def test_reimport_of_changed_files_is_refused(emodb, tmp_path):
    root, samples = emodb
    box = _emobox(tmp_path, samples)
    out = tmp_path / "features"
    args = ["store", "import", "emobox", str(box), "-d", "emodb", "-r", str(root), "-e", "w", "-o", str(out)]
    run_emo(*args)
    run_emo(*args)  # same files: the store is complete, nothing to do
    np.save(box / f"emodb-{samples[0].name}.npy", np.zeros((3, 5, D), np.float32))
    r = run_emo(*args, ok=(ExitCode.ERROR,))
    assert "weights_hash" in r.stderr
    run_emo(*args, "--overwrite")
    assert np.allclose(FeatureStore(out / "emodb" / "w.h5").read(names=[samples[0].name]), 0)


@pytest.mark.slow
def test_docs_encoders_commands_run(emodb, tmp_path):
    """Every command of docs/encoders.md's quick tour runs (exit 0), with small random checkpoints for
    /ckpt/... and generated MERTools / EmoBox folders standing in for the real ones."""
    import os
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_encoders import tiny_wavlm, tiny_whisper

    root, samples = emodb
    tiny_whisper(tmp_path / "ckpt" / "whisper-base")
    tiny_wavlm(tmp_path / "ckpt" / "wavlm-large")
    _mertools(tmp_path, samples, model="hubert-large")
    _emobox(tmp_path, samples, layers=4)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "encoders.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", doc, re.S).group(1)
    lines = [ln for ln in block.splitlines() if ln.startswith("emo ")]
    assert len(lines) == 6
    for ln in lines:
        ln = ln.replace("/data/emodb", str(root)).replace("/ckpt/", f"{tmp_path}/ckpt/")
        r = subprocess.run([sys.executable, "-m", "emo.cli", *shlex.split(ln)[1:]], cwd=tmp_path, capture_output=True,
                           text=True, env=os.environ.copy())
        assert r.returncode == 0, f"{ln}\n{r.stdout}\n{r.stderr}"
    assert (tmp_path / "runs" / "whisper" / "config.json").is_file()
    conf = json.loads((tmp_path / "runs" / "imported" / "config.json").read_text())
    prov = {i["name"]: i["provenance"] for i in conf["inputs"]}
    assert prov["wavlm_box"]["layer_combinations"]["mean(2-3)"]["layers"] == ["2", "3"]
