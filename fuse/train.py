"""Training fusion heads with cross-validation: :func:`train_cv` (arrays in, metrics and
predictions out, no files) and :func:`train` (stores in, run directory out; what
``emo fuse train`` calls).

Speed: features are preloaded float32 tensors; each model trains with shuffled minibatches
indexed straight from those tensors (no DataLoader), AdamW, and early stopping on the inner
validation loss (patience ``patience`` epochs, best weights restored). The evaluation fold is
never used for training, early stopping or normalisation statistics of the global kind.

Frame-level inputs (``frames=True``) stay packed (:class:`emo.fuse.heads.PackedFrames`) and
are padded per minibatch; minibatches are drawn from length buckets (shuffled rows, sorted by
length within windows of 50 batches, batch order shuffled) so each batch pads little, and
evaluation runs over length-sorted batches of at most :data:`EVAL_ELEMENTS` padded values.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.fuse.protocols import Fold


@dataclass
class TrainConfig:
    """Head, decoder and optimisation settings (the CLI options of ``emo fuse train``).

    ``seeds`` models with seeds ``seed, seed+1, ...`` are trained per fold and their outputs
    averaged (probabilities / regression values). ``epochs`` is the maximum; training stops
    after ``patience`` epochs without a lower inner-validation loss. ``threads``: torch intra-op
    threads while training (0 = auto: 1 for the small-data recipe, whose matrix products are too
    small to split, every available core for the large-data recipe; on a CPU shared with other
    jobs, 1 is often fastest). ``frames``: encoders whose
    store holds frame-level features feed a :class:`emo.fuse.heads.FrameLSTM` (bidirectional
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
        from dataclasses import replace

        import os

        large = n_train >= self.LARGE
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return replace(self, batch_size=self.batch_size or (256 if large else 32),
                       patience=self.patience or (5 if large else 15), seeds=self.seeds or (1 if large else 5),
                       threads=self.threads or (cores if large else 1))

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        from emo.fuse.data import NORMALIZE
        from emo.fuse.decoders import DECODERS, TASKS
        from emo.fuse.heads import FRAME_POOLING, HEADS

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

    def model_args(self, inputs: list[dict], n_classes: int) -> dict[str, Any]:
        """Keyword arguments of :class:`emo.fuse.decoders.FusionModel` (saved in a run's config)."""
        args = {"inputs": [{**{k: inp[k] for k in ("name", "modality", "layers", "dim")}, "frames": bool(inp.get("frames", False))}
                           for inp in inputs],
                "head": self.head, "structure": self.structure, "layer_weights": self.layer_weights,
                "layer_weights_init": self.layer_weights_init, "task": self.task, "n_classes": n_classes,
                "decoder": self.decoder, "hidden": self.hidden, "dropout": self.dropout}
        if any(a["frames"] for a in args["inputs"]):
            args.update(frame_bidirectional=self.frame_bidirectional, frame_pooling=self.frame_pooling)
        return args


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
        normalizers: per fold, the fitted :class:`emo.fuse.data.Normalizer`.
        diagnostics: per fold, attention means, layer weights, uncertainty weights where applicable.
    """

    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    pooled: dict[str, Any]
    oof: dict[str, np.ndarray]
    test: dict[str, Any] | None
    states: list[list[dict]]
    normalizers: list
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


def evaluate(outputs: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int) -> dict[str, Any]:
    """Metrics of model outputs against labels (rows aligned): classification metrics on ``probs``,
    regression metrics prefixed ``valence_`` on ``valence``, :func:`emo.fuse.metrics.vad_metrics`
    prefixed ``vad_`` on ``vad``, and the MER 2023 combined score when both emotion and valence are there."""
    from emo.fuse.metrics import classification_metrics, mer2023_score, regression_metrics, vad_metrics

    m: dict[str, Any] = {}
    if "probs" in outputs:
        m.update(classification_metrics(y["discrete"], outputs["probs"].argmax(1), n_classes))
    if "valence" in outputs:
        m.update({f"valence_{k}": v for k, v in regression_metrics(y["valence"], outputs["valence"]).items()})
    if "vad" in outputs:
        m.update({f"vad_{k}": v for k, v in vad_metrics(y["vad"], outputs["vad"]).items()})
    if "waf" in m and "valence_mse" in m:
        m["mer2023_score"] = mer2023_score(m["waf"], m["valence_mse"])
    return m


#: Most padded values (rows × longest sequence × L × D, float32) per evaluation batch with
#: frame-level inputs: 2**26 values = 256 MiB.
EVAL_ELEMENTS = 1 << 26


def _torch_inputs(blocks: dict[str, Any], inputs: list[dict], device: str):
    """One entry per input: a float32 tensor (N, L, D), or :class:`PackedFrames` for :class:`emo.fuse.data.Frames`."""
    import torch

    from emo.fuse.data import Frames
    from emo.fuse.heads import PackedFrames

    out = []
    for inp in inputs:
        b = blocks[inp["name"]]
        if isinstance(b, Frames):
            out.append(PackedFrames.from_frames(b.compact(), device))
        else:
            out.append(torch.as_tensor(np.ascontiguousarray(b, dtype=np.float32), device=device))
    return out


def _seq_lengths(xs: list):
    """Per row, the summed frame count of the frame-level inputs (int64 tensor), or None without any."""
    from emo.fuse.heads import PackedFrames

    seqs = [x for x in xs if isinstance(x, PackedFrames)]
    if not seqs:
        return None
    return sum(x.lengths.cpu() for x in seqs)


def _eval_batches(xs: list, batch: int = 4096, max_elements: int | None = None) -> list:
    """Row batches for evaluation: consecutive slices of ``batch`` rows for utterance-level inputs;
    with frame-level inputs, rows sorted by (summed) length and cut so each batch's padded frames
    hold at most ``max_elements`` (default :data:`EVAL_ELEMENTS`) values, as int64 index tensors."""
    import torch

    from emo.fuse.heads import PackedFrames

    n = len(xs[0])
    lens = _seq_lengths(xs)
    if lens is None:
        return [slice(s, s + batch) for s in range(0, n, batch)]
    per_frame = max(int(x.data.shape[1] * x.data.shape[2]) for x in xs if isinstance(x, PackedFrames))
    max_frames = max(1, (EVAL_ELEMENTS if max_elements is None else max_elements) // max(per_frame, 1))
    order = torch.argsort(lens, stable=True)
    out, start = [], 0
    longest = lens[order].clamp(min=1)
    while start < n:
        stop = start + 1
        while stop < n and stop - start < batch and (stop - start + 1) * int(longest[stop]) <= max_frames:
            stop += 1
        out.append(order[start:stop])
        start = stop
    return out


def _train_batches(n: int, bs: int, lens, gen) -> list:
    """Shuffled training minibatches (index tensors) for one epoch. Without sequences: a random
    permutation cut into batches of ``bs`` (a last batch of one sample is dropped). With sequence
    lengths ``lens``: rows are shuffled, sorted by length inside windows of 50 batches, cut into
    batches and the batch order is shuffled (length bucketing: little padding per batch)."""
    import torch

    perm = torch.randperm(n, generator=gen)
    stop = n - (1 if n % bs == 1 and n > 1 else 0)
    if lens is None:
        return [perm[s:s + bs] for s in range(0, stop, bs)]
    window = 50 * bs
    parts = []
    for w in range(0, n, window):
        chunk = perm[w:w + window]
        parts.append(chunk[torch.argsort(lens[chunk], stable=True)])
    perm = torch.cat(parts)
    batches = [perm[s:s + bs] for s in range(0, stop, bs)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _scatter(parts: list, batches: list):
    """Concatenate per-batch outputs and put them back in row order."""
    import torch

    out = torch.cat(parts)
    if all(isinstance(b, slice) for b in batches):
        return out
    idx = torch.cat([b.to(out.device) for b in batches])
    res = torch.empty_like(out)
    res[idx] = out
    return res


def predict_model(model, xs: list, batch: int = 4096) -> dict[str, np.ndarray]:
    """Run one model in eval mode over its inputs ((N, L_i, D_i) tensors or :class:`PackedFrames`);
    returns ``probs`` (softmax of the logits), ``valence``, ``vad`` as float32 numpy arrays, rows in input order."""
    import torch

    model.eval()
    batches = _eval_batches(xs, batch)
    parts: dict[str, list] = {}
    with torch.no_grad():
        for b in batches:
            out = model([x[b] for x in xs])
            if "logits" in out:
                parts.setdefault("probs", []).append(torch.softmax(out["logits"], -1))
            for k in ("valence", "vad"):
                if k in out:
                    parts.setdefault(k, []).append(out[k])
    return {k: _scatter(v, batches).cpu().numpy().astype(np.float32) for k, v in parts.items()}


def average_outputs(outs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Mean of several models' outputs, key by key (probabilities averaged, as the MER baseline does)."""
    return {k: np.mean([o[k] for o in outs], axis=0).astype(np.float32) for k in outs[0]}


def fit_model(xs_tr: list, y_tr: dict, xs_va: list, y_va: dict, cfg: TrainConfig, model_args: dict[str, Any],
              seed: int, class_weight: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """Train one :class:`FusionModel` with early stopping on the validation loss.

    Args:
        xs_tr, xs_va: lists, one entry per input: float32 tensors (n, L_i, D_i) or, for frame-level
            inputs, :class:`emo.fuse.heads.PackedFrames` (padded per minibatch, length-bucketed batches).
        y_tr, y_va: numpy labels (``discrete`` int64 (n,), ``valence`` (n,), ``vad`` (n, 3)).
        cfg: optimisation settings; model_args: :meth:`TrainConfig.model_args`.
        seed: torch seed (initialisation, dropout, batch order).
        class_weight: optional (C,) float32 cross-entropy weights.

    Returns:
        (model in eval mode with the best validation weights, info: ``epochs``, ``best_epoch``,
        ``best_val_loss`` and, with uncertainty weighting, ``loss_weights``).
    """
    import torch

    from emo.fuse.decoders import FusionModel, UncertaintyLoss, task_losses

    cfg = cfg.resolve(len(xs_tr[0]))
    torch.manual_seed(seed)
    dev = cfg.device
    model = FusionModel(**model_args).to(dev)
    ty = {k: torch.as_tensor(v, device=dev) for k, v in y_tr.items()}
    vy = {k: torch.as_tensor(v, device=dev) for k, v in y_va.items()}
    with torch.no_grad():  # regression outputs start at the training mean
        dec = model.decoder
        if getattr(dec, "valence", None) is not None and "valence" in ty and cfg.decoder == "separate":
            dec.valence.weight.mul_(0.1)
            dec.valence.bias.fill_(float(ty["valence"].mean()))
        if getattr(dec, "vad", None) is not None:
            dec.vad.weight.mul_(0.1)
            dec.vad.bias.copy_(ty["vad"].mean(0))
        if cfg.decoder == "jdev":
            dec.combine.bias.fill_(float(ty["valence"].mean()))
    unc = UncertaintyLoss().to(dev) if (cfg.loss_weighting == "uncertainty" and cfg.task == "discrete+valence") else None
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name.startswith("pool.") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if unc is not None:
        groups.append({"params": list(unc.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)  # one fused kernel per step (CPU and CUDA)
    cw = torch.as_tensor(class_weight, dtype=torch.float32, device=dev) if class_weight is not None else None
    n = len(xs_tr[0])
    bs = min(cfg.batch_size, n)
    lens = _seq_lengths(xs_tr)
    va_batches = _eval_batches(xs_va) if _seq_lengths(xs_va) is not None else None
    gen = torch.Generator().manual_seed(seed)

    def combine(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if unc is not None:
            return unc(losses["discrete"], losses["valence"])
        return sum(losses.values())

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            if va_batches is None:
                return float(sum(task_losses(model(xs_va), vy).values()))
            total, m = 0.0, len(xs_va[0])  # mean losses, weighted by batch size
            for b in va_batches:
                bd = b.to(dev)
                total += float(sum(task_losses(model([x[b] for x in xs_va]), {k: v[bd] for k, v in vy.items()}).values())) * len(b)
            return total / m

    best, best_state, best_epoch, wait = math.inf, None, 0, 0
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        # a last batch of one sample is dropped (BatchNorm-free heads do not need it, but it is noisy)
        for idx in _train_batches(n, bs, lens, gen):
            idx = idx.to(dev)
            out = model([x[idx] for x in xs_tr])
            loss = combine(task_losses(out, {k: v[idx] for k, v in ty.items()}, cw, cfg.label_smoothing))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = val_loss()
        if v < best - 1e-5:
            best, best_epoch, wait = v, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
            if wait >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    info: dict[str, Any] = {"epochs": epoch, "best_epoch": best_epoch, "best_val_loss": best}
    if unc is not None:
        info["loss_weights"] = list(unc.weights)
    return model, info


def _diagnostics(model, xs: list) -> dict[str, Any]:
    """Mean attention per token and layer weights of a trained model (for inspection and tests)."""
    import torch

    d: dict[str, Any] = {}
    rows = 256 if _seq_lengths(xs) is not None else 4096
    with torch.no_grad():
        out = model([x[:rows] for x in xs])
        att = out["info"].get("attention")
        if att is not None:
            d["attention"] = att.mean(0).cpu().numpy().tolist()
        if len(model.pool):
            d["layer_weights"] = {model.inputs[int(i)]["name"]: m.weight.cpu().numpy().tolist() for i, m in model.pool.items()}
    d["tokens"] = [f"{t.encoder}:{t.layer}" for t in model.tokens]
    return d


def _class_weight(y: np.ndarray, n_classes: int) -> np.ndarray:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    w = np.ones(n_classes, dtype=np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return w


def train_cv(blocks: dict[str, np.ndarray], inputs: list[dict[str, Any]], y: dict[str, np.ndarray], folds: list[Fold],
             cfg: TrainConfig, n_classes: int = 0, speakers: list[str | None] | None = None,
             test_idx: np.ndarray | None = None, progress: Callable[[str], None] | None = None) -> CVResult:
    """Cross-validated training on preloaded arrays (the Python API behind ``emo fuse train``; cheap
    enough to call in a loop for sweeps).

    Args:
        blocks: encoder name → float32 (N, L, D) features, or :class:`emo.fuse.data.Frames` (sequences
            (T_i, L, D)) for inputs with ``frames`` true (un-normalised; normalisation is fitted per fold).
        inputs: one dict per encoder (``name``, ``modality``, ``layers``, ``dim``, optional ``frames``),
            fixing the input order.
        y: labels over the same N rows (see :func:`emo.fuse.data.targets`); rows used by folds must have them.
        folds: from :mod:`emo.fuse.protocols`; indices into the N rows.
        cfg: :class:`TrainConfig`.
        n_classes: C for discrete tasks.
        speakers: speaker per row (needed for ``normalize="speaker"``).
        test_idx: rows of a predefined held-out test set; the fold models' outputs are averaged on it.
        progress: optional callable receiving one line per finished fold.

    Returns:
        :class:`CVResult`.

    Raises:
        ValueError: bad settings (:meth:`TrainConfig.validate`), empty folds, shapes that do not match ``inputs``.
    """
    import torch

    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))
    cfg.validate()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        return _train_cv(blocks, inputs, y, folds, cfg, n_classes, speakers, test_idx, progress)
    finally:
        torch.set_num_threads(prev_threads)


def _train_cv(blocks, inputs, y, folds, cfg, n_classes, speakers, test_idx, progress) -> CVResult:
    import torch

    from emo.fuse.data import Frames, Normalizer
    from emo.fuse.metrics import summarize

    for inp in inputs:
        x = blocks.get(inp["name"])
        if x is not None and bool(inp.get("frames")) != isinstance(x, Frames):
            raise ValueError(f"features {inp['name']!r}: inputs say frames={bool(inp.get('frames'))}, "
                             f"but the block is {'Frames' if isinstance(x, Frames) else 'an utterance array'}")
        shape = None if x is None else ((len(x), *x.frame_shape) if isinstance(x, Frames) else x.shape)
        if shape is None or len(shape) != 3 or shape[1] != len(inp["layers"]) or shape[2] != inp["dim"]:
            raise ValueError(f"features {inp['name']!r}: expected (N, {len(inp['layers'])}, {inp['dim']}) "
                             f"{'per frame ' if inp.get('frames') else ''}, got {shape}")
    disc = "discrete" in y and cfg.task in ("discrete", "discrete+valence")
    if disc and n_classes < 2:
        raise ValueError("discrete tasks need n_classes >= 2")
    model_args = cfg.model_args(inputs, n_classes)
    base_norm = Normalizer(cfg.normalize)
    if cfg.normalize == "speaker":
        if speakers is None:
            raise ValueError("--normalize speaker needs speaker ids")
        base_norm.fit(blocks, np.arange(len(speakers)), speakers)  # per-speaker stats: fold independent
    needed = {k for k in ("discrete", "valence", "vad") if k in y and (k != "discrete" or disc)}
    # without normalisation the model inputs are the same for every fold: convert (and move) them once
    xs_shared = _torch_inputs(base_norm.transform(blocks), inputs, cfg.device) if cfg.normalize == "none" else None
    fold_rows, states, norms, diags = [], [], [], []
    oof_parts: list[tuple[np.ndarray, int, dict]] = []
    test_outs = []
    for fi, fold in enumerate(folds):
        t0 = time.perf_counter()
        if len(fold.train) == 0 or len(fold.val) == 0 or len(fold.test) == 0:
            raise ValueError(f"fold {fold.name}: empty train/val/test split")
        norm = Normalizer(cfg.normalize)
        if xs_shared is not None:
            xs = xs_shared
        else:
            fit_rows = np.concatenate([fold.train, fold.val])
            norm.global_ = Normalizer("global").fit(blocks, fit_rows).global_
            norm.speaker = base_norm.speaker
            xs = _torch_inputs(norm.transform(blocks, speakers), inputs, cfg.device)
        sel = lambda rows: [x[torch.as_tensor(rows)] for x in xs]  # noqa: E731
        ysel = lambda rows: {k: y[k][rows] for k in needed}  # noqa: E731
        cw = _class_weight(y["discrete"][fold.train], n_classes) if (cfg.class_weights and disc) else None
        xtr, xva, xte = sel(fold.train), sel(fold.val), sel(fold.test)
        fold_states, outs, infos = [], [], []
        for s in range(cfg.seeds):
            model, info = fit_model(xtr, ysel(fold.train), xva, ysel(fold.val), cfg, model_args, cfg.seed + s, cw)
            fold_states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            outs.append(predict_model(model, xte))
            infos.append(info)
            if s == 0:
                diag = _diagnostics(model, xtr)
            if test_idx is not None and len(test_idx):
                test_outs.append(predict_model(model, sel(test_idx)))
        out = average_outputs(outs)
        metrics = evaluate(out, ysel(fold.test), n_classes)
        diag["fits"] = infos
        diags.append(diag)
        oof_parts.append((fold.test, fi, out))
        states.append(fold_states)
        norms.append(norm)
        row = {**fold.as_dict(), "metrics": metrics, "epochs": [i["epochs"] for i in infos], "seconds": round(time.perf_counter() - t0, 3)}
        fold_rows.append(row)
        if progress:
            progress(f"{fold.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    idx = np.concatenate([p[0] for p in oof_parts])
    oof = {"index": idx, "fold": np.concatenate([np.full(len(p[0]), p[1]) for p in oof_parts])}
    for k in oof_parts[0][2]:
        oof[k] = np.concatenate([p[2][k] for p in oof_parts])
    pooled = evaluate({k: oof[k] for k in ("probs", "valence", "vad") if k in oof}, {k: y[k][idx] for k in needed}, n_classes)
    test = None
    if test_idx is not None and len(test_idx):
        tout = average_outputs(test_outs)
        test = {"index": np.asarray(test_idx), **tout}
        if all(np.all(np.isfinite(y[k][test_idx])) if k != "discrete" else np.all(y[k][test_idx] >= 0) for k in needed):
            test["metrics"] = evaluate(tout, {k: y[k][test_idx] for k in needed}, n_classes)
    return CVResult(fold_rows, summarize([r["metrics"] for r in fold_rows]), pooled, oof, test, states, norms, diags)


# ---------------------------------------------------------------------------
# From stores to a run directory
# ---------------------------------------------------------------------------

def make_folds(protocol: str, fs, y: dict[str, np.ndarray], rows: np.ndarray, seed: int, test_splits: list[str]) -> tuple[list[Fold], np.ndarray | None]:
    """Folds over ``rows`` (labelled samples of the CV pool) for ``--folds`` = ``K``, ``speaker`` or ``split``;
    indices are into the full sample list. Returns (folds, held-out test rows or None).

    With ``K`` or ``speaker``, samples whose partition is in ``test_splits`` are held out of the CV
    pool and scored by the averaged fold models.

    Raises:
        emo.fuse.protocols.ProtocolError: unusable protocol for the data (named).
    """
    from emo.fuse.protocols import ProtocolError, leave_one_speaker_out, predefined_split, stratified_kfold

    splits = np.asarray([s or "" for s in fs.splits], dtype=object)
    yd = y.get("discrete")
    if protocol == "split":
        folds = predefined_split([fs.splits[i] for i in rows], None if yd is None else yd[rows], test_splits, seed)
        return [Fold(f.name, rows[f.train], rows[f.val], rows[f.test]) for f in folds], None
    is_test = np.isin(splits[rows], test_splits) if test_splits else np.zeros(len(rows), bool)
    pool, test = rows[~is_test], rows[is_test]
    if protocol == "speaker":
        folds = leave_one_speaker_out([fs.speakers[i] for i in pool], seed)
    else:
        try:
            k = int(protocol)
        except ValueError:
            raise ProtocolError(f"--folds must be a number of folds, 'speaker' or 'split', not {protocol!r}") from None
        folds = stratified_kfold(None if yd is None else yd[pool], k, seed, n=len(pool))
    folds = [Fold(f.name, pool[f.train], pool[f.val], pool[f.test]) for f in folds]
    return folds, (test if len(test) else None)


def train(features_dir: str | Path, dataset: str, features: list[str], cfg: TrainConfig, protocol: str = "5",
          out: str | Path | None = None, align: str = "strict", test_splits: list[str] | None = None,
          command: list[str] | None = None, progress: Callable[[str], None] | None = None) -> tuple[CVResult, dict[str, Any]]:
    """Load features and labels, build the protocol's folds, :func:`train_cv`, and write the run directory.

    Args:
        features_dir, dataset, features: see :func:`emo.fuse.data.load_features`.
        cfg: :class:`TrainConfig`. protocol: ``"5"`` (k-fold), ``"speaker"`` or ``"split"``.
        out: run directory (``None``: write nothing). align: ``strict``/``intersect``.
        test_splits: partitions held out as the test set (default for ``split``: ``["test"]``).
        command: argv recorded in the config.

    Returns:
        (result, config).
    """
    from emo.fuse.data import load_features, targets

    cfg.validate()
    fs = load_features(features_dir, dataset, features, align, frames=cfg.frames)
    y, mask = targets(fs.samples, cfg.task, fs.classes)
    rows = np.flatnonzero(mask)
    if test_splits is None:
        test_splits = ["test"] if protocol == "split" else []
    folds, test_idx = make_folds(protocol, fs, y, rows, cfg.seed, test_splits)
    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))  # the run records the settings used
    disc = cfg.task in ("discrete", "discrete+valence")
    n_classes = len(fs.classes) if disc else 0
    result = train_cv(fs.blocks, fs.inputs, y, folds, cfg, n_classes, fs.speakers, test_idx, progress)
    config = {
        "command": command, "dataset": fs.dataset, "features_dir": str(features_dir),
        "feature_specs": [inp["spec"] for inp in fs.inputs], "inputs": fs.inputs,
        "task": cfg.task, "classes": fs.classes if disc else None,
        "model": cfg.model_args(fs.inputs, n_classes), "training": asdict(cfg),
        "protocol": {"folds": protocol, "seed": cfg.seed, "align": align, "test_splits": test_splits,
                     "n_samples": len(fs.names), "n_labelled": int(mask.sum()),
                     "inner_validation": "one training speaker" if protocol == "speaker" else
                     ("dev partition or 10% of train" if protocol == "split" else "stratified 10% of the training folds")},
    }
    if out is not None:
        from emo.fuse.run import save_run

        save_run(out, config, result, fs.names, folds, y)
    return result, config


def results_table(result: CVResult, task: str) -> str:
    """Plain-text table: one row per fold, then mean ± std and pooled out-of-fold metrics."""
    keys = [k for k in ("uar", "accuracy", "waf", "valence_mse", "valence_ccc", "vad_mse", "vad_ccc", "mer2023_score")
            if k in result.summary["mean"]]
    w = max([len(r["name"]) for r in result.folds] + [10])
    lines = [f"{'fold':<{w}}  {'n':>5}  " + "  ".join(f"{k:>13}" for k in keys)]
    for r in result.folds:
        lines.append(f"{r['name']:<{w}}  {r['n_test']:>5}  " + "  ".join(f"{r['metrics'][k]:>13.4f}" for k in keys))
    lines.append(f"{'mean ± std':<{w}}  {'':>5}  " + "  ".join(f"{result.summary['mean'][k]:>6.4f}±{result.summary['std'][k]:.4f}" for k in keys))
    lines.append(f"{'pooled':<{w}}  {len(result.oof['index']):>5}  " + "  ".join(f"{result.pooled[k]:>13.4f}" for k in keys))
    if result.test and "metrics" in result.test:
        lines.append(f"{'test':<{w}}  {len(result.test['index']):>5}  " + "  ".join(f"{result.test['metrics'][k]:>13.4f}" for k in keys))
    return "\n".join(lines)
