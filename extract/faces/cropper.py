"""Per-clip face tracks: detect (batched over every frame of every clip), keep the speaker, align."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emo.extract.faces.align import DEFAULT_MARGIN, align_face, template_name
from emo.extract.faces.core import Detections, FaceError, FaceTrack, box_iou


def select_speaker(dets: list[Detections], confident: float = 0.95, min_iou: float = 0.3) -> list[int | None]:
    """Choose one face per frame: the speaker, kept consistent over time.

    Rule per frame: when the previously kept box exists and some *confident* detection
    (score >= ``confident``) overlaps it with IoU >= ``min_iou``, keep the confident one
    with the highest IoU (the same person, even if someone else is briefly larger);
    otherwise keep the detection maximising ``score * area`` (the most prominent face).

    Args:
        dets: detections of consecutive frames of one clip.

    Returns:
        per frame, the index of the kept detection, or ``None`` for a frame without faces.
    """
    picks: list[int | None] = []
    prev: np.ndarray | None = None
    for d in dets:
        if len(d) == 0:
            picks.append(None)
            continue
        pick = None
        if prev is not None:
            conf = np.flatnonzero(d.scores >= confident)
            if conf.size:
                iou = box_iou(prev[None], d.boxes[conf])[0]
                if iou.max() >= min_iou:
                    pick = int(conf[int(np.argmax(iou))])
        if pick is None:
            wh = np.clip(d.boxes[:, 2:] - d.boxes[:, :2], 0, None)
            pick = int(np.argmax(d.scores * wh[:, 0] * wh[:, 1]))
        picks.append(pick)
        prev = d.boxes[pick]
    return picks


class FaceCropper:
    """Detect, select and align the speaker's face in every sampled frame of a batch of clips.

    Args:
        detector: ``"mtcnn"`` (default; needs weights) or ``"haar"`` (OpenCV cascade, no download).
        weights: MTCNN weights directory (``pnet.pt``, ``rnet.pt``, ``onet.pt``); default
            ``$EMO_HOME/models/mtcnn`` or ``~/.cache/emo/models/mtcnn``.
        device: torch device for MTCNN (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        size: side of the output crops in pixels (the visual encoder's input size).
        **opts: ``margin`` (alignment template margin, default 0.2), ``min_face`` (px, 20),
            ``detect_side`` (px, 640: larger frames are searched as if downscaled to it),
            ``thresholds`` (MTCNN, (0.6, 0.7, 0.7)), ``factor`` (0.709), ``batch_pixels``
            (pixels per stacked detection batch, 2**24), ``confident`` (0.95) and ``min_iou``
            (0.3) for :func:`select_speaker`.

    Raises:
        FaceError: unknown detector or option; MTCNN weights missing (the message says to run
            ``emo models fetch mtcnn``, pass ``--mtcnn-weights DIR`` or use ``--face-detector haar``).
    """

    _OPTS = {"margin", "min_face", "detect_side", "thresholds", "factor", "batch_pixels", "confident", "min_iou"}

    def __init__(self, detector: str = "mtcnn", weights: str | os.PathLike | None = None, device: str = "cpu",
                 size: int = 224, **opts: Any) -> None:
        unknown = set(opts) - self._OPTS
        if unknown:
            raise FaceError(f"FaceCropper: unknown option(s) {sorted(unknown)}; known: {sorted(self._OPTS)}")
        self.detector_name = detector
        self.size = int(size)
        self.margin = float(opts.get("margin", DEFAULT_MARGIN))
        self.batch_pixels = int(opts.get("batch_pixels", 1 << 24))
        self.confident = float(opts.get("confident", 0.95))
        self.min_iou = float(opts.get("min_iou", 0.3))
        min_face = opts.get("min_face", 20)
        detect_side = opts.get("detect_side", 640)
        self.weights_dir: Path | None = None
        self._hash = ""
        if detector == "mtcnn":
            from emo.extract.faces.mtcnn import MTCNN
            from emo.extract.faces.weights import default_mtcnn_dir, verify_mtcnn

            if device.startswith("cuda"):
                import torch

                if not torch.cuda.is_available():
                    raise FaceError(f"--device {device} requested but CUDA is not available on this machine")
            d = Path(weights) if weights is not None else default_mtcnn_dir()
            official = verify_mtcnn(d)  # raises FaceError (with the fetch hint) on a missing directory or file
            if not all(official.values()):
                import warnings

                odd = [n for n, ok in official.items() if not ok]
                warnings.warn(f"MTCNN weights in {d} differ from the official ones ({', '.join(odd)}); "
                              "using them (their hash is recorded as provenance)", stacklevel=2)
            self.weights_dir = d
            from emo.extract.types import hash_weights

            self._hash = hash_weights(d)
            self._det = MTCNN(d, min_face=min_face, thresholds=tuple(opts.get("thresholds", (0.6, 0.7, 0.7))),
                              factor=float(opts.get("factor", 0.709)), detect_side=detect_side, device=device)
        elif detector == "haar":
            from emo.extract.faces.haar import HaarDetector

            self._det = HaarDetector(min_face=int(min_face), detect_side=detect_side)
        else:
            raise FaceError(f"unknown face detector {detector!r}: use 'mtcnn' or 'haar'")

    def detect(self, frames: np.ndarray | list[np.ndarray]) -> list[Detections]:
        """All faces of each frame (uint8 RGB (H, W, 3) each; sizes may differ), frames batched by size."""
        if self.detector_name == "mtcnn":
            return self._det.detect(frames, batch_pixels=self.batch_pixels)
        return self._det.detect(frames)

    def process(self, clips: list[np.ndarray]) -> list[FaceTrack]:
        """One :class:`FaceTrack` per clip.

        Args:
            clips: uint8 RGB arrays (T_i, H_i, W_i, 3), frames already sampled (see
                :data:`~emo.extract.faces.DEFAULT_FPS`); sizes differ between clips. The
                frames of all clips go through the detector together, stacked by frame size.

        Returns:
            per clip, the aligned crops of the frames where the speaker's face was found;
            a clip with no face anywhere gives F = 0 (the caller records ``no_face``).

        Raises:
            FaceError: a clip is not a uint8 (T, H, W, 3) array.
        """
        frames: list[np.ndarray] = []
        for c, clip in enumerate(clips):
            if not isinstance(clip, np.ndarray) or clip.ndim != 4 or clip.shape[3] != 3 or clip.dtype != np.uint8:
                raise FaceError(f"clip {c}: expected uint8 RGB array (T, H, W, 3), got "
                                f"{getattr(clip, 'dtype', type(clip).__name__)} {getattr(clip, 'shape', '')}")
            for t in range(clip.shape[0]):
                frames.append(clip[t])
        dets = self.detect(frames) if frames else []
        tracks = []
        start = 0
        for c, clip in enumerate(clips):
            n = clip.shape[0]
            tracks.append(self._track(clip, dets[start:start + n]))
            start += n
        return tracks

    def _track(self, clip: np.ndarray, dets: list[Detections]) -> FaceTrack:
        picks = select_speaker(dets, self.confident, self.min_iou)
        idx = [t for t, p in enumerate(picks) if p is not None]
        s = self.size
        if not idx:
            return FaceTrack(np.zeros((0, s, s, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                             np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32), int(clip.shape[0]))
        boxes = np.stack([dets[t].boxes[picks[t]] for t in idx]).astype(np.float32)
        scores = np.array([dets[t].scores[picks[t]] for t in idx], np.float32)
        lms = np.stack([dets[t].landmarks[picks[t]] for t in idx]).astype(np.float32)
        crops = np.stack([align_face(clip[t], lm, s, self.margin) for t, lm in zip(idx, lms)])
        return FaceTrack(crops, np.asarray(idx, np.int64), boxes, scores, lms, int(clip.shape[0]))

    def provenance(self) -> dict[str, Any]:
        """Store attributes (the engine prefixes them with ``face_``): detector, weights hash
        (16 hex digits, ``""`` for Haar), crop size in pixels, alignment template name."""
        return {
            "detector": self.detector_name,
            "weights_hash": self._hash,
            "size": self.size,
            "template": template_name(self.margin),
        }
