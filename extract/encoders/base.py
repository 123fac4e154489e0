"""The encoder interface every feature extractor implements.

An encoder turns a *batch* of decoded inputs into per-layer utterance vectors
(and optionally frame-level sequences). Batching is part of the contract: the
engine hands each encoder as many items as fit in its size budget, sorted by
size so padding stays small; nothing here is one clip at a time.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


@dataclass
class AudioInput:
    """A decoded utterance: ``audio`` float32 mono, shape (T,), at the encoder's sample rate (Hz)."""

    name: str
    audio: np.ndarray


@dataclass
class FaceInput:
    """Aligned face crops of one clip: ``crops`` uint8 RGB, shape (F, H, W, 3); F = 0 means no face found."""

    name: str
    crops: np.ndarray


@dataclass
class TextInput:
    """A transcript; empty string when the sample has none."""

    name: str
    text: str


Input = AudioInput | FaceInput | TextInput


@dataclass
class Encoded:
    """Output for one sample.

    Attributes:
        layers: layer key -> utterance vector, float32, shape (D,).
        frames: optional layer key -> frame sequence, float32, shape (T, D).
        flags: recorded conditions that are not errors, e.g. ``{"no_face"}``,
            ``{"no_text"}`` (the vectors are then zeros).
    """

    layers: dict[str, np.ndarray]
    frames: dict[str, np.ndarray] | None = None
    flags: set[str] = field(default_factory=set)


#: Flags a store records per sample (bit positions in the ``flags`` dataset).
FLAGS: tuple[str, ...] = ("no_face", "no_text", "silent", "truncated")


class EncoderError(RuntimeError):
    """An encoder could not be built or could not process an input."""


# ---------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------


class Encoder(ABC):
    """Base class of all encoders.

    Subclasses set ``modality`` (``"audio"``, ``"face"`` or ``"text"``), implement
    :meth:`available_layers`, :meth:`encode` and, for batching, :meth:`cost`.

    Args:
        name: registry short name (``hubert_large``); also the store file name.
        source: hub id, local directory or checkpoint file; ``None`` for weight-free encoders.
        layers: selected layer keys (already parsed), ``None`` = all.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        frames: also return frame-level sequences where the encoder has them.
    """

    modality: ClassVar[str] = "audio"
    #: Input sample rate in Hz for audio encoders.
    sample_rate: ClassVar[int | None] = None
    #: How utterance vectors are pooled (recorded as provenance).
    pooling: ClassVar[str] = "mean"

    def __init__(
        self,
        name: str,
        source: str | None = None,
        layers: list[str] | None = None,
        device: str = "cpu",
        frames: bool = False,
        **options: Any,
    ) -> None:
        self.name = name
        self.source = source
        self.device = device
        self.frames = frames
        self.options = options
        self._requested = layers
        self.layers: list[str] = []  # set by subclasses via self._select()

    def _select(self) -> None:
        from emo.extract.layers import select_layers

        self.layers = select_layers(self._requested, self.available_layers(), self.name)

    @abstractmethod
    def available_layers(self) -> list[str]:
        """Every layer key this encoder can produce."""

    @abstractmethod
    def encode(self, batch: list[Input]) -> list[Encoded]:
        """Encode a batch; returns one :class:`Encoded` per input, in order.

        Raises:
            EncoderError: when the whole batch fails (the engine then retries the
                items one by one so a single bad input is isolated).
        """

    def cost(self, item: Input) -> float:
        """Size of one input in the unit of the batch budget: seconds for audio (samples / ``sample_rate``),
        face frames for face crops, 1 per transcript (text encoders override it with a token count)."""
        if isinstance(item, AudioInput) and self.sample_rate:
            return len(item.audio) / self.sample_rate
        if isinstance(item, FaceInput):
            return float(len(item.crops))
        return 1.0

    def dims(self) -> dict[str, int]:
        """Output dimension per selected layer; the default runs nothing and may be overridden."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """Attributes written to the store so features from different checkpoints never mix."""
        return {
            "encoder": self.name,
            "source": self.source or "",
            "weights_hash": self.weights_hash(),
            "pooling": self.pooling,
            "sample_rate": int(self.sample_rate or 0),
            "modality": self.modality,
        }

    def weights_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the weights files for a local source; ``""`` otherwise."""
        return hash_weights(self.source)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pth.tar", ".onnx")


def hash_weights(source: str | os.PathLike | None, extra: str = "") -> str:
    """Hash local weight files (a file, or every weight file in a directory).

    A hub id that is not a local path hashes its name (the hub revision is not
    reachable offline). Files are hashed by content, streamed in 1 MiB blocks.

    Returns:
        16 hex digits, or ``""`` for ``None``.
    """
    if source is None or str(source) == "":
        return hashlib.sha256(extra.encode()).hexdigest()[:16] if extra else ""
    h = hashlib.sha256()
    p = Path(source)
    files: list[Path]
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))
    else:
        h.update(f"hub:{source}".encode())
        files = []
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    h.update(extra.encode())
    return h.hexdigest()[:16]


def torch_device(device: str):
    """Resolve ``"cuda"``/``"cpu"`` to a :class:`torch.device`, with a clear error when CUDA is absent."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"--device {device} requested but CUDA is not available on this machine")
    return torch.device(device)


def autocast_dtype(device: str):
    """bf16 autocast on GPU, ``None`` (fp32) on CPU."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else None
