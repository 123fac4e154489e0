"""emo.extract's structure: one NAME[=SOURCE][:LAYERS] grammar, encoder and dataset registries at the
definition, Extractor subsets without mutation, `emo models list` availability, --device auto (issue
10)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from emo.cli import app
from emo.extract.datasets import DatasetAdapter, Sample, dataset_names, get_dataset, register_dataset
from emo.extract.registry import encoder_modality, encoders, parse_encoder_spec, register_encoder
from emo.extract.spec import Spec, SpecError, format_spec, parse_spec, split_spec
from emo.extract.types import Encoded, resolve_device
from emo.fuse.training.data import FeatureError, parse_feature_spec


@pytest.mark.parametrize("text, parts", [
    ("egemaps", ("egemaps", None, None)),
    ("hubert_large:16-21", ("hubert_large", None, "16-21")),
    ("hubert_large=/ckpt/dir:16-21", ("hubert_large", "/ckpt/dir", "16-21")),
    ("clip_vit_l=ViT-L-14/openai:12-24,proj", ("clip_vit_l", "ViT-L-14/openai", "12-24,proj")),
    ("clip=hf-hub:org/model", ("clip", "hf-hub:org/model", None)),  # the source keeps its colon
    ("x=C:/ckpt", ("x", "C:/ckpt", None)),
])
def test_one_grammar_for_encoder_and_feature_specs(text, parts):
    assert split_spec(text) == parts
    fs = parse_feature_spec(text)  # the fusion stage's parser is the same grammar
    assert isinstance(fs, Spec) and (fs.name, fs.source) == parts[:2]
    assert str(parse_spec(text)) == format_spec(*parts[:2], parse_spec(text).layers)


def test_spec_errors_and_round_trip():
    with pytest.raises(SpecError, match="no encoder name"):
        parse_spec(":3")
    with pytest.raises(FeatureError, match="'hubert_large:x-'"):
        parse_feature_spec("hubert_large:x-")
    assert str(parse_spec("hubert_large=/a/b:16,17,18")) == "hubert_large=/a/b:16-18"
    enc = parse_encoder_spec("hubert_large=/a/b:16-18")  # the registry's parser: same split, plus defaults
    assert (enc.name, enc.source, enc.layers) == ("hubert_large", "/a/b", ["16", "17", "18"])
    assert parse_encoder_spec("hubert_large").layers == [str(i) for i in range(16, 22)]  # registered default


def test_encoders_register_at_their_class():
    reg = encoders()
    assert {"hubert_large", "egemaps", "clip_vit_l", "resnet50", "minilm", "nrc_vad", "manet"} <= set(reg)
    assert reg["hubert_large"].target == "emo.extract.encoders.speech:SpeechEncoder"
    assert reg["hubert_large"].layers == "16-21" and reg["resnet50"].modality == "face"
    assert encoder_modality("minilm") == "text" and encoder_modality("nope") is None

    from emo.extract.encoders.base import Encoder

    @register_encoder("toy_structure_test", None, summary="test only")
    class Toy(Encoder):
        modality = "text"

        def available_layers(self):
            return ["0"]

        def encode(self, batch):
            return [Encoded({"0": np.zeros(1, np.float32)}) for _ in batch]

    try:
        assert reg["toy_structure_test"].target.endswith(":test_encoders_register_at_their_class.<locals>.Toy")
        with pytest.raises(ValueError, match="registered twice"):
            register_encoder("egemaps")(Toy)
    finally:
        reg.pop("toy_structure_test")


def test_dataset_adapters_register_and_help_lists_them():
    assert set(dataset_names()) >= {"mer2023", "mer2024", "emodb", "meld", "folder"}

    @register_dataset
    class Toy(DatasetAdapter):
        name = "toy_structure_test"

        def load(self):
            return [Sample(name="a")]

    from emo.extract.datasets import ADAPTERS

    try:
        assert "toy_structure_test" in dataset_names()
        with pytest.raises(ValueError, match="registered twice"):
            register_dataset(type("Other", (DatasetAdapter,), {"name": "toy_structure_test"}))
    finally:
        ADAPTERS.pop("toy_structure_test")
    r = CliRunner().invoke(app, ["extract", "--help"], terminal_width=200)
    assert r.exit_code == 0
    flat = " ".join(r.output.replace("│", " ").split())
    assert "Dataset adapter: " + ", ".join(dataset_names()) + "." in flat, flat  # generated from the registry


def test_for_encoders_shares_models_and_never_mutates(tmp_path):
    from emo.extract.engine import Extractor

    specs = [parse_encoder_spec("egemaps"), parse_encoder_spec("mfcc")]
    ex = Extractor(specs, out=tmp_path, progress=False)
    before = list(ex.encoders)
    subs: list = []

    def take(names):
        subs.append(ex.for_encoders(names))

    threads = [threading.Thread(target=take, args=(n,)) for n in (["mfcc"], ["egemaps"], ["egemaps", "mfcc"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ex.encoders == before  # the parent is untouched
    by = {tuple(e.name for e in s.encoders): s for s in subs}
    assert set(by) == {("mfcc",), ("egemaps",), ("egemaps", "mfcc")}
    assert by[("mfcc",)].encoders[0] is before[1]  # models are shared, not rebuilt
    with pytest.raises(KeyError, match="hubert"):
        ex.for_encoders(["hubert_large"])
    prov = ex.provenance(before[0], "ds")
    assert prov["dataset"] == "ds" and prov["encoder"] == "egemaps" and prov["modality"] == "audio"


def test_models_list_says_what_works_offline(tmp_path, monkeypatch):
    from emo.extract.models import availability

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert availability("egemaps", None)[0] == "offline"
    assert availability("nrc_vad", None, "lexicon") == ("offline", "local lexicon file: --lexicon PATH or $EMO_LEXICON")
    assert availability("manet", None, "checkpoint")[0] == "needs-file"
    status, how = availability("resnet50", "torchvision:IMAGENET1K_V2")
    assert status == "download" and "resnet50=random" in how
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth").write_bytes(b"")
    assert availability("resnet50", "torchvision:IMAGENET1K_V2")[0] == "cached"
    assert availability("hubert_large", "TencentGameMate/chinese-hubert-large")[0] == "download"
    snap = tmp_path / "hf" / "models--TencentGameMate--chinese-hubert-large" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    assert availability("hubert_large", "TencentGameMate/chinese-hubert-large")[0] == "cached"
    assert availability("clip_vit_l", "ViT-L-14/openai")[0] == "download"
    assert availability("hubert_large", str(tmp_path))[0] == "offline"  # a local directory
    r = CliRunner().invoke(app, ["models", "list"])
    assert r.exit_code == 0
    rows = {line.split()[0]: line.split()[2] for line in r.output.splitlines() if line[:1].strip()}
    assert rows["egemaps"] == "offline" and rows["manet"] == "needs-file" and rows["resnet50"] in ("download", "cached")


def test_device_auto():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"


def test_get_dataset_unknown_lists_registered(tmp_path):
    from emo.extract.datasets import DatasetError

    with pytest.raises(DatasetError, match="known datasets: " + ", ".join(dataset_names())):
        get_dataset("nope", str(tmp_path))

