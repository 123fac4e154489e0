"""emo.lexicon: NRC-VAD/EmoLex loading, labels -> VAD, vocabulary, k-means classifier, UniVA prior, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emo.exitcodes import ExitCode
from emo.lexicon import classifier as clf_mod
from emo.lexicon import labels as lab
from emo.lexicon import nrc
from emo.lexicon import vocabulary as voc
from emo.lexicon.correlation import correlation_matrix, correlation_prior_loss, label_embedding_prior_loss
from helpers import write_lexicon

# Synthetic lexicon: scores in [0, 1] as published; the canonical words of every label set.
SYNTH = {
    "happy": (0.95, 0.75, 0.70),
    "angry": (0.10, 0.90, 0.65),
    "sad": (0.15, 0.25, 0.20),
    "worried": (0.10, 0.80, 0.30),
    "surprised": (0.80, 0.90, 0.55),
    "fearful": (0.08, 0.55, 0.25),
    "disgusted": (0.05, 0.70, 0.35),
    "bored": (0.15, 0.15, 0.25),
    "calm": (0.85, 0.10, 0.30),
    "contempt": (0.20, 0.60, 0.40),
    "Hello": (0.70, 0.40, 0.50),
    "apple juice": (0.75, 0.20, 0.30),
    "neutral": (0.45, 0.20, 0.35),
}




@pytest.fixture()
def lex_file(tmp_path, monkeypatch):
    monkeypatch.delenv("EMO_LEXICON", raising=False)
    monkeypatch.delenv("EMO_EMOLEX", raising=False)
    monkeypatch.setenv("EMO_HOME", str(tmp_path / "emo_home"))
    return write_lexicon(tmp_path / nrc.VAD_FILENAME, SYNTH)


@pytest.fixture()
def lex(lex_file):
    return nrc.load_nrc_vad(lex_file)


@pytest.fixture()
def emolex_file(tmp_path):
    rows = []
    marks = {"happy": {"joy", "positive"}, "angry": {"anger", "negative"}, "sad": {"sadness"}, "calm": {"positive"}}
    for w in ["happy", "angry", "sad", "calm", "Hello"]:
        for c in nrc.EMOLEX_CATEGORIES:
            rows.append(f"{w}\t{c}\t{int(c in marks.get(w, ()))}")
    p = tmp_path / nrc.EMOLEX_FILENAME
    p.write_text("\n".join(rows) + "\n")
    return p


def scaled(word):
    return 2 * np.asarray(SYNTH[word], dtype=np.float64) - 1


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------


def test_nrc_vad_maps_scores_with_2x_minus_1_and_lowercases(lex):
    assert len(lex) == len(SYNTH)
    assert lex.vad.dtype == np.float32 and lex.vad.shape == (len(SYNTH), 3)
    np.testing.assert_allclose(lex.lookup("happy"), scaled("happy"), atol=1e-6)
    np.testing.assert_allclose(lex.lookup("HELLO"), scaled("Hello"), atol=1e-6)
    np.testing.assert_allclose(lex.lookup("  Apple   Juice "), scaled("apple juice"), atol=1e-6)
    assert lex.lookup("nonexistent") is None
    assert "hello" in lex and "hello world" not in lex
    vad, found = lex.lookup_many(["sad", "zzz"])
    assert found.tolist() == [True, False] and not vad[1].any()


def test_nrc_vad_is_cached_per_path(lex_file):
    assert nrc.load_nrc_vad(lex_file) is nrc.load_nrc_vad(lex_file.parent)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("Wrd\tV\tA\tD\nhappy\t0.1\t0.2\t0.3\n", "line 1"),
        ("Word\tValence\tArousal\tDominance\nhappy\t0.1\t0.2\n", "line 2: expected 4"),
        ("Word\tValence\tArousal\tDominance\nhappy\t0.1\tx\t0.2\n", "not numbers"),
        ("Word\tValence\tArousal\tDominance\nok\t0.1\t0.2\t0.3\nhappy\t1.5\t0.2\t0.3\n", "line 3: scores must lie in [0, 1]"),
        ("Word\tValence\tArousal\tDominance\n", "no entries"),
    ],
)
def test_nrc_vad_format_errors_name_file_and_line(tmp_path, body, fragment):
    p = tmp_path / "bad.txt"
    p.write_text(body)
    with pytest.raises(nrc.LexiconFormatError) as e:
        nrc.load_nrc_vad(p)
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_resolution_order_explicit_env_datadir(tmp_path, monkeypatch):
    a = write_lexicon(tmp_path / "explicit.txt", {"happy": (1, 1, 1)})
    envdir = tmp_path / "env"
    envdir.mkdir()
    write_lexicon(envdir / nrc.VAD_FILENAME, {"happy": (0, 0, 0)})
    home = tmp_path / "home"
    (home / "lexicon").mkdir(parents=True)
    write_lexicon(home / "lexicon" / nrc.VAD_FILENAME, {"happy": (0.5, 0.5, 0.5)})
    monkeypatch.setenv("EMO_HOME", str(home))
    monkeypatch.setenv("EMO_LEXICON", str(envdir))
    assert nrc.load_nrc_vad(a).lookup("happy").tolist() == [1, 1, 1]
    assert nrc.load_nrc_vad().lookup("happy").tolist() == [-1, -1, -1]
    monkeypatch.delenv("EMO_LEXICON")
    assert nrc.load_nrc_vad().lookup("happy").tolist() == [0, 0, 0]
    assert nrc.data_dir() == home / "lexicon"


def test_not_found_lists_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("EMO_LEXICON", str(tmp_path / "nowhere"))
    with pytest.raises(nrc.LexiconNotFoundError) as e:
        nrc.load_nrc_vad()
    msg = str(e.value)
    assert "EMO_LEXICON" in msg and str(tmp_path / "nowhere") in msg and str(tmp_path / "h" / "lexicon") in msg
    with pytest.raises(nrc.LexiconNotFoundError, match="--lexicon"):
        nrc.load_nrc_vad(tmp_path / "missing.txt")


def test_emolex_parse_and_errors(emolex_file, tmp_path):
    em = nrc.load_emolex(emolex_file)
    assert em["happy"] == {"joy", "positive"} and em["hello"] == frozenset()
    bad = tmp_path / "bad_emolex.txt"
    bad.write_text("happy\tjoy\t1\nsad\tgloom\t1\n")
    with pytest.raises(nrc.LexiconFormatError, match="line 2: unknown category"):
        nrc.load_emolex(bad)
    bad.write_text("happy\tjoy\tyes\n")
    with pytest.raises(nrc.LexiconFormatError, match="line 1"):
        nrc.load_emolex(bad)


def test_tokenize_and_text_vad(lex):
    assert nrc.tokenize("Don’t be SAD, happy-go 42!") == ["don't", "be", "sad", "happy", "go"]
    assert nrc.tokenize("") == [] and nrc.tokenize(None) == [] and nrc.tokenize("我很高兴") == []
    vad, cov, n = nrc.text_vad("happy happy sad zzz", lex)
    np.testing.assert_allclose(vad, (2 * scaled("happy") + scaled("sad")) / 3, atol=1e-6)
    assert cov == pytest.approx(3 / 4) and n == 4
    vad, cov, _ = nrc.text_vad("calm's", lex)
    np.testing.assert_allclose(vad, scaled("calm"), atol=1e-6)
    assert cov == 1.0


# ---------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------


def test_label_sets_and_synonyms():
    assert lab.label_set("MER") == ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    assert len(lab.label_set("meld")) == 7 and len(lab.label_set("emodb")) == 7
    assert set(lab.label_set("mead")) >= {"calm", "contempt", "fearful", "disgusted", "surprised"}
    assert lab.canonical_label("Joy") == "happy" and lab.canonical_label("surprise") == "surprised"
    assert lab.canonical_label("happiness") == "happy" and lab.canonical_label("anger") == "angry"
    for name, labels in lab.LABEL_SETS.items():
        canon = [lab.canonical_label(x) for x in labels]
        assert len(set(canon)) == len(canon), name
    with pytest.raises(lab.UnknownLabelError, match="known"):
        lab.canonical_label("hangry")
    with pytest.raises(lab.UnknownLabelError, match="mer"):
        lab.label_set("iemocap9")


def test_label_vad(lex, tmp_path):
    np.testing.assert_allclose(lab.label_vad("joy", lex), scaled("happy"), atol=1e-6)
    np.testing.assert_allclose(lab.label_vad("anger", lex), lex.lookup("angry"))
    # neutral is (0, 0, 0) by definition, not the NRC-VAD of the word "neutral", and needs no lexicon
    z = lab.label_vad("neutral", lexicon=tmp_path / "does-not-exist.txt")
    assert z.dtype == np.float32 and z.shape == (3,) and not z.any()
    small = nrc.load_nrc_vad(write_lexicon(tmp_path / "small.txt", {"happy": (1, 1, 1)}))
    with pytest.raises(KeyError, match="'sad'"):
        lab.label_vad("sadness", small)
    assert lab.labels_vad(["joy", "sad"], lex).shape == (2, 3)


# ---------------------------------------------------------------------------
# vocabulary / open vocabulary
# ---------------------------------------------------------------------------


def make_vocab(words, vad):
    return voc.Vocabulary(words=tuple(words), vad=np.asarray(vad, dtype=np.float32))


def test_nearest_words_sorted_inclusive_and_validated():
    v = make_vocab(["a", "b", "c", "d"], [[0, 0, 0], [0.2, 0, 0], [0, 0.1, 0], [0.9, 0.9, 0.9]])
    hits = voc.nearest_words([0, 0, 0], radius=0.2, vocabulary=v)
    assert [w for w, _ in hits] == ["a", "c", "b"]
    assert [d for _, d in hits] == pytest.approx([0.0, 0.1, 0.2], abs=1e-6)
    assert voc.nearest_words([-1, -1, -1], radius=0.25, vocabulary=v) == []
    with pytest.raises(ValueError, match="3 finite"):
        v.nearest([0, 0])
    with pytest.raises(ValueError, match="radius"):
        v.nearest([0, 0, 0], radius=-1)


def test_count_within_matches_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, size=(300, 3)).astype(np.float32)
    v = make_vocab([f"w{i}" for i in range(300)], pts)
    d = np.linalg.norm(pts[:, None].astype(np.float64) - pts[None], axis=-1)
    np.testing.assert_array_equal(v.count_within(0.3), (d <= 0.3).sum(1) - 1)
    np.testing.assert_array_equal(v.count_within(0.3, points=pts[:5]), (d[:5] <= 0.3).sum(1))


def test_vocabulary_from_words_and_files(lex, tmp_path):
    with pytest.warns(UserWarning, match="zzz"):
        v = voc.vocabulary_from_words(["Happy", "sad", "happy", "zzz"], lex, source="test")
    assert v.words == ("happy", "sad")
    np.testing.assert_allclose(v.vad[1], lex.lookup("sad"))
    with pytest.raises(ValueError, match="none of the 1"):
        voc.vocabulary_from_words(["zzz"], lex)
    f = tmp_path / "words.txt"
    f.write_text("# my words\nhappy, calm\nangry\n")
    assert voc.read_word_list(f, lex).words == ("happy", "calm", "angry")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        voc.read_word_list(tmp_path / "missing.txt", lex)
    with pytest.raises(FileNotFoundError, match="neither"):
        voc.get_vocabulary("nope", lex)


def test_emolex_vocabulary_keeps_words_with_an_emotion(lex, emolex_file):
    v = voc.emotion_vocabulary(lex, emolex_file)
    # calm has only a sentiment mark, Hello none; "apple juice" is not a single word
    assert set(v.words) == {"happy", "angry", "sad"}
    with pytest.raises(ValueError, match="min_emotions"):
        voc.emotion_vocabulary(lex, emolex_file, min_emotions=0)


# ---------------------------------------------------------------------------
# classifier
# ---------------------------------------------------------------------------


def blob_vocabulary(lex, labels, per=15, spread=0.05, seed=0):
    """Words scattered tightly around each label's VAD: k-means must keep every basic emotion in its cluster."""
    rng = np.random.default_rng(seed)
    centres = lab.labels_vad(labels, lex)
    pts = np.concatenate([c + rng.normal(0, spread, size=(per, 3)) for c in centres])
    return make_vocab([f"w{i}" for i in range(len(pts))], np.clip(pts, -1, 1))


def test_classifier_maps_basic_emotions_to_their_clusters(lex):
    labels = lab.label_set("mer")
    c = clf_mod.VADClassifier("mer", vocabulary=blob_vocabulary(lex, labels), lexicon=lex)
    assert c.labels == labels
    assert all(c.own_cluster().values())
    assert c.predict(lab.label_vad("happy", lex)) == "happy"
    assert c.predict(lab.labels_vad(labels, lex)) == labels
    assert c.predict(np.array([0.01, -0.02, 0.0])) == "neutral"
    assert sum(c.cluster_sizes().values()) == 15 * len(labels)
    with pytest.raises(ValueError, match="shape"):
        c.predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        c.predict([np.nan, 0, 0])


def test_own_cluster_reports_a_basic_emotion_whose_cluster_moved(lex):
    labels = ["sad", "happy"]
    c = clf_mod.VADClassifier(labels, vocabulary=blob_vocabulary(lex, labels), lexicon=lex)
    assert c.own_cluster() == {"sad": True, "happy": True}
    c.centres = c.centres[::-1].copy()  # as if fitting had carried each centre to the other emotion
    assert c.own_cluster() == {"sad": False, "happy": False}
    assert c.predict(lab.label_vad("sad", lex)) == "happy"


def test_classifier_rejects_duplicates_and_tiny_vocabularies(lex):
    v = blob_vocabulary(lex, ["happy", "sad"], per=2)
    with pytest.raises(ValueError, match="same canonical"):
        clf_mod.VADClassifier(["joy", "happy"], vocabulary=v, lexicon=lex)
    with pytest.raises(ValueError, match="fewer"):
        clf_mod.VADClassifier("mer", vocabulary=make_vocab(["a"], [[0, 0, 0]]), lexicon=lex)


# ---------------------------------------------------------------------------
# UniVA correlation prior
# ---------------------------------------------------------------------------


def test_correlation_matrix_is_eq8_cosine_of_va(lex):
    labels = ["neutral", "happy", "sad", "surprised"]
    M = correlation_matrix(labels, lex)
    assert M.shape == (4, 4) and M.dtype == np.float32
    np.testing.assert_allclose(M, M.T)
    np.testing.assert_allclose(np.diag(M), 1.0)
    assert M[0, 1:].tolist() == [0, 0, 0]
    h, s = scaled("happy")[:2], scaled("sad")[:2]
    assert M[1, 2] == pytest.approx(h @ s / np.linalg.norm(h) / np.linalg.norm(s), abs=1e-6)
    assert M[1, 3] > 0.9 and M[1, 2] < -0.9  # happy ~ surprised, happy opposite sad


def test_correlation_prior_loss(lex):
    M = torch.tensor(correlation_matrix(["happy", "sad", "surprised"], lex))
    targets = torch.tensor([0, 0])
    right = torch.tensor([[20.0, -20, -20], [20, -20, -20]])
    near = torch.tensor([[-20.0, -20, 20], [-20, -20, 20]])
    far = torch.tensor([[-20.0, 20, -20], [-20, 20, -20]])
    l_right, l_near, l_far = (correlation_prior_loss(x, targets, M) for x in (right, near, far))
    assert float(l_right) == pytest.approx(0.0, abs=1e-6)
    assert float(l_near) == pytest.approx((1 - float(M[0, 2])) / 2, abs=1e-5)
    assert float(l_far) == pytest.approx((1 - float(M[0, 1])) / 2, abs=1e-5)
    assert float(l_right) < float(l_near) < float(l_far) <= 1.0
    logits = torch.zeros(2, 3, requires_grad=True)
    correlation_prior_loss(logits, targets, M).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert float(correlation_prior_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), M)) == 0.0
    with pytest.raises(ValueError, match="targets must lie"):
        correlation_prior_loss(right, torch.tensor([0, 3]), M)
    with pytest.raises(ValueError, match="M must be"):
        correlation_prior_loss(right, targets, torch.eye(2))
    with pytest.raises(ValueError, match="int64"):
        correlation_prior_loss(right, torch.tensor([0.0, 1.0]), M)


def test_label_embedding_prior_loss(lex):
    labels = ["happy", "sad", "angry", "surprised"]
    M = correlation_matrix(labels, lex)
    va = torch.tensor(lab.labels_vad(labels, lex)[:, :2])
    assert float(label_embedding_prior_loss(va, M)) == pytest.approx(0.0, abs=1e-6)
    assert float(label_embedding_prior_loss(torch.eye(4), M)) > 0.1


# ---------------------------------------------------------------------------
# real lexicons (../shared/data/lexicon)
# ---------------------------------------------------------------------------


@pytest.fixture()
def real(shared, monkeypatch):
    d = shared / "lexicon"
    if not (d / nrc.VAD_FILENAME).is_file():
        pytest.skip(f"no NRC-VAD lexicon in {d}")
    monkeypatch.setenv("EMO_LEXICON", str(d))
    monkeypatch.setenv("EMO_EMOLEX", str(d))
    return d


def test_real_lexicon_and_canonical_words(real):
    lex = nrc.load_nrc_vad()
    assert len(lex) == 20007
    assert lex.vad.min() >= -1 and lex.vad.max() <= 1
    np.testing.assert_allclose(lex.lookup("happy"), [1.0, 2 * 0.735 - 1, 2 * 0.772 - 1], atol=1e-6)
    for word in filter(None, lab.CANONICAL_WORD.values()):
        assert word in lex, word
    assert set(voc.AFFECT_TERMS) <= set(lex.words)
    assert len(voc.affect_vocabulary()) == len(voc.AFFECT_TERMS) == 185


def test_real_classifier_keeps_every_basic_emotion_in_its_cluster(real):
    for name in lab.LABEL_SETS:
        c = clf_mod.VADClassifier(name)
        assert all(c.own_cluster().values()), (name, c.own_cluster())
        assert c.predict(lab.labels_vad(c.labels)) == c.labels


def test_real_open_vocabulary(real):
    hits = voc.nearest_words(lab.label_vad("happy"))
    assert hits[0] == ("happy", 0.0)
    assert {"merry", "glad", "cheerful"} <= {w for w, _ in hits}
    assert all(d <= 0.25 for _, d in hits)
    em = voc.emotion_vocabulary()
    assert 4000 < len(em) < 5000 and "happy" in em.words


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


runner = CliRunner()


def cli(*args):
    from emo.cli import app

    return runner.invoke(app, ["lexicon", *map(str, args)])


def test_cli_vad(lex_file):
    r = cli("vad", "happy", "ZZZ", "--lexicon", lex_file)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split("\t")[0] == "happy"
    np.testing.assert_allclose([float(x) for x in lines[0].split("\t")[1:]], scaled("happy"), atol=1e-3)
    assert lines[1] == "ZZZ\tnot in lexicon"


def test_cli_nearest_and_classify(lex_file, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("happy surprised sad angry calm bored worried fearful".replace(" ", "\n"))
    h = scaled("happy")
    r = cli("nearest", *h, "--radius", 0.6, "--lexicon", lex_file, "--vocabulary", words)
    assert r.exit_code == 0, r.output
    got = [line.split("\t") for line in r.output.strip().splitlines()]
    assert got[0] == ["happy", "0.000"] and got[1][0] == "surprised"
    assert [float(d) for _, d in got] == sorted(float(d) for _, d in got)
    s = scaled("sad")
    r = cli("classify", *s, "--labels", "mer", "--lexicon", lex_file, "--vocabulary", words)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "sad"


def test_cli_missing_lexicon_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("EMO_LEXICON", raising=False)
    monkeypatch.setenv("EMO_HOME", str(tmp_path))
    r = cli("vad", "happy")
    assert r.exit_code == ExitCode.ERROR
    assert "NRC-VAD-Lexicon.txt not found" in r.output and "EMO_LEXICON" in r.output
