"""First light end to end: a MER-2024-shaped folder built from the real av clips goes through
`make features DATASET=mer2024`, `emo fuse train` and `emo score`."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emo.extract.store import FeatureStore

from helpers import tiny_hubert

ROOT = Path(__file__).resolve().parents[1]
#: clips.csv emotion -> MER class (disgust has no MER class: those clips go to the unlabelled pool)
TO_MER = {"neutral": "neutral", "angry": "angry", "happy": "happy", "sad": "sad", "fearful": "worried", "surprised": "surprise"}


def build_mer2024(av: Path, root: Path) -> tuple[int, int]:
    """Symlink the av clips into the MER 2024 layout; returns (labelled, unlabelled) counts."""
    with open(av / "clips.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    (root / "video-labeled").mkdir(parents=True)
    (root / "video-unlabeled").mkdir()
    labels, texts, n_un = [], [], 0
    for i, r in enumerate(rows):
        src = av / r["path"]
        name = f"sample_{i:08d}"
        mer = TO_MER.get(r["emotion"])
        folder = "video-labeled" if mer else "video-unlabeled"
        (root / folder / f"{name}{src.suffix}").symlink_to(src)
        if mer:
            labels.append((name, mer))
        else:
            n_un += 1
        texts.append((name, "", r["transcript"]))
    with open(root / "label-disdim.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "discrete"])
        w.writerows(labels)
    with open(root / "label-transcription.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "chinese", "english"])
        w.writerows(texts)
    return len(labels), n_un


@pytest.mark.slow
def test_make_features_train_score_mer2024(shared, tmp_path):
    data = tmp_path / "mer2024"
    n_lab, n_un = build_mer2024(shared / "av", data)
    assert n_lab >= 12 and n_un >= 20
    model = tiny_hubert(tmp_path / "tiny-hubert", layers=4)
    out = tmp_path / "features"
    r = subprocess.run(["make", "-C", str(ROOT), "features", "DATASET=mer2024", f"DATA_ROOT={data}", f"OUT={out}",
                        f"MODELS=egemaps hubert_large={model}:1-3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for enc, shape in (("egemaps", (1, 88)), ("hubert_large", (3, 32))):
        s = FeatureStore(out / "mer2024" / f"{enc}.h5")
        assert len(s) == n_lab + n_un and s.read().shape[1:] == shape

    run = tmp_path / "runs" / "afg"
    emo = [sys.executable, "-m", "emo.cli"]
    r = subprocess.run(emo + ["fuse", "train", "--dataset", "mer2024", "--features-dir", str(out), "--features", "egemaps",
                              "--features", "hubert_large", "--head", "afg", "--task", "discrete", "--folds", "3",
                              "--out", str(run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (run / "metrics.json").is_file() and (run / "config.json").is_file()
    assert len(list(run.glob("fold-*.safetensors"))) == 3
    with open(run / "predictions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == n_lab  # only labelled clips are trained on

    (data / "video-unlabeled" / "broken.mp4").write_bytes(b"not a video")
    preds = tmp_path / "preds.csv"
    r = subprocess.run(emo + ["score", str(data / "video-unlabeled"), "--run", str(run), "--out", str(preds), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 3, r.stdout + r.stderr  # the broken file is reported, not fatal
    assert "broken" in r.stdout
    with open(preds, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_un + 1
    ok = [x for x in rows if x["status"] == "ok"]
    assert len(ok) == n_un
    classes = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    p = np.array([[float(x[f"prob_{c}"]) for c in classes] for x in ok])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)
    assert all(x["pred"] == classes[int(np.argmax(pi))] for x, pi in zip(ok, p))
    bad = next(x for x in rows if x["name"].endswith("broken"))
    assert bad["status"].startswith("error:") and "broken.mp4" in bad["status"]
