"""Emotion-wheel F1 of the MER 2025 fine-grained track: hand-computed cases on a small
synthetic wheel folder, and the real folder from the challenge baseline."""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from emo.lexicon.wheel import (
    WHEELS,
    WheelError,
    load_wheels,
    read_xlsx,
    split_words,
    wheel_scores,
)


def write_xlsx(path: Path, header: list[str], rows: list[list[str | None]]) -> Path:
    """A minimal .xlsx (one sheet, inline strings; None = empty cell), as spreadsheet programs write."""
    def col(i: int) -> str:
        return chr(65 + i)

    xml_rows = []
    for r, values in enumerate([header, *rows], start=1):
        cells = "".join(
            f'<c r="{col(i)}{r}" t="inlineStr"><is><t>{escape(v)}</t></is></c>'
            for i, v in enumerate(values) if v is not None
        )
        xml_rows.append(f'<row r="{r}">{cells}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/workbook.xml", f'<workbook {ns} {rns}><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels",
                   '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   '<Relationship Id="rId1" Target="worksheets/sheet1.xml" '
                   'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"/></Relationships>')
        z.writestr("xl/worksheets/sheet1.xml", f'<worksheet {ns}><sheetData>{"".join(xml_rows)}</sheetData></worksheet>')
    return path


def toy_wheels(root: Path) -> Path:
    """Five identical toy wheels:

        joy   -> cheerful -> {glad, merry};   joy -> content -> {calm}
        anger -> annoyed  -> {irritated};     anger -> bitter -> {resentful}

    synonyms: happy ~ glad (run1), happy ~ joy (run2), furious ~ annoyed; word forms:
    angered -> anger, gladly -> glad.
    """
    root.mkdir(parents=True, exist_ok=True)
    wheel = [["joy", "cheerful", "glad"], [None, None, "merry"], [None, "content", "calm"],
             ["Anger ", "annoyed", "irritated"], [None, "bitter", "resentful"]]
    for w in WHEELS:
        write_xlsx(root / f"{w}.xlsx", ["level1", "level2", "level3"], wheel)
    words = ["joy", "cheerful", "glad", "merry", "content", "calm", "anger", "annoyed", "irritated", "bitter", "resentful"]
    header = [f"{p}_run{k}" for k in range(1, 9) for p in ("word", "synonym")]
    rows = []
    for word in words:
        row: list[str | None] = []
        for k in range(1, 9):
            syn = {("glad", 1): "['happy', 'pleased']", ("joy", 2): "happy", ("annoyed", 1): "furious, vexed"}.get((word, k), "")
            row += [word, syn or None]
        rows.append(row)
    write_xlsx(root / "synonym.xlsx", header, rows)
    forms = {w: w for w in words} | {"happy": "happy,happier", "pleased": "pleased", "furious": "furious",
                                     "vexed": "vexed", "anger": "anger,angered", "glad": "glad,gladly"}
    lines = ["name,format"] + [f'{k},"{v}"' for k, v in forms.items()]
    (root / "format.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def toy(tmp_path):
    return load_wheels(toy_wheels(tmp_path / "wheel"))


def test_split_words_reads_cells_as_the_baseline_does():
    assert split_words("['happy', 'sad']") == ["happy", "sad"]
    assert split_words("happy, sad") == ["happy", "sad"]
    assert split_words('"anxious","tense"') == ["anxious", "tense"]
    assert split_words("") == [] and split_words(None) == [] and split_words("[]") == []


def test_xlsx_reader_forward_fill_and_lowercase(toy):
    tree = toy.trees["wheel1"]
    assert tree == {"joy": {"cheerful": ["glad", "merry"], "content": ["calm"]},
                    "anger": {"annoyed": ["irritated"], "bitter": ["resentful"]}}


def test_word_mapping_steps(toy):
    # happy is a synonym of glad (run 1) and joy (run 2): level1 of both is joy
    assert toy.wheel_label("Happy", "wheel1") == "joy"
    # level2: candidates sorted = [glad, joy]; glad -> cheerful
    assert toy.wheel_label("happy", "wheel1", "level2") == "cheerful"
    # a level-1 word at level 2 goes to its alphabetically first child
    assert toy.wheel_label("joy", "wheel1", "level2") == "cheerful"
    assert toy.wheel_label("anger", "wheel1", "level2") == "annoyed"
    # word forms: angered -> anger; gladly -> glad
    assert toy.wheel_label("angered", "wheel1") == "anger"
    assert toy.wheel_label("gladly", "wheel1", "level2") == "cheerful"
    # vexed is a synonym of annoyed -> anger; a word outside format.csv is dropped
    assert toy.wheel_label("vexed", "wheel1") == "anger"
    assert toy.wheel_label("bored", "wheel1") is None
    assert toy.base_form("Gladly") == "glad" and toy.base_form("unknownword") == "unknownword"


def test_hand_computed_scores(toy):
    pred = [["happy", "furious"], ["calm"], [], ["bored"], ["merry"]]
    true = [["glad"], ["resentful", "joy"], ["anger"], ["irritated"], ["bored"]]
    # level1: s1 P={joy,anger} T={joy}: p=1/2 r=1; s2 P={joy} T={anger,joy}: p=1 r=1/2;
    # s3 P={} T={anger}: p=0 r=0; s4 P={} (bored unmapped) T={anger}: p=0 r=0; s5 T={} -> skipped
    s = wheel_scores(pred, true, toy)
    p, r = (0.5 + 1 + 0 + 0) / 4, (1 + 0.5 + 0 + 0) / 4
    assert s["precision"] == pytest.approx(p) and s["recall"] == pytest.approx(r)
    assert s["f1"] == pytest.approx(2 * p * r / (p + r))
    assert all(v["n"] == 4 for v in s["per_wheel"].values()) and s["n_samples"] == 5
    # level2: s1 P={cheerful, annoyed} T={cheerful}: 1/2, 1; s2 P={content} T={bitter, cheerful}: 0, 0
    s2 = wheel_scores(pred[:2], true[:2], toy, level="level2")
    assert s2["precision"] == pytest.approx(0.25) and s2["recall"] == pytest.approx(0.5)
    assert s2["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)


def test_perfect_and_strings(toy):
    s = wheel_scores(["glad, irritated"], [["merry", "bitter"]], toy)
    assert s["f1"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0


def test_undefined_and_bad_input(toy, tmp_path):
    # no true word maps anywhere: 0 with n = 0 on every wheel (MER 2026 baseline), never NaN
    s = wheel_scores([["glad"]], [["bored"]], toy)
    assert s["f1"] == 0.0 and all(v["n"] == 0 for v in s["per_wheel"].values())
    with pytest.raises(ValueError, match="2 predictions but 1"):
        wheel_scores([["glad"], ["x"]], [["glad"]], toy)
    with pytest.raises(ValueError, match="level"):
        wheel_scores([["glad"]], [["glad"]], toy, level="level3")
    bad = toy_wheels(tmp_path / "bad")
    (bad / "wheel3.xlsx").unlink()
    with pytest.raises(WheelError, match="lacks wheel3.xlsx"):
        load_wheels(bad)
    write_xlsx(bad / "wheel3.xlsx", ["a", "b"], [["x", "y"]])
    with pytest.raises(WheelError, match="expected columns level1, level2, level3; found a, b"):
        load_wheels(bad)
    with pytest.raises(WheelError, match="does not exist"):
        load_wheels(tmp_path / "nowhere")


def test_real_wheels_match_the_baseline_counts(shared):
    w = load_wheels(shared / "emotion_wheel")
    # the baseline's own comments: synonyms grow the wheel words to 1255 labels, word forms to 7386
    assert len(w.synonyms) == 1255 and len(w.forms) == 7386
    rows = read_xlsx(shared / "emotion_wheel" / "wheel1.xlsx")
    assert rows[0]["level1"] == "Mad" and rows[0]["level3"] == "Skeptical"
    # furious is a level-3 word under mad/anger on wheel 1; angered is a form of anger
    assert "furious" in w.trees["wheel1"]["mad"]["anger"]
    assert w.wheel_label("furious", "wheel1") == "mad" and w.wheel_label("angered", "wheel1") == "mad"
    s = wheel_scores([["furious", "sad"], ["neutral"]], [["Angered"], ["sad"]], w)
    # furious, angered -> mad on every wheel that has them; neutral maps nowhere -> p=r=0
    w1 = s["per_wheel"]["wheel1"]
    assert w1["precision"] == pytest.approx((0.5 + 0) / 2) and w1["recall"] == pytest.approx((1 + 0) / 2)


def test_xlsx_with_a_dtd_is_refused(tmp_path):
    p = tmp_path / "evil.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("xl/worksheets/sheet1.xml", '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><worksheet/>')
    with pytest.raises(WheelError, match="DTD"):
        read_xlsx(p)


def test_fuse_wheel_metrics_hook(toy):
    from emo.fuse.eval.metrics import wheel_metrics

    m = wheel_metrics([["happy"], ["vexed"]], [["glad"], ["calm"]], toy)
    # s1: {joy} vs {joy}: 1, 1; s2: {anger} vs {joy}: 0, 0 -> P = R = F = 0.5 on every wheel
    assert m["wheel_f1"] == pytest.approx(0.5) and m["wheel3_f1"] == pytest.approx(0.5)
    assert m["wheel_precision"] == pytest.approx(0.5) and m["wheel_recall"] == pytest.approx(0.5)


def test_multilabel_wheel_metrics_thresholds_the_probabilities(toy):
    import numpy as np

    from emo.fuse.eval.metrics import multilabel_wheel_metrics

    classes = ["glad", "irritated", "calm"]
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.15, 0.75]])
    # threshold 0.2: s1 predicts glad+irritated -> {joy, anger} vs {joy}: p 1/2 r 1; s2 calm -> {joy} vs {anger}: 0 0
    m = multilabel_wheel_metrics(probs, classes, [["merry"], ["vexed"]], toy, threshold=0.2)
    assert m["wheel_precision"] == pytest.approx(0.25) and m["wheel_recall"] == pytest.approx(0.5)
    m = multilabel_wheel_metrics(probs, classes, [["merry"], ["vexed"]], toy, threshold=0.5)
    assert m["wheel_precision"] == pytest.approx(0.5) and m["wheel_recall"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        multilabel_wheel_metrics(probs[:1], classes, [["merry"], ["vexed"]], toy, threshold=0.5)


def test_add_wheel_metrics_to_a_cv_result(toy):
    import numpy as np

    from emo.extract.datasets.base import Sample
    from emo.fuse.eval.cv import CVResult
    from emo.fuse.training.train import add_wheel_metrics

    samples = [Sample("a", None, emotions=["merry"]), Sample("b", None, emotions=["vexed"]), Sample("c", None)]
    res = CVResult(folds=[], summary={}, pooled={"x": 1.0},
                   oof={"index": np.array([1, 0]), "probs": np.array([[0.1, 0.15, 0.75], [0.6, 0.3, 0.1]])},
                   test=None, states=[], normalizers=[])
    info = add_wheel_metrics(res, samples, ["glad", "irritated", "calm"], str(toy.directory), 0.2)
    # rows b (calm -> joy vs anger: 0, 0) and a (glad, irritated -> {joy, anger} vs {joy}: 1/2, 1)
    assert res.pooled["wheel_precision"] == pytest.approx(0.25) and res.pooled["wheel_recall"] == pytest.approx(0.5)
    assert res.pooled["x"] == 1.0 and info["threshold"] == 0.2 and info["level"] == "level1"
