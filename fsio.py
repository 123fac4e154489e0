"""Safe file creation for the whole package: atomic writes that never follow a symlink.

Every file emo creates goes through this module (foundation layer: it imports nothing from emo,
so every layer may import it).

Atomic write (:func:`atomic_path`, :func:`atomic_open` and the ``write_*`` helpers):

1. the target's parent directory must exist; a target that is itself a symbolic link is refused
   (:class:`UnsafePathError`): emo never writes through a link it did not create;
2. the temporary file is created with :func:`tempfile.mkstemp` **in the target directory**
   (``O_CREAT | O_EXCL``, mode 0600 then widened to ``perm``, random name
   ``.<name>.<random>.tmp``), so a planted file or link at any predictable name is never opened:
   ``O_EXCL`` fails on an existing name, links included, and mkstemp retries with another name;
3. the data are written, flushed and ``fsync``-ed;
4. ``os.replace`` renames the temporary file over the target (atomic on POSIX: a reader sees the
   old or the new file, never a mix; ``rename`` replaces a link itself, never its target);
5. the directory is ``fsync``-ed so the rename survives a power cut.

On any error (or a ``KeyboardInterrupt``) the temporary file is removed and the target is left
as it was. A ``SIGKILL`` can leave a ``.<name>.*.tmp`` file behind: it is never read, and
:func:`remove_stale_tmp` deletes such leftovers (callers do it while holding their lock).

Atomic directory (:func:`atomic_dir`): the content is built in a temporary sibling directory,
then swapped into place (``renameat2(RENAME_EXCHANGE)`` where the kernel and libc have it, else
two renames: previous -> ``.<name>.old-*``, new -> name); the previous directory is kept
until the new one is complete, then removed.

Moves (:func:`move_file`): a file renamed to another name in the same file system, both
directories fsync-ed; a destination that exists or is a link is refused. Content hashes
(:func:`sha256_file`): the one SHA-256-of-a-file helper of the package. Safetensors
(:func:`write_safetensors`): canonical bytes, so identical weights give an identical file.

This is the only module that calls ``os.replace``/``os.rename`` (``tests/test_architecture.py``
fails on any other call).

CSV cells (:func:`csv_cell`): formula-injection escaping after the OWASP "CSV Injection"
recommendation: a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
prefixed with a single quote ``'`` (the spreadsheet then shows it as text) and the csv module
quotes the cell. Chosen deviation (OWASP is silent on numbers): a cell that is a plain decimal
number (``-0.25``, ``+3e-4``) is left as it is, because emo writes negative valence values and
its own readers parse them back; a number cannot start a formula. :func:`csv_unescape` undoes the
prefix for emo's readers.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "UnsafePathError",
    "atomic_dir",
    "atomic_open",
    "atomic_path",
    "check_not_link",
    "csv_cell",
    "csv_unescape",
    "fsync_dir",
    "move_file",
    "open_nofollow",
    "remove_stale_tmp",
    "safetensors_bytes",
    "sha256_file",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_safetensors",
    "write_text",
    "write_with",
]

#: File mode of files emo creates (before the umask is *not* applied: mkstemp creates 0600, we chmod).
DEFAULT_PERM = 0o644
#: Characters that start a spreadsheet formula (OWASP CSV injection list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)


class UnsafePathError(OSError):
    """A path emo refuses to write: the target is a symbolic link (or not a regular file/directory).

    Subclass of :class:`OSError` (``errno`` is ``ELOOP``) so callers that report I/O errors report it.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(errno.ELOOP, f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_not_link(path: str | os.PathLike) -> Path:
    """Raise :class:`UnsafePathError` when ``path`` itself is a symbolic link (dangling or not).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    p = Path(path)
    if p.is_symlink():
        raise UnsafePathError(p, f"is a symbolic link (to {os.readlink(p)}); emo never writes through links: remove it")
    return p


def fsync_dir(directory: str | os.PathLike) -> None:
    """``fsync`` a directory so renames in it are durable; errors (e.g. on some network file systems) are ignored."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, perm: int = DEFAULT_PERM, suffix: str = "") -> Iterator[Path]:
    """Yield the name of a fresh, empty temporary file beside ``path``; on success it replaces ``path``.

    For writers that need a file *name* (h5py, safetensors, matplotlib). The caller writes the
    temporary file by name and closes it; this function then fsyncs it, renames it over ``path`` and
    fsyncs the directory. The name is random and was created with ``O_EXCL`` in the target
    directory (see the module docstring), so nobody else can have planted a link there.

    Args:
        path: target file; its directory must exist.
        perm: permission bits of the final file.
        suffix: appended to the temporary name after ``.tmp`` (e.g. ``".png"`` for writers that
            pick the format from the file name).

    Raises:
        UnsafePathError: ``path`` is a symbolic link.
        OSError: creation, write or rename failed (the temporary file is removed, ``path`` unchanged).
    """
    target = check_not_link(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=".tmp" + suffix, dir=target.parent)
    tmp = Path(tmp_name)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, perm)
            os.fsync(fd)
        finally:
            os.close(fd)
        check_not_link(target)  # re-check just before the rename (a link planted meanwhile is refused)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None,
                perm: int = DEFAULT_PERM) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it atomically becomes ``path``.

    Args:
        path: target file (its directory must exist).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding, newline: as :func:`open` (text mode only).
        perm: permission bits of the final file.

    Yields:
        The open file object. Writes go to the temporary file (opened from mkstemp's descriptor).

    Raises:
        UnsafePathError: ``path`` is a symbolic link. ValueError: another ``mode``.
        OSError: as :func:`atomic_path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', not {mode!r}")
    target = check_not_link(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        if mode == "wb":
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), perm)
            os.fsync(fh.fileno())
        check_not_link(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def write_with(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Atomically create ``path`` with a writer that needs a file name (matplotlib's ``savefig``,
    h5py): ``write(tmp)`` writes the temporary file (:func:`atomic_path`, suffix ``suffix`` or
    ``path``'s own, for writers that pick the format from the name), which then replaces ``path``.

    Raises:
        whatever ``write`` raises (the temporary file is removed); :class:`UnsafePathError` when
        ``path`` is a symbolic link.
    """
    path = Path(path)
    with atomic_path(path, suffix=suffix or path.suffix) as tmp:
        write(tmp)
    return path


def write_bytes(path: str | os.PathLike, data: bytes, perm: int = DEFAULT_PERM) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`). Returns ``path``."""
    with atomic_open(path, "wb", perm=perm) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", perm: int = DEFAULT_PERM) -> Path:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` (no newline translation)."""
    with atomic_open(path, "w", encoding=encoding, newline="", perm=perm) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, allow_nan: bool = True,
               sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically.

    Args:
        allow_nan: ``False`` raises :class:`ValueError` on NaN/inf instead of writing the
            non-standard ``NaN`` token (use it where a non-finite value would be a bug).
    """
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan, sort_keys=sort_keys, ensure_ascii=False)
    return write_text(path, text + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Full SHA-256 hex digest (64 hex digits) of a file's content, streamed in 1 MiB blocks.

    The package's one file-hash helper (weight files, checkpoints, adapters, stores, run files).

    Raises:
        OSError: the file cannot be read; the message names it (same ``errno``; the subclass of
            the original error, e.g. :class:`FileNotFoundError`, is kept).
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise type(e)(e.errno, f"{path}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()


def move_file(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Rename ``src`` to ``dest`` (same file system) and fsync both directories.

    Raises:
        UnsafePathError: ``src`` or ``dest`` is a symbolic link.
        FileExistsError: ``dest`` exists (a move never overwrites).
        OSError: the rename failed (``src`` is then unchanged).
    """
    s, d = check_not_link(src), check_not_link(dest)
    if d.exists():
        raise FileExistsError(errno.EEXIST, f"{d}: exists; refusing to move {s} over it")
    os.rename(s, d)
    fsync_dir(d.parent)
    if s.parent != d.parent:
        fsync_dir(s.parent)
    return d


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file of ``tensors`` (name -> numpy array) with ``metadata``, as canonical bytes.

    ``safetensors`` serialises the ``__metadata__`` map in hash order, which changes from process
    to process, so two runs with bit-identical weights gave checkpoints with different bytes (and
    SHA-256). Here the header is re-serialised with ``__metadata__`` keys sorted (tensor entries
    keep the library's order, which is deterministic: by dtype alignment, then name), padded with
    spaces to a multiple of 8 bytes as the format requires; tensor data is unchanged.
    Readers (``safetensors.safe_open``/``load_file``) see the same tensors and metadata.

    Returns:
        bytes: 8-byte little-endian header length, JSON header, raw tensor data.
    """
    import struct

    from safetensors.numpy import save

    raw = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    canon = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
    text = json.dumps(canon, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> numpy array or torch tensor) as a safetensors file atomically, with
    canonical bytes (:func:`safetensors_bytes`), so identical weights give an identical file and SHA-256.

    Torch tensors are detached, moved to the CPU and converted to numpy (bfloat16 is refused by numpy:
    convert first).
    """
    arrays = {k: (v.detach().cpu().contiguous().numpy() if hasattr(v, "detach") else v) for k, v in tensors.items()}
    return write_bytes(path, safetensors_bytes(arrays, metadata))


def csv_cell(value: Any) -> Any:
    """Escape one CSV cell against spreadsheet formula injection (OWASP; see the module docstring).

    Strings starting with ``= + - @``, tab or CR get a leading ``'``, unless the whole string is a
    decimal number (``-0.5``, ``+1e-3``, ``-inf``). Other types are returned unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def csv_unescape(value: str) -> str:
    """Undo :func:`csv_cell`: drop the ``'`` it put before a formula-start character."""
    if len(value) >= 2 and value[0] == "'" and value[1] in FORMULA_START and not _NUMBER.match(value[1:]):
        return value[1:]
    return value


def write_csv(path: str | os.PathLike, rows: Iterable[Sequence[Any] | dict[str, Any]],
              header: Sequence[str] | None = None, escape: bool = True) -> Path:
    """Write CSV rows atomically, every cell escaped with :func:`csv_cell` (unless ``escape=False``).

    Args:
        rows: sequences, or dicts (then ``header`` defaults to the first row's keys, and each row
            is written in header order with ``""`` for a missing key).
        header: column names (escaped too); ``None`` with sequence rows: no header line.

    Returns:
        ``path``.
    """
    rows = list(rows)
    if header is None and rows and isinstance(rows[0], dict):
        header = list(rows[0].keys())
    esc = csv_cell if escape else (lambda v: v)
    with atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header is not None:
            w.writerow([esc(h) for h in header])
        for r in rows:
            cells = [r.get(h, "") for h in header] if isinstance(r, dict) else list(r)
            w.writerow([esc(c) for c in cells])
    return Path(path)


def open_nofollow(path: str | os.PathLike, flags: int = os.O_RDWR | os.O_CREAT, perm: int = DEFAULT_PERM) -> int:
    """``os.open`` with ``O_NOFOLLOW | O_CLOEXEC``: for lock files and other files opened in place.

    Returns:
        A file descriptor (the caller closes it).

    Raises:
        UnsafePathError: ``path`` is a symbolic link (``ELOOP``), or not a regular file.
        OSError: any other failure of ``open``.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), perm)
    except OSError as e:
        if e.errno == errno.ELOOP or Path(path).is_symlink():
            raise UnsafePathError(path, f"is a symbolic link (to {os.readlink(path)}); emo never opens links here: remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(path, "is not a regular file")
    return fd


def remove_stale_tmp(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete temporary files (``.<name>.*.tmp``, or every ``.*.tmp`` when ``name`` is None) left by a
    killed writer in ``directory``; links are removed, never followed. Returns the removed paths.

    Only call this while holding the lock that serialises writers of that directory.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    pattern = f".{name}.*.tmp*" if name else ".*.tmp*"
    removed = []
    for t in d.glob(pattern):
        with contextlib.suppress(OSError):
            if t.is_dir() and not t.is_symlink():
                shutil.rmtree(t)
            else:
                t.unlink()
            removed.append(t)
    return removed


# -- directories ----------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)``; False when unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then put it in place of ``path`` in one step.

    Yields a fresh empty directory ``.<name>.<random>.tmp`` beside ``path`` (made by
    :func:`tempfile.mkdtemp`, mode 0700 then 0755). On a clean exit every file in it is already
    durable (callers write with the helpers above), the directory is swapped with ``path``
    (``renameat2(RENAME_EXCHANGE)``; where unsupported: previous -> ``.<name>.old-*``, new ->
    ``path``), the parent is fsync-ed and the previous content removed. Until the swap, ``path``
    holds the previous complete directory; after it, the new complete one. On an error the
    temporary directory is removed and ``path`` is untouched.

    Raises:
        UnsafePathError: ``path`` is a symbolic link, or exists and is not a directory.
        OSError: the parent cannot be written.
    """
    target = check_not_link(path)
    if target.exists() and not target.is_dir():
        raise UnsafePathError(target, "exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # noqa: S103 - a run directory, readable like any mkdir (mkdtemp made it 0o700)
        fsync_dir(tmp)
        check_not_link(target)
        if target.exists():
            if _exchange(tmp, target):
                old = tmp  # after the swap the temporary name holds the previous directory
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.rename(target, old)  # onto an empty directory: allowed for directories
                os.rename(tmp, target)
        else:
            os.rename(tmp, target)
            old = None
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_complete_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a real directory (not a link) and not one of :func:`atomic_dir`'s temporaries."""
    p = Path(path)
    return p.is_dir() and not p.is_symlink() and not (p.name.startswith(".") and p.name.endswith(".tmp"))


def read_text_nofollow(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read a regular file's text without following a link at ``path`` (see :func:`open_nofollow`)."""
    fd = open_nofollow(path, os.O_RDONLY)
    with open(fd, "r", encoding=encoding, closefd=True) as fh:
        return fh.read()
