"""`emo score` in a researcher's workflow (issue 10): transcripts (--transcripts CSV or --dataset/--root),
a warning when the run's text modality is missing, flags in the output CSV, reuse of existing stores
(--features-dir) when their provenance matches, dataset-style names with the relative path in its own column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emo.cli import app

from helpers import write_lexicon

POS = ["joy", "love", "happy"]
NEG = ["grief", "fear", "angry"]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """24 tones (class = high/low pitch) with transcripts whose words carry the same class, eGeMAPS +
    NRC-VAD features, and a small trained run."""
    from scipy.io import wavfile

    from emo.extract.datasets.folder import Folder
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec

    tmp = tmp_path_factory.mktemp("score")
    lex = write_lexicon(tmp / "NRC-VAD-Lexicon.txt", {**{w: (0.9, 0.6, 0.6) for w in POS}, **{w: (0.1, 0.7, 0.3) for w in NEG}})
    data = tmp / "clips"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sr, rows, text = 16000, [], []
    for i in range(24):
        hi = i % 2 == 1
        f0 = rng.uniform(600, 900) if hi else rng.uniform(150, 250)
        t = np.arange(int(0.6 * sr)) / sr
        x = 0.4 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.normal(size=t.size)
        sub = data / "sub" if i < 4 else data  # a sub-folder: names stay file stems, relpath keeps the folder
        wavfile.write(sub / f"t{i:02d}.wav", sr, (x * 32767).astype(np.int16))
        words = " ".join(rng.choice(POS if hi else NEG, 2))
        rows.append(f"t{i:02d},{'high' if hi else 'low'},{words}")
        text.append(f"t{i:02d},{words}")
    (data / "labels.csv").write_text("name,discrete,transcript\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "transcripts.csv").write_text("name,transcript\n" + "\n".join(text) + "\nnot_a_file,joy\n", encoding="utf-8")
    feats = tmp / "features"
    specs = [parse_encoder_spec("egemaps"), parse_encoder_spec("nrc_vad")]
    Extractor(specs, out=feats, progress=False, encoder_options={"lexicon": str(lex)}).run(Folder(data, dataset_name="folder"))
    run = tmp / "run"
    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "folder", "--features-dir", str(feats), "--features", "egemaps",
                                 "--features", "nrc_vad", "--head", "mlp", "--folds", "3", "--normalize", "global",
                                 "--epochs", "5", "--patience", "5", "--hidden", "8", "--seeds", "1", "--out", str(run)])
    assert r.exit_code == 0, r.output
    return tmp, data, lex, feats, run


def _score(*args):
    return CliRunner().invoke(app, ["score", *map(str, args), "--no-progress", "--device", "cpu"])


def test_files_without_transcripts_warn_and_flag(trained, tmp_path):
    tmp, data, lex, _feats, run = trained
    out = tmp_path / "p.csv"
    r = _score(data, "--run", run, "--out", out, "--lexicon", lex)
    assert r.exit_code == 0, r.output
    assert "no file has a transcript" in r.output and "--transcripts" in r.output
    rows = _read(out)
    assert len(rows) == 24 and all(x["status"] == "ok" and x["flags"] == "no_text" for x in rows)
    by = {x["name"]: x for x in rows}
    assert "t00" in by and "clips/t00" not in by  # the dataset naming rule: file stem
    assert by["t00"]["relpath"] == "clips/sub/t00.wav" and by["t10"]["relpath"] == "clips/t10.wav"
    assert list(rows[0])[:8] == ["name", "relpath", "path", "split", "status", "flags", "normalization", "pred"]


def test_transcripts_csv_and_dataset_adapter(trained, tmp_path):
    tmp, data, lex, _feats, run = trained
    a = tmp_path / "a.csv"
    r = _score(data, "--run", run, "--out", a, "--lexicon", lex, "--transcripts", tmp / "transcripts.csv")
    assert r.exit_code == 0, r.output
    assert "no file has a transcript" not in r.output and "1 name(s) match no scored file" in r.output
    rows_a = _read(a)
    assert all(x["flags"] == "" for x in rows_a)
    b = tmp_path / "b.csv"
    r = _score("--dataset", "folder", "--name", "folder", "--root", data, "--run", run, "--out", b, "--lexicon", lex)
    assert r.exit_code == 0, r.output
    rows_b = _read(b)
    assert {x["name"] for x in rows_b} == {f"sub/t{i:02d}" for i in range(4)} | {f"t{i:02d}" for i in range(4, 24)}
    assert all(x["flags"] == "" for x in rows_b)
    # the same transcripts either way: the same predictions
    pa = {x["relpath"].removeprefix("clips/"): x["prob_high"] for x in rows_a}
    pb = {x["relpath"]: x["prob_high"] for x in rows_b}
    assert pa == pb
    r = _score(data, "--dataset", "folder", "--name", "folder", "--root", data, "--run", run)
    assert r.exit_code == 2 and "not both" in r.output


def test_features_dir_reuses_matching_stores(trained, tmp_path):
    from emo.pipeline import score

    tmp, data, lex, feats, run = trained
    fresh = score(None, run, tmp_path / "fresh.csv", device="cpu", progress=False, lexicon=lex,
                  adapter=_folder(data), warn=lambda m: None)
    assert fresh["reused"] == {"egemaps": 0, "nrc_vad": 0} and fresh["extracted"] == {"egemaps": 24, "nrc_vad": 24}
    (data / "new.wav").symlink_to(data / "t05.wav")  # one file the stores do not hold
    try:
        r = _score("--dataset", "folder", "--name", "folder", "--root", data, "--features-dir", feats, "--run", run, "--out",
                   tmp_path / "reuse.csv", "--lexicon", lex)
        assert r.exit_code == 0, r.output
        assert "48 encoder x file features reused" in r.output
        got = {x["name"]: x for x in _read(tmp_path / "reuse.csv")}
        want = {x["name"]: x for x in _read(tmp_path / "fresh.csv")}
        assert len(got) == 25 and got["new"]["status"] == "ok" and got["new"]["relpath"] == "new.wav"
        assert got["new"]["flags"] == "no_text" and "1 of 25 files have no transcript" in r.output  # not in labels.csv
        for n, x in want.items():
            assert abs(float(got[n]["prob_high"]) - float(x["prob_high"])) < 1e-4, n
    finally:
        (data / "new.wav").unlink()
    # another lexicon: the nrc_vad store no longer matches the run and is not reused
    other = write_lexicon(tmp_path / "NRC-VAD-Lexicon.txt", {w: (0.5, 0.5, 0.5) for w in POS + NEG})
    fake = tmp_path / "other" / "folder"
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec

    Extractor([parse_encoder_spec("nrc_vad")], out=tmp_path / "other", progress=False,
              encoder_options={"lexicon": str(other)}).run(_folder(data))
    notes: list[str] = []
    res = score(None, run, tmp_path / "x.csv", device="cpu", progress=False, lexicon=lex, adapter=_folder(data),
                features_dir=fake, warn=notes.append)
    assert res["reused"]["nrc_vad"] == 0 and any("nrc_vad.h5: not reused (" in n for n in notes), notes


def test_reused_store_rows_are_read_once(trained, tmp_path, monkeypatch):
    """The finiteness check of a reused store and the scoring share one read of its rows."""
    import emo.pipeline as pipeline
    from emo.pipeline import score

    tmp, data, lex, feats, run = trained
    calls: list[tuple[str, int]] = []
    real = pipeline._read
    monkeypatch.setattr(pipeline, "_read", lambda st, inp, names: calls.append((inp.name, len(names))) or real(st, inp, names))
    res = score(None, run, tmp_path / "once.csv", device="cpu", progress=False, lexicon=lex, adapter=_folder(data),
                features_dir=feats / "folder", warn=lambda m: None)
    assert res["reused"]["egemaps"] == 24
    assert [c for c in calls if c[0] == "egemaps"] == [("egemaps", 24)], calls


def _folder(root):
    from emo.extract.datasets import get_dataset

    return get_dataset("folder", str(root), dataset_name="folder")
