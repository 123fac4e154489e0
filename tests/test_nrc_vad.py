"""The model-free ``nrc_vad`` text encoder."""

from __future__ import annotations

import numpy as np
import pytest

from emo.extract.encoders.base import FLAGS, EncoderError, TextInput
from emo.extract.encoders.nrc_vad import NRCVADEncoder
from emo.extract.layers import LayerSpecError
from emo.extract.registry import parse_encoder_spec
from helpers import write_lexicon

ENTRIES = {"happy": (0.9, 0.7, 0.6), "sad": (0.1, 0.3, 0.2), "mother": (0.8, 0.4, 0.5), "don't": (0.4, 0.5, 0.5)}


@pytest.fixture()
def lex_path(tmp_path, monkeypatch):
    monkeypatch.delenv("EMO_LEXICON", raising=False)
    monkeypatch.setenv("EMO_HOME", str(tmp_path / "home"))
    return write_lexicon(tmp_path / "NRC-VAD-Lexicon.txt", ENTRIES)


def vad(word):
    return 2 * np.asarray(ENTRIES[word]) - 1


def test_encoder_contract(lex_path):
    enc = NRCVADEncoder("nrc_vad", lexicon=str(lex_path))
    assert enc.modality == "text" and enc.store_dtype == "float32"
    assert enc.layers == ["vad"] == enc.available_layers()
    assert enc.dims() == {"vad": 4}
    assert enc.cost(TextInput("x", "happy day")) == 1
    assert "no_text" in FLAGS


def test_mean_vad_and_coverage(lex_path):
    enc = NRCVADEncoder("nrc_vad", lexicon=str(lex_path))
    out = enc.encode([
        TextInput("a", "Happy, happy... SAD day!"),
        TextInput("b", "My mother's cat"),
        TextInput("c", "I don’t know"),
    ])
    assert len(out) == 3
    a = out[0].layers["vad"]
    assert a.dtype == np.float32 and a.shape == (4,)
    np.testing.assert_allclose(a[:3], (2 * vad("happy") + vad("sad")) / 3, atol=1e-6)
    assert a[3] == pytest.approx(3 / 4) and out[0].flags == set()
    b = out[1].layers["vad"]
    np.testing.assert_allclose(b[:3], vad("mother"), atol=1e-6)  # possessive 's stripped
    assert b[3] == pytest.approx(1 / 3)
    np.testing.assert_allclose(out[2].layers["vad"][:3], vad("don't"), atol=1e-6)  # curly apostrophe


@pytest.mark.parametrize("text", ["", "   ", None, "我今天很高兴", "xyzzy plugh", "123 !!!"])
def test_no_text_gives_zeros_and_flag(lex_path, text):
    enc = NRCVADEncoder("nrc_vad", lexicon=str(lex_path))
    (e,) = enc.encode([TextInput("x", text)])
    # issue 23: no_text means an empty transcript only; a transcript without lexicon words is zeros, coverage 0
    assert e.flags == ({"no_text"} if not (text or "").strip() else set())
    v = e.layers["vad"]
    assert v.shape == (4,) and v.dtype == np.float32 and not v.any()


def test_batch_order_is_kept(lex_path):
    enc = NRCVADEncoder("nrc_vad", lexicon=str(lex_path))
    texts = ["sad", "", "happy", "sad happy"]
    out = enc.encode([TextInput(str(i), t) for i, t in enumerate(texts)])
    vals = [o.layers["vad"][0] for o in out]
    assert vals == pytest.approx([vad("sad")[0], 0.0, vad("happy")[0], (vad("sad")[0] + vad("happy")[0]) / 2])
    assert ["no_text" in o.flags for o in out] == [False, True, False, False]


def test_registry_build_and_provenance(lex_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_LEXICON", str(lex_path.parent))
    enc = parse_encoder_spec("nrc_vad").build()
    prov = enc.provenance()
    assert prov["modality"] == "text" and prov["lexicon"] == str(lex_path.resolve())
    assert len(prov["weights_hash"]) == 16
    other = write_lexicon(tmp_path / "other.txt", {**ENTRIES, "happy": (0.5, 0.5, 0.5)})
    enc2 = parse_encoder_spec("nrc_vad").build(lexicon=str(other))
    assert enc2.provenance()["weights_hash"] != prov["weights_hash"]
    assert enc2.encode([TextInput("x", "happy")])[0].layers["vad"][0] == pytest.approx(0.0)


def test_errors(lex_path, tmp_path):
    with pytest.raises(LayerSpecError, match="nrc_vad"):
        NRCVADEncoder("nrc_vad", layers=["3"], lexicon=str(lex_path))
    with pytest.raises(EncoderError, match="not found"):
        NRCVADEncoder("nrc_vad", lexicon=str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("not a lexicon\n")
    with pytest.raises(EncoderError, match="bad.txt"):
        NRCVADEncoder("nrc_vad", lexicon=str(bad))


def test_real_meld_transcripts(shared, monkeypatch):
    """On real MELD dev utterances: sensible coverage, joy reads more positive than sadness."""
    import pandas as pd

    lex_dir = shared / "lexicon"
    csv = shared / "text" / "meld" / "dev_sent_emo.csv"
    if not (lex_dir / "NRC-VAD-Lexicon.txt").is_file() or not csv.is_file():
        pytest.skip("needs lexicon/ and text/meld/ in the shared data")
    monkeypatch.setenv("EMO_LEXICON", str(lex_dir))
    df = pd.read_csv(csv)
    enc = parse_encoder_spec("nrc_vad").build()
    out = enc.encode([TextInput(str(i), t) for i, t in enumerate(df["Utterance"])])
    x = np.stack([o.layers["vad"] for o in out])
    assert x.shape == (len(df), 4) and np.isfinite(x).all()
    assert (np.abs(x[:, :3]) <= 1).all() and ((x[:, 3] >= 0) & (x[:, 3] <= 1)).all()
    flagged = np.array(["no_text" in o.flags for o in out])
    assert (x[flagged] == 0).all() and not flagged.any()  # every MELD utterance has text: no_text = empty only
    uncovered = x[:, 3] == 0  # utterances with no lexicon word ("Okay!"): zeros, coverage 0, no flag
    assert (x[uncovered] == 0).all() and uncovered.mean() < 0.5
    valence = pd.Series(x[:, 0]).groupby(df["Emotion"].to_numpy()).mean()
    assert valence["joy"] > valence["sadness"] and valence["joy"] > valence["disgust"]


def test_extract_cli_lexicon_option(lex_path, tmp_path):
    """`emo extract --lexicon PATH` (what nrc_vad's error tells the user to pass) reaches the encoder."""
    from typer.testing import CliRunner

    from emo.cli import app
    from emo.extract.store import FeatureStore

    root = tmp_path / "ds"
    root.mkdir()
    (root / "a.wav").write_bytes(b"")  # the text encoder never decodes media
    (root / "labels.csv").write_text("name,transcript\na,happy mother\n", encoding="utf-8")
    base = ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "nrc_vad", "--no-progress",
            "--device", "cpu"]
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "f1")])
    assert r.exit_code == 1 and "Pass --lexicon PATH" in r.output, r.output
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "f2"), "--lexicon", str(lex_path)])
    assert r.exit_code == 0, r.output
    v = FeatureStore(tmp_path / "f2" / "folder" / "nrc_vad.h5").read_layer("vad", ["a"])[0]
    np.testing.assert_allclose(v[:3], (vad("happy") + vad("mother")) / 2, atol=1e-6)
