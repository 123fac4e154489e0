"""The benchmark's paired UAR intervals (bench/bench_fuse.py): the numbers the issue-24 targets are
read against. The benchmark itself runs in ``make bench``, not here."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def _rows(rng, n_spk=8, per=20, classes=("a", "b", "c")):
    names = [f"s{s}_{i}" for s in range(n_spk) for i in range(per)]
    group = [f"speaker={s}" for s in range(n_spk) for _ in range(per)]
    true = [classes[i] for i in rng.integers(0, len(classes), len(names))]
    return names, group, true, list(classes)


def test_paired_difference_is_zero_for_the_same_predictions_in_another_order(bench):
    rng = np.random.default_rng(0)
    names, group, true, classes = _rows(rng)
    pred = [classes[i] for i in rng.integers(0, 3, len(names))]
    a = {"names": names, "true": true, "pred": pred, "group": group}
    perm = rng.permutation(len(names))
    b = {"names": [names[i] for i in perm], "pred": [pred[i] for i in perm]}
    r = bench.paired_uar_difference(a, b, n_boot=200)
    assert (r["difference"], r["low"], r["high"]) == (0.0, 0.0, 0.0)
    assert r["n_groups"] == 8 and r["unit"] == "speaker"


def test_paired_difference_matches_the_pooled_uars_and_brackets_them(bench):
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(1)
    names, group, true, classes = _rows(rng)
    good = [t if rng.random() < 0.9 else classes[0] for t in true]
    bad = [classes[i] for i in rng.integers(0, 3, len(names))]
    r = bench.paired_uar_difference({"names": names, "true": true, "pred": good, "group": group},
                                    {"names": names, "pred": bad}, n_boot=300)
    want = recall_score(true, good, average="macro") - recall_score(true, bad, average="macro")
    assert r["difference"] == pytest.approx(want, abs=1e-4)
    assert 0 < r["low"] <= r["difference"] <= r["high"]
    # reversed roles: the interval is mirrored (same replicates, negated)
    s = bench.paired_uar_difference({"names": names, "true": true, "pred": bad, "group": group},
                                    {"names": names, "pred": good}, n_boot=300)
    assert (s["difference"], s["low"], s["high"]) == pytest.approx((-r["difference"], -r["high"], -r["low"]), abs=1e-4)


def test_paired_difference_refuses_different_rows_names_or_labels(bench):
    rng = np.random.default_rng(2)
    names, group, true, classes = _rows(rng)
    a = {"names": names, "true": true, "pred": true, "group": group}
    with pytest.raises(ValueError, match="different rows"):
        bench.paired_uar_difference(a, {"names": names[1:], "pred": true[1:]})
    with pytest.raises(ValueError, match="duplicate sample names"):
        bench.paired_uar_difference(a, {"names": names[:-1] + names[:1], "pred": true})
    flipped = ["b" if t == "a" else t for t in true]
    with pytest.raises(ValueError, match="different true labels"):
        bench.paired_uar_difference(a, {"names": names, "true": flipped, "pred": true})


def test_a_predicted_class_outside_the_true_labels_is_a_wrong_prediction(bench):
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(3)
    names, group, true, classes = _rows(rng)
    pred_b = ["z" if i % 3 == 0 else t for i, t in enumerate(true)]
    r = bench.paired_uar_difference({"names": names, "true": true, "pred": true, "group": group},
                                    {"names": names, "pred": pred_b}, n_boot=100)
    want = 1.0 - recall_score(true, pred_b, labels=classes, average="macro")
    assert r["difference"] == pytest.approx(want, abs=1e-4) and r["difference"] > 0


def test_run_predictions_reads_the_out_of_fold_rows(bench, tmp_path):
    (tmp_path / "predictions.csv").write_text("name,fold,true,pred,prob_a,prob_b\n"
                                              "x1,speaker=03,a,b,0.4,0.6\nx2,speaker=08,b,b,0.1,0.9\nx3,test,a,a,0.9,0.1\n")
    got = bench.run_predictions(tmp_path)
    assert got == {"names": ["x1", "x2"], "true": ["a", "b"], "pred": ["b", "b"], "group": ["speaker=03", "speaker=08"]}
