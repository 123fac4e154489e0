"""Bootstrap intervals and paired comparisons (emo.fuse.eval.stats, emo.fuse.eval.compare) on synthetic runs."""

from __future__ import annotations

import numpy as np
import pytest

from emo.exitcodes import ExitCode
from emo.fuse.eval.compare import compare, interval, read_eval_rows
from emo.fuse.eval.stats import StatsError, bootstrap_ci, mean_std, paired_bootstrap

from test_fuse_ensemble import CLASSES, informative_probs, softmax, write_run


def test_group_bootstrap_resamples_groups_not_rows():
    """Ten groups, each all-right or all-wrong: the group bootstrap spreads like a mean of 10 Bernoulli
    draws (sd ~0.16), far wider than a row bootstrap over 1000 rows would (~0.016)."""
    groups = np.repeat([f"s{i}" for i in range(10)], 100)
    right = np.repeat(np.arange(10) < 5, 100).astype(float)
    res = bootstrap_ci(lambda rows: float(right[rows].mean()), groups, n_boot=1000, seed=0)
    assert res["estimate"] == pytest.approx(0.5) and res["n_groups"] == 10
    assert res["low"] < 0.3 and res["high"] > 0.7  # group-level spread
    again = bootstrap_ci(lambda rows: float(right[rows].mean()), groups, n_boot=1000, seed=0)
    assert again == res  # seeded: reproducible


def test_bootstrap_refuses_one_group_and_non_finite():
    with pytest.raises(StatsError, match="two evaluation groups"):
        bootstrap_ci(lambda r: 0.0, ["a"] * 5)
    with pytest.raises(StatsError, match="not finite"):
        bootstrap_ci(lambda r: float("nan"), ["a", "b"] * 5, n_boot=10)
    with pytest.raises(StatsError, match="finite"):
        mean_std([0.5, float("nan")])
    assert mean_std([0.5, 0.7]) == pytest.approx({"mean": 0.6, "std": np.std([0.5, 0.7], ddof=1), "n": 2})


def test_paired_bootstrap_cancels_shared_group_difficulty():
    """A is B plus a constant 0.02 on every group; groups differ wildly in difficulty. The paired
    difference interval is tight around 0.02 and excludes 0; unpaired intervals would overlap."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 20)
    base = np.repeat(rng.uniform(0.2, 0.9, 8), 20)
    res = paired_bootstrap(lambda r: float((base[r] + 0.02).mean()), lambda r: float(base[r].mean()), groups, n_boot=500)
    assert res["difference"] == pytest.approx(0.02) and res["low"] == pytest.approx(0.02) and res["high"] == pytest.approx(0.02)
    assert res["p_le_0"] == 0.0


def folds(n, k=5):
    return [f"speaker=s{i % k}" for i in range(n)]


def test_compare_runs_and_interval(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    good = write_run(tmp_path / "good", names, y, informative_probs(y, rng, 3.0), folds(n))
    weak = write_run(tmp_path / "weak", names, y, informative_probs(y, rng, 0.5), folds(n))
    ev = read_eval_rows(good)
    assert len(ev.names) == n and ev.kind == "run"
    ci = interval(good, n_boot=300)
    assert ci["metric"] == "uar" and ci["group"].startswith("speaker") and ci["n_groups"] == 5
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    res = compare(good, weak, n_boot=300)
    assert res["difference"] > 0.2 and res["low"] > 0 and res["p_le_0"] == 0.0
    assert res["a_value"] == pytest.approx(ci["estimate"])
    rev = compare(weak, good, n_boot=300)
    assert rev["difference"] == pytest.approx(-res["difference"]) and rev["p_le_0"] == 1.0



def test_compare_says_when_the_runs_differ_in_recipe(tmp_path):
    """Two runs on different training recipes: compared (a recipe comparison is legitimate), and the
    result says the difference includes the recipe; same recipe, no note."""
    import json

    rng = np.random.default_rng(2)
    n = 200
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    runs = {}
    for name, recipe in (("l1", "lbfgs"), ("l2", "lbfgs"), ("a1", "adamw")):
        runs[name] = write_run(tmp_path / name, names, y, informative_probs(y, rng, 2.0), folds(n))
        cfg = json.loads((runs[name] / "config.json").read_text())
        cfg["recipe"] = {"recipe": recipe, "reason": "test", "requested": "auto"}
        (runs[name] / "config.json").write_text(json.dumps(cfg))
    same = compare(runs["l1"], runs["l2"], n_boot=50)
    assert same["a_recipe"] == same["b_recipe"] == "lbfgs" and "note" not in same
    mixed = compare(runs["l1"], runs["a1"], n_boot=50)
    assert (mixed["a_recipe"], mixed["b_recipe"]) == ("lbfgs", "adamw")
    assert "includes the recipe" in mixed["note"]

def test_compare_refuses_different_rows(tmp_path):
    rng = np.random.default_rng(2)
    y = np.arange(100) % 4
    a = write_run(tmp_path / "a", [f"u{i}" for i in range(100)], y, softmax(rng.normal(size=(100, 4))), folds(100))
    b = write_run(tmp_path / "b", [f"v{i}" for i in range(100)], y, softmax(rng.normal(size=(100, 4))), folds(100))
    with pytest.raises(StatsError, match="differ"):
        compare(a, b)
    c = write_run(tmp_path / "c", [f"u{i}" for i in range(100)], y, softmax(rng.normal(size=(100, 4))), folds(100), classes=CLASSES[::-1])
    with pytest.raises(StatsError, match="classes"):
        compare(a, c)


def test_compare_cli(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    rng = np.random.default_rng(3)
    n = 200
    y = np.arange(n) % 4
    names = [f"u{i}" for i in range(n)]
    a = write_run(tmp_path / "a", names, y, informative_probs(y, rng, 3.0), folds(n))
    b = write_run(tmp_path / "b", names, y, informative_probs(y, rng, 0.3), folds(n))
    r = CliRunner().invoke(app, ["fuse", "compare", str(a), str(b), "--n-boot", "200", "--out", str(tmp_path / "cmp.json")])
    assert r.exit_code == 0, r.output
    assert "A - B = +" in r.output and (tmp_path / "cmp.json").is_file()
    r = CliRunner().invoke(app, ["fuse", "compare", str(a), str(tmp_path / "nope")])
    assert r.exit_code == ExitCode.ERROR and "neither a run directory" in r.output
    r = CliRunner().invoke(app, ["fuse", "compare", str(a), str(b), "--group", "room"])
    assert r.exit_code == ExitCode.USAGE and "--group must be" in r.output


def test_class_metric_equals_scikit_learn():
    from emo.fuse.eval.metrics import classification_metrics
    from emo.fuse.eval.stats import class_metric

    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.integers(0, 5, 60)
        y[y == 3] = 4  # a class absent from y_true
        p = rng.integers(0, 5, 60)
        ref = classification_metrics(y, p, 5)
        for m in ("uar", "waf", "accuracy"):
            assert class_metric(y, p, 5, m) == pytest.approx(ref[m], abs=1e-12)
