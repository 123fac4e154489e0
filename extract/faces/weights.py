"""MTCNN weights: locate, fetch (from the facenet-pytorch wheel on PyPI, without installing it) and verify.

The official MTCNN weights (Zhang et al. 2016, converted to PyTorch state dicts)
ship inside the ``facenet-pytorch`` wheel as ``facenet_pytorch/data/{pnet,rnet,onet}.pt``.
That package pins an old torch, so it is never installed or imported: the wheel
is downloaded with ``pip download --no-deps``, the three files are extracted,
their SHA-256 checked against the values pinned below, and written atomically into
emo's model cache (``$EMO_HOME/models/mtcnn`` or ``~/.cache/emo/models/mtcnn``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from emo import fsio
from emo.extract.faces.core import FaceError

#: Wheel the weights come from (pinned so the hashes below hold).
WHEEL_PACKAGE = "facenet-pytorch"
WHEEL_VERSION = "2.6.0"
WHEEL_NAME = f"facenet_pytorch-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"

#: SHA-256 of each weight file (computed once from the pinned wheel).
MTCNN_FILES: dict[str, str] = {
    "pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}

FETCH_HINT = (
    "run `emo models fetch mtcnn` (or `make models-mtcnn`), pass --mtcnn-weights DIR holding "
    "pnet.pt, rnet.pt and onet.pt, or use --face-detector haar (no download)"
)


def models_home() -> Path:
    """emo's model cache: ``$EMO_HOME/models`` if ``EMO_HOME`` is set, else ``~/.cache/emo/models``."""
    home = os.environ.get("EMO_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "emo") / "models"


def default_mtcnn_dir() -> Path:
    """Where :func:`fetch_mtcnn` writes and :class:`~emo.extract.faces.FaceCropper` looks by default."""
    return models_home() / "mtcnn"


def verify_mtcnn(directory: str | os.PathLike) -> dict[str, bool]:
    """Check the three weight files in ``directory``.

    Returns:
        file name -> True when the file matches the pinned official SHA-256.

    Raises:
        FaceError: the directory or one of the files is missing (message says how to get them).
    """
    d = Path(directory)
    if not d.is_dir():
        raise FaceError(f"MTCNN weights directory {d} does not exist: {FETCH_HINT}")
    missing = [n for n in MTCNN_FILES if not (d / n).is_file()]
    if missing:
        raise FaceError(f"MTCNN weights missing in {d}: {', '.join(missing)}; {FETCH_HINT}")
    return {n: fsio.sha256_file(d / n) == h for n, h in MTCNN_FILES.items()}


def _extract(wheel: Path, dest: Path) -> None:
    digest = fsio.sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise FaceError(f"{wheel}: SHA-256 {digest} does not match the pinned {WHEEL_NAME} ({WHEEL_SHA256})")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise FaceError(f"{wheel}: not a wheel (zip) file: {e}") from None
    with zf:
        for name, expected in MTCNN_FILES.items():
            member = f"facenet_pytorch/data/{name}"
            try:
                data = zf.read(member)
            except KeyError:
                raise FaceError(f"{wheel}: has no {member}") from None
            got = hashlib.sha256(data).hexdigest()
            if got != expected:
                raise FaceError(f"{wheel}:{member}: SHA-256 {got} does not match the pinned {expected}")
            fsio.write_bytes(dest / name, data)  # atomic, never through a link (emo.fsio)


def fetch_mtcnn(dest: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
                force: bool = False) -> Path:
    """Put the official MTCNN weights into ``dest`` (default :func:`default_mtcnn_dir`) and verify them.

    Does nothing when the three files are already there with the pinned hashes
    (unless ``force``). Otherwise runs ``python -m pip download --no-deps
    --only-binary=:all: facenet-pytorch==2.6.0`` into a temporary folder (or uses
    the given local ``wheel`` file), checks the wheel's SHA-256, extracts
    ``pnet.pt``, ``rnet.pt``, ``onet.pt``, checks each SHA-256 and writes them atomically.

    Returns:
        the weights directory.

    Raises:
        FaceError: pip failed (no network / no index), or a hash does not match.
    """
    d = Path(dest) if dest is not None else default_mtcnn_dir()
    if not force and d.is_dir() and all((d / n).is_file() for n in MTCNN_FILES):
        if all(verify_mtcnn(d).values()):
            return d
    if wheel is not None:
        _extract(Path(wheel), d)
        return d
    with tempfile.TemporaryDirectory(prefix="emo-mtcnn-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise FaceError(
                f"`{' '.join(cmd[2:])}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}\n"
                "Without network access, download the wheel elsewhere and pass it with --wheel, "
                "or use --face-detector haar."
            )
        w = Path(tmp) / WHEEL_NAME
        if not w.is_file():
            raise FaceError(f"pip did not produce {WHEEL_NAME} in {tmp}: {sorted(os.listdir(tmp))}")
        _extract(w, d)
    return d
