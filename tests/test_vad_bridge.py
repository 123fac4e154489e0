"""The NRC-VAD bridge for training and scoring: label -> VAD targets, VAD -> k-means label + words."""

from __future__ import annotations

import numpy as np
import pytest
from emo.lexicon.bridge import VADBridge, check_vad, label_targets
from emo.lexicon.labels import UnknownLabelError
from emo.lexicon.vocabulary import vocabulary_from_words
from helpers import write_lexicon

# published [0, 1] scores; emo maps them with 2x - 1
LEX = {
    "happy": (0.95, 0.75, 0.70), "angry": (0.10, 0.90, 0.65), "sad": (0.15, 0.25, 0.20),
    "worried": (0.10, 0.80, 0.30), "surprised": (0.80, 0.90, 0.55),
    "joyful": (0.93, 0.70, 0.68), "glad": (0.92, 0.66, 0.66), "furious": (0.05, 0.95, 0.70),
    "gloomy": (0.12, 0.20, 0.25), "anxious": (0.12, 0.85, 0.30),
}


@pytest.fixture
def lex(tmp_path):
    from emo.lexicon.nrc import load_nrc_vad

    return load_nrc_vad(write_lexicon(tmp_path / "NRC-VAD-Lexicon.txt", LEX))


def test_label_targets_follow_the_paper(lex):
    classes = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    y = label_targets(["happy", None, "neutral", "surprise"], classes, lex)
    assert y.dtype == np.float32 and y.shape == (4, 3)
    np.testing.assert_allclose(y[0], [0.9, 0.5, 0.4], atol=1e-6)  # 2x - 1 of happy
    assert np.isnan(y[1]).all()
    np.testing.assert_array_equal(y[2], [0, 0, 0])  # neutral = origin
    np.testing.assert_allclose(y[3], [0.6, 0.8, 0.1], atol=1e-6)  # surprise -> surprised
    with pytest.raises(ValueError, match="not one of the classes"):
        label_targets(["joy"], classes, lex)
    with pytest.raises(UnknownLabelError):
        label_targets(["confused"], ["confused"], lex)


def test_check_vad_refuses_out_of_range():
    np.testing.assert_array_equal(check_vad([0.1, -1, 1]), [0.1, -1, 1])
    with pytest.raises(ValueError, match=r"valence 3 is outside the accepted range \[-1, 1\]"):
        check_vad([3, 0, 0])
    with pytest.raises(ValueError, match="3 finite numbers"):
        check_vad([0, float("nan"), 0])


def test_decode_labels_and_words(lex):
    vocab = vocabulary_from_words(["happy", "joyful", "glad", "furious", "angry", "sad", "gloomy", "anxious", "worried"], lex)
    bridge = VADBridge(["neutral", "angry", "happy", "sad"], vocabulary=vocab, radius=0.25, lexicon=lex)
    pts = np.array([[0.9, 0.5, 0.4], [-0.85, 0.85, 0.35], [-0.72, -0.55, -0.55], [0.0, 0.0, 0.0], [1.2, 0.5, 0.4]])
    d = bridge.decode(pts)
    assert d.labels[:3] == ["happy", "angry", "sad"]
    # the origin gets the label of its nearest fitted centre (no word lies near it, so the
    # neutral centre has moved during fitting: k-means, not nearest-class-point)
    c = bridge.classifier.centres
    assert d.labels[3] == bridge.classes[int(np.argmin((c ** 2).sum(1)))]
    assert d.outside == 1
    # words within 0.25 of happy (0.9, 0.5, 0.4), nearest first: happy 0, joyful ~0.115, glad ~0.206
    assert [w for w, _ in d.words[0]] == ["happy", "joyful", "glad"]
    dist = [x for _, x in d.words[0]]
    assert dist == sorted(dist) and dist[0] == pytest.approx(0.0, abs=1e-6)
    assert dist[1] == pytest.approx(np.linalg.norm(np.array([0.86, 0.4, 0.36]) - [0.9, 0.5, 0.4]), abs=1e-5)
    assert d.words[3] == []  # nothing near the origin in this vocabulary
    info = bridge.describe()
    assert info["radius"] == 0.25 and info["vocabulary_size"] == 9 and len(info["centres"]) == 4
    with pytest.raises(ValueError, match="radius"):
        VADBridge(["neutral", "happy"], vocabulary=vocab, radius=-1, lexicon=lex)


def test_lexicon_commands_refuse_out_of_range(tmp_path):
    from typer.testing import CliRunner

    from emo.exitcodes import ExitCode
    from emo.lexicon.cli import app

    lex = write_lexicon(tmp_path / "NRC-VAD-Lexicon.txt", LEX)
    for cmd in (["nearest", "--lexicon", str(lex), "0.2", "1.5", "0.1"], ["classify", "--lexicon", str(lex), "--", "-3", "0.1", "0.1"]):
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == ExitCode.ERROR, r.output
        assert "outside the accepted range [-1, 1]" in r.output


def test_macro_precision_recall_hand_computed():
    from emo.fuse.eval.metrics import classification_metrics

    # classes 0, 1, 2 present; true [0 0 1 1 2], pred [0 1 1 1 0]
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 4)
    # precision: c0 1/2, c1 2/3, c2 0 (never predicted) -> mean 7/18; recall: 1/2, 1, 0 -> 1/2
    assert m["precision_macro"] == pytest.approx(7 / 18) and m["recall_macro"] == pytest.approx(0.5) == m["uar"]


def test_score_bridge_choice(tmp_path, monkeypatch, lex):
    from emo.pipeline import vad_bridge

    notes = []
    assert vad_bridge({"task": "discrete"}, None, 0.25, "affect", None, notes.append) is None
    monkeypatch.delenv("EMO_LEXICON", raising=False)
    monkeypatch.setenv("EMO_HOME", str(tmp_path / "home"))
    # a VAD run without any lexicon: no bridge, and a note that says why (the VAD columns are still written)
    assert vad_bridge({"task": "vad"}, None, 0.25, "affect", None, notes.append) is None
    assert "no NRC-VAD lexicon" in notes[-1]
    words = tmp_path / "words.txt"
    words.write_text("happy, joyful, glad, furious, angry, sad, gloomy\n", encoding="utf-8")
    cfg = {"task": "discrete+vad", "classes": ["neutral", "angry", "happy", "sad"],
           "vad_targets": {"source": "lexicon", "lexicon": str(lex.path), "classes": ["neutral", "angry", "happy", "sad"]}}
    b = vad_bridge(cfg, None, 0.3, str(words), None, notes.append)  # the run's own lexicon is found
    assert b is not None and b.classes == ["neutral", "angry", "happy", "sad"] and b.radius == 0.3
    assert vad_bridge(cfg, lex.path, 0.3, str(words), "neutral,happy", notes.append).classes == ["neutral", "happy"]
