"""Proof: all 49 real talking-face clips through `emo extract --dataset folder` (egemaps + a small random HuBERT).

Writes results/av_extract.json: clips, ok, failed (name and reason), encoders (layers, dims,
finite, shape checks), command.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import command_line, emo, parse_args, write_result  # noqa: E402
from helpers import tiny_hubert  # noqa: E402

from emo.extract.store import FeatureStore  # noqa: E402


def main() -> None:
    a = parse_args(__doc__)
    av = a.shared / "av"
    with open(av / "clips.csv", newline="") as fh:
        listed = [r["path"] for r in csv.DictReader(fh)]
    work = a.work / "av_extract"
    if work.exists():
        shutil.rmtree(work)
    model = tiny_hubert(work / "tiny-hubert", layers=6, hidden=64)
    out = work / "features"
    r = emo("extract", "--dataset", "folder", "--name", "folder", "--root", str(av), "--encoder", "egemaps",
            "--encoder", f"hubert_large={model}:1-6", "--out", str(out), "--no-progress", ok=(0, 2))
    print(r.stdout)
    names = {p.rsplit(".", 1)[0] for p in listed}
    report = {}
    ok_all = set(names)
    failed = {}
    for enc, dim, layers in (("egemaps", 88, ["functionals"]), ("hubert_large", 64, [str(i) for i in range(1, 7)])):
        s = FeatureStore(out / "folder" / f"{enc}.h5")
        x = s.read()
        good = set(s.names)
        ok_all &= good
        for n, e in s.failed.items():
            failed.setdefault(n, e)
        report[enc] = {
            "samples": len(s), "layers": s.layers, "dim": int(x.shape[-1]), "shape": list(x.shape),
            "all_finite": bool(np.all(np.isfinite(x))), "right_shape": bool(x.shape == (len(s), len(layers), dim) and s.layers == layers),
            "source": s.attrs.get("source"), "weights_hash": s.attrs.get("weights_hash"),
        }
    missing = sorted(names - ok_all - set(failed))
    write_result("av_extract", {
        "clips": len(listed), "ok": len(ok_all & names),
        "failed": [{"name": n, "reason": e} for n, e in sorted(failed.items())] + [{"name": n, "reason": "missing from store"} for n in missing],
        "encoders": report, "exit_status": r.returncode, "command": command_line(),
    })
    if len(ok_all & names) != len(listed):
        sys.exit("some clips were not extracted")


if __name__ == "__main__":
    main()
