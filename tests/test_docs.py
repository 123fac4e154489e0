"""The documentation's commands: every shell command the README shows runs here, and every ``emo``
command shown in ``docs/*.md`` names a real command and real options of the CLI.

README commands: ``make`` targets are checked with ``make -n`` (``make test`` is the command that
runs this very suite, so it is not re-entered; ``make demo``'s recipe, ``python -m emo.demo``,
is run); ``emo`` commands are run in the order shown, on a three-speaker subset of the real EmoDB
recordings (``$EMODB``), as ``python -m emo.cli``, and their outputs are checked.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)


def shell_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks: continuation lines joined, comments dropped."""
    out = []
    for block in BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words))
    return out


def test_shell_commands_parser():
    text = "x\n```bash\nemo a --b 1 \\\n    --c 2   # note\n# only a comment\nmake demo\n```\n"
    assert shell_commands(text) == ["emo a --b 1 --c 2", "make demo"]


def readme_commands() -> list[str]:
    return shell_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_shows_only_commands_this_file_runs():
    """Every README command is one of the kinds the tests below run (make targets, emo commands)."""
    cmds = readme_commands()
    assert cmds[:2] == ["make demo", "make test"]
    assert all(c.startswith(("make ", "emo ")) for c in cmds), cmds


@pytest.mark.parametrize("target", ["demo", "test"])
def test_readme_make_targets_exist(target):
    """``make -n`` prints the recipe without running it: the target exists and runs what the README says."""
    assert f"make {target}" in readme_commands()
    r = subprocess.run(["make", "--no-print-directory", "-n", target], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    want = {"demo": "-m emo.demo", "test": "-m pytest"}[target]
    assert want in r.stdout, r.stdout


@pytest.mark.slow
def test_make_demo_recipe_runs(tmp_path):
    """``make demo`` = ``python -m emo.demo --out demo``: the chain on generated data ends with a results table."""
    r = subprocess.run([sys.executable, "-m", "emo.demo", "--out", str(tmp_path / "demo")], capture_output=True,
                       text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "demo").is_dir() and any((tmp_path / "demo").rglob("metrics.json"))


def _emodb_subset(shared: Path, root: Path, speakers: tuple[str, ...] = ("03", "08", "10")) -> Path:
    """``root/wav`` with links to the EmoDB utterances of ``speakers`` (file names start with the speaker)."""
    wav = root / "wav"
    wav.mkdir(parents=True)
    for f in sorted((shared / "emodb" / "wav").glob("*.wav")):
        if f.name[:2] in speakers:
            (wav / f.name).symlink_to(f)
    return root


@pytest.mark.slow
def test_readme_workflow_runs_on_emodb(shared, tmp_path):
    """The README's extract -> train -> score commands, verbatim, on three EmoDB speakers."""
    emodb = _emodb_subset(shared, tmp_path / "emodb")
    n = len(list((emodb / "wav").iterdir()))
    env = {**os.environ, "EMODB": str(emodb)}
    cmds = [c for c in readme_commands() if c.startswith("emo ")]
    assert [shlex.split(c)[1] for c in cmds] == ["extract", "fuse", "score"]
    for c in cmds:
        args = [os.path.expandvars(a.replace("$EMODB", str(emodb))) for a in shlex.split(c)[1:]]
        r = subprocess.run([sys.executable, "-m", "emo.cli", *args], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=900)
        assert r.returncode == 0, f"{c}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert (tmp_path / "features" / "emodb" / "egemaps.h5").is_file()
    metrics = json.loads((tmp_path / "runs" / "emodb_afg" / "metrics.json").read_text())
    uar = metrics["pooled"]["uar"] if "pooled" in metrics else metrics["uar"]
    assert math.isfinite(uar) and uar > 1 / 7  # 7 classes: above chance on held-out speakers
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == n + 1 and all(",ok," in r for r in rows[1:])


# -- every emo command in the reference names real commands and options ---------------------------
def _is_group(cmd) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _cli():
    from emo.cli import app

    return typer.main.get_command(app)


def _resolve(group, words: list[str]):
    cmd, i = group, 0
    while _is_group(cmd) and i < len(words) and words[i] in cmd.commands:
        cmd, i = cmd.commands[words[i]], i + 1
    return cmd, words[i:]


def _problems(command: str, cli) -> list[str]:
    words = shlex.split(command)
    if words[0].endswith("emo"):
        words = words[1:]
    cmd, rest = _resolve(cli, words)
    if _is_group(cmd):
        return [f"{command}: no such emo command ({' '.join(words[:2])})"] if rest and not rest[0].startswith("-") else []
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    return [f"{command}: {w.split('=')[0]} is not an option of emo {cmd.name}" for w in rest
            if w.startswith("--") and w.split("=")[0] not in known]


def doc_emo_commands() -> list[tuple[str, str]]:
    out = []
    for p in [ROOT / "README.md", *DOCS]:
        for c in shell_commands(p.read_text(encoding="utf-8")):
            if c.startswith(("emo ", ".venv/bin/emo ")) and "..." not in c:
                out.append((p.name, c))
    return out


def test_doc_commands_name_real_options():
    cli = _cli()
    cmds = doc_emo_commands()
    assert len(cmds) > 20  # the reference shows many commands; this guards the parser itself
    bad = [f"{f}: {m}" for f, c in cmds for m in _problems(c, cli)]
    assert not bad, "\n".join(bad)
    assert _problems("emo fuse train --no-such-option 1", cli)  # the check can fail
    assert _problems("emo fuse nosuchcommand", cli)
