"""Issue 23: no wrong answer at the seams: protocols stated, fold lists, scoring contract, text
coverage, sweeps over layers of different sizes, MER candidates/submission, degenerate results."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.fuse.eval.protocols import (
    Fold,
    ProtocolError,
    folds_from_lists,
    protocol_record,
    read_fold_lists,
    resolve_protocol,
    speaker_overlap,
)

CLASSES = ["neutral", "angry", "happy"]


def _store(root: Path, dataset: str, encoder: str, layers: dict[str, np.ndarray], names: list[str]) -> None:
    prov = {"encoder": encoder, "source": "synthetic", "weights_hash": "0" * 16, "pooling": "mean", "modality": "audio"}
    w = StoreWriter(root / dataset / f"{encoder}.h5", prov, list(layers), dtype="float32")
    for i, name in enumerate(names):
        w.add(name, Encoded(layers={k: v[i] for k, v in layers.items()}))
    w.finalize()
    w.close()


def _toy(root: Path, n: int = 90, speakers: bool = True, dims=(6,), labels=None) -> list[str]:
    """Dataset 'toy': decodable classes, 6 speakers (or none), one store 'enc' with layers of ``dims``."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % len(CLASSES)
    names = [f"utt{i:03d}" for i in range(n)]
    layers = {}
    for j, d in enumerate(dims):
        x = rng.normal(size=(n, d)).astype(np.float32)
        x[:, 0] += 3.0 * y
        layers[str(j + 1) if j < len(dims) - 1 or len(dims) == 1 else "logits"] = x
    labs = labels or [CLASSES[c] for c in y]
    samples = [Sample(name=nm, media=None, discrete=lab, speaker=(f"s{i % 6}" if speakers else None))
               for i, (nm, lab) in enumerate(zip(names, labs))]
    write_manifest(root / "toy", types.SimpleNamespace(name="toy", root=root, classes=sorted(set(labs))), samples)
    _store(root, "toy", "enc", layers, names)
    return names


# -- 1. protocol -------------------------------------------------------------------------------


def test_auto_protocol_is_speaker_folds_when_speakers_are_known():
    assert resolve_protocol("auto", ["a", "b", "c", "a"])[0] == "speaker"
    p, why = resolve_protocol("auto", ["a", None, "c"])
    assert p == "5" and "1 of 3 samples have no speaker" in why and "speaker-dependent" in why
    assert resolve_protocol("auto", [None, None])[0] == "5"
    assert resolve_protocol("auto", ["a", "b", "a"])[0] == "5"  # 2 speakers: no train/val/test speaker each
    assert resolve_protocol("3", ["a", "b", "c"]) == ("3", "asked for with --folds 3")


def test_speaker_overlap_and_statement():
    spk = ["a", "a", "b", "b", "c", "c"]
    sep = [Fold("f0", np.array([2, 3]), np.array([4, 5]), np.array([0, 1]))]
    mixed = [Fold("f0", np.array([0, 2]), np.array([4]), np.array([1, 3]))]
    assert speaker_overlap(sep, spk)["speaker_independent"] is True
    ov = speaker_overlap(mixed, spk)
    assert ov["speaker_independent"] is False and ov["shared_speakers"] == 2
    assert speaker_overlap(sep, [None] * 6)["speaker_independent"] is None
    rec = protocol_record("5", "5", "asked for with --folds 5", mixed, spk, "global")
    assert rec["statement"].startswith("protocol: SPEAKER-DEPENDENT stratified 5-fold")
    assert rec["kind"] == "stratified 5-fold" and rec["inner_validation"] and rec["normalization"].startswith("global")


def test_emobox_emodb_folds_are_read_and_are_not_speaker_independent(shared):
    """The real EmoBox EmoDB fold lists: 5 folds over all 535 clips, every test fold holds all 10 speakers."""
    d = shared / "emobox" / "emodb"
    rows = list(csv.DictReader(open(shared / "emodb" / "labels.csv", encoding="utf-8")))
    names = [Path(r["file"]).stem for r in rows]
    spk = [r["speaker"] for r in rows]
    lists = read_fold_lists(d, names)
    assert [n for n, _ in lists] == ["fold_1", "fold_2", "fold_3", "fold_4", "fold_5"]
    assert sum(len(m) for _, m in lists) == 535
    folds, untested = folds_from_lists(lists, names, np.arange(len(names)), None, 0)
    assert untested == 0
    ov = speaker_overlap(folds, spk)
    assert ov["speaker_independent"] is False and ov["folds_mixed"] == 5 and ov["shared_speakers"] == 10
    for f in folds:
        assert not set(f.test) & set(f.train) and not set(f.test) & set(f.val)


def test_fold_lists_refuse_unknown_names_and_double_tests(tmp_path):
    p = tmp_path / "folds.csv"
    p.write_text("name,fold\na,1\nb,2\nzz,2\n")
    with pytest.raises(ProtocolError, match="'zz' names no sample"):
        read_fold_lists(p, ["a", "b"])
    p.write_text("name,fold\na,1\na,2\n")
    with pytest.raises(ProtocolError, match="both"):
        read_fold_lists(p, ["a", "b"])
    with pytest.raises(ProtocolError, match="no such file"):
        read_fold_lists(tmp_path / "nope", ["a"])


def test_train_default_states_a_speaker_independent_protocol(tmp_path):
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.train import train

    _toy(tmp_path)
    cfg = TrainConfig(head="linear", seeds=1, epochs=20, batch_size=32, patience=5)
    res, config = train(tmp_path, "toy", ["enc"], cfg, out=tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["protocol"]["folds"] == "speaker" and m["protocol"]["speaker_independent"] is True
    assert m["protocol"]["requested"] == "auto" and m["n_folds"] == 6
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Protocol: speaker-independent leave-one-speaker-out" in report and "training time" in report
    from emo.fuse.eval.report import results_table

    assert results_table(res, "discrete").splitlines()[0].startswith("protocol: speaker-independent")
    res5, _ = train(tmp_path, "toy", ["enc"], cfg, protocol="5")
    assert results_table(res5, "discrete").splitlines()[0].startswith("protocol: SPEAKER-DEPENDENT stratified 5-fold")


def test_train_without_speakers_says_speakers_unknown(tmp_path):
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.train import train

    _toy(tmp_path, speakers=False)
    res, config = train(tmp_path, "toy", ["enc"], TrainConfig(head="linear", seeds=1, epochs=10, batch_size=32))
    assert config["protocol"]["folds"] == "5" and config["protocol"]["speaker_independent"] is None
    assert "speakers unknown" in config["protocol"]["statement"] and "no speakers" in config["protocol"]["reason"]


# -- 6/7. warnings a reader can paste, degenerate results ---------------------------------------


def test_degenerate_warnings_name_the_class():
    from emo.fuse.eval.metrics import classification_metrics, degenerate_warnings

    y = np.array([0, 1, 2, 0, 1, 2])
    m = classification_metrics(y, np.zeros(6, int), 3)
    w = degenerate_warnings(m, CLASSES, "pooled")
    assert any("every one of the 6 rows is predicted 'neutral'" in x for x in w) and any("chance-level UAR" in x for x in w)
    assert degenerate_warnings(classification_metrics(y, y, 3), CLASSES) == []


def test_fold_warnings_name_classes():
    from emo.fuse.eval.protocols import fold_warnings

    y = np.array([0, 0, 1, 1, 2, 2])
    f = Fold("f", np.array([0, 1, 2, 3]), np.array([0]), np.array([4, 5]))
    w = fold_warnings([f], y, 3, CLASSES)
    assert "['happy']" in w[0] and "['angry', 'happy']" in w[1]


def test_univa_eta_minimum_is_a_constant_class_on_meld(shared):
    """UniVA eq. 9 on MELD's classes (NRC-VAD): one-hot predictions of joy, neutral or surprise make η
    negative (uniform: 0), and gradient descent on η alone ends at a one-hot prediction."""
    from emo.extract.datasets.meld import MELD_CLASSES
    from emo.fuse.methods.semi import correlation_for
    from emo.fuse.methods.univa import eta_vertex_minimum
    from emo.lexicon.correlation import correlation_prior_loss

    M, _ = correlation_for(list(MELD_CLASSES), shared / "lexicon" / "NRC-VAD-Lexicon.txt")
    vm = eta_vertex_minimum(M, MELD_CLASSES)
    assert vm["collapses"] and vm["argmin"] == "joy" and vm["eta_min"] < -4
    assert set(vm["negative"]) == {"joy", "neutral", "surprise"} and vm["one_hot"]["neutral"] < -3
    import torch

    k = list(MELD_CLASSES).index("joy")
    one = torch.zeros(1, len(MELD_CLASSES), dtype=torch.float64)
    one[0, k] = 1
    assert float(correlation_prior_loss(one, M)) == pytest.approx(vm["eta_min"], abs=1e-4)
    uniform = torch.full((1, len(MELD_CLASSES)), 1 / len(MELD_CLASSES), dtype=torch.float64)
    assert float(correlation_prior_loss(uniform, M)) == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    z = torch.randn(1, len(MELD_CLASSES), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(2000):
        loss = correlation_prior_loss(torch.softmax(z, -1), M)
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = torch.softmax(z, -1)[0].detach()
    assert float(p.max()) > 0.99 and MELD_CLASSES[int(p.argmax())] in vm["negative"]  # a one-class prediction


def test_report_paths_relative_and_ensemble_report(tmp_path):
    from emo.fuse.eval.report import ensemble_report_markdown, relative_paths

    run = tmp_path / "runs" / "x"
    assert relative_paths(["emo", "--out", str(run), f"--features-dir={tmp_path / 'f'}", "--dataset"], run) == \
        ["emo", "--out", ".", "--features-dir=../../f", "--dataset"]
    res = {"metric": "uar", "runs": ["/a/r1", "/a/r2"], "weights": {"/a/r1": 0.3, "/a/r2": 0.7},
           "validation": {"nested": True, "runs": {"/a/r1": {"uar": 0.5}, "/a/r2": {"uar": 0.6}}, "fused": {"uar": 0.62}},
           "interval": {"metric": "uar", "level": 0.95, "n_boot": 1000, "n_groups": 10, "estimate": 0.62, "low": 0.5, "high": 0.7},
           "protocol": {"statement": "protocol: speaker-independent leave-one-speaker-out"}}
    text = ensemble_report_markdown(res, "/a/ens")
    assert "per held-out group" in text and "1.000" not in text and "[0.5000, 0.7000]" in text and "`../r1`" in text


# -- 4. sweeps ------------------------------------------------------------------------------------


def test_sized_windows_never_mix_sizes():
    from emo.fuse.eval.sweep import SweepError, sized_windows

    dims = {"1": 16, "2": 32, "3": 64, "4": 128, "logits": 7}
    assert sized_windows(list(dims), dims) == [("1",), ("2",), ("3",), ("4",), ("logits",)]
    clip = {str(i): 1024 for i in range(4)} | {"proj": 768}
    assert sized_windows(list(clip), clip, 2) == [("0", "1"), ("1", "2"), ("2", "3")]
    with pytest.raises(SweepError, match="no 2 consecutive layers of one size"):
        sized_windows(list(dims), dims, 2)


def test_sweep_reads_layers_of_different_sizes_and_refuses_rare_classes(tmp_path):
    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.sweep import run_sweep

    _toy(tmp_path, dims=(4, 8, 3))
    cfg = TrainConfig(head="linear", seeds=1, epochs=10, batch_size=32, optimizer="lbfgs")
    s = run_sweep(tmp_path, "toy", "enc", cfg=cfg, protocol="3", out=tmp_path / "sw", progress=False)
    assert [r["window"] for r in s["rows"]] == ["1", "2", "logits"]
    assert s["protocol_record"]["kind"] == "stratified 3-fold" and s["protocol_record"]["speaker_independent"] is False
    labels = [CLASSES[i % 3] for i in range(89)] + ["angyr"]
    _toy(tmp_path / "rare", labels=labels)
    with pytest.raises(ValueError, match="angyr"):
        run_sweep(tmp_path / "rare", "toy", "enc", cfg=cfg, protocol="3", out=tmp_path / "sw2", progress=False)


# -- 2. scoring contract ------------------------------------------------------------------------


def test_contract_differences_name_what_differs():
    from emo.fuse.eval.contract import audio_source, contract_differences

    c = {"inputs": {"egemaps": {"modality": "audio", "audio_source": "wav"},
                    "fer": {"modality": "face", "face_detector": "mtcnn"},
                    "nrc_vad": {"modality": "text", "text_column": "english"}}}
    d = contract_differences(c, audio="media", face_detector="haar", text_column="chinese")
    assert len(d) == 3 and "audio/NAME.wav" in d[0] and "'mtcnn'" in d[1] and "'english'" in d[2]
    assert contract_differences(c, audio="wav", face_detector="mtcnn", text_column="english") == []
    s = [Sample("a", Path("a.mp4"), audio=Path("a.wav")), Sample("b", Path("b.mp4"))]
    assert audio_source(s) == "mixed" and audio_source(s[:1]) == "wav" and audio_source(s[1:]) == "media"


def test_speaker_normalization_own_statistics_fallback_or_refusal():
    from emo.fuse.run import RunError
    from emo.pipeline import speaker_normalization

    run = types.SimpleNamespace(config={"normalization": {"mode": "speaker"}}, path=Path("run"))
    samples = [Sample(f"x{i}", None) for i in range(7)]
    spk = {f"x{i}": ("A" if i < 5 else ("B" if i == 5 else None)) for i in range(7)}
    with pytest.raises(RunError, match="2 of 7 clips have no usable speaker statistics"):
        speaker_normalization(run, samples, spk, "refuse", 5)
    lab = speaker_normalization(run, samples, spk, "global", 5)
    assert lab["x0"] == "speaker: own statistics of A (5 clips)"
    assert lab["x5"].startswith("fallback global: speaker B has 1 clip") and lab["x6"] == "fallback global: speaker unknown"
    run.config = {"normalization": {"mode": "global"}}
    assert set(speaker_normalization(run, samples, {}, "refuse", 5).values()) == {"global: training-fold statistics"}


def test_score_speaker_run_uses_own_statistics(tmp_path):
    """A --normalize speaker run: predictions with own statistics equal a run on pre-normalised
    features; unknown speakers refused; the fallback labelled in every row."""
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.data import Normalizer
    from emo.fuse.run import RunError, load_run
    from emo.fuse.training.train import train
    from emo.pipeline import ScoreFeatures, ScoreJob, predict_scores, speaker_normalization

    names = _toy(tmp_path)
    train(tmp_path, "toy", ["enc"], TrainConfig(head="linear", seeds=1, epochs=30, batch_size=32, normalize="speaker", optimizer="lbfgs"),
          out=tmp_path / "run")
    run = load_run(tmp_path / "run")
    from emo.extract.store import FeatureStore

    x = FeatureStore(tmp_path / "toy" / "enc.h5").read(["1"], names[:20])
    samples = [Sample(n, None) for n in names[:20]]
    spk = {n: ("new" if i < 10 else "other") for i, n in enumerate(names[:20])}
    norm = speaker_normalization(run, samples, spk, "refuse", 5)
    job = ScoreJob(run, samples, None, {}, {}, {}, {}, 2.0, "mtcnn", {"enc": "audio"}, spk, norm)
    got = ScoreFeatures(names[:20], {"enc": x}, [], {}, {}, {}, {})
    p = predict_scores(job, got)["probs"]
    own = Normalizer("speaker").fit({"enc": x}, np.arange(20), [spk[n] for n in names[:20]]).speaker
    ref = run.predict({"enc": x}, speakers=[spk[n] for n in names[:20]], speaker_stats=own)["probs"]
    np.testing.assert_allclose(p, ref, rtol=1e-6)
    norm = run.normalizer(0)  # the old behaviour (each fold's global statistics) standardises these clips differently
    spk_list = [spk[n] for n in names[:20]]
    import copy

    own_norm = copy.copy(norm)
    own_norm.speaker = own
    assert not np.allclose(own_norm.transform({"enc": x}, spk_list)["enc"], norm.transform({"enc": x}, spk_list)["enc"])
    with pytest.raises(RunError, match="--speaker-fallback global"):
        speaker_normalization(run, samples, {}, "refuse", 5)


# -- 3. text coverage -------------------------------------------------------------------------


def test_nrc_vad_zero_coverage_names_the_column(tmp_path):
    from emo.extract.encoders.nrc_vad import NRCVADEncoder
    from emo.extract.types import EncoderError

    lex = tmp_path / "lex.txt"
    lex.write_text("Word\tValence\tArousal\tDominance\nhappy\t0.9\t0.6\t0.7\n")
    enc = NRCVADEncoder("nrc_vad", lexicon=str(lex))
    mer = types.SimpleNamespace(name="mer2026", options={}, track="1")
    with pytest.raises(EncoderError, match=r"column 'chinese'.*--text-column english"):
        enc.check_dataset([Sample("a", None, transcript="我今天很高兴"), Sample("b", None, transcript="")], mer)
    ok = enc.check_dataset([Sample("a", None, transcript="so happy"), Sample("b", None, transcript="xyzzy")],
                           types.SimpleNamespace(name="folder", options={"text_column": "english"}))
    assert ok == {"transcripts": 2, "covered": 1, "column": "english"}
    assert enc.check_dataset([Sample("a", None, transcript="")], mer)["transcripts"] == 0  # nothing to cover: no error


def test_make_features_passes_text_column_and_name():
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(["make", "--no-print-directory", "-n", "features", "DATASET=mer2026", "MODELS=nrc_vad", "TEXT_COLUMN=english", "NAME=mer2026-t2",
                        "VENV=/nonexistent"], capture_output=True, text=True, cwd=root)
    last = r.stdout.strip().splitlines()[-1]
    assert "--text-column english" in last and "--name mer2026-t2" in last


# -- 5. MER candidates and the challenge file -----------------------------------------------------


def test_subset_defaults_and_submission(tmp_path):
    from emo.pipeline import resolve_subset, write_submission

    assert resolve_subset("mer2026", None) == "unlabeled" and resolve_subset("mer2025", "train") == "labeled"
    assert resolve_subset("mer2024", None) == "all" and resolve_subset(None, None) is None
    with pytest.raises(ValueError, match="--subset applies"):
        resolve_subset("folder", "candidates")
    scores = tmp_path / "p.csv"
    scores.write_text("name,relpath,path,split,status,flags,normalization,pred\n"
                      "s1,,,candidate,ok,,global,happy\ns2,,,train,ok,,global,sad\ns3,,,candidate,ok,,global,worried\n")
    write_submission(scores, tmp_path / "submission.csv", "1")
    rows = list(csv.reader(open(tmp_path / "submission.csv")))
    assert rows == [["name", "discrete"], ["s1", "happy"], ["s3", "worried"]]
    scores.write_text("name,relpath,path,split,status,flags,normalization,pred\ns1,,,candidate,ok,,global,disgust\n")
    with pytest.raises(ValueError, match="not MER classes"):
        write_submission(scores, tmp_path / "s2.csv", "1")
    scores.write_text("name,relpath,path,split,status,flags,normalization,labels\ns1,,,candidate,ok,,global,happy;joyful\n")
    write_submission(scores, tmp_path / "s3.csv", "2")
    assert list(csv.reader(open(tmp_path / "s3.csv"))) == [["name", "openset"], ["s1", "happy, joyful"]]
