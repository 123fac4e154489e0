"""Shared types of the face stage: the per-clip :class:`FaceTrack`, per-frame :class:`Detections`, errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo.extract.media import DEFAULT_FPS  # noqa: F401 - re-exported: emo.extract.faces.DEFAULT_FPS


class FaceError(RuntimeError):
    """The face stage cannot run (missing or corrupt weights, bad input array, unknown detector)."""


def check_frame(i: int, f: object) -> None:
    """Raise :class:`FaceError` unless ``f`` (frame number ``i``, for the message) is a uint8 RGB (H, W, 3) array."""
    if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
        raise FaceError(f"frame {i}: expected uint8 RGB array (H, W, 3), got "
                        f"{getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}")


@dataclass
class Detections:
    """All faces found in one frame, best-first by detector score.

    Attributes:
        boxes: float32 (K, 4) ``x1, y1, x2, y2`` in pixels of the frame (may extend past the border).
        scores: float32 (K,) detector confidence (MTCNN: O-Net face probability; Haar: 1.0).
        landmarks: float32 (K, 5, 2) ``(x, y)`` pixels: left eye, right eye, nose, mouth left, mouth right
            (left/right as seen in the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        """No face: arrays with K = 0."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class FaceTrack:
    """The speaker's aligned face over one clip.

    Attributes:
        crops: uint8 (F, size, size, 3) RGB aligned crops of the frames where the face was found (F may be 0).
        frame_index: int64 (F,) index into the clip's sampled frames.
        boxes: float32 (F, 4) ``x1, y1, x2, y2`` pixels in the original frame.
        scores: float32 (F,) detector confidence.
        landmarks: float32 (F, 5, 2) ``(x, y)`` pixels: left eye, right eye, nose, mouth left, mouth right
            (Haar: estimated from the box, see :mod:`emo.extract.faces.haar`).
        n_frames: frames examined.
    """

    crops: np.ndarray
    frame_index: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    n_frames: int

    @property
    def no_face(self) -> bool:
        """True when no frame of the clip holds a face (the store's ``no_face`` flag)."""
        return self.crops.shape[0] == 0

    @property
    def detection_rate(self) -> float:
        """Fraction of examined frames with a face, in [0, 1] (0 for a clip with no frames)."""
        return self.crops.shape[0] / self.n_frames if self.n_frames else 0.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4) in ``x1, y1, x2, y2``; returns float (N, M)."""
    import torch
    from torchvision.ops import box_iou as _iou

    return _iou(torch.as_tensor(a, dtype=torch.float32).reshape(-1, 4),
                torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)).numpy()
