"""FeatureInput: the typed description of a model input, and its JSON form in run directories."""

from __future__ import annotations

import json

import pytest
import torch

from emo.fuse.config import TrainConfig
from emo.fuse.training.inputs import FeatureInput, as_inputs
from emo.fuse.model.multimodal import FusionModel

D = {"name": "hubert_large", "modality": "audio", "layers": ["16", "17"], "dim": 8, "frames": False,
     "spec": "hubert_large=src:16-17", "provenance": {"weights_hash": "abc"}}


def test_round_trip_and_key_access():
    inp = FeatureInput.from_dict(D)
    assert inp.layers == ["16", "17"] and inp.dim == 8 and inp.provenance["weights_hash"] == "abc"
    assert inp.to_dict() == D and json.loads(json.dumps(inp.to_dict())) == D
    assert inp.model_dict() == {k: D[k] for k in ("name", "modality", "layers", "dim", "frames")}
    assert inp["name"] == "hubert_large" and inp.get("spec") == D["spec"] and inp.get("nope", 3) == 3
    assert "provenance" in inp and "nope" not in inp
    with pytest.raises(KeyError):
        inp["nope"]
    assert as_inputs([D, inp]) == [inp, inp] and as_inputs([D])[0] is not inp
    bare = FeatureInput.from_dict({"name": "f", "modality": "face", "layers": [0], "dim": "4"})
    assert bare.layers == ["0"] and bare.dim == 4 and bare.frames is False and bare.spec is None
    with pytest.raises(ValueError, match="lacks dim"):
        FeatureInput.from_dict({"name": "f", "modality": "face", "layers": ["0"]})


def test_model_from_dicts_equals_model_from_inputs():
    args = TrainConfig(head="afg", structure=3, hidden=8).model_args([D, {**D, "name": "clip", "modality": "face", "layers": ["proj"]}], 3)
    assert args["inputs"][0] == FeatureInput.from_dict(D).model_dict()
    torch.manual_seed(0)
    a = FusionModel(**args)
    torch.manual_seed(0)
    b = FusionModel(**{**args, "inputs": as_inputs(args["inputs"])})
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [t.encoder for t in a.tokens] == ["hubert_large", "hubert_large", "clip"]
