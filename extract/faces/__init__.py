"""Face detection and alignment for the visual encoders.

* :class:`FaceCropper` — batched MTCNN (or Haar fallback) over every sampled frame of
  a batch of clips, one speaker face per frame kept consistent over time, aligned by a
  similarity transform onto the ArcFace 5-point template, crops at the encoder's size.
* :class:`FaceTrack` — the result per clip; a clip with no face gives F = 0 (recorded as
  ``no_face`` by the engine, never a crash).
* :data:`DEFAULT_FPS` — frames per second sampled from each clip (2.0).
* :class:`~emo.extract.faces.cache.FaceCache` — optional HDF5 cache of aligned tracks per sample
  (``features/<dataset>/faces.h5``) so several visual encoders share one detection pass.
* :func:`fetch_mtcnn` — downloads and verifies the official MTCNN weights (``emo models fetch mtcnn``).
"""

from emo.extract.faces.cache import FaceCache
from emo.extract.faces.core import DEFAULT_FPS, Detections, FaceError, FaceTrack
from emo.extract.faces.cropper import FaceCropper, select_speaker
from emo.extract.faces.weights import default_mtcnn_dir, fetch_mtcnn

__all__ = ["DEFAULT_FPS", "Detections", "FaceCache", "FaceCropper", "FaceError", "FaceTrack", "default_mtcnn_dir",
           "fetch_mtcnn", "select_speaker"]
