"""Training settings of ``emo fuse train``: :class:`TrainConfig` (head, decoder, optimisation),
and experiment files (:func:`read_config_file`): ``emo fuse train --config exp.yaml`` or
``--config runs/X/config.json``.

Every :class:`TrainConfig` field is an option of ``emo fuse train`` of the same name (``lr`` is
``--lr``, ``frame_bidirectional`` is ``--bidirectional/--unidirectional``) with the same default;
the other options (:data:`RUN_OPTIONS`) say what to train on, how to evaluate and where to write.
``tests/test_fuse_config.py`` fails when the two disagree.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from emo.fuse.inputs import FeatureInput, as_inputs


#: Training recipes (``--recipe``; :func:`emo.fuse.batched.choose_recipe`).
RECIPES = ("auto", "lbfgs", "adamw")


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
    is their token; ``frame_encoder="textcnn"`` uses a :class:`emo.fuse.sequence.TextCNN` (Kim 2014)
    instead. ``frame_tokens`` (transformer head only): every frame of every frame-level input is a
    token of :class:`emo.fuse.sequence.FrameTokenTransformer`, at most ``max_frame_tokens`` per
    stream (even subsampling). ``batched`` (default; ``--sequential`` turns it off): every fold x seed trains
    at once as one batched model (:mod:`emo.fuse.batched`, same semantics as the sequential loop;
    frame-level inputs fall back to the loop with a logged reason). ``optimizer``: ``adamw``
    (minibatches, early stopping) or ``lbfgs`` (full-batch L-BFGS to the optimum of the
    L2-regularised linear probe, :func:`emo.fuse.batched.fit_linear_lbfgs`; the sweep's default;
    other heads use AdamW, with a logged reason). ``afg_scores``: how AFG scores its inputs
    (``concat``: eq. 2 of Wang et al., MER 2023; ``per-input``: emo's earlier form).

    Where the defaults come from: ``label_smoothing=0.1``, ``dropout=0.5`` and ``lr=1e-3`` are
    emo's choices, not the papers' (Wang et al. and Zhao et al. use no label smoothing; Zhao et
    al., MRAC '24, train with lr 1e-4). They stay because ``results/defaults_ablation.json`` shows
    each helps on EmoDB (eGeMAPS, leave-one-speaker-out, AFG, 3 runs of 5 seeds per fold): pooled
    UAR 0.811 ± 0.002 with the defaults vs 0.798 ± 0.004 without label smoothing, 0.771 ± 0.012
    with lr 1e-4 and 0.805 ± 0.001 with dropout 0.2. ``normalize="global"`` and ``weight_decay=1e-2`` are shared with
    ``emo fuse sweep``. A run's ``config.json`` records every field under ``training``.

    ``recipe`` (:func:`emo.fuse.batched.choose_recipe`): ``auto`` (default) trains utterance-level
    inputs that fit in memory with ``lbfgs`` and everything else with ``adamw``. ``lbfgs``: every
    fold's model in one deterministic full-batch L-BFGS solve (:func:`emo.fuse.batched.fit_lbfgs_path`),
    dropout off, one model per fold (``seeds`` when given explicitly), L2 strength ``l2`` (the
    coefficient of ``0.5·||W||²`` on the mean training loss; scikit-learn's ``C = 1/(l2·n_train)``)
    or, with ``l2 = 0``, chosen per fold on its inner-validation rows along a warm-started path
    and refitted on training + inner-validation rows (as ``LogisticRegressionCV``); ``lr``,
    ``batch_size``, ``epochs``, ``patience``, ``dropout`` and ``weight_decay`` then do not apply.
    ``adamw``: minibatch AdamW with early stopping and ``seeds`` models averaged (the recipe for
    frame-level inputs and data that does not fit). The run records the recipe and why
    (``config.json`` ``recipe``, printed).

    ``tune_threshold`` (``--task multilabel``): ζ is chosen on the inner-validation rows of the
    folds instead (:func:`emo.fuse.cv.train_cv`), and the run records the chosen value.

    Issue 14 (:mod:`emo.fuse.semi`): ``threshold`` is the multi-label decision threshold ζ of
    ``task="multilabel"`` (UniVA: 0.18); ``univa`` adds UniVA's VA-driven contrastive losses and η
    prior (eq. 11, weight λ = ``univa_lambda``, positives within ``univa_delta``, temperature
    ``univa_tau``, valence-arousal from ``va_source``: auto, dataset, label or transcript; η weighted by
    ``univa_eta``, 1 in eq. 11, 0 to leave it out).
    """

    head: str = "afg"
    structure: int = 1
    afg_scores: str = "concat"
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
    normalize: str = "global"
    label_smoothing: float = 0.1
    device: str = "cpu"
    threads: int = 0  # 0 = auto (see resolve)
    frames: bool = False
    frame_bidirectional: bool = True
    frame_pooling: str = "mean"
    batched: bool = True
    optimizer: str = "adamw"
    vad_targets: str = "dataset"  # dataset | lexicon (the NRC-VAD of each discrete label; emo.lexicon.bridge; file: train(lexicon=))
    emotion_wheel: str = ""  # MER emotion_wheel/ folder: wheel F1 of multi-label runs (emo.lexicon.wheel)
    threshold: float = 0.18
    tune_threshold: bool = False
    univa: bool = False
    univa_lambda: float = 0.3
    univa_delta: float = 0.1
    univa_tau: float = 0.07
    univa_eta: float = 1.0
    va_source: str = "auto"
    frame_encoder: str = "lstm"
    frame_tokens: bool = False
    max_frame_tokens: int = 64
    recipe: str = "auto"  # auto | lbfgs | adamw (emo.fuse.batched.choose_recipe)
    l2: float = 0.0  # lbfgs recipe: 0 = chosen per fold on the inner-validation rows along emo.fuse.batched.L2_PATH

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
        from emo.fuse.heads import AFG_SCORES, HEADS
        from emo.fuse.sequence import FRAME_ENCODERS

        checks = [
            (self.head in HEADS, f"--head must be one of {', '.join(HEADS)}, not {self.head!r}"),
            (self.structure in (1, 2, 3), f"--structure must be 1, 2 or 3, not {self.structure!r}"),
            (self.afg_scores in AFG_SCORES, f"--afg-scores must be one of {', '.join(AFG_SCORES)}, not {self.afg_scores!r}"),
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
            (self.optimizer in ("adamw", "lbfgs"), f"--optimizer must be adamw or lbfgs, not {self.optimizer!r}"),
            (not self.emotion_wheel or self.task == "multilabel", "--emotion-wheel scores open-vocabulary words: needs --task multilabel"),
            (self.vad_targets in ("dataset", "lexicon"), f"--vad-targets must be dataset or lexicon, not {self.vad_targets!r}"),
            (self.vad_targets == "dataset" or self.task in ("vad", "discrete+vad"),
             "--vad-targets lexicon needs --task vad or discrete+vad"),
            (self.frame_pooling in FRAME_POOLING, f"--frame-pooling must be one of {', '.join(FRAME_POOLING)}, not {self.frame_pooling!r}"),
            (not (self.frames and self.frame_bidirectional and self.hidden < 2), "--frames with a bidirectional LSTM needs --hidden >= 2"),
            (0.0 < self.threshold < 1.0, f"--threshold must be in (0, 1), not {self.threshold}"),
            (0.0 <= self.univa_lambda < 1.0, f"--univa-lambda must be in [0, 1), not {self.univa_lambda}"),
            (self.univa_delta > 0 and self.univa_tau > 0 and self.univa_eta >= 0, "--univa-delta and --univa-tau must be > 0, --univa-eta >= 0"),
            (self.va_source in ("auto", "dataset", "label", "transcript"),
             f"--va-source must be auto, dataset, label or transcript, not {self.va_source!r}"),
            (not self.univa or self.head == "univa", "--univa needs --head univa (per-modality encoders for the contrastive losses)"),
            (not self.univa or self.task in ("discrete", "multilabel"), "--univa needs --task discrete or multilabel"),
            (not (self.class_weights and (self.univa or self.task == "multilabel" or self.head == "univa")),
             "--class-weights is not supported with --task multilabel, --univa or --head univa (KL-divergence training)"),
            (self.frame_encoder in FRAME_ENCODERS, f"--frame-encoder must be one of {', '.join(FRAME_ENCODERS)}, not {self.frame_encoder!r}"),
            (not self.frame_tokens or (self.frames and self.head == "transformer"), "--frame-tokens needs --frames and --head transformer"),
            (self.max_frame_tokens >= 1, "--max-frame-tokens must be >= 1"),
            (self.recipe in RECIPES, f"--recipe must be one of {', '.join(RECIPES)}, not {self.recipe!r}"),
            (self.l2 >= 0 and self.l2 == self.l2, f"--l2 must be >= 0 (0 = chosen on the inner validation rows), not {self.l2}"),
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
        if self.head == "afg":
            args["afg_scores"] = self.afg_scores
        if any(a["frames"] for a in args["inputs"]):
            args.update(frame_bidirectional=self.frame_bidirectional, frame_pooling=self.frame_pooling)
            if self.frame_encoder != "lstm":
                args["frame_encoder"] = self.frame_encoder
            if self.frame_tokens:
                args.update(frame_tokens=True, max_frame_tokens=self.max_frame_tokens)
        return args


#: Options of ``emo fuse train`` that are not :class:`TrainConfig` fields: the data, the
#: evaluation protocol and the output (the keys an experiment file may hold besides the fields).
RUN_OPTIONS = ("dataset", "features", "layers", "features_dir", "folds", "test_split", "train_splits", "align", "out", "repeats", "restart",
               "pseudo_labels", "pseudo_weight", "lexicon", "allow_rare_classes", "label_column", "joint", "augmented", "evaluate_on")


class ConfigFileError(ValueError):
    """An experiment file that cannot be used (unreadable, not a mapping, unknown keys), named in the message."""


def config_keys() -> tuple[str, ...]:
    """Every key an experiment file may hold: :data:`RUN_OPTIONS` and the :class:`TrainConfig` fields."""
    return RUN_OPTIONS + tuple(f.name for f in fields(TrainConfig))


def _from_run_config(d: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The options that reproduce a run from its ``config.json`` (written by :func:`emo.fuse.train.train`):
    dataset, features directory, the feature specs with their layers and sources, the protocol
    and every training setting as the run resolved it (``out`` is not taken over)."""
    proto = d.get("protocol") or {}
    training = d.get("training")
    if not isinstance(training, Mapping) or not isinstance(proto, Mapping):
        raise ConfigFileError(f"{path}: a run config needs 'training' and 'protocol' mappings")
    out: dict[str, Any] = {"dataset": d.get("dataset"), "features": list(d.get("feature_specs") or [])}
    if d.get("features_dir") is not None:
        out["features_dir"] = d["features_dir"]
    for key, opt in (("folds", "folds"), ("align", "align"), ("test_splits", "test_split")):
        if proto.get(key) is not None:
            out[opt] = proto[key]
    pl = d.get("pseudo_labels")
    if isinstance(pl, Mapping) and pl.get("file"):  # issue 14: the run trained with pseudo-labels
        out["pseudo_labels"], out["pseudo_weight"] = pl["file"], pl.get("weight", 0.5)
    univa = d.get("univa")
    if isinstance(univa, Mapping) and (univa.get("va") or {}).get("lexicon"):
        out["lexicon"] = univa["va"]["lexicon"]
    unknown = sorted(set(training) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ConfigFileError(f"{path}: training setting(s) {', '.join(unknown)} unknown to this emo version")
    out.update(training)
    rep = d.get("repeat")
    if isinstance(rep, Mapping) and rep.get("index") == 0 and rep.get("of"):
        out["repeats"] = int(rep["of"])  # the main run of --repeats N: reproduce all N (its repeats/seed-S are single runs)
    if d.get("kind") == "multitask":  # emo.fuse.multitask: the tasks, their columns and the joint module
        out["task"] = d["task"]
        out["label_column"] = [f"{t['name']}={t['column']}" for t in d.get("tasks", [])
                               if t["column"] != t["name"] and not (t["column"] == "discrete" and t["name"] == "emotion")]
        out["joint"] = (d.get("joint") or {}).get("joint", "none")
    aug = d.get("augmentation")
    if isinstance(aug, Mapping):  # emo.fuse.augmented
        out["augmented"] = list(aug.get("augmented") or [])
        if aug.get("evaluate_on") not in (None, "clean"):
            out["evaluate_on"] = aug["evaluate_on"]
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read an experiment file into ``emo fuse train`` option values, keyed by option name
    (underscores: ``features_dir``, ``batch_size``).

    Formats: YAML (``.yaml``/``.yml``, PyYAML ``safe_load``) or JSON (any other suffix). Two layouts:

    * an experiment file: a mapping of option names (``-`` or ``_``) to values, lists for the
      repeatable options (``features``, ``test_split``; a single string is one item), optionally
      with the training settings nested under ``training:``;
    * a run's ``config.json`` (recognised by its ``training`` and ``feature_specs`` keys): the
      options that reproduce that run (:func:`_from_run_config`), the ``--out`` excepted; for
      the main directory of a ``--repeats N`` run, all N repeats (a ``repeats/seed-S/config.json``
      reproduces that one repeat).

    Values are not type-checked here (the CLI converts and validates them like typed options).

    Raises:
        ConfigFileError: the file is missing or unreadable, not a mapping, or has unknown keys
            (named, with the accepted ones).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(f"cannot read config file {path}: {e.strerror or e}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML is a dependency
            raise ConfigFileError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write the file as JSON") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigFileError(f"{path}: invalid YAML ({e})") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigFileError(f"{path}: invalid JSON ({e})") from None
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ConfigFileError(f"{path}: expected a mapping of option names to values, got {type(d).__name__}")
    if "training" in d and "feature_specs" in d:
        return _from_run_config(d, path)
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if k == "training" and isinstance(v, Mapping):
            for k2, v2 in v.items():
                flat[str(k2).replace("-", "_")] = v2
        else:
            flat[str(k).replace("-", "_")] = v
    unknown = sorted(set(flat) - set(config_keys()))
    if unknown:
        raise ConfigFileError(f"{path}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(config_keys())}")
    return flat
