"""The benchmark's paired UAR intervals (bench/bench_fuse.py): a scikit-learn peer's predictions as
evaluation rows, compared with an emo run by ``emo fuse compare``'s computation. The benchmark
itself runs in ``make bench``, not here."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from emo.fuse.eval.compare import EvalRows
from emo.fuse.eval.stats import StatsError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fuse_under_test", ROOT / "bench" / "bench_fuse.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    path = list(sys.path)
    spec.loader.exec_module(mod)  # puts proofs/ on sys.path (the benchmark's provenance helper)
    yield mod
    sys.modules.pop(spec.name, None)
    sys.path[:] = path


def _run(rng, n_spk=8, per=20):
    """An emo run's evaluation rows (leave-one-speaker-out folds) and the same rows as a peer dict."""
    names = [f"s{s}_{i}" for s in range(n_spk) for i in range(per)]
    spk = [f"{s:02d}" for s in range(n_spk) for _ in range(per)]
    y = rng.integers(0, 3, len(names))
    pred = np.where(rng.random(len(names)) < 0.8, y, rng.integers(0, 3, len(names)))
    run = EvalRows(Path("run"), "run", "discrete", CLASSES, names, np.asarray([f"speaker={s}" for s in spk], dtype=object),
                   y, np.eye(3)[pred], None, None, {})
    peer = {"names": names, "true": [CLASSES[i] for i in y], "pred": [CLASSES[i] for i in pred], "group": spk}
    return run, peer


def _shuffled(peer, rng):
    perm = rng.permutation(len(peer["names"]))
    return {k: [v[i] for i in perm] for k, v in peer.items()}


def test_the_same_predictions_in_another_order_differ_by_zero(bench):
    rng = np.random.default_rng(0)
    run, peer = _run(rng)
    r = bench.uar_difference(run, bench.peer_rows(run, _shuffled(peer, rng), "peer"))
    assert (r["difference"], r["low"], r["high"]) == (0.0, 0.0, 0.0)
    assert r["n_groups"] == 8 and r["unit"] == "speaker (held-out fold)"


def test_the_difference_is_the_pooled_uars_and_its_interval_brackets_it(bench):
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(1)
    run, peer = _run(rng)
    bad = [CLASSES[i] for i in rng.integers(0, 3, len(peer["names"]))]
    b = bench.peer_rows(run, _shuffled(dict(peer, pred=bad), rng), "peer")
    r = bench.uar_difference(run, b)
    true = peer["true"]
    want = recall_score(true, [CLASSES[i] for i in run.probs.argmax(1)], average="macro") - recall_score(true, bad, average="macro")
    assert r["difference"] == pytest.approx(want, abs=1e-4)
    assert 0 < r["low"] <= r["difference"] <= r["high"]


def test_rows_labels_folds_and_classes_that_do_not_match_are_refused(bench):
    rng = np.random.default_rng(2)
    run, peer = _run(rng)
    with pytest.raises(ValueError, match="'z' is not one of the run's classes"):
        bench.peer_rows(run, dict(peer, pred=["z"] + peer["pred"][1:]), "peer")
    short = {k: v[1:] for k, v in peer.items()}
    with pytest.raises(StatsError, match="evaluation rows differ"):
        bench.uar_difference(run, bench.peer_rows(run, short, "peer"))
    flipped = ["b" if t == "a" else t for t in peer["true"]]
    with pytest.raises(StatsError, match="labels differ"):
        bench.uar_difference(run, bench.peer_rows(run, dict(peer, true=flipped), "peer"))
    merged = ["00" if g == "01" else g for g in peer["group"]]  # a peer that held out speakers 00 and 01 together
    with pytest.raises(StatsError, match="folds differ"):
        bench.uar_difference(run, bench.peer_rows(run, dict(peer, group=merged), "peer"))
