"""CLIP image towers (Radford et al., ICML 2021) as layer-wise face encoders.

Two front ends over the same architecture:

* :class:`OpenClipEncoder` — ``open_clip`` (source ``MODEL/TAG``, ``MODEL/path/to/ckpt``,
  ``MODEL/random``).
* :class:`HFClipEncoder` — ``transformers`` ``CLIPVisionModelWithProjection``
  (hub id such as ``openai/clip-vit-large-patch14`` or a local directory).

Layer keys are the same for both. ``"0"`` is the input to the first residual block
(patch + class embeddings + positions, after ``ln_pre`` / ``pre_layrnorm``), ``"k"`` is the
output of residual block ``k`` (``k = 1..N``, N = 12 for ViT-B, 24 for ViT-L); each is the
CLS token (sequence position 0) of that hidden state, without any final LayerNorm.
This equals ``transformers``' ``hidden_states[k][:, 0]``. ``"proj"`` is the projected
image embedding (``ln_post``/``post_layernorm`` of the final CLS token times the
projection): open_clip ``encode_image(normalize=False)`` / transformers ``image_embeds``,
**not** L2-normalised (768-d for ViT-L/14, the MER 2023 baseline's CLIP feature;
512-d for ViT-B/32).

Only the blocks up to the deepest requested layer are kept and run; ``proj`` needs all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emo import compat
from emo.extract.encoders.face import cls_per_layer, FaceFrameEncoder, ImagePreprocess
from emo.extract.registry import register_encoder
from emo.extract.types import EncoderError, hash_weights

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _block_layers(n_blocks: int) -> list[str]:
    return [str(i) for i in range(n_blocks + 1)] + ["proj"]


def _depth(layers: list[str], n_blocks: int) -> int:
    """Blocks to run for the selected layers (all of them when ``proj`` is asked for)."""
    if "proj" in layers:
        return n_blocks
    return max(int(k) for k in layers)


@register_encoder(
    "clip_vit_l", "ViT-L-14/openai",
    summary="CLIP ViT-L/14 via open_clip: CLS token per layer + projected embedding ('proj')",
)
@register_encoder("clip_vit_b", "ViT-B-32/openai", summary="CLIP ViT-B/32 via open_clip")
class OpenClipEncoder(FaceFrameEncoder):
    """CLIP vision transformer through ``open_clip``: CLS token per block, plus ``proj``.

    Source forms (``open_clip.create_model_and_transforms(MODEL, pretrained=...)``):
        ``ViT-L-14/openai``   model name / pretrained tag (downloads; fails offline).
        ``ViT-L-14/path/to/ckpt.pt`` or ``.safetensors``   a local checkpoint (open_clip's
        loader with ``weights_only=True``; a path may also be absolute: ``ViT-L-14//abs/ckpt.pt``).
        ``ViT-L-14/random``   untrained weights (tests, benchmarks).
        ``hf-hub:org/repo`` / ``local-dir:/path``   open_clip's own config+weights sources.

    Preprocessing: the model's ``preprocess_cfg`` (open_clip's eval transform):
    shorter edge to ``image_size`` (bicubic), center crop, OpenAI CLIP mean/std.

    Layers: ``"0"``..``"N"`` (width-d each) and ``"proj"`` (embed-d).

    Raises:
        EncoderError: malformed source, unknown model, unreachable weights, bad checkpoint,
            or a non-ViT image tower (ModifiedResNet / timm towers have no CLS blocks).
    """

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        import open_clip

        model_name, pretrained, self.kind = self.parse_source(source, name)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, weights_only=True, device="cpu"
            )
        except Exception as e:  # noqa: BLE001 - unknown names, downloads, bad files
            what = f"checkpoint {pretrained}" if self.kind == "file" else f"{model_name} / {pretrained or 'random'}"
            raise EncoderError(f"{name}: open_clip cannot build {what}: {type(e).__name__}: {e}") from e
        visual = model.visual
        del model  # the text tower is never used
        for attr in ("conv1", "ln_pre", "ln_post", "transformer", "proj"):
            if not hasattr(visual, attr):
                raise EncoderError(f"{name}: {model_name} has no ViT image tower (missing {attr}); use a ViT CLIP")
        self.n_blocks = len(visual.transformer.resblocks)
        self.width = int(visual.transformer.width)
        self.embed_dim = int(visual.proj.shape[1]) if visual.proj is not None else self.width
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", visual.image_size)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if cfg.get("resize_mode", "shortest") != "shortest":
            raise EncoderError(f"{name}: open_clip resize_mode {cfg.get('resize_mode')!r} is not supported")
        self.preprocessor = ImagePreprocess(
            min(size) if size[0] == size[1] else size, size,
            tuple(cfg.get("mean", OPENAI_CLIP_MEAN)), tuple(cfg.get("std", OPENAI_CLIP_STD)),
            cfg.get("interpolation", "bicubic"),
        )
        self._select()
        self.depth = _depth(self.layers, self.n_blocks)
        del visual.transformer.resblocks[self.depth :]
        self._finish(visual)

    @staticmethod
    def parse_source(source: str | None, who: str = "open_clip") -> tuple[str, str | None, str]:
        """``MODEL/TAG|PATH|random`` -> (model name, pretrained tag/path or None, kind).

        kind is ``"tag"``, ``"file"``, ``"random"`` or ``"hub"`` (``hf-hub:``/``local-dir:`` names).

        Raises:
            EncoderError: no ``/`` separator, or a checkpoint path that does not exist.
        """
        src = (source or "").strip()
        if src.startswith(("hf-hub:", "local-dir:")):
            return src, None, "hub"
        if "/" not in src:
            raise EncoderError(f"{who}: open_clip source {src!r} must be MODEL/TAG, MODEL/CHECKPOINT or MODEL/random")
        model, rest = src.split("/", 1)
        if rest == "random":
            return model, None, "random"
        if rest.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")) or Path(rest).exists():
            if not Path(rest).is_file():
                raise EncoderError(f"{who}: checkpoint file {rest} does not exist")
            return model, rest, "file"
        return model, rest, "tag"

    def available_layers(self) -> list[str]:
        return _block_layers(self.n_blocks)

    def dims(self) -> dict[str, int]:
        """width for block layers (1024 for ViT-L), embed dim for ``proj`` (768 for ViT-L/14)."""
        return {k: (self.embed_dim if k == "proj" else self.width) for k in self.layers}

    def forward_frames(self, pixels) -> dict[str, Any]:
        """CLS token after ``ln_pre`` and after each kept block; ``proj`` as ``encode_image``."""
        v = self.model
        x = compat.clip_vit_embeds(v, pixels)  # (N, L, width), after ln_pre
        batch_first = getattr(v.transformer, "batch_first", True)
        out = {}
        if "0" in self.layers:
            out["0"] = x[:, 0]
        if not batch_first:
            x = x.transpose(0, 1)
        for i, blk in enumerate(v.transformer.resblocks, start=1):
            x = blk(x)
            if str(i) in self.layers:
                out[str(i)] = x[:, 0] if batch_first else x[0]
        if "proj" in self.layers:
            if not batch_first:
                x = x.transpose(0, 1)
            pooled, _ = compat.clip_vit_pool(v, x)
            out["proj"] = pooled @ v.proj if v.proj is not None else pooled
        return out

    def weights_hash(self) -> str:
        """File content hash for a checkpoint, hash of the tag string otherwise, ``"random"`` untrained."""
        if self.kind == "random":
            return "random"
        if self.kind == "file":
            return hash_weights(self.parse_source(self.source)[1])
        return hash_weights(None, extra=f"open_clip:{self.source}")


@register_encoder(
    "hf_clip_vit_l", "openai/clip-vit-large-patch14",
    summary="CLIP ViT-L/14 via transformers CLIPVisionModelWithProjection",
)
class HFClipEncoder(FaceFrameEncoder):
    """CLIP vision tower through ``transformers`` ``CLIPVisionModelWithProjection``.

    Source: hub id (``openai/clip-vit-large-patch14``) or a local directory written by
    ``save_pretrained``. Preprocessing follows the ``CLIPImageProcessor`` saved with the
    model (shorter edge, crop size, resample, mean/std); without a preprocessor file, the
    config's ``image_size`` with OpenAI CLIP mean/std and bicubic resizing.

    Layers: ``"0"``..``"N"`` = ``hidden_states[k][:, 0]`` (hidden size each), ``"proj"`` =
    ``image_embeds`` (projection dim), not L2-normalised.

    Raises:
        EncoderError: the model cannot be loaded (offline hub id, bad directory).
    """

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        from transformers import CLIPVisionModelWithProjection

        if not source:
            raise EncoderError(f"{name}: a hub id or local directory is required")
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(source)
        except Exception as e:  # noqa: BLE001
            raise EncoderError(f"{name}: cannot load CLIPVisionModelWithProjection from {source}: "
                               f"{type(e).__name__}: {e}") from e
        cfg = model.config
        self.n_blocks = int(cfg.num_hidden_layers)
        self.width = int(cfg.hidden_size)
        self.embed_dim = int(cfg.projection_dim)
        self.preprocessor = self.load_preprocess(source, int(cfg.image_size))
        self._select()
        self.depth = _depth(self.layers, self.n_blocks)
        del model.vision_model.encoder.layers[self.depth :]
        self._finish(model)

    @staticmethod
    def load_preprocess(source: str, image_size: int) -> ImagePreprocess:
        """:class:`ImagePreprocess` from the source's ``CLIPImageProcessor`` (or CLIP defaults)."""
        try:
            from transformers import CLIPImageProcessor

            p = CLIPImageProcessor.from_pretrained(source)
        except Exception:  # noqa: BLE001 - no preprocessor_config.json: CLIP defaults
            return ImagePreprocess(image_size, (image_size, image_size), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic")
        size = dict(p.size) if p.do_resize else {}
        if "shortest_edge" in size:
            resize: int | tuple[int, int] | None = int(size["shortest_edge"])
        elif "height" in size:
            resize = (int(size["height"]), int(size["width"]))
        else:
            resize = None
        crop = (int(p.crop_size["height"]), int(p.crop_size["width"])) if p.do_center_crop else None
        if crop is None and not isinstance(resize, tuple):
            crop = (image_size, image_size)
        mean = tuple(p.image_mean) if p.do_normalize else (0.0, 0.0, 0.0)
        std = tuple(p.image_std) if p.do_normalize else (1.0, 1.0, 1.0)
        resample = int(getattr(p.resample, "value", p.resample) or 3)
        return ImagePreprocess(resize, crop, mean, std, "bicubic" if resample == 3 else "bilinear")

    def available_layers(self) -> list[str]:
        return _block_layers(self.n_blocks)

    def dims(self) -> dict[str, int]:
        """hidden size for block layers (1024 for ViT-L), projection dim for ``proj`` (768)."""
        return {k: (self.embed_dim if k == "proj" else self.width) for k in self.layers}

    def forward_frames(self, pixels) -> dict[str, Any]:
        """``hidden_states[k][:, 0]`` for the selected k, ``image_embeds`` for ``proj``."""
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return cls_per_layer(out, self.layers, "proj", "image_embeds")

    def weights_hash(self) -> str:
        """Content hash of a local directory's weights, hash of the hub id otherwise."""
        return hash_weights(self.source)
