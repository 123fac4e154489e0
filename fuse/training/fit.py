"""Training one fusion model: :func:`fit_model` (AdamW, shuffled minibatches, early stopping on
the inner validation loss with the best weights restored), :func:`predict_model` and
:func:`average_outputs` (seed and fold ensembles average probabilities / regression values).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emo.fuse.training.minibatch import eval_batches, scatter, seq_lengths, train_batches
from emo.fuse.config import TrainConfig


def predict_model(model, xs: list, batch: int = 4096) -> dict[str, np.ndarray]:
    """Run one model in eval mode over its inputs ((N, L_i, D_i) tensors or :class:`emo.fuse.model.frames.PackedFrames`);
    returns ``probs`` (softmax of the logits), ``valence``, ``vad`` as float32 numpy arrays, rows in input order."""
    import torch

    model.eval()
    batches = eval_batches(xs, batch)
    parts: dict[str, list] = {}
    with torch.no_grad():
        for b in batches:
            out = model([x[b] for x in xs])
            if "logits" in out:
                parts.setdefault("probs", []).append(torch.softmax(out["logits"], -1))
            for k in ("valence", "vad"):
                if k in out:
                    parts.setdefault(k, []).append(out[k])
    return {k: scatter(v, batches).cpu().numpy().astype(np.float32) for k, v in parts.items()}


def average_outputs(outs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Mean of several models' outputs, key by key (probabilities averaged, as the MER baseline does)."""
    return {k: np.mean([o[k] for o in outs], axis=0).astype(np.float32) for k in outs[0]}


def fit_model(xs_tr: list, y_tr: dict, xs_va: list, y_va: dict, cfg: TrainConfig, model_args: dict[str, Any],
              seed: int, class_weight: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """Train one :class:`emo.fuse.model.multimodal.FusionModel` with early stopping on the validation loss.

    Args:
        xs_tr, xs_va: lists, one entry per input: float32 tensors (n, L_i, D_i) or, for frame-level
            inputs, :class:`emo.fuse.model.frames.PackedFrames` (padded per minibatch, length-bucketed batches).
        y_tr, y_va: numpy labels (``discrete`` int64 (n,), ``valence`` (n,), ``vad`` (n, 3)); with
            ``multihot``/``weight``/``va`` rows (issue 14) the fit is :func:`emo.fuse.methods.univa.soft_fit`.
        cfg: optimisation settings; model_args: :meth:`TrainConfig.model_args`.
        seed: torch seed (initialisation, dropout, batch order).
        class_weight: optional (C,) float32 cross-entropy weights.

    Returns:
        (model in eval mode with the best validation weights, info: ``epochs``, ``best_epoch``,
        ``best_val_loss`` and, with uncertainty weighting, ``loss_weights``).
    """
    import torch

    from emo.fuse.model.losses import UncertaintyLoss, task_losses
    from emo.fuse.model.multimodal import FusionModel
    from emo.fuse.training.stopping import EarlyStopping
    from emo.fuse.methods.univa import soft_fit, uses_soft_fit

    if uses_soft_fit(cfg, y_tr):  # multi-label, UniVA or pseudo-labelled rows: KL on soft targets, row weights
        return soft_fit(xs_tr, y_tr, xs_va, y_va, cfg, model_args, seed)
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
    lens = seq_lengths(xs_tr)
    va_batches = eval_batches(xs_va) if seq_lengths(xs_va) is not None else None
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

    stopping = EarlyStopping(cfg.patience)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        finite = torch.ones((), dtype=torch.bool, device=dev)  # checked once per epoch: no sync per batch
        # a last batch of one sample is dropped (BatchNorm-free heads do not need it, but it is noisy)
        for idx in train_batches(n, bs, lens, gen):
            idx = idx.to(dev)
            out = model([x[idx] for x in xs_tr])
            loss = combine(task_losses(out, {k: v[idx] for k, v in ty.items()}, cw, cfg.label_smoothing))
            finite &= torch.isfinite(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = val_loss()
        if not bool(finite) or not math.isfinite(v):
            from emo.fuse.eval.runcheck import NonFiniteError

            raise NonFiniteError(
                f"the {'training' if not bool(finite) else 'validation'} loss became non-finite (NaN/inf) in epoch {epoch} "
                f"(seed {seed}): inputs too large or a learning rate of {cfg.lr} too high; try --normalize global or a lower --lr")
        if stopping.update(epoch, v, model):
            break
    stopping.restore(model)
    model.eval()
    info: dict[str, Any] = stopping.info(epoch)
    if unc is not None:
        info["loss_weights"] = list(unc.weights)
    return model, info


#: Rows :func:`diagnostics` reads: the first 1024 of utterance-level inputs, 256 of frame-level ones.
#: (4096 until 2026-12: a mean of attention weights needs no more rows; on the benchmark's 5-fold
#: MER-size AFG run the diagnostics took 0.99 s with 4096 rows and 0.25-0.28 s with 1024, measured.)
DIAGNOSTIC_ROWS, DIAGNOSTIC_FRAME_ROWS = 1024, 256


def diagnostics(model, xs: list) -> dict[str, Any]:
    """Mean attention per token (``attention``), layer weights per pooled encoder (``layer_weights``)
    and token names (``tokens``, ``encoder:layer``) of a trained model, on the first rows of ``xs``
    (:data:`DIAGNOSTIC_ROWS`, or :data:`DIAGNOSTIC_FRAME_ROWS` for frame-level inputs; for
    inspection and tests)."""
    import torch

    d: dict[str, Any] = {}
    rows = DIAGNOSTIC_FRAME_ROWS if seq_lengths(xs) is not None else DIAGNOSTIC_ROWS
    with torch.no_grad():
        out = model([x[:rows] for x in xs])
        att = out["info"].get("attention")
        if att is not None:
            d["attention"] = att.mean(0).cpu().numpy().tolist()
        if len(model.pool):
            d["layer_weights"] = {model.inputs[int(i)].name: m.weight.cpu().numpy().tolist() for i, m in model.pool.items()}
    d["tokens"] = [f"{t.encoder}:{t.layer}" for t in model.tokens]
    return d


def class_weight_balanced(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Cross-entropy class weights (C,) float32: scikit-learn's ``balanced`` weights
    ``n / (k · count_c)`` for the classes present in ``y`` (int (n,)), 1 for absent classes."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    w = np.ones(n_classes, dtype=np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return w
