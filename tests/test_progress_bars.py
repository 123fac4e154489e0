"""--no-progress reaches the libraries' model-loading bars (emo.extract.progress)."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from helpers import tiny_hubert

from emo.extract.progress import model_loading_bars


def _load_stderr(path) -> str:
    from transformers import AutoModel

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        AutoModel.from_pretrained(str(path))
    return buf.getvalue()


@pytest.mark.slow
def test_model_loading_bars_off_inside_and_restored_after(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    model = tiny_hubert(tmp_path / "tiny")
    assert "Loading weights" in _load_stderr(model)  # the bar this is about exists
    with model_loading_bars(False):
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for worker processes started here
        assert _load_stderr(model) == ""
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    assert "Loading weights" in _load_stderr(model)
    with model_loading_bars(True):
        assert "Loading weights" in _load_stderr(model)
