"""Run-directory preflight, checkpoint digests, non-finite guards."""

from __future__ import annotations

import numpy as np
import pytest

from emo.fuse.eval.runcheck import (
    NonFiniteError, RunDirError, check_run_dir, check_run_out, checkpoint_digests, nonfinite_rows,
    require_finite, verify_checkpoints,
)


def test_check_run_out(tmp_path):
    assert check_run_out(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        check_run_out(tmp_path / "f")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("x")
    with pytest.raises(RunDirError, match="not an emo run"):
        check_run_out(tmp_path / "other")
    (tmp_path / "link").symlink_to(tmp_path / "other")
    with pytest.raises(RunDirError, match="symbolic link"):
        check_run_out(tmp_path / "link")
    (tmp_path / "prev").mkdir()
    (tmp_path / "prev" / "config.json").write_text("{}")
    check_run_out(tmp_path / "prev")
    with pytest.raises(RunDirError, match="cannot create files"):
        check_run_out("/proc/emo-run")


def test_verify_checkpoints(tmp_path):
    (tmp_path / "fold-0.safetensors").write_bytes(b"a" * 100)
    (tmp_path / "fold-1.safetensors").write_bytes(b"b" * 100)
    d = checkpoint_digests(tmp_path, ["fold-0.safetensors", "fold-1.safetensors"])
    cfg = {"folds": [{"checkpoint": k, "sha256": v} for k, v in d.items()]}
    verify_checkpoints(tmp_path, cfg)
    (tmp_path / "fold-1.safetensors").write_bytes(b"c" * 100)
    with pytest.raises(RunDirError, match="fold-1.safetensors: SHA-256 does not match"):
        verify_checkpoints(tmp_path, cfg)
    (tmp_path / "fold-1.safetensors").unlink()
    with pytest.raises(RunDirError, match="fold-1.safetensors is missing: incomplete"):
        verify_checkpoints(tmp_path, cfg)
    with pytest.warns(UserWarning, match="no SHA-256 recorded"):
        verify_checkpoints(tmp_path, {"folds": [{"checkpoint": "fold-0.safetensors"}]})


def test_check_run_dir(tmp_path):
    (tmp_path / ".run.abc.tmp").mkdir()
    with pytest.raises(RunDirError, match="incomplete run"):
        check_run_dir(tmp_path / ".run.abc.tmp")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        check_run_dir(tmp_path / "file")


def test_nonfinite_rows_and_require_finite():
    x = np.zeros((4, 2, 3), np.float32)
    x[1, 0, 2] = np.nan
    x[3, 1, 0] = np.inf
    assert nonfinite_rows(x).tolist() == [1, 3]
    assert nonfinite_rows([np.zeros((2, 3)), np.array([[np.nan]])]).tolist() == [1]
    with pytest.raises(NonFiniteError, match="store.h5: non-finite values .* in 2 sample\\(s\\): b, d"):
        require_finite(x, ["a", "b", "c", "d"], "store.h5")
    require_finite(np.ones((2, 2)), ["a", "b"], "x")
