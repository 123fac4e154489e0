"""Training settings of ``emo fuse train``: :class:`TrainConfig`, composed of :class:`HeadConfig`
(the model), :class:`OptimConfig` (fitting) and :class:`MethodConfig` (task and paper methods).

Each field declares its command-line option (:func:`emo.optspec.opt`: help, ``--help`` group,
choices); ``emo fuse train`` and ``emo fuse sweep`` are generated from them (:mod:`emo.cliargs`).
The other options of ``emo fuse train`` and experiment files: :mod:`emo.fuse.options`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Literal, Mapping

from emo.optspec import check_choices, lazy_choices, opt
from emo.fuse.training.inputs import FeatureInput, as_inputs

#: Training recipes (``--recipe``; :func:`emo.fuse.training.batched.choose_recipe`).
RECIPES = ("auto", "lbfgs", "adamw")


head_names = lazy_choices("emo.fuse.model.heads", "HEADS")

#: ``--help`` groups of ``emo fuse train`` (typer's ``rich_help_panel``).
INPUTS, HEAD, TASK, OPTIM, PROTOCOL, METHODS, OUTPUT = "Inputs", "Head", "Task", "Optimisation", "Protocol", "Methods", "Output"


@dataclass
class HeadConfig:
    """The model: fusion head, its layer weighting, frame-level encoders and the decoder
    (:meth:`model_args`, :class:`emo.fuse.model.multimodal.FusionModel`)."""

    head: str = opt("afg", "Fusion head (a registered one: emo.fuse.model.heads.register_head; univa: per-modality encoders, for --univa).",
                    group=HEAD, choices=head_names)
    structure: Literal[1, 2, 3] = opt(1, "AFG structure (MER 2023 paper, Fig. 1).", group=HEAD)
    afg_scores: str = opt("concat", "AFG attention scores: concat (eq. 2 of the MER 2023 paper: from all N features concatenated) "
                          "or per-input (each feature scored alone).", group=HEAD, choices=lazy_choices("emo.fuse.model.heads", "AFG_SCORES"))
    layer_weights: bool = opt(False, "Learnable weighted sum over each encoder's layers.", group=HEAD)
    layer_weights_init: str = opt("18", "With --layer-weights: the layer whose weight starts at 1 (others 0; 1/L each when absent).", group=HEAD)
    decoder: str = opt("separate", "Decoder: jdev = joint emotion-valence decoding.", group=HEAD,
                       choices=lazy_choices("emo.fuse.model.decoders", "DECODERS"))
    hidden: int = opt(256, "Hidden width of the head.", group=HEAD)
    dropout: float = opt(0.5, "Dropout of the head.", group=HEAD)
    frames: bool = opt(False, "Encoders whose store has frame-level features (emo extract --frames) feed an LSTM whose output is their token.",
                       group=HEAD, flags=("--frames", "--sequence"))
    frame_bidirectional: bool = opt(True, "With --frames: bidirectional LSTM.", group=HEAD, flags=("--bidirectional/--unidirectional",))
    frame_pooling: str = opt("mean", "With --frames: mean (of the LSTM outputs over the valid frames) or last (final hidden states).",
                             group=HEAD, choices=lazy_choices("emo.fuse.model.frames", "FRAME_POOLING"))
    frame_encoder: str = opt("lstm", "With --frames: lstm or textcnn (Kim 2014: widths 3,4,5 x 100 maps, max-over-time).",
                             group=HEAD, choices=lazy_choices("emo.fuse.model.sequence", "FRAME_ENCODERS"))
    frame_tokens: bool = opt(False, "With --frames --head transformer: attend over every frame token of every modality "
                             "(padding-masked) instead of one pooled token per input.", group=HEAD)
    max_frame_tokens: int = opt(64, "With --frame-tokens: most frames per input stream (longer sequences are evenly subsampled).", group=HEAD)

    def model_args(self, inputs: Iterable[FeatureInput | Mapping[str, Any]], n_classes: int, task: str) -> dict[str, Any]:
        """Keyword arguments of :class:`emo.fuse.model.multimodal.FusionModel` (saved in a run's config as JSON:
        ``inputs`` as :meth:`emo.fuse.training.inputs.FeatureInput.model_dict` dicts)."""
        args = {"inputs": [inp.model_dict() for inp in as_inputs(inputs)],
                "head": self.head, "structure": self.structure, "layer_weights": self.layer_weights,
                "layer_weights_init": self.layer_weights_init, "task": task, "n_classes": n_classes,
                "decoder": self.decoder, "hidden": self.hidden, "dropout": self.dropout}
        if self.head == "afg":
            args["afg_scores"] = self.afg_scores
        if any(a["frames"] for a in args["inputs"]):
            args.update(frame_bidirectional=self.frame_bidirectional, frame_pooling=self.frame_pooling)
            if self.frame_encoder != "lstm":
                args["frame_encoder"] = self.frame_encoder
            if self.frame_tokens:
                args.update(frame_tokens=True, max_frame_tokens=self.max_frame_tokens)
        return args


@dataclass
class OptimConfig:
    """How each model is fitted: optimiser, schedule, seeds, normalisation, threads (the trainers:
    :mod:`emo.fuse.training.fit`, :mod:`emo.fuse.training.batched`)."""

    epochs: int = opt(100, "Maximum epochs (early stopping on the inner validation split).", group=OPTIM)
    lr: float = opt(1e-3, "Learning rate.", group=OPTIM)
    weight_decay: float = opt(1e-2, "AdamW decoupled weight decay; with L-BFGS the L2 coefficient (weight_decay/2)·||W||².", group=OPTIM)
    batch_size: int = opt(0, "0 = auto: 32 below 2000 training samples, else 256.", group=OPTIM)
    patience: int = opt(0, "Epochs without a lower validation loss before stopping (0 = auto: 15 small, 5 large).", group=OPTIM)
    seeds: int = opt(0, "Models per fold, outputs averaged (0 = auto: 5 below 2000 training samples, else 1).", group=OPTIM)
    seed: int = opt(0, "First seed (models use seed, seed+1, ...).", group=OPTIM)
    normalize: str = opt("global", "Feature normalisation: global (training-fold statistics; the default, shared with emo fuse sweep) "
                         "or per speaker.", group=OPTIM, choices=lazy_choices("emo.fuse.training.data", "NORMALIZE"))
    label_smoothing: float = opt(0.1, "Cross-entropy label smoothing.", group=OPTIM)
    class_weights: bool = opt(False, "Balanced class weights in the cross-entropy.", group=OPTIM)
    loss_weighting: Literal["fixed", "uncertainty"] = opt(
        "fixed", "Multi-task loss: fixed or uncertainty (Wang et al., MER 2023: uncertainty-weighted).", group=OPTIM)
    optimizer: Literal["adamw", "lbfgs"] = opt("adamw", "adamw, or lbfgs (full-batch L-BFGS to the optimum; --head linear only).", group=OPTIM)
    batched: bool = opt(True, "Train every fold x seed at once as one batched model (default), or one model after another (the reference loop).",
                        group=OPTIM, flags=("--batched/--sequential",))
    device: str = opt("cpu", "torch device.", group=OPTIM)
    threads: int = opt(0, "torch threads for training (0 = auto: 1 below 2000 training samples, else all cores; 1 is best on a busy CPU).",
                       group=OPTIM)
    recipe: Literal["auto", "lbfgs", "adamw"] = opt(
        "auto", "Training recipe: auto (lbfgs for utterance-level inputs that fit in memory with < 2000 training rows per fold, "
        "else adamw; the run records which and why), lbfgs (every fold in one deterministic full-batch L-BFGS solve, L2 chosen "
        "per fold on the inner-validation rows, dropout off, one model per fold; --lr, --epochs, --batch-size, --patience, "
        "--weight-decay do not apply) or adamw (minibatches, early stopping, --seeds averaged). See docs/training_recipes.md.",
        group=OPTIM)
    l2: float = opt(0.0, "--recipe lbfgs: L2 coefficient of 0.5*||W||^2 on the mean training loss (scikit-learn C = 1/(l2 * n_train)); "
                    "0 = chosen per fold on the inner-validation rows along a warm-started path, then refitted on train + validation.",
                    group=OPTIM)


@dataclass
class MethodConfig:
    """What is predicted and the paper methods on top: the task, multi-label thresholds, VAD
    targets, UniVA (:mod:`emo.fuse.methods.univa`)."""

    task: str = opt("discrete", "discrete | valence | vad | discrete+valence | discrete+vad | multilabel (several emotions per clip: "
                    "KL loss, threshold), or label columns NAME[+NAME...] (emotion = the dataset's emotion label; e.g. emotion+intent: "
                    "one classifier per task, JRBM).", group=TASK)
    vad_targets: Literal["dataset", "lexicon"] = opt(
        "dataset", "VAD targets: dataset (its valence/arousal/dominance columns) or lexicon (the NRC-VAD point of each discrete label, "
        "neutral = origin; the file: --lexicon).", group=TASK)
    emotion_wheel: str = opt("", "--task multilabel: the MER emotion_wheel/ folder (format.csv, synonym.xlsx, wheel1-5.xlsx): word forms "
                             "merged in the class list, emotion-wheel F1 (MER-FG metric) in metrics.json.", group=TASK)
    threshold: float = opt(0.18, "--task multilabel: a label is predicted when its probability exceeds this (UniVA: 0.18).", group=TASK)
    tune_threshold: bool = opt(False, "--task multilabel: choose the threshold on the folds' inner-validation rows (micro-F1 over a grid; "
                               "never on evaluation rows); config.json records it and emo score uses it.", group=TASK)
    univa: bool = opt(False, "UniVA losses (needs --head univa): VA-driven contrastive loss per modality + emotion-correlation prior; "
                      "unlabelled clips with a valence-arousal join training.", group=METHODS, flags=("--univa/--no-univa",))
    univa_lambda: float = opt(0.3, "UniVA eq. 11: L = λ Σ_m L_CL + (1 − λ) L_KL + η.", group=METHODS)
    univa_delta: float = opt(0.1, "UniVA: valence-arousal distance below which two clips are positives.", group=METHODS)
    univa_tau: float = opt(0.07, "UniVA: temperature of the contrastive loss.", group=METHODS)
    univa_eta: float = opt(1.0, "UniVA: weight of the emotion-correlation prior η (1 in eq. 11; 0 leaves it out). With anti-correlated "
                           "classes η favours one class for every clip; see the docs.", group=METHODS)
    va_source: Literal["auto", "dataset", "label", "transcript"] = opt(
        "auto", "Valence-arousal of a clip for --univa: dataset (its columns), label (NRC-VAD of its label) or transcript "
        "(NRC-VAD of its words).", group=METHODS)


@dataclass
class TrainConfig(HeadConfig, OptimConfig, MethodConfig):
    """Head, decoder and optimisation settings (the CLI options of ``emo fuse train``).

    ``seeds`` models with seeds ``seed, seed+1, ...`` are trained per fold and their outputs
    averaged (probabilities / regression values). ``epochs`` is the maximum; training stops
    after ``patience`` epochs without a lower inner-validation loss. ``threads``: torch intra-op
    threads while training (0 = auto: 1 for the small-data recipe, whose matrix products are too
    small to split, every available core for the large-data recipe; on a CPU shared with other
    jobs, 1 is often fastest). ``frames``: encoders whose
    store holds frame-level features feed a :class:`emo.fuse.model.frames.FrameLSTM` (bidirectional
    per ``frame_bidirectional``, pooled by ``frame_pooling``: ``mean`` (default) or ``last``) whose output
    is their token; ``frame_encoder="textcnn"`` uses a :class:`emo.fuse.model.sequence.TextCNN` (Kim 2014)
    instead. ``frame_tokens`` (transformer head only): every frame of every frame-level input is a
    token of :class:`emo.fuse.model.sequence.FrameTokenTransformer`, at most ``max_frame_tokens`` per
    stream (even subsampling). ``batched`` (default; ``--sequential`` turns it off): every fold x seed trains
    at once as one batched model (:mod:`emo.fuse.training.batched`, same semantics as the sequential loop;
    frame-level inputs fall back to the loop with a logged reason). ``optimizer``: ``adamw``
    (minibatches, early stopping) or ``lbfgs`` (full-batch L-BFGS to the optimum of the
    L2-regularised linear probe, :func:`emo.fuse.training.batched.fit_linear_lbfgs`; the sweep's default;
    other heads use AdamW, with a logged reason). ``afg_scores``: how AFG scores its inputs
    (``concat``: eq. 2 of Wang et al., MER 2023; ``per-input``: emo's earlier form).

    Where the defaults come from: ``label_smoothing=0.1``, ``dropout=0.5`` and ``lr=1e-3`` are
    emo's choices, not the papers' (Wang et al. and Zhao et al. use no label smoothing; Zhao et
    al., MRAC '24, train with lr 1e-4). They stay because ``results/defaults_ablation.json`` shows
    each helps on EmoDB (eGeMAPS, leave-one-speaker-out, AFG, 3 runs of 5 seeds per fold): pooled
    UAR 0.811 ± 0.002 with the defaults vs 0.798 ± 0.004 without label smoothing, 0.771 ± 0.012
    with lr 1e-4 and 0.805 ± 0.001 with dropout 0.2. ``normalize="global"`` and ``weight_decay=1e-2`` are shared with
    ``emo fuse sweep``. A run's ``config.json`` records every field under ``training``.

    ``tune_threshold`` (``--task multilabel``): ζ is chosen on the inner-validation rows of the
    folds instead (:func:`emo.fuse.eval.cv.train_cv`), and the run records the chosen value.

    Issue 14 (:mod:`emo.fuse.methods.semi`): ``threshold`` is the multi-label decision threshold ζ of
    ``task="multilabel"`` (UniVA: 0.18); ``univa`` adds UniVA's VA-driven contrastive losses and η
    prior (eq. 11, weight λ = ``univa_lambda``, positives within ``univa_delta``, temperature
    ``univa_tau``, valence-arousal from ``va_source``: auto, dataset, label or transcript; η weighted by
    ``univa_eta``, 1 in eq. 11, 0 to leave it out).
    ``recipe`` (:func:`emo.fuse.training.batched.choose_recipe`, ``docs/training_recipes.md``): ``auto``
    (default) trains utterance-level inputs that fit in memory, below ``LARGE`` training rows per
    fold, with ``lbfgs`` and everything else with ``adamw``. ``lbfgs``: every fold's model in one
    deterministic full-batch L-BFGS solve (:func:`emo.fuse.training.batched.fit_lbfgs_path`), dropout off,
    one model per fold (``seeds`` when given explicitly), L2 strength ``l2`` (the coefficient of
    ``0.5·||W||²`` on the mean training loss; scikit-learn's ``C = 1/(l2·n_train)``) or, with
    ``l2 = 0``, chosen per fold on its inner-validation rows along a warm-started path and refitted
    on training + inner-validation rows (as ``LogisticRegressionCV``); ``lr``, ``batch_size``,
    ``epochs``, ``patience``, ``dropout`` and ``weight_decay`` then do not apply. ``adamw``:
    minibatch AdamW with early stopping and ``seeds`` models averaged. The run records the recipe
    and why (``config.json`` / ``metrics.json`` ``recipe``, printed).

    The fields come from three parts, each a dataclass of its own that a module can take alone:
    :class:`HeadConfig` (the model), :class:`OptimConfig` (fitting) and :class:`MethodConfig`
    (task and paper methods); :meth:`head_part`, :meth:`optim_part` and :meth:`method_part` cut
    them out. The fields stay flat (``cfg.lr``), so a run's ``config.json`` keeps its flat
    ``training`` mapping and runs written before the split load unchanged. Every field is an
    option of ``emo fuse train`` (generated: :mod:`emo.cliargs`).
    """

    #: Training-set size from which the large-data recipe applies (``resolve``).
    LARGE = 2000

    def head_part(self) -> HeadConfig:
        """The :class:`HeadConfig` fields of this config."""
        return _part(HeadConfig, self)

    def optim_part(self) -> OptimConfig:
        """The :class:`OptimConfig` fields of this config."""
        return _part(OptimConfig, self)

    def method_part(self) -> MethodConfig:
        """The :class:`MethodConfig` fields of this config."""
        return _part(MethodConfig, self)

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
        """Every rule on the training settings, in one place: each choice field among its choices
        (:func:`emo.cliargs.check_choices`; the head among the registered ones), ranges, and the
        combinations that exclude each other. Raises ValueError naming the first bad setting."""
        from emo.fuse.model.decoders import TASKS

        check_choices(self)
        checks = [
            (self.task in TASKS, f"--task must be one of {', '.join(TASKS)}, not {self.task!r}"),
            (self.decoder != "jdev" or self.task == "discrete+valence", "--decoder jdev needs --task discrete+valence"),
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 0 and self.seeds >= 0 and self.patience >= 0, "--batch-size, --seeds and --patience must be >= 1 (or 0 for auto)"),
            (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.dropout < 1 and 0 <= self.label_smoothing < 1,
             "--lr must be > 0, --weight-decay >= 0, --dropout and --label-smoothing in [0, 1)"),
            (self.hidden >= 1, "--hidden must be >= 1"),
            (not self.emotion_wheel or self.task == "multilabel", "--emotion-wheel scores open-vocabulary words: needs --task multilabel"),
            (self.vad_targets == "dataset" or self.task in ("vad", "discrete+vad"),
             "--vad-targets lexicon needs --task vad or discrete+vad"),
            (not (self.frames and self.frame_bidirectional and self.hidden < 2), "--frames with a bidirectional LSTM needs --hidden >= 2"),
            (0.0 < self.threshold < 1.0, f"--threshold must be in (0, 1), not {self.threshold}"),
            (0.0 <= self.univa_lambda < 1.0, f"--univa-lambda must be in [0, 1), not {self.univa_lambda}"),
            (self.univa_delta > 0 and self.univa_tau > 0 and self.univa_eta >= 0, "--univa-delta and --univa-tau must be > 0, --univa-eta >= 0"),
            (not self.univa or self.head == "univa", "--univa needs --head univa (per-modality encoders for the contrastive losses)"),
            (not self.univa or self.task in ("discrete", "multilabel"), "--univa needs --task discrete or multilabel"),
            (not (self.class_weights and (self.univa or self.task == "multilabel" or self.head == "univa")),
             "--class-weights is not supported with --task multilabel, --univa or --head univa (KL-divergence training)"),
            (not self.frame_tokens or (self.frames and self.head == "transformer"), "--frame-tokens needs --frames and --head transformer"),
            (self.max_frame_tokens >= 1, "--max-frame-tokens must be >= 1"),
            (self.l2 >= 0 and self.l2 == self.l2, f"--l2 must be >= 0 (0 = chosen on the inner validation rows), not {self.l2}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def model_args(self, inputs: Iterable[FeatureInput | Mapping[str, Any]], n_classes: int) -> dict[str, Any]:  # type: ignore[override]
        """Keyword arguments of :class:`emo.fuse.model.multimodal.FusionModel` for this config's task
        (:meth:`HeadConfig.model_args`)."""
        return HeadConfig.model_args(self.head_part(), inputs, n_classes, self.task)


def _part(cls: type, cfg: Any) -> Any:
    return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def check_run_rules(cfg: TrainConfig, *, repeats: int = 1, pseudo_labels: Any = None, augmented: Iterable[str] = (),
                    evaluate_on: str | None = None, fold_stores: bool = False) -> None:
    """The rules between a run's options and its training settings, in one place (the CLI checks
    them before anything loads, :meth:`emo.fuse.options.RunOptions.validate`; :func:`emo.fuse.training.train.train`
    again for library callers, with ``fold_stores`` = per-fold HLFT stores found).

    Raises:
        ValueError: the first rule broken, naming the options.
    """
    cfg.validate()
    augmenting = bool(list(augmented)) or bool(evaluate_on)
    checks = [
        (repeats >= 1, f"--repeats must be >= 1, got {repeats}"),
        (not (pseudo_labels is not None and cfg.class_weights),
         "--class-weights is not supported with --pseudo-labels (weighted KL-divergence training)"),
        (not (repeats > 1 and augmenting), "--repeats cannot be combined with --augmented/--evaluate-on"),
        (not (augmenting and (pseudo_labels is not None or cfg.univa or fold_stores)),
         "--augmented/--evaluate-on cannot be combined with --pseudo-labels, --univa or per-fold HLFT stores"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
