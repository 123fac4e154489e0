"""Decision-level fusion (emo.fuse.eval.ensemble, posterior level after Wang et al., MER 2023) on synthetic runs with known answers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from emo.extract.datasets.base import read_csv
from emo.fuse.eval.ensemble import (
    EnsembleError,
    _class_scores,
    ensemble,
    fuse_outputs,
    read_run_predictions,
    search_weights,
    simplex_grid,
)

CLASSES = ["neutral", "angry", "happy", "sad"]


def write_run(path: Path, names, y, probs, folds, task="discrete", valence=None, valence_true=None, classes=CLASSES) -> Path:
    """A run directory in the layout of emo.fuse.run (config.json + predictions.csv)."""
    path.mkdir(parents=True)
    cfg = {"task": task, "classes": classes if task != "valence" else None, "feature_specs": ["enc"],
           "inputs": [{"name": "enc", "modality": "audio", "layers": ["0"], "dim": 4}], "model": {}, "folds": [],
           "normalization": {"mode": "none"}, "protocol": {"folds": "5"}}
    (path / "config.json").write_text(json.dumps(cfg))
    with open(path / "predictions.csv", "w", newline="") as fh:
        w = None
        for i, n in enumerate(names):
            row = {"name": n, "fold": folds[i]}
            if probs is not None:
                row.update({"true": classes[y[i]], "pred": classes[int(np.argmax(probs[i]))]})
                row.update({f"prob_{c}": f"{probs[i, j]:.6f}" for j, c in enumerate(classes)})
            if valence is not None:
                row.update({"valence_true": f"{valence_true[i]:.6g}", "valence": f"{valence[i]:.6f}"})
            if w is None:
                w = csv.DictWriter(fh, fieldnames=list(row))
                w.writeheader()
            w.writerow(row)
    return path


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def informative_probs(y, rng, strength=2.0, c=len(CLASSES)):
    z = rng.normal(size=(len(y), c))
    z[np.arange(len(y)), y] += strength
    return softmax(z)


def folds_for(n, n_test=0):
    return [f"fold{i % 5}" for i in range(n - n_test)] + ["test"] * n_test


def test_fast_class_scores_match_sklearn():
    from emo.fuse.eval.metrics import classification_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    y[y == 4] = 3  # class 4 absent from y but predicted below
    preds = rng.integers(0, 5, (6, 300))
    preds[0] = y
    fast = _class_scores(preds, y, 5)
    for i in range(6):
        ref = classification_metrics(y, preds[i], 5)
        for k in ("waf", "uar", "accuracy"):
            assert fast[k][i] == pytest.approx(ref[k], abs=1e-12)


def test_simplex_grid():
    g = simplex_grid(3, 0.05)
    assert g.shape == (math.comb(22, 2), 3)
    assert np.allclose(g.sum(1), 1) and (g >= 0).all()
    assert any(np.allclose(r, [1, 0, 0]) for r in g) and any(np.allclose(r, [0.5, 0.25, 0.25]) for r in g)
    s = simplex_grid(8, 0.05, max_points=500, seed=1)
    assert s.shape == (8 + 1 + 500, 8) and np.allclose(s.sum(1), 1)
    assert np.array_equal(s, simplex_grid(8, 0.05, max_points=500, seed=1))
    with pytest.raises(EnsembleError):
        simplex_grid(2, 0.0)


def test_fuse_outputs_is_the_weighted_sum():
    rng = np.random.default_rng(1)
    parts = [{"probs": softmax(rng.normal(size=(5, 4))), "valence": rng.normal(size=5)} for _ in range(3)]
    w = np.array([0.2, 0.3, 0.5])
    f = fuse_outputs(parts, w)
    assert np.allclose(f["probs"], 0.2 * parts[0]["probs"] + 0.3 * parts[1]["probs"] + 0.5 * parts[2]["probs"])
    assert np.allclose(f["valence"], 0.2 * parts[0]["valence"] + 0.3 * parts[1]["valence"] + 0.5 * parts[2]["valence"])
    assert np.allclose(f["probs"].sum(1), 1)
    with pytest.raises(EnsembleError, match="summing to 1"):
        fuse_outputs(parts, np.array([0.5, 0.5, 0.5]))


def test_weight_goes_to_the_informative_run(tmp_path):
    rng = np.random.default_rng(2)
    n = 1200
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    good = write_run(tmp_path / "good", names, y, informative_probs(y, rng), folds_for(n, 200))
    noise = write_run(tmp_path / "noise", names, y, softmax(rng.normal(size=(n, 4)) * 2), folds_for(n, 200))
    res = ensemble([noise, good], tmp_path / "ens", optimistic=True)
    w = res["weights"]
    # WAF on 1000 validation utterances: a little noise weight can win by chance, never a large one
    assert w[str(good)] >= 0.85 and w[str(noise)] <= 0.15
    val = res["validation"]
    # same-data tuning can only match or beat its best member; the nested score has no such guarantee
    assert val["fused_optimistic"]["waf"] >= val["runs"][str(good)]["waf"] - 1e-9
    assert val["nested"] and abs(val["fused"]["waf"] - val["runs"][str(good)]["waf"]) < 0.02
    assert val["runs"][str(noise)]["waf"] < 0.4 and val["n"] == 1000 and val["source"] == ["out-of-fold"]
    assert res["test"]["n"] == 200 and abs(res["test"]["fused"]["waf"] - res["test"]["runs"][str(good)]["waf"]) < 0.05
    rows = read_csv(tmp_path / "ens" / "predictions.csv", [])
    assert len(rows) == 1200 and {r["part"] for r in rows} == {"validation", "test"}
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["weights"] == w


def test_nested_weights_never_see_the_held_out_group(tmp_path):
    """Planted group-specific signal: run A is right exactly on groups g0, g1 and run B exactly on g2, g3
    (confidently wrong elsewhere). Same-data weights pick one run and score 0.5; for every held-out group
    the other three groups favour the run that is wrong on it, so nested fusion scores 0 -- any leak of
    the held-out group's rows into its weights would lift it above 0."""
    n_per, groups = 50, ["g0", "g1", "g2", "g3"]
    n = n_per * len(groups)
    y = np.arange(n) % 4
    fold = [groups[i // n_per] for i in range(n)]
    wrong = (y + 1) % 4
    a_right = np.isin(np.asarray(fold), ["g0", "g1"])
    # different confidences (0.97 vs 0.91) so that no weight vector on the grid produces ties
    pa = (np.eye(4) * 0.96 + 0.01)[np.where(a_right, y, wrong)]
    pb = (np.eye(4) * 0.88 + 0.03)[np.where(~a_right, y, wrong)]
    names = [f"u{i}" for i in range(n)]
    ra = write_run(tmp_path / "a", names, y, pa, fold)
    rb = write_run(tmp_path / "b", names, y, pb, fold)
    res = ensemble([ra, rb], tmp_path / "ens", optimistic=True)
    assert res["validation"]["nested"] is True
    assert res["validation"]["fused_optimistic"]["accuracy"] == pytest.approx(0.5)
    assert res["validation"]["fused"]["accuracy"] == pytest.approx(0.0)
    wg = res["weights_per_held_out_group"]
    assert wg["g0"][str(rb)] > 0.5 and wg["g3"][str(ra)] > 0.5
    rows = read_csv(tmp_path / "ens" / "predictions.csv", [])
    assert all(r["pred"] != r["true"] for r in rows)  # written predictions are the nested ones


def test_single_group_validation_is_labelled_optimistic(tmp_path):
    rng = np.random.default_rng(5)
    n = 200
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    one = ["fold-0"] * n
    ra = write_run(tmp_path / "a", names, y, informative_probs(y, rng), one)
    rb = write_run(tmp_path / "b", names, y, informative_probs(y, rng), one)
    res = ensemble([ra, rb], tmp_path / "ens")
    assert res["validation"]["nested"] is False and "optimistic" in res["validation"]["note"]


def test_complementary_runs_fused_beats_each(tmp_path):
    rng = np.random.default_rng(3)
    n = 800
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    half = np.arange(n) % 2 == 0  # run A sees the even utterances, run B the odd ones
    pa, pb = softmax(rng.normal(size=(n, 4))), softmax(rng.normal(size=(n, 4)))
    strong_a, strong_b = informative_probs(y, rng, 3.0), informative_probs(y, rng, 3.0)
    pa[half], pb[~half] = strong_a[half], strong_b[~half]
    a = write_run(tmp_path / "a", names, y, pa, folds_for(n, 200))
    b = write_run(tmp_path / "b", names, y, pb, folds_for(n, 200))
    res = ensemble([a, b], tmp_path / "ens", metric="uar")
    wa, wb = res["weights"][str(a)], res["weights"][str(b)]
    assert 0.2 <= wa <= 0.8 and abs(wa + wb - 1) < 1e-9
    for part in ("validation", "test"):
        fused = res[part]["fused"]["uar"]
        assert fused > max(res[part]["runs"][str(a)]["uar"], res[part]["runs"][str(b)]["uar"]) + 0.1


def test_discrete_plus_valence_uses_mer2023_score_and_fuses_valence(tmp_path):
    rng = np.random.default_rng(4)
    n = 300
    y = np.arange(n) % 4
    v_true = rng.uniform(-5, 5, n)
    names = [f"u{i}" for i in range(n)]
    # run a: good emotions, useless valence; run b: useless emotions, good valence
    a = write_run(tmp_path / "a", names, y, informative_probs(y, rng, 3.0), folds_for(n), "discrete+valence",
                  np.zeros(n), v_true)
    b = write_run(tmp_path / "b", names, y, softmax(rng.normal(size=(n, 4))), folds_for(n), "discrete+valence",
                  v_true + rng.normal(0, 0.3, n), v_true)
    res = ensemble([a, b], tmp_path / "ens")
    assert res["metric"] == "mer2023_score" and "test" not in res
    f, ra, rb = res["validation"]["fused"], res["validation"]["runs"][str(a)], res["validation"]["runs"][str(b)]
    assert f["mer2023_score"] > max(ra["mer2023_score"], rb["mer2023_score"])
    assert f["mer2023_score"] == pytest.approx(f["waf"] - 0.25 * f["valence_mse"])
    rows = read_csv(tmp_path / "ens" / "predictions.csv", [])
    wg = res["weights_per_held_out_group"][rows[7]["fold"]]  # validation rows are fused with their group's nested weights
    wa, wb = wg[str(a)], wg[str(b)]
    pa, pb = read_run_predictions(a).val, read_run_predictions(b).val
    i = pa["names"].index(rows[7]["name"])
    assert float(rows[7]["valence"]) == pytest.approx(wa * pa["valence"][i] + wb * pb["valence"][i], abs=1e-5)


def test_search_weights_valence_only_minimises_mse():
    rng = np.random.default_rng(5)
    v = rng.normal(size=500)
    e1, e2 = rng.normal(0, 1, 500), rng.normal(0, 1, 500)
    parts = [{"valence": v + e1}, {"valence": v + e2}]
    w, info = search_weights(parts, {"valence": v}, "valence_mse")
    assert info["method"] == "simplex grid" and info["n_points"] == 21
    assert abs(w[0] - 0.5) <= 0.15  # two independent equal-noise estimates: average them
    mse = lambda p: float(np.mean((p - v) ** 2))  # noqa: E731
    assert mse(w[0] * parts[0]["valence"] + w[1] * parts[1]["valence"]) < min(mse(parts[0]["valence"]), mse(parts[1]["valence"]))


def test_mismatched_runs_are_refused(tmp_path):
    rng = np.random.default_rng(6)
    n = 40
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    a = write_run(tmp_path / "a", names, y, informative_probs(y, rng), folds_for(n))
    other = write_run(tmp_path / "other", [f"x{i}" for i in range(n)], y, informative_probs(y, rng), folds_for(n))
    three = write_run(tmp_path / "three", names, y % 3, informative_probs(y % 3, rng, c=3), folds_for(n), classes=CLASSES[:3])
    with pytest.raises(EnsembleError, match="at least two"):
        ensemble([a], tmp_path / "e")
    with pytest.raises(EnsembleError, match=r"other: its val predictions cover 40 samples.*0 shared"):
        ensemble([a, other], tmp_path / "e")
    with pytest.raises(EnsembleError, match=r"three: classes"):
        ensemble([a, three], tmp_path / "e")
    with pytest.raises(EnsembleError, match="unknown --metric"):
        ensemble([a, a], tmp_path / "e", metric="f1")
    from emo.fuse.run import RunError

    with pytest.raises(RunError, match="config.json not found"):
        ensemble([a, tmp_path / "nothing"], tmp_path / "e")


def test_ensemble_of_real_training_runs_and_cli(tmp_path):
    """Two runs trained by emo.fuse.training.train on different layers of a synthetic store, fused via the CLI."""
    from test_fuse_sweep import make_dataset
    from typer.testing import CliRunner

    from emo.cli import app
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.train import train

    root, _ = make_dataset(tmp_path / "feat", n=120, n_layers=2, informative=(0,))
    cfg = TrainConfig(head="linear", seeds=1, epochs=15, patience=4, lr=1e-2, batch_size=64, normalize="global")
    for k in ("0", "1"):
        train(root, "toy", [f"enc:{k}"], cfg, protocol="3", out=tmp_path / f"run{k}")
    r = CliRunner().invoke(app, ["fuse", "ensemble", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "ens")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert res["command"].startswith("emo fuse ensemble")
    assert res["weights"][str(tmp_path / "run0")] >= 0.8  # layer 0 carries the labels, layer 1 is noise
    assert res["validation"]["n"] == 120 and "fused, nested" in r.output
    r = CliRunner().invoke(app, ["fuse", "ensemble", str(tmp_path / "run0"), "--out", str(tmp_path / "e2")])
    assert r.exit_code == 2 and "at least two" in r.output


def test_split_runs_tune_on_dev_and_report_test(tmp_path):
    """Runs trained with --folds split: weights are tuned on the dev partition (the run's models applied
    to it), and the out-of-fold rows (the test partition) are only fused and reported."""
    from test_fuse_sweep import make_dataset

    from emo.fuse.config import TrainConfig
    from emo.fuse.training.train import train

    splits = ["train"] * 90 + ["dev"] * 30 + ["test"] * 30
    root, _ = make_dataset(tmp_path / "feat", n=150, n_layers=2, informative=(1,), splits=splits)
    cfg = TrainConfig(head="linear", seeds=1, epochs=15, patience=4, lr=1e-2, batch_size=64, normalize="global")
    for k in ("0", "1"):
        train(root, "toy", [f"enc:{k}"], cfg, protocol="split", out=tmp_path / f"run{k}")
    rp = read_run_predictions(tmp_path / "run1")
    assert rp.val_source == "dev partition" and len(rp.val["names"]) == 30 and len(rp.test["names"]) == 30
    assert all(n >= "utt0090" and n < "utt0120" for n in rp.val["names"])  # the dev rows
    res = ensemble([tmp_path / "run0", tmp_path / "run1"], tmp_path / "ens")
    assert res["validation"]["source"] == ["dev partition"] and res["validation"]["n"] == 30
    assert res["weights"][str(tmp_path / "run1")] >= 0.8
    assert res["test"]["n"] == 30 and res["test"]["fused"]["waf"] > 0.8
