"""Trainer glue of issue 14: multi-label targets, unlabelled rows (UniVA) only in training parts."""

from __future__ import annotations

import numpy as np

from emo.extract.datasets.base import Sample
from emo.fuse.eval.protocols import Fold
from emo.fuse.methods.semi import multilabel_evaluate, multilabel_targets, prepare_semi
from helpers import write_lexicon


def test_multilabel_targets_use_the_pool_words():
    s = [Sample("a", None, emotions=["happy", "surprised"]), Sample("b", None, discrete="sad"),
         Sample("c", None, emotions=["angry"]), Sample("d", None)]
    y, mask, space = multilabel_targets(s, np.array([0, 1]), allow_rare=True)  # one clip per word: kept on request (issue 25)
    assert "'sad' (1 clip: b)" in space.warnings[0] and "--allow-rare-classes" in space.warnings[0]
    assert "1 of 4 clips have an empty emotion-word set" in space.warnings[1] and space.warnings[1].count(": d;") == 1
    assert "1 clips carry only words outside the label list" in space.warnings[2] and space.warnings[2].endswith(": c")
    assert space.classes == ["happy", "sad", "surprised"]
    np.testing.assert_array_equal(y["multihot"], [[1, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert mask.tolist() == [True, True, False, False]
    m = multilabel_evaluate(np.array([[0.5, 0.1, 0.4], [0.15, 0.75, 0.1]]), y["multihot"][:2], 0.18)
    assert m["ml_accuracy"] == 1.0 and m["hamming_loss"] == 0.0


def test_unlabelled_rows_join_training_parts_only(tmp_path):
    lex = write_lexicon(tmp_path / "lex.txt", {"happy": (0.9, 0.7, 0.6), "sad": (0.1, 0.2, 0.2)})
    n = 20
    samples = [Sample(f"s{i}", None, transcript="happy" if i % 2 else "sad", discrete=("happy" if i % 2 else "sad") if i < 12 else None,
                      split="test" if i in (10, 11) else None) for i in range(n)]
    samples[19].transcript = "zzz"  # no lexicon word: no VA, not added
    mask = np.array([s.discrete is not None for s in samples])
    y = {"discrete": np.array([(1 if i % 2 else 0) if i < 12 else -1 for i in range(n)])}
    folds = [Fold("f0", np.arange(0, 6), np.array([6, 7]), np.array([8, 9])), Fold("f1", np.arange(4, 10), np.array([0, 1]), np.array([2, 3]))]
    new, y2, info = prepare_semi(samples, [s.name for s in samples], y, mask, folds, np.array([10, 11]), ["sad", "happy"],
                                 univa=True, va_source="transcript", lexicon=lex)
    extra = set(range(12, 19))
    assert info["unlabelled_rows"] == 7 and info["univa_va"]["source"] == "transcript"
    for old, f in zip(folds, new):
        assert set(f.train) == set(old.train) | extra
        assert np.array_equal(f.val, old.val) and np.array_equal(f.test, old.test)
        assert not extra & (set(f.val) | set(f.test) | {10, 11})
    assert np.all(y2["weight"][list(extra)] == 0) and np.all(y2["weight"][mask] == 1)
    assert y2["va_known"].tolist() == [True] * 19 + [False]


def test_folder_labels_emotions_column(tmp_path):
    from emo.extract.datasets.folder import Folder

    for n in ("a", "b", "c"):
        (tmp_path / f"{n}.wav").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("name,emotion,emotions\na,happy,Happy; surprised;happy\nb,sad,\nc,,worried\n")
    s = {x.name: x for x in Folder(tmp_path).samples()}
    assert s["a"].emotions == ["happy", "surprised"] and s["b"].emotions is None and s["c"].emotions == ["worried"]
    from emo.fuse.methods.multilabel import sample_words

    assert [sample_words(s[n]) for n in "abc"] == [["happy", "surprised"], ["sad"], ["worried"]]
