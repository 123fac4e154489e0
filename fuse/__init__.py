"""Stage 2: fusion heads trained on cached features (``emo fuse``).

Modules: :mod:`~emo.fuse.data` (feature/label loading, normalisation), :mod:`~emo.fuse.heads`
(AFG, attention, transformer, MLP, linear), :mod:`~emo.fuse.decoders` (task decoders, JDEV,
uncertainty loss), :mod:`~emo.fuse.metrics`, :mod:`~emo.fuse.protocols` (CV folds),
:mod:`~emo.fuse.train` (:func:`~emo.fuse.train.train_cv`), :mod:`~emo.fuse.run` (run directories,
:func:`~emo.fuse.run.load_run`). Import the submodules directly; this package imports nothing heavy.
"""
