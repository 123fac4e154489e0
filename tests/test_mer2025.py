"""MER 2025 / MER 2026 adapters on folders built from the real av clips."""

from __future__ import annotations

import pytest
from emo.extract.datasets.base import DatasetError, read_manifest, write_manifest
from emo.extract.datasets.mer2025 import MER2025, MER2026, open_vocabulary
from mer_fixtures import VALENCE, build_mer_pool


@pytest.fixture(scope="module")
def pool2025(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("mer2025")
    return root, build_mer_pool(shared / "av", root, 2025, wavs=2)


@pytest.fixture(scope="module")
def pool2026(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("mer2026")
    return root, build_mer_pool(shared / "av", root, 2026, wavs=0)


def test_open_vocabulary_cells():
    assert open_vocabulary("['Happy', 'joyful', 'happy']") == ["happy", "joyful"]
    assert open_vocabulary("worried,  Anxious") == ["worried", "anxious"]
    assert open_vocabulary("[]") == ["neutral"] and open_vocabulary("") == ["neutral"]


def test_mer2025_track1(pool2025):
    root, info = pool2025
    samples = MER2025(root, track=1).samples()
    by = {s.name: s for s in samples}
    lab = [s for s in samples if s.split == "train"]
    assert len(lab) == len(info["labelled"]) and len(samples) == len(info["labelled"]) + len(info["candidates"])
    for name, cls in info["labelled"]:
        assert by[name].discrete == cls and by[name].valence == VALENCE[cls] and by[name].emotions is None
    cand = [s for s in samples if s.split == "candidate"]
    assert all(s.discrete is None and s.valence is None for s in cand)
    assert all(s.media is not None and s.media.parent.name == "video" for s in samples)
    assert MER2025(root, track="1").classes == ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    # subsets and the transcript column
    assert len(MER2025(root, track=1, subset="labeled").samples()) == len(info["labelled"])
    assert len(MER2025(root, track=1, subset="unlabeled").samples()) == len(info["candidates"])
    eng = {s.name: s.transcript for s in MER2025(root, track=1, text_column="english").samples()}
    assert any(eng.values()) and not any(s.transcript for s in samples)  # chinese column is empty in the fixture


def test_mer2025_track2_open_vocabulary(pool2025):
    root, info = pool2025
    ad = MER2025(root, track=2)
    assert ad.classes is None
    samples = ad.samples()
    lab = [s for s in samples if s.emotions is not None]
    assert len(lab) == len(info["labelled"])
    assert {s.split for s in lab} == {"ovmerd", "mercaptionplus"}
    by = {s.name: s for s in lab}
    for name, cls in info["labelled"]:
        want = {"neutral": ["neutral"], "angry": ["angry", "furious"], "happy": ["happy", "joyful"], "sad": ["sad", "lonely"],
                "worried": ["worried", "anxious", "nervous"], "surprise": ["surprised", "amazed"]}[cls]
        assert by[name].emotions == want and by[name].discrete is None
    only = MER2025(root, track=2, label_source="ovmerd", subset="labeled").samples()
    assert {s.split for s in only} == {"ovmerd"} and 0 < len(only) < len(lab)
    with pytest.raises(DatasetError, match="label_source must be all or one of ovmerd, mercaptionplus"):
        MER2025(root, track=2, label_source="human").samples()


def test_manifest_round_trip_keeps_words_and_labels(pool2025, pool2026, tmp_path):
    for ad in (MER2025(pool2025[0], track=2), MER2026(pool2026[0], track=3)):
        samples = ad.samples()
        write_manifest(tmp_path / ad.name, ad, samples)
        meta, back = read_manifest(tmp_path / ad.name)
        assert meta["dataset"] == ad.name and meta["classes"] is None
        assert [(s.name, s.emotions, s.labels, s.split) for s in back] == [(s.name, s.emotions, s.labels, s.split) for s in samples]


def test_mer2026_tracks(pool2026):
    root, info = pool2026
    t1 = MER2026(root, track=1).samples()
    assert sum(s.split == "train" for s in t1) == len(info["labelled"])
    assert sum(s.split == "candidate" for s in t1) == len(info["candidates"])
    t2 = MER2026(root, track=2, subset="labeled").samples()
    assert {s.split for s in t2} == {"human", "mercaptionplus"} and all(s.emotions for s in t2)


def test_mer2026_track3_pairs_as_text_fields(pool2026):
    root, info = pool2026
    a = info["labelled"][0][0]
    s1 = MER2026(root, track=3).samples()
    assert [s.name for s in s1] == [a, info["labelled"][1][0], f"{a}#2", info["candidates"][0]]
    assert s1[0].transcript == "She looks happy and relaxed." and s1[0].labels["a2"] == "She is furious."
    assert s1[0].labels["preference"] == "a1" and s1[0].split == "track3_emoprefer"
    assert "preference" not in s1[2].labels and s1[2].split == "track3_candidate"
    assert s1[2].media == s1[0].media  # the same clip
    s2 = MER2026(root, track=3, text_column="a2").samples()
    assert [s.transcript for s in s2] == ["She is furious.", "He sounds calm.", "A neutral face.", "Joyful laughter."]
    assert len(MER2026(root, track=3, subset="unlabeled").samples()) == 2


def test_bad_layouts_are_named(pool2025, tmp_path):
    root, _ = pool2025
    with pytest.raises(DatasetError, match="--track must be one of 1, 2"):
        MER2025(root)
    with pytest.raises(DatasetError, match="--track must be one of 1, 2"):
        MER2025(root, track=3)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "track1_train_disdim.csv").write_text("name,label,score\nx,happy,1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"unknown column layout: found name, label, score; expected name, discrete \(optional: valence\)"):
        MER2025(bad, track=1, subset="labeled").samples()
    (bad / "track1_train_disdim.csv").write_text("name,discrete,valence\nx,happy,7\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"valence 7.0 outside the MER scale \[-5, 5\]"):
        MER2025(bad, track=1, subset="labeled").samples()
    (bad / "track1_train_disdim.csv").write_text("name,discrete\nx,happy\nx,sad\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="duplicate sample name 'x' in lines 2 and 3"):
        MER2025(bad, track=1, subset="labeled").samples()
    (bad / "track1_train_disdim.csv").write_text("name,discrete\nx,confused\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="unknown label 'confused'"):
        MER2025(bad, track=1, subset="labeled").samples()
    # a clip in both open-vocabulary files is refused, naming both
    (bad / "track2_train_ovmerd.csv").write_text("name,openset\nx,happy\n", encoding="utf-8")
    (bad / "track2_train_mercaptionplus.csv").write_text("name,openset\nx,sad\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="labelled in both .*ovmerd.csv and .*mercaptionplus.csv"):
        MER2025(bad, track=2, subset="labeled").samples()
    # a labelled clip with no media is kept with media=None (extraction reports it per sample)
    s = MER2025(bad, track=2, subset="labeled", label_source="ovmerd").samples()
    assert s[0].media is None and s[0].emotions == ["happy"]
