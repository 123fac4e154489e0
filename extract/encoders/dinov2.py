"""DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024;
https://github.com/facebookresearch/dinov2) as a layer-wise face encoder, through
``transformers.Dinov2Model``, on the aligned face crops every face encoder receives
(:class:`emo.extract.encoders.face.FaceFrameEncoder`; MERTools extracts DINOv2 on faces the same way).

Layer keys: ``"0"`` is the CLS token of the embeddings (patch + CLS + positions), ``"k"`` the CLS
token of the output of block ``k`` (``transformers``' ``hidden_states[k][:, 0]``, before the final
LayerNorm), and ``"pooled"`` the final LayerNorm's CLS token (``pooler_output``; the feature of the
paper's linear probes). Per clip each layer is the mean over its face frames.
"""

from __future__ import annotations

from typing import Any

from emo.extract.encoders.face import cls_per_layer, IMAGENET_MEAN, IMAGENET_STD, FaceFrameEncoder, ImagePreprocess
from emo.extract.registry import register_encoder
from emo.extract.types import EncoderError, hash_weights


def hf_image_preprocess(source: str, default: ImagePreprocess) -> ImagePreprocess:
    """:class:`ImagePreprocess` from a checkpoint's image processor (``preprocessor_config.json``:
    size, crop size, resample, mean/std, read through ``transformers.AutoImageProcessor``); ``default``
    when the source has none."""
    try:
        from transformers import AutoImageProcessor

        p = AutoImageProcessor.from_pretrained(source)
    except Exception:  # noqa: BLE001 - no preprocessor config: the model family's defaults
        return default
    size = dict(getattr(p, "size", None) or {}) if getattr(p, "do_resize", True) else {}
    if "shortest_edge" in size:
        resize: int | tuple[int, int] | None = int(size["shortest_edge"])
    elif "height" in size:
        resize = (int(size["height"]), int(size["width"]))
    else:
        resize = None
    crop = None
    if getattr(p, "do_center_crop", False) and getattr(p, "crop_size", None):
        crop = (int(p.crop_size["height"]), int(p.crop_size["width"]))
    if crop is None and not isinstance(resize, tuple):
        crop = default.crop
    norm = getattr(p, "do_normalize", True)
    mean = tuple(p.image_mean) if norm else (0.0, 0.0, 0.0)
    std = tuple(p.image_std) if norm else (1.0, 1.0, 1.0)
    resample = int(getattr(getattr(p, "resample", 3), "value", getattr(p, "resample", 3)) or 3)
    return ImagePreprocess(resize, crop, mean, std, "bicubic" if resample == 3 else "bilinear")


@register_encoder(
    "dinov2_large", "facebook/dinov2-large",
    summary="DINOv2 ViT-L/14 (Oquab et al. 2024) on faces: CLS per layer (25 x 1024) + 'pooled'",
)
@register_encoder(
    "dinov2_base", "facebook/dinov2-base",
    summary="DINOv2 ViT-B/14 on faces: CLS per layer (13 x 768) + 'pooled'",
)
class Dinov2Encoder(FaceFrameEncoder):
    """DINOv2 vision transformer (``transformers.Dinov2Model``) from a hub id or local directory.

    Preprocessing: the checkpoint's ``BitImageProcessor`` (DINOv2: shorter edge 256, bicubic, center
    crop 224, ImageNet mean/std); without a preprocessor file, those defaults with the crop set to
    the config's ``image_size``.

    Layers: ``"0"``..``"N"`` and ``"pooled"``, ``hidden_size`` wide each. Only the blocks up to the
    deepest requested layer run; ``pooled`` needs all.

    Raises:
        EncoderError: no source, an unloadable checkpoint, or a checkpoint that is not DINOv2.
    """

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        from transformers import Dinov2Model

        if not source:
            raise EncoderError(f"{name}: a hub id or local directory is required")
        try:
            model = Dinov2Model.from_pretrained(source)
        except Exception as e:  # noqa: BLE001
            raise EncoderError(f"{name}: cannot load Dinov2Model from {source}: {type(e).__name__}: {e}") from e
        if model.config.model_type != "dinov2":
            raise EncoderError(f"{name}: {source} is a {model.config.model_type} model, not DINOv2")
        cfg = model.config
        self.n_blocks = int(cfg.num_hidden_layers)
        self.width = int(cfg.hidden_size)
        size = int(cfg.image_size)
        self.preprocessor = hf_image_preprocess(
            source, ImagePreprocess(size * 256 // 224, (size, size), IMAGENET_MEAN, IMAGENET_STD, "bicubic"))
        self._select()
        self.depth = self.n_blocks if "pooled" in self.layers else max(int(k) for k in self.layers)
        del model.encoder.layer[max(1, self.depth):]
        self._finish(model)

    def available_layers(self) -> list[str]:
        return [str(i) for i in range(self.n_blocks + 1)] + ["pooled"]

    def dims(self) -> dict[str, int]:
        return {k: self.width for k in self.layers}

    def forward_frames(self, pixels) -> dict[str, Any]:
        """``hidden_states[k][:, 0]`` for the selected k; ``pooler_output`` for ``pooled``."""
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return cls_per_layer(out, self.layers, "pooled", "pooler_output")

    def weights_hash(self) -> str:
        return hash_weights(self.source)
