"""Proof (issue 25): SIGINT and SIGTERM at random moments of `emo extract`, `emo fuse train` and `emo score`
lose nothing and leave nothing that looks complete but is not.

Setup: 24 real EmoDB clips (anger / neutral / sadness, 8 each), eGeMAPS (openSMILE: its ctypes callback
would swallow a ``KeyboardInterrupt``), an uninterrupted reference of each command.

Each trial starts the real CLI in a subprocess, sends SIGINT (even trials) or SIGTERM (odd trials) after a
uniform random delay over the reference command's duration, and checks:

* exit status 0 (finished before the signal) or 130 with a message naming the signal, never a traceback;
* ``extract``: a store that looks finished (no pending shards) holds every clip, bitwise equal to the
  reference; otherwise (interrupted) every clip in the store and in every shard is bitwise equal to the
  reference (no zero or NaN row from a clip in flight) and the store is marked incomplete by its pending
  shards or missing clips;
* ``train``: the run directory, if present, is complete and its predictions equal the reference's;
  otherwise every finished fold in the partial directory verifies (SHA-256, JSON, finite tensors);
* ``score``: the CSV, if present, has one row per clip; each ``ok`` row equals the reference row and every
  other row has status ``interrupted`` (the CSV says it is incomplete);
* every ``--resume-every``-th trial reruns the same command and must give a result identical to the
  reference (resume).

Writes ``results/interrupts.json``: per phase ``trials``, ``exit_0``, ``exit_130``, ``complete_identical``,
``marked_incomplete``, ``wrong`` (must be 0), ``resumed_identical`` / ``resumed``; per-trial rows; ``command``.

Run: ``.venv/bin/python proofs/interrupts.py`` (``--shared`` defaults to ``$EMO_SHARED_DATA`` or ``../shared/data``).
"""

from __future__ import annotations

import csv
import json
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse, parser, write_result  # noqa: E402

EMO = [sys.executable, "-m", "emo.cli"]
TRAIN = ["--folds", "4", "--epochs", "20", "--seeds", "1", "--hidden", "16", "--head", "mlp", "--normalize", "global"]


def _run(cmd: list, delay: float | None, sig: int, anchor: Path | None = None) -> tuple[int, str, float]:
    t = time.monotonic()
    p = subprocess.Popen([*EMO, *map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    if delay is not None:
        while anchor is not None and not anchor.exists() and p.poll() is None:
            time.sleep(0.01)
        end = time.monotonic() + delay if anchor is not None else t + delay
        while time.monotonic() < end and p.poll() is None:
            time.sleep(0.01)
        if p.poll() is None:
            p.send_signal(sig)
    out, err = p.communicate(timeout=900)
    return p.returncode, err + out, time.monotonic() - t


def _store_rows(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in f["names"][()]]
        return dict(zip(names, f["layers"]["functionals"][()]))


def _extract_verdict(out: Path, ref: dict[str, np.ndarray]) -> tuple[str, str]:
    d = out / "folder"
    store, parts = d / "egemaps.h5", sorted((d / "egemaps.parts").glob("part-*.h5")) if (d / "egemaps.parts").is_dir() else []
    rows: dict[str, np.ndarray] = {}
    for f in ([store] if store.exists() else []) + parts:
        rows.update(_store_rows(f))
    wrong = [n for n, v in rows.items() if n not in ref or not np.array_equal(v, ref[n])]
    if wrong:
        return "wrong", f"{len(wrong)} stored clip(s) differ from the reference (e.g. {wrong[0]})"
    if store.exists() and not parts and set(rows) == set(ref):
        return "complete_identical", f"{len(rows)} clips"
    return "marked_incomplete", f"{len(rows)} of {len(ref)} clips kept, {len(parts)} pending shard(s)"


def _predictions(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "predictions.csv").open(encoding="utf-8")))


def _train_verdict(out: Path, ref_rows: list[dict]) -> tuple[str, str]:
    from emo.fuse.training.resume import FoldCache, partial_dir

    if (out / "config.json").is_file():
        from emo.fuse.run import RunError, load_run

        try:
            load_run(out)
        except RunError as e:
            return "wrong", f"run directory present but not loadable: {e}"
        if _predictions(out) != ref_rows:
            return "wrong", "complete run directory with predictions that differ from the reference"
        return "complete_identical", "run directory complete"
    part = partial_dir(out)
    folds = []
    for d in sorted(part.glob("seed-*")):
        c = FoldCache.__new__(FoldCache)
        c.dir = d
        for k in sorted(int(p.stem.split("-")[1]) for p in d.glob("fold-*.json")):
            why = c.problem(k)
            if why is not None and (d / f"fold-{k}.sha256").exists():
                return "wrong", f"finished fold does not verify: {why}"
            folds.append(k)
    return "marked_incomplete", f"no run directory; {len(folds)} finished fold(s) in {part.name}"


def _score_verdict(out: Path, ref_rows: dict[str, dict]) -> tuple[str, str]:
    if not out.exists():
        return "marked_incomplete", "no CSV written (interrupted before extraction)"
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    if {r["name"] for r in rows} != set(ref_rows):
        return "wrong", f"{len(rows)} rows, expected {len(ref_rows)}"
    ok = [r for r in rows if r["status"] == "ok"]
    other = [r for r in rows if r["status"] != "ok"]
    bad = [r["name"] for r in ok if {k: v for k, v in r.items() if k != "path"} != {k: v for k, v in ref_rows[r["name"]].items() if k != "path"}]
    if bad:
        return "wrong", f"{len(bad)} ok row(s) differ from the reference (e.g. {bad[0]})"
    if any(not r["status"].startswith("interrupted") for r in other):
        return "wrong", "a row neither ok nor marked interrupted"
    if other:
        return "marked_incomplete", f"{len(ok)} rows scored, {len(other)} marked interrupted"
    return "complete_identical", f"{len(ok)} rows"


def main() -> int:
    ap = parser(__doc__, out=ROOT / "results" / "interrupts.json")
    ap.add_argument("--trials", type=int, default=20, help="per phase (extract, train, score)")
    ap.add_argument("--resume-every", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="trials run at once (each in its own directory)")
    ap.add_argument("--anchored", type=float, default=0.0,
                    help="if > 0: the random delay (0..this many seconds) counts from the moment the work starts (the store's "
                         "shard folder, the partial-run folder, the score cache's shard folder appear), not from the command's start")
    a = parse(ap)
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="emo-int-"))
    root = work / "root"
    root.mkdir()
    wav = sorted((Path(a.shared) / "emodb" / "wav").glob("*.wav"))
    rows = ["name,emotion"]
    for letter, emotion in (("W", "anger"), ("N", "neutral"), ("T", "sadness")):
        for p in [w for w in wav if w.stem[5] == letter][:8]:
            shutil.copy(p, root / p.name)
            rows.append(f"{p.stem},{emotion}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ext = lambda out: ["extract", "--dataset", "folder", "--name", "folder", "--root", root, "--encoder", "egemaps",  # noqa: E731
                       "--out", out, "--no-progress", "--shard-size", "4"]
    ref_feats = work / "ref-feats"
    rc, text, t_ext = _run(ext(ref_feats), None, 0)
    assert rc == 0, text
    ref_store = _store_rows(ref_feats / "folder" / "egemaps.h5")
    tr = lambda out: ["fuse", "train", "--dataset", "folder", "--features", "egemaps", "--features-dir", ref_feats, *TRAIN,  # noqa: E731
                      "--out", out]
    rc, text, t_train = _run(tr(work / "ref-run"), None, 0)
    assert rc == 0, text
    ref_pred = _predictions(work / "ref-run")
    sc = lambda out: ["score", root, "--run", work / "ref-run", "--out", out, "--no-progress"]  # noqa: E731
    rc, text, t_score = _run(sc(work / "ref.csv"), None, 0)
    assert rc == 0, text
    ref_csv = {r["name"]: r for r in csv.DictReader((work / "ref.csv").open(encoding="utf-8"))}
    print(f"reference: extract {t_ext:.1f} s, train {t_train:.1f} s, score {t_score:.1f} s", flush=True)

    phases = {
        "extract": (t_ext, lambda i: work / f"x{i}", ext, lambda o: _extract_verdict(o, ref_store)),
        "train": (t_train, lambda i: work / f"t{i}", tr, lambda o: _train_verdict(o, ref_pred)),
        "score": (t_score, lambda i: work / f"s{i}.csv", sc, lambda o: _score_verdict(o, ref_csv)),
    }
    result: dict = {"command": f"{Path(sys.executable).name} proofs/interrupts.py --shared {a.shared} --trials {a.trials} "
                               f"--resume-every {a.resume_every} --jobs {a.jobs}" + (f" --anchored {a.anchored}" if a.anchored else ""),
                    "clips": 24, "encoder": "egemaps", "reference_seconds": {"extract": round(t_ext, 1), "train": round(t_train, 1),
                                                                             "score": round(t_score, 1)}, "phases": {}}
    for phase, (dur, outp, cmd, judge) in phases.items():
        plan = [(i, signal.SIGINT if i % 2 == 0 else signal.SIGTERM, rng.uniform(0.0, a.anchored) if a.anchored > 0 else rng.uniform(0.5, dur))
                for i in range(a.trials)]
        anchors = {"extract": lambda o: o / "folder" / "egemaps.parts", "train": lambda o: o.parent / f".{o.name}.partial",
                   "score": lambda o: o.parent / f".{o.name}.score-cache" / "score" / "egemaps.parts"}

        def trial(i, sig, delay, phase=phase, cmd=cmd, outp=outp, judge=judge):
            out = outp(i)
            rc, text, secs = _run(cmd(out), delay, sig, anchors[phase](out) if a.anchored > 0 else None)
            crashed = "Traceback" in text or rc not in (0, 130)
            named = rc != 130 or signal.Signals(sig).name in text
            kind, detail = judge(out)
            if rc == 0 and kind != "complete_identical":
                kind, detail = "wrong", f"exit 0 but {detail}"
            row = {"trial": i, "signal": signal.Signals(sig).name, "delay_s": round(delay, 2), "exit": rc, "seconds": round(secs, 1),
                   "outcome": kind, "detail": detail, "crashed": crashed, "signal_named": named}
            if i % a.resume_every == 0 and rc == 130:
                rc2, text2, _ = _run(cmd(out), None, 0)
                kind2, detail2 = judge(out)
                row["resumed"] = {"exit": rc2, "outcome": kind2, "detail": detail2}
            print(f"[{phase}] {i:2d} {row['signal']:7s} after {delay:5.2f} s -> exit {rc}, {kind}: {detail}"
                  + (f" | resumed: {row['resumed']['outcome']}" if "resumed" in row else ""), flush=True)
            return row

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            trials = list(pool.map(lambda t: trial(*t), plan))
        resumed = [t for t in trials if "resumed" in t]
        result["phases"][phase] = {
            "trials": len(trials), "exit_0": sum(t["exit"] == 0 for t in trials), "exit_130": sum(t["exit"] == 130 for t in trials),
            "complete_identical": sum(t["outcome"] == "complete_identical" for t in trials),
            "marked_incomplete": sum(t["outcome"] == "marked_incomplete" for t in trials),
            "wrong": sum(t["outcome"] == "wrong" for t in trials), "crashed": sum(t["crashed"] for t in trials),
            "signal_not_named": sum(not t["signal_named"] for t in trials),
            "resumed": len(resumed), "resumed_identical": sum(t["resumed"]["outcome"] == "complete_identical" and t["resumed"]["exit"] == 0
                                                              for t in resumed),
            "details": trials}
        write_result(a.out, result, quiet=True)
    summary = {p: {k: v for k, v in d.items() if k != "details"} for p, d in result["phases"].items()}
    print(json.dumps(summary, indent=2))
    ok = all(d["wrong"] == 0 and d["crashed"] == 0 and d["signal_not_named"] == 0 and d["resumed_identical"] == d["resumed"]
             for d in result["phases"].values())
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
