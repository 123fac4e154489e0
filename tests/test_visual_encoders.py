"""Visual encoders: CLIP (open_clip, transformers), ResNet-50, MANet.

Small random models only (ViT-B-32/random, a tiny saved CLIPVisionConfig, ResNet-50
and MANet at random init); preprocessing is checked against each library's own transform.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emo.extract.encoders.base import EncoderError, FaceInput
from emo.extract.layers import LayerSpecError

RNG = np.random.default_rng(0)


def crops(n, h=224, w=224, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def smooth_crops(n, h, w, seed=0):
    """Natural-image-like crops (smooth), where PIL and torch resizers agree closely."""
    g = np.random.default_rng(seed).random((n, 8, 8, 3)).astype(np.float32)
    t = torch.nn.functional.interpolate(torch.from_numpy(g).permute(0, 3, 1, 2), size=(h, w), mode="bilinear")
    return (t.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------
# fixtures: models built once per module
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openclip_b():
    from emo.extract.encoders.clip import OpenClipEncoder

    return OpenClipEncoder("clip_vit_b", "ViT-B-32/random", max_frames=4)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    d = tmp_path_factory.mktemp("hf_clip")
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                           image_size=64, patch_size=16, projection_dim=24)
    CLIPVisionModelWithProjection(cfg).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def resnet_small():
    from emo.extract.encoders.face import ImagePreprocess
    from emo.extract.encoders.resnet import ResNet50Encoder

    torch.manual_seed(0)
    enc = ResNet50Encoder("resnet50", "random", max_frames=3)
    # low resolution keeps the unit tests fast; the architecture is unchanged
    enc.preprocessor = ImagePreprocess(72, (64, 64), enc.preprocessor.mean, enc.preprocessor.std, "bilinear")
    return enc


@pytest.fixture(scope="module")
def manet_enc():
    from emo.extract.encoders.manet import MANetEncoder

    torch.manual_seed(0)
    return MANetEncoder("manet", "random", max_frames=5)


# ---------------------------------------------------------------------------
# preprocessing == the library's own transform
# ---------------------------------------------------------------------------


def test_openclip_preprocess_equals_open_clip_transform(openclip_b):
    import open_clip
    from PIL import Image

    _, _, pre = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    x = crops(3)  # already at the model's 224: open_clip's resize is the identity
    ref = torch.stack([pre(Image.fromarray(f)) for f in x])
    got = openclip_b.preprocess(x)
    assert got.shape == ref.shape == (3, 3, 224, 224)
    assert torch.allclose(got, ref, atol=1e-5)
    # another size: same transform (bicubic shorter-edge resize + crop); PIL vs torch resize
    # kernels round differently by at most a couple of uint8 levels
    y = smooth_crops(2, 180, 260)
    ref = torch.stack([pre(Image.fromarray(f)) for f in y])
    got = openclip_b.preprocess(y)
    assert got.shape == ref.shape
    step = 1 / 255 / min(openclip_b.preprocessor.std)
    assert (got - ref).abs().max() <= 3 * step
    assert (got - ref).abs().mean() < 0.2 * step


def test_hf_preprocess_equals_clip_image_processor(hf_dir):
    from transformers import CLIPImageProcessor

    from emo.extract.encoders.clip import HFClipEncoder

    enc = HFClipEncoder("hf", str(hf_dir))
    proc = CLIPImageProcessor.from_pretrained(hf_dir)
    for x in (crops(2, 224, 224), crops(2, 90, 130, seed=1), crops(1, 64, 64, seed=2)):
        ref = proc(images=list(x), return_tensors="pt")["pixel_values"]
        got = enc.preprocess(x)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()


def test_hf_preprocess_fallback_without_processor_file(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from emo.extract.encoders.clip import OPENAI_CLIP_MEAN, HFClipEncoder

    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16, projection_dim=8)
    CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path)
    enc = HFClipEncoder("hf", str(tmp_path))
    assert enc.preprocessor.input_size == (32, 32)
    assert enc.preprocessor.mean == OPENAI_CLIP_MEAN
    out = enc.encode([FaceInput("a", crops(2, 50, 40))])
    assert out[0].layers["proj"].shape == (8,)


def test_resnet_preprocess_equals_torchvision_weights_transform():
    import torchvision
    from PIL import Image

    from emo.extract.encoders.face import ImagePreprocess

    for weights in (torchvision.models.ResNet50_Weights.IMAGENET1K_V1, torchvision.models.ResNet50_Weights.IMAGENET1K_V2):
        t = weights.transforms()
        pre = ImagePreprocess(int(t.resize_size[0]), (int(t.crop_size[0]),) * 2, tuple(t.mean), tuple(t.std), "bilinear")
        x = smooth_crops(2, 224, 200, seed=3)
        ref = torch.stack([t(Image.fromarray(f)) for f in x])  # the PIL path the weights were trained with
        got = pre(torch.from_numpy(x).permute(0, 3, 1, 2))
        assert got.shape == ref.shape == (2, 3, 224, 224)
        step = 1 / 255 / min(t.std)
        assert (got - ref).abs().max() <= 1.01 * step  # at most one uint8 level of resize rounding
        assert (got - ref).abs().mean() < 0.1 * step


def test_resnet_timm_preprocess_equals_timm_transform():
    import timm
    from PIL import Image

    from emo.extract.encoders.resnet import ResNet50Encoder

    enc = ResNet50Encoder("resnet50", "timm:resnet50.a1_in1k/random", layers=["1"])
    cfg = timm.data.resolve_model_data_config(enc.model)
    tf = timm.data.create_transform(**cfg, is_training=False)
    x = smooth_crops(2, 240, 240, seed=4)
    ref = torch.stack([tf(Image.fromarray(f)) for f in x])
    got = enc.preprocess(x)
    assert got.shape == ref.shape
    step = 1 / 255 / min(cfg["std"])
    assert (got - ref).abs().max() <= 3 * step
    assert (got - ref).abs().mean() < 0.2 * step
    assert enc.weights_hash() == "random"


def test_manet_preprocess_equals_mer_baseline_transform(manet_enc):
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])  # MER baseline
    x = crops(2)
    ref = torch.stack([tf(Image.fromarray(f)) for f in x])
    assert torch.allclose(manet_enc.preprocess(x), ref, atol=1e-6)
    y = smooth_crops(2, 150, 120, seed=5)
    ref = torch.stack([tf(Image.fromarray(f)) for f in y])
    got = manet_enc.preprocess(y)
    assert got.shape == ref.shape == (2, 3, 224, 224)
    assert (got - ref).abs().max() <= 1.01 / 255


# ---------------------------------------------------------------------------
# shapes, batching, no_face, truncation
# ---------------------------------------------------------------------------


def _check_batch_vs_single(enc, items, atol):
    batch = enc.encode(items)
    assert len(batch) == len(items)
    for item, got in zip(items, batch):
        one = enc.encode([item])[0]
        assert got.flags == one.flags
        for k in enc.layers:
            assert got.layers[k].dtype == np.float32
            np.testing.assert_allclose(got.layers[k], one.layers[k], atol=atol, rtol=1e-4)
    return batch


def test_openclip_layers_shapes_batching_and_proj(openclip_b):
    import open_clip

    enc = openclip_b
    assert enc.available_layers() == [str(i) for i in range(13)] + ["proj"]
    assert enc.dims() == {**{str(i): 768 for i in range(13)}, "proj": 512}
    items = [FaceInput("a", crops(3)), FaceInput("b", crops(0)), FaceInput("c", crops(2, 100, 120, seed=1))]
    out = _check_batch_vs_single(enc, items, atol=2e-4)  # max_frames=4 -> chunks split clip a/c
    assert out[1].flags == {"no_face"}
    assert all(not v.any() and v.shape == (enc.dims()[k],) for k, v in out[1].layers.items())
    assert out[0].flags == set() and np.abs(out[0].layers["12"]).sum() > 0
    # proj equals open_clip's own encode_image (unnormalised), mean over frames
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.visual.load_state_dict(enc.model.state_dict())
    model.eval()
    with torch.no_grad():
        ref = model.encode_image(enc.preprocess(items[0].crops)).mean(0).numpy()
    np.testing.assert_allclose(out[0].layers["proj"], ref, atol=2e-4, rtol=1e-4)
    prov = enc.provenance()
    assert prov["weights_hash"] == "random" and prov["input_size"] == "224x224"


def test_openclip_truncation_matches_full_model(openclip_b):
    from emo.extract.encoders.clip import OpenClipEncoder

    torch.manual_seed(1)
    small = OpenClipEncoder("clip_vit_b", "ViT-B-32/random", layers=["0", "2", "3"])
    assert len(small.model.transformer.resblocks) == 3
    assert small.dims() == {"0": 768, "2": 768, "3": 768}
    full_state = openclip_b.model.state_dict()
    small.model.load_state_dict({k: v for k, v in full_state.items() if k in small.model.state_dict()})
    x = [FaceInput("a", crops(2, seed=7))]
    a, b = small.encode(x)[0], openclip_b.encode(x)[0]
    for k in ("0", "2", "3"):
        np.testing.assert_allclose(a.layers[k], b.layers[k], atol=1e-5)


def test_openclip_bad_sources():
    from emo.extract.encoders.clip import OpenClipEncoder

    with pytest.raises(EncoderError, match="MODEL/TAG"):
        OpenClipEncoder("clip_vit_b", "ViT-B-32")
    with pytest.raises(EncoderError, match="does not exist"):
        OpenClipEncoder("clip_vit_b", "ViT-B-32/nowhere/ckpt.pt")
    with pytest.raises(EncoderError, match="open_clip cannot build"):
        OpenClipEncoder("clip_vit_b", "No-Such-Model/random")


def test_openclip_local_checkpoint_loads_weights_only(openclip_b, tmp_path):
    import open_clip

    from emo.extract.encoders.clip import OpenClipEncoder

    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.visual.load_state_dict(openclip_b.model.state_dict(), strict=False)
    ck = tmp_path / "clip.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ck)
    enc = OpenClipEncoder("clip_vit_b", f"ViT-B-32/{ck}", layers=["proj"])
    x = [FaceInput("a", crops(1, seed=9))]
    np.testing.assert_allclose(enc.encode(x)[0].layers["proj"], openclip_b.encode(x)[0].layers["proj"], atol=1e-5)
    assert enc.weights_hash() not in ("", "random")


def test_hf_clip_layers_truncation_and_frames(hf_dir):
    from transformers import CLIPVisionModelWithProjection

    from emo.extract.encoders.clip import HFClipEncoder

    full = HFClipEncoder("hf", str(hf_dir), max_frames=2, frames=True)
    assert full.available_layers() == ["0", "1", "2", "3", "4", "proj"]
    assert full.dims() == {"0": 32, "1": 32, "2": 32, "3": 32, "4": 32, "proj": 24}
    items = [FaceInput("a", crops(3, 70, 64)), FaceInput("b", crops(0, 64, 64)), FaceInput("c", crops(1, 64, 64, 1))]
    out = _check_batch_vs_single(full, items, atol=1e-5)
    assert out[0].frames["2"].shape == (3, 32) and out[1].frames["2"].shape == (0, 32)
    np.testing.assert_allclose(out[0].frames["proj"].mean(0), out[0].layers["proj"], atol=1e-6)
    assert out[1].flags == {"no_face"}
    # against transformers directly
    ref_model = CLIPVisionModelWithProjection.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        ref = ref_model(pixel_values=full.preprocess(items[0].crops), output_hidden_states=True)
    np.testing.assert_allclose(out[0].layers["proj"], ref.image_embeds.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(out[0].layers["3"], ref.hidden_states[3][:, 0].mean(0).numpy(), atol=1e-5)
    # truncated: only 2 blocks kept, same values
    trunc = HFClipEncoder("hf", str(hf_dir), layers=["1", "2"])
    assert len(trunc.model.vision_model.encoder.layers) == 2
    t = trunc.encode(items[:1])[0]
    for k in ("1", "2"):
        np.testing.assert_allclose(t.layers[k], out[0].layers[k], atol=1e-5)
    with pytest.raises(LayerSpecError):
        HFClipEncoder("hf", str(hf_dir), layers=["7"])


def test_hf_clip_missing_source_is_clear(tmp_path):
    from emo.extract.encoders.clip import HFClipEncoder

    with pytest.raises(EncoderError, match="cannot load CLIPVisionModelWithProjection"):
        HFClipEncoder("hf", str(tmp_path / "absent"))


def test_resnet_shapes_batching_no_face_and_truncation(resnet_small):
    enc = resnet_small
    assert enc.dims() == {"1": 256, "2": 512, "3": 1024, "4": 2048}
    items = [FaceInput("a", crops(4, 64, 64)), FaceInput("b", crops(0, 64, 64)), FaceInput("c", crops(2, 80, 60, 1))]
    out = _check_batch_vs_single(enc, items, atol=1e-4)
    assert out[1].flags == {"no_face"} and not out[1].layers["4"].any()
    assert {k: v.shape for k, v in out[0].layers.items()} == {"1": (256,), "2": (512,), "3": (1024,), "4": (2048,)}
    # torchvision's own forward: layer 4 GAP == avgpool output
    import torchvision

    ref = torchvision.models.resnet50(weights=None)
    ref.load_state_dict({**enc.model.state_dict(), **{k: v for k, v in ref.state_dict().items() if k.startswith("fc.")}})
    ref.fc = torch.nn.Identity()
    ref.eval()
    with torch.no_grad():
        r = ref(enc.preprocess(items[0].crops)).mean(0).numpy()
    np.testing.assert_allclose(out[0].layers["4"], r, atol=1e-4, rtol=1e-4)
    # truncated encoder drops later stages and gives the same stage-2 features
    from emo.extract.encoders.resnet import ResNet50Encoder

    small = ResNet50Encoder("resnet50", "random", layers=["2"])
    small.preprocessor = enc.preprocessor
    small.model.load_state_dict({k: v for k, v in enc.model.state_dict().items() if k in small.model.state_dict()})
    assert isinstance(small.model.layer3, torch.nn.Identity) and small.dims() == {"2": 512}
    np.testing.assert_allclose(small.encode(items[:1])[0].layers["2"], out[0].layers["2"], atol=1e-5)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module", "safetensors"])
def test_resnet_checkpoint_wrappers(resnet_small, tmp_path, wrap):
    import torchvision
    from safetensors.torch import save_file

    from emo.extract.encoders.resnet import ResNet50Encoder

    torch.manual_seed(2)
    src = torchvision.models.resnet50(weights=None, num_classes=7)  # a FER-style head
    sd = src.state_dict()
    if wrap == "plain":
        path = tmp_path / "r.pth"
        torch.save(sd, path)
    elif wrap == "state_dict":
        path = tmp_path / "r.pth.tar"
        torch.save({"epoch": 3, "state_dict": sd, "best_acc": torch.tensor(0.7)}, path)
    elif wrap == "module":
        path = tmp_path / "r.pt"
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        path = tmp_path / "r.safetensors"
        save_file(sd, path)
    enc = ResNet50Encoder("resnet50", str(path), layers=["4"])
    enc.preprocessor = resnet_small.preprocessor
    got = enc.encode([FaceInput("a", crops(1, 64, 64))])[0].layers["4"]
    src.fc = torch.nn.Identity()
    src.eval()
    with torch.no_grad():
        ref = src(enc.preprocess(crops(1, 64, 64)))[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert len(enc.weights_hash()) == 16


def test_resnet_bad_sources(tmp_path):
    from emo.extract.encoders.resnet import ResNet50Encoder

    with pytest.raises(EncoderError, match="unknown torchvision ResNet-50 weights"):
        ResNet50Encoder("resnet50", "torchvision:NOPE")
    with pytest.raises(EncoderError, match="does not exist"):
        ResNet50Encoder("resnet50", str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3)}}, bad)
    with pytest.raises(EncoderError, match="does not match the architecture"):
        ResNet50Encoder("resnet50", str(bad))
    with pytest.raises(EncoderError, match="uint8 RGB"):
        ResNet50Encoder("resnet50", "random", layers=["1"]).encode([FaceInput("clip7", np.zeros((2, 8, 8, 3)))])


# ---------------------------------------------------------------------------
# MANet
# ---------------------------------------------------------------------------

# A selection of the reference implementation's state-dict keys (zengqunzhao/MA-Net,
# model/manet.py, as wrapped by its training script: {"state_dict": {"module." + key}}).
REFERENCE_KEYS = [
    "conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer3_1_p1.0.cbam.ChannelGate.mlp.1.weight", "layer3_1_p1.0.cbam.ChannelGate.mlp.3.bias",
    "layer3_1_p4.1.cbam.SpatialGate.spatial.conv.weight", "layer4_1_p3.0.cbam.SpatialGate.spatial.bn.running_mean",
    "layer4_1_p2.0.downsample.0.weight", "layer3_2.0.conv1_2_1.weight", "layer3_2.1.bn2_2_4.running_var",
    "layer4_2.0.downsample.1.weight", "fc_1.weight", "fc_2.bias",
]


class RecorderMeter:
    """Stands for the training-log object the released MA-Net checkpoints pickle beside the weights."""

    def __init__(self):
        self.epoch_losses = np.zeros((4, 2), np.float32)


def test_manet_architecture_keys_and_shapes():
    from emo.extract.encoders.manet import build_manet

    m = build_manet(7)
    sd = m.state_dict()
    for k in REFERENCE_KEYS:
        assert k in sd, k
    assert sd["layer3_1_p1.0.cbam.ChannelGate.mlp.1.weight"].shape == (16, 256)
    assert sd["layer4_2.0.conv1_2_1.weight"].shape == (128, 128, 3, 3)
    assert sd["fc_1.weight"].shape == (7, 512)
    # ResNet-18 trunk (2 blocks per stage); 4 attention patches x 2 stages + multi-scale x 2 stages
    assert sum(1 for k in sd if k.endswith("conv2.weight")) == 2 + 2 + 4 * 2 * 2
    assert sum(1 for k in sd if k.endswith("conv1_2_1.weight")) == 4


def test_manet_strict_load_of_reference_checkpoint(tmp_path, manet_enc):
    from emo.extract.encoders.manet import MANetEncoder, build_manet

    torch.manual_seed(3)
    ref = build_manet(7).eval()
    for m in ref.modules():  # non-trivial BN statistics so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ck = tmp_path / "[02-08]-[21-19]-model_best-acc88.33.pth"
    torch.save({"epoch": 40, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
                "best_acc": torch.tensor(88.33), "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
                "recorder": RecorderMeter()}, ck)
    enc = MANetEncoder("manet", str(ck), frames=True)
    assert enc.dims() == {"1": 64, "2": 128, "local3": 256, "local4": 512, "scale3": 256, "scale4": 512,
                          "embedding": 1024}
    x = crops(3, seed=11)
    out = enc.encode([FaceInput("a", x)])[0]
    with torch.no_grad():
        px = enc.preprocess(x)
        logits1, logits2 = ref(px)
    # embedding = [local4, scale4]; the classifiers applied to it give the reference logits
    emb = torch.from_numpy(out.frames["embedding"])
    torch.testing.assert_close(ref.fc_1(emb[:, :512]), logits1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ref.fc_2(emb[:, 512:]), logits2, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out.layers["embedding"][:512], out.layers["local4"], atol=1e-6)
    assert len(enc.weights_hash()) == 16
    # a checkpoint with a missing key is refused, naming the file
    sd = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.startswith("layer4_2.1.bn2_2_4")}
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, bad)
    with pytest.raises(EncoderError, match="bad.pth.*does not match"):
        MANetEncoder("manet", str(bad))


def test_manet_batching_no_face_and_partial_depth(manet_enc):
    from emo.extract.encoders.manet import MANetEncoder

    items = [FaceInput("a", crops(3)), FaceInput("b", crops(0)), FaceInput("c", crops(3, 112, 112, seed=1))]
    out = _check_batch_vs_single(manet_enc, items, atol=1e-4)  # max_frames=5 splits clip c
    assert out[1].flags == {"no_face"} and out[1].layers["embedding"].shape == (1024,)
    part = MANetEncoder("manet", "random", layers=["2", "scale3"])
    part.model.load_state_dict(manet_enc.model.state_dict())
    p = part.encode(items[:1])[0]
    assert set(p.layers) == {"2", "scale3"}
    for k in ("2", "scale3"):
        np.testing.assert_allclose(p.layers[k], out[0].layers[k], atol=1e-5)
    with pytest.raises(EncoderError, match="needs its checkpoint"):
        MANetEncoder("manet", None)


def test_registry_builds_face_encoders(hf_dir):
    from emo.extract.registry import parse_encoder_spec

    enc = parse_encoder_spec("manet=random:1,embedding").build()
    assert enc.modality == "face" and enc.layers == ["1", "embedding"]
    assert enc.cost(FaceInput("a", crops(5, 8, 8))) == 5.0
    hf = parse_encoder_spec(f"hf_clip_vit_l={hf_dir}:2-3,proj").build()
    assert hf.layers == ["2", "3", "proj"] and hf.dims() == {"2": 32, "3": 32, "proj": 24}
