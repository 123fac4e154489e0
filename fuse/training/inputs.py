"""What a fusion model is told about each of its inputs: :class:`FeatureInput`.

One :class:`FeatureInput` per encoder, in input order, fixes which feature block feeds which
tokens of the head: its name (the block's key), modality (``audio``, ``face``, ``text``; AFG
structure 2 groups by it), the selected layer keys, the dimension D (per frame for
frame-level inputs), whether it is frame-level, and, when loaded from a store, the full
``emo extract --encoder`` spec and the store's provenance. Run directories keep them as JSON
objects (``config.json`` ``inputs`` and ``model.inputs``); :meth:`FeatureInput.from_dict`
reads both, :meth:`FeatureInput.to_dict` / :meth:`FeatureInput.model_dict` write them.

Light module (no torch, no numpy): every fuse layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

#: The keys a model needs (``config["model"]["inputs"]``); ``spec`` and ``provenance`` are records only.
MODEL_KEYS = ("name", "modality", "layers", "dim", "frames")


@dataclass
class FeatureInput:
    """One encoder's features as a model input.

    Attributes:
        name: encoder name, the key of its feature block (``"hubert_large"``).
        modality: ``"audio"``, ``"face"`` or ``"text"``.
        layers: selected layer keys in input order (``["16", "17"]``, ``["functionals"]``).
        dim: D, the feature dimension (per frame for frame-level inputs).
        frames: True when the block holds frame sequences (:class:`emo.fuse.training.data.Frames`), which
            a :class:`emo.fuse.model.frames.FrameLSTM` turns into one token.
        spec: the ``emo extract --encoder`` spec with layers, when loaded from a store.
        provenance: the store's provenance attributes (``weights_hash``, ``fps``, ...), when loaded from a store.

    Read access by key (``inp["dim"]``, ``inp.get("provenance", {})``) works as on the JSON
    form, for code written against the earlier ``list[dict]``.
    """

    name: str
    modality: str
    layers: list[str]
    dim: int
    frames: bool = False
    spec: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = [str(k) for k in self.layers]
        self.dim = int(self.dim)
        self.frames = bool(self.frames)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "FeatureInput") -> "FeatureInput":
        """From the JSON form (``name``, ``modality``, ``layers``, ``dim``, optional ``frames``,
        ``spec``, ``provenance``; other keys are ignored). A :class:`FeatureInput` is returned as is.

        Raises:
            ValueError: a required key is missing (named).
        """
        if isinstance(d, FeatureInput):
            return d
        missing = [k for k in ("name", "modality", "layers", "dim") if k not in d]
        if missing:
            raise ValueError(f"feature input {dict(d)!r} lacks {', '.join(missing)}")
        return cls(str(d["name"]), str(d["modality"]), list(d["layers"]), int(d["dim"]), bool(d.get("frames", False)),
                   d.get("spec"), dict(d.get("provenance") or {}))

    def model_dict(self) -> dict[str, Any]:
        """The keys a model needs (:data:`MODEL_KEYS`), as stored in ``config["model"]["inputs"]``."""
        return {"name": self.name, "modality": self.modality, "layers": list(self.layers), "dim": self.dim, "frames": self.frames}

    def to_dict(self) -> dict[str, Any]:
        """Every field, as stored in a run's ``config["inputs"]``."""
        return {**self.model_dict(), "spec": self.spec, "provenance": dict(self.provenance)}

    # read access by key, as on the JSON form
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` for a key that is not a field or is None."""
        v = getattr(self, key, None) if key in _FIELDS else None
        return default if v is None else v

    def __contains__(self, key: object) -> bool:
        return key in _FIELDS and getattr(self, str(key)) is not None


_FIELDS = frozenset(f.name for f in fields(FeatureInput))


def as_inputs(items: Iterable[Mapping[str, Any] | FeatureInput]) -> list[FeatureInput]:
    """A list of :class:`FeatureInput` from dicts (the JSON form) or :class:`FeatureInput` objects.

    Raises:
        ValueError: an item lacks a required key.
    """
    return [FeatureInput.from_dict(d) for d in items]
