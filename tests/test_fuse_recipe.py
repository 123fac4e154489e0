"""The deterministic full-batch recipe (``--recipe lbfgs``, emo.fuse.training.batched.fit_lbfgs_path), its
automatic choice, and the import set of the training and weight-free extraction commands."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from emo.fuse.training.batched import L2_PATH, L2_PATH_STRONGER, L2_PATH_WEAKER, choose_recipe, train_cv_batched
from emo.fuse.config import TrainConfig
from emo.fuse.training.inputs import FeatureInput
from emo.fuse.eval.protocols import leave_one_speaker_out


def _data(n: int = 150, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    a = rng.normal(size=(n, 1, 12)).astype(np.float32)
    a[:, 0, :c] += 2.0 * np.eye(c)[y]
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": 12}]
    speakers = [f"s{i % 5}" for i in range(n)]
    return {"a": a}, inputs, {"discrete": y.astype(np.int64)}, speakers


def test_linear_recipe_equals_sklearn_logistic_regression():
    """--head linear at a fixed --l2 is scikit-learn's multinomial LogisticRegression at
    C = 1 / (l2 * n): its objective C * sum(loss) + 0.5 ||W||² (intercept unpenalised) is n*C times ours."""
    from sklearn.linear_model import LogisticRegression

    blocks, inputs, y, speakers = _data()
    l2 = 0.02
    cfg = TrainConfig(head="linear", recipe="lbfgs", l2=l2, label_smoothing=0.0, dropout=0.0, seeds=1, normalize="none", threads=1)
    folds = leave_one_speaker_out(speakers, 0)
    res = train_cv_batched(blocks, inputs, y, folds, cfg, 3, speakers, optimizer="path")
    x = blocks["a"][:, 0].astype(np.float64)
    for k, fold in enumerate(folds):
        rows = np.sort(np.concatenate([fold.train, fold.val]))  # the chosen l2 is refitted on train + inner validation
        sk = LogisticRegression(C=1.0 / (l2 * len(rows)), tol=1e-12, max_iter=100000).fit(x[rows], y["discrete"][rows])
        got = res.oof["probs"][res.oof["fold"] == k]
        want = sk.predict_proba(x[res.oof["index"][res.oof["fold"] == k]])
        assert np.abs(got - want).max() < 1e-4, (k, np.abs(got - want).max())
    assert all(i["l2"] == l2 and i["optimizer"] == "lbfgs" for d in res.diagnostics for i in d["fits"])


@pytest.mark.parametrize("head", ["linear", "mlp", "afg", "attention"])
def test_recipe_is_deterministic_and_chooses_l2_per_fold_on_inner_validation(head):
    blocks, inputs, y, speakers = _data()
    cfg = TrainConfig(head=head, recipe="lbfgs", hidden=8, dropout=0.0, seeds=1, threads=1)
    folds = leave_one_speaker_out(speakers, 0)
    a = train_cv_batched(blocks, inputs, y, folds, cfg, 3, speakers, optimizer="path")
    b = train_cv_batched(blocks, inputs, y, folds, cfg, 3, speakers, optimizer="path")
    np.testing.assert_array_equal(a.oof["probs"], b.oof["probs"])  # full batch, no dropout: bitwise the same
    assert a.pooled["uar"] > 0.75  # learns the informative dimensions (chance: 0.33)
    for d in a.diagnostics:
        (info,) = d["fits"]  # one model per fold: no seed averaging
        path = info["path"]
        points = [p[0] for p in path]
        assert points == sorted(points) and len(path) >= 1
        on_path = [a for a in points if a in L2_PATH]
        assert on_path == list(L2_PATH[:len(on_path)])  # weakest first, stopped by patience
        assert set(points) <= set(L2_PATH) | set(L2_PATH_WEAKER) | set(L2_PATH_STRONGER)
        assert info["l2"] == min(path, key=lambda p: p[1])[0]  # the lowest inner-validation loss
        assert info["refit"] is True and info["grad_max"] >= 0 and info["max_iter"] > 0


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_l2_path_goes_on_past_an_end_while_the_inner_validation_loss_falls(head, monkeypatch):
    """Where a fold's best point is an end of L2_PATH, the path extends past it: pure-noise labels want the
    strongest penalty, an easy many-row problem the weakest. The folds that did not extend keep the choice
    they make without the extension."""
    import emo.fuse.training.batched as batched

    rng = np.random.default_rng(1)
    n, c = 200, 3
    speakers = [f"s{i % 5}" for i in range(n)]
    folds = leave_one_speaker_out(speakers, 0)
    cfg = TrainConfig(head=head, recipe="lbfgs", hidden=8, dropout=0.0, seeds=1, threads=1, normalize="none")
    inputs = [{"name": "a", "modality": "audio", "layers": ["0"], "dim": 6}]
    noise = {"a": rng.normal(size=(n, 1, 6)).astype(np.float32)}
    y_noise = {"discrete": rng.integers(0, c, n).astype(np.int64)}
    res = train_cv_batched(noise, inputs, y_noise, folds, cfg, c, speakers, optimizer="path")
    stronger = [d["fits"][0] for d in res.diagnostics if d["fits"][0]["l2"] > L2_PATH[-1]]
    assert stronger, [d["fits"][0]["l2"] for d in res.diagnostics]
    for info in stronger:
        losses = dict(map(tuple, info["path"]))
        assert info["l2"] in L2_PATH_STRONGER and losses[info["l2"]] < losses[L2_PATH[-1]]
    # a separable problem whose classes differ along a direction of small variance: the weakest penalty
    y = rng.integers(0, c, n)
    easy = rng.normal(size=(n, 1, 6)).astype(np.float32)
    easy[:, 0, :c] = 0.05 * rng.normal(size=(n, c)) + 0.5 * np.eye(c)[y]
    res = train_cv_batched({"a": easy}, inputs, {"discrete": y.astype(np.int64)}, folds, cfg, c, speakers, optimizer="path")
    chosen = [d["fits"][0]["l2"] for d in res.diagnostics]
    assert any(a in L2_PATH_WEAKER for a in chosen), chosen
    monkeypatch.setattr(batched, "L2_PATH_WEAKER", ())
    monkeypatch.setattr(batched, "L2_PATH_STRONGER", ())
    plain = train_cv_batched({"a": easy}, inputs, {"discrete": y.astype(np.int64)}, folds, cfg, c, speakers, optimizer="path")
    for d, p in zip(res.diagnostics, plain.diagnostics):
        a, b = d["fits"][0]["l2"], p["fits"][0]["l2"]
        assert a == b if b != L2_PATH[0] else a <= b  # only the folds at the weak end moved, and only weaker


def test_choose_recipe_auto_and_reasons(monkeypatch):
    import emo.fuse.training.batched as batched

    inp = [FeatureInput("a", "audio", ["0"], 12)]
    auto = choose_recipe(TrainConfig(), inp, 10, 500)
    assert auto["recipe"] == "lbfgs" and auto["requested"] == "auto"
    frames = choose_recipe(TrainConfig(frames=True), [FeatureInput("a", "audio", ["0"], 12, frames=True)], 10, 500)
    assert frames["recipe"] == "adamw" and "frame-level" in frames["reason"]
    with pytest.raises(ValueError, match="--recipe lbfgs"):
        choose_recipe(TrainConfig(recipe="lbfgs", frames=True), [FeatureInput("a", "audio", ["0"], 12, frames=True)], 10, 500)
    assert choose_recipe(TrainConfig(recipe="adamw"), inp, 10, 500)["recipe"] == "adamw"
    assert choose_recipe(TrainConfig(head="univa"), inp, 10, 500)["recipe"] == "adamw"
    large = choose_recipe(TrainConfig(), inp, 5, 4500)  # MER-size folds: minibatch epochs
    assert large["recipe"] == "adamw" and "4500 training rows" in large["reason"]
    assert choose_recipe(TrainConfig(recipe="lbfgs"), inp, 5, 4500)["recipe"] == "lbfgs"  # asked for: trained so
    monkeypatch.setattr(batched, "RECIPE_MAX_BYTES", 1000)
    big = choose_recipe(TrainConfig(), inp, 10, 500)
    assert big["recipe"] == "adamw" and "exceed" in big["reason"]
    with pytest.raises(ValueError, match="--recipe"):
        TrainConfig(recipe="sgd").validate()


def test_train_records_recipe_and_timing(tmp_path):
    from test_fuse_run import make_dataset

    from emo.fuse.training.train import train

    feats = make_dataset(tmp_path)
    lines = []
    res, config = train(feats, "synth", ["egemaps"], TrainConfig(head="afg", hidden=8), protocol="speaker",
                        out=tmp_path / "run", progress=lines.append)
    assert config["recipe"]["recipe"] == "lbfgs" and config["training"]["recipe"] == "lbfgs"
    assert config["training"]["dropout"] == 0.0 and config["training"]["seeds"] == 1
    assert any(line.startswith("recipe: lbfgs (") for line in lines)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["recipe"] == config["recipe"]
    t = m["timing"]
    assert 0 < t["seconds_to_first_fold"] <= t["total_seconds"] and t["train_seconds"] <= t["total_seconds"]
    # measured while training: torch and every BLAS / OpenMP pool at the run's thread count (auto: 1 for small data)
    assert config["training"]["threads"] == 1 and t["threads"]["torch"] == 1
    assert t["threads"]["pools"] and all(p["threads"] == 1 for p in t["threads"]["pools"])
    # each fold's fit: the chosen L2 (the lowest inner-validation loss of its path) and how far the solve got
    for fold, diag in zip(m["folds"], res.diagnostics):
        (fit,) = fold["fit"]
        assert fit["l2"] == min(fit["path"], key=lambda p: p[1])[0] == diag["fits"][0]["l2"]
        assert fit["converged"] == (fit["grad_max"] <= fit["tol"]) and fit["max_iter"] == 150
        assert 0 < fit["final_iterations"] <= fit["max_iter"] and fit["convex"] is False
    # the minibatch recipe when asked, recorded as such (seeds averaged, dropout kept)
    _, c2 = train(feats, "synth", ["egemaps"], TrainConfig(head="afg", hidden=8, recipe="adamw", epochs=2, seeds=2),
                  protocol="speaker", out=tmp_path / "run2")
    assert c2["recipe"] == {"recipe": "adamw", "reason": "--recipe adamw", "requested": "adamw"}
    assert c2["training"]["dropout"] == 0.5 and c2["training"]["seeds"] == 2



def test_settings_the_lbfgs_recipe_does_not_use_are_said_and_recorded(tmp_path):
    """--lr / --dropout on a run the auto recipe trains with L-BFGS: a warning and config.json recipe.ignored
    (they changed nothing: the run equals the one without them), never a silent no-op."""
    from test_fuse_run import make_dataset

    from emo.fuse.training.train import lbfgs_ignored, train

    assert lbfgs_ignored(TrainConfig()) == [] and lbfgs_ignored(TrainConfig(label_smoothing=0.0, hidden=8)) == []
    # a config read back from a run (resolved for its size, dropout off) is not a user's choice
    assert lbfgs_ignored(TrainConfig(dropout=0.0).resolve(480), 480) == []
    assert lbfgs_ignored(TrainConfig(batch_size=64).resolve(480), 480) == ["--batch-size 64"]
    feats = make_dataset(tmp_path)
    lines = []
    res, config = train(feats, "synth", ["egemaps"], TrainConfig(head="afg", hidden=8, lr=1e-4, dropout=0.2),
                        protocol="speaker", out=tmp_path / "run", progress=lines.append)
    assert config["recipe"]["recipe"] == "lbfgs"
    assert config["recipe"]["ignored"] == ["--lr 0.0001", "--dropout 0.2"]
    assert any(ln.startswith("warning: recipe lbfgs does not use --lr 0.0001, --dropout 0.2") for ln in lines), lines
    plain, c0 = train(feats, "synth", ["egemaps"], TrainConfig(head="afg", hidden=8), protocol="speaker", out=tmp_path / "run0")
    assert "ignored" not in c0["recipe"]
    np.testing.assert_array_equal(res.oof["probs"], plain.oof["probs"])

HEAVY = ("transformers", "open_clip", "cv2", "dask")


def test_fuse_train_and_weight_free_extraction_import_only_what_they_need(tmp_path, shared):
    """`emo fuse train` imports no transformers / open_clip / cv2 / dask; `emo extract` with
    eGeMAPS imports no torch (checked in a fresh interpreter through sys.modules)."""
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    code = (
        "import sys, json\nfrom typer.testing import CliRunner\nfrom emo.cli import app\n"
        "r = CliRunner().invoke(app, sys.argv[1:])\n"
        "print(json.dumps({'code': r.exit_code, 'out': r.output[-2000:], 'mods': sorted(m.split('.')[0] for m in sys.modules)}))\n")

    def run(*args):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)  # noqa: S603
        assert p.returncode == 0, p.stderr[-2000:]
        d = json.loads(p.stdout.strip().splitlines()[-1])
        assert d["code"] == 0, d["out"]
        return set(d["mods"])

    mods = run("fuse", "train", "--dataset", "synth", "--features", "egemaps", "--features-dir", str(feats),
               "--folds", "speaker", "--hidden", "8", "--out", str(tmp_path / "r"))
    assert "torch" in mods and not (mods & set(HEAVY)), sorted(mods & set(HEAVY))
    root = tmp_path / "emodb"
    (root / "wav").mkdir(parents=True)
    lines = (shared / "emodb" / "labels.csv").read_text(encoding="utf-8").splitlines()
    keep = [ln for ln in lines[1:] if ln.startswith("wav/03a01")][:2]
    (root / "labels.csv").write_text("\n".join([lines[0], *keep]) + "\n", encoding="utf-8")
    for ln in keep:
        rel = ln.split(",")[0]
        (root / rel).symlink_to(shared / "emodb" / rel)
    mods = run("extract", "--dataset", "emodb", "--root", str(root), "--encoder", "egemaps", "--out", str(tmp_path / "f"), "--no-progress")
    assert "torch" not in mods and not (mods & set(HEAVY))


def test_fit_warnings_name_a_fold_whose_loss_still_fell_at_the_end_of_the_path():
    from emo.fuse.training.batched import fit_warnings

    inside = {"name": "speaker=a", "fit": [{"l2": 0.01, "path": [[0.001, 0.9], [0.01, 0.5], [0.1, 0.7]]}]}
    weak = {"name": "speaker=b", "fit": [{"l2": L2_PATH_WEAKER[-1], "path": [[L2_PATH_WEAKER[-1], 0.4], [0.001, 0.5]]}]}
    strong = {"name": "speaker=c", "fit": [{"l2": L2_PATH_STRONGER[-1], "path": [[0.1, 0.9], [L2_PATH_STRONGER[-1], 0.8]]}]}
    fixed = {"name": "speaker=d", "fit": [{"l2": L2_PATH_WEAKER[-1], "path": [[L2_PATH_WEAKER[-1], 0.4]]}]}  # --l2 given
    assert fit_warnings([inside, fixed, {"name": "adamw"}]) == []
    w = fit_warnings([inside, weak, strong])
    assert len(w) == 2 and w[0].startswith("fold speaker=b:") and "weakest" in w[0] and "strongest" in w[1]
    # a convex head stopped by its iteration limit is said once; a non-convex one is only recorded
    state = {"converged": False, "grad_max": 3e-5, "tol": 1e-7, "final_iterations": 500, "max_iter": 500}
    linear = [{"name": n, "fit": [{"l2": 0.01, "path": [[0.01, 0.5]], "convex": True, **state}]} for n in "ab"]
    (w,) = fit_warnings(linear)
    assert "stopped at its iteration limit" in w and "3.0e-05" in w
    early = [{"name": "a", "fit": [{"l2": 0.01, "path": [[0.01, 0.5]], "convex": True, **state, "final_iterations": 37}]}]
    assert "stopped after 37 of at most 500 iterations" in fit_warnings(early)[0]  # not blamed on the limit
    assert fit_warnings([{"name": "a", "fit": [{"l2": 0.01, "path": [[0.01, 0.5]], "convex": False, **state}]}]) == []
    assert fit_warnings([{"name": "a", "fit": [{"l2": 0.01, "path": [[0.01, 0.5]], "convex": True, **state, "converged": True}]}]) == []


def test_pinned_threads_reach_numpys_and_scipys_blas_pools_and_restore_them():
    """torch.set_num_threads alone leaves numpy's and scipy's OpenBLAS at one thread per core: training and
    search workers pin both (emo.fuse.training.threads), and give the previous settings back."""
    import scipy.optimize  # noqa: F401  (its OpenBLAS loads with it; pinning loads it too)
    import torch
    from threadpoolctl import threadpool_info

    from emo.fuse.training.threads import pinned_threads, thread_record

    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    t_before = torch.get_num_threads()
    with pinned_threads(1):
        rec = thread_record()
        assert rec["torch"] == 1 and rec["pools"] and all(p["threads"] == 1 for p in rec["pools"])
        assert {p["api"] for p in rec["pools"]} >= {"openblas"}
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before and torch.get_num_threads() == t_before
    # blocks overlapping in two threads (a dask worker's units): the first out must not unpin the other,
    # and the last out restores what the process had
    import threading

    inside, release, seen = threading.Barrier(2), threading.Event(), []

    def unit(first: bool):
        with pinned_threads(1):
            inside.wait()
            if first:
                return  # leaves while the other unit still runs
            release.wait(5)
            seen.append(torch.get_num_threads())

    threads = [threading.Thread(target=unit, args=(k == 0,)) for k in range(2)]
    for t in threads:
        t.start()
    threads[0].join()
    release.set()
    threads[1].join()
    assert seen == [1]  # (OpenBLAS's pools, set from a thread other than the main one, do not always follow)
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before and torch.get_num_threads() == t_before


def test_pinned_threads_sets_nothing_again_where_this_thread_is_already_pinned(monkeypatch):
    """threadpool_limits walks every loaded library (3.4-3.8 ms): a block inside a block at the same count, or
    in a process pin_process pinned, must not call it; a different count, or a block after the outermost one
    ended, must."""
    import threadpoolctl
    import torch

    from emo.fuse.training import threads

    calls = []
    real = threadpoolctl.threadpool_limits
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda **kw: calls.append(kw["limits"]) or real(**kw))
    t_before = torch.get_num_threads()
    with threads.pinned_threads(1):
        with threads.pinned_threads(1):
            with threads.pinned_threads(1):
                pass
        assert calls == [1]
        with threads.pinned_threads(2):
            assert torch.get_num_threads() == 2
        assert calls == [1, 2]
    assert torch.get_num_threads() == t_before
    with threads.pinned_threads(1):  # the outermost block ended: set again
        pass
    assert calls == [1, 2, 1]
    # another thread of the process asked for 2 meanwhile (a dask worker's threads): the settings are
    # process-wide, so this thread's next block at 1 must set 1 again
    import threading

    calls.clear()
    with threads.pinned_threads(1):
        def in_other_thread():
            with threads.pinned_threads(2):  # its count holds after it ends: the outer block is still open
                pass

        other = threading.Thread(target=in_other_thread)
        other.start()
        other.join()
        with threads.pinned_threads(1):
            assert torch.get_num_threads() == 1
    assert calls == [1, 2, 1]
    assert torch.get_num_threads() == t_before
