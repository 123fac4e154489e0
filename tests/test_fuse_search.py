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


def test_resume_reuses_units_and_new_data_does_not(tmp_path, monkeypatch):
    make_toy(tmp_path)
    kw = dict(space=S.Space.from_dict(RUN), metric="uar", ensemble=1, halving=0, n_boot=100, write_run=False)
    r1 = S.search(tmp_path, "toy", tmp_path / "out", **kw)
    calls = []
    monkeypatch.setattr(S, "run_unit", lambda u, d=None: calls.append(u) or (_ for _ in ()).throw(AssertionError("retrained")))
    r2 = S.search(tmp_path, "toy", tmp_path / "out", **kw)
    assert not calls and r2["nested"]["estimate"] == r1["nested"]["estimate"]
    assert [pf["chosen"] for pf in r2["per_fold"]] == [pf["chosen"] for pf in r1["per_fold"]]
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


def test_cli_search_and_bad_values(tmp_path):
    from tests.helpers import run_emo

    import shlex

    make_toy(tmp_path)
    # the command docs/search.md shows, on the toy dataset, with a 3-candidate budget
    doc = (Path(__file__).resolve().parents[1] / "docs" / "search.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("emo fuse search "))
    argv = shlex.split(line)[1:]
    for opt, val in (("--dataset", "toy"), ("--features-dir", str(tmp_path)), ("--out", str(tmp_path / "s"))):
        argv[argv.index(opt) + 1] = val
    r = run_emo(*argv, "--budget", "3", "--workers", "1", "--ensemble", "1")
    assert "nested UAR" in r.stdout and (tmp_path / "s" / "run" / "config.json").is_file()
    assert json.loads((tmp_path / "s" / "search.json").read_text())["space"]["n_candidates_evaluated"] == 3
    run_emo("fuse", "search", "--dataset", "toy", "--features-dir", str(tmp_path), "--budget", "soon", "--out", str(tmp_path / "x"), ok=(2,))
    run_emo("fuse", "search", "--dataset", "toy", "--features-dir", str(tmp_path), "--metric", "f1", "--out", str(tmp_path / "x"), ok=(2,))
    r = run_emo("fuse", "search", "--dataset", "nope", "--features-dir", str(tmp_path), "--out", str(tmp_path / "x"), ok=(1,))
    assert "no feature stores found" in r.stderr
