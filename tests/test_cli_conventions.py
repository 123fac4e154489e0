"""Conventions of the whole `emo` CLI: help never cuts option names when piped, `--version`,
one meaning per exit code (emo.exitcodes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from emo import __version__
from emo.exitcodes import TABLE, ExitCode


def _commands(cmd, path=()):
    """(path, click command) for every leaf command under ``cmd``."""
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield path, cmd
        return
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def _option_names(cmd) -> list[str]:
    return [o for p in cmd.params if getattr(p, "param_type_name", None) == "option"
            for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("--")]


def test_extract_help_through_a_pipe_shows_every_option_whole():
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    r = subprocess.run([sys.executable, "-m", "emo.cli", "extract", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    from emo.cli import app

    names = _option_names(typer.main.get_command(app).commands["extract"])
    assert "--decode-workers" in names and len(names) > 20
    words = set(r.stdout.replace(",", " ").split())
    missing = [n for n in names if n not in words]
    assert not missing, f"cut or missing in `emo extract --help`: {missing}\n{r.stdout}"
    assert "…" not in r.stdout


def test_every_command_help_shows_every_option_whole():
    from emo.cli import app

    root = typer.main.get_command(app)
    runner = CliRunner()
    seen = 0
    for path, cmd in _commands(root):
        r = runner.invoke(app, [*path, "--help"], terminal_width=80)
        assert r.exit_code == 0, (path, r.output)
        words = set(r.output.replace(",", " ").split())
        names = _option_names(cmd)
        assert not [n for n in names if n not in words], (path, r.output)
        seen += 1
    assert seen >= 10  # extract, score, fuse train/sweep/ensemble, lexicon x3, models x2, store info


def test_version():
    from emo.cli import app

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"emo {__version__}"


def test_exit_code_table_is_one_meaning_per_code():
    codes = [int(c) for c, _ in TABLE]
    assert codes == sorted(set(codes)) and codes == [int(c) for c in ExitCode]
    assert (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.PARTIAL) == (0, 1, 2, 3)


@pytest.mark.parametrize("args, code", [
    (["fuse", "train", "--dataset", "x", "--features", "f", "--out", "o", "--head", "nope"], ExitCode.USAGE),
    (["fuse", "train", "--no-such-option"], ExitCode.USAGE),
    (["fuse", "ensemble", "only-one-run", "--out", "o"], ExitCode.USAGE),
    (["lexicon", "classify", "0", "0", "0", "--labels", "no-such-set", "--lexicon", "/nonexistent/lexicon.txt"], ExitCode.ERROR),
])
def test_exit_codes(args, code, tmp_path, monkeypatch):
    from emo.cli import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == code, r.output


def test_fuse_train_data_error_is_exit_1(tmp_path):
    from emo.cli import app

    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "none", "--features-dir", str(tmp_path), "--features", "egemaps",
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == ExitCode.ERROR and "error:" in r.output, r.output


def test_commands_with_progress_bars_take_no_progress():
    from emo.cli import app

    root = typer.main.get_command(app)
    for path in (("extract",), ("score",), ("fuse", "sweep")):
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        assert "--no-progress" in _option_names(cmd), path
