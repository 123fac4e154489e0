"""The encoder registry: short name -> implementation, default source, modality.

Registration happens at the definition (timm's ``@register_model`` style): the encoder
class carries one :func:`register_encoder` decorator per registry name, and its module is
imported by ``emo/extract/encoders/__init__.py``. Users override the source on the command
line (the grammar lives in :mod:`emo.extract.spec`):

    hubert_large                         default source, default layers
    hubert_large:16-21                   default source, layers 16..21
    hubert_large=/ckpt/chinese-hubert-large:16-21
    clip_vit_l=ViT-L-14/openai:12-24,proj
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from emo.extract.layers import parse_layers
from emo.extract.spec import split_spec


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
        needs: what the encoder needs besides its source: ``"checkpoint"`` (no default: pass
            ``=PATH`` or ``=random``), ``"lexicon"`` (a local lexicon file), ``""`` nothing.
    """

    target: str
    source: str | None
    modality: str
    layers: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    needs: str = ""


#: name -> entry, filled by :func:`register_encoder` when the encoder modules are imported;
#: read it through :func:`encoders` (which imports them first).
REGISTRY: dict[str, EncoderEntry] = {}
_LOADED = False


def register_encoder(name: str, source: str | None = None, *, layers: str | None = None,
                     options: dict[str, Any] | None = None, summary: str = "", needs: str = ""):
    """Class decorator: register the encoder class under ``name`` (stack it for several names).

    Example::

        @register_encoder("hubert_base", "TencentGameMate/chinese-hubert-base")
        class SpeechEncoder(Encoder): ...

    The entry's modality is the class's ``modality`` attribute. ``needs`` names a local file the
    encoder needs even without a default source (``emo models list`` shows it), e.g. ``"lexicon"``.

    Raises:
        ValueError: ``name`` is already registered by another class.
    """
    def deco(cls):
        target = f"{cls.__module__}:{cls.__qualname__}"
        old = REGISTRY.get(name)
        if old is not None and old.target != target:
            raise ValueError(f"encoder {name!r} is registered twice ({old.target} and {target})")
        REGISTRY[name] = EncoderEntry(target, source, str(cls.modality), layers=layers,
                                      options=dict(options or {}), summary=summary, needs=needs)
        return cls

    return deco


def encoders() -> dict[str, EncoderEntry]:
    """Every registered encoder, name -> :class:`EncoderEntry` (imports :mod:`emo.extract.encoders`
    once, whose modules register their classes; the models themselves load only when built)."""
    global _LOADED
    if not _LOADED:
        importlib.import_module("emo.extract.encoders")
        _LOADED = True
    return REGISTRY


def encoder_modality(name: str) -> str | None:
    """The modality (``audio``, ``face``, ``text``) of a registered encoder; ``None`` when unknown."""
    entry = encoders().get(name)
    return entry.modality if entry else None


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


def parse_encoder_spec(text: str) -> EncoderSpec:
    """Parse ``NAME[=SOURCE][:LAYERS]`` (see module docstring).

    Raises:
        UnknownEncoderError: the name is not registered (the message lists the known names).
        emo.extract.layers.LayerSpecError: malformed layer spec.
    """
    name, source, layers_txt = split_spec(text)
    registry = encoders()
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise UnknownEncoderError(f"unknown encoder {name!r}; known encoders: {known}")
    entry = registry[name]
    if source is None:
        source = entry.source
    if layers_txt is None:
        layers_txt = entry.layers
    return EncoderSpec(name=name, source=source, layers=parse_layers(layers_txt), entry=entry)
