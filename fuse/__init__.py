"""Stage 2: fusion heads trained on cached features (``emo fuse``).

Modules, roughly from the lower layers up (no import cycles, not even through imports inside functions):

* :mod:`~emo.fuse.training.inputs` (:class:`~emo.fuse.training.inputs.FeatureInput`: what a model knows of each input),
  :mod:`~emo.fuse.eval.metrics`,
  :mod:`~emo.fuse.eval.protocols` (CV folds, :func:`~emo.fuse.eval.protocols.make_folds`);
* :mod:`~emo.fuse.training.data` (feature/label loading, normalisation);
* :mod:`~emo.fuse.model.frames` (packed frame sequences, the frame LSTM), :mod:`~emo.fuse.model.heads` (AFG,
  attention, transformer, MLP, linear), :mod:`~emo.fuse.model.decoders` (task decoders, JDEV),
  :mod:`~emo.fuse.model.losses` (task losses, uncertainty weighting), :mod:`~emo.fuse.model.multimodal`
  (:class:`~emo.fuse.model.multimodal.FusionModel`);
* :mod:`~emo.fuse.config` (:class:`~emo.fuse.config.TrainConfig`), :mod:`~emo.fuse.training.minibatch`
  (minibatches), :mod:`~emo.fuse.training.fit` (one model's fit loop), :mod:`~emo.fuse.eval.cv`
  (:func:`~emo.fuse.eval.cv.train_cv`), :mod:`~emo.fuse.eval.report` (tables, ``report.md``, confusion-matrix PNG);
* :mod:`~emo.fuse.run` (run directories, :func:`~emo.fuse.run.load_run`), :mod:`~emo.fuse.training.train`
  (:func:`~emo.fuse.training.train.train`: stores in, run directory out), :mod:`~emo.fuse.eval.sweep`,
  :mod:`~emo.fuse.eval.ensemble`, :mod:`~emo.fuse.options` (the options of the fuse commands besides the training settings, ``--config`` files),
  :mod:`~emo.fuse.cli`.

Import the submodules directly; this package imports nothing heavy.
"""
