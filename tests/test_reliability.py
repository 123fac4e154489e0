"""Reliability: crash safety beyond a single kill, write errors, guards, bad inputs, label files.

(The security checks are ruff's S rules in `make lint` and tests/test_architecture.py.)

(Basic resume, lock and provenance checks live in test_extract_core.py; the 20-kill proof
is proofs/crash_resume.py and the full bad-input corpus proof is proofs/bad_inputs.py.)
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import emo.extract.store as store_mod
from emo.cli import app
from emo.extract.datasets import DatasetError, get_dataset
from emo.extract.encoders.base import Encoded
from emo.extract.store import (
    FeatureStore,
    StoreError,
    StoreLockedError,
    StoreWriteError,
    StoreWriter,
    check_free_space,
    check_writable,
    merge,
    store_path,
)

from helpers import link_clips, tiny_hubert, toy_provenance

ROOT = Path(__file__).resolve().parents[1]


def _vec(i: int, d: int = 6) -> Encoded:
    return Encoded(layers={"1": np.full(d, i, np.float32)})


def _h5_files_open(d: Path) -> int:
    """Number of .h5 files under ``d`` that h5py cannot open (must be 0)."""
    bad = 0
    for p in d.rglob("*.h5"):
        try:
            with h5py.File(p, "r") as f:
                f["names"][()]
        except Exception:
            bad += 1
    return bad


# --- crash safety ------------------------------------------------------------------------
def test_flush_seconds_bounds_work_lost_to_sigkill(tmp_path):
    """With flush_seconds=0 every finished sample is in an atomic shard before the next one
    starts, so SIGKILL loses nothing even with a large shard_size."""
    path = tmp_path / "k.h5"
    code = f"""
import numpy as np, os, signal
from emo.extract.store import StoreWriter
from emo.extract.encoders.base import Encoded
w = StoreWriter({str(path)!r}, {toy_provenance()!r}, ["1"], shard_size=1000, flush_seconds=0)
for i in range(5):
    w.add(f"s{{i}}", Encoded(layers={{"1": np.full(4, i, np.float32)}}))
w.fail("bad", "bad.mp4: no audio stream")
os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == -signal.SIGKILL
    assert _h5_files_open(tmp_path) == 0
    w = StoreWriter(path, toy_provenance(), ["1"])
    assert w.done == {f"s{i}" for i in range(5)} and w.failed == {"bad": "bad.mp4: no audio stream"}
    w.close()


def test_leftover_tmp_files_are_removed_and_never_read(tmp_path):
    """Half-written *.tmp files of a killed writer (shard or merge) are ignored and cleaned."""
    path = tmp_path / "t.h5"
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=2)
    for i in range(3):
        w.add(f"s{i}", _vec(i))
    w.close()  # shards only
    parts = tmp_path / "t.parts"
    (parts / "part-999-000009.h5.tmp").write_bytes(b"\x89HDF\r\n half written")
    (tmp_path / "t.h5.tmp").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"only unmerged shards .*emo store merge"):
        FeatureStore(path)  # a reader never merges (and never writes)
    assert len(list(tmp_path.rglob("*.tmp"))) == 2
    merge(path)  # `emo store merge`: takes the lock, drops the tmp files, merges
    assert sorted(FeatureStore(path).names) == ["s0", "s1", "s2"]
    assert not list(tmp_path.rglob("*.tmp")) and not parts.exists()


def test_kill_between_merge_and_shard_cleanup_is_deduplicated(tmp_path):
    """A kill after the merged store replaced the old one but before the shards were deleted
    leaves every sample twice on disk; the next writer and the reader count each once."""
    path = tmp_path / "d.h5"
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=2)
    for i in range(4):
        w.add(f"s{i}", _vec(i))
    w.flush()
    keep = {p.name: p.read_bytes() for p in (tmp_path / "d.parts").glob("*.h5")}
    w.finalize()
    w.close()
    (tmp_path / "d.parts").mkdir()
    for n, b in keep.items():  # as if the unlink after os.replace never happened
        (tmp_path / "d.parts" / n).write_bytes(b)
    w = StoreWriter(path, toy_provenance(), ["1"])
    assert w.done == {"s0", "s1", "s2", "s3"}
    w.add("s4", _vec(4))
    w.finalize()
    w.close()
    s = FeatureStore(path)
    assert s.names == ["s0", "s1", "s2", "s3", "s4"] and s.read_layer("1")[:, 0].tolist() == [0, 1, 2, 3, 4]


# --- write errors: disk full, read-only ------------------------------------------------------
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_shard_write_keeps_store_intact(tmp_path, monkeypatch):
    path = tmp_path / "f.h5"
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=2)
    w.add("s0", _vec(0))
    w.add("s1", _vec(1))  # first shard written
    real = store_mod._write_file_tmp

    def half_then_fail(tmp, *a, **k):
        real(tmp, *a, **k)  # the tmp file exists, fully or partly written, when the error strikes
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod, "_write_file_tmp", half_then_fail)
    w.add("s2", _vec(2))
    with pytest.raises(StoreWriteError, match=r"cannot write shard .*disk full.*last 2 are not stored.*rerun"):
        w.add("s3", _vec(3))
    with pytest.raises(StoreWriteError):  # the writer stays failed: no later shard pretends all is well
        w.fail("s4", "x")
    w.close()  # releases the lock without a second failing write
    monkeypatch.setattr(store_mod, "_write_file_tmp", real)
    assert not list(tmp_path.rglob("*.tmp")) and _h5_files_open(tmp_path) == 0
    w = StoreWriter(path, toy_provenance(), ["1"])
    assert w.done == {"s0", "s1"}
    w.close()


def test_disk_full_during_merge_keeps_store_and_shards(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=2)
    for i in range(3):
        w.add(f"s{i}", _vec(i))
    w.finalize()
    w.close()
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=2)
    for i in range(3, 6):
        w.add(f"s{i}", _vec(i))
    real = store_mod._merge_into

    def partial_merge(tmp, *a, **k):
        real(tmp, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod, "_merge_into", partial_merge)
    with pytest.raises(StoreWriteError, match=r"cannot merge .*disk full.*intact"):
        w.finalize()
    w.close()
    monkeypatch.setattr(store_mod, "_merge_into", real)
    assert not list(tmp_path.glob("*.tmp")) and _h5_files_open(tmp_path) == 0
    with h5py.File(path, "r") as f:  # the old store is untouched
        assert len(f["names"]) == 3
    with pytest.warns(UserWarning, match=r"2 shard\(s\) not merged yet"):
        assert len(FeatureStore(path)) == 3  # the reader reads the intact store only
    merge(path)  # after the cause is fixed
    assert sorted(FeatureStore(path).names) == [f"s{i}" for i in range(6)]


def _wav_folder(shared: Path, root: Path, n: int = 2) -> Path:
    return link_clips(sorted((shared / "emodb" / "wav").glob("*.wav"))[:n], root)


def test_cli_disk_full_mid_run_is_fatal_and_clear(shared, tmp_path, monkeypatch):
    root = _wav_folder(shared, tmp_path / "clips", 3)
    out = tmp_path / "feat"
    monkeypatch.setattr(store_mod, "_write_file_tmp", _enospc)
    args = ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps", "--out", str(out),
            "--no-progress", "--shard-size", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and "disk full" in r.output and "cannot write shard" in r.output, r.output
    assert "Traceback" not in r.output and _h5_files_open(out) == 0 and not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    r = CliRunner().invoke(app, args)  # space freed: the rerun completes
    assert r.exit_code == 0, r.output
    assert len(FeatureStore(out / "folder" / "egemaps.h5")) == 3


def test_preflight_read_only_and_full_disk(shared, tmp_path, monkeypatch):
    root = _wav_folder(shared, tmp_path / "clips")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    base = ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps", "--no-progress"]
    r = CliRunner().invoke(app, base + ["--out", str(blocker / "feat")])
    assert r.exit_code == 1 and re.search(r"output directory .*a_file/feat/folder is not writable", r.output), r.output
    with pytest.raises(StoreError, match="(?i)not writable: read-only file system"):  # as on a read-only mount (root ignores chmod)
        monkeypatch.setattr(store_mod.tempfile, "mkstemp", lambda **k: _raise(OSError(errno.EROFS, "Read-only file system")))
        check_writable(tmp_path / "ro")
    monkeypatch.undo()
    with pytest.raises(StoreError, match=r"not enough free space under .*: \d+ MB free, this run needs about"):
        check_free_space(tmp_path, 1 << 62)
    # a disk that is clearly too small is refused before any sample is processed
    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: _Usage(10 << 20))
    out = tmp_path / "feat"
    r = CliRunner().invoke(app, base + ["--out", str(out)])
    assert r.exit_code == 1 and "not enough free space" in r.output, r.output
    assert not list(out.rglob("part-*.h5")) and not (out / "folder" / "egemaps.h5").exists()


class _Usage:
    def __init__(self, free: int) -> None:
        self.total, self.used, self.free = free * 2, free, free


def _raise(e):
    raise e


# --- concurrency ------------------------------------------------------------------------------
def test_second_writer_sees_pid_and_stale_lock_is_cleared(tmp_path):
    path = tmp_path / "c.h5"
    code = f"""
import sys, time
from emo.extract.store import StoreWriter
w = StoreWriter({str(path)!r}, {toy_provenance()!r}, ["1"])
print("ready", flush=True)
time.sleep(60)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=rf"in use by PID {p.pid}\b"):
            StoreWriter(path, toy_provenance(), ["1"])
        (tmp_path / "c.parts").mkdir(exist_ok=True)
        (tmp_path / "c.parts" / "part-1-000000.h5").write_bytes(b"")
        with pytest.raises(StoreError, match="only unmerged shards"):  # nothing merged to read yet: clear error
            FeatureStore(path)
        with pytest.raises(StoreLockedError, match=rf"in use by PID {p.pid}\b"):  # no merge under a live writer
            merge(path)
        (tmp_path / "c.parts" / "part-1-000000.h5").unlink()
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    lock = tmp_path / "c.lock"
    assert lock.read_text() == str(p.pid)  # the dead process's PID is still in the file...
    w = StoreWriter(path, toy_provenance(), ["1"])  # ...but flock died with it: the stale lock is taken over
    assert lock.read_text() == str(os.getpid())
    w.close()


def test_cli_second_copy_refused_while_first_runs(shared, tmp_path):
    root = _wav_folder(shared, tmp_path / "clips")
    out = tmp_path / "feat"
    holder = StoreWriter(store_path(out, "folder", "egemaps"), toy_provenance(encoder="egemaps"), ["functionals"])
    try:
        r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps",
                                     "--out", str(out), "--no-progress"])
        assert r.exit_code == 1 and f"in use by PID {os.getpid()}" in r.output, r.output
    finally:
        holder.close()


# --- provenance --------------------------------------------------------------------------------
@pytest.mark.parametrize("key,new", [("pooling", "last"), ("sample_rate", 8000), ("source", "other/ckpt")])
def test_provenance_difference_named(tmp_path, key, new):
    path = tmp_path / "p.h5"
    w = StoreWriter(path, toy_provenance(), ["1"])
    w.add("a", _vec(1))
    w.finalize()
    w.close()
    with pytest.raises(StoreError, match=rf"{key}: store has .*, this run has {new!r}.*--overwrite"):
        StoreWriter(path, toy_provenance(**{key: new}), ["1"])
    w = StoreWriter(path, toy_provenance(**{key: new}), ["1"], overwrite=True)
    assert w.done == set()
    w.close()


def test_cli_other_checkpoint_refused_then_overwrite(shared, tmp_path):
    m1 = tiny_hubert(tmp_path / "m1", layers=2, hidden=16, seed=0)
    m2 = tiny_hubert(tmp_path / "m2", layers=2, hidden=16, seed=1)
    (tmp_path / "ckpt").symlink_to(m1)
    root = _wav_folder(shared, tmp_path / "clips", 1)
    out = tmp_path / "feat"
    args = ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", f"hubert_large={tmp_path / 'ckpt'}:2",
            "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    h1 = FeatureStore(out / "folder" / "hubert_large.h5").attrs["weights_hash"]
    (tmp_path / "ckpt").unlink()
    (tmp_path / "ckpt").symlink_to(m2)  # same path, other weights: the hash tells them apart
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and re.search(rf"weights_hash: store has '{h1}', this run has '\w+'", r.output), r.output
    r = CliRunner().invoke(app, args + ["--overwrite"])
    assert r.exit_code == 0, r.output
    assert FeatureStore(out / "folder" / "hubert_large.h5").attrs["weights_hash"] != h1


def test_fuse_refuses_stores_with_different_samples(tmp_path):
    from emo.extract.datasets import Sample, write_manifest
    from emo.fuse.training.data import FeatureError, load_features

    class _DS:
        name, root, classes = "toy", tmp_path, ["a", "b"]

    samples = [Sample(f"s{i}", None, discrete="ab"[i % 2]) for i in range(6)]
    write_manifest(tmp_path / "toy", _DS(), samples)
    for enc, names in (("egemaps", [s.name for s in samples]), ("mfcc", [s.name for s in samples[:4]])):
        w = StoreWriter(store_path(tmp_path, "toy", enc), toy_provenance(encoder=enc), ["x"])
        for n in names:
            w.add(n, Encoded(layers={"x": np.ones(3, np.float32)}))
        w.finalize()
        w.close()
    with pytest.raises(FeatureError, match="different samples.*--align intersect"):
        load_features(tmp_path, "toy", ["egemaps", "mfcc"])
    with pytest.warns(UserWarning, match="intersect"):
        fs = load_features(tmp_path, "toy", ["egemaps", "mfcc"], align="intersect")
    assert fs.names == ["s0", "s1", "s2", "s3"]


# --- names, strict, bad media ------------------------------------------------------------------
def test_awkward_names_roundtrip(tmp_path):
    names = ["it's a \"clip\"", "情绪 样本/01", "é ü ñ", "tab\tname", "  spaced  "]
    w = StoreWriter(tmp_path / "n.h5", toy_provenance(), ["1"], shard_size=2)
    for i, n in enumerate(names):
        w.add(n, _vec(i))
    w.fail("坏的 \"file\"", "坏的 \"file\".mp4: empty file (0 bytes)")
    w.finalize()
    w.close()
    s = FeatureStore(tmp_path / "n.h5")
    assert s.names == names and s.failed == {"坏的 \"file\"": "坏的 \"file\".mp4: empty file (0 bytes)"}
    assert s.read_layer("1", names=names[::-1])[:, 0].tolist() == list(range(len(names)))[::-1]
    for bad in ("../x", "..", "a/b", ""):
        with pytest.raises(StoreError, match="invalid dataset name"):
            store_path(tmp_path, bad, "toy")


def test_strict_exit_codes_and_finished_work_kept(shared, tmp_path):
    root = _wav_folder(shared, tmp_path / "clips", 2)
    (root / "zz broken \"clip\".wav").write_bytes(b"")
    out = tmp_path / "feat"
    base = ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps", "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(app, base + ["--limit", "2"]).exit_code == 0
    first = FeatureStore(out / "folder" / "egemaps.h5").read()
    r = CliRunner().invoke(app, base + ["--strict"])
    assert r.exit_code == 1 and "--strict" in r.output and "zz broken \"clip\".wav: empty file" in r.output, r.output
    s = FeatureStore(out / "folder" / "egemaps.h5")
    assert len(s) == 2 and np.array_equal(s.read(), first)
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 3 and "zz broken \"clip\": " in r.output and "empty file (0 bytes)" in r.output, r.output
    s = FeatureStore(out / "folder" / "egemaps.h5")
    assert "zz broken \"clip\"" in s.failed and np.array_equal(s.read(), first)


def test_bad_media_corpus_audio(shared, tmp_path):
    """Every case of the corpus gets features or a failure record naming its file; run continues."""
    from broken_media import build_corpus

    root = tmp_path / "clips"
    cases = build_corpus(shared, root, long_minutes=1.0)
    out = tmp_path / "feat"
    r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps",
                                 "--out", str(out), "--no-progress"])
    assert r.exit_code == 3, r.output  # some failed, the run finished
    s = FeatureStore(out / "folder" / "egemaps.h5")
    x = s.read()
    assert np.all(np.isfinite(x))
    for case, c in cases.items():
        name = c["file"].relative_to(root).with_suffix("").as_posix()
        want = c["expect"]["audio"]
        if name in s.index:
            assert want in ("ok", "either"), f"{case} should have failed"
        else:
            assert want in ("fail", "either") and name in s.failed, f"{case}: no record"
            assert c["file"].name in s.failed[name] and name in r.output, (case, s.failed[name])
    assert "zero_byte" in s.failed
    # a video without an audio stream is a silent sample of a multimodal clip, not a failure (issue 11)
    assert "no_audio" in s.index and "silent" in s.flags("no_audio")


def test_no_face_and_grayscale_with_face_encoder(shared, tmp_path):
    from broken_media import _frames, _write_video, FACE_CLIP, HD_CLIP

    root = tmp_path / "clips"
    root.mkdir()
    frames, rate = _frames(shared / "av" / HD_CLIP, n=6)
    _write_video(root / "no_face.mp4", [f[:360, :480] for f in frames], rate)
    gray, rate = _frames(shared / "av" / FACE_CLIP, n=12, gray=True)
    _write_video(root / "gray.mp4", gray, rate, pix_fmt="gray", fmt="gray")
    out = tmp_path / "feat"
    r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "resnet50=random:4",
                                 "--face-detector", "haar", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    s = FeatureStore(out / "folder" / "resnet50.h5")
    assert s.flags("no_face") == {"no_face"} and "no_face" not in s.flags("gray")
    assert np.all(np.isfinite(s.read()))
    # the detector and the per-clip face-frame counts are stored and shown by `emo store info`
    faces, sampled = s.info("face_frames", ["no_face", "gray"]), s.info("frames_sampled", ["no_face", "gray"])
    assert faces[0] == 0 and 0 < faces[1] <= sampled[1] and sampled[0] > 0
    r = CliRunner().invoke(app, ["store", "info", str(out / "folder" / "resnet50.h5")])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["face_detector"] == "haar" and info["fps"] == 2.0 and info["modality"] == "face"
    assert info["flags"] == {"no_face": 1, "no_text": 0, "silent": 0, "truncated": 0}
    cov = info["face_frames"]
    assert cov["clips"] == 2 and cov["clips_without_face"] == 1 and cov["frames_with_face"] == int(faces.sum())
    assert cov["frames_sampled"] == int(sampled.sum()) and cov["coverage"] == round(faces.sum() / sampled.sum(), 4)


# --- label files ---------------------------------------------------------------------------------
def test_label_file_cases(tmp_path):
    r = tmp_path / "mer"
    (r / "video-labeled").mkdir(parents=True)
    for n in ("s1", "s2"):
        (r / "video-labeled" / f"{n}.mp4").write_bytes(b"x")
    lab = r / "label-disdim.csv"
    lab.write_text("name,discrete,valence,annotator,notes\ns1,happy,1,a3,ok\ns2,sad,-2,a1,\n", encoding="utf-8")
    assert [s.discrete for s in get_dataset("mer2024", r, subset="labeled").samples()] == ["happy", "sad"]
    for text, msg in (("name,discrete\ns1,happy\ns2,happy\ns1,sad\n", r"label-disdim.csv: duplicate sample name 's1' in rows 2 and 4"),
                      ("name,discrete\n../../etc/passwd,happy\n", r"label-disdim.csv: no clip for sample '../../etc/passwd'"),
                      ("name\ns1\n", r"label-disdim.csv: missing column\(s\) discrete"),
                      ("name,discrete\ns2,joy\n", r"label-disdim.csv: sample 's2' has unknown label 'joy'")):
        lab.write_text(text, encoding="utf-8")
        with pytest.raises(DatasetError, match=msg):
            get_dataset("mer2024", r, subset="labeled").samples()


def test_reader_never_writes(tmp_path, monkeypatch):
    """Opening a store with pending shards reads the merged part with a warning and changes no file
    (it works on a read-only copy too: no lock is taken)."""
    path = tmp_path / "r.h5"
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=1)
    w.add("a", _vec(1))
    w.finalize()
    w.add("b", _vec(2))  # a shard pending after the merge
    w.close()
    (tmp_path / "r.lock").unlink()
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}

    def no_lock(self):
        raise AssertionError("a reader must not take the store lock")

    monkeypatch.setattr(store_mod._Lock, "acquire", no_lock)
    with pytest.warns(UserWarning, match=r"1 shard\(s\) not merged yet .*emo store merge"):
        s = FeatureStore(path)
    assert s.names == ["a"] and s.read_layer("1")[:, 0].tolist() == [1.0]
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")} == before
