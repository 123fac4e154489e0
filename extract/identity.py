"""Sample identity: what a media file *is*, so a resumed run never trusts a sample's name alone.

A store records, per finished sample, the identity of the media file its features came from:
``path`` (absolute, as given), ``size`` (bytes), ``mtime`` (ns since the epoch) and ``hash``.

Choice of hash (the issue leaves it open): **blake2b-128 over the file size and three 1 MiB
blocks (first, middle, last); files up to 3 MiB are hashed completely.** Why:

* cost is O(1) per file (at most 3 MiB read) whatever the clip length, so checking every
  sample of a resumed run over hours of video costs seconds, not a re-read of the corpus;
* a different recording with the same name differs in its container header (first block)
  and almost always in size; a truncated or appended file changes size and the last block; a
  re-encode changes everything;
* blake2b is in the standard library and is faster than SHA-256 on CPUs without SHA
  extensions; 128 bits is ample for accidental collisions (this is not a security boundary:
  a deliberate same-size edit that spares the three blocks is not detected; use
  ``full=True`` (a complete blake2b) when that matters, e.g. for checkpoints, which
  :func:`emo.fsio.sha256_file` covers).

Identity = ``(size, hash)``. ``path`` and ``mtime`` are recorded for messages but do not decide
identity: a copied or touched file with the same content is the same sample (no recomputation),
while a changed file with the same name is a different sample (recomputed and reported).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Bytes per block of the partial hash.
BLOCK = 1 << 20
#: Name of the hash scheme, stored beside the value so a future scheme is never compared with this one.
SCHEME = "blake2b128-3x1MiB"
SCHEME_FULL = "blake2b128-full"


class IdentityError(OSError):
    """The media file cannot be stat-ed or read; the message names it."""


@dataclass(frozen=True)
class SampleIdentity:
    """Identity of one media file.

    Attributes:
        path: the file as given (absolute). size: bytes. mtime_ns: modification time, ns.
        hash: hex digest of :data:`scheme`. scheme: :data:`SCHEME` or :data:`SCHEME_FULL`.
    """

    path: str
    size: int
    mtime_ns: int
    hash: str
    scheme: str = SCHEME

    @property
    def key(self) -> str:
        """The identity proper: ``"<scheme>:<size>:<hash>"`` (path and mtime excluded; see module docstring)."""
        return f"{self.scheme}:{self.size}:{self.hash}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleIdentity:
        return cls(str(d["path"]), int(d["size"]), int(d["mtime_ns"]), str(d["hash"]), str(d.get("scheme", SCHEME)))


def content_hash(path: str | os.PathLike, size: int | None = None, full: bool = False) -> str:
    """blake2b-128 hex digest of ``size`` (8 bytes little-endian) then the first, middle and last
    :data:`BLOCK` bytes (the whole file when ``full`` or when it is at most 3 blocks).

    Raises:
        IdentityError: the file cannot be read (message names it and the reason).
    """
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(p, "rb") as fh:
            n = os.fstat(fh.fileno()).st_size if size is None else size
            h.update(int(n).to_bytes(8, "little"))
            if full or n <= 3 * BLOCK:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                for off in (0, (n - BLOCK) // 2, n - BLOCK):
                    fh.seek(off)
                    h.update(fh.read(BLOCK))
    except OSError as e:
        raise IdentityError(e.errno, f"{p}: cannot read for its content hash ({e.strerror or e})") from None
    return h.hexdigest()


def identify(path: str | os.PathLike, full: bool = False) -> SampleIdentity:
    """Identity of one media file (see module docstring).

    Args:
        path: a regular file (links are followed: a dataset may link its clips).
        full: hash the whole file instead of 3 blocks.

    Raises:
        IdentityError: missing, not a regular file (FIFO, device, directory) or unreadable.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise IdentityError(e.errno, f"{p}: {e.strerror or e}") from None
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise IdentityError(0, f"{p}: not a regular file")
    return SampleIdentity(str(p.absolute()), int(st.st_size), int(st.st_mtime_ns),
                          content_hash(p, st.st_size, full), SCHEME_FULL if full else SCHEME)


def describe_change(old: SampleIdentity | dict[str, Any], new: SampleIdentity) -> str | None:
    """``None`` when ``old`` and ``new`` are the same content, else a short human reason
    (e.g. ``"content changed (size 1024 -> 2048 bytes)"``, ``"content changed (same size)"``)."""
    o = SampleIdentity.from_dict(old) if isinstance(old, dict) else old
    if o.scheme == new.scheme and o.size == new.size and o.hash == new.hash:
        return None
    where = f" (was {o.path})" if o.path != new.path else ""
    if o.size != new.size:
        return f"content changed (size {o.size} -> {new.size} bytes){where}"
    if o.scheme != new.scheme:
        return f"identity scheme changed ({o.scheme} -> {new.scheme}){where}"
    return f"content changed (same size, different bytes){where}"


# -- store provenance: everything besides the encoder that changes a store's values ----------------
#: Adapter options that select or label samples but never change a sample's features; they are
#: left out of ``dataset_options`` so e.g. adding ``--labels`` does not refuse a finished store.
LABEL_ONLY_OPTIONS = frozenset({"labels", "classes", "subset", "limit", "split"})
#: What ``emo extract`` applies to inputs before the encoders: nothing (no augmentation at
#: extraction time); recorded so a future augmenting path can never be mixed with this one.
AUGMENTATION = "none"


def dataset_provenance(adapter) -> dict[str, str]:
    """Store attributes naming the data a store was computed from.

    Returns:
        ``dataset_root``: the adapter's root, resolved (``""`` for ad-hoc file lists such as
        ``emo score``'s, whose samples are identified by content alone); ``dataset_options``:
        JSON of the adapter options that can change values (sorted keys; label-only options
        :data:`LABEL_ONLY_OPTIONS` excluded); ``augmentation``: :data:`AUGMENTATION`.
    """
    import json

    ad_hoc = bool(getattr(adapter, "ad_hoc", False))
    root = "" if ad_hoc else str(Path(adapter.root).resolve())
    opts = {k: (str(v) if not isinstance(v, (int, float, bool, type(None))) else v)
            for k, v in sorted((getattr(adapter, "options", None) or {}).items()) if k not in LABEL_ONLY_OPTIONS and v is not None}
    return {"dataset_root": root, "dataset_options": json.dumps(opts, sort_keys=True), "augmentation": AUGMENTATION}


def describe_key_change(old: str, new: str) -> str:
    """Reason a stored identity key (:attr:`SampleIdentity.key`) differs from the current one."""
    try:
        (os_, osize, _), (ns, nsize, _) = old.split(":", 2), new.split(":", 2)
    except ValueError:
        return "content changed"
    if os_ != ns:
        return f"identity scheme changed ({os_} -> {ns})"
    if osize != nsize:
        return f"content changed (size {osize} -> {nsize} bytes)"
    return "content changed (same size, different bytes)"
