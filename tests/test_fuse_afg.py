"""AFG against eq. 1-3 of Wang et al. (MER 2023): the attention scores come from the concatenation
of all N projected features (eq. 2); the per-input form stays available by name."""

from __future__ import annotations

import pytest
import torch

from emo.fuse.model.heads import AFG, AFGHead, Token


def test_afg_eq2_scores_the_concatenation_of_all_features():
    torch.manual_seed(0)
    dims, hidden, b = [5, 3, 4], 6, 7
    afg = AFG(dims, hidden, dropout=0.0).eval()
    assert afg.scores == "concat" and afg.att.weight.shape == (len(dims), len(dims) * hidden)
    xs = [torch.randn(b, d) for d in dims]
    z, alpha = afg(xs)
    h = [torch.relu(xs[i] @ afg.proj[i].weight.T + afg.proj[i].bias) for i in range(len(dims))]  # eq. 1
    want_alpha = torch.softmax(torch.cat(h, 1) @ afg.att.weight.T + afg.att.bias, dim=1)  # eq. 2: W_α [h^1;...;h^N] + b_α
    want_z = sum(want_alpha[:, i:i + 1] * h[i] for i in range(len(dims)))  # eq. 3
    torch.testing.assert_close(alpha, want_alpha)
    torch.testing.assert_close(z, want_z)
    # the score of input 1 depends on the other inputs (concatenation), not on h^1 alone
    logits = lambda xs_: torch.log(afg(xs_)[1])  # noqa: E731  (log-softmax: logits up to a per-row constant)
    xs2 = [xs[0], xs[1] + 3.0, xs[2]]
    d1 = logits(xs2)[:, 0] - logits(xs2)[:, 2] - (logits(xs)[:, 0] - logits(xs)[:, 2])
    assert d1.abs().max() > 1e-3


def test_afg_per_input_scores_are_a_named_option():
    torch.manual_seed(0)
    dims, hidden = [5, 3], 4
    afg = AFG(dims, hidden, dropout=0.0, scores="per-input").eval()
    xs = [torch.randn(6, d) for d in dims]
    _, alpha = afg(xs)
    h = torch.stack([torch.relu(p(x)) for p, x in zip(afg.proj, xs)], 1)
    want = torch.softmax(afg.v(torch.tanh(afg.att(h))).squeeze(-1), dim=1)
    torch.testing.assert_close(alpha, want)
    with pytest.raises(ValueError, match="unknown AFG scores"):
        AFG(dims, hidden, scores="mean")
    head = AFGHead([Token("a", "audio", "0", 5), Token("f", "face", "p", 3)], hidden, 0.0, structure=2, scores="per-input")
    assert all(m.scores == "per-input" for m in [*head.inner, head.outer])


@pytest.mark.parametrize("scores", ["concat", "per-input"])
def test_afg_with_one_input_is_eq1_exactly_with_the_same_gradients(scores):
    """One input: α = softmax of one score ≡ 1 and eq. 3 is h¹; the shortcut gives the outputs of
    eq. 1-3 computed in full bitwise, and the projection's gradients to float rounding."""
    torch.manual_seed(1)
    afg = AFG([6], 5, dropout=0.0, scores=scores).eval()
    x = torch.randn(9, 6)
    z, alpha = afg([x])
    assert torch.equal(alpha, torch.ones(9, 1))
    h = torch.relu(x @ afg.proj[0].weight.T + afg.proj[0].bias)  # eq. 1
    if scores == "concat":
        a = torch.softmax(h @ afg.att.weight.T + afg.att.bias, dim=1)  # eq. 2 over N = 1
    else:
        a = torch.softmax(afg.v(torch.tanh(afg.att(h[:, None]))).squeeze(-1), dim=1)
    assert torch.equal(a, torch.ones(9, 1))
    full = a[:, :1] * h  # eq. 3
    assert torch.equal(z, full)
    g = torch.randn(9, 5)
    gz = torch.autograd.grad((z * g).sum(), [afg.proj[0].weight, afg.proj[0].bias])
    gf = torch.autograd.grad((full * g).sum(), [afg.proj[0].weight, afg.proj[0].bias, afg.att.weight, afg.att.bias])
    for u, v in zip(gz, gf[:2]):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-7)
    # through the scores W_α's gradient is an exact zero; the shortcut gives it none
    assert all(t.abs().max() == 0 for t in gf[2:])
