"""Encoders: one module per model family; see :mod:`emo.extract.registry` for the names."""
