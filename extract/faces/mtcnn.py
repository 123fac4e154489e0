"""MTCNN face detector, batched across frames (Zhang, Zhang, Li & Qiao, "Joint Face Detection and
Alignment using Multitask Cascaded Convolutional Networks", IEEE SPL 23(10), 2016).

Three cascaded CNNs:

1. **P-Net** (fully convolutional) slides a 12x12 window over an image pyramid
   (scales ``12/min_face * factor**k``, factor 0.709) and proposes boxes with a
   face probability >= 0.6; proposals are merged by NMS (IoU 0.5 per scale,
   0.7 over all scales), corrected by their box regression and squared.
2. **R-Net** scores 24x24 resamplings of the proposals (keep > 0.7), NMS 0.7,
   box regression, squaring.
3. **O-Net** scores 48x48 resamplings (keep > 0.7), predicts five landmarks
   and a last box regression; the final NMS uses the "Min" overlap
   (intersection / smaller area, 0.7) so a box inside another is dropped.

Everything from pyramid to O-Net runs on stacked tensors of a whole batch of
equal-size frames: proposals carry their frame index, crops are resampled with
one :func:`torchvision.ops.roi_align` call (zero outside the frame, like the
original's zero padding; adaptive sampling makes it an area average), and NMS is
one :func:`torchvision.ops.nms` call over all frames (boxes shifted apart per frame,
exactly, so a frame's detections do not depend on the rest of its batch).

Layer names and shapes match the official weights as converted in facenet-pytorch
(``pnet.pt``/``rnet.pt``/``onet.pt``), so those state dicts load strictly. Inputs
are RGB, normalised as ``(x - 127.5) * 0.0078125``; the dense layers of R-Net and
O-Net read the last feature map flattened in (W, H, C) order, the convention the
weights were converted with. Coordinates here are continuous pixels (pixel k covers
[k, k+1)), box width = x2 - x1; the MATLAB original's 1-based "+1" conventions
are not reproduced, so boxes can differ from facenet-pytorch by about one pixel.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from emo.extract.faces.core import Detections, FaceError, check_frame

NORM_MEAN = 127.5
NORM_SCALE = 0.0078125


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C): the flattening order the converted dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: (N, 3, H, W) normalised RGB -> face probability (N, H', W') and box regression (N, 4, H', W').

    H' = ceil((H - 2) / 2) - 4 (stride 2, 12x12 receptive field).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        prob = F.softmax(self.conv4_1(x), dim=1)[:, 1]
        return prob, self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network: (N, 3, 24, 24) -> face probability (N,) and box regression (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return F.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network: (N, 3, 48, 48) -> face probability (N,), box regression (N, 4),
    landmarks (N, 10) as 5 x-offsets then 5 y-offsets, fractions of the box size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


# ---------------------------------------------------------------------------
# Box helpers (continuous pixel coordinates, x1 y1 x2 y2)
# ---------------------------------------------------------------------------


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Bounding-box regression (Zhang et al. 2016, Sec. II-B, Eq. 2): offsets are fractions of width/height."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
    return boxes + reg * wh


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square of side max(w, h) about its centre."""
    c = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = (boxes[:, 2:4] - boxes[:, 0:2]).amax(dim=1, keepdim=True) / 2
    return torch.cat([c - half, c + half], dim=1)


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with the "Min" overlap: intersection / min(area_i, area_j) > ``threshold`` suppresses.

    MTCNN's last stage uses it so a small box nested in a larger face box is removed
    (torchvision only has IoU-NMS). Boxes of different ``groups`` (frame indices) never
    suppress each other.

    Args:
        boxes: float (N, 4); scores: float (N,); groups: int (N,).

    Returns:
        int64 indices of kept boxes, by decreasing score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    g = groups[order]
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9)
    suppress = ((overlap > threshold) & (g[:, None] == g[None, :])).cpu().numpy()
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= suppress[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


# ---------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------


class MTCNN(nn.Module):
    """The MTCNN cascade with batched inference.

    Args:
        weights: directory holding ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (loaded with
            ``torch.load(..., weights_only=True)`` and ``load_state_dict(strict=True)``);
            ``None`` leaves random weights (tests of shapes only).
        min_face: smallest face searched, in pixels of the frame as seen by the detector.
        thresholds: face-probability thresholds of P-Net, R-Net, O-Net.
        factor: pyramid scale step.
        nms: IoU thresholds (P-Net within a scale, P-Net over scales, R-Net), and the
            O-Net "Min" threshold.
        detect_side: frames whose longer side exceeds this are downscaled to it (area
            average, on the stacked batch) before the cascade, and boxes/landmarks mapped
            back to full-frame pixels; the smallest face found is then
            ``min_face * longer_side / detect_side`` frame pixels. ``None``: no downscaling.
            Keeps 1080p cheap (a 1920x1080 frame is searched at 640x360).
        device: torch device string.

    Raises:
        FaceError: a weight file is missing, unreadable or does not fit the architecture.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None,
        min_face: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        nms: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7),
        detect_side: int | None = 640,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_face, self.thresholds, self.factor, self.nms_thr = float(min_face), thresholds, factor, nms
        self.detect_side = detect_side
        if weights is not None:
            d = Path(weights)
            for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
                f = d / f"{name}.pt"
                if not f.is_file():
                    from emo.extract.faces.weights import FETCH_HINT

                    raise FaceError(f"MTCNN weight file {f} not found: {FETCH_HINT}")
                try:
                    sd = torch.load(f, map_location="cpu", weights_only=True)
                    net.load_state_dict(sd, strict=True)
                except Exception as e:
                    raise FaceError(f"{f}: cannot load as an MTCNN {name} state dict ({type(e).__name__}: {e})") from None
        self.eval().requires_grad_(False)
        self.to(device)
        self.device = torch.device(device)

    # -- stages ------------------------------------------------------------

    def _scales(self, h: int, w: int) -> list[float]:
        s = 12.0 / self.min_face
        scales = []
        while min(h, w) * s >= 12:
            scales.append(s)
            s *= self.factor
        return scales

    def _stage1(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = imgs.shape
        boxes, scores, regs, inds = [], [], [], []
        for s in self._scales(h, w):
            hs, ws = int(h * s + 1), int(w * s + 1)
            x = F.interpolate(imgs, size=(hs, ws), mode="area")
            prob, reg = self.pnet((x - NORM_MEAN) * NORM_SCALE)
            mask = prob >= self.thresholds[0]
            idx = mask.nonzero()  # (K, 3): frame, row, col
            if idx.shape[0] == 0:
                continue
            sy, sx = hs / h, ws / w
            y0 = idx[:, 1].to(imgs.dtype) * 2
            x0 = idx[:, 2].to(imgs.dtype) * 2
            b = torch.stack([x0 / sx, y0 / sy, (x0 + 12) / sx, (y0 + 12) / sy], dim=1)
            sc = prob[mask]
            r = reg.permute(0, 2, 3, 1)[mask]
            keep = _batched_nms(b, sc, idx[:, 0], self.nms_thr[0])
            boxes.append(b[keep])
            scores.append(sc[keep])
            regs.append(r[keep])
            inds.append(idx[keep, 0])
        if not boxes:
            return torch.zeros(0, 4, device=imgs.device), torch.zeros(0, dtype=torch.long, device=imgs.device)
        b, sc, r, ii = torch.cat(boxes), torch.cat(scores), torch.cat(regs), torch.cat(inds)
        keep = _batched_nms(b, sc, ii, self.nms_thr[1])
        return _square(_regress(b[keep], r[keep])), ii[keep]

    @staticmethod
    def _crops(imgs: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int) -> torch.Tensor:
        from torchvision.ops import roi_align

        rois = torch.cat([inds[:, None].to(boxes.dtype), boxes], dim=1)
        x = roi_align(imgs, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return (x - NORM_MEAN) * NORM_SCALE

    @torch.inference_mode()
    def detect_tensor(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the cascade on a batch of equal-size frames.

        Args:
            imgs: float32 (N, 3, H, W) RGB in [0, 255] on ``self.device``.

        Returns:
            ``(boxes (K, 4), scores (K,), landmarks (K, 5, 2), frame_index (K,))`` over the whole batch.
        """
        n, _, h, w = imgs.shape
        if self.detect_side and max(h, w) > self.detect_side:
            r = self.detect_side / max(h, w)
            hs, ws = max(12, round(h * r)), max(12, round(w * r))
            boxes, prob, points, inds = self.detect_tensor_at(F.interpolate(imgs, size=(hs, ws), mode="area"))
            sx, sy = w / ws, h / hs
            return boxes * boxes.new_tensor([sx, sy, sx, sy]), prob, points * points.new_tensor([sx, sy]), inds
        return self.detect_tensor_at(imgs)

    @torch.inference_mode()
    def detect_tensor_at(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cascade at the given resolution (no ``detect_side`` downscaling); same I/O as :meth:`detect_tensor`."""
        boxes, inds = self._stage1(imgs)
        empty = (torch.zeros(0, 4, device=imgs.device), torch.zeros(0, device=imgs.device),
                 torch.zeros(0, 5, 2, device=imgs.device), torch.zeros(0, dtype=torch.long, device=imgs.device))
        if boxes.shape[0] == 0:
            return empty
        # stage 2: R-Net
        prob, reg = self.rnet(self._crops(imgs, boxes, inds, 24))
        ok = prob > self.thresholds[1]
        boxes, inds, prob, reg = boxes[ok], inds[ok], prob[ok], reg[ok]
        keep = _batched_nms(boxes, prob, inds, self.nms_thr[2])
        boxes = _square(_regress(boxes[keep], reg[keep]))
        inds = inds[keep]
        if boxes.shape[0] == 0:
            return empty
        # stage 3: O-Net
        prob, reg, lm = self.onet(self._crops(imgs, boxes, inds, 48))
        ok = prob > self.thresholds[2]
        boxes, inds, prob, reg, lm = boxes[ok], inds[ok], prob[ok], reg[ok], lm[ok]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        points = torch.stack([boxes[:, None, 0] + wh[:, None, 0] * lm[:, :5],
                              boxes[:, None, 1] + wh[:, None, 1] * lm[:, 5:]], dim=2)
        boxes = _regress(boxes, reg)
        keep = nms_min(boxes, prob, inds, self.nms_thr[3])
        return boxes[keep], prob[keep], points[keep], inds[keep]

    def detect(self, frames: np.ndarray | list[np.ndarray], batch_pixels: int = 1 << 24) -> list[Detections]:
        """Detect faces in frames of any sizes; frames of equal size are stacked and run together.

        Args:
            frames: uint8 RGB (N, H, W, 3) array, or a list of (H_i, W_i, 3) arrays.
            batch_pixels: at most this many pixels (N * H * W) per stacked batch (memory bound).

        Returns:
            one :class:`Detections` per frame, faces sorted by decreasing score.

        Raises:
            FaceError: a frame is not a uint8 (H, W, 3) array.
        """
        frames = list(frames)
        for i, f in enumerate(frames):
            check_frame(i, f)
        out: list[Detections] = [Detections.empty() for _ in frames]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            step = max(1, batch_pixels // (h * w))
            for k in range(0, len(idx), step):
                chunk = idx[k:k + step]
                x = torch.from_numpy(np.stack([frames[i] for i in chunk])).to(self.device)
                x = x.permute(0, 3, 1, 2).float()
                b, s, p, ii = (t.cpu().numpy() for t in self.detect_tensor(x))
                for j, fi in enumerate(chunk):
                    m = ii == j
                    out[fi] = Detections(b[m].astype(np.float32), s[m].astype(np.float32),
                                         p[m].astype(np.float32))
        return out


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thr: float) -> torch.Tensor:
    """IoU-NMS of many frames in one :func:`torchvision.ops.nms` call, exactly equal to per-frame NMS.

    The usual trick (``torchvision.ops.batched_nms``) shifts each frame's boxes by
    ``group * (max + 1)`` in the boxes' dtype; in float32 that rounds coordinates, and
    MTCNN's grid-aligned P-Net windows have IoUs of exactly 0.5, so results would depend
    on which other frames share the batch. Here the shift is a power of two applied in
    float64 (float32 coordinates stay exactly representable, IoUs are bit-identical), and
    score ties are broken by the boxes' order within their frame (a stable sort), so a
    frame gives the same detections alone or in any batch.

    Returns:
        int64 indices of kept boxes, by decreasing score.
    """
    from torchvision.ops import nms

    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    span = float(b.abs().max()) + 1.0
    shift = 2.0 ** (math.ceil(math.log2(span)) + 1)
    b = b + (groups[order].double() * shift)[:, None]
    rank = torch.arange(b.shape[0], 0, -1, dtype=torch.float64, device=b.device)
    return order[nms(b, rank, thr)]
