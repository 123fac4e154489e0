"""Fallback face detector with no download: OpenCV's bundled Viola-Jones Haar cascade
(``haarcascade_frontalface_default.xml``; Viola & Jones, CVPR 2001; Lienhart & Maydt, ICIP 2002).

Haar gives boxes only. Scores are 1.0 for every detection (the cascade's level
weights are not probabilities), and the five landmarks are *estimated* from the
box: fixed fractions of its width/height (:data:`LANDMARK_FRACTIONS`), measured as
the mean position of MTCNN's landmarks inside the matching Haar box (IoU > 0.5) over
the 408 frames of the 49 talking-face clips where both fire (``proofs/faces.py``,
``haar_landmark_fractions_measured``). Good for frontal faces; a rotated or turned
head aligns worse than with MTCNN's real landmarks.
"""

from __future__ import annotations

import numpy as np

from emo.extract.faces.core import Detections, FaceError, check_frame

#: (x, y) of left eye, right eye, nose, mouth left, mouth right as fractions of the Haar box.
LANDMARK_FRACTIONS = np.array(
    [[0.317, 0.387], [0.681, 0.375], [0.477, 0.592], [0.356, 0.802], [0.662, 0.793]], dtype=np.float32
)


class HaarDetector:
    """OpenCV Haar cascade face detector.

    Args:
        min_face: smallest face in pixels of the frame as seen by the detector.
        detect_side: frames whose longer side exceeds this are downscaled to it before
            detection (boxes are mapped back to the full frame); ``None`` disables.
        scale_factor, min_neighbors: :meth:`cv2.CascadeClassifier.detectMultiScale` settings.

    Raises:
        FaceError: the cascade file cannot be loaded.
    """

    def __init__(self, min_face: int = 20, detect_side: int | None = 640, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise FaceError(f"{path}: cannot load OpenCV's Haar cascade")
        self.path = path
        self.min_face, self.detect_side = int(min_face), detect_side
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    def detect(self, frames: np.ndarray | list[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per uint8 RGB (H, W, 3) frame, largest face first.

        Raises:
            FaceError: a frame is not a uint8 (H, W, 3) array.
        """
        import cv2

        out = []
        for i, f in enumerate(frames):
            check_frame(i, f)
            h, w = f.shape[:2]
            s = 1.0
            gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
            if self.detect_side and max(h, w) > self.detect_side:
                s = self.detect_side / max(h, w)
                gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            rects = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                  minSize=(self.min_face, self.min_face))
            if len(rects) == 0:
                out.append(Detections.empty())
                continue
            r = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / s
            r = r[np.argsort(-(r[:, 2] * r[:, 3]), kind="stable")]
            boxes = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)
            lm = r[:, None, :2] + LANDMARK_FRACTIONS[None] * r[:, None, 2:]
            out.append(Detections(boxes.astype(np.float32), np.ones(len(r), np.float32), lm.astype(np.float32)))
        return out
