"""Multi-label task (UniVA eq. 7, 10, threshold ζ, HHMPN metrics): emo.fuse.methods.multilabel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from emo.fuse.methods.multilabel import (
    DEFAULT_THRESHOLD,
    LabelSpace,
    MultiLabelError,
    kl_loss,
    multilabel_metrics,
    normalized_targets,
    predict_multihot,
    sample_words,
    tune_threshold,
)
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, jaccard_score


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, c = 60, 7
    t = rng.random((n, c)) < 0.3
    p = rng.random((n, c)) < 0.35
    t[0] = False  # one sample with no true label, one with no prediction
    p[1] = False
    t[:, 6] = False  # a label absent from y_true
    m = multilabel_metrics(t, p)
    present = np.flatnonzero(t.any(axis=0))
    assert m["ml_accuracy"] == pytest.approx(jaccard_score(t, p, average="samples", zero_division=1))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(t, p))
    assert m["micro_f1"] == pytest.approx(f1_score(t, p, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", labels=present, zero_division=0))


def test_metrics_reduce_to_single_label_metrics():
    rng = np.random.default_rng(3)
    n, c = 200, 5
    yt, yp = rng.integers(0, c, n), rng.integers(0, c, n)
    eye = np.eye(c, dtype=bool)
    m = multilabel_metrics(eye[yt], eye[yp])
    acc = accuracy_score(yt, yp)
    assert m["ml_accuracy"] == pytest.approx(acc)
    assert m["micro_f1"] == pytest.approx(acc)
    assert m["hamming_loss"] == pytest.approx(2 * (1 - acc) / c)
    assert m["macro_f1"] == pytest.approx(f1_score(yt, yp, average="macro"))
    perfect = multilabel_metrics(eye[yt], eye[yt])
    assert perfect == {"ml_accuracy": 1.0, "hamming_loss": 0.0, "micro_f1": 1.0, "macro_f1": 1.0}


def test_metrics_refuse_bad_shapes():
    with pytest.raises(MultiLabelError, match="must both be"):
        multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(MultiLabelError, match="no samples"):
        multilabel_metrics(np.zeros((0, 2)), np.zeros((0, 2)))


def test_label_space_from_training_words_with_word_map():
    lists = [["Happy", "surprised"], ["sad"], None, ["happy "], ["joy"]]
    ls = LabelSpace.from_words(lists)
    assert ls.classes == ["happy", "joy", "sad", "surprised"]
    assert ls.counts == [2, 1, 1, 1]
    mapping = {"joy": "happy", "surprised": None}
    ls2 = LabelSpace.from_words(lists, word_map=lambda w: mapping.get(w, w), word_map_name="wheel")
    assert ls2.classes == ["happy", "sad"] and ls2.counts == [3, 1]
    y, labelled, unknown = ls2.encode([["JOY", "happy"], ["angry"], None, ["surprised", "sad"]])
    np.testing.assert_array_equal(y, [[1, 0], [0, 0], [0, 0], [0, 1]])
    assert labelled.tolist() == [True, False, False, True] and unknown == 1
    assert ls2.to_dict() == {"classes": ["happy", "sad"], "counts": [3, 1], "word_map": "wheel"}
    assert ls2.decode(np.array([[1, 1], [0, 0]])) == [["happy", "sad"], []]
    with pytest.raises(MultiLabelError, match="no emotion word"):
        LabelSpace.from_words([None, []])


def test_sample_words_falls_back_to_discrete():
    from emo.extract.datasets.base import Sample

    assert sample_words(Sample("a", None, emotions=["happy", "sad"], discrete="happy")) == ["happy", "sad"]
    assert sample_words(Sample("b", None, discrete="sad")) == ["sad"]
    assert sample_words(Sample("c", None)) is None


def test_normalized_targets_and_kl_loss():
    y = normalized_targets(np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]]))
    np.testing.assert_allclose(y, [[0.5, 0.5, 0], [0, 0, 1], [0, 0, 0]])
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], requires_grad=True)
    t = torch.tensor(y[:2])
    p = torch.softmax(logits, -1).detach().numpy()
    by_hand = np.mean([0.5 * np.log(0.5 / p[0, 0]) + 0.5 * np.log(0.5 / p[0, 1]), np.log(1 / p[1, 2])])
    loss = kl_loss(logits, t)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    # one-hot target: KL = cross-entropy
    assert float(kl_loss(logits[1:], t[1:])) == pytest.approx(float(torch.nn.functional.cross_entropy(logits[1:], torch.tensor([2]))), rel=1e-6)
    w = torch.tensor([0.0, 2.0])
    assert float(kl_loss(logits, t, w)) == pytest.approx(np.log(1 / p[1, 2]), rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert float(kl_loss(logits, t, torch.zeros(2))) == 0.0
    with pytest.raises(ValueError, match="must both be"):
        kl_loss(logits, t[:, :2])


def test_threshold_prediction_and_tuning():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33]])
    np.testing.assert_array_equal(predict_multihot(p), [[1, 1, 1], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(predict_multihot(p, 0.4), [[1, 0, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(predict_multihot(p, 0.9, at_least_one=False), np.zeros((3, 3), bool))
    with pytest.raises(MultiLabelError, match="NaN"):
        predict_multihot(np.array([[np.nan, 1.0]]))
    truth = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]], bool)
    z, m = tune_threshold(p, truth)
    assert 0.34 <= z < 0.5 and m["micro_f1"] == 1.0
    assert DEFAULT_THRESHOLD == 0.18
