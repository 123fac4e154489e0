"""Cross-validated training on preloaded arrays: :func:`train_cv` (arrays in, metrics and
predictions out, no files; what ``emo fuse train`` and ``emo fuse sweep`` call) and its
:class:`CVResult`.

Speed: features are preloaded float32 tensors; each model trains with shuffled minibatches
indexed straight from those tensors (:mod:`emo.fuse.training.minibatch`), AdamW, and early stopping on
the inner validation loss (:func:`emo.fuse.training.fit.fit_model`). The evaluation fold is never used
for training, early stopping or normalisation statistics of the global kind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from emo.fuse.training.minibatch import torch_inputs
from emo.fuse.config import TrainConfig
from emo.fuse.training.fit import average_outputs, class_weight_balanced, diagnostics, fit_model, predict_model
from emo.fuse.training.inputs import FeatureInput, as_inputs
from emo.fuse.training.threads import pinned_threads
from emo.fuse.eval.metrics import evaluate
from emo.fuse.eval.protocols import Fold
from emo.fuse.eval.runcheck import NonFiniteError


@dataclass
class CVResult:
    """What :func:`train_cv` returns.

    Attributes:
        folds: per fold ``{"name", "n_train", "n_val", "n_test", "metrics", "epochs", ...}``.
        summary: ``{"mean": {...}, "std": {...}}`` of the scalar fold metrics.
        pooled: metrics over all out-of-fold predictions together.
        oof: out-of-fold predictions: ``index`` (int, rows of the input arrays), ``fold`` (fold
            position per row) and the outputs (``probs`` (n, C), ``valence`` (n,), ``vad`` (n, 3)).
        test: on ``test_idx``, the fold models' averaged outputs (``index``, outputs, ``metrics``) or None.
        states: per fold, the state dicts of its ``seeds`` models (CPU tensors).
        normalizers: per fold, the fitted :class:`emo.fuse.training.data.Normalizer`.
        diagnostics: per fold, attention means, layer weights, uncertainty weights where applicable.
        threshold_tuning: with ``cfg.tune_threshold`` (multi-label): ``{"threshold"`` (the chosen ζ,
            used for every metric above), ``"given"``, ``"metric"``, ``"grid"``, ``"rows"`` (inner-validation
            predictions it was tuned on), ``"validation_metrics"}``; else None.
        protocol: the run's protocol record (:func:`emo.fuse.eval.protocols.protocol_record`), set by
            :func:`emo.fuse.training.train.train`; printed as the table's first line.
        warnings: fold and result warnings (class names, degenerate results), printed under the table.
        label: which result the table shows (``repeat 1 of 3 (seed 0)``) when there are several.
    """

    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    pooled: dict[str, Any]
    oof: dict[str, np.ndarray]
    test: dict[str, Any] | None
    states: list[list[dict]]
    normalizers: list
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    threshold_tuning: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    label: str = ""


def fold_inputs(blocks, inputs, fold: Fold, normalize: str, base_norm, speakers, device: str, xs_shared=None):
    """The model inputs of one fold: ``(normalizer, tensors)``. Global statistics come from the fold's
    training + inner-validation rows only (never its evaluation rows); speaker statistics from
    ``base_norm`` (fold independent); with ``normalize="none"`` the shared ``xs_shared`` is reused.
    """
    from emo.fuse.training.data import Normalizer

    norm = Normalizer(normalize)
    if xs_shared is not None:
        return norm, xs_shared
    norm.global_ = Normalizer("global").fit(blocks, np.concatenate([fold.train, fold.val])).global_
    norm.speaker = base_norm.speaker
    return norm, torch_inputs(norm.transform(blocks, speakers), inputs, device)


def train_cv(blocks: dict[str, np.ndarray], inputs: Iterable[FeatureInput | Mapping[str, Any]], y: dict[str, np.ndarray], folds: list[Fold],
             cfg: TrainConfig, n_classes: int = 0, speakers: list[str | None] | None = None,
             test_idx: np.ndarray | None = None, progress: Callable[[str], None] | None = None,
             fold_cache: Any = None) -> CVResult:
    """Cross-validated training on preloaded arrays (the Python API behind ``emo fuse train``; cheap
    enough to call in a loop for sweeps).

    Args:
        blocks: encoder name → float32 (N, L, D) features, or :class:`emo.fuse.training.data.Frames` (sequences
            (T_i, L, D)) for inputs with ``frames`` true (un-normalised; normalisation is fitted per fold).
        inputs: one :class:`emo.fuse.training.inputs.FeatureInput` per encoder (or dicts with ``name``,
            ``modality``, ``layers``, ``dim``, optional ``frames``), fixing the input order.
        y: labels over the same N rows (see :func:`emo.fuse.training.data.targets`); rows used by folds must have them.
        folds: from :mod:`emo.fuse.eval.protocols`; indices into the N rows.
        cfg: :class:`TrainConfig`.
        n_classes: C for discrete tasks.
        speakers: speaker per row (needed for ``normalize="speaker"``).
        test_idx: rows of a predefined held-out test set; the fold models' outputs are averaged on it.
        progress: optional callable receiving one line per finished fold.
        fold_cache: optional :class:`emo.fuse.training.resume.FoldCache`: folds it holds are loaded instead of
            trained, and every newly finished fold is saved to it (resumable training).

    Returns:
        :class:`CVResult`.

    Raises:
        ValueError: bad settings (:meth:`TrainConfig.validate`), empty folds, shapes that do not match ``inputs``.
    """
    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))
    cfg.validate()
    with pinned_threads(cfg.threads):  # torch and numpy's / scipy's BLAS pools
        return _train_cv(blocks, as_inputs(inputs), y, folds, cfg, n_classes, speakers, test_idx, progress, fold_cache)


def _train_cv(blocks, inputs: list[FeatureInput], y, folds, cfg, n_classes, speakers, test_idx, progress, fold_cache=None) -> CVResult:
    import torch

    from emo.fuse.training.data import Frames, Normalizer
    from emo.fuse.model.decoders import task_parts
    from emo.fuse.eval.metrics import summarize

    for inp in inputs:
        x = blocks.get(inp.name)
        if x is not None and inp.frames != isinstance(x, Frames):
            raise ValueError(f"features {inp.name!r}: inputs say frames={inp.frames}, "
                             f"but the block is {'Frames' if isinstance(x, Frames) else 'an utterance array'}")
        shape = None if x is None else ((len(x), *x.frame_shape) if isinstance(x, Frames) else x.shape)
        if shape is None or len(shape) != 3 or shape[1] != len(inp.layers) or shape[2] != inp.dim:
            raise ValueError(f"features {inp.name!r}: expected (N, {len(inp.layers)}, {inp.dim}) "
                             f"{'per frame ' if inp.frames else ''}, got {shape}")
    disc = "discrete" in y and task_parts(cfg.task)[0]
    if disc and n_classes < 2:
        raise ValueError("discrete tasks need n_classes >= 2")
    model_args = cfg.model_args(inputs, n_classes)
    base_norm = Normalizer(cfg.normalize)
    if cfg.normalize == "speaker":
        if speakers is None:
            raise ValueError("--normalize speaker needs speaker ids")
        base_norm.fit(blocks, np.arange(len(speakers)), speakers)  # per-speaker stats: fold independent
    needed = {k for k in ("discrete", "valence", "vad") if k in y and (k != "discrete" or disc)}
    needed |= {k for k in ("multihot", "weight", "va", "va_known") if k in y}  # emo.fuse.methods.univa.ROW_KEYS  # issue 14: multi-hot targets, row weights, valence-arousal
    extra = {"correlation": y["correlation"]} if "correlation" in y else {}  # (C, C), not per row
    # without normalisation the model inputs are the same for every fold: convert (and move) them once
    xs_shared = torch_inputs(base_norm.transform(blocks), inputs, cfg.device) if cfg.normalize == "none" else None
    fold_rows, states, norms, diags = [], [], [], []
    oof_parts: list[tuple[np.ndarray, int, dict]] = []
    test_outs = []
    tune = bool(cfg.tune_threshold) and "multihot" in y
    if cfg.tune_threshold and not tune:
        raise ValueError("--tune-threshold applies to --task multilabel only")
    if tune and fold_cache is not None:
        fold_cache = None  # tuning needs every fold's inner-validation outputs: no partial-fold reuse
    val_parts: list[tuple[np.ndarray, np.ndarray]] = []  # (multi-hot, probs) of each fold's inner-validation rows
    for fi, fold in enumerate(folds):
        t0 = time.perf_counter()
        if len(fold.train) == 0 or len(fold.val) == 0 or len(fold.test) == 0:
            raise ValueError(f"fold {fold.name}: empty train/val/test split")
        norm, xs = fold_inputs(blocks, inputs, fold, cfg.normalize, base_norm, speakers, cfg.device, xs_shared)
        sel = lambda rows: [x[torch.as_tensor(rows)] for x in xs]  # noqa: E731
        ysel = lambda rows: {**{k: y[k][rows] for k in needed}, **extra}  # noqa: E731
        if fold_cache is not None and fold_cache.has(fi):  # finished before a kill: reuse, do not retrain
            fold_states, out, fold_test, row, diag = fold_cache.resume(fi, fold.name, len(folds), progress)
            diags.append(diag)
            oof_parts.append((fold.test, fi, out))
            states.append(fold_states)
            norms.append(norm)
            test_outs.extend(fold_test)
            fold_rows.append(row)
            continue
        cw = class_weight_balanced(y["discrete"][fold.train], n_classes) if (cfg.class_weights and "discrete" in needed) else None
        xtr, xva, xte = sel(fold.train), sel(fold.val), sel(fold.test)
        fold_states, outs, infos, fold_test, val_outs = [], [], [], [], []
        for s in range(cfg.seeds):
            try:
                model, info = fit_model(xtr, ysel(fold.train), xva, ysel(fold.val), cfg, model_args, cfg.seed + s, cw)
            except NonFiniteError as e:
                raise NonFiniteError(f"fold {fold.name}: {e}; the fold is stopped and no run is written") from None
            fold_states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            outs.append(predict_model(model, xte))
            if tune:
                val_outs.append(predict_model(model, xva))
            infos.append(info)
            if s == 0:
                diag = diagnostics(model, xtr)
            if test_idx is not None and len(test_idx):
                fold_test.append(predict_model(model, sel(test_idx)))
        test_outs.extend(fold_test)
        out = average_outputs(outs)
        if tune:  # the fold's models on its own inner-validation rows (never its evaluation rows)
            val_parts.append((y["multihot"][fold.val], average_outputs(val_outs)["probs"]))
        metrics = evaluate(out, ysel(fold.test), n_classes, cfg.threshold)
        diag["fits"] = infos
        diags.append(diag)
        oof_parts.append((fold.test, fi, out))
        states.append(fold_states)
        norms.append(norm)
        row = {**fold.as_dict(), "metrics": metrics, "epochs": [i["epochs"] for i in infos], "seconds": round(time.perf_counter() - t0, 3)}
        fold_rows.append(row)
        if fold_cache is not None:
            fold_cache.save(fi, fold_states, out, fold_test, {**row, "diagnostics": diag})
        if progress:  # the metrics are in the final table; one short line per fold here (printed once)
            progress(f"fold {fi + 1}/{len(folds)} {fold.name}: trained in {row['seconds']:.1f} s")
    tuning = None
    if tune:  # ζ from the pooled inner-validation predictions; every metric below uses it
        from dataclasses import replace

        from emo.fuse.methods.multilabel import THRESHOLD_GRID, tune_threshold

        zeta, vm = tune_threshold(np.concatenate([p[1] for p in val_parts]), np.concatenate([p[0] for p in val_parts]) > 0,
                                  THRESHOLD_GRID, "micro_f1")
        tuning = {"threshold": zeta, "given": cfg.threshold, "metric": "micro_f1", "grid": [float(g) for g in THRESHOLD_GRID],
                  "rows": int(sum(len(p[0]) for p in val_parts)), "tuned_on": "inner-validation rows of every fold (pooled)",
                  "validation_metrics": {k: float(v) for k, v in vm.items()}}
        cfg = replace(cfg, threshold=zeta)
        for (test_rows, fi, out), row in zip(oof_parts, fold_rows):
            row["metrics"] = evaluate(out, {k: y[k][test_rows] for k in needed}, n_classes, zeta)
        if progress:
            progress(f"threshold ζ = {zeta:g} (tuned on {tuning['rows']} inner-validation predictions; micro-F1 {vm['micro_f1']:.4f})")
    idx = np.concatenate([p[0] for p in oof_parts])
    oof = {"index": idx, "fold": np.concatenate([np.full(len(p[0]), p[1]) for p in oof_parts])}
    for k in oof_parts[0][2]:
        oof[k] = np.concatenate([p[2][k] for p in oof_parts])
    pooled = evaluate({k: oof[k] for k in ("probs", "valence", "vad") if k in oof}, {k: y[k][idx] for k in needed}, n_classes, cfg.threshold)
    test = None
    if test_idx is not None and len(test_idx):
        tout = average_outputs(test_outs)
        test = {"index": np.asarray(test_idx), **tout}
        if all(np.all(np.isfinite(y[k][test_idx])) if k != "discrete" else np.all(y[k][test_idx] >= 0) for k in needed):
            test["metrics"] = evaluate(tout, {k: y[k][test_idx] for k in needed}, n_classes, cfg.threshold)
    return CVResult(fold_rows, summarize([r["metrics"] for r in fold_rows]), pooled, oof, test, states, norms, diags, tuning)
