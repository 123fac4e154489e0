"""Face alignment: a similarity transform from five landmarks onto a standard template.

Template: the ArcFace / InsightFace 5-point template for 112x112 crops (Deng et al.,
"ArcFace", CVPR 2019; ``insightface`` ``arcface_dst``), scaled to the output size and
shrunk about the crop centre by ``1 + margin`` so the crop shows some context around
the face (``margin=0`` gives exactly the ArcFace crop, tight from brows to chin).
The default margin 0.2 keeps forehead, chin and jaw line in view, which CLIP/ViT
style visual encoders expect of a face image.

The transform (rotation, uniform scale, translation) is the least-squares fit of
Umeyama (IEEE TPAMI 13(4), 1991), via :class:`skimage.transform.SimilarityTransform`;
the warp is :func:`cv2.warpAffine` (bilinear, black outside the frame).
"""

from __future__ import annotations

import numpy as np

from emo.extract.faces.core import FaceError

#: ArcFace 112x112 template (x, y): left eye, right eye, nose tip, mouth left, mouth right.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

DEFAULT_MARGIN = 0.2


def template_name(margin: float = DEFAULT_MARGIN) -> str:
    """Name recorded as provenance, e.g. ``arcface112+margin0.20``."""
    return f"arcface112+margin{margin:.2f}"


def template(size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The five template points for a ``size`` x ``size`` crop: float64 (5, 2) pixels.

    ``t = (ARCFACE_112 - 56) * size / 112 / (1 + margin) + size / 2``.

    Raises:
        FaceError: ``size`` < 8 or ``margin`` <= -1.
    """
    if size < 8 or margin <= -1:
        raise FaceError(f"alignment template: need size >= 8 and margin > -1, got size={size}, margin={margin}")
    return (ARCFACE_112 - 56.0) * (size / 112.0) / (1.0 + margin) + size / 2.0


def similarity_matrix(landmarks: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``landmarks`` (5, 2) onto ``dst`` (5, 2).

    Returns:
        float64 (2, 3) affine matrix for :func:`cv2.warpAffine`.

    Raises:
        FaceError: degenerate landmarks (all points equal, non-finite).
    """
    from skimage.transform import SimilarityTransform

    src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(src)) or np.ptp(src, axis=0).max() < 1e-6:
        raise FaceError(f"cannot align: degenerate landmarks {src.tolist()}")
    tf = SimilarityTransform.from_estimate(src, np.asarray(dst, dtype=np.float64))
    if not tf:
        raise FaceError(f"cannot align: similarity estimation failed for landmarks {src.tolist()}")
    return tf.params[:2]


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int = 224,
               margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Warp ``frame`` so ``landmarks`` land on :func:`template` (``size``, ``margin``).

    Args:
        frame: uint8 RGB (H, W, 3).
        landmarks: float (5, 2) pixels (x, y): left eye, right eye, nose, mouth left, mouth right.
        size: output side in pixels (the visual encoder's input size).

    Returns:
        uint8 RGB (size, size, 3).
    """
    import cv2

    m = similarity_matrix(landmarks, template(size, margin))
    return cv2.warpAffine(np.ascontiguousarray(frame), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
