"""Issue 11 (reliability, round two): each failure class fixed at its mechanism.

1 resume identity and provenance, 2 non-finite numbers, 3 links, 4 atomic run directories,
5 corrupt stores, 6 the smaller ones. (Class 7, long audio: tests/test_streaming.py.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from emo.cli import app
from emo.exitcodes import ExitCode
from emo.extract.datasets import DatasetError, get_dataset
from emo.extract.datasets.base import Sample, read_csv, write_manifest
from emo.extract.encoders.base import Encoded
from emo.extract.store import FeatureStore, StoreError, StoreWriter

from helpers import toy_provenance

CLASSES = ["neutral", "angry", "happy"]


def _emodb(shared, k: int) -> list[Path]:
    return sorted((shared / "emodb" / "wav").glob("*.wav"))[:k]


def _extract(root: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", "egemaps",
                                    "--out", str(out), "--no-progress", *extra])


def _vec(out: Path, name: str) -> np.ndarray:
    s = FeatureStore(out / "folder" / "egemaps.h5")
    return s.read(names=[name])[0, 0]


# ------------------------------------------------------------------ 1. identity and provenance
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


@pytest.mark.slow
def test_other_root_and_settings_refused_naming_the_difference(shared, tmp_path):
    (a,) = _emodb(shared, 1)
    ra, rb, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    for d in (ra, rb):
        d.mkdir()
        shutil.copy(a, d / "clip.wav")
    assert _extract(ra, out).exit_code == 0
    r = _extract(rb, out)
    assert r.exit_code == ExitCode.ERROR and "dataset_root" in r.output and "egemaps.h5" in r.output
    r = _extract(ra, out, "--max-seconds", "1")
    assert r.exit_code == ExitCode.ERROR and "max_seconds" in r.output
    assert _extract(ra, out, "--labels", str(_write(tmp_path / "l.csv", "name,emotion\nclip,happy\n"))).exit_code == 0


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


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


# ------------------------------------------------------------------ 2. non-finite numbers
def _dataset(root: Path, n: int = 30, poison: dict[int, float] | None = None) -> Path:
    rng = np.random.default_rng(0)
    feats = root / "features"
    y = np.arange(n) % 3
    samples = [Sample(name=f"u{i:03d}", media=None, discrete=CLASSES[y[i]]) for i in range(n)]
    write_manifest(feats / "synth", SimpleNamespace(name="synth", root=root, classes=CLASSES), samples)
    w = StoreWriter(feats / "synth" / "egemaps.h5", {"encoder": "egemaps", "source": "s", "weights_hash": "h", "modality": "audio",
                                                     "dataset": "synth"}, ["functionals"], dtype="float32")
    for i, s in enumerate(samples):
        w.add(s.name, Encoded(layers={"functionals": (rng.normal(size=6) + y[i]).astype(np.float32)}))
    w.finalize()
    w.close()
    if poison:
        with h5py.File(feats / "synth" / "egemaps.h5", "r+") as f:
            ds = f["layers/functionals"]
            for i, v in poison.items():
                row = ds[i]
                row[0] = v
                ds[i] = row
    return feats


TRAIN = ["fuse", "train", "--dataset", "synth", "--features", "egemaps", "--folds", "3", "--epochs", "3", "--seeds", "1",
         "--hidden", "8", "--head", "mlp"]


def test_store_writer_refuses_non_finite_frames(tmp_path):
    w = StoreWriter(tmp_path / "d" / "t.h5", toy_provenance(), ["0"], frames=True)
    with pytest.raises(StoreError, match="x: frame-level layer 0 has non-finite"):
        w.add("x", Encoded(layers={"0": np.ones(3)}, frames={"0": np.array([[1.0, np.nan, 0.0]])}))
    w.close()


def test_train_refuses_non_finite_inputs_naming_samples(tmp_path):
    feats = _dataset(tmp_path, poison={1: np.nan, 4: np.inf})
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--out", str(tmp_path / "run")])
    assert r.exit_code == ExitCode.ERROR
    assert "non-finite" in r.output and "u001" in r.output and "u004" in r.output and "egemaps.h5" in r.output
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_the_fold(tmp_path):
    feats = _dataset(tmp_path, poison={i: 3e38 for i in range(30)})
    for trainer in ("--sequential", "--batched"):  # both loops carry the guard
        out = tmp_path / f"run{trainer}"
        r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--lr", "10", "--normalize", "none", trainer,
                                             "--out", str(out)])
        assert r.exit_code == ExitCode.ERROR, r.output
        assert "loss became non-finite" in r.output and ("fold" in r.output or "seed" in r.output)
        assert not out.exists()


def _train(tmp_path, name="run", *extra) -> Path:
    feats = tmp_path / "features"
    if not feats.exists():
        _dataset(tmp_path)
    out = tmp_path / name
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), *extra, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_checkpoint_sha256_recorded_and_verified(tmp_path):
    from emo.fuse.run import RunError, load_run

    run = _train(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    assert all(len(f["sha256"]) == 64 for f in cfg["folds"])
    load_run(run).models()
    ck = run / "fold-1.safetensors"
    data = bytearray(ck.read_bytes())
    data[-40:] = os.urandom(40)
    ck.write_bytes(bytes(data))
    with pytest.raises(RunError, match="fold-1.safetensors: SHA-256 does not match"):
        load_run(run)


def test_nan_weights_refused_even_with_matching_hash(tmp_path):
    from safetensors.numpy import load_file, save_file

    from emo.fuse.run import RunError, load_run
    from emo.fuse.runcheck import checkpoint_digests

    run = _train(tmp_path)
    ck = run / "fold-0.safetensors"
    t = {k: np.full_like(v, np.nan) for k, v in load_file(str(ck)).items()}
    save_file(t, str(ck), metadata={"fold": "0", "seeds": "1"})
    cfg = json.loads((run / "config.json").read_text())
    cfg["folds"][0]["sha256"] = checkpoint_digests(run, ["fold-0.safetensors"])["fold-0.safetensors"]
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="non-finite weights"):
        load_run(run).models()


def test_ensemble_refuses_nan_predictions(tmp_path):
    from emo.fuse.ensemble import EnsembleError, ensemble

    a, b = _train(tmp_path, "a"), _train(tmp_path, "b", "--seed", "3")
    p = b / "predictions.csv"
    lines = p.read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[1].split(",")
    cells[head.index("prob_angry")] = "nan"
    lines[1] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(EnsembleError, match="predictions.csv \\(probs\\): non-finite"):
        ensemble([a, b], tmp_path / "ens")


# ------------------------------------------------------------------ 3. links
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


# ------------------------------------------------------------------ 4. run directories
def test_bad_out_refused_before_training(tmp_path):
    feats = _dataset(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--out", str(f)])
    assert r.exit_code == ExitCode.ERROR and "exists and is not a directory" in r.output
    assert "fold" not in r.output.lower().split("error")[0]  # nothing was trained before the refusal
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("x")
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(feats), "--out", str(other)])
    assert r.exit_code == ExitCode.ERROR and "not an emo run" in r.output and (other / "chapter1.tex").exists()


def test_retrain_replaces_run_as_a_whole_and_kill_keeps_previous(tmp_path, monkeypatch):
    import emo.fuse.run as run_mod

    run = _train(tmp_path)
    (run / "fold-9.safetensors").write_bytes(b"stale")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def killed(*a, **k):
        raise KeyboardInterrupt  # a kill while saving

    monkeypatch.setattr(run_mod, "_save_run_into", killed)
    r = CliRunner().invoke(app, TRAIN + ["--features-dir", str(tmp_path / "features"), "--seed", "5", "--out", str(run)])
    assert r.exit_code != 0
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # the previous run, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    _train(tmp_path, "run", "--seed", "5")
    assert not (run / "fold-9.safetensors").exists()


def test_score_refuses_unfinished_temporary_run(tmp_path):
    from emo.fuse.run import RunError, load_run

    run = _train(tmp_path)
    tmp = tmp_path / ".run.x1y2.tmp"
    shutil.copytree(run, tmp)
    with pytest.raises(RunError, match="incomplete run"):
        load_run(tmp)


# ------------------------------------------------------------------ 5. corrupt stores
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


# ------------------------------------------------------------------ 6. the smaller ones
def test_rare_class_refused_unless_allowed(tmp_path):
    from emo.fuse.train import check_class_counts

    lines = []
    counts = check_class_counts(["a", "b", "angyr"], np.array([0, 0, 1, 1, 2]), True, lines.append)
    assert counts == {"a": 2, "b": 2, "angyr": 1} and lines[0] == "class counts: a=2, b=2, angyr=1"
    with pytest.raises(ValueError, match="'angyr' \\(1 sample\\).*--allow-rare-classes"):
        check_class_counts(["a", "b", "angyr"], np.array([0, 0, 1, 1, 2]))


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


@pytest.mark.slow
def test_refused_rerun_leaves_manifest_of_the_store(shared, tmp_path):
    (a,) = _emodb(shared, 1)
    ra, rb, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    for d in (ra, rb):
        d.mkdir()
        shutil.copy(a, d / "clip.wav")
    assert _extract(ra, out).exit_code == 0
    assert _extract(rb, out).exit_code == ExitCode.ERROR
    meta = json.loads((out / "folder" / "dataset.json").read_text())
    assert meta["root"] == str(ra.resolve())  # still describes the store's data
