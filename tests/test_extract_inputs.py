"""Dataset and media inputs are validated with a clear error: strict CSV, escaped names, empty roots,
FIFOs, trust_remote_code, a folder dataset pointed at a file (issue 11, class 6)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from emo.cli import app
from emo.exitcodes import ExitCode
from emo.extract.datasets import DatasetError, get_dataset
from emo.extract.datasets.base import Sample, read_csv, write_manifest


def _extract(root: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps",
                                    "--out", str(out), "--no-progress", *extra])


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def test_strict_csv_unmatched_quote_and_ragged_rows(tmp_path):
    p = _write(tmp_path / "labels.csv", 'name,emotion\na,happy\n"b,sad\nc,angry\n')
    with pytest.raises(DatasetError, match="labels.csv: line 3"):
        read_csv(p, ["name"])
    p = _write(tmp_path / "labels.csv", "name,emotion\na,happy\nb,sad,extra\n")
    with pytest.raises(DatasetError, match="labels.csv: line 3: 3 field"):
        read_csv(p, ["name"])
    p = _write(tmp_path / "labels.csv", 'name,emotion\na,"happy, really"\n')
    assert read_csv(p, ["name"]) == [{"name": "a", "emotion": "happy, really"}]


def test_formula_names_escaped_in_manifest_and_read_back(tmp_path):
    from emo.extract.datasets.base import read_manifest

    write_manifest(tmp_path, SimpleNamespace(name="x", root=tmp_path, classes=None),
                   [Sample("=HYPERLINK(1)", None, valence=-0.5), Sample("@SUM", None)])
    raw = (tmp_path / "samples.csv").read_text()
    assert "'=HYPERLINK(1)" in raw and "'@SUM" in raw and ",-0.5," in raw
    _, back = read_manifest(tmp_path)
    assert [s.name for s in back] == ["=HYPERLINK(1)", "@SUM"] and back[0].valence == -0.5


def test_empty_root_says_no_media_files(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _extract(tmp_path / "empty", tmp_path / "out")
    assert r.exit_code == ExitCode.ERROR and f"no media files under {tmp_path / 'empty'}" in r.output


def test_fifo_refused_by_media(tmp_path):
    from emo.extract.media import MediaError, load_audio

    os.mkfifo(tmp_path / "clip.wav")
    with pytest.raises(MediaError, match="clip.wav: not a regular file"):
        load_audio(tmp_path / "clip.wav")


def test_baichuan_needs_explicit_trust_remote_code():
    from emo.extract.encoders.base import EncoderError
    from emo.extract.registry import parse_encoder_spec

    spec = parse_encoder_spec("baichuan2_13b")
    assert "trust_remote_code" not in spec.entry.options
    with pytest.raises(EncoderError, match="--trust-remote-code"):
        spec.build()


def test_get_dataset_folder_of_a_file_is_refused(tmp_path):
    f = _write(tmp_path / "x.wav", "x")
    with pytest.raises(DatasetError, match="not a directory"):
        get_dataset("folder", f)

