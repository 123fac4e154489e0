"""Stage 2: fusion heads trained on cached features (``emo fuse``).

Modules, roughly from the lower layers up (no import cycles, not even through imports inside functions):

* :mod:`~emo.fuse.inputs` (:class:`~emo.fuse.inputs.FeatureInput`: what a model knows of each input),
  :mod:`~emo.fuse.metrics`,
  :mod:`~emo.fuse.protocols` (CV folds, :func:`~emo.fuse.protocols.make_folds`);
* :mod:`~emo.fuse.data` (feature/label loading, normalisation);
* :mod:`~emo.fuse.frames` (packed frame sequences, the frame LSTM), :mod:`~emo.fuse.heads` (AFG,
  attention, transformer, MLP, linear), :mod:`~emo.fuse.decoders` (task decoders, JDEV),
  :mod:`~emo.fuse.losses` (task losses, uncertainty weighting), :mod:`~emo.fuse.model`
  (:class:`~emo.fuse.model.FusionModel`);
* :mod:`~emo.fuse.config` (:class:`~emo.fuse.config.TrainConfig`), :mod:`~emo.fuse.minibatch`
  (minibatches), :mod:`~emo.fuse.fit` (one model's fit loop), :mod:`~emo.fuse.cv`
  (:func:`~emo.fuse.cv.train_cv`), :mod:`~emo.fuse.report` (tables, ``report.md``, confusion-matrix PNG);
* :mod:`~emo.fuse.run` (run directories, :func:`~emo.fuse.run.load_run`), :mod:`~emo.fuse.train`
  (:func:`~emo.fuse.train.train`: stores in, run directory out), :mod:`~emo.fuse.sweep`,
  :mod:`~emo.fuse.ensemble`, :mod:`~emo.fuse.options` (the options of the fuse commands besides the training settings, ``--config`` files),
  :mod:`~emo.fuse.cli`.

Import the submodules directly; this package imports nothing heavy.
"""
