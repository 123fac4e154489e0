"""emo.fuse.eval.metrics against scikit-learn / scipy and the defining equations; emo.fuse.eval.protocols."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, mean_squared_error

from emo.fuse.eval.metrics import ccc, classification_metrics, mer2023_score, regression_metrics, summarize, vad_metrics
from emo.fuse.eval.protocols import ProtocolError, inner_validation, leave_one_speaker_out, predefined_split, stratified_kfold


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    m = classification_metrics(y, p, 6)  # class 5 never occurs: confusion is still 6x6
    assert m["waf"] == pytest.approx(f1_score(y, p, average="weighted"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(y, p))
    assert np.array_equal(np.array(m["confusion"])[:5, :5], confusion_matrix(y, p))
    assert np.array(m["confusion"]).shape == (6, 6)


def test_classification_metrics_bad_input():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), 2)


def test_ccc_equation_and_regression_metrics():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    yhat = 0.5 * x + 0.3 + rng.normal(scale=0.5, size=200)
    # Lin (1989) eq. 2a written with np.cov (population) as an independent route
    c = np.cov(x, yhat, bias=True)
    expected = 2 * c[0, 1] / (c[0, 0] + c[1, 1] + (x.mean() - yhat.mean()) ** 2)
    assert ccc(x, yhat) == pytest.approx(expected)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + 1.0) < 1.0  # a bias lowers CCC but not PCC
    m = regression_metrics(x, yhat)
    assert m["mse"] == pytest.approx(mean_squared_error(x, yhat))
    assert m["pcc"] == pytest.approx(pearsonr(x, yhat)[0])
    assert m["mae"] == pytest.approx(np.abs(x - yhat).mean())


def test_vad_metrics_and_mer_score():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(50, 3))
    p = t + rng.normal(scale=0.3, size=(50, 3))
    m = vad_metrics(t, p)
    assert m["arousal_mse"] == pytest.approx(mean_squared_error(t[:, 1], p[:, 1]))
    assert m["l2"] == pytest.approx(np.mean(np.sqrt(((t - p) ** 2).sum(1))))
    assert m["mse"] == pytest.approx(np.mean([m["valence_mse"], m["arousal_mse"], m["dominance_mse"]]))
    with pytest.raises(ValueError, match="N, 3"):
        vad_metrics(t[:, :2], p[:, :2])
    assert mer2023_score(0.8, 2.0) == pytest.approx(0.8 - 0.25 * 2.0)
    s = summarize([{"uar": 0.5, "confusion": [[1]]}, {"uar": 0.7, "confusion": [[1]]}])
    assert s["mean"]["uar"] == pytest.approx(0.6) and s["std"]["uar"] == pytest.approx(0.1)
    assert "confusion" not in s["mean"]


# ---------------------------------------------------------------------------
# protocols
# ---------------------------------------------------------------------------

def test_loso_never_shares_speakers():
    rng = np.random.default_rng(4)
    speakers = [f"s{i}" for i in rng.integers(0, 6, 120)]
    folds = leave_one_speaker_out(speakers, seed=3)
    spk = np.array(speakers)
    assert len(folds) == 6
    seen_test = []
    for f in folds:
        tr, va, te = set(spk[f.train]), set(spk[f.val]), set(spk[f.test])
        assert len(te) == 1 and len(va) == 1
        assert not (tr & te) and not (tr & va) and not (va & te)
        assert len(f.train) + len(f.val) + len(f.test) == 120
        seen_test += list(f.test)
    assert sorted(seen_test) == list(range(120))
    with pytest.raises(ProtocolError, match="speaker"):
        leave_one_speaker_out(["a", None, "b", "c"])


def test_stratified_kfold_seeded_and_stratified():
    rng = np.random.default_rng(5)
    y = rng.choice(4, size=200, p=[0.4, 0.3, 0.2, 0.1])
    a, b, c = stratified_kfold(y, 5, seed=7), stratified_kfold(y, 5, seed=7), stratified_kfold(y, 5, seed=8)
    assert all(np.array_equal(f.test, g.test) and np.array_equal(f.val, g.val) for f, g in zip(a, b))
    assert any(not np.array_equal(f.test, g.test) for f, g in zip(a, c))
    assert sorted(np.concatenate([f.test for f in a]).tolist()) == list(range(200))
    overall = np.bincount(y, minlength=4) / len(y)
    for f in a:
        assert not set(f.train) & set(f.test) and not set(f.val) & set(f.test) and not set(f.train) & set(f.val)
        assert np.abs(np.bincount(y[f.test], minlength=4) / len(f.test) - overall).max() < 0.05
        assert abs(len(f.val) - 0.1 * (len(f.train) + len(f.val))) <= 1
    with pytest.raises(ProtocolError):
        stratified_kfold(y[:3], 5)


def test_inner_validation_and_predefined_split():
    y = np.repeat(np.arange(3), 20)
    tr, va = inner_validation(np.arange(60), y, seed=0)
    assert len(va) == 6 and np.array_equal(np.bincount(y[va]), [2, 2, 2]) and not set(tr) & set(va)
    splits = ["train"] * 40 + ["dev"] * 10 + ["test1"] * 10
    (f,) = predefined_split(splits, None, ["test1"])
    assert len(f.train) == 40 and len(f.val) == 10 and list(f.test) == list(range(50, 60))
    with pytest.raises(ProtocolError, match="test2"):
        predefined_split(splits, None, ["test2"])
