"""Issue 23: every shell command of the MER 2025 / 2026 block (docs/mer-challenges.md, linked from the README) runs, as written, against
MER-shaped fixtures built from the real av clips (tests/mer_fixtures.py); only the /data/... paths
are replaced by the fixtures' and ``make features`` runs the ``emo extract`` line it prints."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mer_fixtures import build_mer_pool

ROOT = Path(__file__).resolve().parents[1]


def readme_mer_commands() -> list[str]:
    """The commands of the first bash block under '## MER 2025 / 2026' (continuations joined, comments dropped)."""
    text = (ROOT / "docs" / "mer-challenges.md").read_text(encoding="utf-8")
    sec = text[text.index("## MER 2025 / 2026:"):]
    block = re.search(r"```bash\n(.*?)```", sec, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_mer_block_runs(shared, tmp_path):
    av = shared / "av"
    if not (av / "clips.csv").is_file():
        pytest.skip("needs av/ in the shared data")
    r26, r25 = tmp_path / "mer2026", tmp_path / "mer2025"
    info = build_mer_pool(av, r26, 2026)
    build_mer_pool(av, r25, 2025)
    # a fixture label: the one 'worried' clip gets a second (a candidate), so no class has fewer than 2 clips
    extra = info["candidates"][0]
    with open(r26 / "track1_train.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([extra, "worried"])
    cand = r26 / "track1_track2_candidate.csv"  # training and candidate clips are disjoint, as in the release
    cand.write_text("name\n" + "".join(f"{n}\n" for n in info["candidates"] if n != extra), encoding="utf-8")
    subs = {"/data/mer2026-dataset": str(r26), "/data/mer2025": str(r25),
            "/data/NRC-VAD-Lexicon.txt": str(shared / "lexicon" / "NRC-VAD-Lexicon.txt"),
            "/data/emotion_wheel": str(shared / "emotion_wheel")}
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "EMO_SHARED_DATA": str(shared)}
    cmds = readme_mer_commands()
    assert len(cmds) == 6 and cmds[0].startswith("make features")
    for cmd in cmds:
        for a, b in subs.items():
            cmd = cmd.replace(a, b)
        argv = shlex.split(cmd)
        if argv[0] == "make":
            dry = subprocess.run(["make", "--no-print-directory", "-n", *argv[1:], f"VENV={Path(sys.executable).parent.parent}"], cwd=ROOT,
                                 capture_output=True, text=True)
            argv = shlex.split(dry.stdout.strip().splitlines()[-1])
            assert Path(argv[0]).name == "emo" and argv[1] == "extract", dry.stdout
            argv[0] = "emo"
        assert argv[0] == "emo", cmd
        r = subprocess.run([sys.executable, "-m", "emo.cli", *argv[1:], *(["--device", "cpu", "--no-progress"]
                                                                          if argv[1] in ("extract", "score") else [])],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    rows = list(csv.DictReader(open(tmp_path / "track1.csv", encoding="utf-8")))
    cands = set(info["candidates"]) - {extra}
    assert {r["name"] for r in rows} == cands and {r["split"] for r in rows} == {"candidate"}
    sub = list(csv.reader(open(tmp_path / "submission.csv", encoding="utf-8")))
    assert sub[0] == ["name", "discrete"] and len(sub) == len(cands) + 1
    assert {r[1] for r in sub[1:]} <= {"neutral", "angry", "happy", "sad", "worried", "surprise"}
    sub2 = list(csv.reader(open(tmp_path / "submission_t2.csv", encoding="utf-8")))
    assert sub2[0] == ["name", "openset"] and len(sub2) > 1 and all(r[1] for r in sub2[1:])
