"""`make proofs`: regenerate every real-data result file under results/.

Runs each proofs/<name>.py (except this file) as its own process with
``--shared DIR``, in a fixed order, and prints a one-line status per proof.
A proof that fails does not stop the others; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Cheap proofs first; ones that other proofs' features feed come before their users.
ORDER = ["emodb_egemaps", "av_extract", "lexicon", "faces", "av_visual", "meld_text", "emodb_fusion",
         "meld_sweep", "bad_inputs", "crash_resume", "long_audio"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("EMO_SHARED_DATA", str(HERE.parent.parent / "shared" / "data")))
    ap.add_argument("only", nargs="*", help="run only these proofs (names without .py)")
    args = ap.parse_args()
    found = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("run_all", "__init__") and not p.stem.startswith("_"))
    names = [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]
    if args.only:
        names = [n for n in names if n in args.only]
    failed = []
    for n in names:
        t = time.time()
        r = subprocess.run([sys.executable, str(HERE / f"{n}.py"), "--shared", args.shared], cwd=HERE.parent)
        status = "ok" if r.returncode == 0 else f"FAILED (exit {r.returncode})"
        print(f"[proofs] {n}: {status} in {time.time() - t:.0f} s", flush=True)
        if r.returncode:
            failed.append(n)
    if failed:
        sys.exit(f"failed proofs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
