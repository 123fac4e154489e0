"""Multi-label (--task multilabel, MER-FG) layer sweeps and decision-level ensembles: the reported
metrics equal an independent computation (sklearn, the lexicon's emotion-wheel function) on the
written predictions; mismatched runs are refused with the runs named."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, hamming_loss, jaccard_score
from typer.testing import CliRunner

from emo.extract.datasets.base import Sample, write_manifest
from emo.fuse.config import TrainConfig
from emo.fuse.eval.ensemble import EnsembleError, MultiLabelScoring, ensemble, multilabel_scores
from emo.fuse.eval.metrics import multilabel_wheel_metrics
from emo.fuse.methods.multilabel import multilabel_metrics, predict_multihot
from emo.fuse.eval.sweep import lower_is_better, run_sweep
from emo.lexicon.wheel import load_wheels, wheel_scores

#: Raw words of the clips; with the real wheels' word forms they become the classes
#: anger, happiness, sad, surprised, worried.
WORDS = ["happy", "sad", "angry", "worried"]



def _words_predicted(classes, probs, threshold):
    """The predicted words of every row: p > ζ, or the most probable class where none is (the rule of every metric)."""
    out = []
    for pr in probs:
        ws = [c for c, p in zip(classes, pr) if p > threshold]
        out.append(ws or [classes[int(np.argmax(pr))]])
    return out

def make_ml_dataset(root: Path, n: int = 90, n_layers: int = 3, d: int = 8, informative: tuple[int, ...] = (1,),
                    seed: int = 0, dataset: str = "mlt", speakers: int = 5) -> tuple[Path, list[list[str]]]:
    """A dataset whose clips carry one or two emotion words (``Sample.emotions``), with an encoder
    store 'enc' in which only the ``informative`` layers encode the words."""
    from test_fuse_sweep import make_store

    rng = np.random.default_rng(seed)
    words = [[WORDS[i % 4]] + (["surprised"] if i % 3 == 0 else []) for i in range(n)]
    vocab = [*WORDS, "surprised"]
    hot = np.array([[w in ws for w in vocab] for ws in words], dtype=np.float32)
    x = rng.normal(size=(n, n_layers, d)).astype(np.float32)
    centers = rng.normal(size=(len(vocab), d)).astype(np.float32) * 3.0
    for j in informative:
        x[:, j] += hot @ centers
    names = [f"clip{i:04d}" for i in range(n)]
    samples = [Sample(name=nm, media=None, emotions=ws, speaker=f"spk{i % speakers}") for i, (nm, ws) in enumerate(zip(names, words))]
    write_manifest(root / dataset, types.SimpleNamespace(name=dataset, root=root, classes=None), samples)
    make_store(root, dataset, "enc", x, names)
    return root, words


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def independent_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """sklearn's multi-label metrics (macro over the labels present, as emo documents)."""
    present = np.flatnonzero(true.any(0))
    return {"ml_accuracy": jaccard_score(true, pred, average="samples", zero_division=1),
            "hamming_loss": hamming_loss(true, pred),
            "micro_f1": f1_score(true, pred, average="micro", zero_division=0),
            "macro_f1": f1_score(true, pred, average="macro", labels=present, zero_division=0)}


def test_hamming_loss_is_minimised():
    assert lower_is_better("hamming_loss") and not lower_is_better("micro_f1") and not lower_is_better("wheel_f1")


def test_multilabel_sweep_cli_metrics_equal_an_independent_computation(shared, tmp_path):
    from emo.cli import app

    wheel_dir = shared / "emotion_wheel"
    wheels = load_wheels(wheel_dir)
    root, words = make_ml_dataset(tmp_path / "feat")
    out = tmp_path / "sweep"
    args = ["fuse", "sweep", "--dataset", "mlt", "--features-dir", str(root), "--features", "enc", "--layers", "0-2",
            "--task", "multilabel", "--emotion-wheel", str(wheel_dir), "--threshold", "0.2", "--folds", "3",
            "--epochs", "40", "--patience", "6", "--lr", "0.02", "--batch-size", "16", "--no-progress", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "9 cell(s) trained" in r.output and "emotion-wheel F1" in r.output
    summary = json.loads((out / "sweep.json").read_text())
    classes = summary["label_space"]["classes"]
    assert classes == sorted({wheels.base_form(w) for ws in words for w in ws})  # word forms merged (happy -> happiness)
    assert summary["metric"] == "wheel_f1" and summary["threshold"] == 0.2
    assert summary["training"]["optimizer"] == "adamw" and summary["training"]["threshold"] == 0.2
    assert summary["best"]["window"] == "1"  # only layer 1 encodes the words
    by_window = {row["window"]: row for row in summary["rows"]}
    assert by_window["1"]["micro_f1_mean"] > by_window["0"]["micro_f1_mean"] + 0.2
    true_all = np.array([[wheels.base_form(w) in {wheels.base_form(x) for x in ws} for w in classes] for ws in words])
    for cell in summary["cells"]:
        rec, m = cell["predictions"], cell["metrics"]
        idx = np.asarray(rec["index"])
        strict = np.zeros((len(idx), len(classes)), dtype=bool)
        for i, labels in enumerate(rec["labels"]):
            strict[i, labels] = True
        pred = strict.copy()
        empty = ~pred.any(1)
        pred[np.flatnonzero(empty), np.asarray(rec["top"])[empty]] = True  # at least one label per clip
        for k, v in independent_metrics(pred, true_all[idx]).items():
            assert m[k] == pytest.approx(v, abs=1e-9), (cell["window"], k)
        ws = wheel_scores([[classes[j] for j in np.flatnonzero(row)] for row in pred], [words[i] for i in idx], wheels)
        assert m["wheel_f1"] == pytest.approx(ws["f1"], abs=1e-9)
        assert m["wheel_precision"] == pytest.approx(ws["precision"], abs=1e-9)
        assert m["wheel1_f1"] == pytest.approx(ws["per_wheel"]["wheel1"]["f1"], abs=1e-9)
    for window, row in by_window.items():  # the rows are the fold means of the cells
        cells = [c for c in summary["cells"] if c["window"] == window]
        assert len(cells) == 3
        for k in ("wheel_f1", "micro_f1", "macro_f1", "ml_accuracy", "hamming_loss"):
            assert row[f"{k}_mean"] == pytest.approx(np.mean([c["metrics"][k] for c in cells]), abs=1e-12)
    with open(out / "sweep.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert {"wheel_f1_mean", "micro_f1_mean", "hamming_loss_mean", "ml_accuracy_mean", "macro_f1_mean"} <= set(header)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "0 cell(s) trained, 9 reused" in r.output
    r = CliRunner().invoke(app, [*args[:-2], "--threshold", "0.3", "--out", str(out)])  # ζ is part of every cell's key
    assert r.exit_code == 0 and "9 cell(s) trained" in r.output, r.output


def test_multilabel_sweep_without_wheels_selects_on_micro_f1_or_hamming(tmp_path):
    root, _ = make_ml_dataset(tmp_path / "feat", n=60, n_layers=2)
    cfg = TrainConfig(head="linear", task="multilabel", seeds=1, epochs=30, patience=5, lr=0.02, batch_size=16)
    s = run_sweep(root, "mlt", "enc", "0-1", cfg=cfg, protocol="3", out=tmp_path / "a", progress=False)
    assert s["metric"] == "micro_f1" and s["best"]["window"] == "1" and s["emotion_wheel"] is None
    assert "wheel_f1_mean" not in s["rows"][0] and "hamming_loss_mean" in s["rows"][0]
    h = run_sweep(root, "mlt", "enc", "0-1", cfg=cfg, protocol="3", metric="hamming_loss", out=tmp_path / "a", progress=False)
    assert h["reused"] == 6 and h["trained"] == 0 and h["higher_is_better"] is False
    assert h["best"]["window"] == min(h["rows"], key=lambda r: r["hamming_loss_mean"])["window"] == "1"
    from emo.fuse.eval.sweep import SweepError

    with pytest.raises(SweepError, match="wheel_f1.*not computed for --task multilabel without --emotion-wheel"):
        run_sweep(root, "mlt", "enc", "0-1", cfg=cfg, protocol="3", metric="wheel_f1", out=tmp_path / "b", progress=False)
    with pytest.raises(SweepError, match="'waf' is not computed for --task multilabel; available: ml_accuracy"):
        run_sweep(root, "mlt", "enc", "0-1", cfg=cfg, protocol="3", metric="waf", out=tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "cells").exists() or not any((tmp_path / "b" / "cells").iterdir())  # refused before training


def test_multilabel_sweep_on_one_clip_folds_scores_the_pooled_predictions(shared, tmp_path):
    """Leave-one-speaker-out with one clip per speaker: each window is scored on its pooled
    out-of-fold probabilities (kept in the cells), multi-label metrics and wheel F1 alike."""
    wheels = load_wheels(shared / "emotion_wheel")
    root, words = make_ml_dataset(tmp_path / "feat", n=16, n_layers=2, speakers=16)
    cfg = TrainConfig(head="linear", task="multilabel", emotion_wheel=str(shared / "emotion_wheel"), seeds=1, epochs=15,
                      patience=3, lr=0.02, batch_size=8)
    s = run_sweep(root, "mlt", "enc", "0-1", cfg=cfg, protocol="speaker", out=tmp_path / "p", progress=False)
    assert "pooled out-of-fold" in s["selected_on"] and len(s["cells"]) == 32
    classes = s["label_space"]["classes"]
    for row in s["rows"]:
        cells = [c for c in s["cells"] if c["window"] == row["window"]]
        idx = np.concatenate([c["oof"]["index"] for c in cells])
        probs = np.concatenate([np.asarray(c["oof"]["probs"], dtype=np.float32) for c in cells]).astype(np.float64)
        assert row["pooled"] and sorted(idx.tolist()) == list(range(16))
        true = np.array([[c in {wheels.base_form(w) for w in words[i]} for c in classes] for i in idx])
        for k, v in independent_metrics(predict_multihot(probs, cfg.threshold), true).items():
            assert row[f"{k}_mean"] == pytest.approx(v, abs=1e-9) and row[f"{k}_std"] == 0.0, k
        ws = wheel_scores(_words_predicted(classes, probs, cfg.threshold), [words[i] for i in idx], wheels)
        assert row["wheel_f1_mean"] == pytest.approx(ws["f1"], abs=1e-9)


def test_vectorised_search_scores_equal_the_reference_metrics(shared):
    """The weight search's fast multi-label scores = multilabel_metrics / multilabel_wheel_metrics."""
    wheels = load_wheels(shared / "emotion_wheel")
    classes = ["anger", "happiness", "sad", "surprised", "worried", "calm"]
    rng = np.random.default_rng(1)
    n = 40
    true_words = [list(rng.choice(["angry", "happy", "sad", "surprised", "worried", "nervous"], size=rng.integers(1, 3), replace=False))
                  for _ in range(n)]
    multihot = np.array([[wheels.base_form(c) in {wheels.base_form(w) for w in ws} for c in classes] for ws in true_words], dtype=np.float32)
    probs = rng.dirichlet(np.full(len(classes), 0.5), size=(3, n))  # three fused candidates
    probs[:, :8] = rng.dirichlet(np.full(len(classes), 200.0), size=(3, 8))  # near-uniform rows: none above ζ
    assert (~(probs > 0.2).any(2)).sum() >= 20  # the at-least-one rule is exercised
    ml = MultiLabelScoring(0.2, classes, wheels)
    y = {"multihot": multihot, "wheel_true": ml.wheel_true(true_words)}
    fast = multilabel_scores(probs, y, ml)
    for m in range(3):
        ref = multilabel_metrics(multihot > 0, predict_multihot(probs[m], 0.2))
        ref.update(multilabel_wheel_metrics(probs[m], classes, true_words, wheels, 0.2))
        for k in ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1", "wheel_f1", "wheel_precision", "wheel_recall"):
            assert fast[k][m] == pytest.approx(ref[k], abs=1e-12), k


def train_ml_runs(root: Path, tmp_path: Path, wheel_dir: Path | None, layers=("0", "1"), threshold: float = 0.2) -> list[Path]:
    from emo.fuse.training.train import train

    cfg = TrainConfig(head="linear", task="multilabel", emotion_wheel=str(wheel_dir or ""), threshold=threshold, seeds=1,
                      epochs=30, patience=5, lr=0.02, batch_size=16, batched=False)
    runs = []
    for k in layers:
        out = tmp_path / f"run{k}-{threshold}"
        train(root, "mlt", [f"enc:{k}"], cfg, protocol="3", out=out)
        runs.append(out)
    return runs


def test_multilabel_ensemble_cli_metrics_equal_an_independent_computation(shared, tmp_path):
    from emo.cli import app

    wheel_dir = shared / "emotion_wheel"
    wheels = load_wheels(wheel_dir)
    root, words = make_ml_dataset(tmp_path / "feat")
    run0, run1 = train_ml_runs(root, tmp_path, wheel_dir)
    out = tmp_path / "ens"
    r = CliRunner().invoke(app, ["fuse", "ensemble", str(run0), str(run1), "--out", str(out), "--emotion-wheel", str(wheel_dir)])
    assert r.exit_code == 0, r.output
    assert "fused validation at threshold 0.2: ml_accuracy" in r.output and "wheel_f1" in r.output
    res = json.loads((out / "ensemble.json").read_text())
    classes = res["classes"]
    assert res["task"] == "multilabel" and res["metric"] == "wheel_f1" and res["multilabel"]["threshold"] == 0.2
    assert res["command"].endswith(f"--emotion-wheel {wheel_dir}")
    assert res["weights"][str(run1)] > 0.5  # layer 1 encodes the words, layer 0 is noise
    # each run's own scores equal those emo fuse train wrote for its pooled out-of-fold predictions
    for run in (run0, run1):
        pooled = json.loads((run / "metrics.json").read_text())["pooled"]
        for k in ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1", "wheel_f1"):
            assert res["validation"]["runs"][str(run)][k] == pytest.approx(pooled[k], abs=1e-6), (run.name, k)
    # the fused rows: probabilities are eq. 10 with each held-out group's weights, and every reported
    # metric equals sklearn / the lexicon's wheel function on them
    rows = [row for row in read_rows(out / "predictions.csv") if row["part"] == "validation"]
    runs_p = {run: {row["name"]: row for row in read_rows(run / "predictions.csv")} for run in (run0, run1)}
    probs = np.array([[float(row[f"prob_{c}"]) for c in classes] for row in rows])
    per_group = res["weights_per_held_out_group"]
    for i, row in enumerate(rows):
        w = per_group[row["fold"]]
        want = sum(w[str(run)] * np.array([float(runs_p[run][row["name"]][f"prob_{c}"]) for c in classes]) for run in (run0, run1))
        np.testing.assert_allclose(probs[i], want, atol=2e-6)
    true = np.array([[c in row["true"].split(";") for c in classes] for row in rows])
    pred = predict_multihot(probs, 0.2)
    assert [row["pred"] for row in rows] == [";".join(c for c, p in zip(classes, pr) if p) for pr in pred]
    fused = res["validation"]["fused"]
    for k, v in independent_metrics(pred, true).items():
        assert fused[k] == pytest.approx(v, abs=1e-9), k
    name_words = {f"clip{i:04d}": ws for i, ws in enumerate(words)}
    ws = wheel_scores(_words_predicted(classes, probs, 0.2), [name_words[row["name"]] for row in rows], wheels)
    assert fused["wheel_f1"] == pytest.approx(ws["f1"], abs=1e-9)
    assert fused["wheel_recall"] == pytest.approx(ws["recall"], abs=1e-9)
    # without wheels: tuned on micro-F1, no wheel scores; --threshold overrides the runs' ζ
    res2 = ensemble([run0, run1], tmp_path / "ens2", threshold=0.3)
    assert res2["metric"] == "micro_f1" and res2["multilabel"]["threshold"] == 0.3
    assert "wheel_f1" not in res2["validation"]["fused"]
    rows2 = [row for row in read_rows(tmp_path / "ens2" / "predictions.csv") if row["part"] == "validation"]
    p2 = np.array([[float(row[f"prob_{c}"]) for c in classes] for row in rows2])
    t2 = np.array([[c in row["true"].split(";") for c in classes] for row in rows2])
    assert res2["validation"]["fused"]["micro_f1"] == pytest.approx(f1_score(t2, predict_multihot(p2, 0.3), average="micro"), abs=1e-9)
    with pytest.raises(EnsembleError, match="wheel_f1 needs --emotion-wheel"):
        ensemble([run0, run1], tmp_path / "ens3", metric="wheel_f1")
    with pytest.raises(EnsembleError, match="does not apply to multi-label runs"):
        ensemble([run0, run1], tmp_path / "ens3", metric="waf")


def write_ml_run(path: Path, classes: list[str], task: str = "multilabel", threshold: float = 0.18, n: int = 12) -> Path:
    """A finished run directory (config.json + predictions.csv) in emo.fuse.run's layout."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    cfg = {"task": task, "classes": classes, "feature_specs": ["enc"], "training": {"threshold": threshold},
           "inputs": [{"name": "enc", "modality": "audio", "layers": ["0"], "dim": 4}], "model": {}, "folds": [],
           "normalization": {"mode": "none"}, "protocol": {"folds": "3"}}
    (path / "config.json").write_text(json.dumps(cfg))
    probs = rng.dirichlet(np.ones(len(classes)), size=n)
    with open(path / "predictions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["name", "fold", "true", "pred", *(f"prob_{c}" for c in classes)])
        w.writeheader()
        for i in range(n):
            w.writerow({"name": f"clip{i:04d}", "fold": f"fold{i % 3}", "true": classes[i % len(classes)],
                        "pred": classes[int(probs[i].argmax())], **{f"prob_{c}": f"{probs[i, j]:.6f}" for j, c in enumerate(classes)}})
    return path


def test_mismatched_runs_are_refused_with_the_runs_named(tmp_path):
    from emo.cli import app

    a = write_ml_run(tmp_path / "ml_a", ["anger", "happiness", "sad"])
    single = write_ml_run(tmp_path / "single", ["anger", "happiness", "sad"], task="discrete")
    other = write_ml_run(tmp_path / "ml_other", ["anger", "happiness", "sadness"])
    reordered = write_ml_run(tmp_path / "ml_order", ["happiness", "anger", "sad"])
    z = write_ml_run(tmp_path / "ml_z", ["anger", "happiness", "sad"], threshold=0.3)
    for runs, pattern in (([a, single], r"ml_a is a multi-label run .* and .*single a single-label one \(--task discrete\)"),
                          ([single, a], r"ml_a is a multi-label run .* and .*single a single-label one \(--task discrete\)"),
                          ([a, other], "ml_other: classes differ from those of .*ml_a [(]3 vs 3 labels; only in .*ml_other: sadness; "
                                       "only in .*ml_a: sad[)]"),
                          ([a, reordered], "same 3 labels in a different order"),
                          ([a, z], "different --threshold values .*ml_a: 0.18, .*ml_z: 0.3")):
        with pytest.raises(EnsembleError, match=pattern):
            ensemble(runs, tmp_path / "e")
    r = CliRunner().invoke(app, ["fuse", "ensemble", str(a), str(single), "--out", str(tmp_path / "e")])
    assert r.exit_code == 1 and "is a multi-label run" in r.output and str(single) in r.output
    assert not (tmp_path / "e").exists()
    res = ensemble([a, z], tmp_path / "e", threshold=0.25)  # an explicit ζ fuses them
    assert res["multilabel"]["threshold"] == 0.25 and res["validation"]["n"] == 12
    with pytest.raises(EnsembleError, match="apply to multi-label runs"):
        ensemble([single, write_ml_run(tmp_path / "single2", ["anger", "happiness", "sad"], task="discrete")],
                 tmp_path / "e2", threshold=0.3)
    with pytest.raises(EnsembleError, match="emotion-wheel folder .*nowhere does not exist"):
        ensemble([a, z], tmp_path / "e3", threshold=0.25, emotion_wheel=str(tmp_path / "nowhere"))
    from test_wheel import toy_wheels

    with pytest.raises(EnsembleError, match="emotion-wheel F1 scores each clip's own words, read from the dataset manifest"):
        ensemble([a, z], tmp_path / "e3", threshold=0.25, emotion_wheel=str(toy_wheels(tmp_path / "wheel")))


def test_split_protocol_multilabel_sweep_and_ensemble(shared, tmp_path):
    """--folds split: the sweep selects on dev and reports test; the ensemble tunes on the runs' models
    applied to the dev partition (multi-hot targets through the runs' word forms) and reports test."""
    from emo.fuse.training.train import train

    wheel_dir = shared / "emotion_wheel"
    wheels = load_wheels(wheel_dir)
    root, words = make_ml_dataset(tmp_path / "feat", n=90, n_layers=2)
    from emo.extract.datasets.base import read_manifest

    meta, samples = read_manifest(root / "mlt")
    for i, s in enumerate(samples):  # 54 train, 18 dev, 18 test
        s.split = "train" if i < 54 else ("dev" if i < 72 else "test")
    write_manifest(root / "mlt", types.SimpleNamespace(name="mlt", root=root, classes=None), samples)
    cfg = TrainConfig(head="linear", task="multilabel", emotion_wheel=str(wheel_dir), threshold=0.2, seeds=2,
                      epochs=30, patience=5, lr=0.02, batch_size=16, batched=False)
    s = run_sweep(root, "mlt", "enc", "0-1", cfg=cfg, protocol="split", out=tmp_path / "sw", progress=False)
    assert s["selected_on"] == "dev" and s["metric"] == "wheel_f1" and s["best"]["window"] == "1"
    assert len(s["cells"]) == 4 and all("test_metrics" in c and "test_predictions" in c for c in s["cells"])
    cell = s["cells"][0]
    idx = cell["test_predictions"]["index"]
    assert sorted(idx) == list(range(72, 90))  # the test partition, never trained on
    cl = s["label_space"]["classes"]
    sets = [[cl[j] for j in labels] or [cl[top]] for labels, top in zip(cell["test_predictions"]["labels"], cell["test_predictions"]["top"])]
    assert cell["test_metrics"]["wheel_f1"] == pytest.approx(wheel_scores(sets, [words[i] for i in idx], wheels)["f1"], abs=1e-9)

    runs = []
    for k in ("0", "1"):
        train(root, "mlt", [f"enc:{k}"], cfg, protocol="split", out=tmp_path / f"split{k}")
        runs.append(tmp_path / f"split{k}")
    res = ensemble(runs, tmp_path / "ens", emotion_wheel=str(wheel_dir))
    assert res["validation"]["source"] == ["dev partition"] and res["validation"]["n"] == 18 and not res["validation"]["nested"]
    assert res["weights"][str(runs[1])] > 0.5
    rows = read_rows(tmp_path / "ens" / "predictions.csv")
    val = [r for r in rows if r["part"] == "validation"]
    assert sorted(r["name"] for r in val) == [f"clip{i:04d}" for i in range(54, 72)]  # the dev clips
    classes = res["classes"]
    true = np.array([[c in r["true"].split(";") for c in classes] for r in val])
    want = np.array([[wheels.base_form(c) in {wheels.base_form(w) for w in words[int(r["name"][4:])]} for c in classes] for r in val])
    np.testing.assert_array_equal(true, want)  # the dev targets: the clips' words through the runs' word forms
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in val])
    assert res["validation"]["fused"]["micro_f1"] == pytest.approx(
        f1_score(true, predict_multihot(probs, 0.2), average="micro"), abs=1e-9)
    test_rows = [r for r in rows if r["part"] == "test"]
    tp = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in test_rows])
    tw = [words[int(r["name"][4:])] for r in test_rows]
    assert len(test_rows) == 18 and res["test"]["fused"]["wheel_f1"] == pytest.approx(
        wheel_scores(_words_predicted(classes, tp, 0.2), tw, wheels)["f1"], abs=1e-9)


def test_wheel_f1_scores_the_most_probable_word_when_no_probability_exceeds_zeta(shared):
    """A clip whose probabilities all stay below ζ is scored on its most probable word (as every other
    multi-label metric), not on an empty prediction."""
    wheels = load_wheels(shared / "emotion_wheel")
    classes = ["happiness", "sadness", "anger"]
    probs = np.array([[0.10, 0.15, 0.12], [0.05, 0.9, 0.05]])  # row 0: nothing above 0.2, argmax "sadness"
    true = [["sadness"], ["sadness"]]
    got = multilabel_wheel_metrics(probs, classes, true, wheels, 0.2)
    assert got["wheel_f1"] == pytest.approx(1.0)
    assert got == pytest.approx(multilabel_wheel_metrics(np.array([[0.1, 0.7, 0.2], [0.05, 0.9, 0.05]]), classes, true, wheels, 0.2))


def test_tune_threshold_uses_inner_validation_rows_only_and_the_run_keeps_the_value(tmp_path, monkeypatch):
    """``--tune-threshold``: ζ is chosen on each fold's inner-validation predictions (the rows the
    fold's models were early-stopped on, never its evaluation rows), every metric and the run's
    predictions use it, and config.json records it as the run's threshold (what emo score reads)."""
    import emo.fuse.methods.multilabel as ml
    from emo.fuse.training.train import train

    root, words = make_ml_dataset(tmp_path / "feat", n=120)
    seen = []
    real = ml.tune_threshold

    def spy(probs, y_true, *a, **k):
        seen.append(np.asarray(y_true).copy())
        return real(probs, y_true, *a, **k)

    monkeypatch.setattr(ml, "tune_threshold", spy)
    cfg = TrainConfig(head="linear", task="multilabel", threshold=0.18, tune_threshold=True, seeds=1, epochs=30, patience=5,
                      lr=0.02, batch_size=16, batched=False)
    out = tmp_path / "run"
    result, config = train(root, "mlt", ["enc:1"], cfg, protocol="3", out=out)
    tuning = result.threshold_tuning
    assert len(seen) == 1 and tuning is not None
    n_val = sum(f["n_val"] for f in result.folds)
    n_test = sum(f["n_test"] for f in result.folds)
    assert tuning["rows"] == n_val == len(seen[0]) and n_val < n_test  # the inner-validation rows, not the evaluation rows
    zeta = tuning["threshold"]
    assert zeta in ml.THRESHOLD_GRID
    saved = json.loads((out / "config.json").read_text())
    assert saved["training"]["threshold"] == zeta and saved["threshold_tuning"]["given"] == 0.18
    classes = saved["classes"]
    rows = read_rows(out / "predictions.csv")
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    want = ml.predict_multihot(probs, zeta)
    assert [r["pred"] for r in rows] == [";".join(c for c, p in zip(classes, w) if p) for w in want]
    # the pooled metrics are those of the tuned threshold
    true = np.array([[c in r["true"].split(";") for c in classes] for r in rows])
    assert result.pooled["micro_f1"] == pytest.approx(f1_score(true, want, average="micro", zero_division=0), abs=1e-4)


def test_tune_threshold_refused_for_single_label_tasks(tmp_path):
    from emo.fuse.eval.cv import train_cv
    from emo.fuse.eval.protocols import stratified_kfold

    rng = np.random.default_rng(0)
    y = {"discrete": rng.integers(0, 2, 40)}
    blocks = {"a": rng.normal(size=(40, 1, 4)).astype(np.float32)}
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": 4}]
    cfg = TrainConfig(head="linear", tune_threshold=True, seeds=1, epochs=2, batched=False)
    with pytest.raises(ValueError, match="multilabel only"):
        train_cv(blocks, inputs, y, stratified_kfold(y["discrete"], 2, 0), cfg, 2)
