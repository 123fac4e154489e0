"""emo: multimodal emotion recognition toolkit.

Stage 1 (`emo.extract`) caches layer-wise utterance embeddings of frozen
foundation models in HDF5; stage 2 (`emo.fuse`) trains small fusion heads on
them; `emo.lexicon` bridges discrete labels and valence-arousal-dominance.
"""

__version__ = "0.1.0"
