"""The pieces of the fold-parallel step that exist for speed: they must compute what the plain form does."""

from __future__ import annotations

import numpy as np
import torch

from emo.fuse.model.heads import Dropout, uniform_dropout_masks
from emo.fuse.training.batched import _GradLayouts, _physical
from emo.fuse.training.data import Normalizer, _stats


def test_stacked_dropout_keeps_and_scales_as_inverted_dropout_and_backpropagates_its_mask():
    torch.manual_seed(0)
    p = 0.3
    drop = Dropout(p).train()
    x = (torch.rand(4, 64, 32) + 0.5).requires_grad_(True)  # > 0: a kept element is never 0
    with uniform_dropout_masks():
        y = torch.vmap(drop, randomness="different")(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x.detach()[kept] / (1 - p))
    assert abs(kept.float().mean().item() - (1 - p)) < 0.02
    assert not torch.equal(kept[0], kept[1])  # each model its own mask
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    # a non-finite input stays non-finite where it is kept (as nn.Dropout), never silently 0 by a select
    with uniform_dropout_masks():
        z = drop(torch.full((1000,), float("nan")))
    assert torch.isnan(z).sum() > 0
    # outside the block: nn.Dropout's own stream; in eval mode: the identity
    torch.manual_seed(1)
    a = drop(x.detach())
    torch.manual_seed(1)
    torch.testing.assert_close(a, torch.nn.functional.dropout(x.detach(), p, True))
    with uniform_dropout_masks():
        assert torch.equal(drop.eval()(x.detach()), x.detach())


def test_stacked_weights_take_their_gradients_layout_so_autograd_hands_the_gradient_over():
    torch.manual_seed(0)
    W = torch.randn(3, 5, 7).requires_grad_(True)  # 3 models' nn.Linear(7, 5) weights
    x = torch.randn(3, 11, 7)
    loss = lambda W_: torch.vmap(lambda w, a: torch.nn.functional.linear(a, w).square().sum())(W_, x).sum()  # noqa: E731
    layouts = _GradLayouts([W])
    with layouts.learn([W]):
        loss(W).backward()
    assert layouts.pending and layouts.order[0] == (0, 2, 1)  # the vmapped weight gradient arrives transposed
    want = W.grad.clone()
    (W2,), (m,), (v,) = layouts.apply([W], [torch.zeros_like(W)], [torch.zeros_like(W)])
    assert torch.equal(W2, W) and torch.equal(W2.grad, want) and W2.is_leaf
    assert m.stride() == W2.stride() == v.stride() != W.stride()
    incoming = []  # data pointers only: holding the tensor would itself force autograd to copy it
    W2.register_hook(lambda g: incoming.append(g.data_ptr()))
    W2.grad = None
    loss(W2).backward()
    assert W2.grad.data_ptr() == incoming[0]  # no copy into another layout
    torch.testing.assert_close(W2.grad, want)
    phys = _physical(W2.detach())
    assert phys.is_contiguous() and phys.data_ptr() == W2.data_ptr() and phys.shape == (3, 7, 5)
    # shrinking the stack keeps the layout
    assert layouts.like(0, W2.detach().index_select(0, torch.tensor([0, 2]))).stride() == (35, 1, 5)


def test_statistics_are_numpys_mean_and_std_over_the_selected_rows():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((700, 3, 9)) * 4 + 7).astype(np.float32)
    x[:, 1, 2] = 5.0  # a constant dimension: std 1
    rows = np.sort(rng.choice(700, 530, replace=False))
    for sel, src in ((rows, x), (None, x), (rows, x.astype(np.float16))):
        m, s = _stats(src, sel)
        ref = src if sel is None else src[sel]
        want_s = ref.std(0, dtype=np.float64).astype(np.float32)
        want_s[want_s < 1e-6] = 1.0
        np.testing.assert_allclose(m, ref.mean(0, dtype=np.float64).astype(np.float32), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s, want_s, rtol=1e-6)
        assert m.dtype == s.dtype == np.float32 and s[1, 2] == 1.0
    norm = Normalizer("global").fit({"a": x}, rows)
    np.testing.assert_allclose(norm.global_["a"][0], x[rows].mean(0), rtol=1e-5, atol=1e-5)


def test_blocked_transpose_copies_a_strided_layer_slice_exactly():
    from emo.fuse.training.batched import _transposed

    x = torch.randn(37, 3, 5)  # 37 rows: blocks of 16 and a short last block
    for d in (x[:, 1, :], x[:, 0, :].contiguous(), torch.randn(1, 4)):
        t = _transposed(d)
        assert t.is_contiguous() and torch.equal(t, d.T.contiguous())


def test_statistics_of_no_rows_are_nan_and_a_boolean_mask_selects_rows():
    from emo.fuse.training.data import Frames

    x = np.arange(24, dtype=np.float32).reshape(6, 1, 4)
    mask = np.array([True, False, True, False, False, True])
    for a, b in zip(_stats(x, mask), _stats(x, np.flatnonzero(mask))):
        np.testing.assert_array_equal(a, b)
    m, s = _stats(x, np.array([], dtype=np.int64))
    assert m.shape == s.shape == (1, 4) and np.isnan(m).all() and np.isnan(s).all()
    # a speaker whose only clip has no frames (no face found) does not stop speaker normalisation
    frames = Frames.from_list([np.ones((5, 1, 4), np.float32), np.zeros((0, 1, 4), np.float32)])
    norm = Normalizer("speaker").fit({"face": frames}, np.arange(2), ["a", "b"])
    assert np.isnan(norm.speaker["face"]["b"][0]).all() and np.isfinite(norm.speaker["face"]["a"][0]).all()
