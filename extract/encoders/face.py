"""The batched frame-encoder base shared by every visual encoder (CLIP, ResNet, MANet), its image
preprocessing and safe checkpoint loading.

Visual encoders see a clip as a stack of aligned face crops, uint8 RGB, shape
(F, H, W, 3). :class:`FaceFrameEncoder` implements the batching contract once:
all frames of all clips in a batch are concatenated, preprocessed on the device
with the model's own transform (:class:`ImagePreprocess`), pushed through the
network in chunks of at most ``max_frames`` frames, split back per clip and
mean-pooled per layer. A clip without faces (F = 0) gets zero vectors and the
``no_face`` flag.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.types import Encoded, EncoderError, FaceInput, autocast_dtype, torch_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePreprocess:
    """A model's eval transform, applied in torch to a batch of uint8 frames.

    Order (as torchvision ``ImageClassification``, open_clip's and timm's eval
    transforms and transformers' ``CLIPImageProcessor``): resize, center crop,
    scale to [0, 1], normalise ``(x - mean) / std``. Resizing runs on the uint8
    tensor with antialiasing, so values are rounded to uint8 after the resize as
    in the PIL pipelines the models were trained with.

    Attributes:
        resize: ``int`` = resize the shorter edge to this many pixels keeping the
            aspect ratio; ``(H, W)`` = resize to exactly this size; ``None`` = no resize.
        crop: center crop ``(H, W)`` after the resize, or ``None``.
        mean, std: per-channel RGB statistics on the [0, 1] scale.
        interpolation: ``"bilinear"`` or ``"bicubic"``.
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the tensors the network receives; needs a crop or an exact resize."""
        if self.crop is not None:
            return tuple(self.crop)  # type: ignore[return-value]
        if isinstance(self.resize, tuple):
            return self.resize
        raise ValueError("input size depends on the image: give a crop or an exact (H, W) resize")

    def __call__(self, frames):
        """Preprocess ``frames``: uint8 tensor (N, 3, H, W) on any device -> float32 (N, 3, h, w)."""
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x = frames
        if self.resize is not None:
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
            if tuple(x.shape[-2:]) != self._target(x.shape[-2:]):
                x = TF.resize(x, size, interpolation=mode, antialias=True)
        if self.crop is not None:
            x = TF.center_crop(x, list(self.crop))
        x = x.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def _target(self, hw) -> tuple[int, int]:
        """Size after resizing an (h, w) image (torchvision's shorter-edge rule)."""
        h, w = int(hw[0]), int(hw[1])
        if isinstance(self.resize, tuple):
            return self.resize
        s = int(self.resize)  # type: ignore[arg-type]
        if h <= w:
            return (s, int(s * w / h))
        return (int(s * h / w), s)

    def as_attrs(self) -> dict[str, Any]:
        """Provenance attributes (HDF5-friendly)."""
        resize = "none" if self.resize is None else (
            f"shorter_edge={self.resize}" if isinstance(self.resize, int) else f"{self.resize[0]}x{self.resize[1]}"
        )
        h, w = self.input_size
        return {
            "input_size": f"{h}x{w}",
            "resize": f"{resize} {self.interpolation} antialias",
            "image_mean": [float(m) for m in self.mean],
            "image_std": [float(s) for s in self.std],
        }


# ---------------------------------------------------------------------------
# Batched frame-encoder base
# ---------------------------------------------------------------------------


class FaceFrameEncoder(Encoder):
    """Base of the visual encoders: per-frame layer features, mean-pooled per clip.

    Subclasses build ``self.model`` (on ``self.torch_device``, eval mode) and
    ``self.preprocessor`` (:class:`ImagePreprocess`), then call ``self._select()``;
    they implement :meth:`available_layers`, :meth:`dims` and :meth:`forward_frames`.

    Options:
        max_frames: most frames in one forward pass (default 64); larger batches
            are chunked, which changes nothing but memory use.
    """

    modality = "face"
    pooling = "mean"

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        self.torch_device = torch_device(device)
        self.max_frames = int(options.get("max_frames", 64))
        if self.max_frames < 1:
            raise EncoderError(f"{name}: max_frames must be >= 1, got {self.max_frames}")
        self.preprocessor: ImagePreprocess

    @abstractmethod
    def forward_frames(self, pixels) -> dict[str, Any]:
        """Run the network on preprocessed frames.

        Args:
            pixels: float32 tensor (N, 3, h, w) from :attr:`preprocessor`, on the device.

        Returns:
            selected layer key -> tensor (N, D) (any float dtype; cast to float32 later).
        """

    def preprocess(self, crops: np.ndarray):
        """uint8 RGB (F, H, W, 3) numpy frames -> float32 tensor (F, 3, h, w) on the device."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(crops)).to(self.torch_device).permute(0, 3, 1, 2)
        return self.preprocessor(t)

    def _check(self, item: FaceInput) -> None:
        c = item.crops
        if not isinstance(c, np.ndarray) or c.dtype != np.uint8 or c.ndim != 4 or c.shape[-1] != 3:
            desc = f"{type(c).__name__} {getattr(c, 'dtype', '')} {getattr(c, 'shape', '')}"
            raise EncoderError(
                f"{self.name}: face crops of {item.name!r} must be uint8 RGB of shape (F, H, W, 3), got {desc}"
            )
        if len(c) and (c.shape[1] < 2 or c.shape[2] < 2):
            raise EncoderError(f"{self.name}: face crops of {item.name!r} are {c.shape[1]}x{c.shape[2]} pixels")

    def encode(self, batch: list[FaceInput]) -> list[Encoded]:
        """Encode clips: one forward pass over all their frames (chunked by ``max_frames``).

        Returns one :class:`Encoded` per clip: layer -> float32 (D,) mean over the
        clip's frames; with ``frames=True`` also layer -> float32 (F, D).

        Raises:
            EncoderError: malformed crops (naming the clip) or a failing forward pass.
        """
        import torch

        for item in batch:
            self._check(item)
        counts = [len(item.crops) for item in batch]
        total = sum(counts)
        per_layer: dict[str, list] = {k: [] for k in self.layers}
        if total:
            # (clip index, start, stop) pieces of at most max_frames frames in all
            pieces: list[list[tuple[int, int, int]]] = [[]]
            room = self.max_frames
            for i, n in enumerate(counts):
                a = 0
                while a < n:
                    take = min(room, n - a)
                    pieces[-1].append((i, a, a + take))
                    a += take
                    room -= take
                    if room == 0:
                        pieces.append([])
                        room = self.max_frames
            dtype = autocast_dtype(self.device)
            try:
                with torch.inference_mode():
                    for chunk in pieces:
                        if not chunk:
                            continue
                        pixels = torch.cat([self.preprocess(batch[i].crops[a:b]) for i, a, b in chunk])
                        with torch.autocast(self.torch_device.type, dtype=dtype, enabled=dtype is not None):
                            out = self.forward_frames(pixels)
                        for k in self.layers:
                            per_layer[k].append(out[k].float().cpu())
            except torch.OutOfMemoryError as e:  # let the engine shrink/retry the batch
                raise EncoderError(f"{self.name}: out of memory on {total} frames ({e})") from e
            except RuntimeError as e:
                names = ", ".join(item.name for item in batch[:5])
                raise EncoderError(f"{self.name}: forward pass failed on clips {names}: {e}") from e
        feats = {k: (torch.cat(v).numpy() if v else None) for k, v in per_layer.items()}
        dims = self.dims()
        results: list[Encoded] = []
        start = 0
        for n in counts:
            if n == 0:
                layers = {k: np.zeros(dims[k], np.float32) for k in self.layers}
                fr = {k: np.zeros((0, dims[k]), np.float32) for k in self.layers} if self.frames else None
                results.append(Encoded(layers=layers, frames=fr, flags={"no_face"}))
                continue
            sl = {k: feats[k][start : start + n] for k in self.layers}
            start += n
            layers = {k: v.mean(axis=0, dtype=np.float64).astype(np.float32) for k, v in sl.items()}
            fr = {k: np.ascontiguousarray(v) for k, v in sl.items()} if self.frames else None
            results.append(Encoded(layers=layers, frames=fr))
        return results

    def provenance(self) -> dict[str, Any]:
        """Base provenance plus the preprocessing (input size, resize, mean, std)."""
        return {**super().provenance(), **self.preprocessor.as_attrs()}

    def _finish(self, model) -> None:
        self.model = model.to(self.torch_device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)


# ---------------------------------------------------------------------------
# Checkpoint helpers
# ---------------------------------------------------------------------------


def cls_per_layer(out, layers: list[str], named: str, attr: str) -> dict[str, Any]:
    """Per-layer CLS tokens of a transformers vision model's output: ``out.hidden_states[k][:, 0]``
    (shape ``(n_frames, width)``) for each numeric layer ``k`` in ``layers``, and ``out.<attr>`` under
    the one named layer ``named`` (CLIP's ``proj`` = ``image_embeds``, DINOv2's ``pooled`` =
    ``pooler_output``), read only when it is asked for."""
    res = {k: out.hidden_states[int(k)][:, 0] for k in layers if k != named}
    if named in layers:
        res[named] = getattr(out, attr)
    return res


def load_state_dict_file(path: str | Path, who: str) -> dict:
    """Load a state dict safely from ``.safetensors`` or ``.pt/.pth/.pth.tar/.ckpt``.

    Pickled files go through ``torch.load(weights_only=True)`` (no arbitrary code; see
    :func:`safe_torch_load` for extra pickled objects such as MA-Net's training recorder).
    Common wrappers are unwrapped: ``{"state_dict": ...}``, ``{"model": ...}``,
    ``{"model_state_dict": ...}``, ``{"net": ...}``; ``module.`` prefixes (DataParallel)
    are stripped.

    Raises:
        EncoderError: missing file, unsafe/unreadable content, or no tensor dict inside.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise EncoderError(f"{who}: checkpoint file {p} does not exist")
    try:
        if p.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = safe_torch_load(p)
    except Exception as e:  # noqa: BLE001 - any loader failure is reported with the file
        raise EncoderError(f"{who}: cannot load checkpoint {p}: {type(e).__name__}: {e}") from e
    for _ in range(3):
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model_state_dict", "model", "net", "module"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EncoderError(f"{who}: {p} holds no state dict (a dict of tensors, possibly under 'state_dict')")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


class _Opaque:
    """Inert stand-in for a non-tensor object pickled in a checkpoint (e.g. MA-Net's
    ``RecorderMeter`` training log): records its arguments and state, runs no code."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)``; objects of classes outside torch's allowlist
    (training-log objects saved next to the state dict, numpy arrays) are loaded as inert
    :class:`_Opaque` stand-ins instead of failing, still without executing pickled code.
    """
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not names:
            raise
        stand_ins = [(type(n.rsplit(".", 1)[-1], (_Opaque,), {}), n) for n in names]
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(str(path), map_location="cpu", weights_only=True)


def load_strict(model, state: dict, path: str | Path, who: str, drop: tuple[str, ...] = ()) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error naming the file and the mismatch.

    Keys starting with any prefix in ``drop`` are removed from ``state`` first (e.g. a
    classifier head the encoder does not build).
    """
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else state
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = str(e).replace("\n", " ")
        raise EncoderError(f"{who}: checkpoint {path} does not match the architecture: {msg[:800]}") from e
