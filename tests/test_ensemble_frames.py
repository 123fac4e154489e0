"""Decision-ensemble runs (emo.fuse.run.EnsembleRun) with frame-level members: a store read as frame
sequences by some members, the frames flag checked against the ensemble's inputs, the per-frame
shape checked, the layer cut of frames and of their speaker statistics, p = sum_i w_i p_i."""

from __future__ import annotations

import types
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.training.data import Frames, Normalizer, load_features

CLASSES = ["neutral", "angry", "happy"]
N = 60


def make_mixed(root: Path, n: int = N, seed: int = 0) -> Path:
    """features/mix: ``mfcc`` (2 layers "0", "1", 3-d) stored with frames of 2-8 frames per clip (the
    class shifts layer 1), ``egemaps`` (2 layers, 4-d) utterance-level only (class in layer 0); 4 speakers.
    Synthetic numbers under registered encoder names, so that ``emo score`` can parse the run's specs
    (and reuse these stores instead of extracting)."""
    rng = np.random.default_rng(seed)
    feats = root / "features"
    y = np.arange(n) % 3
    centers = rng.normal(size=(3, 4)).astype(np.float32) * 1.5
    samples = [Sample(name=f"u{i:03d}", media=None, discrete=CLASSES[y[i]], speaker=f"s{i % 4}") for i in range(n)]
    write_manifest(feats / "mix", types.SimpleNamespace(name="mix", root=root, classes=CLASSES), samples)
    w = StoreWriter(feats / "mix" / "mfcc.h5", {"encoder": "mfcc", "source": "synthetic", "weights_hash": "h-mfcc", "modality": "audio",
                                               "dataset": "mix"}, ["0", "1"], frames=True, dtype="float32")
    for s, c in zip(samples, y):
        x = rng.normal(loc=0.5 * (int(s.speaker[1:]) + 1), size=(int(rng.integers(2, 9)), 2, 3)).astype(np.float32)
        x[:, 1] += centers[c, :3]
        w.add(s.name, Encoded(layers={k: x[:, j].mean(0) for j, k in enumerate(["0", "1"])},
                              frames={k: x[:, j] for j, k in enumerate(["0", "1"])}))
    w.finalize()
    w.close()
    w = StoreWriter(feats / "mix" / "egemaps.h5", {"encoder": "egemaps", "source": "synthetic", "weights_hash": "h-egemaps", "modality": "audio",
                                               "dataset": "mix"}, ["0", "1"], dtype="float32")
    for s, c in zip(samples, y):
        x = rng.normal(size=(2, 4)).astype(np.float32)
        x[0] += centers[c]
        w.add(s.name, Encoded(layers={"0": x[0], "1": x[1]}))
    w.finalize()
    w.close()
    return feats


def save_member(out: Path, feats: Path, specs: list[str], frames: list[str], encoder: str = "lstm") -> None:
    """Train one fold (all rows, inner validation as emo fuse search's refit) and write it with save_run."""
    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.cv import train_cv
    from emo.fuse.eval.protocols import Fold, inner_validation
    from emo.fuse.run import save_run

    fs = load_features(feats, "mix", specs, frames=frames or False)
    y = {"discrete": np.array([CLASSES.index(s.discrete) for s in fs.samples])}
    rows = np.arange(len(fs.names))
    tr, va = inner_validation(rows, y["discrete"], 0)
    folds = [Fold("all", tr, va, rows)]
    cfg = TrainConfig(head="mlp", hidden=8, dropout=0.0, epochs=4, patience=4, seeds=1, lr=1e-2, batch_size=16,
                      normalize="speaker", frames=bool(frames), frame_encoder=encoder, threads=1, device="cpu").resolve(len(tr))
    res = train_cv(fs.blocks, fs.inputs, y, folds, cfg, len(CLASSES), fs.speakers)
    config = {"command": ["test"], "dataset": "mix", "features_dir": str(feats),
              "feature_specs": [inp.spec for inp in fs.inputs], "inputs": [inp.to_dict() for inp in fs.inputs],
              "task": "discrete", "classes": CLASSES, "model": cfg.model_args(fs.inputs, len(CLASSES)), "training": asdict(cfg),
              "protocol": {"folds": "all", "seed": 0, "align": "strict", "test_splits": [], "train_splits": [],
                           "n_samples": len(fs.names), "n_labelled": len(rows)}}
    save_run(out, config, res, fs.names, folds, y)


MEMBERS = [("members/0-frames", ["mfcc:1"], ["mfcc"], "lstm"),              # frame layer 1 only: the cut matters
           ("members/1-mixed", ["mfcc:0-1", "egemaps:0"], ["mfcc"], "textcnn"),  # both frame layers and an utterance store
           ("members/2-egemaps", ["egemaps:0-1"], [], "lstm")]                     # utterance-level only
WEIGHTS = [0.5, 0.3, 0.2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The dataset, three member runs inside ``ens/`` and the ensemble's union inputs (mfcc frame-level)."""
    from emo.fuse.run import write_ensemble_config

    root = tmp_path_factory.mktemp("ensframes")
    feats = make_mixed(root)
    ens = root / "ens"
    for d, specs, frames, enc in MEMBERS:
        save_member(ens / d, feats, specs, frames, enc)
    union = load_features(feats, "mix", ["mfcc:0-1", "egemaps:0-1"], frames=["mfcc"])
    inputs = union.inputs
    assert [(i.name, i.frames) for i in inputs] == [("mfcc", True), ("egemaps", False)]
    write_ensemble_config(ens, [(d, w) for (d, *_), w in zip(MEMBERS, WEIGHTS)], inputs, {"command": ["test"], "dataset": "mix"})
    return types.SimpleNamespace(feats=feats, ens=ens, union=union, inputs=inputs)


def _own(feats: Path, member, rows: np.ndarray | None = None):
    """A member's own features (its layers, frames as Frames) over ``rows`` and their own-speaker statistics."""
    fs = load_features(feats, "mix", member.feature_specs, frames=member.frame_inputs or False)
    if rows is not None:
        fs = fs.subset(rows)
    return fs.blocks, fs.speakers, Normalizer("speaker").fit(fs.blocks, np.arange(len(fs.names)), fs.speakers).speaker


def test_ensemble_with_frame_members_predicts_the_weighted_sum(built):
    from emo.fuse.run import EnsembleRun, load_run

    run = load_run(built.ens)
    assert isinstance(run, EnsembleRun) and len(run.members) == 3 and np.allclose(run.weights, WEIGHTS)
    assert run.frame_inputs == ["mfcc"]
    assert [m.frame_inputs for m in run.members] == [["mfcc"], ["mfcc"], []]
    union = built.union
    spk = union.speakers
    fr = union.blocks["mfcc"]
    assert isinstance(fr, Frames) and fr.frame_shape == (2, 3)
    want = sum(w * m.predict(_own(built.feats, m)[0], spk)["probs"] for w, m in zip(run.weights, run.members))
    as_list = run.predict({"mfcc": fr.to_list(), "egemaps": union.blocks["egemaps"]}, spk)["probs"]
    as_frames = run.predict({"mfcc": fr, "egemaps": union.blocks["egemaps"]}, spk)["probs"]
    # "name/frames" is preferred over "name" (here an utterance array that would be refused)
    preferred = run.predict({"mfcc/frames": fr.to_list(), "mfcc": np.zeros((N, 2, 3), np.float32), "egemaps": union.blocks["egemaps"]}, spk)["probs"]
    assert as_list.shape == (N, 3) and np.allclose(as_list.sum(1), 1, atol=1e-5)
    for got in (as_list, as_frames, preferred):
        assert np.abs(got - want).max() < 1e-6
    first = run.members[0].predict(_own(built.feats, run.members[0])[0], spk)["probs"]
    assert np.abs(as_list - first).max() > 1e-3  # not the largest-weight member alone

    # a shuffled subset of rows (Frames sharing data, unordered starts) with the scored clips' own speaker statistics
    rows = np.random.default_rng(1).permutation(N)[:N // 2]  # half of each speaker's clips: statistics unlike training's
    sub = union.subset(rows)
    stats = Normalizer("speaker").fit(sub.blocks, np.arange(len(rows)), sub.speakers).speaker
    assert stats["mfcc"]["s0"][0].shape == (2, 3)  # per speaker (mean, std) over its frames, per layer and dimension
    parts = []
    for m in run.members:
        b, s, st = _own(built.feats, m, rows)
        parts.append(m.predict(b, s, speaker_stats=st)["probs"])
    want_st = sum(w * q for w, q in zip(run.weights, parts))
    got_frames = run.predict({"mfcc": sub.blocks["mfcc"], "egemaps": sub.blocks["egemaps"]}, sub.speakers, speaker_stats=stats)["probs"]
    got_list = run.predict({"mfcc": sub.blocks["mfcc"].to_list(), "egemaps": sub.blocks["egemaps"]}, sub.speakers,
                           folds=[0], speaker_stats=stats)["probs"]
    assert np.abs(got_frames - want_st).max() < 1e-6 and np.abs(got_list - want_st).max() < 1e-6
    assert np.abs(got_frames - as_list[rows]).max() > 1e-4  # the statistics were used, not the training ones


def test_member_frames_flag_must_match_the_ensemble_input(built, tmp_path):
    import shutil

    from emo.fuse.run import RunError, load_run, write_ensemble_config

    ens = tmp_path / "ens"  # a copy: a write that got through must not change the other tests' ensemble
    shutil.copytree(built.ens, ens)
    members = [(d, w) for (d, *_), w in zip(MEMBERS, WEIGHTS)]
    as_vectors = [replace(i, frames=False) if i.name == "mfcc" else i for i in built.inputs]
    with pytest.raises(RunError, match=r"members/0-frames: input mfcc is frame-level in this member but utterance-level in the ensemble"):
        write_ensemble_config(ens, members, as_vectors, {})
    as_frames = [replace(i, frames=True) if i.name == "egemaps" else i for i in built.inputs]
    with pytest.raises(RunError, match=r"members/1-mixed: input egemaps is utterance-level in this member but frame-level in the ensemble"):
        write_ensemble_config(ens, members, as_frames, {})
    assert load_run(ens).frame_inputs == ["mfcc"]  # the refused writes left the config as it was


def test_frame_input_shapes_are_checked(built):
    from emo.fuse.run import RunError, load_run

    run = load_run(built.ens)
    union = built.union
    fr, utt = union.blocks["mfcc"], union.blocks["egemaps"]
    one_layer = [a[:, 1] for a in fr.to_list()]  # (T_i, 3): one layer where the ensemble reads two
    with pytest.raises(RunError, match=r"frames of 'mfcc' are \(T, 1, 3\) per sample, the ensemble needs \(T, 2, 3\)"):
        run.predict({"mfcc": one_layer, "egemaps": utt})
    with pytest.raises(RunError, match=r"frames of 'mfcc' are \(T, 2, 5\) per sample, the ensemble needs \(T, 2, 3\)"):
        run.predict({"mfcc": Frames(np.zeros((len(fr.data), 2, 5), np.float32), fr.starts, fr.lengths), "egemaps": utt})
    with pytest.raises(RunError, match="'mfcc' is a frame-level input of this ensemble"):
        run.predict({"mfcc": fr.mean_pooled(), "egemaps": utt})
    with pytest.raises(RunError, match="frame sequences for 'mfcc' missing"):
        run.predict({"egemaps": utt})
    with pytest.raises(RunError, match="different numbers of samples"):
        run.predict({"mfcc": fr.to_list()[:5], "egemaps": utt})
    with pytest.raises(RunError, match=r"features 'egemaps' have shape"):
        run.predict({"mfcc": fr, "egemaps": utt[:, :1]})


def test_score_applies_an_ensemble_with_a_frame_member(built, tmp_path):
    """emo score's stages on the ensemble run: the frame store is reused with its frames (read as lists
    of (T_i, L, D)), the scored clips' own speaker statistics are computed over its frames, and the
    written probabilities are the ensemble's prediction."""
    from emo.extract.datasets.base import DatasetAdapter, read_csv, read_manifest
    from emo.fuse.run import load_run
    from emo.pipeline import score

    class Stored(DatasetAdapter):  # the manifest's samples (no media: every input comes from the stores)
        name = "stored"

        def load(self):
            return read_manifest(self.root)[1]

    out = tmp_path / "scores.csv"
    summary = score(None, built.ens, out, device="cpu", progress=False, adapter=Stored(built.feats / "mix", dataset_name="mix"),
                    features_dir=built.feats / "mix", warn=lambda m: None)
    assert summary["ok"] == N and summary["reused"] == {"mfcc": N, "egemaps": N} and summary["extracted"] == {"mfcc": 0, "egemaps": 0}
    rows = read_csv(out, [])
    run = load_run(built.ens)
    union = built.union
    assert [r["name"] for r in rows] == union.names and all(r["normalization"].startswith("speaker: own") for r in rows)
    got = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])
    stats = Normalizer("speaker").fit(union.blocks, np.arange(N), union.speakers).speaker
    want = run.predict({"mfcc": union.blocks["mfcc"].to_list(), "egemaps": union.blocks["egemaps"]}, union.speakers,
                       speaker_stats=stats)["probs"]
    assert np.abs(got - want).max() < 2e-6
