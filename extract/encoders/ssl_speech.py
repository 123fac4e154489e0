"""WavLM and data2vec-audio layer-wise utterance features through ``transformers``.

Both are ``Wav2Vec2Model``-shaped (a CNN front-end of ``conv_kernel``/``conv_stride`` followed by a
transformer stack in ``model.encoder.layers``), so they reuse :class:`emo.extract.encoders.speech.SpeechEncoder`
unchanged: the same layer numbering (hidden state ``k`` = output of transformer layer ``k``, ``0`` = its
input), the same truncation after the deepest requested layer, the same masked mean pooling over the
valid frames of each clip, the same chunking of long clips. Each class only checks that the checkpoint
is the model it is registered as (a WavLM name never silently loads a HuBERT).

Sources:
    WavLM: Chen et al., "WavLM: Large-Scale Self-Supervised Pre-Training for Full Stack Speech
    Processing", IEEE JSTSP 2022; https://github.com/microsoft/unilm/tree/master/wavlm
    (``microsoft/wavlm-base-plus``, ``microsoft/wavlm-large``).
    data2vec: Baevski et al., "data2vec: A General Framework for Self-supervised Learning in Speech,
    Vision and Language", ICML 2022; https://github.com/facebookresearch/fairseq/tree/main/examples/data2vec
    (``facebook/data2vec-audio-base``, ``facebook/data2vec-audio-large``).
"""

from __future__ import annotations

from typing import Any

from emo.extract.encoders.speech import SpeechEncoder, load_speech_config
from emo.extract.registry import register_encoder
from emo.extract.types import EncoderError


class _CheckedSpeechEncoder(SpeechEncoder):
    """:class:`SpeechEncoder` that refuses a checkpoint of another ``model_type`` than ``model_types``."""

    model_types: tuple[str, ...] = ()

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        config = load_speech_config(name, source)
        if config.model_type not in self.model_types:
            raise EncoderError(f"{name}: {source!r} is a {config.model_type} model, not {' / '.join(self.model_types)}")
        super().__init__(name, source, layers, device, frames, **options)


@register_encoder(
    "wavlm_large", "microsoft/wavlm-large",
    summary="WavLM-large (Chen et al. 2022), 25 hidden states x 1024; layer-norm front-end",
)
@register_encoder(
    "wavlm_base_plus", "microsoft/wavlm-base-plus",
    summary="WavLM-base-plus, 13 hidden states x 768; group-norm front-end",
)
class WavLMEncoder(_CheckedSpeechEncoder):
    """WavLM (``transformers.WavLMModel``) from a hub id or local directory; layers ``0``..``N``.

    WavLM-large uses a layer-norm CNN front-end and the stable (pre-)layer-norm transformer, so a
    clip in a padded batch gives the clip's own features (the attention mask is passed); the
    base-plus model's group-norm front-end normalises over time, so padding changes its features
    slightly, exactly as for HuBERT-base (:class:`SpeechEncoder`). The gated relative position
    bias of WavLM is computed inside the first layer and passed on; truncation keeps that layer.
    """

    model_types = ("wavlm",)


@register_encoder(
    "data2vec_audio_large", "facebook/data2vec-audio-large",
    summary="data2vec-audio large (Baevski et al. 2022), 25 hidden states x 1024",
)
@register_encoder(
    "data2vec_audio_base", "facebook/data2vec-audio-base",
    summary="data2vec-audio base, 13 hidden states x 768",
)
class Data2VecAudioEncoder(_CheckedSpeechEncoder):
    """data2vec-audio (``transformers.Data2VecAudioModel``) from a hub id or local directory; layers ``0``..``N``.

    Its CNN front-end always uses layer norm (``Data2VecAudioConvLayer``; the config has no
    ``feat_extract_norm``), so the attention mask is passed. Its positional embedding is a stack of
    convolutions (5 in the released models): ``transformers`` zeroes the padded frames before the
    first one only, so from the second on the padding's activations would leak into the last
    frames of a shorter clip in a padded batch. The stack is therefore run with the padded frames
    zeroed after every convolution (:func:`masked_pos_conv`), which is exactly what the clip alone
    sees (the convolutions' own zero padding): a batched clip equals the clip alone.
    """

    model_types = ("data2vec-audio",)

    def __init__(self, name: str, source: str | None = None, layers: list[str] | None = None, device: str = "cpu",
                 frames: bool = False, **options: Any) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        self.layer_norm_frontend = True  # Data2VecAudioConvLayer: LayerNorm in every conv layer
        import torch

        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile wraps it
        enc = model.encoder
        if hasattr(enc, "pos_conv_embed") and hasattr(enc.pos_conv_embed, "layers"):
            enc.pos_conv_embed = masked_pos_conv(enc.pos_conv_embed, self)
            self._frame_valid: torch.Tensor | None = None

            def remember(_module, args, kwargs):
                mask = kwargs.get("attention_mask")
                self._frame_valid = None if mask is None else torch.as_tensor(
                    self._frame_lengths(mask.sum(dim=1).cpu().numpy()), device=mask.device)
            model.register_forward_pre_hook(remember, with_kwargs=True)


def masked_pos_conv(inner, owner):
    """data2vec-audio's positional convolution stack with the padded frames zeroed after every layer.

    Wraps ``Data2VecAudioPositionalConvEmbedding`` (its public ``layers``); ``owner._frame_valid``
    (int64 (B,), valid frames per row, set by a pre-hook from the attention mask) says which frames
    are padding; ``None`` runs the stack unchanged. Input/output (B, F, D) like the wrapped module.
    Returns a ``torch.nn.Module`` (built here so importing this file does not import torch).
    """
    import torch

    class MaskedPosConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, hidden_states):
            valid = owner._frame_valid
            if valid is None:
                return self.inner(hidden_states)
            keep = (torch.arange(hidden_states.shape[1], device=hidden_states.device)[None, :] < valid[:, None])
            keep = keep[:, None, :].to(hidden_states.dtype)  # (B, 1, F)
            x = hidden_states.transpose(1, 2)
            for layer in self.inner.layers:
                x = layer(x) * keep
            return x.transpose(1, 2)

    return MaskedPosConv()
