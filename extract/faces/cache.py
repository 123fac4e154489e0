"""Cache of aligned face tracks, so several visual encoders do not redo detection.

One HDF5 file per dataset (suggested: ``features/<dataset>/faces.h5``)::

    attrs           detector, weights_hash, size, template, fps (the cropper's provenance
                    plus the sampling rate): a cache built with other settings is refused
    tracks/<name>/  one group per sample (``/`` in names is escaped as ``%2F``)
        crops       uint8 (F, size, size, 3), gzip-compressed, one chunk per crop
        frame_index int64 (F,)
        boxes       float32 (F, 4)
        scores      float32 (F,)
        landmarks   float32 (F, 5, 2)
        attrs       n_frames

A clip with no face is stored too (F = 0), so it is not detected again. Writes go
straight into the file; a track interrupted mid-write is missing its ``n_frames``
attribute (written last) and is treated as absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emo.extract.faces.core import FaceError, FaceTrack

_FIELDS = ("crops", "frame_index", "boxes", "scores", "landmarks")


def _key(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F")


class FaceCache:
    """Read/write :class:`FaceTrack` objects keyed by sample name.

    Args:
        path: HDF5 file (created with its folder when absent).
        provenance: settings the tracks were made with (``FaceCropper.provenance()`` plus ``fps``);
            stored on creation and compared on every later open.

    Raises:
        FaceError: the file exists with different provenance, or is not a face cache.
    """

    def __init__(self, path: str | os.PathLike, provenance: dict[str, Any]) -> None:
        import h5py

        self.path = Path(path)
        self.provenance = dict(provenance)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._h5 = h5py.File(self.path, "a")
        except OSError as e:
            raise FaceError(f"{self.path}: cannot open face cache ({e})") from None
        if "tracks" not in self._h5:
            for k, v in self.provenance.items():
                self._h5.attrs[k] = v
            self._h5.create_group("tracks")
        else:
            stored = {k: self._h5.attrs.get(k) for k in self.provenance}
            diff = {k: (stored[k], v) for k, v in self.provenance.items()
                    if stored[k] is None or (stored[k].item() if hasattr(stored[k], "item") else stored[k]) != v}
            if diff:
                self._h5.close()
                raise FaceError(f"{self.path}: face cache made with other settings {diff} (stored, requested); "
                                "delete it or use another path")

    def __contains__(self, name: str) -> bool:
        g = self._h5["tracks"].get(_key(name))
        return g is not None and "n_frames" in g.attrs

    def get(self, name: str) -> FaceTrack | None:
        """The cached track of ``name``, or ``None`` when absent (or half-written)."""
        if name not in self:
            return None
        g = self._h5["tracks"][_key(name)]
        return FaceTrack(*(g[f][()] for f in _FIELDS), n_frames=int(g.attrs["n_frames"]))

    def put(self, name: str, track: FaceTrack) -> None:
        """Store (or replace) the track of ``name``; flushed to disk before returning."""
        tracks = self._h5["tracks"]
        k = _key(name)
        if k in tracks:
            del tracks[k]
        g = tracks.create_group(k)
        c = track.crops
        g.create_dataset("crops", data=c, compression="gzip", compression_opts=4,
                         chunks=(1, *c.shape[1:]) if c.shape[0] else None)
        for f in _FIELDS[1:]:
            g.create_dataset(f, data=getattr(track, f))
        g.attrs["n_frames"] = int(track.n_frames)  # last: marks the track complete
        self._h5.flush()

    def close(self) -> None:
        """Close the file."""
        self._h5.close()

    def __enter__(self) -> "FaceCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
