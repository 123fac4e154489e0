"""Method tests on synthetic features where the truth is known; each can fail.

AFG attention finds the informative feature; JDEV beats separate decoding when valence is a
noisy function of the class; uncertainty weighting down-weights the noisier task; learnable
layer weights concentrate on the informative layer; every head learns an easy problem.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emo.fuse.config import TrainConfig
from emo.fuse.training.fit import fit_model, predict_model
from emo.fuse.model.heads import AFGHead, Token
from emo.fuse.model.losses import UncertaintyLoss
from emo.fuse.model.multimodal import FusionModel

torch.set_num_threads(1)


def _classes(n: int, c: int, dim: int, seed: int, sep: float = 1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    centers = rng.normal(size=(c, dim)) * sep
    return y, (centers[y] + rng.normal(size=(n, dim))).astype(np.float32), rng


def _split(n: int):
    idx = np.arange(n)
    return idx[: int(0.6 * n)], idx[int(0.6 * n): int(0.75 * n)], idx[int(0.75 * n):]


def _fit(xs, y, cfg, args, seed=0):
    tr, va, te = _split(len(xs[0]))
    t = lambda rows: [torch.as_tensor(x[rows]) for x in xs]  # noqa: E731
    model, info = fit_model(t(tr), {k: v[tr] for k, v in y.items()}, t(va), {k: v[va] for k, v in y.items()}, cfg, args, seed)
    return model, info, predict_model(model, t(te)), {k: v[te] for k, v in y.items()}


def _inputs(dims: dict[str, tuple[int, int]], modality: dict[str, str] | None = None):
    return [{"name": k, "modality": (modality or {}).get(k, "audio"), "layers": [str(i) for i in range(L)], "dim": D}
            for k, (L, D) in dims.items()]


def test_afg_attends_to_the_informative_feature():
    y, inf, rng = _classes(300, 4, 16, seed=0)
    names = ["noise0", "noise1", "signal", "noise2", "noise3"]
    xs = [inf[:, None] if n == "signal" else rng.normal(size=(300, 1, 16)).astype(np.float32) for n in names]
    cfg = TrainConfig(epochs=25, patience=25, hidden=32, dropout=0.1, batch_size=32, lr=3e-3)
    args = cfg.model_args(_inputs({n: (1, 16) for n in names}), 4)
    model, _, out, yt = _fit(xs, {"discrete": y}, cfg, args)
    with torch.no_grad():
        att = model([torch.as_tensor(x) for x in xs])["info"]["attention"].mean(0).numpy()
    assert att.shape == (5,)
    assert att[2] > 0.5 and att[2] == att.max(), att
    assert (out["probs"].argmax(1) == yt["discrete"]).mean() > 0.8


def _valence_from_class(seed: int, noise: float = 0.3):
    # classes lie on a line in feature space; valence alternates +3/-3 along it, so valence is a
    # noisy, non-linear function of the class that a linear read-out of the features cannot fit
    rng = np.random.default_rng(seed)
    n, c = 400, 4
    y = np.arange(n) % c
    rng.shuffle(y)
    direction = rng.normal(size=8)
    x = (np.outer(y * 5.0, direction / np.linalg.norm(direction)) + rng.normal(size=(n, 8))).astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    val = (np.where(y % 2 == 0, 3.0, -3.0) + rng.normal(scale=noise, size=n)).astype(np.float32)
    return [x[:, None]], {"discrete": y.astype(np.int64), "valence": val}


def test_jdev_lowers_valence_mse_versus_separate_decoding():
    xs, y = _valence_from_class(1)
    mse = {}
    for decoder in ("separate", "jdev"):
        cfg = TrainConfig(head="linear", task="discrete+valence", decoder=decoder, epochs=50, patience=50, lr=3e-2, batch_size=32)
        args = cfg.model_args(_inputs({"f": (1, 8)}), 4)
        _, _, out, yt = _fit(xs, y, cfg, args)
        mse[decoder] = float(np.mean((out["valence"] - yt["valence"]) ** 2))
    assert mse["jdev"] < 0.5 * mse["separate"], mse
    assert mse["jdev"] < 3.0, mse  # well below the label variance (9)


def test_uncertainty_weighting_down_weights_the_noisier_task():
    weights = {}
    for noise in (0.1, 3.0):
        xs, y = _valence_from_class(2, noise=noise)
        cfg = TrainConfig(head="mlp", hidden=32, dropout=0.0, task="discrete+valence", decoder="jdev", loss_weighting="uncertainty",
                          epochs=40, patience=40, lr=1e-2, batch_size=64)
        args = cfg.model_args(_inputs({"f": (1, 8)}), 4)
        _, info, _, _ = _fit(xs, y, cfg, args)
        w_e, w_v = info["loss_weights"]
        weights[noise] = w_v / w_e
        if noise == 3.0:
            assert w_v < w_e, (w_e, w_v)
    assert weights[3.0] < 0.7 * weights[0.1], weights
    # the uncertainty loss itself: at δ = 1 the loss is L_e + L_v / 2 + 2 log 2
    u = UncertaintyLoss()
    assert float(u(torch.tensor(2.0), torch.tensor(4.0)).detach()) == pytest.approx(2.0 + 2.0 + 2 * np.log(2))


def test_layer_weights_concentrate_on_the_informative_layer():
    y, inf, rng = _classes(300, 4, 16, seed=3, sep=1.0)
    layers = ["16", "17", "18", "19", "20"]
    x = rng.normal(size=(300, 5, 16)).astype(np.float32) * 1.0
    x[:, 4] = inf  # layer 20 carries the class; the initial weight sits on layer 18 (paper default)
    cfg = TrainConfig(head="mlp", layer_weights=True, epochs=40, patience=40, hidden=32, dropout=0.1, lr=1e-2, batch_size=32)
    args = cfg.model_args([{"name": "hubert_large", "modality": "audio", "layers": layers, "dim": 16}], 4)
    assert args["layer_weights"] is True
    model, _, out, yt = _fit([x], {"discrete": y}, cfg, args)
    w = np.abs(model.pool["0"].weight.detach().numpy())
    assert w.argmax() == 4 and w[4] > 2 * np.delete(w, 4).max(), w
    assert (out["probs"].argmax(1) == yt["discrete"]).mean() > 0.7


@pytest.mark.parametrize("head,structure", [("afg", 1), ("afg", 2), ("afg", 3), ("attention", 1), ("transformer", 1), ("mlp", 1), ("linear", 1)])
def test_every_head_learns_an_easy_problem(head, structure):
    y, a, rng = _classes(160, 3, 12, seed=4, sep=2.0)
    # audio: a 3-layer encoder (informative) + a single-layer one; face: one noise feature
    xa = np.repeat(a[:, None], 3, axis=1) + rng.normal(scale=0.3, size=(160, 3, 12)).astype(np.float32)
    xs = [xa.astype(np.float32), rng.normal(size=(160, 1, 6)).astype(np.float32), rng.normal(size=(160, 1, 10)).astype(np.float32)]
    inputs = _inputs({"hubert_large": (3, 12), "egemaps": (1, 6), "clip_vit_l": (1, 10)}, {"clip_vit_l": "face"})
    cfg = TrainConfig(head=head, structure=structure, epochs=15, patience=15, hidden=32, dropout=0.1, lr=3e-3)
    model, _, out, yt = _fit(xs, {"discrete": y}, cfg, cfg.model_args(inputs, 3))
    assert out["probs"].shape == (40, 3) and np.allclose(out["probs"].sum(1), 1, atol=1e-5)
    assert (out["probs"].argmax(1) == yt["discrete"]).mean() > 0.8


def test_afg_structure_2_needs_both_modalities_and_jdev_needs_two_tasks():
    toks = [Token("hubert_large", "audio", "16", 8), Token("egemaps", "audio", "functionals", 4)]
    with pytest.raises(ValueError, match="structure 2"):
        AFGHead(toks, 16, 0.0, structure=2)
    with pytest.raises(ValueError, match="jdev"):
        FusionModel(_inputs({"f": (1, 4)}), task="discrete", n_classes=3, decoder="jdev")
    with pytest.raises(ValueError, match="--head"):
        TrainConfig(head="gru").validate()


def test_regression_tasks_learn():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 1, 10)).astype(np.float32)
    w = rng.normal(size=(10, 3))
    vad = (x[:, 0] @ w * 0.3 + rng.normal(scale=0.1, size=(300, 3))).astype(np.float32)
    for task, y in (("vad", {"vad": vad}), ("valence", {"valence": vad[:, 0].copy()})):
        cfg = TrainConfig(head="mlp", task=task, epochs=30, patience=30, hidden=32, dropout=0.0, lr=3e-3)
        _, _, out, yt = _fit([x], y, cfg, cfg.model_args(_inputs({"f": (1, 10)}), 0))
        assert float(np.mean((out[task] - yt[task]) ** 2)) < 0.3 * float(np.var(yt[task]))
