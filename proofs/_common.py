"""Shared bits of the proof scripts: argument parsing, the emo CLI, result writing."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
EMO = [sys.executable, "-m", "emo.cli"]


def parse_args(doc: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("EMO_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--work", default=str(ROOT / "features" / "_proofs"), help="scratch directory (ignored by git)")
    a = ap.parse_args()
    a.shared = Path(a.shared).resolve()
    a.work = Path(a.work)
    if not a.shared.is_dir():
        sys.exit(f"real data not found at {a.shared} (pass --shared or set EMO_SHARED_DATA)")
    return a


def emo(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run the emo CLI (argument list, no shell); exit with its output when the status is not in ``ok``."""
    r = subprocess.run(EMO + list(args), capture_output=True, text=True, cwd=ROOT)
    if r.returncode not in ok:
        sys.exit(f"emo {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def command_line(argv: list[str] | None = None) -> str:
    return "python " + " ".join(shlex.quote(a) for a in (argv or sys.argv))


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    p = RESULTS / f"{name}.json"
    p.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(data, indent=2, ensure_ascii=False)[:3000])
    return p
