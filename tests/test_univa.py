"""UniVA (eq. 3-5, 11): VA positives, contrastive loss, VA sources, soft-target trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emo.extract.datasets.base import Sample
from emo.fuse.methods.univa import (
    UniVAConfig, UniVAError, UniVAHead, fit_soft_model, sample_va, univa_loss, va_contrastive_loss, va_positives,
)
from helpers import write_lexicon

@pytest.fixture(autouse=True)
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared CPU
    yield
    torch.set_num_threads(prev)


LEX = {"happy": (0.95, 0.75, 0.7), "sad": (0.15, 0.25, 0.2), "great": (0.9, 0.7, 0.6), "awful": (0.1, 0.6, 0.3),
       "neutral": (0.45, 0.2, 0.35), "glad": (0.9, 0.6, 0.6)}


def test_positives_follow_delta():
    va = torch.tensor([[0.0, 0.0], [0.0, 0.099], [0.0, 0.101], [0.07, 0.07], [0.5, 0.5]])
    known = torch.tensor([True, True, True, True, False])
    pos = va_positives(va, known, 0.1)
    d = torch.cdist(va, va)
    expect = (d < 0.1) & known[:, None] & known[None, :] & ~torch.eye(5, dtype=torch.bool)
    assert torch.equal(pos, expect)
    assert pos[0, 1].item() and not pos[0, 2].item() and pos[1, 2].item()
    assert not pos[4].any() and not pos[:, 4].any() and not pos.diagonal().any()
    assert not va_positives(va, known, 0.05)[0, 1].item()


def test_contrastive_loss_equals_hand_computation():
    # 2 views x 2 samples in 2-d; samples far apart in VA: each anchor's only positive is its own other view
    views = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.6], [0.6, 0.8]]])
    va = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    known = torch.tensor([True, True])
    tau = 0.5
    z = torch.nn.functional.normalize(views.reshape(4, 2), dim=-1)
    s = (z @ z.T / tau).numpy()
    pos_of = {0: 2, 1: 3, 2: 0, 3: 1}
    hand = np.mean([-(s[i, p] - math.log(sum(math.exp(s[i, k]) for k in range(4) if k != i))) for i, p in pos_of.items()])
    assert float(va_contrastive_loss(views, va, known, 0.1, tau)) == pytest.approx(hand, rel=1e-5)
    # samples within δ: both other rows become positives of every anchor
    near = torch.tensor([[0.0, 0.0], [0.05, 0.0]])
    hand2 = np.mean([-np.mean([s[i, k] - math.log(sum(math.exp(s[i, j]) for j in range(4) if j != i)) for k in range(4) if k != i])
                     for i in range(4)])
    assert float(va_contrastive_loss(views, near, known, 0.1, tau)) == pytest.approx(hand2, rel=1e-5)
    # anchors without VA are skipped; none with VA -> 0
    assert float(va_contrastive_loss(views, va, torch.tensor([False, False]), 0.1, tau)) == 0.0
    with pytest.raises(ValueError, match="V >= 2"):
        va_contrastive_loss(views[:1], va, known)


def test_contrastive_loss_pulls_va_neighbours_together():
    torch.manual_seed(0)
    va = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 1.0]] * 4)
    known = torch.ones(8, dtype=torch.bool)
    emb = torch.randn(8, 4, requires_grad=True)
    opt = torch.optim.SGD([emb], lr=0.5)
    for _ in range(100):
        loss = va_contrastive_loss(torch.stack([emb, emb + 0.01 * torch.randn(8, 4)]), va, known, 0.1, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = torch.nn.functional.normalize(emb.detach(), dim=-1)
    sim = z @ z.T
    assert sim[:4, :4].mean() > 0.9 and sim[:4, 4:].mean() < 0.0


def test_sample_va_sources(tmp_path):
    lex = write_lexicon(tmp_path / "lex.txt", LEX)
    s = [Sample("a", None, transcript="happy great day", discrete="happy"),
         Sample("b", None, transcript="so sad", emotions=["sad", "glad"]),
         Sample("c", None, transcript="nothing here"),
         Sample("d", None, transcript="", valence=2.0, arousal=-1.0)]
    va, known, info = sample_va(s, "auto", lex)
    assert info["source"] == "dataset" and known.tolist() == [False, False, False, True]
    np.testing.assert_allclose(va[3], [2.0, -1.0])
    va, known, info = sample_va(s, "label", lex)
    assert known.tolist() == [True, True, False, False] and info["source"] == "label"
    np.testing.assert_allclose(va[1], [(2 * 0.15 - 1 + 2 * 0.9 - 1) / 2, (2 * 0.25 - 1 + 2 * 0.6 - 1) / 2], atol=1e-5)
    va, known, info = sample_va(s, "transcript", lex)
    assert known.tolist() == [True, True, False, False] and info["n_known"] == 2
    np.testing.assert_allclose(va[0], [(0.9 + 0.8) / 2, (0.5 + 0.4) / 2], atol=1e-5)
    assert sample_va(s[:3], "auto", lex)[2]["source"] == "label"
    with pytest.raises(UniVAError, match="no sample"):
        sample_va(s[2:3], "transcript", lex)
    with pytest.raises(UniVAError, match="unknown VA source"):
        sample_va(s, "bogus", lex)


def _toy(n=240, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centers = rng.normal(size=(c, 8)) * 3
    xa = centers[y] + rng.normal(size=(n, 8))
    xt = centers[y][:, :4] + rng.normal(size=(n, 4))
    xs = [torch.tensor(xa[:, None, :], dtype=torch.float32), torch.tensor(xt[:, None, :], dtype=torch.float32)]
    va = np.array([[1, 1], [-1, -1], [1, -1]], np.float32)[y]
    return xs, y, va


def test_fit_soft_model_with_univa_losses_learns_and_uses_unlabelled_rows():
    xs, y, va = _toy()
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": 8}, {"name": "t", "modality": "text", "layers": ["0"], "dim": 4}]
    args = {"inputs": inputs, "head": "univa", "structure": 1, "layer_weights": False, "layer_weights_init": "0",
            "task": "discrete", "n_classes": 3, "decoder": "separate", "hidden": 16, "dropout": 0.1}
    target = np.eye(3, dtype=np.float32)[y]
    weight = np.ones(len(y), np.float32)
    weight[100:180] = 0.0  # unlabelled: contrastive and η terms only
    tr, va_rows, te = np.arange(180), np.arange(180, 210), np.arange(210, 240)
    M = np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]], np.float32)
    cfg = UniVAConfig(lam=0.3, delta=0.1, tau=0.1)
    model, info = fit_soft_model([x[tr] for x in xs], target[tr], weight[tr], [x[va_rows] for x in xs], target[va_rows], args,
                                 epochs=25, patience=8, batch_size=60, univa=cfg, va_tr=va[tr], known_tr=np.ones(len(tr), bool), M=M)
    assert isinstance(model.head, UniVAHead) and set(info["last_parts"]) == {"kl", "cl", "eta"}
    with torch.no_grad():
        acc = (model([x[te] for x in xs])["logits"].argmax(1).numpy() == y[te]).mean()
    assert acc > 0.8
    with pytest.raises(UniVAError, match="no labelled"):
        fit_soft_model([x[tr] for x in xs], target[tr], np.zeros(len(tr), np.float32), [x[va_rows] for x in xs], target[va_rows], args)
    with pytest.raises(UniVAError, match="valence-arousal"):
        fit_soft_model([x[tr] for x in xs], target[tr], weight[tr], [x[va_rows] for x in xs], target[va_rows], args, univa=cfg)



def test_a_nan_loss_in_the_univa_loop_is_the_one_non_finite_error():
    """Every training loop reports a NaN loss as NonFiniteError (the UniVA loop raised a bare UniVAError)."""
    from emo.fuse.eval.runcheck import NonFiniteError

    xs, y, va = _toy(n=120)
    xs[0][5, 0, 0] = float("inf")  # one training row with an infinite feature
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": 8}, {"name": "t", "modality": "text", "layers": ["0"], "dim": 4}]
    args = {"inputs": inputs, "head": "univa", "structure": 1, "layer_weights": False, "layer_weights_init": "0",
            "task": "discrete", "n_classes": 3, "decoder": "separate", "hidden": 16, "dropout": 0.1}
    target = np.eye(3, dtype=np.float32)[y]
    tr, va_rows = np.arange(100), np.arange(100, 120)
    with pytest.raises(NonFiniteError, match="non-finite training loss at epoch 1") as err:
        fit_soft_model([x[tr] for x in xs], target[tr], np.ones(100, np.float32), [x[va_rows] for x in xs], target[va_rows],
                       args, epochs=2, batch_size=200)
    assert isinstance(err.value, UniVAError)  # callers that catch UniVAError still do

def test_univa_loss_is_eq11():
    torch.manual_seed(0)
    head = UniVAHead([type("T", (), {"modality": "audio", "dim": 3})(), type("T", (), {"modality": "text", "dim": 2})()], 8, 0.0, 4)
    xs = [torch.randn(6, 3), torch.randn(6, 2)]
    z, info = head(xs)
    out = {"logits": torch.randn(6, 3), "info": info}
    target = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    w = torch.ones(6)
    va, known = torch.rand(6, 2), torch.ones(6, dtype=torch.bool)
    M = torch.eye(3)
    cfg = UniVAConfig(lam=0.4, delta=0.3, tau=0.2)
    loss, parts = univa_loss(out, head, target, w, va, known, cfg, M)
    assert loss.item() == pytest.approx(0.6 * parts["kl"] + 0.4 * parts["cl"] + parts["eta"], rel=1e-5)
    plain, p2 = univa_loss(out, None, target, w, None, None, None)
    assert set(p2) == {"kl"} and float(plain) == pytest.approx(parts["kl"])
    with pytest.raises(UniVAError, match="univa head"):
        univa_loss({"logits": out["logits"], "info": {}}, None, target, w, va, known, cfg)
    with pytest.raises(UniVAError, match="lambda"):
        UniVAConfig(lam=1.0).validate()
