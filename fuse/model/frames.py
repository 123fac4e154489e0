"""Frame-level inputs: :class:`PackedFrames` (ragged frame sequences of N utterances as torch
tensors, padded per minibatch) and :class:`FrameLSTM` (a length-aware LSTM turning each padded
batch into one (B, H) vector per utterance: the token of a frame-level input).

Used by ``emo fuse train --frames``: :class:`emo.fuse.model.multimodal.FusionModel` builds one
:class:`FrameLSTM` per token of a frame-level input, so every head in :mod:`emo.fuse.model.heads`
works on frame sequences unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class PackedFrames:
    """Frame sequences of N utterances as torch tensors, packed (no padding until a batch is formed).

    Utterance ``i`` is ``data[starts[i] : starts[i] + lengths[i]]`` (T_i, L, D). Indexing with
    rows (int tensor/array or slice) gives a :class:`PackedFrames` sharing ``data``, so selecting
    a minibatch copies nothing; :meth:`padded` then gathers only that batch, padded to its
    longest sequence.

    Attributes:
        data: float32 (F, L, D). starts, lengths: int64 (N,).
    """

    def __init__(self, data: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> None:
        self.data, self.starts, self.lengths = data, starts, lengths

    @classmethod
    def from_frames(cls, frames, device: str | torch.device = "cpu") -> "PackedFrames":
        """From :class:`emo.fuse.training.data.Frames` (numpy) onto ``device``."""
        import numpy as np

        return cls(torch.as_tensor(np.ascontiguousarray(frames.data, dtype=np.float32), device=device),
                   torch.as_tensor(frames.starts, device=device), torch.as_tensor(frames.lengths, device=device))

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, idx) -> "PackedFrames":
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx, device=self.starts.device)
        return PackedFrames(self.data, self.starts[idx], self.lengths[idx])

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (N, T_max, L, D) float32 with zeros after each sequence's end, lengths (N,) int64);
        T_max is the longest sequence of these rows (at least 1)."""
        t = max(int(self.lengths.max()) if len(self) else 0, 1)
        ar = torch.arange(t, device=self.starts.device)
        valid = ar[None, :] < self.lengths[:, None]
        if self.data.shape[0] == 0:
            return self.data.new_zeros((len(self), t, *self.data.shape[1:])), self.lengths
        pos = torch.where(valid, self.starts[:, None] + ar[None, :], torch.zeros((), dtype=torch.long, device=ar.device))
        x = self.data[pos] * valid[..., None, None].to(self.data.dtype)
        return x, self.lengths


FRAME_POOLING = ("mean", "last")


class FrameLSTM(nn.Module):
    """LSTM encoder of a frame sequence → one utterance vector (the token of a frame-level input),
    length-aware by masking: frames after a sequence's end never reach its output.

    The forward LSTM runs over the padded batch; its output at frame t depends on frames ≤ t only,
    so the state at frame T_i - 1 is exact whatever the padding holds. The backward direction is a
    second LSTM over each sequence reversed within its own length (``x[T_i-1], ..., x[0]``, then
    the padding), read the same way. This is exactly a bidirectional LSTM over each sequence, but
    runs as two dense LSTM calls: on CPU a training step (forward + backward) took 0.085 s against
    0.6-0.9 s for ``pack_padded_sequence`` through a bidirectional ``nn.LSTM`` with the same
    weights and the same outputs (batch 32 × 400 frames × 80-d, H = 64, one thread).

    Args:
        dim: D, frame dimension. hidden: H, output dimension (bidirectional: H//2 per direction).
        bidirectional: add the backward LSTM. pooling: ``mean`` (default; mean of the outputs over
            the T_i valid frames) or ``last`` (the final states: forward after frame T_i - 1 and,
            bidirectional, backward after frame 0). On EmoDB MFCC frames (~280 per utterance,
            leave-one-speaker-out, transformer head, H = 64, 30 epochs) ``mean`` reached UAR 0.60
            and ``last`` 0.31; ``last`` learns short synthetic order tasks faster.

    forward(x (B, T, D) float32, lengths (B,) int64) → (B, out_dim). A sequence of length 0 is
    read as its first (padding) frame; :meth:`PackedFrames.padded` makes that a zero frame.

    Raises:
        ValueError: unknown pooling, or ``hidden`` < 2 with ``bidirectional``.
    """

    def __init__(self, dim: int, hidden: int, bidirectional: bool = True, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in FRAME_POOLING:
            raise ValueError(f"unknown frame pooling {pooling!r}; use one of {', '.join(FRAME_POOLING)}")
        if bidirectional and hidden < 2:
            raise ValueError("a bidirectional FrameLSTM needs hidden >= 2")
        per = hidden // 2 if bidirectional else hidden
        self.fwd = nn.LSTM(dim, per, batch_first=True)
        self.bwd = nn.LSTM(dim, per, batch_first=True) if bidirectional else None
        self.pooling = pooling
        self.out_dim = per * (2 if bidirectional else 1)

    def _read(self, lstm: nn.LSTM, x: torch.Tensor, lens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        out, _ = lstm(x)  # (B, T, per); out[:, t] depends on frames <= t only
        if self.pooling == "last":
            return out[torch.arange(out.shape[0], device=out.device), lens - 1]
        return (out * valid.unsqueeze(-1)).sum(1) / lens.to(out.dtype).unsqueeze(1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lens = lengths.to(x.device).clamp(min=1, max=x.shape[1])
        t = torch.arange(x.shape[1], device=x.device)
        valid = t[None, :] < lens[:, None]  # (B, T)
        parts = [self._read(self.fwd, x, lens, valid)]
        if self.bwd is not None:
            rev = torch.where(valid, lens[:, None] - 1 - t[None, :], t[None, :])  # reverse within each length
            parts.append(self._read(self.bwd, torch.gather(x, 1, rev.unsqueeze(-1).expand(-1, -1, x.shape[2])), lens, valid))
        return torch.cat(parts, dim=-1)
