"""emo fuse search (emo.fuse.eval.search): space, nesting (no evaluation row reaches a choice), resume,
processes and dask giving the same numbers, the run directory, the openSMILE stores, the CLI."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.eval import search as S

CLASSES = ["neutral", "angry", "happy"]


def _store(root: Path, encoder: str, x: np.ndarray, names: list[str]) -> None:
    layers = [str(i) for i in range(x.shape[1])]
    prov = {"encoder": encoder, "source": "synthetic", "weights_hash": "0" * 16, "pooling": "mean", "modality": "audio"}
    w = StoreWriter(root / "toy" / f"{encoder}.h5", prov, layers)
    for i, name in enumerate(names):
        w.add(name, Encoded(layers={k: x[i, j] for j, k in enumerate(layers)}))
    w.finalize()
    w.close()


def make_toy(root: Path, n: int = 90, seed: int = 0, splits: bool = False) -> np.ndarray:
    """Dataset 'toy', 6 speakers: store ``good`` (3 layers, layer 1 informative), store ``noise``
    (1 layer of pure noise) and ``wide`` (1 layer, 120-d > rows: exercises the row-space reduction)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = rng.normal(size=(3, 5)) * 1.2
    good = rng.normal(size=(n, 3, 5)).astype(np.float32)
    good[:, 1] += centers[y].astype(np.float32)
    noise = rng.normal(size=(n, 1, 4)).astype(np.float32)
    wide = rng.normal(size=(n, 1, 120)).astype(np.float32)
    wide[:, 0, :5] += centers[y].astype(np.float32) * 0.7
    names = [f"u{i:03d}" for i in range(n)]
    part = ["train", "train", "train", "dev", "test"]
    samples = [Sample(name=nm, media=None, discrete=CLASSES[c], speaker=f"s{(i // 3) % 6}",
                      split=part[i % 5] if splits else None) for i, (nm, c) in enumerate(zip(names, y))]
    write_manifest(root / "toy", types.SimpleNamespace(name="toy", root=root, classes=CLASSES), samples)
    _store(root, "good", good, names)
    _store(root, "noise", noise, names)
    _store(root, "wide", wide, names)
    return y


SPACE = {"stores": [{"name": "good", "windows": [1]}, "noise"], "weight_decay": [0.1, 1.0], "class_weights": [False]}
#: what the searches below run: 5 candidates (good:0, 1, 2, 0-2 and noise), one weight decay
RUN = {**SPACE, "weight_decay": [0.1]}


def test_space_expansion_and_errors(tmp_path):
    assert S.layer_choices(["0", "1", "2", "3"], (1, 3)) == ["0", "1", "2", "3", "0-2", "1-3", "0-3"]
    assert S.layer_choices(["functionals"]) == ["functionals"]
    sp = S.Space.from_dict(SPACE)
    cands = sp.candidates({"good": ["0", "1", "2"], "noise": ["0"]})
    # good: 0, 1, 2, 0-2 ; noise: 1 -> 5 feature sets x 2 weight decays
    assert len(cands) == 10 and len({c.id for c in cands}) == 10
    assert {c.features for c in cands} >= {("good:1",), ("good:0-2",), ("noise",)}
    pairs = S.Space.from_dict({**SPACE, "combine": [2]}).candidates({"good": ["0", "1", "2"], "noise": ["0"]})
    assert all(len(c.features) == 2 for c in pairs) and len(pairs) == 8
    with pytest.raises(S.SearchError, match="unknown key"):
        S.Space.from_dict({"stores": ["good"], "lr": [1]})
    with pytest.raises(S.SearchError, match="not found"):
        sp.candidates({"good": ["0"]})
    p = tmp_path / "space.yaml"
    p.write_text("stores: [good]\nheads: [svm]\n")
    with pytest.raises(S.SearchError, match=r"space.yaml: head 'svm'"):
        S.Space.read(p)
    assert S.parse_budget("5m") == ("seconds", 300.0) and S.parse_budget("40") == ("candidates", 40.0)
    assert S.parse_budget(None) == ("none", None)
    for bad in ("-3", "fast", "0s"):
        with pytest.raises(S.SearchError):
            S.parse_budget(bad)


def test_row_space_fast_path_equals_general_trainer(tmp_path):
    make_toy(tmp_path)
    fs, data, rows = S.load_search_data(tmp_path, "toy", ["wide", "good"])
    outer = S.make_outer_folds("speaker", fs, data.y["discrete"], rows, 0, 0)
    jobs = [(f.train, f.test) for f in outer[:2]]
    c = S.Candidate(("wide",), "linear", 0.1)
    fast = S.fit_predict(c, data, jobs)
    general, _, _ = S.fit_predict(c, data, jobs, return_result=True)
    for a, b in zip(fast, general):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 5e-3  # the same convex optimum, reached in 120 or 60 coordinates


def test_nested_search_never_lets_evaluation_rows_choose(tmp_path, monkeypatch):
    y = make_toy(tmp_path)
    seen = []
    real = S.fit_predict

    def spy(cand, data, jobs, *a, **k):
        seen.append([(np.asarray(tr), np.asarray(ev)) for tr, ev in jobs])
        return real(cand, data, jobs, *a, **k)

    monkeypatch.setattr(S, "fit_predict", spy)
    r = S.search(tmp_path, "toy", tmp_path / "out", space=S.Space.from_dict(RUN), metric="uar", ensemble=2,
                 halving=2, n_boot=200, write_run=False)
    assert r["nested"]["low"] <= r["nested"]["estimate"] <= r["nested"]["high"]
    assert r["nested"]["n_groups"] == 6 and len(r["per_fold"]) == 6
    # the informative layer wins: in every fold the best inner score is a candidate holding layer 1
    # (weights need not favour it: a noise member with flat posteriors barely moves the argmax)
    label = {row["id"]: row["candidate"] for row in r["leaderboard"]}
    for pf in r["per_fold"]:
        best = max(pf["inner_scores"], key=pf["inner_scores"].get)
        assert label[best].startswith(("good:1 ", "good:0-2 ")), pf
        assert best in pf["chosen"]
    assert sum(r["chosen_counts"].values()) == 6
    assert r["grid_edges"] == {"warnings": []}  # one weight decay, one hidden size: no grid to be at the edge of
    # leaderboard scores are rounded to 4 decimals
    assert r["optimistic_same_data"]["estimate"] == pytest.approx(max(row["outer_score_same_data"] for row in r["leaderboard"]), abs=1e-4)
    assert r["gap_optimistic_minus_nested"] == pytest.approx(r["optimistic_same_data"]["estimate"] - r["nested"]["estimate"], abs=1e-4)
    # halving: rung 0 on 3 of the 5 inner folds, only survivors go on
    assert r["halving"]["rung0_inner_folds"] == 3 and all(pf["survivors"] < pf["candidates"] for pf in r["per_fold"])
    # nesting: every inner job of outer fold k trains and evaluates on rows outside k's evaluation speaker
    spk = np.asarray([f"s{(i // 3) % 6}" for i in range(len(y))])
    inner_jobs = [j for call in seen for j in call if len(call) < 6]
    assert inner_jobs
    for tr, ev in inner_jobs:
        assert len(set(spk[tr]) & set(spk[ev])) == 0  # speaker-independent inner folds
        assert len(set(spk[tr]) | set(spk[ev])) == 5  # one speaker (the outer evaluation one) absent
    for f in ("search.json", "leaderboard.csv", "report.md", "estimates.png", "inner_vs_outer.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    rep = (tmp_path / "out" / "report.md").read_text()
    assert "nested" in rep and "optimistic (same data)" in rep and "top-10-of-50" in rep
    # nested_predictions.csv: every row once, with its own speaker's outer fold; its UAR is the nested estimate
    import csv

    from emo.fuse.eval.metrics import classification_metrics

    with open(tmp_path / "out" / "nested_predictions.csv", newline="") as fh:
        npred = list(csv.DictReader(fh))
    assert sorted(int(x["name"][1:]) for x in npred) == list(range(len(y)))
    assert all(x["fold"] == f"speaker={x['speaker']}" and x["label"] == CLASSES[y[int(x["name"][1:])]] for x in npred)
    uar = classification_metrics(np.array([CLASSES.index(x["label"]) for x in npred]),
                                 np.array([CLASSES.index(x["pred"]) for x in npred]), 3)["uar"]
    assert uar == pytest.approx(r["nested"]["estimate"], abs=1e-9)
    # emo fuse compare takes search directories (their nested predictions), paired by speaker
    from emo.fuse.eval.compare import compare, read_eval_rows

    r3 = S.search(tmp_path, "toy", tmp_path / "out_noise", space=S.Space.from_dict({**RUN, "stores": ["noise"]}), metric="uar",
                  ensemble=1, halving=0, n_boot=100, write_run=False)
    c = compare(tmp_path / "out", tmp_path / "out_noise", "uar", n_boot=200)
    assert c["a_value"] == pytest.approx(r["nested"]["estimate"], abs=1e-12) and c["b_value"] == pytest.approx(r3["nested"]["estimate"], abs=1e-12)
    assert c["group"].startswith("speaker") and c["n_groups"] == 6 and c["difference"] > 0.2  # the informative store wins
    assert read_eval_rows(tmp_path / "out").kind == "search"
    (tmp_path / "out_noise" / "nested_predictions.csv").unlink()
    from emo.fuse.eval.stats import StatsError

    with pytest.raises(StatsError, match="nested_predictions.csv not found"):
        compare(tmp_path / "out", tmp_path / "out_noise")


def test_grid_edges_count_outer_folds_that_chose_an_end_of_a_grid():
    space = S.Space.from_dict({**SPACE, "heads": ["linear", "mlp"], "hidden": [8, 32]})
    cands = space.candidates({"good": ["0", "1", "2"], "noise": ["0"]})
    pick = {(c.head, c.weight_decay, c.hidden): c.id for c in cands if c.features == ("good:1",)}
    lin1, mlp01_8, mlp01_32, mlp1_8 = pick[("linear", 1.0, 256)], pick[("mlp", 0.1, 8)], pick[("mlp", 0.1, 32)], pick[("mlp", 1.0, 8)]
    per_fold = [{"chosen": [lin1], "weights": [1.0]},
                {"chosen": [lin1, mlp01_8], "weights": [0.3, 0.7]},  # the heaviest counts
                {"chosen": [mlp01_32, lin1], "weights": [0.6, 0.4]},
                {"chosen": [mlp01_8, mlp1_8], "weights": [0.5, 0.5]}]  # weight decay tied; hidden 8 either way
    e = S.grid_edges(space, per_fold, cands)
    assert e["weight_decay"] == {"grid": [0.1, 1.0], "at_lowest": 2, "at_highest": 1, "counted": 3, "tied": 1, "folds": 4}
    # the linear probe has no hidden layer: fold 1 is not counted for hidden
    assert e["hidden"] == {"grid": [8, 32], "at_lowest": 2, "at_highest": 1, "counted": 3, "tied": 0, "folds": 4}
    assert "dropout" not in e  # a single value is not a grid
    assert e["warnings"] == ["weight_decay: the lowest value of the grid (0.1) was chosen in 2 of 3 outer folds; the best "
                             "value may lie outside the grid (widen weight_decay in --config)",
                             "hidden: the lowest value of the grid (8) was chosen in 2 of 3 outer folds; the best value may "
                             "lie outside the grid (widen hidden in --config)"]
    # both ends, neither alone a majority: still said
    three = S.Space.from_dict({**SPACE, "weight_decay": [0.01, 0.1, 1.0]})
    c3 = three.candidates({"good": ["0", "1", "2"], "noise": ["0"]})
    ids = {c.weight_decay: c.id for c in c3 if c.features == ("good:1",)}
    e3 = S.grid_edges(three, [{"chosen": [ids[a]], "weights": [1.0]} for a in (0.01, 0.1, 0.1)], c3)
    assert e3["weight_decay"]["at_lowest"] == 1 and e3["weight_decay"]["at_highest"] == 0 and e3["warnings"] == []
    e4 = S.grid_edges(three, [{"chosen": [ids[a]], "weights": [1.0]} for a in (0.01, 1.0, 0.01, 1.0, 0.1)], c3)
    assert e4["warnings"] == ["weight_decay: an end of the grid (0.01 or 1) was chosen in 4 of 5 outer folds; the best "
                              "value may lie outside the grid (widen weight_decay in --config)"]
    assert S.DEFAULT_WEIGHT_DECAY[0] < 0.01 and S.DEFAULT_WEIGHT_DECAY[-1] > 1.0


def test_default_weight_decay_grid_depends_on_the_head():
    """Undeclared, weight_decay is the linear probe's L2 grid for the probe and AdamW's decay grid for the
    other heads (an AdamW decay of 10 or 100 would erase the weights); declared, it holds for every head."""
    layers = {"good": ["0"], "noise": ["0"]}
    cands = S.Space.from_dict({"stores": ["good"], "heads": ["linear", "mlp"], "class_weights": [False]}).candidates(layers)
    assert sorted(c.weight_decay for c in cands if c.head == "linear") == sorted(S.DEFAULT_WEIGHT_DECAY)
    assert sorted(c.weight_decay for c in cands if c.head == "mlp") == sorted(S.DEFAULT_WEIGHT_DECAY_ADAMW)
    assert max(S.DEFAULT_WEIGHT_DECAY_ADAMW) <= 1.0
    declared = S.Space.from_dict({"stores": ["good"], "heads": ["linear", "mlp"], "weight_decay": [0.5],
                                  "class_weights": [False]}).candidates(layers)
    assert {c.weight_decay for c in declared} == {0.5} and {c.head for c in declared} == {"linear", "mlp"}


def test_resume_reuses_units_and_new_data_does_not(tmp_path, monkeypatch):
    make_toy(tmp_path)
    kw = dict(space=S.Space.from_dict(RUN), metric="uar", ensemble=1, halving=0, n_boot=100, write_run=False)
    r1 = S.search(tmp_path, "toy", tmp_path / "out", **kw)
    calls = []
    monkeypatch.setattr(S, "run_unit", lambda u, d=None: calls.append(u) or (_ for _ in ()).throw(AssertionError("retrained")))
    r2 = S.search(tmp_path, "toy", tmp_path / "out", **kw)
    assert not calls and r2["nested"]["estimate"] == r1["nested"]["estimate"]
    assert [pf["chosen"] for pf in r2["per_fold"]] == [pf["chosen"] for pf in r1["per_fold"]]
    # units cached by another emo (trainer sources) are not reused
    import emo.fuse.training.resume as resume

    real_code = resume.trainer_code()
    monkeypatch.setattr(resume, "trainer_code", lambda: {**real_code, "fuse_sources": "f" * 16})
    with pytest.raises(AssertionError, match="retrained"):
        S.search(tmp_path, "toy", tmp_path / "out", **kw)
    monkeypatch.setattr(resume, "trainer_code", lambda: real_code)
    # a store with other values: other fingerprint, nothing reused
    make_toy(tmp_path, seed=1)
    with pytest.raises(AssertionError, match="retrained"):
        S.search(tmp_path, "toy", tmp_path / "out", **kw)


def test_processes_and_dask_give_the_same_numbers(tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster

    make_toy(tmp_path)
    kw = dict(space=S.Space.from_dict(RUN), metric="uar", ensemble=2, halving=2, n_boot=100, write_run=False)
    a = S.search(tmp_path, "toy", tmp_path / "a", workers=1, **kw)
    b = S.search(tmp_path, "toy", tmp_path / "b", workers=2, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, Client(cl) as client:
        c = S.search(tmp_path, "toy", tmp_path / "c", scheduler=client, **kw)
    assert c["executor"] == "dask" and b["executor"] == "processes"
    for other in (b, c):
        assert other["nested"]["estimate"] == a["nested"]["estimate"]
        assert [pf["chosen"] for pf in other["per_fold"]] == [pf["chosen"] for pf in a["per_fold"]]
        assert [pf["weights"] for pf in other["per_fold"]] == [pf["weights"] for pf in a["per_fold"]]
    # the cached unit predictions themselves are equal, file by file
    fa = sorted(p.name for p in (tmp_path / "a" / "cache").glob("*.npz"))
    assert fa == sorted(p.name for p in (tmp_path / "c" / "cache").glob("*.npz"))
    for name in fa:
        with np.load(tmp_path / "a" / "cache" / name) as x, np.load(tmp_path / "c" / "cache" / name) as z:
            assert all(np.array_equal(x[f"p{k}"], z[f"p{k}"]) for k in range(int(x["n"])))


def test_split_protocol_selects_on_dev_and_writes_a_run_emo_score_loads(tmp_path):
    from emo.fuse.training.data import load_features
    from emo.fuse.run import load_run

    make_toy(tmp_path, splits=True)
    r = S.search(tmp_path, "toy", tmp_path / "out", space=S.Space.from_dict(RUN), protocol="split", metric="waf",
                 ensemble=1, n_boot=100)
    assert len(r["per_fold"]) == 1 and r["nested"]["n_groups"] == 6  # test rows bootstrapped by speaker
    assert r["final"]["labels"] == r["per_fold"][0]["chosen_labels"]
    run = load_run(tmp_path / "out" / "run")
    fs = load_features(tmp_path, "toy", run.feature_specs)
    p = run.predict(fs.blocks, fs.speakers)["probs"]
    assert p.shape == (90, 3) and np.all(np.isfinite(p))
    cfg = json.loads((tmp_path / "out" / "run" / "config.json").read_text())
    assert cfg["search"]["candidate"]["features"] == list(r["final"]["members"][0]["features"])


def _frame_store(root: Path, y: np.ndarray, names: list[str], seed: int = 1) -> None:
    """Store ``seq`` of dataset 'toy': 1 layer, 2..9 frames of 4-d per sample, the class in the frames' mean."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 4)) * 2.0
    prov = {"encoder": "seq", "source": "synthetic", "weights_hash": "1" * 16, "pooling": "mean", "modality": "audio"}
    w = StoreWriter(root / "toy" / "seq.h5", prov, ["0"], frames=True)
    for name, c in zip(names, y):
        q = (rng.normal(size=(int(rng.integers(2, 10)), 4)) + centers[c]).astype(np.float32)
        w.add(name, Encoded(layers={"0": q.mean(0)}, frames={"0": q}))
    w.finalize()
    w.close()


def test_frame_level_stores_are_searched(tmp_path):
    """A store declared ``frames: true`` is searched as frame sequences by the non-linear heads (the
    linear probe is skipped for it), utterance candidates keep their ids, a search reads each store one
    way, and a chosen frame-level candidate is refitted into a run that predicts from frames."""
    from emo.fuse.run import load_run
    from emo.fuse.training.data import Frames, load_features

    y = make_toy(tmp_path, splits=True)
    _frame_store(tmp_path, y, [f"u{i:03d}" for i in range(len(y))])
    space = {"stores": [{"name": "seq", "frames": True}, {"name": "good", "layers": "1"}], "heads": ["linear", "mlp"],
             "weight_decay": [0.1], "class_weights": [False], "frame_encoder": ["lstm"]}
    sp = S.Space.from_dict(space)
    assert sp.frame_stores == ["seq"]
    cands = sp.candidates({"seq": ["0"], "good": ["0", "1", "2"]})
    assert sorted((c.features, c.head, c.frames) for c in cands) == [
        (("good:1",), "linear", ()), (("good:1",), "mlp", ()), (("seq",), "mlp", ("seq",))]
    lin = S.Candidate(("good:1",), "linear", 0.1)
    assert "frames" not in lin.key() and "frame_encoder" not in lin.key()  # utterance ids (and caches) unchanged
    fr = next(c for c in cands if c.frames)
    assert S.Candidate.from_key(fr.key()) == fr and "frames(seq: lstm)" in fr.label()
    with pytest.raises(S.SearchError, match="both with and without frames"):
        S.Space.from_dict({"stores": [{"name": "seq", "frames": True}, "seq"], "heads": ["mlp"]})
    with pytest.raises(S.SearchError, match="other than linear"):
        S.Space.from_dict({"stores": [{"name": "seq", "frames": True}]})
    with pytest.raises(S.SearchError, match="frame_encoder 'gru'"):
        S.Space.from_dict({"stores": [{"name": "seq", "frames": True}], "heads": ["mlp"], "frame_encoder": ["gru"]})
    with pytest.raises(S.SearchError, match="unknown key"):
        S.Space.from_dict({"stores": [{"name": "seq", "frame": True}], "heads": ["mlp"]})
    with pytest.raises(Exception, match=r"good\.h5 has no frame-level features"):
        S.load_search_data(tmp_path, "toy", ["good"], frames=["good"])

    # docs/search.md's frames.yaml (its second YAML block) is a valid space: frames for egemaps_lld only
    import re
    import textwrap

    import yaml

    doc_sp = S.Space.from_dict(yaml.safe_load(textwrap.dedent(re.findall(r"```yaml\n(.*?)```", _doc(), re.S)[1])))
    doc_c = doc_sp.candidates({"egemaps": ["functionals"], "egemaps_lld": ["lld"]})
    assert sorted((c.features, c.head, c.frames, c.frame_encoder) for c in doc_c) == [
        (("egemaps",), "linear", (), "lstm"), (("egemaps",), "mlp", (), "lstm"), (("egemaps_lld",), "mlp", ("egemaps_lld",), "textcnn")]

    fs, data, rows = S.load_search_data(tmp_path, "toy", ["seq", "good"], frames=["seq"])
    assert isinstance(data.blocks["seq"], Frames) and data.inputs["seq"].frames and not data.inputs["good"].frames
    outer = S.make_outer_folds("speaker", fs, data.y["discrete"], rows, 0, 0)
    probs = S.fit_predict(fr, data, [(f.train, f.test) for f in outer[:3]])
    test = np.concatenate([np.sort(f.test) for f in outer[:3]])
    p = np.concatenate(probs)
    assert p.shape == (len(test), 3) and np.all(np.isfinite(p))
    assert (p.argmax(1) == data.y["discrete"][test]).mean() > 0.6  # the frames carry the class (chance 1/3)

    r = S.search(tmp_path, "toy", tmp_path / "out", space=sp, protocol="split", stores=["seq", "good"], ensemble=1, n_boot=50)
    assert {row["candidate"] for row in r["leaderboard"]} == {c.label() for c in cands}
    assert r["stores"]["seq"]["layers"] == ["0"]
    info = S.write_final_runs(tmp_path / "one", fs, data, [fr], [1.0], rows, tmp_path, "toy", None)
    assert info["kind"] == "run"
    run = load_run(tmp_path / "one" / "run")
    assert run.frame_inputs == ["seq"]
    f = load_features(tmp_path, "toy", run.feature_specs, frames=run.frame_inputs)
    q = run.predict(f.blocks, f.speakers)["probs"]
    assert q.shape == (90, 3) and (q.argmax(1) == y).mean() > 0.6
    # a chosen ensemble with a frame-level member: the ensemble run reads that store as frames
    S.write_final_runs(tmp_path / "two", fs, data, [fr, lin], [0.6, 0.4], rows, tmp_path, "toy", None)
    ens = load_run(tmp_path / "two" / "run")
    assert ens.frame_inputs == ["seq"] and [m.frame_inputs for m in ens.members] == [["seq"], []]
    f2 = load_features(tmp_path, "toy", ens.feature_specs, frames=ens.frame_inputs)
    q2 = ens.predict(f2.blocks, f2.speakers)["probs"]
    parts = [m.predict(load_features(tmp_path, "toy", m.feature_specs, frames=m.frame_inputs).blocks, f2.speakers)["probs"]
             for m in ens.members]
    assert np.allclose(q2, sum(w * p for w, p in zip(ens.weights, parts)), atol=1e-6)


def test_opensmile_sets_on_a_real_clip(shared):
    import soundfile as sf

    from emo.extract.registry import parse_encoder_spec
    from emo.extract.types import AudioInput

    wav = sorted((shared / "emodb" / "wav").glob("*.wav"))[0]
    a, sr = sf.read(wav, dtype="float32")
    assert sr == 16000
    comp = parse_encoder_spec("compare").build()
    out = comp.encode([AudioInput(wav.stem, a)])[0]
    assert out.layers["functionals"].shape == (6373,) and np.all(np.isfinite(out.layers["functionals"]))
    assert comp.provenance()["feature_set"] == "ComParE_2016" and comp.provenance()["weights_hash"].startswith("opensmile-")
    lld = parse_encoder_spec("egemaps_lld").build(frames=True)
    o = lld.encode([AudioInput(wav.stem, a)])[0]
    f = o.frames["lld"]
    assert f.shape[1] == 25 and abs(f.shape[0] - len(a) / 160) < 10  # 10 ms hop
    assert np.allclose(o.layers["lld"], np.concatenate([f.mean(0), f.std(0)]), atol=1e-5)
    assert lld.provenance()["feature_level"] == "LowLevelDescriptors"


def _doc():
    return (Path(__file__).resolve().parents[1] / "docs" / "search.md").read_text()


def test_cli_search_runs_every_command_docs_search_md_shows(tmp_path):
    """The doc's commands, in order, on the toy dataset: the default space (3-candidate budget), the
    doc's space.yaml (its stores swapped for the toy's), and the rerun from OUT/search.json."""
    import re
    import shlex
    import textwrap

    from tests.helpers import run_emo

    from emo.fuse.options import read_search_config

    make_toy(tmp_path)
    doc = _doc()
    yaml_block = textwrap.dedent(re.search(r"```yaml\n(.*?)```", doc, re.S).group(1))
    shown = read_search_config(_write(tmp_path / "doc_space.yaml", yaml_block))  # the doc's YAML is a valid --config
    assert set(json.loads(shown["space"])) >= {"stores", "heads", "weight_decay"}
    _write(tmp_path / "space.yaml", yaml_block.replace("name: minilm", "name: good").replace("name: egemaps", "name: noise")
           .replace("combine: [1]", "combine: [1]\nbudget: 3\nworkers: 1\nensemble: 1\nn_boot: 100"))
    lines = [x for x in doc.split("```bash\n")[1].split("```")[0].splitlines() if x.startswith("emo fuse search ")]
    assert len(lines) == 3
    outs = {}
    for line in lines:
        argv = shlex.split(line)[1:]
        for opt, val in (("--dataset", "toy"), ("--features-dir", str(tmp_path))):
            if opt in argv:
                argv[argv.index(opt) + 1] = val
        if "--out" in argv:
            argv[argv.index("--out") + 1] = outs.setdefault(argv[argv.index("--out") + 1], str(tmp_path / f"s{len(outs)}"))
        for i, a in enumerate(argv):
            if a == "space.yaml":
                argv[i] = str(tmp_path / "space.yaml")
            elif a.endswith("/search.json"):
                argv[i] = str(Path(outs[a.rsplit("/", 1)[0]]) / "search.json")
        extra = ["--budget", "3", "--workers", "1", "--ensemble", "1", "--n-boot", "100"] if "--config" not in line else []
        r = run_emo(*argv, *extra)
        assert "nested UAR" in r.stdout, r.stdout
    first, space_run = (json.loads((Path(o) / "search.json").read_text()) for o in outs.values())
    assert first["space"]["n_candidates_evaluated"] == 3 and (Path(outs["runs/search-emodb"]) / "run" / "config.json").is_file()
    assert first["options"]["budget"] == "3" and first["options"]["space"] == ""
    # the doc's space.yaml: its stores (good: windows 1-3 + all = 6 specs, noise), its options from the same file
    assert space_run["options"]["budget"] == "3" and space_run["options"]["ensemble"] == 1
    assert json.loads(space_run["options"]["space"])["stores"][0] == {"name": "good", "windows": [1, 2, 3]}
    assert {s["name"] for s in space_run["space"]["definition"]["stores"]} == {"good", "noise"}


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_cli_options_are_generated_from_search_options(tmp_path):
    """Every option of emo fuse search is a SearchOptions field (no hand-written option), grouped in
    --help; a field added to the dataclass appears in --help and reaches the command body."""
    from dataclasses import dataclass, fields

    import typer
    from typer.testing import CliRunner

    from emo.cliargs import GroupedCommand, command
    from emo.cli import app
    from emo.fuse import search_cli
    from emo.fuse.options import SearchOptions
    from emo.optspec import flag_of, opt

    cmd = typer.main.get_command(app).commands["fuse"].commands["search"]
    assert sorted(p.name for p in cmd.params) == sorted(["config", *(f.name for f in fields(SearchOptions))])
    r = CliRunner().invoke(app, ["fuse", "search", "--help"], terminal_width=120)
    sections = [x[:-1] for x in r.output.splitlines() if x.endswith(":") and not x.startswith(" ")]
    assert sections[:6] == ["Inputs", "Search space", "Protocol", "Search", "Parallel", "Output"], r.output
    for f in fields(SearchOptions):
        assert flag_of(f) in r.output, f.name
    protocol = r.output.split("\nProtocol:")[1].split("\nSearch:")[0]
    assert "--metric" in protocol and "One of: uar, waf, accuracy" in " ".join(protocol.split()) and "--budget" not in protocol

    @dataclass(kw_only=True)
    class Extended(SearchOptions):
        max_members_per_store: int = opt(2, "A new search option, declared only here.", group="Search")

    got = []
    test_app = typer.Typer(rich_markup_mode=None)  # plain help, as emo.cli gives when piped
    test_app.command("search", cls=GroupedCommand)(command(Extended, read_config=search_cli.read_search_config,
                                                          panels=search_cli.PANELS)(lambda ctx, o: got.append(o)))
    test_app.command("other")(lambda: None)
    r = CliRunner().invoke(test_app, ["search", "--help"], terminal_width=120)
    search_section = r.output.split("\nSearch:")[1].split("\nParallel:")[0]
    assert "--max-members-per-store" in search_section and "A new search option" in search_section, r.output
    cfg = _write(tmp_path / "x.yaml", "max_members_per_store: 5\nstores: [good]\n")
    r = CliRunner().invoke(test_app, ["search", "--config", str(cfg), "--dataset", "toy", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert got[0].max_members_per_store == 5 and json.loads(got[0].space)["stores"] == [{"name": "good"}]


def test_cli_config_round_trip_reuses_every_unit(tmp_path, monkeypatch):
    """--config FILE (space keys + options) runs; OUT/search.json records the resolved options, and
    --config OUT/search.json reruns the same search (same options, every unit from the cache)."""
    from typer.testing import CliRunner

    from emo.cli import app

    make_toy(tmp_path)
    exp = _write(tmp_path / "exp.yaml", f"dataset: toy\nfeatures-dir: {tmp_path}\nout: {tmp_path / 'o'}\nworkers: 1\n"
                 "ensemble: 2\nhalving: 0\nn_boot: 50\nmetric: waf\nspace:\n  stores: [{name: good, windows: [1]}, noise]\n"
                 "  weight_decay: [0.1]\n  class_weights: [false]\n")
    r = CliRunner().invoke(app, ["fuse", "search", "--config", str(exp), "--no-run", "--seed", "3"])
    assert r.exit_code == 0, r.output
    first = json.loads((tmp_path / "o" / "search.json").read_text())
    opts = first["options"]
    assert (opts["metric"], opts["ensemble"], opts["halving"], opts["n_boot"], opts["seed"], opts["write_run"]) == ("waf", 2, 0, 50, 3, False)
    assert json.loads(opts["space"])["weight_decay"] == [0.1] and first["space"]["n_candidates_evaluated"] == 5
    assert not (tmp_path / "o" / "run").exists()
    assert first["command"][:3] == ["emo", "fuse", "search"] and "--space" in first["command"]  # reproducible without the file
    monkeypatch.setattr(S, "run_unit", lambda u, d=None: (_ for _ in ()).throw(AssertionError(f"retrained {u.tag}")))
    r = CliRunner().invoke(app, ["fuse", "search", "--config", str(tmp_path / "o" / "search.json")])
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "o" / "search.json").read_text())
    assert again["options"] == opts and again["nested"] == first["nested"]
    assert [pf["chosen"] for pf in again["per_fold"]] == [pf["chosen"] for pf in first["per_fold"]]
    # the recorded command line reproduces it too
    r = CliRunner().invoke(app, first["command"][1:])
    assert r.exit_code == 0 and json.loads((tmp_path / "o" / "search.json").read_text())["options"] == opts, r.output


def test_cli_bad_values_exit_2(tmp_path):
    from tests.helpers import run_emo

    make_toy(tmp_path)
    base = ("fuse", "search", "--dataset", "toy", "--features-dir", str(tmp_path), "--out", str(tmp_path / "x"))
    for bad, says in ((["--budget", "soon"], "--budget must be"), (["--metric", "f1"], "--metric must be one of uar, waf, accuracy"),
                      (["--folds", "1"], "--folds must be"), (["--folds", "loso"], "--folds must be"),
                      (["--ensemble", "0"], "--ensemble"), (["--space", "{\"stores\": [\"good\"], \"heads\": [\"svm\"]}"], "head 'svm'"),
                      (["--space", str(tmp_path / "missing.yaml")], "missing.yaml")):
        r = run_emo(*base, *bad, ok=(2,))
        assert says in r.stderr, (bad, r.stderr)
    for text, says in (("stores: [good]\nheads: [svm]\n", "head 'svm'"), ("lr: 0.1\n", "lr is not an option"),
                       ("stores: [good]\nspace: other.yaml\n", "given twice"), ("budget: [1, 2]\n", "takes one value")):
        cfg = _write(tmp_path / "bad.yaml", text)
        r = run_emo(*base, "--config", str(cfg), ok=(2,))
        assert says in r.stderr and "bad.yaml" in r.stderr, (text, r.stderr)
    assert not (tmp_path / "x").exists()  # refused before anything was written
    r = run_emo("fuse", "search", "--dataset", "nope", "--features-dir", str(tmp_path), "--out", str(tmp_path / "x"), ok=(1,))
    assert "no feature stores found" in r.stderr


def test_run_dir_of_an_ensemble_scores_the_weighted_ensemble(tmp_path):
    """OUT/run of a several-member choice is a decision-ensemble run: loading it and predicting gives
    sum_i w_i p_i of the refitted members (not the largest-weight member alone), the same fused
    posteriors the search's refit computes; two members on overlapping layers of one store share it."""
    from emo.fuse.run import EnsembleRun, RunError, load_run, write_ensemble_config
    from emo.fuse.training.data import Normalizer, load_features

    make_toy(tmp_path)
    fs, data, rows = S.load_search_data(tmp_path, "toy", None)
    assert data.normalize == "speaker"
    members = [S.Candidate(("good:1",), "linear", 0.1), S.Candidate(("good:0-2",), "linear", 1.0), S.Candidate(("noise",), "linear", 0.1)]
    weights = [0.3, 0.5, 0.2]
    info = S.write_final_runs(tmp_path / "out", fs, data, members, weights, rows, tmp_path, "toy", ["emo", "fuse", "search"])
    assert info["kind"] == "decision-ensemble" and [m["weight"] for m in info["members"]] == [0.5, 0.3, 0.2]  # largest first
    run = load_run(tmp_path / "out" / "run")
    assert isinstance(run, EnsembleRun) and len(run.members) == 3 and np.allclose(run.weights, [0.5, 0.3, 0.2])
    assert [(i.name, i.layers) for i in run.inputs] == [("good", ["0", "1", "2"]), ("noise", ["0"])]

    def own(specs):  # features and own-speaker statistics, as emo score computes them for the scored clips
        f = load_features(tmp_path, "toy", specs)
        return f.blocks, Normalizer("speaker").fit(f.blocks, np.arange(len(f.names)), f.speakers).speaker

    spk = fs.speakers
    blocks, stats = own(run.feature_specs)
    p = run.predict(blocks, spk, speaker_stats=stats)["probs"]
    parts = []
    for m in run.members:
        b, st = own(m.feature_specs)
        parts.append(m.predict(b, spk, speaker_stats=st)["probs"])
    assert np.allclose(p, sum(w * q for w, q in zip(run.weights, parts)), atol=1e-6)
    assert np.abs(p - parts[0]).max() > 1e-2  # not the largest-weight member alone
    # the search's own fused refit predictions (fast L-BFGS path; the same optimum)
    ref = S.fuse(members, weights, {c: S.fit_predict(c, data, [(rows, rows)])[0] for c in members})
    assert np.abs(p[rows] - ref).max() < 5e-3
    with pytest.raises(RunError, match="inside the run directory"):
        write_ensemble_config(tmp_path / "out" / "run", [("../elsewhere", 1.0)], run.inputs, {})
    with pytest.raises(RunError, match="sum to 1"):
        write_ensemble_config(tmp_path / "out" / "run", [(m["dir"][len("run/"):], 0.4) for m in info["members"]], run.inputs, {})


def test_emo_score_applies_the_ensemble_run_dir(tmp_path):
    """emo score --run OUT/run on audio files: the probabilities are the weighted ensemble of the
    two members (eGeMAPS functionals and eGeMAPS LLD statistics), each applied to its own store."""
    import csv

    from scipy.io import wavfile
    from typer.testing import CliRunner

    from emo.cli import app
    from emo.extract.datasets import get_dataset
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.fuse.run import load_run
    from emo.fuse.training.data import load_features

    data = tmp_path / "clips"
    data.mkdir()
    rng = np.random.default_rng(0)
    sr, rows = 16000, []
    for i in range(18):
        hi = i % 2 == 1
        t = np.arange(int(0.5 * sr)) / sr
        x = 0.4 * np.sin(2 * np.pi * (rng.uniform(600, 900) if hi else rng.uniform(150, 250)) * t) + 0.01 * rng.normal(size=t.size)
        wavfile.write(data / f"t{i:02d}.wav", sr, (x * 32767).astype(np.int16))
        rows.append(f"t{i:02d},{'high' if hi else 'low'}")
    (data / "labels.csv").write_text("name,discrete\n" + "\n".join(rows) + "\n")
    feats = tmp_path / "features"
    Extractor([parse_encoder_spec("egemaps"), parse_encoder_spec("egemaps_lld")], out=feats, progress=False).run(
        get_dataset("folder", str(data), dataset_name="folder"))
    fs, sd, lab = S.load_search_data(feats, "folder", None)
    assert sd.normalize == "global"  # no speakers
    members = [S.Candidate(("egemaps",), "linear", 1.0), S.Candidate(("egemaps_lld",), "linear", 1.0)]
    S.write_final_runs(tmp_path / "s", fs, sd, members, [0.65, 0.35], lab, feats, "folder", None)
    r = CliRunner().invoke(app, ["score", "--dataset", "folder", "--name", "folder", "--root", str(data), "--features-dir",
                                 str(feats / "folder"), "--run", str(tmp_path / "s" / "run"), "--out", str(tmp_path / "p.csv"),
                                 "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "p.csv", newline="") as fh:
        got = {x["name"]: x for x in csv.DictReader(fh)}
    run = load_run(tmp_path / "s" / "run")
    want = 0
    for w, m in zip(run.weights, run.members):
        f = load_features(feats, "folder", m.feature_specs)
        want = want + w * m.predict(f.blocks)["probs"]
    names = load_features(feats, "folder", run.feature_specs).names
    hi = run.classes.index("high")
    assert len(got) == 18 and all(got[n]["status"] == "ok" for n in names)
    assert max(abs(float(got[n]["prob_high"]) - want[i, hi]) for i, n in enumerate(names)) < 1e-4
