"""Noise and video augmentation (issue 15, MER-NOISE): SNR accuracy, speaker independence,
determinism, and an augmented store written by the extraction engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from emo.extract.augment import (
    AugmentError,
    augment_encoders,
    mix_at_snr,
    parse_augment,
    parse_range,
    sample_rng,
    snr_db,
)

from tests.helpers import link_clips


def _emodb_subset(shared: Path, tmp_path: Path, per_speaker: int = 2, speakers=("03", "08", "09")) -> Path:
    wavs = sorted((shared / "emodb" / "wav").glob("*.wav"))
    chosen = [w for s in speakers for w in [w for w in wavs if w.name.startswith(s)][:per_speaker]]
    return link_clips(chosen, tmp_path / "emodb" / "wav")


def test_parse_range_and_spec_errors(tmp_path):
    assert parse_range("5-11", "snr") == [5, 6, 7, 8, 9, 10, 11]
    assert parse_range("5;10", "snr") == [5, 10]
    assert parse_range("-3", "snr") == [-3]
    with pytest.raises(AugmentError, match="needs source=DIR"):
        parse_augment("noise:snr=5")
    with pytest.raises(AugmentError, match="is not a directory"):
        parse_augment(f"noise:source={tmp_path / 'nope'}")
    with pytest.raises(AugmentError, match="holds no audio file"):
        parse_augment(f"noise:source={tmp_path}")
    with pytest.raises(AugmentError, match="unknown kind"):
        parse_augment("reverb:x=1")
    with pytest.raises(AugmentError, match="unknown option"):
        parse_augment("video:blur=1,sharpen=2")
    with pytest.raises(AugmentError, match="at least one"):
        parse_augment("video:p=1")


def test_mix_at_snr_exact_on_real_speech(shared):
    from emo.extract.media import load_audio

    wavs = sorted((shared / "emodb" / "wav").glob("*.wav"))
    s = load_audio(wavs[0], 16000)
    n = load_audio(wavs[-1], 16000)
    n = np.tile(n, 3)[: s.size]
    for target in (5, 8, 11, -2):
        mixed, scaled = mix_at_snr(s, n, target)
        assert abs(snr_db(s, mixed - s) - target) < 0.1
        assert abs(snr_db(s, scaled) - target) < 0.1
    with pytest.raises(AugmentError, match="silent"):
        mix_at_snr(s, np.zeros_like(s), 5)


def test_noise_never_own_speaker_and_snr_in_range(shared, tmp_path):
    from emo.extract.datasets import get_dataset
    from emo.extract.media import load_audio

    root = _emodb_subset(shared, tmp_path).parent
    samples = get_dataset("emodb", root).samples()
    speakers = {str(Path(s.media).resolve()): s.speaker for s in samples}
    aug = parse_augment(f"noise:snr=5-11,source={root / 'wav'},seed=3", 16000, speakers)
    assert {f.speaker for f in aug.bank.files} == {"03", "08", "09"}
    seen_snr = set()
    for s in samples:
        audio = load_audio(s.media, 16000)
        for seed in range(4):
            aug.seed = seed
            mixed, info = aug.apply(s.name, audio, s.speaker, s.media)
            assert info["noise_speaker"] != s.speaker
            assert Path(info["noise"]).resolve() != Path(s.media).resolve()
            assert 5 <= info["snr"] <= 11
            seen_snr.add(info["snr"])
            assert abs(snr_db(audio, mixed - audio) - info["snr"]) < 0.1
    assert len(seen_snr) > 2  # the SNR is drawn, not fixed
    # a speaker with no other speaker's noise: a clear error, never its own voice
    only = parse_augment(f"noise:source={root / 'wav'}", 16000, {k: "03" for k in speakers})
    with pytest.raises(AugmentError, match="other than '03'"):
        only.apply(samples[0].name, load_audio(samples[0].media, 16000), "03", samples[0].media)


def test_noise_deterministic_per_sample_and_seed(shared, tmp_path):
    from emo.extract.media import load_audio

    root = _emodb_subset(shared, tmp_path)
    files = sorted(root.glob("*.wav"))
    audio = load_audio(files[0], 16000)
    a = parse_augment(f"noise:source={root},speaker_regex=^(\\d\\d),seed=7", 16000)
    b = parse_augment(f"noise:source={root},speaker_regex=^(\\d\\d),seed=7", 16000)
    m1, i1 = a.apply("clip", audio, "03")
    m2, i2 = b.apply("clip", audio, "03")  # a fresh bank, same seed and name: identical
    assert i1 == i2 and np.array_equal(m1, m2)
    others = [a.apply("clip", audio, "03", None)[1] for _ in range(2)]
    assert all(o == i1 for o in others)  # no state carried between calls
    c = parse_augment(f"noise:source={root},speaker_regex=^(\\d\\d),seed=8", 16000)
    diffs = [c.apply(f"clip{k}", audio, "03")[1] != a.apply(f"clip{k}", audio, "03")[1] for k in range(6)]
    assert any(diffs)
    assert sample_rng(1, "x").random() == sample_rng(1, "x").random() != sample_rng(1, "y").random()


def test_silent_clip_left_unchanged(shared, tmp_path):
    root = _emodb_subset(shared, tmp_path, per_speaker=1)
    aug = parse_augment(f"noise:source={root}", 16000)
    z = np.zeros(16000, np.float32)
    out, info = aug.apply("silence", z, "03")
    assert info.get("silent") and np.array_equal(out, z)


def test_video_corruptions_deterministic_and_effective():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    v = parse_augment("video:solarize=128,blur=1.5,rotate=20,cutout=0.25,seed=1")
    out1, info1 = v.apply("clip", crops)
    out2, info2 = v.apply("clip", crops)
    assert out1.shape == crops.shape and out1.dtype == np.uint8
    assert np.array_equal(out1, out2) and info1 == info2
    assert not np.array_equal(out1, crops)
    i, j = info1["cutout_at"]
    assert np.all(out1[:, i:i + 16, j:j + 16] == 0)  # the hole is there, on every frame
    sol = parse_augment("video:solarize=100").apply("c", crops)[0]
    assert np.array_equal(sol, np.where(crops >= 100, 255 - crops, crops))
    empty = np.zeros((0, 64, 64, 3), np.uint8)
    assert parse_augment("video:blur=2").apply("c", empty)[0].shape == (0, 64, 64, 3)


def test_augmented_store_from_engine(shared, tmp_path):
    from emo.extract.datasets import get_dataset
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.store import FeatureStore, store_path

    root = _emodb_subset(shared, tmp_path, per_speaker=1).parent
    ds = get_dataset("emodb", root)
    samples = ds.samples()
    enc = parse_encoder_spec("egemaps").build()
    clean = Extractor([], out=tmp_path / "f", encoders=[enc], progress=False).run(ds, samples)
    assert clean.n_failed == 0
    wrapped = augment_encoders([enc], [f"noise:snr=5,source={root / 'wav'}"], samples, seed=0)
    assert [w.name for w in wrapped] == ["egemaps+noise"]
    summary = Extractor([], out=tmp_path / "f", encoders=wrapped, progress=False).run(ds, samples)
    assert summary.n_failed == 0
    st = FeatureStore(store_path(tmp_path / "f", "emodb", "egemaps+noise"))
    assert st.attrs["augment"].startswith("noise:snr=5") and st.attrs["augment_seed"] == 0
    assert len(st.attrs["noise_files_hash"]) == 16 and st.attrs["clean_encoder"] == "egemaps"
    c = FeatureStore(store_path(tmp_path / "f", "emodb", "egemaps"))
    names = c.names
    xa, xc = st.read(["functionals"], names), c.read(["functionals"], names)
    assert xa.shape == xc.shape and np.all(np.isfinite(xa))
    assert not np.allclose(xa, xc)  # 5 dB of speech noise changes the functionals
    with pytest.raises(AugmentError, match="no face encoder"):
        augment_encoders([enc], ["video:blur=1"], samples)


@pytest.mark.slow
def test_cli_extract_augment_then_train_on_copies(shared, tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app
    from emo.extract.store import FeatureStore, store_path

    root = _emodb_subset(shared, tmp_path, per_speaker=4).parent
    feats = tmp_path / "f"
    base = ["extract", "--dataset", "emodb", "--root", str(root), "--encoder", "egemaps", "--out", str(feats), "--no-progress"]
    assert CliRunner().invoke(app, base).exit_code == 0
    r = CliRunner().invoke(app, [*base, "--augment", f"noise:snr=5-11,source={root / 'wav'}", "--augment",
                                 f"noise:snr=5,source={root / 'wav'},seed=3,name=noise5"])
    assert r.exit_code == 0, r.output
    st = FeatureStore(store_path(feats, "emodb", "egemaps+noise5"))
    assert st.attrs["augment_seed"] == 3 and len(st.names) == 12
    train = ["fuse", "train", "--dataset", "emodb", "--features-dir", str(feats), "--features", "egemaps", "--folds", "speaker",
             "--head", "mlp", "--hidden", "16", "--epochs", "3", "--seeds", "1", "--normalize", "global",
             "--allow-rare-classes"]  # 12 clips: some of the 7 EmoDB classes have 0-1
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [*train, "--augmented", "egemaps+noise", "--evaluate-on", "noise5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    import json

    conf = json.loads((out / "config.json").read_text())
    aug = conf["augmentation"]
    # every fold: 8 training clips of two speakers minus the inner-validation speaker's 4 -> 4 copies
    assert aug["evaluate_on"] == "noise5" and aug["copies_per_fold"] == [4, 4, 4]
    assert aug["groups"]["noise"]["provenance"]["egemaps+noise"]["noise_files_hash"] == st.attrs["noise_files_hash"]
    assert sum(f["n_test"] for f in conf["folds"]) == 12 and all(f["n_train"] == 8 for f in conf["folds"])
    bad = CliRunner().invoke(app, [*train, "--evaluate-on", "blur", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "no store egemaps+blur.h5" in bad.output


def test_augmented_face_encoder_sees_corrupted_crops_and_records_provenance():
    from emo.extract.augment import AugmentedEncoder
    from emo.extract.encoders.base import Encoded, FaceInput

    class FakeFace:
        name, modality, layers, frames = "fakeface", "face", ["x"], False
        seen: list = []

        def provenance(self):
            return {"encoder": "fakeface", "weights_hash": "w0", "modality": "face"}

        def encode(self, batch):
            self.seen.extend(b.crops.copy() for b in batch)
            return [Encoded(layers={"x": b.crops.reshape(-1)[:4].astype(np.float32)}) for b in batch]

    inner = FakeFace()
    aug = AugmentedEncoder(inner, parse_augment("video:cutout=0.5,seed=2,name=cut"))
    crops = np.full((2, 32, 32, 3), 200, np.uint8)
    aug.encode([FaceInput("clip", crops)])
    assert aug.name == "fakeface+cut" and (inner.seen[0] == 0).sum() >= 16 * 16 * 3 * 2  # a 16x16 hole per frame
    p = aug.provenance()
    assert p["encoder"] == "fakeface+cut" and p["clean_weights_hash"] == "w0" and p["weights_hash"] != "w0"
    assert p["augment"] == "video:cutout=0.5,seed=2,name=cut" and p["augment_seed"] == 2
    assert aug.layers == ["x"] and aug.modality == "face"  # everything else is the wrapped encoder's
    from emo.extract.augment import NoiseAugment

    with pytest.raises(AugmentError, match="needs an audio encoder"):
        AugmentedEncoder(inner, NoiseAugment(bank=None, spec="noise:source=x"))
