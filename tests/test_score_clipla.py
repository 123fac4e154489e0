"""`emo score` on a run trained on a CLIPL-A derived store (issue 14): the derived features are
recomputed from the media (source encoder, then the recorded, hash-checked alignment MLP)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import link_clips, run_emo as run


@pytest.mark.slow
def test_score_recomputes_a_clipla_store_from_media(shared, tmp_path):
    # EmoDB clips of 3 speakers; the "source" side of the alignment is MFCC, the "target" eGeMAPS
    # (CLIPL-A aligns any source feature to any target; the score path does not depend on modality)
    wavs = [w for w in sorted((shared / "emodb" / "wav").glob("*.wav")) if w.name[:2] in ("03", "08", "09")][:48]
    wav_dir = link_clips(wavs, tmp_path / "emodb" / "wav")
    root = wav_dir.parent
    feats = tmp_path / "feats"
    run("extract", "--dataset", "emodb", "--root", str(root), "--encoder", "mfcc", "--encoder", "egemaps",
        "--out", str(feats), "--device", "cpu", "--no-progress")
    al = tmp_path / "clipla"
    run("fuse", "align", "--dataset", "emodb", "--features-dir", str(feats), "--source", "mfcc:stats",
        "--target", "egemaps:functionals", "--epochs", "5", "--batch-size", "16", "--out", str(al), "--write")
    derived = feats / "emodb" / "mfcc+clipla.h5"
    assert derived.is_file()
    r_dir = tmp_path / "run"
    run("fuse", "train", "--dataset", "emodb", "--features-dir", str(feats), "--features", "mfcc+clipla", "--head", "mlp",
        "--folds", "3", "--epochs", "5", "--seeds", "1", "--allow-rare-classes", "--out", str(r_dir))
    cfg = json.loads((r_dir / "config.json").read_text())
    assert "derived_from" in cfg["inputs"][0]["provenance"]

    # scoring raw media: MFCC extracted anew, then the MLP; equal to the run applied to the stored derived features
    preds = tmp_path / "scores.csv"
    run("score", str(wav_dir), "--run", str(r_dir), "--out", str(preds), "--no-progress")
    import csv

    from emo.extract.store import FeatureStore
    from emo.fuse.run import load_run

    with open(preds, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(wavs) and all(r["status"] == "ok" for r in rows)
    classes = cfg["classes"]
    got = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    st = FeatureStore(derived)
    names = [r["name"] for r in rows]
    want = load_run(r_dir).predict({"mfcc+clipla": st.read(["clipla"], names)})["probs"]
    np.testing.assert_allclose(got, want, atol=2e-5)

    # a changed MLP file is refused, naming it
    mlp = next(al.glob("*.safetensors"))
    data = bytearray(mlp.read_bytes())
    data[-1] ^= 0xFF
    mlp.write_bytes(bytes(data))
    r = run("score", str(wav_dir), "--run", str(r_dir), "--out", str(tmp_path / "bad.csv"), "--no-progress", ok=(1, 2))
    assert str(mlp) in r.stderr and "SHA-256" in r.stderr
