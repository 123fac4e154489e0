"""ResNet-50 face features (per-stage global average pooling).

The visual encoders' shared frame-batching base lives in :mod:`emo.extract.encoders.face`.

ResNet-50 (He et al., CVPR 2016) layers ``"1"``..``"4"`` are the global-average-
pooled outputs of stages ``layer1``..``layer4`` (256/512/1024/2048-d), the
per-block sweep called "RF(j)" in the MER 2023 baseline paper (Lian et al., 2023).
"""

from __future__ import annotations

from typing import Any


from emo.extract.encoders.face import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FaceFrameEncoder,
    ImagePreprocess,
    load_state_dict_file,
    load_strict,
)
from emo.extract.registry import register_encoder
from emo.extract.types import EncoderError, hash_weights

# ---------------------------------------------------------------------------
# ResNet-50
# ---------------------------------------------------------------------------

_RESNET50_DIMS = {"1": 256, "2": 512, "3": 1024, "4": 2048}


@register_encoder(
    "resnet50", "torchvision:IMAGENET1K_V2",
    summary="ResNet-50, global-average-pooled output of stages 1-4 (timm or torchvision checkpoint)",
)
class ResNet50Encoder(FaceFrameEncoder):
    """ResNet-50 stage features: GAP of ``layer1``..``layer4`` (256/512/1024/2048-d).

    Sources:
        ``torchvision:ENUM`` weights of ``torchvision.models.ResNet50_Weights`` (e.g.
        ``IMAGENET1K_V2``; preprocessing = ``weights.transforms()``: resize 232 (V2)
        or 256 (V1) bilinear, crop 224, ImageNet mean/std).
        ``timm:NAME`` ``timm.create_model(NAME, pretrained=True)`` (``timm:NAME/random``:
        same architecture and data config, no weights); preprocessing = timm's eval
        data config (``resolve_model_data_config``: crop_pct, interpolation, mean/std).
        A local ``.pth/.pt/.pth.tar/.safetensors`` file (a torchvision/timm ResNet-50 state
        dict, optionally wrapped; classifier ``fc.*`` may differ in size or be absent:
        it is not used), loaded strictly into torchvision's ResNet-50.
        ``random``: untrained weights.
        Local files and ``random`` use resize 256 / crop 224 / ImageNet mean-std.

    Layers: ``"1"``..``"4"``. Only the stages up to the deepest requested layer run.

    Raises:
        EncoderError: unknown weights enum, unreachable download, bad checkpoint.
    """

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        import torch.nn as nn
        import torchvision

        src = (source or "random").strip()
        self.kind = "random"
        default_pre = ImagePreprocess(256, (224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear")
        if src.startswith("torchvision:"):
            self.kind = "torchvision"
            enum = src.split(":", 1)[1]
            try:
                weights = torchvision.models.ResNet50_Weights[enum]
            except KeyError:
                known = ", ".join(w.name for w in torchvision.models.ResNet50_Weights)
                raise EncoderError(f"{name}: unknown torchvision ResNet-50 weights {enum!r}; known: {known}") from None
            try:
                model = torchvision.models.resnet50(weights=weights)
            except Exception as e:  # noqa: BLE001 - network / cache failures
                raise EncoderError(
                    f"{name}: cannot fetch torchvision weights {enum} ({type(e).__name__}: {e}); offline, pass a "
                    f"local checkpoint file as the source instead"
                ) from e
            t = weights.transforms()
            self.preprocessor = ImagePreprocess(
                int(t.resize_size[0]), (int(t.crop_size[0]),) * 2, tuple(t.mean), tuple(t.std),
                "bicubic" if t.interpolation.value == "bicubic" else "bilinear",
            )
        elif src.startswith("timm:"):
            self.kind = "timm"
            import timm

            spec = src.split(":", 1)[1]
            pretrained = not spec.endswith("/random")
            arch = spec[: -len("/random")] if not pretrained else spec
            try:
                model = timm.create_model(arch, pretrained=pretrained, num_classes=0)
            except Exception as e:  # noqa: BLE001
                raise EncoderError(f"{name}: cannot create timm model {arch!r}: {type(e).__name__}: {e}") from e
            self.preprocessor = timm_preprocess(model)
        elif src == "random":
            model = torchvision.models.resnet50(weights=None)
            self.preprocessor = default_pre
        else:
            self.kind = "file"
            model = torchvision.models.resnet50(weights=None)
            state = load_state_dict_file(src, name)
            model.fc = nn.Identity()
            load_strict(model, state, src, name, drop=("fc.",))
            self.preprocessor = default_pre
        missing = [m for m in ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4") if not hasattr(model, m)]
        if missing:
            raise EncoderError(f"{name}: {src} is not a ResNet (no {', '.join(missing)})")
        self._select()
        self.depth = max(int(k) for k in self.layers)
        # keep only what runs: drop the head and the unrequested later stages
        model.fc = nn.Identity()
        for i in range(self.depth + 1, 5):
            setattr(model, f"layer{i}", nn.Identity())
        self._finish(model)

    def available_layers(self) -> list[str]:
        return ["1", "2", "3", "4"]

    def dims(self) -> dict[str, int]:
        """Channels of each stage: {"1": 256, "2": 512, "3": 1024, "4": 2048} for the selected ones."""
        return {k: _RESNET50_DIMS[k] for k in self.layers}

    def forward_frames(self, pixels) -> dict[str, Any]:
        """Stem, then stages 1..depth; layer k = mean over H, W of stage k's output (N, C_k)."""
        m = self.model
        act = getattr(m, "relu", None) or getattr(m, "act1")
        x = m.maxpool(act(m.bn1(m.conv1(pixels))))
        out = {}
        for i in range(1, self.depth + 1):
            x = getattr(m, f"layer{i}")(x)
            if str(i) in self.layers:
                out[str(i)] = x.mean(dim=(2, 3))
        return out

    def weights_hash(self) -> str:
        """Content hash of a local file, hash of the tag for torchvision/timm, ``"random"`` otherwise."""
        if self.kind == "random" or (self.kind == "timm" and (self.source or "").endswith("/random")):
            return "random"
        if self.kind == "file":
            return hash_weights(self.source)
        return hash_weights(None, extra=f"{self.source}")


def timm_preprocess(model) -> ImagePreprocess:
    """:class:`ImagePreprocess` equal to timm's eval transform for ``model``'s data config.

    timm's eval transform resizes the shorter edge to ``floor(size / crop_pct)`` and
    center-crops ``size`` (``crop_mode="center"``). Other crop modes raise EncoderError.
    """
    import math

    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    _, h, w = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    if cfg.get("crop_mode", "center") != "center":
        raise EncoderError(f"timm crop_mode {cfg.get('crop_mode')!r} is not supported (only 'center')")
    scale = math.floor(h / crop_pct) if h == w else (math.floor(h / crop_pct), math.floor(w / crop_pct))
    interp = cfg.get("interpolation", "bilinear")
    if interp not in ("bilinear", "bicubic"):
        raise EncoderError(f"timm interpolation {interp!r} is not supported (bilinear, bicubic)")
    return ImagePreprocess(scale, (h, w), tuple(cfg["mean"]), tuple(cfg["std"]), interp)

