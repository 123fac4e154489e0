"""``nrc_vad``: a model-free text feature, the mean NRC-VAD of the transcript's words.

One layer, ``"vad"``, float32 (4,): mean valence, arousal, dominance of the word
tokens found in NRC-VAD (each in [-1, 1], Mohammad 2018, mapped with 2x - 1),
and coverage, the fraction of word tokens found (in [0, 1]). Tokens are runs of
letters with inner apostrophes, lower-cased (:func:`emo.lexicon.nrc.tokenize`).

An empty or missing transcript, or one with no word in the lexicon (a Chinese
transcript, for instance: NRC-VAD v1 is English), gives the zero vector and the
``no_text`` flag; it never raises.

The lexicon comes from the ``lexicon`` option (a file or folder), else
``$EMO_LEXICON``, else emo's data directory (:mod:`emo.lexicon.nrc`). Its
hash (:func:`~emo.extract.encoders.base.hash_weights`: SHA-256 of the file's
name and content) is the store's ``weights_hash``, so features from different
lexicon versions never mix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import Encoded, EncoderError, TextInput, hash_weights


@register_encoder(
    "nrc_vad", None, needs="lexicon",
    summary="mean NRC-VAD of the transcript's words (V, A, D, coverage), no weights",
)
class NRCVADEncoder(Encoder):
    """Mean NRC-VAD of a transcript plus coverage: layer ``"vad"`` = (V, A, D, coverage), float32.

    Args:
        name, source, layers, device, frames: as :class:`~emo.extract.encoders.base.Encoder`
            (``source`` and ``device`` are unused: there are no weights; frames are not produced).
        lexicon: option, NRC-VAD file or folder (else ``$EMO_LEXICON``, then emo's data dir).

    Raises:
        EncoderError: the lexicon cannot be found or parsed (the message says where it looked).
        emo.extract.layers.LayerSpecError: a layer other than ``vad`` is requested.
    """

    modality = "text"
    pooling = "mean"
    store_dtype = "float32"
    DIM = 4

    def __init__(
        self,
        name: str,
        source: str | None = None,
        layers: list[str] | None = None,
        device: str = "cpu",
        frames: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        from emo.lexicon.nrc import LexiconFormatError, LexiconNotFoundError, load_nrc_vad

        try:
            self.lexicon = load_nrc_vad(options.get("lexicon") or source)
        except (LexiconNotFoundError, LexiconFormatError) as e:
            raise EncoderError(f"{name}: {e}") from e
        self._hash = hash_weights(self.lexicon.path)
        self._select()

    def available_layers(self) -> list[str]:
        """The single layer ``["vad"]``."""
        return ["vad"]

    def dims(self) -> dict[str, int]:
        """``{"vad": 4}``."""
        return {k: self.DIM for k in self.layers}

    def encode(self, batch: list[TextInput]) -> list[Encoded]:
        """Encode transcripts; one :class:`Encoded` per input, in order.

        Returns:
            ``Encoded(layers={"vad": float32 (4,)})``; zeros and ``flags={"no_text"}`` when the
            text is empty, ``None`` or has no word in the lexicon.
        """
        from emo.lexicon.nrc import text_vad

        out: list[Encoded] = []
        for item in batch:
            text = getattr(item, "text", None)
            vad, coverage, _ = text_vad(text if isinstance(text, str) else None, self.lexicon)
            vec = np.zeros(self.DIM, dtype=np.float32)
            flags: set[str] = set()
            if coverage > 0:
                vec[:3] = vad
                vec[3] = coverage
            else:
                flags.add("no_text")
            out.append(Encoded(layers={k: vec.copy() for k in self.layers}, flags=flags))
        return out

    def weights_hash(self) -> str:
        """hash_weights of the lexicon file (SHA-256 of name and content, 16 hex digits)."""
        return self._hash

    def provenance(self) -> dict[str, Any]:
        """Base provenance plus the lexicon path and hash."""
        p = super().provenance()
        p.update({"source": str(self.lexicon.path), "lexicon": str(self.lexicon.path), "lexicon_hash": self._hash})
        return p
