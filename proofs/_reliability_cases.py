"""The issue-11 cases of ``proofs/bad_inputs.py``: one function per case, grouped by failure class.

Every case runs the real CLI (``python -m emo.cli``) in a subprocess on real EmoDB audio (eGeMAPS
features: no model download, seconds per command) and returns a verdict row:

``case``, ``class`` (1-7 as in issue 11), ``exit_code``, ``want_exit``, ``message`` (last lines of
stderr/stdout), ``names_file``, ``names_problem``, ``intact`` (finished work and files outside the
output unchanged), ``crashed`` (a traceback or a hang past the timeout), ``silently_wrong``
(exit 0, or any accepted result, with a wrong value or a NaN in it), ``lost`` (finished samples
or a previous run damaged), ``handled`` (everything as required).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMO = [sys.executable, "-m", "emo.cli"]
#: Exit codes (emo.exitcodes): 0 ok, 1 error, 2 usage, 3 partial (2 before the exit-code unification).
OK, ERROR, PARTIAL = {0}, {1}, {2, 3}
TRAIN = ["--folds", "2", "--epochs", "30", "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize", "global"]


@dataclass
class R:
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False

    @property
    def text(self) -> str:
        return self.err + "\n" + self.out


def emo(*args: str, timeout: float = 300, cwd: Path = ROOT) -> R:
    t = time.monotonic()
    try:
        p = subprocess.run(EMO + [str(a) for a in args], capture_output=True, text=True, cwd=str(cwd), timeout=timeout,
                           check=False)
        return R(p.returncode, p.stdout, p.stderr, time.monotonic() - t)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return R(None, out, err, time.monotonic() - t, timed_out=True)


def verdict(case: str, cls: int, r: R, want: set[int], file_hint: str | None, problem: list[str] | None,
            intact: bool = True, wrong: bool = False, lost: int = 0, note: str = "") -> dict:
    """One result row. ``problem``: alternatives, any of which (case-insensitive) must be in the output."""
    text = r.text
    crashed = r.timed_out or "Traceback (most recent call last)" in r.err or "Traceback" in r.err or "╰─" in r.err
    names_file = file_hint is None or file_hint in text
    names_problem = problem is None or any(p.lower() in text.lower() for p in problem)
    silently_wrong = bool(wrong) or (r.rc == 0 and 0 not in want)
    handled = (r.rc in want and names_file and names_problem and intact and not crashed and not silently_wrong and not lost)
    msg = "\n".join([ln for ln in r.err.strip().splitlines() if ln.strip()][-2:]) or r.out.strip().splitlines()[-1:] and r.out.strip().splitlines()[-1] or ""
    return {"case": case, "class": cls, "exit_code": r.rc, "want_exit": sorted(want), "message": msg[-400:],
            "names_file": names_file, "names_problem": names_problem, "intact": bool(intact), "crashed": crashed,
            "silently_wrong": silently_wrong, "lost": int(lost), "handled": bool(handled), "seconds": round(r.seconds, 1),
            **({"note": note} if note else {})}


def store_values(store: Path) -> dict[str, np.ndarray]:
    with h5py.File(store, "r") as f:
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in f["names"][()]]
        key = json.loads(f.attrs["layers"])[-1]
        return dict(zip(names, f["layers"][key][()]))


def same_values(a: dict, b: dict) -> int:
    """Samples of ``a`` missing from ``b`` or different there (bitwise)."""
    return sum(1 for n, v in a.items() if n not in b or not np.array_equal(v, b[n]))


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def has_nan(path: Path) -> bool:
    if not path.is_file():
        return False
    return any(v.strip().lower() in ("nan", "inf", "-inf") for row in read_csv_rows(path) for v in row.values() if v)


def tensor_offset(store: Path, key: str | None = None) -> int:
    """Byte offset of the first chunk (or contiguous data) of the last layer's dataset."""
    with h5py.File(store, "r") as f:
        key = key or json.loads(f.attrs["layers"])[-1]
        ds = f["layers"][key]
        if ds.chunks:
            return int(ds.id.get_chunk_info(0).byte_offset)
        return int(ds.id.get_offset())


def flip_bytes(path: Path, offset: int, n: int = 64) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = bytearray(fh.read(n))
        for i in range(len(data)):
            data[i] ^= 0x5A
        fh.seek(offset)
        fh.write(bytes(data))


@dataclass
class Ctx:
    """Shared fixtures: a labelled folder of real EmoDB clips, its eGeMAPS store and a trained run."""

    work: Path
    shared: Path
    root: Path = field(init=False)
    feats: Path = field(init=False)
    run: Path = field(init=False)
    spare: list[Path] = field(init=False)
    victim: Path = field(init=False)

    def setup(self) -> None:
        wav = sorted((self.shared / "emodb" / "wav").glob("*.wav"))
        by = {}
        for p in wav:
            by.setdefault(p.stem[5], []).append(p)
        self.root = self.work / "emodb-mini"
        self.root.mkdir(parents=True)
        rows = ["name,emotion"]
        letters = {"W": "anger", "N": "neutral", "T": "sadness"}
        for letter, emotion in letters.items():
            for p in by[letter][:8]:
                shutil.copy(p, self.root / p.name)
                rows.append(f"{p.stem},{emotion}")
        (self.root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        self.spare = [p for p in by["F"][:3]]  # happiness clips: never in training
        self.feats = self.work / "feats"
        r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", self.root, "--encoder", "egemaps", "--out", self.feats, "--no-progress")
        assert r.rc == 0, r.text
        self.run = self.work / "run0"
        r = emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", self.feats,
                *TRAIN, "--out", self.run)
        assert r.rc == 0, r.text
        self.victim = self.work / "victim.txt"
        self.victim.write_text("precious\n")

    @property
    def store(self) -> Path:
        return self.feats / "folder" / "egemaps.h5"

    def copy_feats(self, name: str) -> Path:
        d = self.work / name
        shutil.copytree(self.feats, d, symlinks=True)
        return d

    def copy_run(self, name: str) -> Path:
        d = self.work / name
        shutil.copytree(self.run, d, symlinks=True)
        return d

    def victim_ok(self) -> bool:
        return self.victim.read_text() == "precious\n"

    def extract(self, root: Path, out: Path, *extra: str) -> R:
        return emo("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "egemaps", "--out", out, "--no-progress", *extra)

    def train(self, feats: Path, out: Path, *extra: str) -> R:
        return emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", feats, *TRAIN, *extra,
                   "--out", out)

    def score(self, run: Path, out: Path, *paths: Path, extra: tuple[str, ...] = ()) -> R:
        return emo("score", *paths, "--run", run, "--out", out, "--no-progress", *extra)


# ----------------------------------------------------------------------------------------- class 1
def c1_same_name_other_root(c: Ctx) -> dict:
    a, b, out = c.work / "c1a" / "A", c.work / "c1a" / "B", c.work / "c1a" / "out"
    a.mkdir(parents=True)
    b.mkdir()
    shutil.copy(c.spare[0], a / "clip.wav")
    shutil.copy(c.spare[1], b / "clip.wav")
    assert c.extract(a, out).rc == 0
    before = store_values(out / "folder" / "egemaps.h5")
    r = c.extract(b, out)
    after = store_values(out / "folder" / "egemaps.h5")
    fresh_out = c.work / "c1a" / "fresh"
    c.extract(b, fresh_out)
    fresh = store_values(fresh_out / "folder" / "egemaps.h5")
    kept_old = np.array_equal(after["clip"], before["clip"])
    if r.rc == 0 or r.rc in PARTIAL:  # accepted: the sample must have been recomputed and reported
        ok_value = np.array_equal(after["clip"], fresh["clip"])
        return verdict("same_name_other_root", 1, r, OK, "clip", ["recomputed", "changed"], wrong=not ok_value)
    return verdict("same_name_other_root", 1, r, ERROR, "egemaps.h5", ["root"], intact=kept_old)


def c1_changed_file_same_root(c: Ctx) -> dict:
    root, out = c.work / "c1b" / "root", c.work / "c1b" / "out"
    root.mkdir(parents=True)
    shutil.copy(c.spare[0], root / "clip.wav")
    shutil.copy(c.spare[2], root / "other.wav")
    assert c.extract(root, out).rc == 0
    before = store_values(out / "folder" / "egemaps.h5")
    shutil.copy(c.spare[1], root / "clip.wav")  # a different recording under the same name
    r = c.extract(root, out)
    after = store_values(out / "folder" / "egemaps.h5")
    fresh_out = c.work / "c1b" / "fresh"
    c.extract(root, fresh_out)
    fresh = store_values(fresh_out / "folder" / "egemaps.h5")
    wrong = not np.array_equal(after["clip"], fresh["clip"])
    lost = int(not np.array_equal(after["other"], before["other"]))
    return verdict("changed_file_same_root", 1, r, OK, "clip", ["recomputed", "changed"], wrong=wrong, lost=lost)


def c1_touched_file_is_not_recomputed_wrongly(c: Ctx) -> dict:
    root, out = c.work / "c1c" / "root", c.work / "c1c" / "out"
    root.mkdir(parents=True)
    shutil.copy(c.spare[0], root / "clip.wav")
    assert c.extract(root, out).rc == 0
    before = store_values(out / "folder" / "egemaps.h5")
    os.utime(root / "clip.wav", (time.time() + 100, time.time() + 100))
    r = c.extract(root, out)
    after = store_values(out / "folder" / "egemaps.h5")
    return verdict("touched_file_same_content", 1, r, OK, None, None, wrong=not np.array_equal(before["clip"], after["clip"]))


def _provenance_change(c: Ctx, case: str, first: tuple[str, ...], second: tuple[str, ...], problem: list[str]) -> dict:
    root, out = c.work / case / "root", c.work / case / "out"
    root.mkdir(parents=True)
    shutil.copy(c.spare[0], root / "clip.wav")
    r0 = c.extract(root, out, *first)
    assert r0.rc == 0, r0.text
    before = store_values(out / "folder" / "egemaps.h5")
    r = c.extract(root, out, *second)
    after = store_values(out / "folder" / "egemaps.h5")
    if r.rc == 0:  # accepted only if the values were recomputed under the new settings
        fresh_out = c.work / case / "fresh"
        c.extract(root, fresh_out, *second)
        fresh = store_values(fresh_out / "folder" / "egemaps.h5")
        return verdict(case, 1, r, OK, None, None, wrong=not np.array_equal(after["clip"], fresh["clip"]))
    return verdict(case, 1, r, ERROR, "egemaps.h5", problem, intact=same_values(before, after) == 0)


def c1_max_seconds_changed(c: Ctx) -> dict:
    return _provenance_change(c, "max_seconds_changed", ("--max-seconds", "1.0"), (), ["max_seconds"])


def c1_labels_option_recorded(c: Ctx) -> dict:
    """A label-only option change must not refuse the store (labels do not change features)."""
    root, out = c.work / "c1l" / "root", c.work / "c1l" / "out"
    root.mkdir(parents=True)
    shutil.copy(c.spare[0], root / "clip.wav")
    (c.work / "c1l" / "l.csv").write_text("name,emotion\nclip,happy\n")
    assert c.extract(root, out).rc == 0
    r = c.extract(root, out, "--labels", str(c.work / "c1l" / "l.csv"))
    return verdict("labels_option_change_keeps_store", 1, r, OK, None, None)


def c1_face_detector_changed(c: Ctx) -> dict:
    clip = sorted((c.shared / "av").rglob("*.mp4"))[0]
    root, out = c.work / "c1f" / "root", c.work / "c1f" / "out"
    root.mkdir(parents=True)
    shutil.copy(clip, root / "face.mp4")
    r0 = emo("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "resnet50=random:4", "--out", out,
             "--no-progress", "--face-detector", "haar", "--fps", "1")
    assert r0.rc == 0, r0.text
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "resnet50=random:4", "--out", out,
            "--no-progress", "--face-detector", "mtcnn", "--fps", "1")
    return verdict("face_detector_changed", 1, r, ERROR, "resnet50.h5", ["face_detector"])


def c1_crop_fps_changed(c: Ctx) -> dict:
    clip = sorted((c.shared / "av").rglob("*.mp4"))[0]
    root, out = c.work / "c1g" / "root", c.work / "c1g" / "out"
    root.mkdir(parents=True)
    shutil.copy(clip, root / "face.mp4")
    base = ("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "resnet50=random:4", "--out", out,
            "--no-progress", "--face-detector", "haar")
    assert emo(*base, "--fps", "1").rc == 0
    r = emo(*base, "--fps", "2")
    return verdict("fps_changed", 1, r, ERROR, "resnet50.h5", ["fps"])


def c1_score_cache_same_stem(c: Ctx) -> dict:
    d1, d2, cache = c.work / "c1s" / "d1", c.work / "c1s" / "d2", c.work / "c1s" / "cache"
    d1.mkdir(parents=True)
    d2.mkdir()
    shutil.copy(c.spare[0], d1 / "x.wav")
    shutil.copy(c.spare[1], d2 / "x.wav")
    assert c.score(c.run, c.work / "c1s" / "p1.csv", d1 / "x.wav", extra=("--cache", str(cache))).rc == 0
    r = c.score(c.run, c.work / "c1s" / "p2.csv", d2 / "x.wav", extra=("--cache", str(cache)))
    c.score(c.run, c.work / "c1s" / "fresh.csv", d2 / "x.wav")
    got = read_csv_rows(c.work / "c1s" / "p2.csv") if (c.work / "c1s" / "p2.csv").is_file() else []
    fresh = read_csv_rows(c.work / "c1s" / "fresh.csv")
    strip = lambda rows: [{k: v for k, v in row.items() if k != "path"} for row in rows]  # noqa: E731
    # the cached features must be those of the new file (predictions of a small model may coincide)
    fresh_feats = c.work / "c1s" / "fresh-feats"
    c.extract(d2, fresh_feats)
    cached = store_values(cache / "score" / "egemaps.h5")
    new = store_values(fresh_feats / "folder" / "egemaps.h5")
    wrong = strip(got) != strip(fresh) or not np.array_equal(cached.get("x"), new["x"])
    return verdict("score_cache_same_stem", 1, r, OK, None, None, wrong=wrong)


# ----------------------------------------------------------------------------------------- class 2
def c2_nan_rows_train(c: Ctx) -> dict:
    feats = c.copy_feats("c2n")
    store = feats / "folder" / "egemaps.h5"
    with h5py.File(store, "r+") as f:
        names = [x.decode() for x in f["names"][()]]
        ds = f["layers"]["functionals"]
        row0, row1 = ds[0], ds[1]
        row0[3], row1[5] = np.nan, np.inf
        ds[0], ds[1] = row0, row1
    r = c.train(feats, c.work / "c2n-run")
    return verdict("nan_rows_train", 2, r, ERROR, names[0], ["non-finite"], wrong=(c.work / "c2n-run" / "predictions.csv").is_file()
                   and has_nan(c.work / "c2n-run" / "predictions.csv"))


def c2_checkpoint_random_bytes(c: Ctx) -> dict:
    run = c.copy_run("c2c")
    ck = run / "fold-0.safetensors"
    size = ck.stat().st_size
    with open(ck, "r+b") as fh:
        fh.seek(size - 256)
        fh.write(os.urandom(200))
    out = c.work / "c2c.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("checkpoint_random_bytes", 2, r, ERROR, "fold-0.safetensors", ["sha-256", "sha256", "checksum"],
                   wrong=has_nan(out))


def c2_checkpoint_nan_rehashed(c: Ctx) -> dict:
    """NaN weights with a matching recorded hash (e.g. a run trained before the checks): score must not emit NaN."""
    from safetensors.numpy import load_file, save_file

    run = c.copy_run("c2h")
    ck = run / "fold-0.safetensors"
    t = load_file(str(ck))
    t = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in t.items()}
    save_file(t, str(ck), metadata={"fold": "0", "seeds": "1"})
    cfg = json.loads((run / "config.json").read_text())
    import hashlib

    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    for e in cfg.get("folds", []):
        if e.get("checkpoint") == "fold-0.safetensors" and "sha256" in e:
            e["sha256"] = digest
    if "checkpoints" in cfg:
        cfg["checkpoints"]["fold-0.safetensors"] = digest
    (run / "config.json").write_text(json.dumps(cfg, indent=1))
    out = c.work / "c2h.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("checkpoint_nan_weights_rehashed", 2, r, ERROR | PARTIAL, None, ["non-finite"], wrong=has_nan(out))


def c2_ensemble_nan_predictions(c: Ctx) -> dict:
    a, b = c.copy_run("c2e-a"), c.copy_run("c2e-b")
    p = b / "predictions.csv"
    rows = read_csv_rows(p)
    cols = list(rows[0].keys())
    prob = next(k for k in cols if k.startswith("prob_"))
    for row in rows[:3]:
        row[prob] = "nan"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    out = c.work / "c2e-out"
    r = emo("fuse", "ensemble", a, b, "--out", out)
    return verdict("ensemble_nan_predictions", 2, r, ERROR, "predictions.csv", ["non-finite", "nan"],
                   wrong=has_nan(out / "predictions.csv"))


def c2_huge_features_loss(c: Ctx) -> dict:
    feats = c.copy_feats("c2l")
    with h5py.File(feats / "folder" / "egemaps.h5", "r+") as f:
        ds = f["layers"]["functionals"]
        x = ds[()]
        x[:, 0] = 3e38
        x[:, 1] = -3e38
        ds[...] = x
    out = c.work / "c2l-run"
    r = c.train(feats, out)
    wrong = has_nan(out / "predictions.csv")
    if r.rc == 0:
        return verdict("huge_features_loss", 2, r, OK, None, None, wrong=wrong)
    return verdict("huge_features_loss", 2, r, ERROR, None, ["non-finite"], wrong=wrong)


# ----------------------------------------------------------------------------------------- class 3
def c3_lock_symlink(c: Ctx) -> dict:
    feats = c.copy_feats("c3l")
    (feats / "folder" / "egemaps.lock").unlink(missing_ok=True)  # the lock file of the finished run
    (feats / "folder" / "egemaps.lock").symlink_to(c.victim)
    r = c.extract(c.root, feats)
    return verdict("lock_symlink", 3, r, ERROR, "egemaps.lock", ["symbolic link", "symlink"], intact=c.victim_ok())


def c3_pred_tmp_symlink(c: Ctx) -> dict:
    d = c.work / "c3p"
    d.mkdir()
    (d / "pred.csv.tmp").symlink_to(c.victim)
    r = c.score(c.run, d / "pred.csv", c.spare[0])
    ok = (d / "pred.csv").is_file() and not (d / "pred.csv").is_symlink()
    return verdict("pred_tmp_symlink", 3, r, OK, None, None, intact=c.victim_ok() and ok)


def c3_pred_symlink(c: Ctx) -> dict:
    d = c.work / "c3q"
    d.mkdir()
    (d / "pred.csv").symlink_to(c.victim)
    r = c.score(c.run, d / "pred.csv", c.spare[0])
    return verdict("pred_symlink", 3, r, ERROR, "pred.csv", ["symbolic link", "symlink"], intact=c.victim_ok())


def c3_store_tmp_symlink(c: Ctx) -> dict:
    root = c.work / "c3s-root"
    root.mkdir()
    for p in sorted(c.root.glob("*.wav"))[:4]:
        shutil.copy(p, root / p.name)
    feats = c.work / "c3s"
    assert c.extract(root, feats).rc == 0
    (feats / "folder" / "egemaps.h5.tmp").symlink_to(c.victim)  # the temporary name emo used before emo.fsio
    shutil.copy(c.spare[0], root / "extra.wav")  # one new sample: forces a shard and a merge
    r = c.extract(root, feats)
    return verdict("store_tmp_symlink", 3, r, OK, None, None, intact=c.victim_ok())


def c3_manifest_symlink(c: Ctx) -> dict:
    feats = c.copy_feats("c3m")
    (feats / "folder" / "samples.csv").unlink()
    (feats / "folder" / "samples.csv").symlink_to(c.victim)
    r = c.extract(c.root, feats)
    return verdict("manifest_symlink", 3, r, ERROR, "samples.csv", ["symbolic link", "symlink"], intact=c.victim_ok())


def c3_run_file_symlink(c: Ctx) -> dict:
    run = c.copy_run("c3r")
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(c.victim)
    r = c.train(c.feats, run)
    ok = (run / "metrics.json").is_file() and not (run / "metrics.json").is_symlink()
    return verdict("run_file_symlink_replaced_not_followed", 3, r, OK, None, None, intact=c.victim_ok() and ok)


def c3_run_dir_symlink(c: Ctx) -> dict:
    elsewhere = c.work / "c3d-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("x")
    link = c.work / "c3d-run"
    link.symlink_to(elsewhere)
    r = c.train(c.feats, link)
    return verdict("run_dir_symlink", 3, r, ERROR, "c3d-run", ["symbolic link", "symlink"],
                   intact=sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"])


def c3_ensemble_out_file_symlink(c: Ctx) -> dict:
    out = c.work / "c3e"
    out.mkdir()
    (out / "ensemble.json").symlink_to(c.victim)
    r = emo("fuse", "ensemble", c.run, c.copy_run("c3e-b"), "--out", out)
    return verdict("ensemble_out_symlink", 3, r, ERROR, "ensemble.json", ["symbolic link", "symlink"], intact=c.victim_ok())


# ----------------------------------------------------------------------------------------- class 4
def c4_out_is_file(c: Ctx) -> dict:
    f = c.work / "c4-file"
    f.write_text("not a directory\n")
    r = c.train(c.feats, f)
    return verdict("train_out_is_file", 4, r, ERROR, "c4-file", ["not a directory", "exists"],
                   intact=f.read_text() == "not a directory\n", note=f"{r.seconds:.1f} s")


def c4_out_unwritable(c: Ctx) -> dict:
    r = c.train(c.feats, Path("/proc/emo-run"))
    started = "fold" in r.err.lower() and "epoch" in r.err.lower()
    return verdict("train_out_unwritable", 4, r, ERROR, "/proc", ["not writable", "cannot", "permission", "read-only"],
                   intact=not started)


def c4_score_missing_fold(c: Ctx) -> dict:
    run = c.copy_run("c4m")
    (run / "fold-1.safetensors").unlink()
    out = c.work / "c4m.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("score_run_missing_fold", 4, r, ERROR, "fold-1.safetensors", ["missing", "incomplete"], wrong=out.is_file())


def c4_score_mixed_folds(c: Ctx) -> dict:
    run = c.copy_run("c4x")
    other = c.work / "c4x-other"
    assert c.train(c.feats, other, "--seed", "7").rc == 0
    shutil.copy(other / "fold-1.safetensors", run / "fold-1.safetensors")
    out = c.work / "c4x.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("score_mixed_folds", 4, r, ERROR, "fold-1.safetensors", ["sha-256", "sha256", "checksum", "does not match"],
                   wrong=out.is_file())


def c4_score_temp_run_dir(c: Ctx) -> dict:
    run = c.work / ".c4t-run.abc123.tmp"
    shutil.copytree(c.run, run)
    out = c.work / "c4t.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("score_unfinished_temp_run", 4, r, ERROR, ".c4t-run", ["incomplete", "unfinished", "temporary"], wrong=out.is_file())


def c4_retrain_replaces_whole_run(c: Ctx) -> dict:
    run = c.copy_run("c4r")
    (run / "fold-7.safetensors").write_bytes(b"stale")  # a fold file an older, bigger run left
    r = c.train(c.feats, run)
    stale = (run / "fold-7.safetensors").exists()
    return verdict("retrain_replaces_whole_run", 4, r, OK, None, None, wrong=stale)


def c4_score_out_is_dir(c: Ctx) -> dict:
    d = c.work / "c4o"
    d.mkdir()
    r = c.score(c.run, d, c.spare[0])
    return verdict("score_out_is_directory", 4, r, ERROR, "c4o", ["directory", "not a file"], intact=d.is_dir())


# ----------------------------------------------------------------------------------------- class 5
def _truncate(p: Path, keep: float = 0.5) -> None:
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(int(size * keep))


def c5_truncated_store_info(c: Ctx) -> dict:
    feats = c.copy_feats("c5a")
    _truncate(feats / "folder" / "egemaps.h5")
    r = emo("store", "info", feats / "folder" / "egemaps.h5")
    return verdict("truncated_store_info", 5, r, ERROR, "egemaps.h5", ["truncated", "corrupt", "cannot be opened", "cannot be read"])


def c5_truncated_store_train(c: Ctx) -> dict:
    feats = c.copy_feats("c5b")
    _truncate(feats / "folder" / "egemaps.h5")
    r = c.train(feats, c.work / "c5b-run")
    return verdict("truncated_store_train", 5, r, ERROR, "egemaps.h5", ["truncated", "corrupt", "cannot be opened", "cannot be read"])


def c5_truncated_store_extract(c: Ctx) -> dict:
    feats = c.copy_feats("c5c")
    _truncate(feats / "folder" / "egemaps.h5")
    r = c.extract(c.root, feats)
    try:
        after = store_values(feats / "folder" / "egemaps.h5")
        wrong = same_values(store_values(c.store), after) != 0
    except Exception:
        wrong = True
    return verdict("truncated_store_extract_quarantined", 5, r, OK, "egemaps.h5", ["quarantin"], wrong=wrong)


def c5_truncated_shard_extract(c: Ctx) -> dict:
    feats = c.work / "c5d"
    sub = c.work / "c5d-sub"
    sub.mkdir()
    clips = sorted(c.root.glob("*.wav"))
    for p in clips[:6]:
        shutil.copy(p, sub / p.name)
    assert c.extract(sub, feats).rc == 0
    parts = feats / "folder" / "egemaps.parts"
    parts.mkdir()
    (feats / "folder" / "egemaps.h5").rename(parts / "part-99999-000000.h5")  # a shard of a killed run
    _truncate(parts / "part-99999-000000.h5")
    root2 = c.work / "c5d-root"
    shutil.copytree(c.root, root2)
    r = c.extract(root2, feats)
    try:
        wrong = same_values(store_values(c.store), store_values(feats / "folder" / "egemaps.h5")) != 0
    except Exception:
        wrong = True
    return verdict("truncated_shard_extract_quarantined", 5, r, OK, "part-99999-000000.h5", ["quarantin"], wrong=wrong)


def c5_flipped_bytes_train(c: Ctx) -> dict:
    feats = c.copy_feats("c5e")
    store = feats / "folder" / "egemaps.h5"
    flip_bytes(store, tensor_offset(store) + 16)
    r = c.train(feats, c.work / "c5e-run")
    return verdict("flipped_feature_bytes_train", 5, r, ERROR, "egemaps.h5", ["checksum", "fletcher", "corrupt"])


def c5_flipped_bytes_extract(c: Ctx) -> dict:
    feats = c.copy_feats("c5f")
    store = feats / "folder" / "egemaps.h5"
    flip_bytes(store, tensor_offset(store) + 16)
    r = c.extract(c.root, feats)
    try:
        wrong = same_values(store_values(c.store), store_values(store)) != 0
    except Exception:
        wrong = True
    return verdict("flipped_feature_bytes_extract_quarantined", 5, r, OK, "egemaps.h5", ["quarantin"], wrong=wrong)


def _attr_case(c: Ctx, case: str, edit: Callable[[h5py.File], None], problem: list[str]) -> dict:
    feats = c.copy_feats(case)
    store = feats / "folder" / "egemaps.h5"
    with h5py.File(store, "r+") as f:
        edit(f)
    r = emo("store", "info", store)
    r2 = c.train(feats, c.work / f"{case}-run")
    v1 = verdict(case, 5, r, ERROR, "egemaps.h5", problem)
    v2 = verdict(case, 5, r2, ERROR, "egemaps.h5", problem)
    v1["handled"] = v1["handled"] and v2["handled"]
    v1["crashed"] = v1["crashed"] or v2["crashed"]
    v1["silently_wrong"] = v1["silently_wrong"] or v2["silently_wrong"]
    v1["message"] += " | train: " + v2["message"]
    return v1


def c5_missing_attr(c: Ctx) -> dict:
    return _attr_case(c, "store_missing_layers_attr", lambda f: f.attrs.__delitem__("layers"), ["layers"])


def c5_future_schema(c: Ctx) -> dict:
    return _attr_case(c, "store_future_schema", lambda f: f.attrs.__setitem__("schema", 99), ["schema"])


def c5_missing_schema(c: Ctx) -> dict:
    return _attr_case(c, "store_missing_schema", lambda f: f.attrs.__delitem__("schema"), ["schema"])


def c5_missing_failed_group(c: Ctx) -> dict:
    return _attr_case(c, "store_missing_failed_group", lambda f: f.__delitem__("failed"), ["failed"])


def c5_not_hdf5(c: Ctx) -> dict:
    feats = c.copy_feats("c5n")
    (feats / "folder" / "egemaps.h5").write_text("hello, I am not HDF5\n")
    r = emo("store", "info", feats / "folder" / "egemaps.h5")
    return verdict("store_not_hdf5", 5, r, ERROR, "egemaps.h5", ["not an hdf5", "cannot be opened", "corrupt"])


# ----------------------------------------------------------------------------------------- class 6
def c6_fifo_score(c: Ctx) -> dict:
    d = c.work / "c6f"
    d.mkdir()
    os.mkfifo(d / "clip.wav")
    r = c.score(c.run, d / "p.csv", d / "clip.wav")
    return verdict("fifo_to_score", 6, r, ERROR | PARTIAL, "clip.wav", ["not a regular file"])


def c6_fifo_in_extract_root(c: Ctx) -> dict:
    root = c.work / "c6g"
    shutil.copytree(c.root, root)
    os.mkfifo(root / "pipe.wav")
    r = c.extract(root, c.work / "c6g-out")
    return verdict("fifo_in_dataset_root", 6, r, OK | PARTIAL, None, None)


def _labelled_root(c: Ctx, name: str, labels_text: str) -> Path:
    root = c.work / name
    root.mkdir()
    for p in c.root.glob("*.wav"):
        shutil.copy(p, root / p.name)
    (root / "labels.csv").write_text(labels_text, encoding="utf-8")
    return root


def _labels_with_typo(c: Ctx) -> str:
    lines = (c.root / "labels.csv").read_text().splitlines()
    name, _ = lines[1].split(",")
    lines[1] = f"{name},angyr"
    return "\n".join(lines) + "\n"


def c6_typo_label(c: Ctx) -> dict:
    root = _labelled_root(c, "c6t", _labels_with_typo(c))
    feats = c.work / "c6t-feats"
    assert c.extract(root, feats).rc == 0
    r = c.train(feats, c.work / "c6t-run")
    return verdict("typo_label_rare_class", 6, r, ERROR, "angyr", ["fewer than 2", "fewer than two", "rare"])


def c6_typo_label_allowed(c: Ctx) -> dict:
    root = _labelled_root(c, "c6u", _labels_with_typo(c))
    feats = c.work / "c6u-feats"
    assert c.extract(root, feats).rc == 0
    r = c.train(feats, c.work / "c6u-run", "--allow-rare-classes")
    return verdict("typo_label_allowed_with_flag", 6, r, OK, None, None)


def c6_unmatched_quote(c: Ctx) -> dict:
    lines = (c.root / "labels.csv").read_text().splitlines()
    name, emotion = lines[3].split(",")
    lines[3] = f'"{name},{emotion}'
    root = _labelled_root(c, "c6q", "\n".join(lines) + "\n")
    r = c.extract(root, c.work / "c6q-out")
    return verdict("labels_unmatched_quote", 6, r, ERROR, "labels.csv", ["line 4", "line 3"])


def c6_formula_names(c: Ctx) -> dict:
    d = c.work / "c6x"
    d.mkdir()
    names = ["=HYPERLINK(1)", "+1+1", "-2+3", "@SUM(A1)"]
    for n in names:
        shutil.copy(c.spare[0], d / f"{n}.wav")
    out = c.work / "c6x.csv"
    r = c.score(c.run, out, *[d / f"{n}.wav" for n in names])
    raw = out.read_text(encoding="utf-8") if out.is_file() else ""
    unsafe = any(line.startswith(("=", "+", "-", "@")) or ",=" in line or ",+" in line or ",@" in line for line in raw.splitlines())
    return verdict("formula_file_names_escaped", 6, r, OK, None, None, wrong=unsafe or not raw)


def c6_video_without_audio(c: Ctx) -> dict:
    import av

    clip = sorted((c.shared / "av").rglob("*.mp4"))[0]
    root = c.work / "c6v"
    root.mkdir()
    with av.open(str(clip)) as src, av.open(str(root / "mute.mp4"), "w") as dst:  # the video stream only
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for pkt in src.demux(vin):
            if pkt.dts is not None:
                pkt.stream = vout
                dst.mux(pkt)
    shutil.copy(clip, root / "talk.mp4")
    out = c.work / "c6v-out"
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "egemaps", "--encoder", "resnet50=random:4",
            "--face-detector", "haar", "--fps", "1", "--out", out, "--no-progress")
    ok = False
    try:
        from emo.extract.store import FeatureStore

        s = FeatureStore(out / "folder" / "egemaps.h5")
        ok = "mute" in s.names and "silent" in s.flags("mute")
    except Exception:
        pass
    return verdict("video_without_audio_is_silent", 6, r, OK, None, None, wrong=not ok)


def c6_trust_remote_code(c: Ctx) -> dict:
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", c.root, "--encoder", "baichuan2_13b", "--out", c.work / "c6b",
            "--no-progress", timeout=120)
    return verdict("baichuan2_needs_trust_remote_code_flag", 6, r, ERROR | {2}, None, ["--trust-remote-code"])


def c6_empty_root(c: Ctx) -> dict:
    d = c.work / "c6e"
    d.mkdir()
    (d / "notes.txt").write_text("no media here")
    r = c.extract(d, c.work / "c6e-out")
    return verdict("empty_root", 6, r, ERROR, "c6e", ["no media files under"])


def c6_score_empty_dir(c: Ctx) -> dict:
    d = c.work / "c6s"
    d.mkdir()
    r = c.score(c.run, c.work / "c6s.csv", d)
    return verdict("score_empty_dir", 6, r, ERROR, "c6s", ["no media files"])


def c6_root_is_file(c: Ctx) -> dict:
    r = c.extract(c.spare[0], c.work / "c6r-out")
    return verdict("root_is_a_file", 6, r, ERROR | {2}, c.spare[0].name, ["not a directory"])


def c6_class_counts_printed(c: Ctx) -> dict:
    r = c.train(c.feats, c.work / "c6c-run")
    return verdict("class_counts_printed", 6, r, OK, None, ["anger", "sadness"], wrong=not all(
        w in r.text for w in ("anger", "neutral", "sadness")))


CASES = [
    c1_same_name_other_root, c1_changed_file_same_root, c1_touched_file_is_not_recomputed_wrongly, c1_max_seconds_changed,
    c1_labels_option_recorded, c1_face_detector_changed, c1_crop_fps_changed, c1_score_cache_same_stem,
    c2_nan_rows_train, c2_checkpoint_random_bytes, c2_checkpoint_nan_rehashed, c2_ensemble_nan_predictions, c2_huge_features_loss,
    c3_lock_symlink, c3_pred_tmp_symlink, c3_pred_symlink, c3_store_tmp_symlink, c3_manifest_symlink, c3_run_file_symlink,
    c3_run_dir_symlink, c3_ensemble_out_file_symlink,
    c4_out_is_file, c4_out_unwritable, c4_score_missing_fold, c4_score_mixed_folds, c4_score_temp_run_dir,
    c4_retrain_replaces_whole_run, c4_score_out_is_dir,
    c5_truncated_store_info, c5_truncated_store_train, c5_truncated_store_extract, c5_truncated_shard_extract,
    c5_flipped_bytes_train, c5_flipped_bytes_extract, c5_missing_attr, c5_future_schema, c5_missing_schema,
    c5_missing_failed_group, c5_not_hdf5,
    c6_fifo_score, c6_fifo_in_extract_root, c6_typo_label, c6_typo_label_allowed, c6_unmatched_quote, c6_formula_names,
    c6_video_without_audio, c6_trust_remote_code, c6_empty_root, c6_score_empty_dir, c6_root_is_file, c6_class_counts_printed,
]


def run_all(work: Path, shared: Path, only: list[str] | None = None, log=print) -> list[dict]:
    """Run every case (or those whose function name contains one of ``only``); a case that raises counts as crashed."""
    c = Ctx(work, shared)
    c.setup()
    rows = []
    for fn in CASES:
        if only and not any(o in fn.__name__ for o in only):
            continue
        t = time.monotonic()
        try:
            row = fn(c)
        except Exception as e:  # the proof's own fixture step failed: count it, never hide it
            row = {"case": fn.__name__, "class": int(fn.__name__[1]), "handled": False, "crashed": True,
                   "silently_wrong": False, "lost": 0, "message": f"proof step failed: {type(e).__name__}: {e}"[:400]}
        row.setdefault("seconds", round(time.monotonic() - t, 1))
        log(f"[class {row['class']}] {row['case']:45s} {'ok' if row['handled'] else 'NOT HANDLED'}  "
            f"exit={row.get('exit_code')} {row.get('message', '')[:160]!r}")
        rows.append(row)
    return rows
