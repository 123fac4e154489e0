"""Types shared by every part of the extraction stage: decoded inputs, encoder outputs, flags,
weight hashing and device helpers.

A small leaf module (numpy only at import time): the encoders, the batching code, the engine and
the feature store all import it, and it imports nothing from emo.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The modalities an encoder can read.
MODALITIES: tuple[str, ...] = ("audio", "face", "text")

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
    #: frames sampled from the clip before face detection (``crops`` holds those with a face); 0 = unknown
    n_frames: int = 0


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
        info: per-sample counts kept in the store's ``info/<key>`` columns, e.g. ``face_frames``
            (sampled frames with a face) and ``frames_sampled`` (set by the engine for face encoders).
    """

    layers: dict[str, np.ndarray]
    frames: dict[str, np.ndarray] | None = None
    flags: set[str] = field(default_factory=set)
    info: dict[str, int] = field(default_factory=dict)


#: Flags a store records per sample: flag ``FLAGS[i]`` is bit ``i`` (value ``1 << i``) of the
#: uint8 ``flags`` dataset. no_face = 1 (no face found in any sampled frame; face vectors are
#: zeros), no_text = 2 (empty transcript; text vectors are zeros), silent = 4 (the audio is all zeros),
#: truncated = 8 (the transcript was cut to the text encoder's maximum token count).
FLAGS: tuple[str, ...] = ("no_face", "no_text", "silent", "truncated")


class EncoderError(RuntimeError):
    """An encoder could not be built or could not process an input."""


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pth.tar", ".onnx")


def hash_weights(source: str | os.PathLike | None, extra: str = "") -> str:
    """The ``weights_hash`` of a store: what identifies the weights that computed it.

    What is hashed (SHA-256, first 16 hex digits), exactly:

    * ``source`` is an existing **file**: its name and its bytes;
    * ``source`` is an existing **directory** (a local ``from_pretrained`` folder): for every file
      below it whose name ends in ``.safetensors .bin .pt .pth .ckpt .pth.tar .onnx``, in sorted
      path order, its name and its bytes (config and tokenizer files are not hashed);
    * anything else (a **hub id** such as ``facebook/hubert-large-ll60k``, or a local path
      that does not exist): the string ``"hub:" + source`` only. The weights are *not* read,
      even when a copy sits in the local Hugging Face cache, because the hub revision cannot be
      checked offline: two stores from the same hub id are treated as the same weights. To tie a
      store to weight bytes, pass the local directory (``--encoder NAME=PATH``) instead of the id;
    * then ``extra`` (encoder options that change the values) is appended.

    Files are streamed in 1 MiB blocks. Encoders without weight files record other strings
    (``opensmile-<version>``, ``librosa-<version>``, ``random`` for untrained weights).

    Returns:
        16 hex digits, or ``""`` for ``None`` with no ``extra``.
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


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is available, else ``"cpu"``; any other value unchanged.

    torch is imported only for ``"auto"``.
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_device(device: str):
    """Resolve ``"cuda"``/``"cpu"``/``"auto"`` to a :class:`torch.device`, with a clear error when CUDA is absent."""
    import torch

    device = resolve_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"--device {device} requested but CUDA is not available on this machine")
    return torch.device(device)


def autocast_dtype(device: str):
    """bf16 autocast on GPU, ``None`` (fp32) on CPU."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else None


class AdapterError(RuntimeError):
    """An encoder whose layers cannot take adapters, a bad window, or an unusable adapter file
    (raised by :mod:`emo.extract.adapters`; defined here, without torch, so that ``emo extract``
    can catch it without importing torch)."""
