"""The fold-parallel trainer (emo.fuse.training.batched) against the sequential loop (emo.fuse.training.train)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emo.fuse.training.batched import (Job, batched_unsupported, fit_batched, fit_linear_lbfgs, masked_task_losses,
                              train_cv_batched)
from emo.fuse.model.losses import task_losses
from emo.fuse.eval.protocols import leave_one_speaker_out, stratified_kfold
from emo.fuse.config import TrainConfig
from emo.fuse.eval.cv import train_cv


def _data(n: int = 120, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    a = rng.normal(size=(n, 2, 10)).astype(np.float32)
    a[:, 1, :3] += 1.2 * y[:, None]
    b = rng.normal(size=(n, 1, 6)).astype(np.float32)
    b[:, 0, 0] += 0.5 * y
    vad = np.stack([y / c, rng.random(n), rng.random(n)], 1).astype(np.float32)
    labels = {"discrete": y.astype(np.int64), "valence": (y - 1 + 0.3 * rng.normal(size=n)).astype(np.float32), "vad": vad}
    inputs = [{"name": "a", "modality": "audio", "layers": ["0", "1"], "dim": 10},
              {"name": "b", "modality": "face", "layers": ["f"], "dim": 6}]
    # unequal speakers: folds of different sizes, so models take different numbers of steps
    speakers = [f"s{i % 4 if i % 7 else 0}" for i in range(n)]
    return {"a": a, "b": b}, inputs, labels, speakers


CASES = [
    dict(head="afg", task="discrete", class_weights=True, normalize="global"),
    dict(head="afg", structure=3, task="discrete+valence", decoder="jdev", loss_weighting="uncertainty"),
    dict(head="mlp", layer_weights=True, task="discrete+valence"),
    dict(head="linear", task="vad", normalize="global"),
    dict(head="attention", task="valence", normalize="speaker"),
    dict(head="transformer", task="discrete"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_batched_predictions_match_the_sequential_loop(case):
    blocks, inputs, y, speakers = _data()
    cfg = TrainConfig(hidden=8, dropout=0.0, epochs=6, seeds=2, batch_size=16, patience=2, threads=1, **case)
    folds = leave_one_speaker_out(speakers, 0)
    n_classes = 3 if "discrete" in case["task"] else 0
    seq = train_cv(blocks, inputs, y, folds, cfg, n_classes, speakers)
    bat = train_cv_batched(blocks, inputs, y, folds, cfg, n_classes, speakers)
    assert np.array_equal(seq.oof["index"], bat.oof["index"])
    keys = [k for k in ("probs", "valence", "vad") if k in seq.oof]
    assert keys
    for k in keys:
        np.testing.assert_allclose(bat.oof[k], seq.oof[k], atol=2e-5, rtol=1e-4)
    assert [f["epochs"] for f in bat.folds] == [f["epochs"] for f in seq.folds]
    # the same best weights, model by model (not for the transformer: its attention key bias has a
    # zero gradient up to rounding, which AdamW's normalised step turns into lr-sized noise;
    # its predictions above still agree)
    for a, b in zip(seq.states, bat.states) if case["head"] != "transformer" else []:
        for sa, sb in zip(a, b):
            assert sa.keys() == sb.keys()
            for name in sa:
                if name.endswith("head.score.bias"):  # attention fusion: a bias shared by every input's score cancels
                    continue                          # in the softmax (zero gradient up to rounding, as above)
                torch.testing.assert_close(sb[name], sa[name], atol=2e-4, rtol=1e-3)  # float rounding accumulates over steps
    if case.get("loss_weighting") == "uncertainty":
        w_seq = [f["loss_weights"] for d in seq.diagnostics for f in d["fits"]]
        w_bat = [f["loss_weights"] for d in bat.diagnostics for f in d["fits"]]
        np.testing.assert_allclose(w_bat, w_seq, rtol=1e-4)


def test_a_parameter_the_loss_does_not_reach_is_left_alone_by_both_trainers():
    """AFG over one input never uses W_α (α ≡ 1): it gets no gradient, and AdamW neither steps nor
    decays it, in the sequential loop (torch.optim.AdamW skips it) and in the fold-parallel trainer
    alike: every saved weight agrees, W_α stays at its initial value."""
    blocks, inputs, y, speakers = _data()
    blocks, inputs = {"a": blocks["a"][:, 1:]}, [dict(inputs[0], layers=["1"])]
    cfg = TrainConfig(head="afg", hidden=8, dropout=0.0, epochs=4, seeds=2, batch_size=16, patience=2, threads=1,
                      weight_decay=0.5, recipe="adamw")
    folds = leave_one_speaker_out(speakers, 0)
    seq = train_cv(blocks, inputs, y, folds, cfg, 3, speakers)
    bat = train_cv_batched(blocks, inputs, y, folds, cfg, 3, speakers)
    np.testing.assert_allclose(bat.oof["probs"], seq.oof["probs"], atol=2e-5, rtol=1e-4)
    att = [n for n in seq.states[0][0] if ".att." in n]
    assert att
    for a, b in zip(seq.states, bat.states):
        for sa, sb in zip(a, b):
            for name in sa:
                torch.testing.assert_close(sb[name], sa[name], atol=2e-4, rtol=1e-3)
    # and W_α is still what initialisation gave it (a decay of 0.5 x lr over the steps would show)
    from emo.fuse.training.batched import init_model
    init = init_model(cfg.model_args(inputs, 3), 0, {"discrete": y["discrete"]}, cfg.decoder).state_dict()
    for name in att:
        torch.testing.assert_close(seq.states[0][0][name], init[name], rtol=0, atol=0)
        torch.testing.assert_close(bat.states[0][0][name], init[name], rtol=0, atol=0)


def test_each_model_stops_on_its_own_validation_loss_and_then_freezes():
    blocks, inputs, y, _ = _data(90)
    rng = np.random.default_rng(1)
    # 40 extra rows with shuffled labels: the inner validation set of one model only, which
    # therefore stops early while the others keep improving
    extra = rng.integers(0, 90, 30)
    xs = [torch.as_tensor(np.concatenate([blocks[i["name"]], blocks[i["name"]][extra]])) for i in inputs]
    yd = np.concatenate([y["discrete"], rng.permutation(y["discrete"][extra])])
    jobs = [Job(f.train, f.val, seed=k) for k, f in enumerate(stratified_kfold(y["discrete"], 3, 0))]
    jobs.append(Job(jobs[0].train, np.arange(90, 120), seed=7))
    cfg = TrainConfig(head="afg", hidden=8, dropout=0.0, epochs=12, batch_size=16, patience=2, lr=1e-2).resolve(100)
    seen: dict[int, list] = {}

    def on_epoch(epoch, ids, params, running):
        for r, g in enumerate(ids):
            seen.setdefault(int(g), []).append((epoch, bool(running[g]), params[r].clone()))

    fit = fit_batched(xs, {"discrete": yd}, jobs, cfg, cfg.model_args(inputs, 3), on_epoch=on_epoch)
    epochs = [i["epochs"] for i in fit.infos]
    assert len(set(epochs)) > 1, epochs  # models stopped at different epochs
    for g, info in enumerate(fit.infos):
        if info["epochs"] < cfg.epochs:  # stopped by patience: waited exactly `patience` epochs
            assert info["epochs"] - info["best_epoch"] == cfg.patience
    stopped = [g for g, i in enumerate(fit.infos) if i["epochs"] < max(epochs)]
    assert stopped
    for g in stopped:
        trace = seen[g]
        stop_at = fit.infos[g]["epochs"]
        frozen = [p for e, _, p in trace if e >= stop_at]
        for p in frozen[1:]:  # still stacked after stopping: parameters unchanged
            assert torch.equal(p, frozen[0])
    # a stopped model is what it would be trained alone (the others' steps never touch it)
    g = stopped[0]
    alone = fit_batched(xs, {"discrete": yd}, [jobs[g]], cfg, cfg.model_args(inputs, 3))
    for (n, p), q in zip(fit.models[g].state_dict().items(), alone.models[0].state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=n)
    assert alone.infos[0]["epochs"] == fit.infos[g]["epochs"]


def test_masked_losses_equal_task_losses_on_the_kept_rows():
    g = torch.Generator().manual_seed(0)
    out = {"logits": torch.randn(10, 4, generator=g), "valence": torch.randn(10, generator=g), "vad": torch.randn(10, 3, generator=g)}
    y = {"discrete": torch.randint(0, 4, (10,), generator=g), "valence": torch.randn(10, generator=g), "vad": torch.randn(10, 3, generator=g)}
    mask = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    cw = torch.tensor([0.5, 2.0, 1.0, 3.0])
    got = masked_task_losses(out, y, mask, cw, 0.1)
    want = task_losses({k: v[mask] for k, v in out.items()}, {k: v[mask] for k, v in y.items()}, cw, 0.1)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_heads_that_cannot_batch_fall_back_and_say_why():
    blocks, inputs, y, speakers = _data(90)
    speakers = list(speakers)
    speakers[5] = None  # speaker normalisation would need per-fold statistics for this row
    cfg = TrainConfig(head="linear", normalize="speaker", dropout=0.0, epochs=3, seeds=1, threads=1)
    assert "frame-level" in batched_unsupported(TrainConfig(frames=True), inputs)
    assert "LSTM" in batched_unsupported(TrainConfig(), [{**inputs[0], "frames": True}])
    assert batched_unsupported(cfg, inputs) is None
    msgs: list[str] = []
    folds = stratified_kfold(y["discrete"], 3, 0)
    res = train_cv_batched(blocks, inputs, y, folds, cfg, 3, speakers, log=msgs.append)
    assert any(m.startswith("sequential training:") and "speaker" in m for m in msgs), msgs
    ref = train_cv(blocks, inputs, y, folds, cfg, 3, speakers)
    np.testing.assert_array_equal(res.oof["probs"], ref.oof["probs"])
    # AdamW instead of L-BFGS for a head that is not convex, with the reason
    msgs.clear()
    train_cv_batched(blocks, inputs, y, folds, TrainConfig(head="mlp", hidden=4, epochs=2, seeds=1, threads=1), 3,
                     log=msgs.append, optimizer="lbfgs")
    assert any("not convex" in m for m in msgs), msgs


def test_lbfgs_probe_is_scikit_learns_l2_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, c, d = 240, 3, 12
    yy = rng.integers(0, c, n)
    a = rng.normal(size=(n, 1, d)).astype(np.float32)
    a[:, 0, :3] += 0.8 * yy[:, None]
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": d}]
    folds = stratified_kfold(yy, 3, 0)
    cfg = TrainConfig(head="linear", label_smoothing=0.0, weight_decay=1e-2, normalize="global", seeds=3, threads=1)
    res = train_cv_batched({"a": a}, inputs, {"discrete": yy}, folds, cfg, c, optimizer="lbfgs")
    assert all(len(s) == 1 for s in res.states)  # convex: one model per fold whatever the seeds
    for fi, f in enumerate(folds):
        rows = np.concatenate([f.train, f.val])
        x = (a[:, 0] - a[rows, 0].mean(0)) / a[rows, 0].std(0)
        ref = LogisticRegression(C=1 / (1e-2 * len(f.train)), tol=1e-10, max_iter=10000).fit(x[f.train], yy[f.train])
        np.testing.assert_allclose(res.oof["probs"][res.oof["fold"] == fi], ref.predict_proba(x[f.test]), atol=2e-3)


def test_narrow_product_has_the_gradient_of_a_plain_matmul():
    """The probe's product with the stored transposed design (emo.fuse.training.batched._narrow_times_design):
    the same value and weight gradient as autograd's ``x @ w.T``; the design gets no gradient."""
    from emo.fuse.training.batched import _narrow_times_design

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 12, generator=g, dtype=torch.float64)
    w = torch.randn(7, 12, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(50, 7, generator=g, dtype=torch.float64)
    (x @ w.T).backward(up)
    ref = w.grad.clone()
    w.grad = None
    d = x.T.contiguous()
    z = _narrow_times_design(w, d).T
    torch.testing.assert_close(z, x @ w.T)
    z.backward(up)
    torch.testing.assert_close(w.grad, ref)
    assert torch.autograd.gradcheck(lambda a: _narrow_times_design(a, d), (w.detach().clone().requires_grad_(True),))


def test_lbfgs_b_minimises_in_place_and_refuses_a_non_finite_objective():
    from emo.fuse.eval.runcheck import NonFiniteError
    from emo.fuse.training.batched import lbfgs_b

    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    iters, evals, converged, gmax = lbfgs_b([w], lambda: ((w - target) ** 2).sum(), 100, 1e-10, 1e-15)
    assert converged and 0 < iters <= evals and gmax <= 1e-10
    torch.testing.assert_close(w.detach(), target)
    v = torch.ones(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(NonFiniteError, match="non-finite objective"):
        lbfgs_b([v], lambda: (v.log() * float("inf")).sum(), 10, 1e-8, 1e-12)


def test_torch_lbfgs_reports_the_gradient_at_the_weights_it_returns():
    from emo.fuse.training.batched import torch_lbfgs

    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)

    def run(max_iter, measure=True):
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        obj = lambda: ((w - target) ** 4).sum() + ((w - target) ** 2).sum()  # noqa: E731
        return w, torch_lbfgs([w], obj, max_iter, 1e-9, 1e-15, measure)

    w, (iters, evals, converged, gmax) = run(200)
    grad = 4 * (w.detach() - target) ** 3 + 2 * (w.detach() - target)
    assert gmax == pytest.approx(float(grad.abs().max()), abs=1e-15) and converged == (gmax <= 1e-9) and gmax < 1e-6
    w, (_, _, converged, gmax) = run(1)  # stopped early: the number is the returned weights' gradient
    grad = 4 * (w.detach() - target) ** 3 + 2 * (w.detach() - target)
    assert not converged and gmax == pytest.approx(float(grad.abs().max()), rel=1e-12)
    _, (_, evals_unmeasured, converged, gmax) = run(200, measure=False)
    assert (converged, gmax) == (False, None) and evals_unmeasured == evals - 1


@pytest.mark.parametrize("weights,smoothing", [(False, 0.0), (True, 0.0), (False, 0.1), (True, 0.1)])
def test_linear_problem_cross_entropy_is_masked_task_losses(weights, smoothing):
    """The probe's batched cross-entropy (no vmap) equals masked_task_losses per model, with and
    without class weights and label smoothing, weighted and unweighted (inner validation)."""
    from emo.fuse.training.batched import _LinearProblem

    rng = np.random.default_rng(3)
    n, c, K = 60, 4, 3
    yy = rng.integers(0, c, n)
    x = torch.as_tensor(rng.normal(size=(n, 1, 5)).astype(np.float32))
    rows = [np.sort(rng.choice(n, 40, replace=False)) for _ in range(K)]
    cws = [rng.uniform(0.5, 2.0, c).astype(np.float32) if weights else None for _ in range(K)]
    jobs = [Job(r, r, 0, None, None, w) for r, w in zip(rows, cws)]
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": 5}]
    cfg = TrainConfig(head="linear", label_smoothing=smoothing, threads=1).resolve(100)
    prob = _LinearProblem([x], {"discrete": yy}, jobs, cfg, cfg.model_args(inputs, c), torch.float64)
    z = torch.as_tensor(rng.normal(size=(K, n, c)))
    mask = prob.mask(rows)
    for weighted in (True, False):
        got = prob.losses(z, mask, weighted)
        for k in range(K):
            cw = torch.as_tensor(cws[k], dtype=torch.float64) if (weighted and weights) else None
            ref = masked_task_losses({"logits": z[k]}, {"discrete": torch.as_tensor(yy)}, mask[k], cw,
                                     smoothing if weighted else 0.0)["discrete"]
            torch.testing.assert_close(got[k], ref)


@pytest.mark.parametrize("task", ["discrete", "discrete+valence"])
@pytest.mark.parametrize("narrow_columns", [1, 256])
def test_linear_problem_outputs_are_the_models_outputs(task, narrow_columns, monkeypatch):
    """_LinearProblem.outputs (both layouts, jobs out of group order, per-job standardisation
    folded into the weights) equals the FusionModels that models() builds, run on the standardised
    inputs: the stacked tensor form and the modules a run saves are the same function."""
    import emo.fuse.training.batched as batched
    from emo.fuse.training.batched import _LinearProblem

    monkeypatch.setattr(batched, "NARROW_COLUMNS", narrow_columns)
    rng = np.random.default_rng(4)
    n, c, d = 50, 3, 4
    y = {"discrete": rng.integers(0, c, n)}
    if task != "discrete":
        y["valence"] = rng.normal(size=n).astype(np.float32)
    x = rng.normal(size=(n, 3, d)).astype(np.float32)
    rows = np.arange(n)
    jobs = []
    for k, layer in enumerate([2, 0, 2, 1, 0]):  # interleaved: groups {2: 0, 2}, {0: 1, 4}, {1: 3}
        mu, sd = rng.normal(size=(1, d)).astype(np.float32), rng.uniform(0.5, 2, (1, d)).astype(np.float32)
        jobs.append(Job(rows, rows, k, cols=[np.array([layer])], norm=[(mu, sd)]))
    inputs = [{"name": "a", "modality": "audio", "layers": ["L"], "dim": d}]
    cfg = TrainConfig(head="linear", task=task, threads=1).resolve(100)
    prob = _LinearProblem([torch.as_tensor(x)], y, jobs, cfg, cfg.model_args(inputs, c), torch.float64)
    W = torch.as_tensor(rng.normal(size=(len(jobs), d, prob.n_out)))
    b = torch.as_tensor(rng.normal(size=(len(jobs), prob.n_out)))
    with torch.no_grad():
        z, zc = prob.outputs(W, b), prob.outputs(W, b, classes_first=True)
    torch.testing.assert_close(zc.transpose(1, 2), z)
    for k, (j, m) in enumerate(zip(jobs, prob.models(W.float(), b.float()))):
        xs = (x[:, j.cols[0]] - j.norm[0][0]) / j.norm[0][1]
        with torch.no_grad():
            out = m([torch.as_tensor(xs)])
        torch.testing.assert_close(out["logits"].double(), z[k, :, :c], rtol=1e-5, atol=1e-5)
        if task != "discrete":
            torch.testing.assert_close(out["valence"].double().reshape(-1), z[k, :, c], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("narrow_columns", [1, 16])
@pytest.mark.parametrize("lbfgs_b_max_params", [0, 20_000])
@pytest.mark.parametrize("interleaved", [False, True])
def test_lbfgs_sweep_cells_share_a_design_per_window(narrow_columns, lbfgs_b_max_params, interleaved, monkeypatch):
    # jobs with different layer columns in one L-BFGS batch: each is its own window's probe, through
    # the plain product (NARROW_COLUMNS 1) and the transposed-design product (3 folds x 3 classes < 16),
    # solved by torch.optim.LBFGS (LBFGS_B_MAX_PARAMS 0) and by scipy's L-BFGS-B; jobs in window order
    # and interleaved (fold-major: the problem gathers them into window order and back)
    from sklearn.linear_model import LogisticRegression

    import emo.fuse.training.batched as batched

    monkeypatch.setattr(batched, "NARROW_COLUMNS", narrow_columns)
    monkeypatch.setattr(batched, "LBFGS_B_MAX_PARAMS", lbfgs_b_max_params)

    rng = np.random.default_rng(2)
    n = 150
    yy = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 3, 5)).astype(np.float32)
    x[:, 2, 0] += 2 * yy
    x[:, 1, 1] += 0.5 * yy
    folds = stratified_kfold(yy, 3, 0)
    inputs = [{"name": "h", "modality": "audio", "layers": ["L"], "dim": 5}]
    cfg = TrainConfig(head="linear", seeds=1, label_smoothing=0.0, weight_decay=1e-2).resolve(100)
    pairs = [(f, layer) for f in folds for layer in range(3)] if interleaved else [(f, layer) for layer in range(3) for f in folds]
    jobs = [Job(f.train, f.val, 0, cols=[np.array([layer])]) for f, layer in pairs]
    fit = fit_linear_lbfgs([torch.as_tensor(x)], {"discrete": yy}, jobs, cfg, cfg.model_args(inputs, 3))
    for j, m in zip(jobs, fit.models):
        layer = int(j.cols[0][0])
        with torch.no_grad():
            p = torch.softmax(m([torch.as_tensor(x[j.val][:, [layer]])])["logits"], -1).numpy()
        ref = LogisticRegression(C=1 / (1e-2 * len(j.train)), tol=1e-8, max_iter=10000).fit(x[j.train, layer], yy[j.train])
        np.testing.assert_allclose(p, ref.predict_proba(x[j.val, layer]), atol=2e-3)


def test_batched_run_resumes_finished_folds_and_trains_only_the_rest(tmp_path, monkeypatch):
    import emo.fuse.eval.metrics as metrics
    from emo.fuse.training.resume import partial_dir
    from emo.fuse.training.train import train
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    # the AdamW recipe: each model's result is independent of the others in the batch (the lbfgs recipe's
    # joint line search is not: docs/training_recipes.md)
    cfg = TrainConfig(head="mlp", hidden=16, epochs=6, patience=6, seeds=2, lr=0.01, batch_size=16, dropout=0.0, recipe="adamw")
    ref, _ = train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "ref")
    real, calls = metrics.evaluate, {"n": 0}

    def dying(*a, **k):  # killed while the third fold is being scored
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(metrics, "evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "run")
    assert len(list(partial_dir(tmp_path / "run").glob("*/fold-*.json"))) == 2
    monkeypatch.setattr(metrics, "evaluate", real)
    lines: list[str] = []
    res, _ = train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "run", progress=lines.append)
    assert sum("resumed" in ln for ln in lines) == 2
    assert np.array_equal(res.oof["index"], ref.oof["index"])
    np.testing.assert_allclose(res.oof["probs"], ref.oof["probs"], atol=1e-5)
