"""The encoder registry: short name -> implementation, default source, modality.

Adding an encoder is one :class:`EncoderEntry` here plus its module under
``emo/extract/encoders/``. Users override the source on the command line:

    hubert_large                         default source, default layers
    hubert_large:16-21                   default source, layers 16..21
    hubert_large=/ckpt/chinese-hubert-large:16-21
    clip_vit_l=ViT-L-14/openai:12-24,proj

Syntax: ``NAME[=SOURCE][:LAYERS]``. The source may itself contain ``:``; the
part after the last ``:`` is taken as the layer spec only when it parses as one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from emo.extract.layers import is_layer_spec, parse_layers


@dataclass(frozen=True)
class EncoderEntry:
    """One registry row.

    Attributes:
        target: ``"module:Class"`` implementing :class:`emo.extract.encoders.base.Encoder`.
        source: default hub id / local path / open_clip ``model/pretrained`` (``None``: weight-free).
        modality: ``audio``, ``face`` or ``text``.
        layers: default layer spec when the user gives none (``None`` = all).
        options: extra keyword arguments passed to the class.
        summary: one line for ``emo models list``.
    """

    target: str
    source: str | None
    modality: str
    layers: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


REGISTRY: dict[str, EncoderEntry] = {
    # --- audio -------------------------------------------------------------
    "hubert_large": EncoderEntry(
        "emo.extract.encoders.speech:SpeechEncoder", "TencentGameMate/chinese-hubert-large", "audio",
        layers="16-21", summary="HuBERT-large (Chinese, as in the MER papers), 25 hidden states x 1024",
    ),
    "hubert_base": EncoderEntry(
        "emo.extract.encoders.speech:SpeechEncoder", "TencentGameMate/chinese-hubert-base", "audio",
        summary="HuBERT-base (Chinese), 13 hidden states x 768",
    ),
    "wav2vec2_large": EncoderEntry(
        "emo.extract.encoders.speech:SpeechEncoder", "facebook/wav2vec2-large-xlsr-53", "audio",
        summary="wav2vec 2.0 large (XLSR-53), 25 hidden states x 1024",
    ),
    "wav2vec2_base": EncoderEntry(
        "emo.extract.encoders.speech:SpeechEncoder", "facebook/wav2vec2-base", "audio",
        summary="wav2vec 2.0 base, 13 hidden states x 768",
    ),
    "egemaps": EncoderEntry(
        "emo.extract.encoders.acoustic:EGeMAPSEncoder", None, "audio",
        summary="openSMILE eGeMAPSv02 functionals, 88-d, no weights",
    ),
    "mfcc": EncoderEntry(
        "emo.extract.encoders.acoustic:MFCCEncoder", None, "audio",
        summary="librosa MFCC + delta statistics (mean, std), 160-d, no weights",
    ),
    # --- face (issue: visual stream) -----------------------------------------
    "clip_vit_l": EncoderEntry(
        "emo.extract.encoders.clip:OpenClipEncoder", "ViT-L-14/openai", "face",
        summary="CLIP ViT-L/14 via open_clip: CLS token per layer + projected embedding ('proj')",
    ),
    "clip_vit_b": EncoderEntry(
        "emo.extract.encoders.clip:OpenClipEncoder", "ViT-B-32/openai", "face",
        summary="CLIP ViT-B/32 via open_clip",
    ),
    "hf_clip_vit_l": EncoderEntry(
        "emo.extract.encoders.clip:HFClipEncoder", "openai/clip-vit-large-patch14", "face",
        summary="CLIP ViT-L/14 via transformers CLIPVisionModelWithProjection",
    ),
    "resnet50": EncoderEntry(
        "emo.extract.encoders.resnet:ResNet50Encoder", "torchvision:IMAGENET1K_V2", "face",
        summary="ResNet-50, global-average-pooled output of stages 1-4 (timm or torchvision checkpoint)",
    ),
    "manet": EncoderEntry(
        "emo.extract.encoders.manet:MANetEncoder", None, "face",
        summary="MANet (Zhao et al., TIP 2021) face-expression network, per-block outputs",
    ),
    # --- text (issue: text stream) -------------------------------------------
    "roberta": EncoderEntry(
        "emo.extract.encoders.text:TextEncoder", "hfl/chinese-roberta-wwm-ext", "text",
        summary="Chinese RoBERTa-wwm-ext, mean over real tokens per layer",
    ),
    "minilm": EncoderEntry(
        "emo.extract.encoders.text:TextEncoder", "sentence-transformers/all-MiniLM-L6-v2", "text",
        summary="all-MiniLM-L6-v2 (6-layer BERT), mean over real tokens per layer",
    ),
    "baichuan2_13b": EncoderEntry(
        "emo.extract.encoders.text:TextEncoder", "baichuan-inc/Baichuan2-13B-Base", "text",
        options={"trust_remote_code": True},
        summary="Baichuan2-13B decoder LLM, 41 hidden states x 5120",
    ),
    "nrc_vad": EncoderEntry(
        "emo.extract.encoders.nrc_vad:NRCVADEncoder", None, "text",
        summary="mean NRC-VAD of the transcript's words (V, A, D, coverage), no weights",
    ),
}


class UnknownEncoderError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed ``NAME[=SOURCE][:LAYERS]`` spec."""

    name: str
    source: str | None
    layers: list[str] | None
    entry: EncoderEntry

    def build(self, device: str = "cpu", frames: bool = False, **options: Any):
        """Import and construct the encoder. Raises whatever the encoder raises on a bad source."""
        module, cls = self.entry.target.split(":")
        klass = getattr(importlib.import_module(module), cls)
        opts = {**self.entry.options, **options}
        return klass(name=self.name, source=self.source, layers=self.layers, device=device, frames=frames, **opts)

    def __str__(self) -> str:
        from emo.extract.layers import format_layers

        s = self.name
        if self.source != self.entry.source:
            s += f"={self.source}"
        if self.layers is not None:
            s += f":{format_layers(self.layers)}"
        return s


def split_spec(text: str) -> tuple[str, str | None, str | None]:
    """Split ``NAME[=SOURCE][:LAYERS]`` into its three parts (``None`` where absent).

    The part after the last ``:`` of the source is the layer spec only when it parses as one
    (sources such as ``hf-hub:org/model`` or ``C:/ckpt`` keep their colon).
    """
    text = text.strip()
    if "=" in text:
        name, source = text.split("=", 1)
        if ":" in source:
            head, tail = source.rsplit(":", 1)
            if is_layer_spec(tail) and not tail.startswith(("/", "\\")):
                return name.strip(), head, tail
        return name.strip(), source, None
    name, _, layers_txt = text.partition(":")
    return name.strip(), None, layers_txt or None


def parse_encoder_spec(text: str) -> EncoderSpec:
    """Parse ``NAME[=SOURCE][:LAYERS]`` (see module docstring).

    Raises:
        UnknownEncoderError: the name is not registered (the message lists the known names).
        emo.extract.layers.LayerSpecError: malformed layer spec.
    """
    name, source, layers_txt = split_spec(text)
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownEncoderError(f"unknown encoder {name!r}; known encoders: {known}")
    entry = REGISTRY[name]
    if source is None:
        source = entry.source
    if layers_txt is None:
        layers_txt = entry.layers
    return EncoderSpec(name=name, source=source, layers=parse_layers(layers_txt), entry=entry)
