"""Issue 25 (reliability, round three): integrity from end to end, interrupts that lose nothing.

One test per numbered finding (1-8) of the issue, each reproducing the reported failure on the
real code path (real EmoDB audio, the real CLI where the exit code matters); each failed before
the change and passes after it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import run_emo

EMO = [sys.executable, "-m", "emo.cli"]
TRAIN = ["--folds", "2", "--epochs", "20", "--seeds", "1", "--hidden", "16", "--head", "mlp", "--normalize", "global"]


def emo(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EMO, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mini(shared, tmp_path_factory):
    """12 EmoDB clips (anger / neutral / sadness), labels, the eGeMAPS and MFCC stores and a 2-fold run."""
    work = tmp_path_factory.mktemp("r3")
    root = work / "root"
    root.mkdir()
    rows = ["name,emotion"]
    wav = sorted((shared / "emodb" / "wav").glob("*.wav"))
    for letter, emotion in (("W", "anger"), ("N", "neutral"), ("T", "sadness")):
        for p in [w for w in wav if w.stem[5] == letter][:4]:
            shutil.copy(p, root / p.name)
            rows.append(f"{p.stem},{emotion}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    feats = work / "feats"
    for enc in ("egemaps", "mfcc"):
        run_emo("extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--encoder", enc, "--out", str(feats),
                "--no-progress")
    run = work / "run"
    run_emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", str(feats), *TRAIN,
            "--allow-rare-classes", "--out", str(run))
    return {"work": work, "root": root, "feats": feats, "run": run, "spare": [w for w in wav if w.stem[5] == "F"][:2]}


# ---------------------------------------------------------------------------------------------- finding 1
def test_finding1_interrupt_swallowed_by_a_ctypes_callback_never_stores_the_clip(mini, tmp_path):
    """openSMILE calls back into Python through ctypes; a KeyboardInterrupt raised there is printed as
    "Exception ignored on calling ctypes callback" and swallowed. The engine must still see the signal,
    keep the clips finished before it, and never store the clip in flight."""
    from emo.exitcodes import clear_interrupt, install_signal_handlers
    from emo.extract.datasets import get_dataset
    from emo.extract.encoders.acoustic import MFCCEncoder
    from emo.extract.engine import Extractor
    from emo.extract.store import FeatureStore, merge, store_path

    CB = ctypes.CFUNCTYPE(ctypes.c_int)
    calls = {"n": 0}

    def in_c():  # runs "inside C": the handler's exception is swallowed by ctypes
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        return 0

    callback = CB(in_c)

    class SwallowingEncoder(MFCCEncoder):
        def encode(self, batch):
            calls["n"] += 1
            if calls["n"] == 3:
                callback()  # the signal arrives here and is swallowed, as in openSMILE
                return [type(o)(layers={k: np.zeros_like(v) for k, v in o.layers.items()}) for o in super().encode(batch)]
            return super().encode(batch)

    install_signal_handlers()
    adapter = get_dataset("folder", str(mini["root"]), dataset_name="folder")
    samples = adapter.samples()
    ex = Extractor([], out=tmp_path, encoders=[SwallowingEncoder("mfcc")], progress=False)
    ex.bucket_pool, ex.window = 0, 1  # one clip per batch
    try:
        with pytest.raises(KeyboardInterrupt):
            ex.run(adapter, samples)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        clear_interrupt()
    path = store_path(tmp_path, "folder", "mfcc")
    merge(path)
    st = FeatureStore(path)
    ref = FeatureStore(mini["feats"] / "folder" / "mfcc.h5")
    assert 0 < len(st.names) < len(samples)  # finished clips kept, the rest not done
    got = st.read(["stats"])
    want = ref.read(["stats"], st.names)
    assert not (got == 0).all(axis=(1, 2)).any()  # no zero row from the clip in flight
    # the same clips as an uninterrupted run (float32 MFCC statistics agree to rounding across processes/threads)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_finding1_sigterm_during_extract_exits_130_and_keeps_finished_clips(mini, tmp_path):
    out = tmp_path / "feat"
    p = subprocess.Popen([*EMO, "extract", "--dataset", "folder", "--name", "folder", "--root", str(mini["root"]),
                          "--encoder", "egemaps", "--out", str(out), "--no-progress", "--shard-size", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    parts = out / "folder" / "egemaps.parts"
    while time.time() < deadline and not (parts.is_dir() and any(parts.glob("part-*.h5"))):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:  # finished before the signal: nothing to check
        pytest.skip("extraction finished before SIGTERM arrived")
    assert p.returncode == 130, err
    assert "SIGTERM" in err and "Traceback" not in err
    from emo.extract.store import FeatureStore, merge

    merge(out / "folder" / "egemaps.h5")
    st, ref = FeatureStore(out / "folder" / "egemaps.h5"), FeatureStore(mini["feats"] / "folder" / "egemaps.h5")
    assert len(st.names) >= 1
    assert np.array_equal(st.read(["functionals"]), ref.read(["functionals"], st.names))


# ---------------------------------------------------------------------------------------------- finding 2
def _killed_partial(tmp_path, monkeypatch):
    import emo.fuse.eval.cv as cv
    from emo.fuse.config import TrainConfig
    from emo.fuse.training.resume import partial_dir
    from emo.fuse.training.train import train
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    cfg = TrainConfig(head="mlp", hidden=16, epochs=6, patience=6, seeds=1, lr=0.01, batch_size=16, batched=False)
    real_fit, calls = cv.fit_model, {"n": 0}

    def dying_fit(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(cv, "fit_model", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "run")
    monkeypatch.setattr(cv, "fit_model", real_fit)
    from emo import fsio

    fsio.unlock_dir(tmp_path / "run")
    return feats, cfg, partial_dir(tmp_path / "run") / "seed-0", train


def test_finding2_resume_recomputes_a_fold_with_flipped_bytes(tmp_path, monkeypatch):
    feats, cfg, part, train = _killed_partial(tmp_path, monkeypatch)
    ref, _ = train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "ref")
    ck = part / "fold-0.safetensors"
    data = bytearray(ck.read_bytes())
    data[-40:-36] = b"\xff\xff\xff\x7f"  # flipped exponent bits in the tensor data
    ck.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"fold-0\.safetensors.*SHA-256"):
        res, _ = train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "run")
    assert np.array_equal(res.oof["probs"], ref.oof["probs"])  # recomputed, not reused
    assert (tmp_path / "ref" / "predictions.csv").read_text() == (tmp_path / "run" / "predictions.csv").read_text()


def test_finding2_truncated_fold_and_invalid_json_are_named(tmp_path, monkeypatch):
    from emo.fuse.training.resume import FoldCache, ResumeError

    feats, cfg, part, train = _killed_partial(tmp_path, monkeypatch)
    ck = part / "fold-0.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])  # truncated
    cache = FoldCache.__new__(FoldCache)
    cache.dir = part
    assert "fold-0.safetensors" in cache.problem(0)
    with pytest.raises(ResumeError, match=r"fold-0\.safetensors.*--restart"):
        cache.load(0)
    (part / "fingerprint.json").write_text("{not json")
    with pytest.raises(ResumeError, match=r"fingerprint\.json.*--restart"):
        train(feats, "synth", ["hubert_large:1-3"], cfg, protocol="speaker", out=tmp_path / "run")


# ---------------------------------------------------------------------------------------------- finding 3
def test_finding3_store_copied_under_another_encoder_name_is_refused(mini, tmp_path):
    feats = tmp_path / "feats"
    shutil.copytree(mini["feats"], feats)
    shutil.copy(feats / "folder" / "mfcc.h5", feats / "folder" / "egemaps.h5")
    r = emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", feats, *TRAIN,
            "--allow-rare-classes", "--out", tmp_path / "run")
    assert r.returncode == 1 and "egemaps.h5" in r.stderr and "'mfcc'" in r.stderr and "'egemaps'" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_finding3_edited_config_is_refused_by_score(mini, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mini["run"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["classes"] = cfg["classes"][:-1]  # shortened: 5 header columns, 7 values per row before
    (run / "config.json").write_text(json.dumps(cfg, indent=1))
    out = tmp_path / "p.csv"
    r = emo("score", mini["spare"][0], "--run", run, "--out", out, "--no-progress")
    assert r.returncode == 1 and "config.json" in r.stderr and "SHA-256" in r.stderr, r.stderr
    assert not out.exists()


def test_finding3_store_info_verify_reports_flipped_data_bytes(mini, tmp_path):
    store = tmp_path / "folder" / "egemaps.h5"
    store.parent.mkdir()
    shutil.copy(mini["feats"] / "folder" / "egemaps.h5", store)
    with h5py.File(store, "r") as f:
        ds = f["layers"]["functionals"]
        off = int(ds.id.get_chunk_info(0).byte_offset) if ds.chunks else int(ds.id.get_offset())
    with open(store, "r+b") as fh:
        fh.seek(off + 8)
        b = bytearray(fh.read(16))
        fh.seek(off + 8)
        fh.write(bytes(x ^ 0x5A for x in b))
    assert emo("store", "info", store).returncode == 0  # the structure alone looks healthy
    r = emo("store", "info", store, "--verify")
    assert r.returncode == 1 and "egemaps.h5" in r.stderr and "Fletcher-32" in r.stderr, r.stderr
    ok = emo("store", "info", mini["feats"] / "folder" / "egemaps.h5", "--verify")
    assert ok.returncode == 0 and "every checksum" in ok.stdout


# ---------------------------------------------------------------------------------------------- finding 4
def test_finding4_foreign_shard_is_quarantined_and_named_never_deleted(mini, tmp_path):
    feats = tmp_path / "feats"
    shutil.copytree(mini["feats"], feats)
    parts = feats / "folder" / "egemaps.parts"
    parts.mkdir()
    shutil.copy(feats / "folder" / "mfcc.h5", parts / "part-99999-000000.h5")  # an MFCC shard, same samples
    r = emo("store", "merge", feats / "folder" / "egemaps.h5")
    assert r.returncode == 0, r.stderr
    assert "part-99999-000000.h5" in r.stderr and "foreign shard" in r.stderr and "encoder" in r.stderr
    kept = list((feats / "folder" / "quarantine").glob("part-99999-000000.h5.*"))
    assert len([k for k in kept if not k.name.endswith(".reason.txt")]) == 1  # moved aside, not deleted
    from emo.extract.store import FeatureStore

    a, b = FeatureStore(feats / "folder" / "egemaps.h5"), FeatureStore(mini["feats"] / "folder" / "egemaps.h5")
    assert a.names == b.names and np.array_equal(a.read(), b.read())


def test_finding4_foreign_shard_with_new_samples_during_extract(mini, tmp_path):
    root = mini["root"]
    feats = tmp_path / "feats"
    shutil.copytree(mini["feats"], feats)
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.copy(mini["spare"][0], sub / "new.wav")
    run_emo("extract", "--dataset", "folder", "--name", "folder", "--root", str(sub), "--encoder", "mfcc", "--out", str(tmp_path / "o"),
            "--no-progress")
    parts = feats / "folder" / "egemaps.parts"
    parts.mkdir()
    shutil.copy(tmp_path / "o" / "folder" / "mfcc.h5", parts / "part-99999-000000.h5")
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "egemaps", "--out", feats, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "part-99999-000000.h5" in r.stdout + r.stderr and "--overwrite" not in r.stdout + r.stderr
    assert any((feats / "folder" / "quarantine").glob("part-99999-000000.h5.*"))


def test_finding4_advice_never_suggests_a_bare_overwrite(mini, tmp_path):
    feats = tmp_path / "feats"
    shutil.copytree(mini["feats"], feats)
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", mini["root"], "--encoder", "egemaps", "--out", feats,
            "--no-progress", "--max-seconds", "1")
    assert r.returncode == 1 and "another --out" in r.stderr
    assert "--overwrite would discard the 12 samples" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------- finding 5
def test_finding5_mer2025_track_file_with_unmatched_quote_is_refused(tmp_path):
    from emo.extract.datasets.base import DatasetError
    from emo.extract.datasets.mer2025 import read_label_csv

    p = tmp_path / "track2_train_ovmerd.csv"
    p.write_text('name,openset\nsample_00000337,"unclosed\nsample_00000338,[happy]\nsample_00000339,[sad]\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"track2_train_ovmerd\.csv: line 2"):
        read_label_csv(p, ["name", "openset"])


def test_finding5_every_label_reader_is_the_strict_one():
    """No adapter or label reader parses CSV by itself (the issue-11 reader is the only one)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for rel in ("extract/datasets/mer.py", "extract/datasets/mer2025.py", "extract/datasets/meld.py", "extract/datasets/folder.py",
                "extract/augment.py", "fuse/methods/pseudo.py"):
        text = (root / rel).read_text(encoding="utf-8")
        if "csv.DictReader" in text or "csv.reader" in text:
            offenders.append(rel)
    assert offenders == []


# ---------------------------------------------------------------------------------------------- finding 6
def test_finding6_sigterm_during_score_keeps_rows_and_resumes(mini, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(8):  # 96 files: the first shard (64 clips) is written mid-extraction
        for p in sorted(mini["root"].glob("*.wav")):
            shutil.copy(p, clips / f"{k}_{p.name}")
    out = tmp_path / "p.csv"
    p = subprocess.Popen([*EMO, "score", str(clips), "--run", str(mini["run"]), "--out", str(out), "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / ".p.csv.score-cache" / "score" / "egemaps.parts"
    deadline = time.time() + 240
    while time.time() < deadline and not (parts.is_dir() and any(parts.glob("part-*.h5"))) and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("scoring finished before SIGTERM arrived")
    assert p.returncode == 130 and "SIGTERM" in err and "Traceback" not in err, err
    import csv

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 96
    done = [r for r in rows if r["status"] == "ok"]
    marked = [r for r in rows if r["status"].startswith("interrupted")]
    assert len(done) + len(marked) == 96 and marked and len(done) >= 64
    r2 = emo("score", clips, "--run", mini["run"], "--out", out, "--no-progress")
    assert r2.returncode == 0, r2.stderr
    fresh = tmp_path / "fresh.csv"
    assert emo("score", clips, "--run", mini["run"], "--out", fresh, "--no-progress").returncode == 0
    assert out.read_text() == fresh.read_text().replace(str(fresh), str(out))
    assert not (tmp_path / ".p.csv.score-cache").exists()


@pytest.mark.parametrize("args", [
    ("extract", "--dataset", "mer2025", "--root", "{work}", "--track", "9", "--encoder", "egemaps", "--out", "{work}/x"),
    ("fuse", "ensemble", "{run}", "{run2}", "--out", "{work}/e", "--threshold", "1.5"),
    ("fuse", "ensemble", "{run}", "{run2}", "--out", "{work}/e", "--threshold", "0.3"),
    ("fuse", "ensemble", "{run}", "{run}", "--out", "{work}/e"),
    ("tune", "hlft", "--dataset", "folder", "--encoder", "hubert_large", "--layers", "21-16", "--features-dir", "{work}"),
    ("extract", "--dataset", "folder", "--root", "{work}", "--encoder", "egemaps", "--out", "{work}/x", "--augment",
     "noise:snr=500-600,source={work}"),
    ("extract", "--dataset", "folder", "--root", "{work}", "--encoder", "egemaps", "--out", "{work}/x", "--augment",
     "noise:snr=-1000--999,source={work}"),
])
def test_finding6_bad_command_lines_exit_2(mini, tmp_path, args):
    run2 = tmp_path / "run2"
    if not run2.exists():
        shutil.copytree(mini["run"], run2)
    fill = {"work": str(tmp_path), "run": str(mini["run"]), "run2": str(run2)}
    r = emo(*[a.format(**fill) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr[-600:])
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- finding 7
def test_finding7_second_training_into_the_same_out_is_refused_by_pid(mini, tmp_path):
    from emo import fsio

    out = tmp_path / "run"
    fsio.lock_dir(out)  # this process is "training" into it
    try:
        r = emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", mini["feats"], *TRAIN,
                "--allow-rare-classes", "--out", out)
    finally:
        fsio.unlock_dir(out)
    assert r.returncode == 1 and f"in use by PID {os.getpid()}" in r.stderr, r.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- finding 8
def test_finding8_compare_and_ensemble_refuse_runs_with_different_folds(mini, tmp_path):
    other = tmp_path / "run3"
    run_emo("fuse", "train", "--dataset", "folder", "--features", "mfcc", "--features-dir", str(mini["feats"]),
            *[a if a != "2" else "3" for a in TRAIN], "--allow-rare-classes", "--out", str(other))
    r = emo("fuse", "compare", mini["run"], other)
    assert r.returncode == 1 and "folds differ" in r.stderr and "2 folds vs 3 folds" in r.stderr, r.stderr
    r = emo("fuse", "ensemble", mini["run"], other, "--out", tmp_path / "e")
    assert r.returncode == 1 and "folds differ" in r.stderr, r.stderr


def test_finding8_fifo_in_corpus_root_is_named(mini, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(mini["root"], root)
    os.mkfifo(root / "pipe.wav")
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "egemaps", "--out", tmp_path / "o",
            "--no-progress", timeout=120)
    assert r.returncode == 0 and "pipe.wav" in r.stderr and "not a regular file" in r.stderr, r.stderr


def test_finding8_ensemble_non_numeric_probability_is_named(mini, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(mini["run"], a)
    run_emo("fuse", "train", "--dataset", "folder", "--features", "mfcc", "--features-dir", str(mini["feats"]), *TRAIN,
            "--allow-rare-classes", "--out", str(b))
    text = (b / "predictions.csv").read_text().splitlines()
    head = text[0].split(",")
    col = next(i for i, c in enumerate(head) if c.startswith("prob_"))
    cells = text[1].split(",")
    cells[col] = "abc"
    text[1] = ",".join(cells)
    (b / "predictions.csv").write_text("\n".join(text) + "\n")
    r = emo("fuse", "ensemble", a, b, "--out", tmp_path / "e")
    assert r.returncode == 1 and "predictions.csv" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_finished_command_ignores_late_signals():
    """Proof run (issue 25): SIGTERM in the last moments of `emo score`, after the complete CSV was written,
    killed the process with -15 (CPython puts the default handler back while it shuts down). Once the
    command has returned, the CLI ignores SIGINT/SIGTERM: the exit status stays the command's own."""
    import signal

    code = ("import signal, sys\n"
            "from emo.cli import main\n"
            "sys.argv = ['emo', '--help']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN, signal.getsignal(signal.SIGINT) == signal.SIG_IGN, rc)\n"
            "import os; os.kill(os.getpid(), signal.SIGTERM)\n"  # a late SIGTERM: ignored, the exit status stays 0
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split()[-3:] == ["True", "True", "0"], r.stdout[-500:]
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # this test process is untouched
