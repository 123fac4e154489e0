"""Sample identity: size + blake2b of 3 blocks decides; path and mtime do not."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
from emo.extract import identity as ident
from emo.extract.identity import IdentityError, describe_change, identify
from emo.fsio import sha256_file


def test_same_content_same_identity_across_copy_and_touch(tmp_path):
    a = tmp_path / "a" / "clip.wav"
    a.parent.mkdir()
    a.write_bytes(os.urandom(5000))
    b = tmp_path / "b" / "clip.wav"
    b.parent.mkdir()
    shutil.copy(a, b)
    os.utime(b, ns=(1, 1))
    ia, ib = identify(a), identify(b)
    assert ia.key == ib.key and ia.path != ib.path and ia.mtime_ns != ib.mtime_ns
    assert describe_change(ia.to_dict(), ib) is None


def test_different_clip_same_name_is_detected(tmp_path):
    a, b = tmp_path / "A.wav", tmp_path / "B.wav"
    a.write_bytes(b"RIFF" + os.urandom(4000))
    b.write_bytes(b"RIFF" + os.urandom(4000))
    assert "same size, different bytes" in describe_change(identify(a), identify(b))
    b.write_bytes(b"RIFF" + os.urandom(10))
    assert "size 4004 -> 14 bytes" in describe_change(identify(a), identify(b))


def test_small_files_hashed_fully_large_by_three_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(ident, "BLOCK", 16)
    p = tmp_path / "x"
    data = bytearray(os.urandom(200))
    p.write_bytes(bytes(data))
    h0 = identify(p).hash
    for pos in (0, 100, 199):  # first, middle, last blocks are covered
        changed = bytearray(data)
        changed[pos] ^= 0xFF
        p.write_bytes(bytes(changed))
        assert identify(p).hash != h0, pos
    changed = bytearray(data)
    changed[40] ^= 0xFF  # outside the three blocks: documented blind spot of the fast hash ...
    p.write_bytes(bytes(changed))
    assert identify(p).hash == h0
    assert identify(p, full=True).hash != ident.SampleIdentity.from_dict({**identify(p).to_dict()}).hash  # ... full=True sees it


def test_refuses_fifo_directory_and_missing(tmp_path):
    os.mkfifo(tmp_path / "f")
    with pytest.raises(IdentityError, match="not a regular file"):
        identify(tmp_path / "f")
    with pytest.raises(IdentityError, match="not a regular file"):
        identify(tmp_path)
    with pytest.raises(IdentityError, match="nope"):
        identify(tmp_path / "nope")


def test_sha256_file(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
