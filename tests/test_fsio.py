"""emo.fsio: atomic writes that never follow links, CSV formula escaping, lock files, atomic directories."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile

import h5py
import numpy as np
import pytest
from emo import fsio
from emo.fsio import UnsafePathError


def test_write_text_bytes_json_roundtrip_and_no_leftovers(tmp_path):
    fsio.write_text(tmp_path / "a.txt", "héllo\r\n")
    fsio.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    fsio.write_json(tmp_path / "c.json", {"x": [1, 2.5]})
    assert (tmp_path / "a.txt").read_bytes() == "héllo\r\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2.5]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json"]
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644


def test_replaces_existing_file_atomically(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    ino = os.stat(p).st_ino
    fsio.write_text(p, "new")
    assert p.read_text() == "new" and os.stat(p).st_ino != ino  # a new file, renamed over the old


def test_json_refuses_nan_when_asked(tmp_path):
    with pytest.raises(ValueError):
        fsio.write_json(tmp_path / "n.json", {"x": float("nan")}, allow_nan=False)
    assert not list(tmp_path.iterdir())


def test_symlink_at_target_is_refused_and_link_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "pred.csv"
    link.symlink_to(victim)
    for write in (lambda: fsio.write_text(link, "evil"), lambda: fsio.write_bytes(link, b"evil"),
                  lambda: fsio.write_json(link, {}), lambda: fsio.write_csv(link, [["a"]])):
        with pytest.raises(UnsafePathError, match="symbolic link"):
            write()
    assert victim.read_text() == "precious" and link.is_symlink()
    dangling = tmp_path / "d.json"
    dangling.symlink_to(tmp_path / "nowhere" / "x")
    with pytest.raises(UnsafePathError):
        fsio.write_json(dangling, {})
    assert not (tmp_path / "nowhere").exists()


def test_planted_links_at_predictable_temp_names_are_never_written(tmp_path):
    """Links at every name an older emo used (x.tmp, x.<pid>.tmp) and at the new prefix are ignored."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "pred.csv"
    for name in ("pred.csv.tmp", f"pred.csv.{os.getpid()}.tmp", ".pred.csv.tmp", ".pred.csv.XXXX.tmp"):
        (tmp_path / name).symlink_to(victim)
    fsio.write_csv(target, [["name", "p"], ["a", "0.5"]])
    assert victim.read_text() == "precious"
    assert target.read_text().splitlines() == ["name,p", "a,0.5"]


def test_mkstemp_exclusive_against_planted_link_at_chosen_name(tmp_path, monkeypatch):
    """Even if an attacker guessed the random name, O_EXCL makes mkstemp pick another one."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = iter(["guess", "guess", "other"])

    class Seq:
        def __next__(self):
            return next(names)

        def __iter__(self):
            return self

    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: Seq())
    (tmp_path / ".out.txt.guess.tmp").symlink_to(victim)
    fsio.write_text(tmp_path / "out.txt", "fine")
    assert victim.read_text() == "precious" and (tmp_path / "out.txt").read_text() == "fine"


def test_error_while_writing_keeps_old_file_and_removes_tmp(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("old")
    with pytest.raises(RuntimeError), fsio.atomic_open(p) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["c.json"]


def test_atomic_path_for_h5py(tmp_path):
    p = tmp_path / "s.h5"
    with fsio.atomic_path(p) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".s.h5.") and tmp.name.endswith(".tmp")
        with h5py.File(tmp, "w") as f:
            f["x"] = np.arange(3)
        assert not p.exists()
    with h5py.File(p, "r") as f:
        assert f["x"][()].tolist() == [0, 1, 2]
    assert [x.name for x in tmp_path.iterdir()] == ["s.h5"]


def test_csv_formula_escaping_owasp_and_numbers_kept(tmp_path):
    cells = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\tx", "plain", "-0.523", "+1e-3", "-inf", "", 3]
    assert [fsio.csv_cell(c) for c in cells] == [
        "'=cmd|' /C calc'!A0", "'+1+1", "'-2+3", "'@SUM(A1)", "'\tx", "plain", "-0.523", "+1e-3", "-inf", "", 3]
    p = fsio.write_csv(tmp_path / "p.csv", [{"name": "=HYPERLINK(\"x\")", "v": "-0.5"}])
    rows = list(csv.reader(io.StringIO(p.read_text())))
    assert rows == [["name", "v"], ["'=HYPERLINK(\"x\")", "-0.5"]]
    assert fsio.csv_unescape(rows[1][0]) == "=HYPERLINK(\"x\")"
    assert fsio.csv_unescape("'plain") == "'plain" and fsio.csv_unescape("-0.5") == "-0.5"


def test_open_nofollow_refuses_links_and_non_regular(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "enc.lock").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="enc.lock.*symbolic link"):
        fsio.open_nofollow(tmp_path / "enc.lock")
    assert victim.read_text() == "precious"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        fsio.open_nofollow(tmp_path / "fifo", os.O_RDWR)
    fd = fsio.open_nofollow(tmp_path / "ok.lock")
    os.write(fd, b"1")
    os.close(fd)
    assert (tmp_path / "ok.lock").read_bytes() == b"1"


def test_atomic_dir_replaces_whole_directory_keeping_old_until_complete(tmp_path):
    run = tmp_path / "run"
    with fsio.atomic_dir(run) as d:
        fsio.write_text(d / "fold-0", "A")
        fsio.write_text(d / "fold-1", "A")
    assert sorted(p.name for p in run.iterdir()) == ["fold-0", "fold-1"]
    with pytest.raises(RuntimeError):
        with fsio.atomic_dir(run) as d:
            fsio.write_text(d / "fold-0", "B")
            assert (run / "fold-0").read_text() == "A"  # the previous run is in place while building
            raise RuntimeError("killed mid-save")
    assert {p.name: p.read_text() for p in run.iterdir()} == {"fold-0": "A", "fold-1": "A"}
    with fsio.atomic_dir(run) as d:
        fsio.write_text(d / "fold-0", "B")
    assert {p.name: p.read_text() for p in run.iterdir()} == {"fold-0": "B"}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporaries or old copies left


def test_atomic_dir_fallback_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "old").write_text("x")
    with fsio.atomic_dir(run) as d:
        (d / "new").write_text("y")
    assert [p.name for p in run.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_atomic_dir_refuses_link_and_file(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError), fsio.atomic_dir(tmp_path / "run"):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnsafePathError, match="not a directory"):
        with fsio.atomic_dir(tmp_path / "file"):
            pass
    assert not list(elsewhere.iterdir())


def test_remove_stale_tmp_only_removes_tmp_and_never_follows(tmp_path):
    victim = tmp_path / "keep"
    victim.mkdir()
    (victim / "f").write_text("x")
    (tmp_path / ".s.h5.abc.tmp").write_text("half")
    (tmp_path / ".s.h5.link.tmp").symlink_to(victim)
    (tmp_path / "s.h5").write_text("store")
    removed = fsio.remove_stale_tmp(tmp_path, "s.h5")
    assert len(removed) == 2 and (victim / "f").exists() and (tmp_path / "s.h5").exists()


def test_sha256_file_streams_and_names_unreadable_file(tmp_path):
    import hashlib

    p = tmp_path / "w.bin"
    data = os.urandom((1 << 20) + 17)  # more than one 1 MiB block
    p.write_bytes(data)
    assert fsio.sha256_file(p) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError, match="nope.bin: cannot read"):
        fsio.sha256_file(tmp_path / "nope.bin")


def test_move_file_never_overwrites_or_follows_links(tmp_path):
    src, dest = tmp_path / "a", tmp_path / "q" / "a.1"
    src.write_text("x")
    dest.parent.mkdir()
    assert fsio.move_file(src, dest) == dest and dest.read_text() == "x" and not src.exists()
    src.write_text("y")
    with pytest.raises(FileExistsError, match="refusing to move"):
        fsio.move_file(src, dest)
    assert dest.read_text() == "x" and src.read_text() == "y"
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(UnsafePathError):
        fsio.move_file(link, tmp_path / "q" / "b")
    assert src.read_text() == "y"


def test_write_with_gives_the_writer_a_temporary_name_with_the_suffix(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("png-bytes")

    out = fsio.write_with(tmp_path / "fig.png", write)
    assert out.read_text() == "png-bytes" and seen[0].name.endswith(".png") and seen[0] != out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_write_safetensors_canonical_for_numpy_and_torch(tmp_path):
    import torch
    from safetensors.numpy import load_file

    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    fsio.write_safetensors(tmp_path / "a.safetensors", a, {"z": "1", "a": "2"})
    fsio.write_safetensors(tmp_path / "b.safetensors", {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
                           {"a": "2", "z": "1"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    np.testing.assert_array_equal(load_file(tmp_path / "a.safetensors")["w"], a["w"])
