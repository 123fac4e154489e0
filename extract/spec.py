"""The one grammar of encoder and feature specs: ``NAME[=SOURCE][:LAYERS]``.

Used by ``emo extract --encoder`` (:func:`emo.extract.registry.parse_encoder_spec`), by the
fusion stage's ``--features`` (:func:`emo.fuse.training.data.parse_feature_spec`) and by ``emo fuse sweep``:

    hubert_large                         default source, default layers
    hubert_large:16-21                   layers 16..21
    hubert_large=/ckpt/chinese-hubert-large:16-21
    clip_vit_l=ViT-L-14/openai:12-24,proj

The source may itself contain ``:`` (``hf-hub:org/model``, ``C:/ckpt``); the part after the
last ``:`` is taken as the layer spec only when it parses as one (:func:`is_layer_spec`) and
does not start with a path separator.
"""

from __future__ import annotations

from dataclasses import dataclass

from emo.extract.layers import (
    LayerSpecError,
    format_layers,
    is_layer_spec,
    parse_layers,
)


class SpecError(ValueError):
    """A spec without a name, or with a malformed layer part."""


@dataclass(frozen=True)
class Spec:
    """A parsed ``NAME[=SOURCE][:LAYERS]``.

    Attributes:
        name: the encoder's registry name (also the store file name).
        source: the ``=SOURCE`` part, ``None`` when absent.
        layers: layer keys in the given order, ``None`` when no layer part was given.
    """

    name: str
    source: str | None = None
    layers: tuple[str, ...] | None = None

    def __str__(self) -> str:
        return format_spec(self.name, self.source, self.layers)


def split_spec(text: str) -> tuple[str, str | None, str | None]:
    """Split ``NAME[=SOURCE][:LAYERS]`` into its three text parts (``None`` where absent).

    No validation beyond the split: see :func:`parse_spec`.
    """
    text = text.strip()
    if "=" in text:
        name, source = text.split("=", 1)
        if ":" in source:
            head, tail = source.rsplit(":", 1)
            if is_layer_spec(tail) and not tail.startswith(("/", "\\")):
                return name.strip(), head or None, tail
        return name.strip(), source or None, None
    name, _, layers_txt = text.partition(":")
    return name.strip(), None, layers_txt or None


def parse_spec(text: str) -> Spec:
    """Parse ``NAME[=SOURCE][:LAYERS]`` (see the module docstring).

    Raises:
        SpecError: empty name or malformed layer part (the message quotes the spec).
    """
    name, source, layers_txt = split_spec(text)
    if not name:
        raise SpecError(f"spec {text!r} has no encoder name")
    try:
        layers = parse_layers(layers_txt) if layers_txt else None
    except LayerSpecError as e:
        raise SpecError(f"spec {text!r}: {e}") from None
    return Spec(name, source, tuple(layers) if layers else None)


def spec_name(text: str) -> str:
    """The ``NAME`` part of a spec (no validation)."""
    return split_spec(text)[0]


def format_spec(name: str, source: str | None = None, layers: list[str] | tuple[str, ...] | None = None) -> str:
    """Inverse of :func:`parse_spec`: ``format_spec("hubert_large", None, ["16", "17"]) == "hubert_large:16-17"``."""
    s = name
    if source:
        s += f"={source}"
    if layers:
        s += f":{format_layers(list(layers))}"
    return s
