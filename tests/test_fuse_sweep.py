"""Layer sweeps (emo.fuse.eval.sweep): windows, cell cache, layer-selective reads, outputs, CLI."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.config import TrainConfig
from emo.fuse.eval.sweep import SweepError, default_metric, layer_windows, lower_is_better, run_sweep, window_label

CLASSES = ["neutral", "angry", "happy"]


def make_store(root: Path, dataset: str, encoder: str, x: np.ndarray, names: list[str]) -> Path:
    """Write an emo feature store (emo.extract.store.StoreWriter) holding x (N, L, D) as float16."""
    layers = [str(i) for i in range(x.shape[1])]
    prov = {"encoder": encoder, "source": "synthetic", "weights_hash": "0" * 16, "pooling": "mean", "modality": "audio"}
    w = StoreWriter(root / dataset / f"{encoder}.h5", prov, layers)
    for i, name in enumerate(names):
        w.add(name, Encoded(layers={k: x[i, j] for j, k in enumerate(layers)}))
    w.finalize()
    w.close()
    return w.path


def make_dataset(root: Path, n: int = 150, n_layers: int = 4, d: int = 8, informative: tuple[int, ...] = (2,),
                 splits: list[str] | None = None, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Synthetic dataset 'toy': labels are linearly decodable only from the ``informative`` layers."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    x = rng.normal(size=(n, n_layers, d)).astype(np.float32)
    centers = rng.normal(size=(len(CLASSES), d)).astype(np.float32) * 3.0
    for j in informative:
        x[:, j] += centers[y]
    names = [f"utt{i:04d}" for i in range(n)]
    samples = [Sample(name=nm, media=None, discrete=CLASSES[c], speaker=f"spk{i % 5}", split=(splits[i] if splits else None))
               for i, (nm, c) in enumerate(zip(names, y))]
    adapter = types.SimpleNamespace(name="toy", root=root, classes=CLASSES)
    write_manifest(root / "toy", adapter, samples)
    make_store(root, "toy", "enc", x, names)
    return root, y


FAST = dict(head="linear", seeds=1, batch_size=64, epochs=30, patience=5, lr=1e-2, normalize="global")


def test_layer_windows_and_labels():
    keys = [str(i) for i in range(6)]
    assert layer_windows(keys, 1) == [(k,) for k in keys]
    w3 = layer_windows(keys, 3)
    assert len(w3) == 4 and w3[0] == ("0", "1", "2") and w3[-1] == ("3", "4", "5")
    assert layer_windows(keys, 3, stride=3) == [("0", "1", "2"), ("3", "4", "5")]
    assert window_label(("16", "17", "18")) == "16-18" and window_label(("7",)) == "7"
    assert window_label(("proj", "functionals")) == "proj+functionals"
    with pytest.raises(SweepError, match="larger than"):
        layer_windows(keys, 7)
    with pytest.raises(SweepError, match=">= 1"):
        layer_windows(keys, 0)


def test_metric_defaults():
    assert default_metric("discrete") == "waf"
    assert default_metric("discrete+valence") == "mer2023_score"
    assert default_metric("valence") == "valence_ccc"
    assert lower_is_better("valence_mse") and not lower_is_better("uar")
    with pytest.raises(SweepError, match="unknown task"):
        default_metric("arousal")


def test_sweep_finds_informative_layer_and_reuses_cells(tmp_path, monkeypatch):
    from emo.extract.store import FeatureStore

    root, _ = make_dataset(tmp_path / "feat", informative=(2,))
    out = tmp_path / "sweep"
    s1 = run_sweep(root, "toy", "enc", "0-3", cfg=TrainConfig(**FAST), protocol="3", metric="uar", out=out, progress=False)
    assert s1["trained"] == 12 and s1["reused"] == 0
    assert s1["best"]["window"] == "2"
    rows = {r["window"]: r for r in s1["rows"]}
    assert rows["2"]["uar_mean"] > 0.9
    assert max(rows[k]["uar_mean"] for k in ("0", "1", "3")) < 0.7
    assert all(r["n"] == 3 and r["uar_std"] >= 0 for r in s1["rows"])
    assert len(list((out / "cells").glob("*.json"))) == 12
    with open(out / "sweep.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["window"] for r in table] == ["0", "1", "2", "3"]
    assert abs(float(table[2]["uar_mean"]) - rows["2"]["uar_mean"]) < 1e-5
    assert (out / "sweep.png").stat().st_size > 1000
    on_disk = json.loads((out / "sweep.json").read_text())
    assert on_disk["best"]["window"] == "2" and len(on_disk["cells"]) == 12

    # second run: every cell is reused, nothing is trained and no layer is read
    import emo.fuse.eval.cv as train_mod

    def boom(*a, **k):
        raise AssertionError("a cached cell was retrained")

    monkeypatch.setattr(train_mod, "train_cv", boom)
    monkeypatch.setattr(FeatureStore, "read", boom)
    s2 = run_sweep(root, "toy", "enc", "0-3", cfg=TrainConfig(**FAST), protocol="3", metric="uar", out=out, progress=False)
    assert s2["trained"] == 0 and s2["reused"] == 12
    assert s2["rows"] == s1["rows"]


def test_sweep_reads_only_needed_layers_and_retrains_changed_cells(tmp_path, monkeypatch):
    from emo.extract.store import FeatureStore

    root, _ = make_dataset(tmp_path / "feat", n_layers=6, informative=(4,))
    out = tmp_path / "sweep"
    reads = []
    orig = FeatureStore.read

    def spy(self, layers=None, names=None, dtype=np.float32):
        reads.append(list(layers))
        return orig(self, layers, names, dtype)

    monkeypatch.setattr(FeatureStore, "read", spy)
    run_sweep(root, "toy", "enc", "3-5", cfg=TrainConfig(**FAST), protocol="3", out=out, progress=False)
    assert reads == [["3", "4", "5"]]
    # a different setting invalidates the cells' keys: everything is retrained
    s = run_sweep(root, "toy", "enc", "3-5", cfg=TrainConfig(**{**FAST, "lr": 5e-3}), protocol="3", out=out, progress=False)
    assert s["trained"] == 9
    # a partially finished sweep: delete two cells of layer 5; only layer 5 is read again
    for p in (out / "cells").glob("5-fold[01].json"):
        p.unlink()
    reads.clear()
    s = run_sweep(root, "toy", "enc", "3-5", cfg=TrainConfig(**{**FAST, "lr": 5e-3}), protocol="3", out=out, progress=False)
    assert s["trained"] == 2 and s["reused"] == 7
    assert reads == [["5"]]


def test_sweep_windows_and_speaker_folds(tmp_path):
    root, _ = make_dataset(tmp_path / "feat", n_layers=5, informative=(3,))
    s = run_sweep(root, "toy", "enc", None, window=3, cfg=TrainConfig(**FAST), protocol="speaker", metric="uar",
                  out=tmp_path / "sw", progress=False)
    assert [r["window"] for r in s["rows"]] == ["0-2", "1-3", "2-4"]
    assert [r["center"] for r in s["rows"]] == [1.0, 2.0, 3.0]
    assert all(r["n"] == 5 for r in s["rows"])  # five speakers -> five folds
    rows = {r["window"]: r for r in s["rows"]}
    assert rows["0-2"]["uar_mean"] < min(rows["1-3"]["uar_mean"], rows["2-4"]["uar_mean"])
    assert s["best"]["window"] in ("1-3", "2-4")


def test_sweep_split_selects_on_dev_reports_test(tmp_path):
    n = 180
    splits = ["train"] * 120 + ["dev"] * 30 + ["test"] * 30
    root, _ = make_dataset(tmp_path / "feat", n=n, n_layers=3, informative=(1,), splits=splits)
    s = run_sweep(root, "toy", "enc", None, cfg=TrainConfig(**{**FAST, "seeds": 2}), protocol="split", out=tmp_path / "sw", progress=False)
    assert s["metric"] == "waf" and s["selected_on"] == "dev"
    assert all(r["n"] == 2 for r in s["rows"])  # two seed repeats per window
    assert s["best"]["window"] == "1"
    assert s["best"]["test_waf"] > 0.8
    assert all("test_waf_mean" in r for r in s["rows"])
    cell = s["cells"][0]
    assert cell["n_test"] == 30 and cell["n_val"] == 30 and cell["n_train"] == 120 and s["n_test_partition"] == 30


def test_sweep_bad_input(tmp_path):
    root, _ = make_dataset(tmp_path / "feat", n=60, n_layers=3)
    from emo.extract.store import StoreError
    from emo.fuse.training.data import FeatureError

    with pytest.raises(FeatureError, match=r"enc\.h5: no layer\(s\) 3, 4, 5, 6, 7; stored: 0-2"):
        run_sweep(root, "toy", "enc", "0-7", cfg=TrainConfig(**FAST), out=tmp_path / "a", progress=False)
    with pytest.raises(SweepError, match="larger than"):
        run_sweep(root, "toy", "enc", "0-2", window=4, cfg=TrainConfig(**FAST), out=tmp_path / "a", progress=False)
    with pytest.raises(StoreError, match="nothere.h5"):
        run_sweep(root, "toy", "nothere", "0", cfg=TrainConfig(**FAST), out=tmp_path / "a", progress=False)
    with pytest.raises(SweepError, match="valence_ccc.*not computed"):
        run_sweep(root, "toy", "enc", "0", cfg=TrainConfig(**FAST), metric="valence_ccc", protocol="3", out=tmp_path / "b", progress=False)


def test_sweep_cli(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    root, _ = make_dataset(tmp_path / "feat", n=90, n_layers=3, informative=(0,))
    out = tmp_path / "cli"
    args = ["fuse", "sweep", "--dataset", "toy", "--features-dir", str(root), "--features", "enc", "--layers", "0-2",
            "--folds", "3", "--epochs", "20", "--patience", "4", "--lr", "0.01", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "selected window 0" in r.output and "9 cell(s) trained" in r.output
    data = json.loads((out / "sweep.json").read_text())
    assert data["command"].startswith("emo fuse sweep --dataset toy") and data["best"]["window"] == "0"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "0 cell(s) trained, 9 reused" in r.output
    r = CliRunner().invoke(app, [*args[:-2], "--window", "5", "--out", str(out)])
    assert r.exit_code == 2 and "--window 5 is larger" in r.output


def test_sweep_repeats_mean_std_and_selection(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    root, _ = make_dataset(tmp_path / "feat", n=90, n_layers=3, informative=(1,))
    out = tmp_path / "rep"
    args = ["fuse", "sweep", "--dataset", "toy", "--features-dir", str(root), "--features", "enc", "--layers", "0-2",
            "--folds", "3", "--epochs", "15", "--patience", "4", "--lr", "0.01", "--repeats", "3", "--no-progress", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "sweep_repeats.json").read_text())
    assert rep["repeats"] == 3 and rep["seeds"] == [0, 1000, 2000] and rep["best"]["window"] == "1"
    row = next(x for x in rep["rows"] if x["window"] == "1")
    assert len(row["values"]) == 3 and row["mean"] == pytest.approx(np.mean(row["values"]))
    assert (out / "repeats" / "seed-1000" / "sweep.json").is_file() and (out / "repeats" / "seed-2000" / "sweep.json").is_file()
    assert "selected window 1 on the repeat mean" in r.output
