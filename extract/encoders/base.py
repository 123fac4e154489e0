"""The encoder interface every feature extractor implements.

An encoder turns a *batch* of decoded inputs into per-layer utterance vectors
(and optionally frame-level sequences). Batching is part of the contract: the
engine hands each encoder as many items as fit in its size budget, sorted by
size so padding stays small; nothing here is one clip at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from emo.extract.types import (  # noqa: F401  (re-exported: the encoder interface in one import)
    FLAGS,
    AudioInput,
    Encoded,
    EncoderError,
    FaceInput,
    Input,
    TextInput,
    autocast_dtype,
    hash_weights,
    torch_device,
)

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
        """:func:`~emo.extract.types.hash_weights` of the source: weight-file bytes for a local file or
        directory, the ``"hub:<id>"`` string for a hub id (weights not read), ``""`` for no source."""
        return hash_weights(self.source)
