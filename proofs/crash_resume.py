"""Proof: `emo extract` survives SIGKILL at any moment and resumes to the same result.

Each trial starts a real extraction (real talking-face clips from ``<shared>/av``, CPU, a
tiny randomly initialised HuBERT saved locally plus eGeMAPS), kills it with SIGKILL at
a chosen moment, checks that every HDF5 file left behind opens and that every sample
finished before the kill is still there, then reruns the same command and compares the
stores with an uninterrupted reference run. Kill moments rotate over four kinds:

* ``timed``: a uniform random delay over the whole run (start-up, decode, encode);
* ``early``: a random delay within the first quarter (model loading, decoding);
* ``shard``: the moment a shard's ``*.tmp`` file appears (mid shard write);
* ``merge``: the moment the final store's ``*.tmp`` appears (mid merge).

Then (issue 11) kills of ``emo fuse train`` while it saves its run directory (the moment its
temporary sibling ``.<run>.*.tmp`` appears, or at a random time) over a previous run, and of
``emo score`` (at a random time during extraction into ``--cache``, or while its CSV is written):
after each kill the run directory must be either the previous run or the new one, complete
(every checkpoint matches its SHA-256) and never a mix; the previous CSV must be intact; the
rerun must give files bitwise identical to an uninterrupted run: every file, checkpoints and
``metrics.json`` included; only ``created`` (wall-clock time) and ``command`` (it names ``--out``)
in ``config.json``, the training time (``seconds``, ``timing``) in ``metrics.json`` and the
``report.md`` lines printing them are left out of the comparison.

Writes ``results/crash_resume.json`` with ``trials``, ``identical``, ``unreadable_files``,
``lost_samples`` (plus per-trial details, bitwise and max-abs comparisons, ``command``).

Run: ``.venv/bin/python proofs/crash_resume.py --shared /work/shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))

ENCODERS = ("hubert_large", "egemaps")


def _args() -> argparse.Namespace:
    ap = parser(__doc__)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--clips", type=int, default=8, help="clips per extraction (spread over all sources)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "crash_resume.json"))
    ap.add_argument("--fuse-trials", type=int, default=12, help="kills of emo fuse train saving and of emo score")
    return parse(ap)


def _cmd(root: Path, out: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "emo.cli", "extract", "--dataset", "folder", "--name", "folder", "--root", str(root),
            "--encoder", f"hubert_large={model}:1-4", "--encoder", "egemaps", "--out", str(out),
            "--no-progress", "--shard-size", "2"]


def _read_store_dir(ds: Path) -> tuple[int, dict[str, set[str]], int]:
    """Open every .h5 file (store and shards) under ``ds`` with h5py; return
    (unreadable count, finished names per encoder, leftover .tmp count)."""
    unreadable = 0
    names: dict[str, set[str]] = {e: set() for e in ENCODERS}
    for p in sorted(ds.rglob("*.h5")):
        enc = p.name[:-3] if p.parent == ds else p.parent.name[: -len(".parts")]
        try:
            with h5py.File(p, "r") as f:
                got = {x.decode() if isinstance(x, bytes) else str(x) for x in f["names"][()]}
                for k in f["layers"]:
                    f["layers"][k][()]
        except Exception:
            unreadable += 1
            continue
        names.setdefault(enc, set()).update(got)
    tmps = len(list(ds.rglob("*.tmp")))
    return unreadable, names, tmps


def _load(ds: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    from emo.extract.store import FeatureStore

    out = {}
    for e in ENCODERS:
        s = FeatureStore(ds / f"{e}.h5")
        with h5py.File(s.path, "r") as f:
            out[e] = {k: dict(zip(s.names, f["layers"][k][()])) for k in s.layers}
    return out


def _skipped(stdout: str) -> dict[str, int]:
    got = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ENCODERS and len(parts) >= 4 and parts[2].isdigit():
            got[parts[0]] = int(parts[2])
    return got


def _run_killed(cmd: list[str], ds: Path, kind: str, delay: float, rng: random.Random) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=str(ROOT))
    trigger = None
    nth = rng.randint(1, 6)
    seen_tmp: set[str] = set()
    while p.poll() is None:
        now = time.monotonic() - t0
        if kind in ("timed", "early") and now >= delay:
            trigger = f"after {now:.2f} s"
            break
        if kind in ("shard", "merge") and ds.is_dir():
            if kind == "shard":
                tmps = {str(t) for t in ds.glob("*.parts/*.tmp")}
                seen_tmp |= tmps
                if tmps and len(seen_tmp) >= nth:
                    trigger = f"during shard write #{len(seen_tmp)} ({now:.2f} s)"
                    break
            else:
                if any(ds.glob(".*.h5.*.tmp")) or any(ds.glob("*.h5.tmp")):  # emo.fsio's temporary of the merged store
                    trigger = f"during merge ({now:.2f} s)"
                    break
        time.sleep(0.0005 if kind in ("shard", "merge") else 0.01)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return {"kind": kind, "killed": killed, "trigger": trigger or f"finished before the kill ({time.monotonic() - t0:.2f} s)",
            "returncode": p.returncode}


def _emodb_fixture(shared: Path, work: Path) -> tuple[Path, Path]:
    """24 labelled EmoDB clips (anger/neutral/sadness) and their eGeMAPS store."""
    wav = sorted((shared / "emodb" / "wav").glob("*.wav"))
    root = work / "emodb"
    root.mkdir()
    rows = ["name,emotion"]
    for letter, emotion in (("W", "anger"), ("N", "neutral"), ("T", "sadness")):
        for p in [w for w in wav if w.stem[5] == letter][:8]:
            shutil.copy(p, root / p.name)
            rows.append(f"{p.stem},{emotion}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    feats = work / "emodb-feats"
    r = subprocess.run([sys.executable, "-m", "emo.cli", "extract", "--dataset", "folder", "--name", "folder", "--root", str(root),
                        "--encoder", "egemaps", "--out", str(feats), "--no-progress"], capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    return root, feats


def _train_cmd(feats: Path, out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "emo.cli", "fuse", "train", "--dataset", "folder", "--features", "egemaps",
            "--features-dir", str(feats), "--folds", "3", "--epochs", "15", "--seeds", "1", "--hidden", "32", "--head", "mlp",
            "--normalize", "global", "--threads", "1", "--seed", str(seed), "--out", str(out)]


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()} if d.is_dir() else {}


def _comparable(files: dict[str, bytes]) -> dict[str, bytes]:
    """A run's files with only what legitimately differs between two runs of the same training removed:
    ``created`` (wall-clock time) and ``command`` (names the ``--out`` directory) in ``config.json``,
    the wall-clock ``seconds`` and ``timing`` in ``metrics.json``, and the report lines that print
    them. Everything else, checkpoints and predictions included, must be equal."""
    files = dict(files)
    if "config.json" in files:
        try:
            cfg = json.loads(files["config.json"])
        except ValueError:
            return files  # a broken config stays unequal to any complete run
        stamp, command = cfg.pop("created", None), cfg.pop("command", None)
        cfg.pop("content_sha256", None)  # the seal covers created and command: checked by load_run, not compared
        files["config.json"] = json.dumps(cfg, sort_keys=True).encode()
        if "report.md" in files:
            drop = [str(stamp)] + ([" ".join(command[:3])] if command else []) + ["**training time**"]
            files["report.md"] = b"\n".join(line for line in files["report.md"].split(b"\n")
                                            if not any(x.encode() in line for x in drop if x))
    if "metrics.json" in files:
        try:
            m = json.loads(files["metrics.json"])
        except ValueError:
            return files
        m.pop("seconds", None)  # wall-clock training time and its breakdown: differ between any two runs
        m.pop("timing", None)
        files["metrics.json"] = json.dumps(m, sort_keys=True).encode()
    return files


def _run_complete(d: Path) -> bool:
    """Every checkpoint of the run at ``d`` has the SHA-256 its config records."""
    import hashlib

    try:
        cfg = json.loads((d / "config.json").read_text())
        return all(hashlib.sha256((d / f["checkpoint"]).read_bytes()).hexdigest() == f["sha256"] for f in cfg["folds"])
    except Exception:
        return False


def _kill_when(cmd: list[str], watch: Path | None, pattern: str | None, delay: float) -> dict:
    """Start ``cmd``; SIGKILL it when a file matching ``pattern`` appears in ``watch`` (or after ``delay`` s)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
    trigger = None
    while p.poll() is None:
        now = time.monotonic() - t0
        if pattern and watch is not None and watch.is_dir() and any(watch.glob(pattern)):
            trigger = f"when {pattern} appeared ({now:.2f} s)"
            break
        if not pattern and now >= delay:
            trigger = f"after {now:.2f} s"
            break
        time.sleep(0.0005)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return {"killed": killed, "trigger": trigger or f"finished first ({time.monotonic() - t0:.2f} s)"}


def fuse_and_score_trials(shared: Path, work: Path, n: int, rng: random.Random) -> list[dict]:
    """Kills during `emo fuse train` saving (over a previous run) and during `emo score`."""
    root, feats = _emodb_fixture(shared, work)
    ref = work / "run-ref"
    t0 = time.monotonic()
    assert subprocess.run(_train_cmd(feats, ref, 0), capture_output=True, cwd=str(ROOT)).returncode == 0
    train_s = time.monotonic() - t0
    ref_files = _comparable(_files(ref))
    clips = sorted((shared / "emodb" / "wav").glob("*F*.wav"))[:6]
    score_ref = work / "score-ref.csv"
    score_cmd = lambda out, cache: [sys.executable, "-m", "emo.cli", "score", *map(str, clips), "--run", str(ref),  # noqa: E731
                                    "--out", str(out), "--no-progress", "--cache", str(cache)]
    t0 = time.monotonic()
    assert subprocess.run(score_cmd(score_ref, work / "cache-ref"), capture_output=True, cwd=str(ROOT)).returncode == 0
    score_s = time.monotonic() - t0
    trials = []
    for t in range(n):
        kind = ["train-save", "train-timed", "score-timed", "score-csv"][t % 4]
        info: dict = {"kind": kind}
        if kind.startswith("train"):
            out = work / f"run-{t:02d}"
            pattern = f".{out.name}.*.tmp" if kind == "train-save" else None
            delay = rng.uniform(0.5, train_s)
            for _ in range(4):  # a timed kill the run beat: start again from the previous run, sooner
                shutil.rmtree(out, ignore_errors=True)
                assert subprocess.run(_train_cmd(feats, out, 1), capture_output=True, cwd=str(ROOT)).returncode == 0
                old = _files(out)
                info.update(_kill_when(_train_cmd(feats, out, 0), work, pattern, delay))
                if info["killed"]:
                    break
                delay *= 0.6
            now = _files(out)
            info["after_kill"] = "previous run" if now == old else ("new run" if _comparable(now) == ref_files else "MIXED/OTHER")
            info["complete_after_kill"] = _run_complete(out)
            r = subprocess.run(_train_cmd(feats, out, 0), capture_output=True, text=True, cwd=str(ROOT))
            got = _comparable(_files(out))
            info["resume_returncode"] = r.returncode
            info["differing_files"] = sorted(k for k in set(got) | set(ref_files) if got.get(k) != ref_files.get(k))
            info["bitwise_identical"] = not info["differing_files"]
            info["unreadable"] = int(not info["complete_after_kill"] or info["after_kill"] == "MIXED/OTHER")
            info["lost"] = 0
        else:
            out = work / f"score-{t:02d}.csv"
            cache = work / f"cache-{t:02d}"
            pattern = f".{out.name}.*.tmp" if kind == "score-csv" else None
            delay = rng.uniform(0.3, score_s)
            for _ in range(4):  # a timed kill the run beat: start again (empty cache, previous CSV), sooner
                shutil.rmtree(cache, ignore_errors=True)
                out.write_text("previous results\n")
                info.update(_kill_when(score_cmd(out, cache), work, pattern, delay))
                if info["killed"]:
                    break
                delay *= 0.6
            after = out.read_text()
            info["after_kill"] = "previous csv" if after == "previous results\n" else (
                "new csv" if out.read_bytes() == score_ref.read_bytes() else "MIXED/OTHER")
            r = subprocess.run(score_cmd(out, cache), capture_output=True, text=True, cwd=str(ROOT))
            info["resume_returncode"] = r.returncode
            info["bitwise_identical"] = out.read_bytes() == score_ref.read_bytes()
            info["unreadable"] = int(info["after_kill"] == "MIXED/OTHER")
            info["lost"] = 0
        print(f"{kind:12s} {info['trigger']:40s} after kill: {info['after_kill']:13s} bitwise={info['bitwise_identical']}",
              flush=True)
        trials.append(info)
    return trials


def main() -> int:
    a = _args()
    shared = Path(a.shared)
    av = shared / "av"
    if not av.is_dir():
        print(f"no clips at {av}: pass --shared", file=sys.stderr)
        return 1
    from helpers import tiny_hubert

    rng = random.Random(a.seed)
    all_clips = sorted(p for p in av.rglob("*") if p.suffix in (".mp4", ".flv", ".mpg"))
    step = max(1, len(all_clips) // a.clips)
    clips = all_clips[::step][: a.clips]
    work = Path(tempfile.mkdtemp(prefix="emo-crash-"))
    root = work / "clips"
    root.mkdir()
    for c in clips:
        (root / f"{c.parent.name}__{c.name}").symlink_to(c)
    model = tiny_hubert(work / "tiny-hubert", layers=4)

    ref_out = work / "ref"
    t0 = time.monotonic()
    r = subprocess.run(_cmd(root, ref_out, model), capture_output=True, text=True, cwd=str(ROOT))
    ref_seconds = time.monotonic() - t0
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        return 1
    ref = _load(ref_out / "folder")
    print(f"reference run: {len(clips)} clips, {ref_seconds:.1f} s", flush=True)

    kinds = ["timed", "shard", "merge", "early"]

    def _result() -> dict:
        return {
            "command": command_line(),
            "trials": len(trials),
            "complete": len(trials) == a.trials,
            "identical": totals["identical"],
            "bitwise_identical": totals["bitwise_identical"],
            "unreadable_files": totals["unreadable_files"],
            "lost_samples": totals["lost_samples"],
            "killed_mid_run": sum(t["killed"] for t in trials),
            "kills_by_kind": {k: sum(t["kind"] == k and t["killed"] for t in trials) for k in kinds},
            "clips": len(clips),
            "encoders": ["hubert_large (tiny random, 4 layers, stored layers 1-4)", "egemaps"],
            "reference_seconds": round(ref_seconds, 2),
            "identical_means": "same sample set and every stored value within 1e-3 of the uninterrupted run "
                               "(bitwise_identical counts trials where every value is bit-for-bit equal)",
            "trial_details": trials,
            **({"fuse_score_trials": len(fs_trials),
                "fuse_score_bitwise_identical": sum(x["bitwise_identical"] and x["resume_returncode"] == 0 for x in fs_trials),
                "fuse_score_mixed_or_incomplete_after_kill": sum(x["unreadable"] for x in fs_trials),
                "fuse_score_killed": sum(x["killed"] for x in fs_trials),
                "fuse_score_details": fs_trials} if fs_trials else {}),
        }

    trials = []
    fs_trials: list[dict] = []
    totals = {"unreadable_files": 0, "lost_samples": 0, "identical": 0, "bitwise_identical": 0}
    for t in range(a.trials):
        kind = kinds[t % len(kinds)]
        delay = rng.uniform(0.5, ref_seconds) if kind == "timed" else rng.uniform(0.2, ref_seconds / 4)
        out = work / f"trial{t:02d}"
        cmd = _cmd(root, out, model)
        info = _run_killed(cmd, out / "folder", kind, delay, rng)
        for _ in range(3):  # the run beat the kill: start afresh with a shorter delay, so every trial kills
            if info["killed"]:
                break
            shutil.rmtree(out, ignore_errors=True)
            delay *= 0.6
            info = _run_killed(cmd, out / "folder", kind, delay, rng)
        ds = out / "folder"
        unreadable, finished, tmps = _read_store_dir(ds) if ds.is_dir() else (0, {e: set() for e in ENCODERS}, 0)
        info.update({"unreadable_after_kill": unreadable, "tmp_files_after_kill": tmps,
                     "finished_at_kill": {e: len(v) for e, v in finished.items()}})
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
        info["resume_returncode"] = r.returncode
        skipped = _skipped(r.stdout)
        info["skipped_on_resume"] = skipped
        u2, final_names, tmps2 = _read_store_dir(ds)
        got = _load(ds)
        lost = sum(len(finished[e] - set(next(iter(got[e].values())))) for e in ENCODERS)
        lost += sum(len(set(next(iter(ref[e].values()))) - set(next(iter(got[e].values())))) for e in ENCODERS)
        same_set = all(set(next(iter(ref[e].values()))) == set(next(iter(got[e].values()))) for e in ENCODERS)
        bitwise = same_set
        max_abs = 0.0
        n_vals = n_equal = 0
        for e in ENCODERS:
            for k, rows in ref[e].items():
                for name, v in rows.items():
                    w = got[e][k].get(name)
                    if w is None:
                        continue
                    eq = np.array_equal(v, w)
                    n_vals += 1
                    n_equal += eq
                    bitwise &= bool(eq)
                    max_abs = max(max_abs, float(np.max(np.abs(v.astype(np.float32) - w.astype(np.float32)))))
        close = same_set and max_abs <= 1e-3
        skip_ok = all(skipped.get(e) == len(finished[e] & set(next(iter(ref[e].values())))) for e in ENCODERS)
        info.update({"same_sample_set": same_set, "bitwise_identical": bitwise, "max_abs_diff": max_abs,
                     "rows_bitwise_equal": f"{n_equal}/{n_vals}", "identical_within_1e-3": close,
                     "skip_count_matches_finished": skip_ok, "unreadable_after_resume": u2,
                     "tmp_files_after_resume": tmps2, "parts_left_after_resume": len(list(ds.glob("*.parts/*.h5"))),
                     "lost_samples": lost})
        totals["unreadable_files"] += unreadable + u2
        totals["lost_samples"] += lost
        totals["identical"] += int(close and r.returncode == 0)
        totals["bitwise_identical"] += int(bitwise)
        trials.append(info)
        write_result(a.out, _result(), quiet=True)  # partial results survive an interrupted proof
        print(f"trial {t:2d} {kind:6s} {info['trigger']:38s} finished@kill={info['finished_at_kill']} "
              f"skipped={skipped} bitwise={bitwise} max|d|={max_abs:.2g} unreadable={unreadable + u2} lost={lost}",
              flush=True)

    if a.fuse_trials:
        fs_trials.extend(fuse_and_score_trials(shared, work, a.fuse_trials, rng))
    result = _result()
    write_result(a.out, result, quiet=True)
    print(json.dumps({k: v for k, v in result.items() if k != "trial_details"}, indent=2))
    ok = result["identical"] == result["trials"] and not result["unreadable_files"] and not result["lost_samples"]
    if fs_trials:
        ok &= result["fuse_score_bitwise_identical"] == len(fs_trials) and not result["fuse_score_mixed_or_incomplete_after_kill"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
