"""emo.compat: each private third-party API and its public fallback compute the same thing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emo import compat


@pytest.fixture
def fallback(monkeypatch):
    """Run the body with every public fallback forced."""
    def force(on: bool = True) -> None:
        monkeypatch.setattr(compat, "FORCE_FALLBACK", on)
    return force


def test_version_check_reads_installed_versions(monkeypatch):
    assert compat.private_ok("torch")  # the tested environment is inside TESTED's ranges
    monkeypatch.setitem(compat.TESTED, "torch", ((99,), (100,)))
    assert not compat.private_ok("torch")
    assert compat._version("no-such-distribution-emo") is None


def _adamw_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 2, 4)]
    ps = [torch.randn(s, generator=g) for s in shapes]
    gs = [torch.randn(s, generator=g) for s in shapes]
    ms = [torch.randn(s, generator=g) * 0.1 for s in shapes]
    vs = [torch.rand(s, generator=g) * 0.1 for s in shapes]
    steps = [torch.tensor(3.0) for _ in shapes]
    return ps, gs, ms, vs, steps


def test_fused_adamw_fallback_matches_private_and_torch_optim(fallback):
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.05, eps=1e-8)
    out = []
    for force in (False, True):
        fallback(force)
        ps, gs, ms, vs, steps = _adamw_inputs(0)
        compat.fused_adamw_(ps, gs, ms, vs, [], steps, **kw)
        out.append((ps, ms, vs))
    for a, b in zip(out[0], out[1]):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    # and both equal torch.optim.AdamW (public) on its first step
    p0 = torch.randn(6, generator=torch.Generator().manual_seed(1))
    g0 = torch.randn(6, generator=torch.Generator().manual_seed(2))
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.05, foreach=False)
    ref.grad = g0.clone()
    opt.step()
    p, m, v = p0.clone(), torch.zeros(6), torch.zeros(6)
    compat.fused_adamw_([p], [g0.clone()], [m], [v], [], [torch.tensor(1.0)], **kw)
    torch.testing.assert_close(p, ref.detach(), rtol=1e-6, atol=1e-7)
    assert not torch.equal(p, p0)  # a step was taken


def test_lbfgs_params_both_paths(fallback):
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([w])
    assert compat.lbfgs_params(opt)[0] is w
    fallback()
    assert compat.lbfgs_params(opt)[0] is w


def _lbfgs_fit(make) -> tuple[torch.Tensor, type]:
    w = torch.zeros(4, requires_grad=True)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0])
    opt = make([w], lr=1.0, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((w - target) ** 2 * torch.arange(1.0, 5.0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), type(opt)


def test_lbfgs_optimizer_both_paths_reach_the_same_optimum(fallback):
    w_private, cls = _lbfgs_fit(compat.lbfgs_optimizer)
    assert cls is not torch.optim.LBFGS and issubclass(cls, torch.optim.LBFGS)
    fallback()
    w_public, cls = _lbfgs_fit(compat.lbfgs_optimizer)
    assert cls is torch.optim.LBFGS
    torch.testing.assert_close(w_private, w_public, rtol=0, atol=0)
    torch.testing.assert_close(w_private, torch.tensor([1.0, -2.0, 0.5, 3.0]))
    assert compat.lbfgs_params(compat.lbfgs_optimizer([w_private.requires_grad_(True)]))[0] is w_private


def test_lbfgs_optimizer_does_not_import_dynamo():
    """The reason the wrapper exists: a fresh process fits with it and never imports torch._dynamo,
    while torch.optim.LBFGS itself does (so the check could fail)."""
    import subprocess
    import sys

    code = ("import sys, torch\nfrom emo import compat\nw = torch.zeros(2, requires_grad=True)\n"
            "opt = {make}([w], max_iter=5)\n"
            "def c():\n    opt.zero_grad(); l = ((w - 1) ** 2).sum(); l.backward(); return l\n"
            "opt.step(c)\nprint('torch._dynamo' in sys.modules)\n")
    out = {make: subprocess.run([sys.executable, "-c", code.format(make=make)], capture_output=True, text=True,
                                check=True).stdout.strip() for make in ("compat.lbfgs_optimizer", "torch.optim.LBFGS")}
    assert out == {"compat.lbfgs_optimizer": "False", "torch.optim.LBFGS": "True"}


def test_clip_vit_embeds_and_pool_fallbacks_match_open_clip(fallback):
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    v = VisionTransformer(image_size=32, patch_size=8, width=32, layers=1, heads=2, mlp_ratio=2.0, output_dim=16).eval()
    with torch.no_grad():
        v.class_embedding.normal_()
        v.positional_embedding.normal_()
        pixels = torch.randn(2, 3, 32, 32)
        a = compat.clip_vit_embeds(v, pixels)
        pa, ta = compat.clip_vit_pool(v, a)
        fallback()
        b = compat.clip_vit_embeds(v, pixels)
        pb, tb = compat.clip_vit_pool(v, b)
    assert a.shape == (2, 1 + 16, 32)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(pa, pb)
    torch.testing.assert_close(ta, tb)
    v.pool_type = "avg"
    with pytest.raises(NotImplementedError):
        compat.clip_vit_pool(v, a)


def test_smile_engine_fallback_gives_the_same_stream(fallback):
    """egemaps_stream through the private engine set-up and through the public fallback: equal features."""
    import opensmile

    from emo.extract.streaming import egemaps_stream

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    t = np.arange(16000 * 2) / 16000
    a = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    a += np.random.default_rng(0).normal(0, 0.01, a.size).astype(np.float32)
    win = 4000
    got = egemaps_stream(smile, (a[i:i + win] for i in range(0, a.size, win)))
    fallback()
    fb = egemaps_stream(smile, (a[i:i + win] for i in range(0, a.size, win)))
    assert got.shape == (88,) and np.isfinite(got).all()
    np.testing.assert_array_equal(got, fb)
