"""Frame tokens (--frame-tokens) and the TextCNN frame encoder (issue 15)."""

from __future__ import annotations

import pytest
import torch

from emo.fuse.model.frames import PackedFrames
from emo.fuse.model.sequence import FrameTokenTransformer, TextCNN, subsample_index

INPUTS = [{"name": "hubert", "modality": "audio", "layers": ["1", "2"], "dim": 6, "frames": True},
          {"name": "clip", "modality": "face", "layers": ["proj"], "dim": 5, "frames": True},
          {"name": "egemaps", "modality": "audio", "layers": ["functionals"], "dim": 4}]


def _batch(t_pad: int, lens_a, lens_v, seed: int = 0, garbage: int = 1):
    g = torch.Generator().manual_seed(seed)
    b = len(lens_a)
    a = torch.randn(b, 12, 2, 6, generator=g)[:, : max(lens_a)]
    v = torch.randn(b, 9, 1, 5, generator=g)[:, : max(lens_v)]
    u = torch.randn(b, 1, 4, generator=g)
    noise = torch.Generator().manual_seed(100 + garbage)

    def pad(x, lens, t):
        out = torch.randn(b, t, *x.shape[2:], generator=noise) * 50  # garbage after every sequence's end
        for r, n in enumerate(lens):
            out[r, :n] = x[r, :n]
        return out, torch.tensor(lens)

    return [pad(a, lens_a, t_pad), pad(v, lens_v, t_pad), u]


def test_subsample_index_even_and_padding_free():
    idx, keep = subsample_index(torch.tensor([10, 2, 4]), 4)
    assert idx[0].tolist() == [0, 2, 5, 7] and keep[0].all()
    assert keep[1].tolist() == [True, True, False, False] and idx[1, :2].tolist() == [0, 1]
    assert idx[2].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("frame_encoder,cap", [("lstm", 64), ("lstm", 3), ("textcnn", 64), ("textcnn", 4)])
def test_frame_tokens_outputs_unchanged_when_padding_changes(frame_encoder, cap):
    torch.manual_seed(0)
    m = FrameTokenTransformer(INPUTS, hidden=16, dropout=0.1, max_tokens=cap, frame_encoder=frame_encoder).eval()
    lens_a, lens_v = [12, 5, 1], [9, 0, 4]
    with torch.no_grad():
        o1 = m(_batch(12, lens_a, lens_v, garbage=1))
        o2 = m(_batch(20, lens_a, lens_v, garbage=2))  # longer padding, different garbage in it
    torch.testing.assert_close(o1[0], o2[0], atol=1e-5, rtol=1e-5)
    n_a = [min(n, cap) for n in lens_a]
    n_v = [min(max(n, 1), cap) for n in lens_v]
    assert o1[1]["tokens"].tolist() == [1 + 2 * a + v + 1 for a, v in zip(n_a, n_v)]  # CLS, 2 layer streams, face, egemaps


def test_frame_tokens_accept_packed_frames_and_train():
    torch.manual_seed(0)
    m = FrameTokenTransformer(INPUTS, hidden=16, max_tokens=8)
    a, v, u = _batch(12, [12, 5, 3], [9, 2, 4])
    pa = PackedFrames(torch.cat([a[0][r, :n] for r, n in enumerate([12, 5, 3])]), torch.tensor([0, 12, 17]), torch.tensor([12, 5, 3]))
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m([pa, v, u])[0], m([a, v, u])[0])
    m.train()
    loss = torch.nn.functional.cross_entropy(torch.nn.Linear(16, 3)(m([pa, v, u])[0]), torch.tensor([0, 1, 2]))
    loss.backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if n.startswith(("encoders.", "proj.", "cls")))


def test_textcnn_kim_settings_and_masking():
    torch.manual_seed(0)
    cnn = TextCNN(6).eval()
    assert cnn.widths == (3, 4, 5) and cnn.out_dim == 300 and all(c.out_channels == 100 for c in cnn.convs)
    x = torch.randn(2, 7, 6)
    lens = torch.tensor([7, 2])
    y1 = cnn(x, lens)
    x2 = torch.cat([x, torch.full((2, 5, 6), 100.0)], dim=1)
    x2[1, 2:] = 100.0  # huge values in row 1's padding must not win the max
    y2 = cnn(x2, lens)
    torch.testing.assert_close(y1, y2)
    assert y1.shape == (2, 300) and torch.all(y1 >= 0)
    single = cnn(torch.randn(1, 1, 6), torch.tensor([1]))
    assert torch.isfinite(single).all()


@pytest.mark.slow
def test_train_cv_with_frame_tokens_and_textcnn():
    import numpy as np

    from emo.fuse.config import TrainConfig
    from emo.fuse.eval.cv import train_cv
    from emo.fuse.training.data import Frames
    from emo.fuse.eval.protocols import Fold

    rng = np.random.default_rng(0)
    n = 48
    y = np.arange(n) % 2
    seqs = [rng.normal(size=(int(rng.integers(3, 30)), 1, 6)).astype(np.float32) + y[i] for i in range(n)]
    blocks = {"mfcc": Frames.from_list(seqs), "egemaps": rng.normal(size=(n, 1, 4)).astype(np.float32)}
    inputs = [{"name": "mfcc", "modality": "audio", "layers": ["stats"], "dim": 6, "frames": True},
              {"name": "egemaps", "modality": "audio", "layers": ["functionals"], "dim": 4}]
    idx = np.arange(n)
    fold = [Fold("f", idx[idx % 4 >= 2], idx[idx % 4 == 1], idx[idx % 4 == 0])]
    for extra in ({"frame_tokens": True, "max_frame_tokens": 8}, {"frame_encoder": "textcnn"},
                  {"frame_tokens": True, "frame_encoder": "textcnn"}):
        cfg = TrainConfig(head="transformer", hidden=16, epochs=15, patience=15, seeds=1, batch_size=16, lr=0.01, threads=1,
                          frames=True, **extra)
        r = train_cv(blocks, inputs, {"discrete": y}, fold, cfg, 2)
        assert r.pooled["accuracy"] > 0.7, extra  # the frames carry the class in their mean
        assert cfg.model_args(inputs, 2).get("frame_tokens", False) == extra.get("frame_tokens", False)
    with pytest.raises(ValueError, match="--frame-tokens needs --frames and --head transformer"):
        TrainConfig(head="afg", frames=True, frame_tokens=True).validate()
    with pytest.raises(ValueError, match="--frame-encoder must be one of"):
        TrainConfig(frame_encoder="gru").validate()
