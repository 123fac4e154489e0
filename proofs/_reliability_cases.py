"""The issue-11 cases of ``proofs/bad_inputs.py``: one function per case, grouped by failure class.

Every case runs the real CLI (``python -m emo.cli``) in a subprocess on real EmoDB audio (eGeMAPS
features: no model download, seconds per command) and returns a verdict row:

``case``, ``class`` (1-6 as in issue 11; 7: issue 25, integrity and interrupts), ``exit_code``, ``want_exit``, ``message`` (last lines of
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
    cfg.pop("content_sha256", None)  # as a run written before config seals: nothing else catches the NaN weights
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
    other = c.work / "c3e-b"  # a second, different run on the same folds (an identical copy, or other folds, are refused first)
    assert c.train(c.feats, other, "--hidden", "16").rc == 0
    r = emo("fuse", "ensemble", c.run, other, "--out", out)
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


# ----------------------------------------------------------------------------------------- class 7 (issue 25)
USAGE = {2}
INTERRUPTED = {130}


def _mfcc_feats(c: Ctx) -> Path:
    """A copy of the eGeMAPS features with an MFCC store beside (extracted once)."""
    d = c.work / "c7-mfcc-feats"
    if not (d / "folder" / "mfcc.h5").is_file():
        shutil.copytree(c.feats, d, symlinks=True, dirs_exist_ok=True)
        r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", c.root, "--encoder", "mfcc", "--out", d, "--no-progress")
        assert r.rc == 0, r.text
    return d


def _other_run(c: Ctx, name: str, *extra: str, features: str = "egemaps") -> Path:
    out = c.work / name
    if not (out / "config.json").is_file():
        r = emo("fuse", "train", "--dataset", "folder", "--features", features, "--features-dir", _mfcc_feats(c), *TRAIN, *extra, "--out", out)
        assert r.rc == 0, r.text
    return out


def c7_store_renamed_train(c: Ctx) -> dict:
    feats = c.copy_feats("c7a")
    shutil.copy(_mfcc_feats(c) / "folder" / "mfcc.h5", feats / "folder" / "egemaps.h5")
    r = c.train(feats, c.work / "c7a-run")
    return verdict("store_copied_under_other_encoder_train", 7, r, ERROR, "egemaps.h5", ["'mfcc'"],
                   intact=not (c.work / "c7a-run").exists())


def c7_store_renamed_info(c: Ctx) -> dict:
    feats = c.copy_feats("c7b")
    shutil.copy(_mfcc_feats(c) / "folder" / "mfcc.h5", feats / "folder" / "egemaps.h5")
    r = emo("store", "info", feats / "folder" / "egemaps.h5")
    return verdict("store_copied_under_other_encoder_info", 7, r, ERROR, "egemaps.h5", ["'mfcc'"])


def c7_store_renamed_score_reuse(c: Ctx) -> dict:
    feats = c.copy_feats("c7c")
    shutil.copy(_mfcc_feats(c) / "folder" / "mfcc.h5", feats / "folder" / "egemaps.h5")
    out = c.work / "c7c.csv"
    r = c.score(c.run, out, *sorted(c.root.glob("*.wav"))[:3], extra=("--features-dir", str(feats / "folder")))
    fresh = c.work / "c7c-fresh.csv"
    c.score(c.run, fresh, *sorted(c.root.glob("*.wav"))[:3])
    strip = lambda rows: [{k: v for k, v in row.items() if k != "path"} for row in rows]  # noqa: E731
    wrong = not out.is_file() or strip(read_csv_rows(out)) != strip(read_csv_rows(fresh))
    return verdict("store_copied_under_other_encoder_score_reuse", 7, r, OK, "egemaps.h5", ["not reused"], wrong=wrong)


def _flipped_store(c: Ctx, name: str) -> Path:
    feats = c.copy_feats(name)
    store = feats / "folder" / "egemaps.h5"
    flip_bytes(store, tensor_offset(store) + 16, 16)
    return store


def c7_store_info_verify_flipped(c: Ctx) -> dict:
    store = _flipped_store(c, "c7d")
    r = emo("store", "info", store, "--verify")
    return verdict("store_info_verify_flipped_bytes", 7, r, ERROR, "egemaps.h5", ["fletcher-32"])


def c7_store_info_verify_ok(c: Ctx) -> dict:
    r = emo("store", "info", c.store, "--verify")
    return verdict("store_info_verify_intact", 7, r, OK, None, ["every checksum"])


def c7_store_info_verify_shard(c: Ctx) -> dict:
    feats = c.copy_feats("c7e")
    parts = feats / "folder" / "egemaps.parts"
    parts.mkdir()
    shutil.copy(feats / "folder" / "egemaps.h5", parts / "part-00001-000000.h5")
    flip_bytes(parts / "part-00001-000000.h5", tensor_offset(parts / "part-00001-000000.h5") + 16, 16)
    r = emo("store", "info", feats / "folder" / "egemaps.h5", "--verify")
    return verdict("store_info_verify_flipped_pending_shard", 7, r, ERROR, "part-00001-000000.h5", ["fletcher-32"])


def _edit_config(c: Ctx, name: str, edit: Callable[[dict], None]) -> Path:
    run = c.copy_run(name)
    cfg = json.loads((run / "config.json").read_text())
    edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg, indent=1))
    return run


def c7_config_classes_shortened(c: Ctx) -> dict:
    run = _edit_config(c, "c7f", lambda cfg: cfg.__setitem__("classes", cfg["classes"][:-1]))
    out = c.work / "c7f.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("config_classes_shortened_score", 7, r, ERROR, "config.json", ["sha-256"], wrong=out.is_file())


def c7_config_unknown_encoder(c: Ctx) -> dict:
    run = _edit_config(c, "c7g", lambda cfg: cfg.__setitem__("feature_specs", ["nosuchencoder"]))
    out = c.work / "c7g.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("config_unknown_encoder_score", 7, r, ERROR, "config.json", ["sha-256"], wrong=out.is_file())


def c7_config_edited_ensemble(c: Ctx) -> dict:
    run = _edit_config(c, "c7h", lambda cfg: cfg.__setitem__("task", "valence"))
    r = emo("fuse", "ensemble", c.run, run, "--out", c.work / "c7h-ens")
    return verdict("config_edited_ensemble", 7, r, ERROR, "config.json", ["sha-256"])


def c7_config_invalid_json(c: Ctx) -> dict:
    run = c.copy_run("c7i")
    (run / "config.json").write_text('{"task": "discrete", ')
    r = c.score(run, c.work / "c7i.csv", c.spare[0])
    return verdict("config_invalid_json_score", 7, r, ERROR, "config.json", ["json"])


def c7_config_legacy_unsealed(c: Ctx) -> dict:
    """A run written before config.json carried its SHA-256 is still read (unverified), and scores."""
    run = _edit_config(c, "c7j", lambda cfg: cfg.pop("content_sha256", None))
    out = c.work / "c7j.csv"
    r = c.score(run, out, c.spare[0])
    return verdict("config_without_checksum_still_scores", 7, r, OK, None, None, wrong=has_nan(out))


def _partial(c: Ctx, name: str) -> tuple[Path, Path]:
    """A training killed (SIGTERM) after its first finished fold: (out, partial seed dir)."""
    import signal as _signal

    out = c.work / name
    part = c.work / f".{name}.partial" / "seed-0"
    cmd = EMO + ["fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", str(c.feats),
                 "--folds", "4", "--epochs", "60", "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize", "global",
                 "--sequential", "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    t = time.monotonic()
    while time.monotonic() - t < 300 and p.poll() is None and not (part / "fold-0.sha256").exists():
        time.sleep(0.02)
    p.send_signal(_signal.SIGTERM)
    p.communicate(timeout=300)
    assert (part / "fold-0.sha256").exists() and not out.exists(), "training finished before the signal"
    return out, part


def _resume_case(c: Ctx, case: str, damage: Callable[[Path], None], file_hint: str) -> dict:
    out, part = _partial(c, f"c7{case}")
    damage(part)
    r = emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", c.feats, "--folds", "4", "--epochs", "60",
            "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize", "global", "--sequential", "--out", out)
    ref = c.work / "c7-resume-ref"
    if not (ref / "predictions.csv").is_file():
        emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", c.feats, "--folds", "4", "--epochs", "60",
            "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize", "global", "--sequential", "--out", ref)
    wrong = not (out / "predictions.csv").is_file() or read_csv_rows(out / "predictions.csv") != read_csv_rows(ref / "predictions.csv")
    return verdict(case, 7, r, OK, file_hint, ["recomputed"], wrong=wrong)


def _flip_fold(part: Path) -> None:
    ck = part / "fold-0.safetensors"
    data = bytearray(ck.read_bytes())
    data[-40:-36] = b"\xff\xff\xff\x7f"
    ck.write_bytes(bytes(data))


def c7_resume_flipped_fold(c: Ctx) -> dict:
    return _resume_case(c, "resume_fold_flipped_exponent_bits", _flip_fold, "fold-0.safetensors")


def c7_resume_truncated_fold(c: Ctx) -> dict:
    return _resume_case(c, "resume_fold_truncated", lambda part: _truncate(part / "fold-0.safetensors", 0.3), "fold-0.safetensors")


def c7_resume_invalid_fold_json(c: Ctx) -> dict:
    return _resume_case(c, "resume_fold_json_invalid", lambda part: (part / "fold-0.json").write_text("{oops"), "fold-0.json")


def c7_resume_missing_checksum(c: Ctx) -> dict:
    return _resume_case(c, "resume_fold_without_checksum", lambda part: (part / "fold-0.sha256").unlink(), "fold-0.sha256")


def c7_resume_invalid_fingerprint(c: Ctx) -> dict:
    out, part = _partial(c, "c7fp")
    (part / "fingerprint.json").write_text("{broken")
    r = emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", c.feats, "--folds", "4", "--epochs", "60",
            "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize", "global", "--sequential", "--out", out)
    return verdict("resume_fingerprint_invalid_json", 7, r, ERROR, "fingerprint.json", ["--restart"],
                   intact=(part / "fold-0.safetensors").exists())


def _foreign_shard_case(c: Ctx, case: str, edit: Callable[[h5py.File], None] | None, problem: str) -> dict:
    feats = c.copy_feats(f"c7{case}")
    parts = feats / "folder" / "egemaps.parts"
    parts.mkdir()
    shard = parts / "part-99999-000000.h5"
    if edit is None:
        shutil.copy(_mfcc_feats(c) / "folder" / "mfcc.h5", shard)
    else:
        shutil.copy(feats / "folder" / "egemaps.h5", shard)
        with h5py.File(shard, "r+") as f:
            edit(f)
    before = store_values(feats / "folder" / "egemaps.h5")
    r = emo("store", "merge", feats / "folder" / "egemaps.h5")
    after = store_values(feats / "folder" / "egemaps.h5")
    kept = [q for q in (feats / "folder" / "quarantine").glob("part-99999-000000.h5.*") if not q.name.endswith(".txt")]
    return verdict(case, 7, r, OK, "part-99999-000000.h5", [problem], intact=len(kept) == 1, lost=same_values(before, after))


def c7_merge_foreign_encoder(c: Ctx) -> dict:
    return _foreign_shard_case(c, "merge_shard_of_other_encoder", None, "encoder")


def c7_merge_foreign_dataset(c: Ctx) -> dict:
    return _foreign_shard_case(c, "merge_shard_of_other_dataset", lambda f: f.attrs.__setitem__("dataset", "meld"), "dataset")


def c7_merge_foreign_layers(c: Ctx) -> dict:
    return _foreign_shard_case(c, "merge_shard_of_other_layer_set", lambda f: f.attrs.__setitem__("layers", '["functionals", "lld"]'),
                               "layers")


def c7_merge_foreign_settings(c: Ctx) -> dict:
    return _foreign_shard_case(c, "merge_shard_other_max_seconds", lambda f: f.attrs.__setitem__("max_seconds", 1.0), "max_seconds")


def c7_extract_foreign_shard_new_samples(c: Ctx) -> dict:
    feats = c.copy_feats("c7k")
    sub = c.work / "c7k-sub"
    sub.mkdir()
    shutil.copy(c.spare[0], sub / "extra.wav")
    r0 = emo("extract", "--dataset", "folder", "--name", "folder", "--root", sub, "--encoder", "mfcc", "--out", c.work / "c7k-o", "--no-progress")
    assert r0.rc == 0, r0.text
    parts = feats / "folder" / "egemaps.parts"
    parts.mkdir()
    shutil.copy(c.work / "c7k-o" / "folder" / "mfcc.h5", parts / "part-99999-000000.h5")
    before = store_values(feats / "folder" / "egemaps.h5")
    r = c.extract(c.root, feats)
    after = store_values(feats / "folder" / "egemaps.h5")
    advice_bad = "--overwrite" in r.text and "discard" not in r.text
    return verdict("extract_with_foreign_shard_of_new_samples", 7, r, OK, "part-99999-000000.h5", ["foreign shard"],
                   intact=any((feats / "folder" / "quarantine").glob("part-99999-000000.h5.*")) and not advice_bad,
                   lost=same_values(before, after))


def c7_extract_changed_settings_advice(c: Ctx) -> dict:
    feats = c.copy_feats("c7l")
    r = c.extract(c.root, feats, "--max-seconds", "1")
    return verdict("changed_settings_advice_keeps_work", 7, r, ERROR, "egemaps.h5", ["another --out"],
                   intact=same_values(store_values(c.store), store_values(feats / "folder" / "egemaps.h5")) == 0
                   and "--overwrite would discard" in r.text)


def _mer2025(c: Ctx, name: str, files: dict[str, str]) -> Path:
    base = c.work / name
    (base / "video").mkdir(parents=True)
    for i, n in enumerate(("sample_00000337", "sample_00000338", "sample_00000339")):
        shutil.copy(sorted(c.root.glob("*.wav"))[i], base / "video" / f"{n}.wav")
    for fname, text in files.items():
        (base / fname).write_text(text, encoding="utf-8")
    return base


def _mer_extract(c: Ctx, base: Path, track: str, *extra: str) -> R:
    return emo("extract", "--dataset", "mer2025", "--root", base, "--track", track, "--encoder", "egemaps", "--out", base / "out",
               "--no-progress", *extra)


def c7_mer2025_track2_quote(c: Ctx) -> dict:
    base = _mer2025(c, "c7m", {"track2_train_ovmerd.csv": 'name,openset\nsample_00000337,"[unclosed\nsample_00000338,[happy]\n'
                                                          "sample_00000339,[sad]\n"})
    r = _mer_extract(c, base, "2")
    return verdict("mer2025_track2_unmatched_quote", 7, r, ERROR, "track2_train_ovmerd.csv", ["line 2"])


def c7_mer2025_track1_quote(c: Ctx) -> dict:
    base = _mer2025(c, "c7n", {"track1_train_disdim.csv": 'name,discrete,valence\nsample_00000337,"happy,1\nsample_00000338,sad,-1\n'})
    r = _mer_extract(c, base, "1")
    return verdict("mer2025_track1_unmatched_quote", 7, r, ERROR, "track1_train_disdim.csv", ["line 2"])


def c7_mer2025_extra_field(c: Ctx) -> dict:
    base = _mer2025(c, "c7o", {"track1_train_disdim.csv": "name,discrete,valence\nsample_00000337,happy,1,extra\nsample_00000338,sad,-1\n"})
    r = _mer_extract(c, base, "1")
    return verdict("mer2025_track1_extra_field", 7, r, ERROR, "track1_train_disdim.csv", ["line 2"])


def c7_mer2025_subtitles_quote(c: Ctx) -> dict:
    base = _mer2025(c, "c7p", {"track1_train_disdim.csv": "name,discrete,valence\nsample_00000337,happy,1\nsample_00000338,sad,-1\n",
                               "subtitle_chieng.csv": 'name,chinese,english\nsample_00000337,"x,hello\nsample_00000338,y,bye\n'})
    r = _mer_extract(c, base, "1")
    return verdict("mer2025_subtitles_unmatched_quote", 7, r, ERROR, "subtitle_chieng.csv", ["line 2"])


def c7_transcripts_quote(c: Ctx) -> dict:
    t = c.work / "c7q-transcripts.csv"
    t.write_text('name,transcript\nclip,"hello\nother,bye\n', encoding="utf-8")
    r = c.score(c.run, c.work / "c7q.csv", c.spare[0], extra=("--transcripts", str(t)))
    return verdict("score_transcripts_unmatched_quote", 7, r, ERROR, "c7q-transcripts.csv", ["line 2"])


def c7_labels_not_utf8(c: Ctx) -> dict:
    text = (c.root / "labels.csv").read_text().replace("anger", "\u00e4rger")
    root = _labelled_root(c, "c7r", "")
    (root / "labels.csv").write_bytes(text.encode("latin-1"))
    r = c.extract(root, c.work / "c7r-out")
    return verdict("labels_not_utf8", 7, r, ERROR, "labels.csv", ["utf-8"])


def c7_labels_bom(c: Ctx) -> dict:
    root = _labelled_root(c, "c7s", "\ufeff" + (c.root / "labels.csv").read_text())
    r = c.extract(root, c.work / "c7s-out")
    from emo.extract.datasets.base import read_manifest

    _, samples = read_manifest(c.work / "c7s-out" / "folder") if r.rc == 0 else ({}, [])
    wrong = sum(1 for s_ in samples if s_.discrete) != len(samples) or not samples
    return verdict("labels_with_utf8_bom", 7, r, OK, None, None, wrong=wrong)


def _interrupt_case(c: Ctx, case: str, cmd: list, sig, wait_for: Callable[[], bool], check: Callable[[], tuple[bool, int]]) -> dict:
    p = subprocess.Popen(EMO + [str(x) for x in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300 and p.poll() is None and not wait_for():
        time.sleep(0.01)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    r = R(p.returncode, out, err, time.monotonic() - t0)
    ok, lost = check()
    import signal as _signal

    return verdict(case, 7, r, INTERRUPTED, None, [_signal.Signals(sig).name], wrong=not ok, lost=lost)


def _extract_interrupt(c: Ctx, case: str, sig) -> dict:
    out = c.work / f"c7{case}"
    parts = out / "folder" / "egemaps.parts"

    def check() -> tuple[bool, int]:
        rows: dict[str, np.ndarray] = {}
        for f in sorted(parts.glob("part-*.h5")) + ([out / "folder" / "egemaps.h5"] if (out / "folder" / "egemaps.h5").exists() else []):
            rows.update(store_values(f))
        ref = store_values(c.store)
        return bool(rows) and all(np.array_equal(v, ref[n]) for n, v in rows.items()), 0

    return _interrupt_case(c, case, ["extract", "--dataset", "folder", "--name", "folder", "--root", c.root, "--encoder", "egemaps",
                                     "--out", out, "--no-progress", "--shard-size", "2"], sig,
                           lambda: parts.is_dir() and any(parts.glob("part-*.h5")), check)


def c7_sigint_extract(c: Ctx) -> dict:
    import signal as _signal

    return _extract_interrupt(c, "sigint_extract_keeps_finished", _signal.SIGINT)


def c7_sigterm_extract(c: Ctx) -> dict:
    import signal as _signal

    return _extract_interrupt(c, "sigterm_extract_keeps_finished", _signal.SIGTERM)


def _train_interrupt(c: Ctx, case: str, sig) -> dict:
    from emo.fuse.training.resume import fold_problem

    out = c.work / f"c7{case}"
    part = c.work / f".c7{case}.partial" / "seed-0"

    def check() -> tuple[bool, int]:
        return (part / "fold-0.sha256").exists() and fold_problem(part, 0) is None and not out.exists(), 0

    return _interrupt_case(c, case, ["fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", c.feats,
                                     "--folds", "4", "--epochs", "60", "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize",
                                     "global", "--sequential", "--out", out], sig, lambda: (part / "fold-0.sha256").exists(), check)


def c7_sigint_train(c: Ctx) -> dict:
    import signal as _signal

    return _train_interrupt(c, "sigint_train_keeps_folds", _signal.SIGINT)


def c7_sigterm_train(c: Ctx) -> dict:
    import signal as _signal

    return _train_interrupt(c, "sigterm_train_keeps_folds", _signal.SIGTERM)


def _score_interrupt(c: Ctx, case: str, sig) -> dict:
    d = c.work / f"c7{case}"
    d.mkdir()
    for k in range(4):
        for p_ in sorted(c.root.glob("*.wav")):
            shutil.copy(p_, d / f"{k}_{p_.name}")
    out = c.work / f"c7{case}.csv"
    parts = c.work / f".c7{case}.csv.score-cache" / "score" / "egemaps.parts"

    def check() -> tuple[bool, int]:
        if not out.is_file():
            return False, 96
        rows = read_csv_rows(out)
        ok = [r_ for r_ in rows if r_["status"] == "ok"]
        marked = [r_ for r_ in rows if r_["status"].startswith("interrupted")]
        return len(rows) == 96 and len(ok) + len(marked) == 96 and bool(marked), 0

    return _interrupt_case(c, case, ["score", d, "--run", c.run, "--out", out, "--no-progress"], sig,
                           lambda: parts.is_dir() and any(parts.glob("part-*.h5")), check)


def c7_sigint_score(c: Ctx) -> dict:
    import signal as _signal

    return _score_interrupt(c, "sigint_score_writes_rows_so_far", _signal.SIGINT)


def c7_sigterm_score(c: Ctx) -> dict:
    import signal as _signal

    return _score_interrupt(c, "sigterm_score_writes_rows_so_far", _signal.SIGTERM)


def _usage(case: str, *args, problem: list[str] | None = None, hint: str | None = None) -> Callable[[Ctx], dict]:
    def fn(c: Ctx) -> dict:
        fill = {"work": str(c.work), "run": str(c.run), "root": str(c.root), "feats": str(c.feats)}
        if "{copy}" in " ".join(map(str, args)):
            fill["copy"] = str(c.work / "c7-copy-run") if (c.work / "c7-copy-run").exists() else str(c.copy_run("c7-copy-run"))
        r = emo(*[str(a).format(**fill) for a in args])
        return verdict(case, 7, r, USAGE, hint, problem)

    fn.__name__ = f"c7_{case}"
    return fn


c7_track_9 = _usage("mer2025_track_9", "extract", "--dataset", "mer2025", "--root", "{work}", "--track", "9", "--encoder", "egemaps",
                    "--out", "{work}/u1", problem=["--track"])
c7_subset_bogus = _usage("mer2025_subset_bogus", "extract", "--dataset", "mer2025", "--root", "{work}", "--track", "1", "--subset",
                         "bogus", "--encoder", "egemaps", "--out", "{work}/u2", problem=["subset"])
c7_label_source_bogus = _usage("mer2025_label_source_bogus", "extract", "--dataset", "mer2025", "--root", "{work}", "--track", "2",
                               "--label-source", "bogus", "--encoder", "egemaps", "--out", "{work}/u3", problem=["label_source"])
c7_ensemble_threshold_range = _usage("ensemble_threshold_1_5", "fuse", "ensemble", "{run}", "{copy}", "--out", "{work}/u4",
                                     "--threshold", "1.5", problem=["--threshold"])
c7_ensemble_threshold_single = _usage("ensemble_threshold_on_single_label_runs", "fuse", "ensemble", "{run}", "{copy}", "--out",
                                      "{work}/u5", "--threshold", "0.3", problem=["multi-label"])
c7_ensemble_same_run = _usage("ensemble_same_run_twice", "fuse", "ensemble", "{run}", "{run}", "--out", "{work}/u6", problem=["twice"])
c7_ensemble_copy = _usage("ensemble_copy_of_run", "fuse", "ensemble", "{run}", "{copy}", "--out", "{work}/u7", problem=["copy"])
c7_ensemble_step = _usage("ensemble_step_0", "fuse", "ensemble", "{run}", "{copy}", "--out", "{work}/u8", "--step", "0", problem=["--step"])
c7_ensemble_max_points = _usage("ensemble_max_points_0", "fuse", "ensemble", "{run}", "{copy}", "--out", "{work}/u9", "--max-points", "0",
                                problem=["--max-points"])
c7_hlft_layers_reversed = _usage("hlft_layers_21_16", "tune", "hlft", "--dataset", "folder", "--encoder", "hubert_large", "--layers",
                                 "21-16", "--features-dir", "{feats}", "--out", "{work}/u10", problem=["--layers"])
c7_hlft_layers_garbage = _usage("hlft_layers_garbage", "tune", "hlft", "--dataset", "folder", "--encoder", "hubert_large", "--layers",
                                "a-b", "--features-dir", "{feats}", "--out", "{work}/u11", problem=["--layers"])
c7_snr_high = _usage("augment_snr_500_600", "extract", "--dataset", "folder", "--root", "{root}", "--encoder", "egemaps", "--out",
                     "{work}/u12", "--augment", "noise:snr=500-600,source={root}", problem=["physical range"])
c7_snr_low = _usage("augment_snr_minus_1000", "extract", "--dataset", "folder", "--root", "{root}", "--encoder", "egemaps", "--out",
                    "{work}/u13", "--augment", "noise:snr=-1000--999,source={root}", problem=["physical range"])
c7_snr_garbage = _usage("augment_snr_not_a_number", "extract", "--dataset", "folder", "--root", "{root}", "--encoder", "egemaps", "--out",
                        "{work}/u14", "--augment", "noise:snr=loud,source={root}", problem=["snr"])
c7_augment_kind = _usage("augment_unknown_kind", "extract", "--dataset", "folder", "--root", "{root}", "--encoder", "egemaps", "--out",
                         "{work}/u15", "--augment", "reverb:rt60=1", problem=["unknown kind"])
c7_augment_option = _usage("augment_unknown_option", "extract", "--dataset", "folder", "--root", "{root}", "--encoder", "egemaps", "--out",
                           "{work}/u16", "--augment", "noise:snr=5,source={root},volume=3", problem=["unknown option"])
c7_augment_no_source = _usage("augment_noise_without_source", "extract", "--dataset", "folder", "--root", "{root}", "--encoder", "egemaps",
                              "--out", "{work}/u17", "--augment", "noise:snr=5", problem=["source"])
c7_compare_same = _usage("compare_run_with_itself", "fuse", "compare", "{run}", "{run}", problem=["same directory"])
c7_compare_nboot = _usage("compare_n_boot_0", "fuse", "compare", "{run}", "{copy}", "--n-boot", "0", problem=["--n-boot"])


def c7_train_out_locked(c: Ctx) -> dict:
    from emo import fsio

    out = c.work / "c7-locked"
    fsio.lock_dir(out)
    try:
        r = c.train(c.feats, out)
    finally:
        fsio.unlock_dir(out)
    return verdict("train_out_in_use", 7, r, ERROR, "c7-locked", [f"in use by PID {os.getpid()}"], intact=not out.exists())


def c7_lock_file_symlink(c: Ctx) -> dict:
    out = c.work / "c7-locklink"
    (c.work / ".c7-locklink.lock").symlink_to(c.victim)
    r = c.train(c.feats, out)
    return verdict("run_lock_file_symlink", 7, r, ERROR, ".c7-locklink.lock", ["symbolic link"], intact=c.victim_ok())


def c7_two_trainings_one_out(c: Ctx) -> dict:
    out = c.work / "c7-two"
    cmd = EMO + ["fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", str(c.feats), *TRAIN, "--out", str(out)]
    t = time.monotonic()
    p1 = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    lock = c.work / ".c7-two.lock.pid"
    while time.monotonic() - t < 120 and not lock.exists() and p1.poll() is None:
        time.sleep(0.01)
    p2 = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    o1, e1 = p1.communicate(timeout=300)
    r = R(p2.returncode, p2.stdout, p2.stderr, time.monotonic() - t)
    from emo.fuse.run import RunError, load_run

    try:
        load_run(out)
        complete = p1.returncode == 0
    except RunError:
        complete = False
    return verdict("two_trainings_into_one_out", 7, r, ERROR, "c7-two", ["in use by PID"], intact=complete)


def c7_compare_different_folds(c: Ctx) -> dict:
    other = _other_run(c, "c7-run3", "--folds", "3", features="mfcc")
    r = emo("fuse", "compare", c.run, other)
    return verdict("compare_runs_with_different_folds", 7, r, ERROR, "c7-run3", ["2 folds vs 3 folds"])


def c7_ensemble_different_folds(c: Ctx) -> dict:
    other = _other_run(c, "c7-run3", "--folds", "3", features="mfcc")
    r = emo("fuse", "ensemble", c.run, other, "--out", c.work / "c7-ens3")
    return verdict("ensemble_runs_with_different_folds", 7, r, ERROR, "c7-run3", ["folds differ"], wrong=(c.work / "c7-ens3").exists())


def c7_ensemble_same_folds_ok(c: Ctx) -> dict:
    other = _other_run(c, "c7-run2", features="mfcc")
    r = emo("fuse", "ensemble", c.run, other, "--out", c.work / "c7-ens2")
    return verdict("ensemble_runs_with_same_folds_accepted", 7, r, OK, None, None, wrong=has_nan(c.work / "c7-ens2" / "predictions.csv"))


def c7_compare_same_folds_ok(c: Ctx) -> dict:
    other = _other_run(c, "c7-run2", features="mfcc")
    r = emo("fuse", "compare", c.run, other)
    return verdict("compare_runs_with_same_folds_accepted", 7, r, OK, None, ["A - B"])


def c7_ensemble_non_numeric(c: Ctx) -> dict:
    b = c.work / "c7-nonnum"
    shutil.copytree(_other_run(c, "c7-run2", features="mfcc"), b)
    rows = read_csv_rows(b / "predictions.csv")
    prob = next(k for k in rows[0] if k.startswith("prob_"))
    rows[0][prob] = "abc"
    with open(b / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = emo("fuse", "ensemble", c.run, b, "--out", c.work / "c7-ens-nn")
    return verdict("ensemble_non_numeric_probability", 7, r, ERROR, "predictions.csv", ["malformed"])


def c7_fifo_named(c: Ctx) -> dict:
    root = c.work / "c7-fifo"
    shutil.copytree(c.root, root)
    os.mkfifo(root / "pipe.wav")
    r = c.extract(root, c.work / "c7-fifo-out")
    return verdict("fifo_in_root_is_named", 7, r, OK, "pipe.wav", ["not a regular file"])


# --- issue 25, round four: the rest of finding 8 and the CLIPL-A alignment file
#: multi-label words per EmoDB emotion letter (every word on many clips)
ML_WORDS = {"W": "angry;furious", "N": "neutral;calm", "T": "sad;lonely"}


def _ml_feats(c: Ctx, name: str, edit: Callable[[list[str], dict[str, str]], None]) -> tuple[Path, Path]:
    """The corpus clips (links) with a ``name,emotions`` labels.csv (``edit`` changes the cells), extracted as dataset 'ml'."""
    root = c.work / f"{name}-root"
    root.mkdir()
    names = sorted(p.stem for p in c.root.glob("*.wav"))
    for n in names:
        (root / f"{n}.wav").symlink_to(c.root / f"{n}.wav")
    cells = {n: ML_WORDS[n[5]] for n in names}
    edit(names, cells)
    labels = root / "labels.csv"
    labels.write_text("name,emotions\n" + "".join(f"{n},{cells[n]}\n" for n in names), encoding="utf-8")
    feats = c.work / f"{name}-feats"
    r = emo("extract", "--dataset", "folder", "--name", "ml", "--root", root, "--encoder", "egemaps", "--out", feats, "--no-progress")
    assert r.rc == 0, r.text
    return feats, labels


def _ml_train(feats: Path, out: Path, *extra) -> R:
    return emo("fuse", "train", "--dataset", "ml", "--features", "egemaps", "--features-dir", feats, "--task", "multilabel", *TRAIN,
               *extra, "--out", out)


def _run_warnings(run: Path) -> list[str]:
    return json.loads((run / "config.json").read_text()).get("warnings", []) if (run / "config.json").is_file() else []


def c7_multilabel_empty_sets(c: Ctx) -> dict:
    feats, labels = _ml_feats(c, "c7ml-empty", lambda names, cells: cells.update({n: "" for n in names[::3]}))
    out = c.work / "c7ml-empty-run"
    r = _ml_train(feats, out)
    warned = any("8 of 24 clips have an empty emotion-word set" in w for w in _run_warnings(out))
    n = json.loads((out / "config.json").read_text())["protocol"]["n_labelled"] if (out / "config.json").is_file() else None
    return verdict("multilabel_empty_word_sets_warned", 7, r, OK, str(labels), ["8 of 24 clips have an empty emotion-word set"],
                   wrong=not warned or n != 16)


def c7_multilabel_rare_word(c: Ctx) -> dict:
    feats, labels = _ml_feats(c, "c7ml-rare", lambda names, cells: cells.update({names[0]: "angyr;furious"}))
    out = c.work / "c7ml-rare-run"
    r = _ml_train(feats, out)
    return verdict("multilabel_word_on_one_clip_refused", 7, r, ERROR, str(labels), ["'angyr' (1 clip"], intact=not out.exists())


def c7_multilabel_rare_word_allowed(c: Ctx) -> dict:
    feats, _ = _ml_feats(c, "c7ml-rare-ok", lambda names, cells: cells.update({names[0]: "angyr;furious"}))
    out = c.work / "c7ml-rare-ok-run"
    r = _ml_train(feats, out, "--allow-rare-classes")
    classes = json.loads((out / "config.json").read_text())["classes"] if (out / "config.json").is_file() else []
    return verdict("multilabel_word_on_one_clip_allowed", 7, r, OK, None, ["--allow-rare-classes"],
                   wrong="angyr" not in classes or not any("'angyr'" in w for w in _run_warnings(out)) or has_nan(out / "predictions.csv"))


def c7_multilabel_wheel_unknown(c: Ctx) -> dict:
    def edit(names, cells):
        for n in [n for n in names if n[5] == "T"][:3]:
            cells[n] = "sad;sadd"  # a misspelt word on three clips: not rare, but unknown to the wheel
    feats, labels = _ml_feats(c, "c7ml-wheel", edit)
    out = c.work / "c7ml-wheel-run"
    r = _ml_train(feats, out, "--emotion-wheel", c.shared / "emotion_wheel")
    return verdict("multilabel_word_unknown_to_emotion_wheel_refused", 7, r, ERROR, str(labels), ["'sadd' (3 clips"],
                   intact=not out.exists())


def c7_multilabel_wheel_known(c: Ctx) -> dict:
    feats, _ = _ml_feats(c, "c7ml-wheel-ok", lambda names, cells: None)  # 'neutral' is not on the wheels: accepted (MER's empty list)
    out = c.work / "c7ml-wheel-ok-run"
    r = _ml_train(feats, out, "--emotion-wheel", c.shared / "emotion_wheel")
    classes = json.loads((out / "config.json").read_text())["classes"] if (out / "config.json").is_file() else []
    return verdict("multilabel_wheel_words_accepted", 7, r, OK, None, None, wrong="neutral" not in classes or has_nan(out / "predictions.csv"))


def _nan_row_feats(c: Ctx, name: str) -> tuple[Path, str]:
    feats = c.copy_feats(name)
    with h5py.File(feats / "folder" / "egemaps.h5", "r+") as f:
        names = [x.decode() for x in f["names"][()]]
        ds = f["layers"]["functionals"]
        row = ds[4]
        row[..., 7] = np.nan
        ds[4] = row
    return feats, names[4]


def c7_nan_row_reused_by_score(c: Ctx) -> dict:
    feats, bad = _nan_row_feats(c, "c7nan-score")
    files = [c.root / f"{bad}.wav", sorted(c.root.glob("*.wav"))[0]]
    out, fresh = c.work / "c7nan-score.csv", c.work / "c7nan-score-fresh.csv"
    r = c.score(c.run, out, *files, extra=("--features-dir", str(feats / "folder")))
    c.score(c.run, fresh, *files)
    wrong = not out.is_file() or read_csv_rows(out) != read_csv_rows(fresh) or has_nan(out)
    return verdict("nan_row_in_reused_store_named_not_blamed_on_run", 7, r, OK, str(feats / "folder" / "egemaps.h5"),
                   [f"dataset 'folder' hold non-finite features (nan/inf) in this store: '{bad}'"], wrong=wrong)


def c7_nan_row_train_names_dataset(c: Ctx) -> dict:
    feats, bad = _nan_row_feats(c, "c7nan-train")
    out = c.work / "c7nan-train-run"
    r = c.train(feats, out)
    return verdict("nan_row_in_store_train_names_store_and_dataset", 7, r, ERROR, str(feats / "folder" / "egemaps.h5"),
                   [f"(dataset 'folder'): non-finite values (nan/inf) in 1 sample(s): {bad}"], intact=not out.exists())


def _unknown_encoder_run(c: Ctx, name: str, sealed: bool) -> dict:
    from emo import fsio

    run = _edit_config(c, name, lambda cfg: (cfg.__setitem__("feature_specs", ["nosuchencoder"]), cfg.pop("content_sha256", None)))
    if sealed:  # re-sealed by hand (another emo version, a plugin): the seal verifies, the encoder is still unknown
        (run / "config.json").write_text(json.dumps(fsio.seal_json(json.loads((run / "config.json").read_text())), indent=1))
    out = c.work / f"{name}.csv"
    r = c.score(run, out, c.spare[0])
    return verdict(f"config_unknown_encoder_{'resealed' if sealed else 'unsealed'}_score", 7, r, ERROR, "config.json",
                   ["unknown encoder 'nosuchencoder'"], wrong=out.is_file())


def c7_config_unknown_encoder_unsealed(c: Ctx) -> dict:
    return _unknown_encoder_run(c, "c7ue-legacy", sealed=False)


def c7_config_unknown_encoder_resealed(c: Ctx) -> dict:
    return _unknown_encoder_run(c, "c7ue-sealed", sealed=True)


def _aligned(c: Ctx) -> tuple[Path, Path]:
    """CLIPL-A (MFCC stats -> eGeMAPS functionals) on the corpus, its derived store, and a run trained on it (built once)."""
    feats = c.work / "c7-align-feats"
    run = c.work / "c7-align-run"
    if not (run / "config.json").is_file():
        shutil.copytree(_mfcc_feats(c), feats, symlinks=True, dirs_exist_ok=True)
        r = emo("fuse", "align", "--dataset", "folder", "--features-dir", feats, "--source", "mfcc:stats", "--target", "egemaps",
                "--out", feats / "clipla", "--epochs", "5", "--write")
        assert r.rc == 0, r.text
        r = emo("fuse", "train", "--dataset", "folder", "--features", "mfcc+clipla", "--features-dir", feats, *TRAIN, "--out", run)
        assert r.rc == 0, r.text
    return feats, run


def _align_case(c: Ctx, case: str, damage: Callable[[Path], None] | None, want: set[int], hint: str | None,
                problem: list[str] | None) -> dict:
    feats, run = _aligned(c)
    work = c.work / f"c7al-{case}"
    shutil.copytree(feats / "clipla", work / "clipla")  # a private copy of the alignment run, pointed to by a private derived run
    run2 = work / "run"
    shutil.copytree(run, run2)
    from emo import fsio

    cfg = json.loads((run2 / "config.json").read_text())
    for inp in cfg["inputs"]:
        prov = inp.get("provenance") or {}
        if prov.get("derived_from"):
            d = json.loads(prov["derived_from"])
            d["mlp_file"] = str((work / "clipla" / "clipla.safetensors").resolve())
            prov["derived_from"] = json.dumps(d)
    (run2 / "config.json").write_text(json.dumps(fsio.seal_json(cfg), indent=1))
    if damage is not None:
        damage(work / "clipla")
    out = work / "scores.csv"
    r = c.score(run2, out, c.spare[0])
    return verdict(case, 7, r, want, hint, problem, wrong=has_nan(out) or (0 not in want and out.is_file()))


def _flip_align_digit(d: Path) -> None:
    p = d / "align.json"
    t = p.read_text()
    i = t.index('"video_mean"')
    i += next(k for k, ch in enumerate(t[i:]) if ch.isdigit() and ch != "0")
    p.write_text(t[:i] + str(int(t[i]) - 1) + t[i + 1:])  # valid JSON, another statistic: the derived features would change


def c7_align_intact_scores(c: Ctx) -> dict:
    return _align_case(c, "align_run_intact_scores", None, OK, None, None)


def c7_align_json_flipped(c: Ctx) -> dict:
    return _align_case(c, "align_json_flipped_digit", _flip_align_digit, ERROR, "align.json", ["sha-256"])


def c7_align_json_other_kind(c: Ctx) -> dict:
    return _align_case(c, "align_json_replaced_by_run_config", lambda d: shutil.copy(c.run / "config.json", d / "align.json"), ERROR,
                       "align.json", ["not a CLIPL-A alignment"])


def c7_align_json_invalid(c: Ctx) -> dict:
    return _align_case(c, "align_json_truncated", lambda d: _truncate(d / "align.json", 0.5), ERROR, "align.json", ["json"])


def c7_align_mlp_flipped(c: Ctx) -> dict:
    def flip(d: Path) -> None:
        ck = d / "clipla.safetensors"
        data = bytearray(ck.read_bytes())
        data[-40:-36] = b"\xff\xff\xff\x7f"
        ck.write_bytes(bytes(data))
    return _align_case(c, "align_mlp_flipped_bytes", flip, ERROR, "clipla.safetensors", ["sha-256"])


CASES += [
    c7_store_renamed_train, c7_store_renamed_info, c7_store_renamed_score_reuse, c7_store_info_verify_flipped, c7_store_info_verify_ok,
    c7_store_info_verify_shard, c7_config_classes_shortened, c7_config_unknown_encoder, c7_config_edited_ensemble, c7_config_invalid_json,
    c7_config_legacy_unsealed, c7_resume_flipped_fold, c7_resume_truncated_fold, c7_resume_invalid_fold_json, c7_resume_missing_checksum,
    c7_resume_invalid_fingerprint, c7_merge_foreign_encoder, c7_merge_foreign_dataset, c7_merge_foreign_layers, c7_merge_foreign_settings,
    c7_extract_foreign_shard_new_samples, c7_extract_changed_settings_advice, c7_mer2025_track2_quote, c7_mer2025_track1_quote,
    c7_mer2025_extra_field, c7_mer2025_subtitles_quote, c7_transcripts_quote, c7_labels_not_utf8, c7_labels_bom,
    c7_sigint_extract, c7_sigterm_extract, c7_sigint_train, c7_sigterm_train, c7_sigint_score, c7_sigterm_score,
    c7_track_9, c7_subset_bogus, c7_label_source_bogus, c7_ensemble_threshold_range, c7_ensemble_threshold_single, c7_ensemble_same_run,
    c7_ensemble_copy, c7_ensemble_step, c7_ensemble_max_points, c7_hlft_layers_reversed, c7_hlft_layers_garbage, c7_snr_high, c7_snr_low,
    c7_snr_garbage, c7_augment_kind, c7_augment_option, c7_augment_no_source, c7_compare_same, c7_compare_nboot,
    c7_train_out_locked, c7_lock_file_symlink, c7_two_trainings_one_out, c7_compare_different_folds, c7_ensemble_different_folds,
    c7_ensemble_same_folds_ok, c7_compare_same_folds_ok, c7_ensemble_non_numeric, c7_fifo_named,
    c7_multilabel_empty_sets, c7_multilabel_rare_word, c7_multilabel_rare_word_allowed, c7_multilabel_wheel_unknown,
    c7_multilabel_wheel_known, c7_nan_row_reused_by_score, c7_nan_row_train_names_dataset, c7_config_unknown_encoder_unsealed,
    c7_config_unknown_encoder_resealed, c7_align_intact_scores, c7_align_json_flipped, c7_align_json_other_kind, c7_align_json_invalid,
    c7_align_mlp_flipped,
]


def run_all(work: Path, shared: Path, only: list[str] | None = None, log=print, jobs: int = 1) -> list[dict]:
    """Run every case (or those whose function name contains one of ``only``); a case that raises counts as crashed."""
    c = Ctx(work, shared)
    c.setup()
    fns = [fn for fn in CASES if not only or any(o in fn.__name__ for o in only)]
    if jobs > 1:  # shared fixtures first, then the cases side by side (each writes its own directories)
        _mfcc_feats(c)
        _other_run(c, "c7-run2", features="mfcc")
        _other_run(c, "c7-run3", "--folds", "3", features="mfcc")
        _aligned(c)
        c.copy_run("c7-copy-run")
        ref = c.work / "c7-resume-ref"
        emo("fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", c.feats, "--folds", "4", "--epochs", "60",
            "--seeds", "1", "--hidden", "32", "--head", "mlp", "--normalize", "global", "--sequential", "--out", ref)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as pool:
            return list(pool.map(lambda fn: _one(c, fn, log), fns))
    return [_one(c, fn, log) for fn in fns]


def _one(c: Ctx, fn, log) -> dict:
    if True:
        t = time.monotonic()
        try:
            row = fn(c)
        except Exception as e:  # the proof's own fixture step failed: count it, never hide it
            row = {"case": fn.__name__, "class": int(fn.__name__[1]), "handled": False, "crashed": True,
                   "silently_wrong": False, "lost": 0, "message": f"proof step failed: {type(e).__name__}: {e}"[:400]}
        row.setdefault("seconds", round(time.monotonic() - t, 1))
        log(f"[class {row['class']}] {row['case']:45s} {'ok' if row['handled'] else 'NOT HANDLED'}  "
            f"exit={row.get('exit_code')} {row.get('message', '')[:160]!r}")
        return row
