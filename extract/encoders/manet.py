"""MA-Net face-expression features (Zhao, Liu and Wang, "Learning Deep Global
Multi-scale and Local Attention Features for Facial Expression Recognition in the
Wild", IEEE TIP 30, 2021).

Architecture (ResNet-18 layout, our own code written from the paper and the
authors' published module structure so their checkpoints load strictly):

* stem ``conv1/bn1/relu/maxpool`` and ``layer1`` (64) / ``layer2`` (128) of BasicBlocks;
* **local attention branch**: the 28x28 ``layer2`` map is cut into four 14x14 patches
  (top-left, top-right, bottom-left, bottom-right); patch ``p`` goes through its own
  ``layer3_1_p{p}`` (256, stride 2) and ``layer4_1_p{p}`` (512, stride 1) of
  CBAM-attention blocks (Woo et al., ECCV 2018: channel gate on avg+max pooled MLP,
  spatial gate on a 7x7 conv of channel max/mean); the four outputs are tiled back
  into one map; classifier ``fc_1``;
* **multi-scale branch**: ``layer3_2`` (256) / ``layer4_2`` (512) of multi-scale blocks
  (the 3x3 output is split into 4 channel groups processed by two opposite
  hierarchical chains, summed); classifier ``fc_2``.

The MER 2023 baseline (MERTools ``extract_manet_embedding.py``) uses the RAF-DB
checkpoint (7 classes) with ``Resize((224, 224))`` + ``ToTensor()`` (no mean/std
normalisation) and ``return_embedding=True``: the concatenation of the two branches'
pooled 512-d vectors, 1024-d, before the classifiers.

Layer keys (GAP = global average pooling over H, W):
    ``"1"`` (64), ``"2"`` (128)        GAP of the shared stages;
    ``local3`` (256), ``local4`` (512)  GAP of the tiled local-attention maps;
    ``scale3`` (256), ``scale4`` (512)  GAP of the multi-scale stages;
    ``embedding`` (1024)                ``[local4, scale4]``, the MER baseline's feature.
"""

from __future__ import annotations

from typing import Any

from emo.extract.encoders.face import FaceFrameEncoder, ImagePreprocess, load_state_dict_file, load_strict
from emo.extract.registry import register_encoder
from emo.extract.types import EncoderError, hash_weights

_DIMS = {"1": 64, "2": 128, "local3": 256, "local4": 512, "scale3": 256, "scale4": 512, "embedding": 1024}
#: which stages each layer needs: 1 = stem..layer1, 2 = layer2, 3 = stage-3 of a branch, 4 = stage 4
_NEEDS = {"1": 1, "2": 2, "local3": 3, "local4": 4, "scale3": 3, "scale4": 4, "embedding": 4}


def build_manet(num_classes: int = 7):
    """The MA-Net module with the reference's state-dict key names.

    Args:
        num_classes: outputs of ``fc_1``/``fc_2`` (7 for the RAF-DB checkpoint).

    Returns:
        ``torch.nn.Module``; ``forward(x)`` on float (N, 3, H, W) returns the two
        branches' logits, each (N, num_classes); :func:`manet_features` gives the blocks.
    """
    import torch
    import torch.nn as nn

    def conv3x3(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride=1, downsample=None):
            super().__init__()
            self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
            self.downsample = downsample

        def residual(self, x):
            return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(self.residual(x) + identity)

    class BasicConv(nn.Module):  # conv + BN (momentum 0.01), the CBAM spatial gate's conv
        def __init__(self, cin, cout, k):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01, affine=True)

        def forward(self, x):
            return self.bn(self.conv(x))

    class ChannelGate(nn.Module):  # CBAM eq. (2): sigmoid(MLP(avgpool) + MLP(maxpool))
        def __init__(self, c, r=16):
            super().__init__()
            self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c))

        def forward(self, x):
            att = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
            return x * torch.sigmoid(att)[:, :, None, None]

    class SpatialGate(nn.Module):  # CBAM eq. (3): sigmoid(conv7x7([max_c; mean_c]))
        def __init__(self):
            super().__init__()
            self.spatial = BasicConv(2, 1, 7)

        def forward(self, x):
            pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
            return x * torch.sigmoid(self.spatial(pooled))

    class CBAM(nn.Module):
        def __init__(self, c, r=16):
            super().__init__()
            self.ChannelGate = ChannelGate(c, r)
            self.SpatialGate = SpatialGate()

        def forward(self, x):
            return self.SpatialGate(self.ChannelGate(x))

    class AttentionBlock(BasicBlock):
        def __init__(self, cin, cout, stride=1, downsample=None):
            super().__init__(cin, cout, stride, downsample)
            self.cbam = CBAM(cout, 16)

        def residual(self, x):
            return self.cbam(super().residual(x))

    class MulScaleBlock(nn.Module):
        """3x3 conv, then 4 channel groups through two opposite hierarchical chains (summed)."""

        def __init__(self, cin, cout, stride=1, downsample=None):
            super().__init__()
            w = cout // 4
            self.width = w
            self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=False)
            for chain in (1, 2):
                for g in range(1, 5):
                    setattr(self, f"conv{chain}_2_{g}", conv3x3(w, w))
                    setattr(self, f"bn{chain}_2_{g}", nn.BatchNorm2d(w))
            self.downsample = downsample

        def _step(self, chain, g, x):
            return getattr(self, f"bn{chain}_2_{g}")(getattr(self, f"conv{chain}_2_{g}")(x))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            parts = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, dim=1)
            # chain 1: groups 1 -> 4, each fed the previous group's (ReLU'd) output
            fwd = [self._step(1, 1, parts[0])]
            for g in (2, 3, 4):
                fwd.append(self._step(1, g, self.relu(fwd[-1]) + parts[g - 1]))
            # chain 2: groups 4 -> 1
            bwd = {4: self._step(2, 4, parts[3])}
            for g in (3, 2, 1):
                bwd[g] = self._step(2, g, self.relu(bwd[g + 1]) + parts[g - 1])
            out = torch.cat(fwd, dim=1) + torch.cat([bwd[g] for g in (1, 2, 3, 4)], dim=1)
            return self.relu(out + identity)

    def make_layer(block, cin, cout, blocks, stride=1):
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        return nn.Sequential(block(cin, cout, stride, down), *[block(cout, cout) for _ in range(1, blocks)])

    class MANet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = make_layer(BasicBlock, 64, 64, 2)
            self.layer2 = make_layer(BasicBlock, 64, 128, 2, stride=2)
            for p in range(1, 5):
                setattr(self, f"layer3_1_p{p}", make_layer(AttentionBlock, 128, 256, 2, stride=2))
                setattr(self, f"layer4_1_p{p}", make_layer(AttentionBlock, 256, 512, 2, stride=1))
            self.layer3_2 = make_layer(MulScaleBlock, 128, 256, 2, stride=2)
            self.layer4_2 = make_layer(MulScaleBlock, 256, 512, 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc_1 = nn.Linear(512, num_classes)
            self.fc_2 = nn.Linear(512, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            f = manet_features(self, x, ("local4", "scale4"))
            return self.fc_1(f["local4"]), self.fc_2(f["scale4"])

    return MANet()


def manet_features(model, x, layers) -> dict[str, Any]:
    """Per-block GAP features of MA-Net, running only what ``layers`` needs.

    Args:
        model: from :func:`build_manet`.
        x: float (N, 3, H, W), [0, 1] scale; H, W = 224 for the published model
            (the ``layer2`` map is then 28x28 and split at 14 as in the paper).
        layers: keys among ``1, 2, local3, local4, scale3, scale4, embedding``.

    Returns:
        key -> tensor (N, D) (see the module docstring for D).
    """
    import torch

    need = max(_NEEDS[k] for k in layers)
    local = any(k.startswith("local") or k == "embedding" for k in layers)
    scale = any(k.startswith("scale") or k == "embedding" for k in layers)
    out: dict[str, Any] = {}
    x = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))
    out["1"] = x
    if need >= 2:
        x = model.layer2(x)
        out["2"] = x
    if need >= 3 and local:
        h, w = x.shape[2] // 2, x.shape[3] // 2
        patches = (x[:, :, :h, :w], x[:, :, :h, w:], x[:, :, h:, :w], x[:, :, h:, w:])
        p3 = [getattr(model, f"layer3_1_p{p}")(t) for p, t in enumerate(patches, start=1)]
        out["local3"] = torch.cat([torch.cat(p3[:2], dim=3), torch.cat(p3[2:], dim=3)], dim=2)
        if need >= 4:
            p4 = [getattr(model, f"layer4_1_p{p}")(t) for p, t in enumerate(p3, start=1)]
            out["local4"] = torch.cat([torch.cat(p4[:2], dim=3), torch.cat(p4[2:], dim=3)], dim=2)
    if need >= 3 and scale:
        s3 = model.layer3_2(x)
        out["scale3"] = s3
        if need >= 4:
            out["scale4"] = model.layer4_2(s3)
    pooled = {k: v.mean(dim=(2, 3)) for k, v in out.items()}
    if "embedding" in layers:
        pooled["embedding"] = torch.cat([pooled["local4"], pooled["scale4"]], dim=1)
    return {k: pooled[k] for k in layers}


@register_encoder(
    "manet", None, needs="checkpoint",
    summary="MANet (Zhao et al., TIP 2021) face-expression network, per-block outputs",
)
class MANetEncoder(FaceFrameEncoder):
    """MA-Net per-block face features (see the module docstring for the layer keys).

    Source: a local checkpoint (``.pth``/``.pth.tar``/``.pt`` via ``torch.load(weights_only=True)``,
    or ``.safetensors``), e.g. the MER baseline's RAF-DB ``model_best`` file: a dict
    ``{"state_dict": {"module.conv1.weight": ...}, ...}``; wrappers and ``module.``
    prefixes are removed and the state dict must then match exactly (strict). The
    number of classes is read from ``fc_1.weight``. ``random``: untrained weights.

    Preprocessing (MER baseline): resize to exactly 224x224 (bilinear), [0, 1] scale,
    no mean/std normalisation.

    Raises:
        EncoderError: no source, unreadable or mismatching checkpoint.
    """

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        if not source:
            raise EncoderError(
                f"{name}: MANet needs its checkpoint: --encoder {name}=/path/to/model_best.pth (or =random)"
            )
        if source == "random":
            model = build_manet(int(options.get("num_classes", 7)))
        else:
            state = load_state_dict_file(source, name)
            if "fc_1.weight" not in state:
                raise EncoderError(f"{name}: {source} is not an MA-Net checkpoint (no fc_1.weight)")
            model = build_manet(int(state["fc_1.weight"].shape[0]))
            load_strict(model, state, source, name)
        self.preprocessor = ImagePreprocess((224, 224), None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear")
        self._select()
        self._finish(model)

    def available_layers(self) -> list[str]:
        return list(_DIMS)

    def dims(self) -> dict[str, int]:
        """{"1": 64, "2": 128, "local3": 256, "local4": 512, "scale3": 256, "scale4": 512, "embedding": 1024}."""
        return {k: _DIMS[k] for k in self.layers}

    def forward_frames(self, pixels) -> dict[str, Any]:
        return manet_features(self.model, pixels, self.layers)

    def weights_hash(self) -> str:
        """Content hash of the checkpoint file; ``"random"`` for untrained weights."""
        return "random" if self.source == "random" else hash_weights(self.source)
