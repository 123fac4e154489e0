"""Proof: peak memory of `emo extract` grows (or not) with clip length, per audio encoder.

For each clip length (default 1, 10, 30 and 60 minutes) a 16 kHz mono wav is built from real EmoDB
utterances laid end to end (real speech, so voiced/unvoiced segments and F0 are realistic) and
each audio encoder runs alone on it in a fresh process: ``emo extract --dataset folder`` with
``--encoder E``. The peak resident set size of that process (``ru_maxrss`` of the child, read by a
small wrapper process so earlier runs do not count) is recorded.

Encoders: ``egemaps`` (openSMILE eGeMAPSv02 functionals), ``mfcc`` (librosa) and ``hubert_large``
with a tiny randomly initialised HuBERT saved locally (same code path as the real checkpoint;
hubs are unreachable here), so the numbers measure emo's buffering, not model weights.

Writes ``results/long_audio.json``: per encoder and length ``peak_rss_mb`` and ``seconds``, the
ratio 60 min / 1 min, the issue's target (ratio <= 1.5), ``uptime`` before the run, ``command``.

Run: ``flock /work/coord/heavy.lock nice -n 5 python proofs/long_audio.py --shared /work/shared/data``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import child_peak_rss, command_line, parse, parser, write_result  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))

def build_wav(emodb_wav: Path, minutes: float, path: Path) -> Path:
    """Write ``minutes`` of 16 kHz int16 mono speech: EmoDB utterances end to end, cycled; written in
    blocks so this script itself never holds the whole clip."""
    import soundfile as sf

    files = sorted(emodb_wav.glob("*.wav"))
    need = int(minutes * 60 * 16000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        done, i = 0, 0
        while done < need:
            a, sr = sf.read(files[i % len(files)], dtype="float32")
            i += 1
            if sr != 16000:
                import librosa

                a = librosa.resample(a, orig_sr=sr, target_sr=16000)
            a = a[: need - done]
            w.writeframes((np.clip(a, -1, 1) * 32767).astype("<i2").tobytes())
            done += a.size
    return path


def peak_rss(clip: Path, out: Path, spec: str) -> dict:
    """Run one `emo extract` over the folder of ``clip`` with one encoder; peak RSS (MB) of that process."""
    cmd = [sys.executable, "-m", "emo.cli", "extract", "--dataset", "folder", "--root", str(clip.parent),
           "--out", str(out), "--no-progress", "--encoder", spec]
    r = child_peak_rss(cmd)
    return {**r, "seconds": round(r["seconds"], 1)}


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--minutes", default="1,10,30,60")
    ap.add_argument("--encoders", default="egemaps,mfcc,hubert_large")
    ap.add_argument("--out", default=str(ROOT / "results" / "long_audio.json"))
    a = parse(ap)
    from helpers import tiny_hubert

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="emo-long-"))
    model = tiny_hubert(work / "tiny-hubert", layers=4)
    specs = {"egemaps": "egemaps", "mfcc": "mfcc", "hubert_large": f"hubert_large={model}:1-4"}
    minutes = [float(m) for m in a.minutes.split(",")]
    encoders = a.encoders.split(",")
    res: dict = {e: {} for e in encoders}
    for m in minutes:
        d = work / f"clip-{m:g}min"
        d.mkdir()
        clip = build_wav(Path(a.shared) / "emodb" / "wav", m, d / f"long{m:g}.wav")
        for e in encoders:
            row = peak_rss(clip, work / f"feat-{e}-{m:g}", specs[e])
            res[e][f"{m:g}min"] = row
            print(f"{e:14s} {m:5g} min: {row['peak_rss_mb']:8.1f} MB peak RSS, {row['seconds']:.1f} s (exit {row['exit_code']})",
                  flush=True)
        clip.unlink()
    ok = True
    summary = {}
    for e in encoders:
        first, last = res[e][f"{minutes[0]:g}min"], res[e][f"{minutes[-1]:g}min"]
        ratio = last["peak_rss_mb"] / max(first["peak_rss_mb"], 1e-9)
        within = ratio <= 1.5 and all(r["exit_code"] == 0 for r in res[e].values())
        ok &= within
        summary[e] = {"ratio_longest_to_shortest": round(ratio, 2), "within_1.5x": within}
    result = {
        "command": command_line(),
        "uptime_before": uptime,
        "clip": "16 kHz mono int16 wav of EmoDB utterances end to end (real speech), built per length",
        "encoders": {"egemaps": "openSMILE eGeMAPSv02 functionals", "mfcc": "librosa MFCC 40 + deltas, mean/std",
                     "hubert_large": "tiny random HuBERT (4 layers, hidden 32), layers 1-4, CPU"},
        "minutes": minutes, "peak_rss": res, "summary": summary, "target": "longest / shortest <= 1.5",
        "all_within_target": ok,
    }
    write_result(a.out, result, quiet=True)
    print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
