"""Corpora assembled from symlinks: containment is about where a link lives, not where it points."""

from __future__ import annotations

import pytest

from emo.extract.datasets import DatasetError, get_dataset


def _touch(p, text="x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_symlinked_files_and_folders_inside_the_root_are_samples(tmp_path):
    store = tmp_path / "storage"
    _touch(store / "clips" / "a.wav")
    _touch(store / "b.wav")
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "clips").symlink_to(store / "clips", target_is_directory=True)  # a linked sub-folder
    (root / "b.wav").symlink_to(store / "b.wav")  # a linked file
    (root / "clips2").symlink_to(store / "clips", target_is_directory=True)  # a second link to one folder
    (root / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    _touch(root / "labels.csv", "path,emotion\nclips/a.wav,happy\nb.wav,sad\n")
    samples = {s.name: s for s in get_dataset("folder", root).samples()}
    # the linked folder is entered once (not again as clips2/ or through loop/), names follow the links' places
    assert set(samples) == {"clips/a", "b"}
    assert samples["clips/a"].discrete == "happy" and samples["b"].discrete == "sad"
    assert samples["clips/a"].media == root / "clips" / "a.wav"


def test_paths_escaping_the_root_are_refused_even_lexically(tmp_path):
    root = tmp_path / "corpus"
    _touch(root / "clips" / "a.wav")
    _touch(tmp_path / "outside.wav")
    for bad in ("../outside.wav", "clips/../../outside.wav", str(tmp_path / "outside.wav")):
        _touch(root / "labels.csv", f"path,emotion\n{bad},happy\n")
        with pytest.raises(DatasetError, match="escapes the dataset root|is absolute"):
            get_dataset("folder", root).samples()


def test_index_media_follows_linked_folders(tmp_path):
    from emo.extract.datasets.base import index_media

    _touch(tmp_path / "real" / "s1.mp4")
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "part1").symlink_to(tmp_path / "real", target_is_directory=True)
    assert set(index_media(tmp_path / "video")) == {"s1"}


def test_folder_datasets_are_named_by_their_root_and_name_is_checked(tmp_path):
    a, b = tmp_path / "cremad", tmp_path / "ravdess"
    _touch(a / "x.wav")
    _touch(b / "x.wav")
    assert get_dataset("folder", a).dataset == "cremad" and get_dataset("folder", b).dataset == "ravdess"
    assert get_dataset("folder", a, dataset_name="mine").dataset == "mine"
    assert get_dataset("emodb", a).dataset == "emodb"  # one corpus per adapter: its own name
    with pytest.raises(DatasetError, match="--name"):
        get_dataset("folder", a, dataset_name="../escape")


def test_two_folder_corpora_get_separate_stores(tmp_path):
    """Two folder corpora with a clip of the same name extracted into one --out never share a store."""
    import numpy as np
    from typer.testing import CliRunner

    from emo.cli import app
    from emo.extract.store import FeatureStore

    sr = 16000
    t = np.arange(sr) / sr
    for corpus, f0 in (("c1", 150.0), ("c2", 300.0)):
        root = tmp_path / corpus
        root.mkdir()
        _write_wav(root / "same.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
        r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "mfcc",
                                     "--out", str(tmp_path / "feats"), "--no-progress"])
        assert r.exit_code == 0, r.output
    x1 = FeatureStore(tmp_path / "feats" / "c1" / "mfcc.h5").read()
    x2 = FeatureStore(tmp_path / "feats" / "c2" / "mfcc.h5").read()
    assert x1.shape == x2.shape and not np.allclose(x1, x2)
    assert not (tmp_path / "feats" / "folder").exists()


def _write_wav(path, x, sr):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((x * 32767).astype("<i2").tobytes())
