"""Feature stores keep what was computed honest: sample identity and provenance on resume, non-finite
frames refused, lock and temporary-file links refused, corrupt stores quarantined (issue 11, classes
1, 2, 3 and 5)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from helpers import toy_provenance
from typer.testing import CliRunner

from emo.cli import app
from emo.exitcodes import ExitCode
from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import FeatureStore, StoreError, StoreWriter


def _emodb(shared, k: int) -> list[Path]:
    return sorted((shared / "emodb" / "wav").glob("*.wav"))[:k]


def _extract(root: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps",
                                    "--out", str(out), "--no-progress", *extra])


def _vec(out: Path, name: str) -> np.ndarray:
    s = FeatureStore(out / "folder" / "egemaps.h5")
    return s.read(names=[name])[0, 0]


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def _toy_store(tmp_path) -> Path:
    p = tmp_path / "ds" / "toy.h5"
    w = StoreWriter(p, toy_provenance(), ["0"], dtype="float32")
    for i in range(20):
        w.add(f"s{i}", Encoded(layers={"0": np.full(64, i, np.float32)}))
    w.finalize()
    w.close()
    return p


def _flip(p: Path) -> None:
    with h5py.File(p, "r") as f:
        off = f["layers/0"].id.get_chunk_info(0).byte_offset
    with open(p, "r+b") as fh:
        fh.seek(off + 100)
        b = bytearray(fh.read(8))
        fh.seek(off + 100)
        fh.write(bytes(x ^ 0x5A for x in b))  # (0x00 <-> 0xFF swaps are Fletcher-32's blind spot)


@pytest.mark.slow
def test_changed_file_is_recomputed_and_reported(shared, tmp_path):
    a, b = _emodb(shared, 2)
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    shutil.copy(a, root / "clip.wav")
    assert _extract(root, out).exit_code == 0
    old = _vec(out, "clip")
    shutil.copy(b, root / "clip.wav")  # another recording under the same name
    r = _extract(root, out)
    assert r.exit_code == 0, r.output
    assert "recomputed 1 sample(s) whose media changed" in r.output and "clip: content changed" in r.output
    fresh = tmp_path / "fresh"
    _extract(root, fresh)
    assert np.array_equal(_vec(out, "clip"), _vec(fresh, "clip")) and not np.array_equal(_vec(out, "clip"), old)
    r = _extract(root, out)  # unchanged now: skipped
    assert r.exit_code == 0 and "recomputed" not in r.output


def _two_roots_one_store(shared, tmp_path):
    """Roots A and B holding the same EmoDB clip; A extracted into ``out``. Returns (A, B, out)."""
    (a,) = _emodb(shared, 1)
    ra, rb, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    for d in (ra, rb):
        d.mkdir()
        shutil.copy(a, d / "clip.wav")
    assert _extract(ra, out).exit_code == 0
    return ra, rb, out


@pytest.mark.slow
def test_other_root_and_settings_refused_naming_the_difference(shared, tmp_path):
    ra, rb, out = _two_roots_one_store(shared, tmp_path)
    r = _extract(rb, out)
    assert r.exit_code == ExitCode.ERROR and "dataset_root" in r.output and "egemaps.h5" in r.output
    r = _extract(ra, out, "--max-seconds", "1")
    assert r.exit_code == ExitCode.ERROR and "max_seconds" in r.output
    assert _extract(ra, out, "--labels", str(_write(tmp_path / "l.csv", "name,emotion\nclip,happy\n"))).exit_code == 0


def test_store_records_identity_and_changed_reports_it(tmp_path):
    p = tmp_path / "ds" / "toy.h5"
    w = StoreWriter(p, toy_provenance(), ["0"])
    w.add("a", Encoded(layers={"0": np.ones(4)}), identity="blake2b128-3x1MiB:10:aa")
    w.add("b", Encoded(layers={"0": np.ones(4)}), identity="blake2b128-3x1MiB:10:bb")
    w.finalize()
    w.close()
    assert FeatureStore(p).identity("a") == "blake2b128-3x1MiB:10:aa"
    w = StoreWriter(p, toy_provenance(), ["0"])
    changed = w.changed({"a": "blake2b128-3x1MiB:12:cc", "b": "blake2b128-3x1MiB:10:bb"})
    assert changed == {"a": "content changed (size 10 -> 12 bytes)"}
    w.invalidate(changed)
    assert w.done == {"b"}
    w.close()
    assert FeatureStore(p).names == ["b"]


def test_store_writer_refuses_non_finite_frames(tmp_path):
    w = StoreWriter(tmp_path / "d" / "t.h5", toy_provenance(), ["0"], frames=True)
    with pytest.raises(StoreError, match="x: frame-level layer 0 has non-finite"):
        w.add("x", Encoded(layers={"0": np.ones(3)}, frames={"0": np.array([[1.0, np.nan, 0.0]])}))
    w.close()


def test_lock_symlink_refused_target_untouched(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "toy.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="toy.lock.*symbolic link"):
        StoreWriter(tmp_path / "ds" / "toy.h5", toy_provenance(), ["0"])
    assert victim.read_text() == "precious"


def test_old_style_tmp_links_ignored_by_store_and_manifest(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    d = tmp_path / "ds"
    d.mkdir()
    (d / "toy.h5.tmp").symlink_to(victim)
    (d / f"samples.csv.{os.getpid()}.tmp").symlink_to(victim)
    w = StoreWriter(d / "toy.h5", toy_provenance(), ["0"])
    w.add("a", Encoded(layers={"0": np.ones(2)}))
    w.finalize()
    w.close()
    write_manifest(d, SimpleNamespace(name="x", root=tmp_path, classes=None), [Sample("a", None)])
    assert victim.read_text() == "precious"
    (d / "samples.csv").unlink()
    (d / "samples.csv").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        write_manifest(d, SimpleNamespace(name="x", root=tmp_path, classes=None), [Sample("a", None)])
    assert victim.read_text() == "precious"


def test_fletcher32_catches_flipped_bytes_and_reader_names_file(tmp_path):
    p = _toy_store(tmp_path)
    with h5py.File(p, "r") as f:
        assert f["layers/0"].fletcher32 and f.attrs["schema"] == 2
    _flip(p)
    s = FeatureStore(p)
    with pytest.raises(StoreError, match=r"toy\.h5: layer data unreadable: .*Fletcher-32"):
        s.read()


def test_corrupt_store_quarantined_and_only_its_samples_recomputed(tmp_path):
    p = _toy_store(tmp_path)
    _flip(p)
    w = StoreWriter(p, toy_provenance(), ["0"], dtype="float32")
    assert w.done == set() and len(w.quarantined) == 1 and "Fletcher-32" in w.quarantined[0]
    assert not p.exists() and len(list((p.parent / "quarantine").glob("toy.h5.*.reason.txt"))) == 1
    w.close()


def test_truncated_shard_quarantined_store_kept(tmp_path):
    p = _toy_store(tmp_path)
    parts = p.parent / "toy.parts"
    parts.mkdir()
    shard = parts / "part-1-000000.h5"
    shutil.copy(p, shard)
    with h5py.File(shard, "r+") as f:  # make it a shard of other samples
        del f["names"]
        f.create_dataset("names", data=np.array([f"t{i}" for i in range(20)], dtype=object), dtype=h5py.string_dtype())
    shard.write_bytes(shard.read_bytes()[:3000])
    w = StoreWriter(p, toy_provenance(), ["0"], dtype="float32")
    assert w.done == {f"s{i}" for i in range(20)} and "part-1-000000.h5" in w.quarantined[0]
    w.close()


def test_store_info_names_missing_attribute_and_schema(tmp_path):
    p = _toy_store(tmp_path)
    with h5py.File(p, "r+") as f:
        f.attrs["schema"] = 7
    r = CliRunner().invoke(app, ["store", "info", str(p)])
    assert r.exit_code == ExitCode.ERROR and "toy.h5" in r.output and "schema 7 is not supported" in r.output
    with h5py.File(p, "r+") as f:
        f.attrs["schema"] = 2
        del f.attrs["layers"]
    r = CliRunner().invoke(app, ["store", "info", str(p)])
    assert r.exit_code == ExitCode.ERROR and "missing attribute 'layers'" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_refused_rerun_leaves_manifest_of_the_store(shared, tmp_path):
    ra, rb, out = _two_roots_one_store(shared, tmp_path)
    assert _extract(rb, out).exit_code == ExitCode.ERROR
    meta = json.loads((out / "folder" / "dataset.json").read_text())
    assert meta["root"] == str(ra.resolve())  # still describes the store's data

