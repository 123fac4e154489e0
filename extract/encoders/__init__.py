"""Encoder implementations. Importing this package registers every encoder
(:func:`emo.extract.registry.register_encoder` sits next to each class); torch and the
model libraries load only when an encoder is built."""

from emo.extract.encoders import acoustic, clip, fer, manet, nrc_vad, opensmile_sets, resnet, speech, text  # noqa: F401  (they register)
from emo.extract.encoders import dinov2, emotion2vec, ssl_speech, videomae, whisper  # noqa: F401  (issue 26)
