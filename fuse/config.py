"""Training settings of ``emo fuse train``: :class:`TrainConfig` (head, decoder, optimisation)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from emo.fuse.inputs import FeatureInput, as_inputs


@dataclass
class TrainConfig:
    """Head, decoder and optimisation settings (the CLI options of ``emo fuse train``).

    ``seeds`` models with seeds ``seed, seed+1, ...`` are trained per fold and their outputs
    averaged (probabilities / regression values). ``epochs`` is the maximum; training stops
    after ``patience`` epochs without a lower inner-validation loss. ``threads``: torch intra-op
    threads while training (0 = auto: 1 for the small-data recipe, whose matrix products are too
    small to split, every available core for the large-data recipe; on a CPU shared with other
    jobs, 1 is often fastest). ``frames``: encoders whose
    store holds frame-level features feed a :class:`emo.fuse.frames.FrameLSTM` (bidirectional
    per ``frame_bidirectional``, pooled by ``frame_pooling``: ``mean`` (default) or ``last``) whose output
    is their token.
    """

    head: str = "afg"
    structure: int = 1
    layer_weights: bool = False
    layer_weights_init: str = "18"
    task: str = "discrete"
    decoder: str = "separate"
    loss_weighting: str = "fixed"
    class_weights: bool = False
    hidden: int = 256
    dropout: float = 0.5
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 0  # 0 = auto (see resolve)
    patience: int = 0  # 0 = auto
    seeds: int = 0  # 0 = auto
    seed: int = 0
    normalize: str = "none"
    label_smoothing: float = 0.1
    device: str = "cpu"
    threads: int = 0  # 0 = auto (see resolve)
    frames: bool = False
    frame_bidirectional: bool = True
    frame_pooling: str = "mean"

    #: Training-set size from which the large-data recipe applies (``resolve``).
    LARGE = 2000

    def resolve(self, n_train: int) -> "TrainConfig":
        """Fill the ``0`` (auto) settings from the training-set size.

        Small sets (< ``LARGE`` = 2000 training samples, e.g. EmoDB, IEMOCAP sessions): batch 32,
        patience 15, 5 seeds averaged per fold (variance reduction matters most there). Large sets
        (MER 2024's 5,030 clips): batch 256, patience 5, 1 seed, all cores, which trains a 5-fold AFG over
        HuBERT layers 16-21 + CLIP + MANet in seconds; pass explicit values to override either recipe.
        """
        large = n_train >= self.LARGE
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return replace(self, batch_size=self.batch_size or (256 if large else 32),
                       patience=self.patience or (5 if large else 15), seeds=self.seeds or (1 if large else 5),
                       threads=self.threads or (cores if large else 1))

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        from emo.fuse.data import NORMALIZE
        from emo.fuse.decoders import DECODERS, TASKS
        from emo.fuse.frames import FRAME_POOLING
        from emo.fuse.heads import HEADS

        checks = [
            (self.head in HEADS, f"--head must be one of {', '.join(HEADS)}, not {self.head!r}"),
            (self.structure in (1, 2, 3), f"--structure must be 1, 2 or 3, not {self.structure!r}"),
            (self.task in TASKS, f"--task must be one of {', '.join(TASKS)}, not {self.task!r}"),
            (self.decoder in DECODERS, f"--decoder must be one of {', '.join(DECODERS)}, not {self.decoder!r}"),
            (self.decoder != "jdev" or self.task == "discrete+valence", "--decoder jdev needs --task discrete+valence"),
            (self.loss_weighting in ("fixed", "uncertainty"), f"--loss-weighting must be fixed or uncertainty, not {self.loss_weighting!r}"),
            (self.normalize in NORMALIZE, f"--normalize must be one of {', '.join(NORMALIZE)}, not {self.normalize!r}"),
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 0 and self.seeds >= 0 and self.patience >= 0, "--batch-size, --seeds and --patience must be >= 1 (or 0 for auto)"),
            (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.dropout < 1 and 0 <= self.label_smoothing < 1,
             "--lr must be > 0, --weight-decay >= 0, --dropout and --label-smoothing in [0, 1)"),
            (self.hidden >= 1, "--hidden must be >= 1"),
            (self.frame_pooling in FRAME_POOLING, f"--frame-pooling must be one of {', '.join(FRAME_POOLING)}, not {self.frame_pooling!r}"),
            (not (self.frames and self.frame_bidirectional and self.hidden < 2), "--frames with a bidirectional LSTM needs --hidden >= 2"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def model_args(self, inputs: Iterable[FeatureInput | Mapping[str, Any]], n_classes: int) -> dict[str, Any]:
        """Keyword arguments of :class:`emo.fuse.model.FusionModel` (saved in a run's config as JSON:
        ``inputs`` as :meth:`emo.fuse.inputs.FeatureInput.model_dict` dicts)."""
        args = {"inputs": [inp.model_dict() for inp in as_inputs(inputs)],
                "head": self.head, "structure": self.structure, "layer_weights": self.layer_weights,
                "layer_weights_init": self.layer_weights_init, "task": self.task, "n_classes": n_classes,
                "decoder": self.decoder, "hidden": self.hidden, "dropout": self.dropout}
        if any(a["frames"] for a in args["inputs"]):
            args.update(frame_bidirectional=self.frame_bidirectional, frame_pooling=self.frame_pooling)
        return args
