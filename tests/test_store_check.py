"""Store integrity: every kind of damage is named with its file; quarantine moves a file aside."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from emo.extract.encoders.base import Encoded
from emo.extract.store import StoreWriter
from emo.extract.store_check import StoreCorruptError, quarantine, verify_store_file

from helpers import toy_provenance


def _store(tmp_path, n=6, d=8):
    p = tmp_path / "ds" / "toy.h5"
    w = StoreWriter(p, toy_provenance(), ["0", "1"])
    rng = np.random.default_rng(0)
    for i in range(n):
        w.add(f"s{i}", Encoded(layers={"0": rng.normal(size=d), "1": rng.normal(size=d)}))
    w.finalize()
    w.close()
    return p


def test_good_store_verifies(tmp_path):
    p = _store(tmp_path)
    attrs = verify_store_file(p)
    assert attrs["encoder"] == "toy"


@pytest.mark.parametrize("edit, problem", [
    (lambda f: f.attrs.__delitem__("schema"), "missing attribute 'schema'"),
    (lambda f: f.attrs.__setitem__("schema", 99), "schema 99 is not supported"),
    (lambda f: f.attrs.__delitem__("layers"), "missing attribute 'layers'"),
    (lambda f: f.attrs.__setitem__("layers", "oops"), "not a JSON list"),
    (lambda f: f.__delitem__("failed"), "missing dataset(s) failed/names, failed/errors"),
    (lambda f: f.__delitem__("layers/1"), "missing dataset(s) layers/1"),
    (lambda f: f["layers/0"].__setitem__(2, np.full(8, np.nan, np.float16)), "layers/0 row 2 holds non-finite"),
])
def test_damage_is_named(tmp_path, edit, problem):
    p = _store(tmp_path)
    with h5py.File(p, "r+") as f:
        edit(f)
    with pytest.raises(StoreCorruptError) as e:
        verify_store_file(p)
    assert str(p) in str(e.value) and problem in str(e.value)


def test_truncated_and_foreign_files(tmp_path):
    p = _store(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorruptError, match="truncated|corrupt|cannot be read"):
        verify_store_file(p)
    p.write_text("not hdf5")
    with pytest.raises(StoreCorruptError, match="not an HDF5 file"):
        verify_store_file(p)


def test_quarantine_moves_file_aside_with_reason(tmp_path):
    p = _store(tmp_path)
    dest = quarantine(p, "truncated")
    assert not p.exists() and dest.parent == p.parent / "quarantine" and dest.name.startswith("toy.h5.")
    assert (dest.parent / f"{dest.name}.reason.txt").read_text().strip().endswith("truncated")
    shard_dir = tmp_path / "ds" / "toy.parts"
    shard_dir.mkdir()
    shard = shard_dir / "part-1.h5"
    shard.write_text("x")
    assert quarantine(shard, "bad").parent == tmp_path / "ds" / "quarantine"
