"""Shared bits of the proof scripts (and of ``bench/run_all.py``): the one argument parser, the emo
CLI, and the result writer that ties every ``results/*.json`` to the code that made it.

Argument parser (:func:`parser`, :func:`parse`): every proof takes ``--shared DIR`` (the real-data
root; default ``$EMO_SHARED_DATA``, else ``../shared/data`` beside the project) and, where it
has them, ``--work DIR`` (scratch, ignored by git) and ``--out FILE`` (its result file); the
script adds its own options to the parser it gets.

Result files (:func:`write_result`): each gets a ``generated_by`` block (:func:`provenance`; not
``provenance``, which some results use for store provenance):

* ``command``: the command line, as run from the project root (``python proofs/x.py ...``);
* ``commit``: ``git rev-parse HEAD`` of the project (``null`` outside a git checkout);
* ``dirty``: whether tracked files other than ``results/`` differ from that commit
  (``git status --porcelain --untracked-files=no``; ``null`` without git);
* ``packages``: versions of Python, emo and the libraries that change numbers;
* ``paths``: what the placeholders below stand for on the machine that ran it.

Every string in the result is made portable (:func:`relativize`): the project root becomes a
relative path, the data root ``$EMO_SHARED_DATA``, a temporary directory ``$TMP``. The file is
written atomically (:func:`emo.fsio.write_json`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
EMO = [sys.executable, "-m", "emo.cli"]
#: Distributions whose versions a result records (those that change numbers or speed).
PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "transformers", "open_clip_torch", "timm", "opensmile",
            "librosa", "h5py", "av", "safetensors", "pandas")


def default_shared() -> str:
    """``$EMO_SHARED_DATA``, else ``<project>/../shared/data``."""
    return os.environ.get("EMO_SHARED_DATA", str(ROOT.parent / "shared" / "data"))


def parser(doc: str | None, *, work: str | Path | None = None, out: str | Path | None = None,
           **kwargs: Any) -> argparse.ArgumentParser:
    """The proofs' argument parser: ``--shared`` always, ``--work``/``--out`` when a default is given.

    Args:
        doc: the script's ``__doc__`` (its first paragraph is the description).
        work: default scratch directory (adds ``--work``). out: default result path (adds ``--out``).
        kwargs: passed to :class:`argparse.ArgumentParser` (e.g. ``formatter_class``).
    """
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0].strip(), **kwargs)
    ap.add_argument("--shared", default=default_shared(),
                    help="real data root (default $EMO_SHARED_DATA, else ../shared/data)")
    if work is not None:
        ap.add_argument("--work", default=str(work), help="scratch directory (ignored by git)")
    if out is not None:
        ap.add_argument("--out", default=str(out), help="result file to write")
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; ``--shared`` becomes an absolute :class:`Path` that must exist (else exit 2),
    ``--work``/``--out`` become :class:`Path`. Records the arguments for :func:`provenance`."""
    a = ap.parse_args(argv)
    _STATE["shared_given"] = Path(a.shared).absolute()  # a symlinked data root is written as given, too
    a.shared = Path(a.shared).resolve()
    if not a.shared.is_dir():
        ap.error(f"real data not found at {a.shared} (pass --shared or set EMO_SHARED_DATA)")
    for k in ("work", "out"):
        if getattr(a, k, None) is not None:
            setattr(a, k, Path(getattr(a, k)))
    _STATE["argv"] = list(sys.argv[1:] if argv is None else argv)
    _STATE["shared"] = a.shared
    return a


def parse_args(doc: str) -> argparse.Namespace:
    """``parse(parser(doc, work=<project>/features/_proofs))``: for proofs with no options of their own."""
    return parse(parser(doc, work=ROOT / "features" / "_proofs"))


_STATE: dict[str, Any] = {}


def emo(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run the emo CLI (argument list, no shell); exit with its output when the status is not in ``ok``."""
    r = subprocess.run(EMO + list(args), capture_output=True, text=True, cwd=ROOT)
    if r.returncode not in ok:
        sys.exit(f"emo {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


_PEAK_RSS_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"  # argument list, no shell
    "print(json.dumps({'rc': r.returncode, 'kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "'seconds': time.monotonic() - t, 'stderr': r.stderr[-2000:]}))\n")


def child_peak_rss(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = ROOT) -> dict[str, Any]:
    """Run ``cmd`` (argument list, no shell) as the only child of a fresh wrapper process and measure it.

    ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of the wrapper is the command's own peak
    resident set size (no other child has run there).

    Returns:
        ``{"exit_code": int, "peak_rss_mb": float (MiB, 1 decimal), "seconds": float (wall, 2 decimals),
        "stderr_tail": str}`` (``stderr_tail``: the last 600 characters, only when the exit code is not 0).

    Raises:
        RuntimeError: the wrapper itself failed (its stderr in the message).
    """
    import json

    r = subprocess.run([sys.executable, "-c", _PEAK_RSS_WRAPPER, *cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"peak-RSS wrapper failed ({r.returncode}): {r.stderr[-1000:]}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return {"exit_code": int(d["rc"]), "peak_rss_mb": round(d["kib"] / 1024, 1), "seconds": round(d["seconds"], 2),
            **({"stderr_tail": d["stderr"][-600:]} if d["rc"] else {})}


def command_line(argv: list[str] | None = None, script: str | None = None) -> str:
    """``python <script relative to the project> ARGS`` with paths made portable (:func:`relativize`)."""
    script = script or sys.argv[0]
    try:
        script = str(Path(script).resolve().relative_to(ROOT))
    except ValueError:
        pass
    args = _STATE.get("argv", sys.argv[1:]) if argv is None else argv
    return relativize("python " + " ".join(shlex.quote(a) for a in [script, *args]))


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def packages() -> dict[str, str | None]:
    """Versions of Python, emo and :data:`PACKAGES` (``None`` for one not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    try:
        from emo import __version__ as emo_version
    except ImportError:
        emo_version = None
    out["emo"] = emo_version
    for d in PACKAGES:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = None
    return out


def provenance(command: str | None = None) -> dict[str, Any]:
    """``{"command", "commit", "dirty", "packages", "paths"}`` of this run (see the module docstring)."""
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None else any(
        line[3:].strip('"') and not line[3:].strip('"').startswith("results/") for line in status.splitlines())
    return {"command": command or command_line(), "commit": head.strip() if head else None, "dirty": dirty,
            "packages": packages(),
            "paths": {"project": "paths without a root are relative to the project root",
                      "$EMO_SHARED_DATA": "the real-data root (--shared)", "$TMP": "a temporary directory"}}


def relativize(obj: Any, shared: str | Path | None = None) -> Any:
    """``obj`` with every string made portable: the data root (as given and resolved) ->
    ``$EMO_SHARED_DATA``, the Python environment (``sys.prefix``) -> ``$VENV``, ``<project>/``
    removed (relative paths), ``<tempdir>/<name>`` -> ``$TMP``; dicts and lists recursively."""
    roots = [shared] if shared is not None else [_STATE.get("shared", default_shared()), _STATE.get("shared_given")]
    roots = sorted({str(Path(r).resolve()) for r in roots if r} | {str(Path(r).absolute()) for r in roots if r}, key=len, reverse=True)
    subs = [(re.escape(r) + r"(?![\w.-])", "$EMO_SHARED_DATA") for r in roots] + [
            (re.escape(sys.prefix.rstrip("/")) + "/", "$VENV/"),  # installed packages (a model bundled in a wheel)
            (re.escape(str(ROOT)) + "/", ""), (re.escape(str(ROOT)) + r"(?![\w.-])", "."),
            (re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^/\s\"']+", "$TMP")]

    def fix(s: str) -> str:
        for pat, rep in subs:
            s = re.sub(pat, lambda _m: rep, s)
        return s

    def walk(o: Any) -> Any:  # the substitutions are built once per call, not once per nested value
        if isinstance(o, str):
            return fix(o)
        if isinstance(o, dict):
            return {fix(k) if isinstance(k, str) else k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return o

    return walk(obj)


def write_result(name: str | Path, data: dict, quiet: bool = False, shared: str | Path | None = None) -> Path:
    """Write ``data`` plus ``generated_by`` (:func:`provenance`) to ``results/<name>.json`` (or to the path ``name``),
    atomically, paths made portable; prints the start of it. A ``command`` already in ``data`` is
    kept (made portable). Returns the path written."""
    from emo import fsio

    p = Path(name) if isinstance(name, Path) or str(name).endswith(".json") else RESULTS / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = relativize({**data, "generated_by": provenance(data.get("command"))}, shared)
    fsio.write_json(p, doc, indent=2)
    if not quiet:
        import json

        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str)[:3000])
    return p
