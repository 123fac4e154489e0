"""Long-audio streaming: windowed decoding and encoders that consume windows give the whole-clip result."""

from __future__ import annotations

import numpy as np
import pytest
from emo.extract.media import load_audio
from emo.extract.streaming import egemaps_stream, iter_audio, mfcc_stream

pytestmark = pytest.mark.slow

_TEMPORAL = {"loudnessPeaksPerSec", "VoicedSegmentsPerSec", "MeanVoicedSegmentLengthSec", "StddevVoicedSegmentLengthSec",
             "MeanUnvoicedSegmentLength", "StddevUnvoicedSegmentLength"}


def assert_egemaps_equal(got: np.ndarray, ref: np.ndarray) -> None:
    """Streamed vs whole-signal eGeMAPSv02 (see :func:`emo.extract.streaming.egemaps_stream`): the 26
    values openSMILE still computes (F0, loudness, temporal) bit for bit; the 62 means and stddev/means
    (running float64 sums of the same frames here) within 1e-6 relative of openSMILE's float32."""
    import opensmile

    names = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals).feature_names
    assert got.shape == ref.shape == (88,)
    own = np.array([n.startswith(("F0semitoneFrom27.5Hz_sma3nz_", "loudness_sma3_")) or n in _TEMPORAL for n in names])
    assert own.sum() == 26 and np.array_equal(got[own], ref[own])
    np.testing.assert_allclose(got[~own], ref[~own], rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def speech(shared):
    """~25 s of real EmoDB speech, 16 kHz float32."""
    files = sorted((shared / "emodb" / "wav").glob("*.wav"))[:8]
    return np.concatenate([load_audio(f, 16000) for f in files]), files[0]


def test_iter_audio_equals_load_audio(shared):
    clip = min((shared / "av").rglob("*.mp4"))
    whole = load_audio(clip, 16000)
    wins = list(iter_audio(clip, 16000, window_seconds=0.7))
    assert all(w.size == int(0.7 * 16000) for w in wins[:-1]) and 0 < wins[-1].size <= int(0.7 * 16000)
    assert np.array_equal(np.concatenate(wins), whole)
    capped = np.concatenate(list(iter_audio(clip, 16000, 0.5, max_seconds=1.2)))
    assert np.array_equal(capped, load_audio(clip, 16000, max_seconds=1.2))


def test_egemaps_stream_equal_to_whole_signal(speech):
    import opensmile

    a, _ = speech
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    ref = smile.process_signal(a, 16000).to_numpy().reshape(-1)
    got = egemaps_stream(smile, (a[i:i + 7919] for i in range(0, a.size, 7919)), ring_seconds=2.0)
    assert_egemaps_equal(got, ref)


def test_mfcc_stream_matches_batch_encoder(speech):
    from emo.extract.encoders.acoustic import MFCCEncoder
    from emo.extract.encoders.base import AudioInput

    a, _ = speech
    ref = MFCCEncoder("mfcc").encode([AudioInput("x", a)])[0].layers["stats"]
    for block in (3000, 37):  # block boundaries anywhere: same frames and deltas
        got = mfcc_stream(lambda: (a[i:i + 12345] for i in range(0, a.size, 12345)), block_frames=block)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_encoders_encode_stream_equal_encode(speech, tmp_path):
    """Every audio encoder's streamed path gives its whole-clip result (eGeMAPS: see assert_egemaps_equal)."""
    import soundfile as sf

    from emo.extract.encoders.acoustic import EGeMAPSEncoder, MFCCEncoder
    from emo.extract.encoders.base import AudioInput
    from emo.extract.encoders.speech import SpeechEncoder
    from emo.extract.streaming import StreamedAudio

    from helpers import tiny_hubert

    a, _ = speech
    wav = tmp_path / "clip.wav"
    sf.write(wav, a, 16000, subtype="FLOAT")
    stream = StreamedAudio(wav, 16000)
    eg = EGeMAPSEncoder("egemaps")
    assert_egemaps_equal(eg.encode_stream("x", stream).layers["functionals"], eg.encode([AudioInput("x", a)])[0].layers["functionals"])
    mf = MFCCEncoder("mfcc")
    np.testing.assert_allclose(mf.encode_stream("x", stream).layers["stats"], mf.encode([AudioInput("x", a)])[0].layers["stats"],
                               rtol=1e-4, atol=1e-4)
    hub = SpeechEncoder("hubert_large", str(tiny_hubert(tmp_path / "hub", layers=2)), layers=["1", "2"], chunk_seconds=4.0)
    got, ref = hub.encode_stream("x", stream), hub.encode([AudioInput("x", a)])[0]
    for k in ("1", "2"):
        np.testing.assert_allclose(got.layers[k], ref.layers[k], rtol=1e-4, atol=1e-5)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000)
    assert eg.encode_stream("s", StreamedAudio(silent, 16000)).flags == {"silent"}


def test_engine_streams_long_clips_with_the_same_result(shared, tmp_path, monkeypatch):
    """Clips longer than STREAM_SECONDS go through encode_stream: same stored eGeMAPS values (assert_egemaps_equal)."""
    import emo.extract.streaming as streaming
    from emo.extract.datasets import get_dataset
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.store import FeatureStore

    root = tmp_path / "root"
    root.mkdir()
    for p in sorted((shared / "emodb" / "wav").glob("*.wav"))[:2]:
        (root / p.name).symlink_to(p)
    spec = [parse_encoder_spec("egemaps")]
    whole = Extractor(spec, out=tmp_path / "whole", progress=False).run(get_dataset("folder", root, dataset_name="x"))
    calls = []
    monkeypatch.setattr(streaming, "STREAM_SECONDS", 0.5)  # every EmoDB clip (> 1 s) is "long" now
    orig = streaming.egemaps_stream
    monkeypatch.setattr(streaming, "egemaps_stream", lambda *a, **k: calls.append(1) or orig(*a, **k))
    streamed = Extractor(spec, out=tmp_path / "streamed", progress=False).run(get_dataset("folder", root, dataset_name="x"))
    assert whole.n_failed == streamed.n_failed == 0 and len(calls) == 2
    a, b = FeatureStore(tmp_path / "whole" / "x" / "egemaps.h5"), FeatureStore(tmp_path / "streamed" / "x" / "egemaps.h5")
    assert sorted(a.names) == sorted(b.names)
    for x, y in zip(a.read_layer("functionals", names=a.names), b.read_layer("functionals", names=a.names)):
        assert_egemaps_equal(y, x)
