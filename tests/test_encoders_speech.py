"""Issue 26 speech encoders (WavLM, data2vec-audio, Whisper encoder, emotion2vec) on small random models of
the real architectures, saved locally and loaded through the registry like a real checkpoint.

Each: layer count and order against ``transformers``' own ``output_hidden_states``; the masked
pooling of a clip padded in a batch equals the unpadded single-clip forward within 1e-4; batched
equals one by one; bf16 autocast against float32 within the bound documented in docs/encoders.md.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from emo.extract.registry import parse_encoder_spec
from emo.extract.types import AudioInput, EncoderError

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from tiny_encoders import tiny_data2vec_audio, tiny_wavlm, tiny_whisper  # noqa: E402

#: bf16 autocast vs float32: relative L2 error of every pooled layer vector (docs/encoders.md).
BF16_REL_BOUND = 0.05


def _clips(seed=0, lengths=(16000, 7000, 11000)):
    rng = np.random.default_rng(seed)
    return [AudioInput(f"c{i}", (0.1 * rng.standard_normal(n)).astype(np.float32)) for i, n in enumerate(lengths)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("issue26-speech")
    return {
        "wavlm_large": tiny_wavlm(d / "wavlm-large", stable=True),
        "wavlm_base_plus": tiny_wavlm(d / "wavlm-base-plus", stable=False, seed=1),
        "data2vec_audio_base": tiny_data2vec_audio(d / "data2vec"),
        "whisper_base": tiny_whisper(d / "whisper"),
    }


def _ssl_reference(path, audio: np.ndarray) -> list[np.ndarray]:
    """Unpadded single-clip forward through transformers: the mean of every hidden state over its frames.
    Stable-layer-norm models (WavLM-large): the last layer is ``last_hidden_state``, after the final
    LayerNorm (emo's convention for HuBERT-large too; transformers 5 leaves it out of ``hidden_states``)."""
    import torch
    from transformers import AutoModel

    m = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.inference_mode():
        out = m(torch.from_numpy(audio)[None], output_hidden_states=True)
    hs = [h[0].mean(0).numpy() for h in out.hidden_states]
    if getattr(m.config, "do_stable_layer_norm", False):
        hs[-1] = out.last_hidden_state[0].mean(0).numpy()
    return hs


@pytest.mark.parametrize("name", ["wavlm_large", "data2vec_audio_base"])
def test_ssl_layers_masked_pooling_and_batching(models, name):
    enc = parse_encoder_spec(f"{name}={models[name]}").build(normalize=False)
    assert enc.layers == [str(i) for i in range(5)]  # 4 transformer layers + the input to layer 1
    clips = _clips()
    batched = enc.encode(clips)
    one = [enc.encode([c])[0] for c in clips]
    for c, b, o in zip(clips, batched, one):
        ref = _ssl_reference(models[name], c.audio)
        assert len(ref) == len(enc.layers)
        for k in enc.layers:  # layer k is hidden state k, in order; padding never enters the mean
            assert np.abs(b.layers[k] - ref[int(k)]).max() < 1e-4, (name, c.name, k)
            assert np.abs(b.layers[k] - o.layers[k]).max() < 1e-4
    # a truncated model gives the same layers
    part = parse_encoder_spec(f"{name}={models[name]}:1-2").build(normalize=False)
    assert len(part.model.encoder.layers) == 2
    (p,) = part.encode(clips[:1])
    for k in ("1", "2"):
        assert np.abs(p.layers[k] - one[0].layers[k]).max() < 1e-5


def test_wavlm_base_plus_group_norm_single_clip_and_wrong_model_refused(models):
    enc = parse_encoder_spec(f"wavlm_base_plus={models['wavlm_base_plus']}").build(normalize=False)
    c = _clips()[0]
    (o,) = enc.encode([c])
    ref = _ssl_reference(models["wavlm_base_plus"], c.audio)
    for k in enc.layers:
        assert np.abs(o.layers[k] - ref[int(k)]).max() < 1e-4
    with pytest.raises(EncoderError, match="not wavlm"):
        parse_encoder_spec(f"wavlm_large={models['data2vec_audio_base']}").build()
    with pytest.raises(EncoderError, match="not data2vec-audio"):
        parse_encoder_spec(f"data2vec_audio_base={models['wavlm_large']}").build()


def _bf16_rel_errors(enc, module, monkeypatch, clips):
    """Pooled vectors with the encoder's own bf16 autocast path (forced on CPU) vs float32."""
    import torch

    ref = enc.encode(clips)
    monkeypatch.setattr(module, "autocast_dtype", lambda device: torch.bfloat16)
    low = enc.encode(clips)
    monkeypatch.undo()
    errs = []
    for r, b in zip(ref, low):
        for k in enc.layers:
            errs.append(float(np.linalg.norm(b.layers[k] - r.layers[k]) / max(np.linalg.norm(r.layers[k]), 1e-12)))
    return errs


@pytest.mark.parametrize("name", ["wavlm_large", "data2vec_audio_base", "whisper_base"])
def test_bf16_agrees_with_float32_within_documented_bound(models, name, monkeypatch):
    import emo.extract.encoders.speech as speech
    import emo.extract.encoders.whisper as whisper

    enc = parse_encoder_spec(f"{name}={models[name]}").build()
    errs = _bf16_rel_errors(enc, whisper if name.startswith("whisper") else speech, monkeypatch, _clips(lengths=(16000, 9000)))
    assert 0 < max(errs) < BF16_REL_BOUND, errs  # > 0: bf16 really ran


# --- Whisper -----------------------------------------------------------------------------------------


def _whisper_reference(path, audio: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Whisper's own pipeline on one clip (padded to 30 s, the only input it accepts): every hidden state,
    and the number of valid encoder frames from the feature extractor's mel attention mask."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperModel

    fe = WhisperFeatureExtractor.from_pretrained(path)
    feats = fe(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    enc = WhisperModel.from_pretrained(path).get_encoder().eval()
    with torch.inference_mode():
        out = enc(feats["input_features"], output_hidden_states=True)
    mel_valid = int(feats["attention_mask"].sum())
    return [h[0].numpy() for h in out.hidden_states], math.ceil(mel_valid / 2)


def test_whisper_valid_frames_match_the_feature_extractor_mask(models):
    from transformers import WhisperFeatureExtractor

    from emo.extract.encoders.whisper import valid_frames

    fe = WhisperFeatureExtractor.from_pretrained(models["whisper_base"])
    for n in (1, 159, 160, 161, 320, 7000, 16000, 16001, 479_999, 480_000):
        mask = fe(np.zeros(n, np.float32), sampling_rate=16000, return_attention_mask=True)["attention_mask"]
        assert valid_frames(n) == min(1500, math.ceil(int(np.sum(mask)) / 2)), n


def test_whisper_layers_padding_masked_batching_and_truncation(models):
    path = models["whisper_base"]
    enc = parse_encoder_spec(f"whisper_base={path}").build()
    assert enc.layers == ["0", "1", "2", "3"]
    clips = _clips(lengths=(16000, 7000))
    batched = enc.encode(clips)
    one = [enc.encode([c])[0] for c in clips]
    for c, b, o in zip(clips, batched, one):
        hs, nf = _whisper_reference(path, c.audio)
        assert len(hs) == 4 and nf == math.ceil(len(c.audio) / 320)
        for k in enc.layers:
            ref = hs[int(k)][:nf].mean(0)  # frames past the clip's length never enter the mean
            assert np.abs(b.layers[k] - ref).max() < 1e-4, k
            assert np.abs(b.layers[k] - o.layers[k]).max() < 1e-4
            assert np.abs(ref - hs[int(k)].mean(0)).max() > 1e-3  # the padded mean differs: masking matters
    # the last layer is the encoder output after its final LayerNorm; a truncated model never applies it
    part = parse_encoder_spec(f"whisper_base={path}:0-2").build()
    assert len(part.model.layers) == 2
    (p,) = part.encode(clips[:1])
    for k in ("0", "1", "2"):
        assert np.abs(p.layers[k] - one[0].layers[k]).max() < 1e-5


def test_whisper_long_clip_is_windowed(models):
    path = models["whisper_base"]
    enc = parse_encoder_spec(f"whisper_base={path}:1,3").build(frames=True)
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(16000 * 40)).astype(np.float32)  # 40 s: windows of 30 s and 10 s
    (o,) = enc.encode([AudioInput("long", audio)])
    h1, n1 = _whisper_reference(path, audio[:480_000])
    h2, n2 = _whisper_reference(path, audio[480_000:])
    assert (n1, n2) == (1500, 500)
    for k in ("1", "3"):
        ref = (h1[int(k)][:n1].sum(0) + h2[int(k)][:n2].sum(0)) / (n1 + n2)
        assert np.abs(o.layers[k] - ref).max() < 1e-4
        assert o.frames[k].shape == (2000, 32)
    assert enc.cost(AudioInput("long", audio)) == 60.0
    # streamed 30-s windows (long files in bounded memory) give the same vector
    import types

    stream = types.SimpleNamespace(windows=lambda seconds: iter([audio[i:i + int(seconds * 16000)]
                                                                for i in range(0, audio.size, int(seconds * 16000))]))
    s = enc.encode_stream("long", stream)
    for k in ("1", "3"):
        assert np.abs(s.layers[k] - o.layers[k]).max() < 1e-5


def test_whisper_refuses_other_models(models):
    with pytest.raises(EncoderError, match="not Whisper"):
        parse_encoder_spec(f"whisper_base={models['wavlm_large']}").build()


def test_extract_cli_writes_layerwise_stores(models, shared, tmp_path):
    """`emo extract` with the new speech encoders from local directories: layer-wise stores on EmoDB."""
    from emo.extract.store import FeatureStore
    from helpers import run_emo

    out = tmp_path / "feat"
    run_emo("extract", "--dataset", "emodb", "--root", str(shared / "emodb"), "--limit", "3", "--device", "cpu",
            "--encoder", f"wavlm_large={models['wavlm_large']}", "--encoder", f"whisper_base={models['whisper_base']}:0-3",
            "--encoder", f"data2vec_audio_base={models['data2vec_audio_base']}:2,4", "--out", str(out), "--no-progress")
    for name, layers, d in (("wavlm_large", [str(i) for i in range(5)], 32), ("whisper_base", ["0", "1", "2", "3"], 32),
                            ("data2vec_audio_base", ["2", "4"], 32)):
        s = FeatureStore(out / "emodb" / f"{name}.h5")
        assert s.layers == layers and len(s) == 3 and set(s.dims.values()) == {d}
        assert s.attrs["encoder"] == name and s.attrs["source"] == str(models[name])
        assert np.all(np.isfinite(s.read()))
    assert FeatureStore(out / "emodb" / "whisper_base.h5").attrs["pooling"] == "mean_valid_frames"


# --- emotion2vec (FunASR extra) ----------------------------------------------------------------------


def test_emotion2vec_without_funasr_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "funasr", None)  # import funasr -> ImportError, installed or not
    with pytest.raises(EncoderError, match=r'pip install "emo\[emotion2vec\]"'):
        parse_encoder_spec("emotion2vec_base").build()
    from emo.extract.models import availability

    status, how = availability("emotion2vec_base", "iic/emotion2vec_base", "funasr")
    assert status == ("needs-extra" if __import__("importlib").util.find_spec("funasr") is None else "download")


def test_emotion2vec_uses_funasr_public_api(monkeypatch):
    """Our wrapper around funasr.AutoModel.generate (FunASR itself is an optional extra, absent here):
    the call it makes and how it stores what comes back (the last layer, 'final')."""
    import types

    calls = []

    class FakeAutoModel:
        def __init__(self, **kw):
            calls.append(("init", kw))

        def generate(self, audio, granularity, extract_embedding, fs, disable_pbar):
            calls.append(("generate", granularity, extract_embedding, fs, len(audio)))
            t = max(1, len(audio) // 320)
            frames = np.arange(t * 768, dtype=np.float32).reshape(t, 768) / 1e4
            return [{"key": "x", "feats": frames if granularity == "frame" else frames.mean(0)}]

    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=FakeAutoModel))
    enc = parse_encoder_spec("emotion2vec_base=/models/emotion2vec_base").build(frames=True)
    assert enc.layers == ["final"] and calls[0] == ("init", {"model": "/models/emotion2vec_base", "device": "cpu",
                                                            "disable_update": True})
    (o,) = enc.encode([AudioInput("a", np.ones(3200, np.float32))])
    assert calls[-1] == ("generate", "frame", True, 16000, 3200)
    assert o.frames["final"].shape == (10, 768) and np.allclose(o.layers["final"], o.frames["final"].mean(0))
    utt = parse_encoder_spec("emotion2vec_base=/models/emotion2vec_base").build()
    (u,) = utt.encode([AudioInput("a", np.ones(3200, np.float32))])
    assert calls[-1][1] == "utterance" and u.frames is None and u.layers["final"].shape == (768,)
    with pytest.raises(Exception, match="no layer"):
        parse_encoder_spec("emotion2vec_base=/models/x:3").build()


def test_models_list_shows_the_new_encoders_with_offline_status(tmp_path):
    import importlib.util

    from emo.extract.models import availability
    from helpers import run_emo

    out = run_emo("models", "list").stdout
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln and not ln.startswith(" ")}
    new = ["wavlm_large", "wavlm_base_plus", "whisper_large_v3", "whisper_medium", "whisper_base", "data2vec_audio_large",
           "data2vec_audio_base", "emotion2vec_base", "emotion2vec_plus_base", "dinov2_large", "dinov2_base",
           "videomae_base", "videomae_large"]
    for name in new:
        assert name in rows, name
        want = {"download", "cached"} if not name.startswith("emotion2vec") else (
            {"needs-extra"} if importlib.util.find_spec("funasr") is None else {"download", "offline"})
        assert rows[name][2] in want, rows[name]
    assert "Hugging Face hub; offline: videomae_base=/path/to/local/model_dir" in out  # not taken for an open_clip tag
    assert availability("whisper_base", str(tmp_path))[0] == "offline"  # a local directory
