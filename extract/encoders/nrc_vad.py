"""``nrc_vad``: a model-free text feature, the mean NRC-VAD of the transcript's words.

One layer, ``"vad"``, float32 (4,): mean valence, arousal, dominance of the word
tokens found in NRC-VAD (each in [-1, 1], Mohammad 2018, mapped with 2x - 1),
and coverage, the fraction of word tokens found (in [0, 1]). Tokens are runs of
letters with inner apostrophes, lower-cased (:func:`emo.lexicon.nrc.tokenize`).

An empty or missing transcript gives the zero vector and the ``no_text`` flag (``no_text``
means an empty transcript, nothing else). A transcript with no word in the lexicon gives the
zero vector without a flag (its coverage, the fourth value, is 0). Over a whole dataset, zero
coverage is an error (:meth:`NRCVADEncoder.check_dataset`, called by the extractor before any
work): the usual cause is the wrong transcript column (MER's ``chinese`` with the English
NRC-VAD v1), and the message names the column and suggests the right one.

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
            text is empty or ``None``; zeros without a flag when it has no word in the lexicon.
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
            elif not (isinstance(text, str) and text.strip()):
                flags.add("no_text")
            out.append(Encoded(layers={k: vec.copy() for k in self.layers}, flags=flags))
        return out

    def check_dataset(self, samples, adapter=None) -> dict[str, Any]:
        """Coverage of the lexicon over the transcripts of ``samples`` (before extraction).

        Returns:
            ``{"transcripts": samples with a non-empty transcript, "covered": those with at least
            one lexicon word, "column": the adapter's transcript column or None}``.

        Raises:
            EncoderError: transcripts exist but none has a single word in the lexicon; the message
                names the column and suggests the right one (``--text-column english`` for MER).
        """
        from emo.lexicon.nrc import text_vad

        texts = [s.transcript for s in samples if isinstance(s.transcript, str) and s.transcript.strip()]
        covered = sum(text_vad(t, self.lexicon)[1] > 0 for t in texts)
        column = text_column_of(adapter)
        if texts and covered == 0:
            hint = ("--text-column english" if column in ("chinese", "a1", "a2") or (adapter is not None and
                    str(getattr(adapter, "name", "")).startswith("mer")) else "--text-column with an English transcript column")
            raise EncoderError(f"{self.name}: none of the {len(texts)} transcripts (column {column or 'default'!r}) has a word in "
                               f"the lexicon {self.lexicon.path.name} (NRC-VAD v1 is English): every vector would be zero; "
                               f"pass {hint}")
        return {"transcripts": len(texts), "covered": int(covered), "column": column}

    def weights_hash(self) -> str:
        """hash_weights of the lexicon file (SHA-256 of name and content, 16 hex digits)."""
        return self._hash

    def provenance(self) -> dict[str, Any]:
        """Base provenance plus the lexicon path and hash."""
        p = super().provenance()
        p.update({"source": str(self.lexicon.path), "lexicon": str(self.lexicon.path), "lexicon_hash": self._hash})
        return p


def text_column_of(adapter) -> str | None:
    """The transcript column a dataset adapter reads (its ``text_column`` option, or MER's default
    ``chinese``), or None when unknown."""
    if adapter is None:
        return None
    col = (getattr(adapter, "options", None) or {}).get("text_column")
    if col:
        return str(col).strip().lower()
    if str(getattr(adapter, "name", "")).startswith("mer"):
        return "a1" if str(getattr(adapter, "track", "")) == "3" else "chinese"
    return None
