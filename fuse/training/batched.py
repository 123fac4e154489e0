"""Fold-parallel training: every fold x seed of a cross-validation (and every cell of a layer
sweep that shares shapes) trained as one batched model.

The small-data recipe trains e.g. 24 folds x 5 seeds = 120 tiny heads. Trained one after the
other, each spends its time in Python's per-minibatch loop, not in arithmetic. Here the K
models' parameters are stacked (:func:`torch.func.stack_module_state`-style: one (K, ...) leaf
tensor per parameter name) and the *existing* :class:`emo.fuse.model.multimodal.FusionModel` is run under
``torch.vmap(torch.func.functional_call)``, so one optimisation step updates all K models:

* **Same models.** Model ``k`` is built exactly as the sequential path builds it
  (``torch.manual_seed(seed_k)``, then ``FusionModel(**model_args)``, the regression biases set
  to its fold's training mean), so the initial weights are identical.
* **Same minibatches.** Each model draws its own epoch permutations from its own
  ``torch.Generator().manual_seed(seed_k)`` exactly like the sequential loop (a random
  permutation cut into batches of ``batch_size``, a last batch of one sample dropped) and gets
  its fold's rows through index tensors; models with fewer batches per epoch, and smaller last
  batches, are padded and masked (a masked step leaves the model, its AdamW moments and its
  step count untouched).
* **Same losses.** Per-model masked means equal to :func:`emo.fuse.model.losses.task_losses`
  (cross-entropy with the same class weights and label smoothing, MSE), the uncertainty
  loss through the same :class:`emo.fuse.model.losses.UncertaintyLoss` module.
* **Same optimiser.** AdamW is elementwise, so AdamW on per-model row views of the stacked
  parameters, gradients and moments, with a step count per model (bias correction per model)
  and the sequential parameter groups (no weight decay on biases, 1-d parameters and layer
  weights), is K independent AdamWs; when every stacked model steps with the same step count,
  one call over the whole stack is the same arithmetic. The kernel is the sequential path's own
  (``torch.optim.AdamW(fused=True)``'s ``torch._fused_adamw_``; Loshchilov & Hutter 2019,
  Algorithm 2), so each model's update is the sequential arithmetic.
* **Same early stopping.** After every epoch each model's inner-validation loss (mean
  cross-entropy + MSE without class weights or smoothing, as the sequential loop) is
  compared with its own best; a model that has waited ``patience`` epochs stops: its
  parameters freeze (no further updates) and its best state is kept. Stopped models leave
  the stack at once, so later epochs cost only what the running models need.

With ``dropout > 0`` the dropout masks come from ``vmap(..., randomness="different")``, a
different random stream than the sequential loop's: results then agree statistically, not
bitwise. With ``dropout = 0`` the per-fold predictions agree to float tolerance
(``tests/test_fuse_batched.py``).

Heads that cannot run batched fall back to the sequential loop with a logged reason
(:func:`batched_unsupported`): frame-level inputs (the :class:`emo.fuse.model.frames.FrameLSTM` pads
each minibatch to its own length and ``nn.LSTM`` has no vmap batching rule), per-fold
speaker normalisation of rows without a speaker, and non-CPU/CUDA devices.

The linear probe also has a full-batch L-BFGS fit (:func:`fit_linear_lbfgs`; convex, no early
stopping), the sweep's default probe.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from emo import compat
from emo.fuse.eval.protocols import Fold
from emo.fuse.eval.runcheck import NonFiniteError
from emo.fuse.training.stopping import improves
from emo.fuse.training.threads import pinned_threads

#: Most gathered input values (models x rows x features, float32) held at once for one chunk of
#: models: 2**26 values = 256 MiB. Larger jobs are split into chunks of models trained in turn.
CHUNK_ELEMENTS = 1 << 26


@dataclass
class Job:
    """One model to train in a batch.

    Attributes:
        train, val: int64 row indices (into the shared inputs) of the training and inner
            validation rows, in the order the sequential path indexes them (sorted).
        seed: torch seed of the model (initialisation, minibatch order, dropout).
        cols: per input, int64 indices into that input's layer axis (``None``: all layers);
            lets sweep cells with different layer windows share one batch.
        norm: per input, ``(mean, std)`` float32 arrays over the selected layers (L_sel, D) of a
            per-model standardisation ``(x - mean) / std`` (``None``: inputs used as they are).
        class_weight: optional float32 (C,) cross-entropy weights.
        model_args: keyword arguments of :class:`emo.fuse.model.multimodal.FusionModel` for this model
            (``None``: the batch's shared ``model_args``). Must give the same parameter shapes.
    """

    train: np.ndarray
    val: np.ndarray
    seed: int
    cols: list[np.ndarray] | None = None
    norm: list[tuple[np.ndarray, np.ndarray]] | None = None
    class_weight: np.ndarray | None = None
    model_args: dict[str, Any] | None = None


@dataclass
class BatchedFit:
    """What :func:`fit_batched` returns: per job (in job order) the trained model (eval mode, best
    inner-validation weights) and its info dict (``epochs``, ``best_epoch``, ``best_val_loss``,
    and ``loss_weights`` with uncertainty weighting), plus timing."""

    models: list[Any]
    infos: list[dict[str, Any]]
    seconds: float
    chunks: int
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def batched_unsupported(cfg, inputs: list[dict], speakers_missing: bool = False, y: dict | None = None) -> str | None:
    """Why a configuration cannot train batched (then the sequential loop runs), or None.

    Args:
        cfg: :class:`emo.fuse.config.TrainConfig`. inputs: the run's input dicts.
        speakers_missing: ``normalize="speaker"`` and some rows lack a speaker (they would be
            normalised with per-fold statistics mixed with per-speaker ones).
    """
    if cfg.frames or any(inp.get("frames", False) if isinstance(inp, dict) else inp.frames for inp in inputs):
        return ("frame-level inputs: the FrameLSTM pads every minibatch to its own longest sequence and "
                "nn.LSTM has no vmap batching rule")
    if getattr(cfg, "task", "discrete") not in ("discrete", "valence", "vad", "discrete+valence", "multilabel"):
        return f"--task {cfg.task} is not wired into the batched trainer yet"
    if getattr(cfg, "task", "") == "multilabel" or getattr(cfg, "head", "") == "univa" or getattr(cfg, "univa", False):
        return "multi-label / UniVA training (soft targets, contrastive losses) runs in the sequential loop"
    if y is not None and any(k in y for k in ("multihot", "weight", "va")):
        return "pseudo-labelled or soft-target rows (row weights, KL loss) run in the sequential loop"
    if cfg.normalize == "speaker" and speakers_missing:
        return "--normalize speaker with samples that have no speaker (per-fold fallback statistics)"
    dev = str(cfg.device)
    if not (dev == "cpu" or dev.startswith("cuda")):
        return f"device {dev!r}: the batched path is tested on cpu and cuda only"
    return None


# ---------------------------------------------------------------------------
# Pieces shared with the sequential loop's semantics
# ---------------------------------------------------------------------------

def epoch_batches(n: int, bs: int, gen) -> list:
    """One epoch's minibatches (int64 index tensors into the n training rows), exactly as the
    sequential loop draws them for utterance-level inputs: ``torch.randperm(n, generator=gen)``
    cut into batches of ``bs``; a last batch of one sample is dropped."""
    import torch

    perm = torch.randperm(n, generator=gen)
    stop = n - (1 if n % bs == 1 and n > 1 else 0)
    return [perm[s:s + bs] for s in range(0, stop, bs)]


def masked_task_losses(out: dict, y: dict, mask, class_weight=None, label_smoothing: float = 0.0) -> dict:
    """:func:`emo.fuse.model.losses.task_losses` over the rows where ``mask`` (bool (B,)) is true:
    cross-entropy (weighted mean over the masked rows as ``F.cross_entropy`` with ``weight`` and
    ``label_smoothing``; the denominator is the summed weight of the rows' classes), MSE of
    ``valence`` (B,) and of ``vad`` (B, 3) (mean over rows and the 3 dimensions)."""
    import torch
    from torch.nn import functional as F

    n = mask.sum().clamp(min=1).to(torch.float32)
    losses = {}
    if "logits" in out:
        yd = y["discrete"]
        per = F.cross_entropy(out["logits"], yd, weight=class_weight, label_smoothing=label_smoothing, reduction="none")
        den = torch.where(mask, class_weight[yd], 0.0).sum() if class_weight is not None else n
        losses["discrete"] = torch.where(mask, per, 0.0).sum() / den
    if "valence" in out:
        losses["valence"] = torch.where(mask, (out["valence"] - y["valence"]) ** 2, 0.0).sum() / n
    if "vad" in out:
        losses["vad"] = torch.where(mask, ((out["vad"] - y["vad"]) ** 2).mean(-1), 0.0).sum() / n
    return losses


def init_model(model_args: dict, seed: int, y_train: dict[str, np.ndarray], decoder: str, device: str = "cpu"):
    """The :class:`FusionModel` the sequential path starts from for ``seed``: ``torch.manual_seed(seed)``,
    construction, then regression outputs started at the training mean (valence/VAD bias, weights x 0.1;
    JDEV: the combination bias)."""
    import torch

    from emo.fuse.model.multimodal import FusionModel

    torch.manual_seed(seed)
    model = FusionModel(**model_args).to(device)
    with torch.no_grad():
        dec = model.decoder
        if getattr(dec, "valence", None) is not None and "valence" in y_train and decoder == "separate":
            dec.valence.weight.mul_(0.1)
            dec.valence.bias.fill_(float(np.mean(y_train["valence"], dtype=np.float32)))
        if getattr(dec, "vad", None) is not None:
            dec.vad.weight.mul_(0.1)
            dec.vad.bias.copy_(torch.as_tensor(np.asarray(y_train["vad"], dtype=np.float32).mean(0)))
        if decoder == "jdev":
            dec.combine.bias.fill_(float(np.mean(y_train["valence"], dtype=np.float32)))
    return model


def _no_decay(name: str, p) -> bool:
    """The sequential loop's parameter groups: biases, 1-d parameters and layer weights get no weight decay."""
    return p.ndim < 2 or name.startswith("pool.")


def job_inputs(xs: list, job: Job, rows: np.ndarray) -> list:
    """The model inputs of ``job`` on ``rows``: per input, the (n, L_sel, D) float32 tensor
    after its column selection and standardisation (what the sequential path feeds that fold)."""
    import torch

    r = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=xs[0].device)
    out = []
    for i, x in enumerate(xs):
        if job.cols is not None and job.cols[i] is not None:  # rows and layers in one gather (no copy of every layer)
            g = x[r[:, None], torch.as_tensor(job.cols[i], device=x.device)[None, :]]
        else:
            g = torch.index_select(x, 0, r)
        if job.norm is not None and job.norm[i] is not None:  # in place on the fresh copy: (g - mean) / std
            m, s = job.norm[i]
            g.sub_(torch.as_tensor(m, device=x.device)).div_(torch.as_tensor(s, device=x.device))
        out.append(g)
    return out


# ---------------------------------------------------------------------------
# The batched fit
# ---------------------------------------------------------------------------

def fit_batched(xs: list, y: dict[str, np.ndarray], jobs: list[Job], cfg, model_args: dict[str, Any],
                log: Callable[[str], None] | None = None, on_epoch: Callable | None = None) -> BatchedFit:
    """Train one model per job, all at once, with the sequential loop's semantics (module docstring).

    Args:
        xs: one float32 tensor (N, L_i, D_i) per input (raw or already normalised rows; per-job
            column selection and standardisation come from ``Job.cols``/``Job.norm``).
        y: numpy labels over the N rows (``discrete`` int64, ``valence`` (N,), ``vad`` (N, 3));
            only the keys the task needs; rows used by a job must be labelled.
        jobs: the models to train (see :class:`Job`).
        cfg: a resolved :class:`emo.fuse.config.TrainConfig` (batch size, patience, epochs, lr,
            weight decay, label smoothing, loss weighting, device).
        model_args: :class:`FusionModel` arguments shared by the jobs (unless a job has its own).
        log: optional callable receiving progress lines.
        on_epoch: optional callable ``(epoch, ids, params, running)`` after every epoch: ``ids``
            (k,) the job indices of the models still stacked, ``params`` their (k, P) flat
            parameters (a detached copy), ``running`` (n_jobs,) bool (for inspection and tests).

    Returns:
        :class:`BatchedFit`.

    Raises:
        ValueError: jobs whose models differ in parameter shapes, empty train/val rows.
    """

    from emo.fuse.model.heads import uniform_dropout_masks

    t0 = time.perf_counter()
    for j in jobs:
        if len(j.train) == 0 or len(j.val) == 0:
            raise ValueError("every job needs training and validation rows")
    feat = sum(int(np.prod(x.shape[1:])) if (jobs[0].cols is None or jobs[0].cols[i] is None)
               else len(jobs[0].cols[i]) * int(x.shape[2]) for i, x in enumerate(xs))
    rows_per_model = max(min(cfg.batch_size, len(j.train)) for j in jobs) + max(len(j.val) for j in jobs)
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, feat * rows_per_model))
    models: list[Any] = [None] * len(jobs)
    infos: list[dict] = [{} for _ in jobs]
    steps = 0
    chunks = 0
    for start in range(0, len(jobs), per_chunk):
        idx = list(range(start, min(len(jobs), start + per_chunk)))
        with _vmappable_attention(), heap_allocations(), uniform_dropout_masks():
            hook = None if on_epoch is None else (lambda e, ids, p, run, _o=start: on_epoch(e, ids + _o, p, run))
            ms, inf, st = _fit_chunk(xs, y, [jobs[i] for i in idx], cfg, model_args, log, hook)
        for i, m, d in zip(idx, ms, inf):
            models[i], infos[i] = m, d
        steps += st
        chunks += 1
    return BatchedFit(models, infos, time.perf_counter() - t0, chunks, steps)


class heap_allocations:
    """Serve large CPU tensors from the heap while training batched (glibc only; elsewhere a no-op).

    The batched step allocates and frees the same few MB-sized tensors thousands of times. glibc
    hands allocations above ``M_MMAP_THRESHOLD`` to ``mmap`` and returns them at ``free``, so every
    step page-faults its buffers in again (an elementwise op on 1M floats: 2.2 ms instead of 0.3 ms on
    the reference machine). Inside the block, allocations up to 32 MiB (glibc's maximum threshold) come from the heap and freed
    memory is kept (``M_TRIM_THRESHOLD``); afterwards glibc's defaults are restored and the heap
    is trimmed (``malloc_trim``). The effect of jemalloc/tcmalloc that PyTorch's CPU performance
    guide recommends, without a preloaded library. ``EMO_MALLOC_TUNING=0`` turns it off.
    """

    #: mallopt parameters (glibc malloc.h) and glibc's defaults.
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024}

    def __enter__(self):
        import ctypes
        import ctypes.util
        import os
        import sys

        self._libc = None
        if sys.platform != "linux" or os.environ.get("EMO_MALLOC_TUNING", "1") == "0":
            return self
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only (musl has neither)
        except (OSError, AttributeError):
            return self
        if libc.mallopt(self.M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(self.M_TRIM_THRESHOLD, 1 << 30):
            self._libc = libc
        return self

    def __exit__(self, *exc):
        if self._libc is not None:
            for k, v in self.DEFAULTS.items():
                self._libc.mallopt(k, v)
            self._libc.malloc_trim(0)
        return False


class _vmappable_attention:
    """Attention kernels with vmap batching rules while training batched: the math
    scaled-dot-product attention (the CPU flash kernel and the transformer encoder fast path have
    none and would run model by model). Same results to float rounding."""

    def __enter__(self):
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self._fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        self._ctx = sdpa_kernel([SDPBackend.MATH])
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        self._ctx.__exit__(*exc)
        torch.backends.mha.set_fastpath_enabled(self._fast)
        return False


def _stacked_job_settings(jobs: list[Job], n_inputs: int, dev) -> tuple[list, list, Any]:
    """The per-model settings of ``jobs`` stacked on a leading model axis (k = ``len(jobs)``).

    Returns:
        cols: per input, int64 (k, L_sel) layer indices, or ``None`` (all layers).
        norms: per input, a ``(mean, std)`` pair of float32 (k, L_sel, D) tensors, or ``None``.
        class_weight: float32 (k, C) cross-entropy weights (ones for a job without), or ``None``
            when no job has class weights.
    """
    import torch

    cols, norms = [], []
    for i in range(n_inputs):
        own_cols = jobs[0].cols is not None and jobs[0].cols[i] is not None
        cols.append(torch.as_tensor(np.stack([j.cols[i] for j in jobs]), device=dev) if own_cols else None)
        own_norm = jobs[0].norm is not None and jobs[0].norm[i] is not None
        norms.append((torch.as_tensor(np.stack([j.norm[i][0] for j in jobs]), device=dev),
                      torch.as_tensor(np.stack([j.norm[i][1] for j in jobs]), device=dev)) if own_norm else None)
    cw = None
    if any(j.class_weight is not None for j in jobs):
        c = len(next(j.class_weight for j in jobs if j.class_weight is not None))
        cw = torch.as_tensor(np.stack([j.class_weight if j.class_weight is not None else np.ones(c, np.float32)
                                       for j in jobs]).astype(np.float32), device=dev)
    return cols, norms, cw


def _epoch_plan(lv: np.ndarray, trains: list[np.ndarray], bs: list[int], gens: list) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's minibatches of the stacked models ``lv`` (each its own :func:`epoch_batches`
    from its own generator: the sequential loop's draws), padded to the longest plan.

    Args:
        lv: int (k,) the models still stacked. trains: per model, int64 training row indices.
        bs: per model, its batch size. gens: per model, its ``torch.Generator`` (advanced here).

    Returns:
        idx: int64 (T, k, B) row indices, B = the largest batch size; padding repeats a real row.
        mask: bool (T, k, B), True on real rows (a step with no real row leaves the model untouched).
    """
    import torch

    bmax = max(bs)
    plans = []
    for g in lv:
        g = int(g)
        order = torch.cat(epoch_batches(len(trains[g]), bs[g], gens[g])).numpy()
        plans.append((trains[g][order], bs[g]))
    T = max(-(-len(r) // b) for r, b in plans)
    idx = np.empty((len(lv), T * bmax), dtype=np.int64)
    msk = np.zeros((len(lv), T * bmax), dtype=bool)
    for r, (rows, b) in enumerate(plans):
        idx[r] = rows[0] if len(rows) else trains[int(lv[r])][0]
        if b == bmax:
            idx[r, :len(rows)] = rows
            msk[r, :len(rows)] = True
        else:  # a fold smaller than the batch size: its batches are shorter, one per row of the plan
            for t in range(-(-len(rows) // b)):
                part = rows[t * b:(t + 1) * b]
                idx[r, t * bmax:t * bmax + len(part)] = part
                msk[r, t * bmax:t * bmax + len(part)] = True
    idx = idx.reshape(len(lv), T, bmax).transpose(1, 0, 2)
    msk = msk.reshape(len(lv), T, bmax).transpose(1, 0, 2)
    return np.ascontiguousarray(idx), np.ascontiguousarray(msk)


def _check_finite_losses(train_finite: np.ndarray, val_loss: np.ndarray, lv: np.ndarray, running: np.ndarray,
                         epoch: int, jobs: list[Job], lr: float) -> None:
    """The sequential loop's guard (:mod:`emo.fuse.training.fit`) for the stacked models: never a
    NaN model, never NaN predictions.

    Args:
        train_finite: bool (k,) every training step of the epoch had a finite loss.
        val_loss: float (k,) inner-validation loss after the epoch.

    Raises:
        NonFiniteError: naming the first running model (and its seed) whose training or
            validation loss is NaN/inf, and how many models are affected.
    """
    bad = [(int(g), "training") for r, g in enumerate(lv) if running[g] and not train_finite[r]]
    bad += [(int(g), "validation") for r, g in enumerate(lv) if running[g] and train_finite[r] and not np.isfinite(val_loss[r])]
    if bad:
        g, which = bad[0]
        raise NonFiniteError(
            f"the {which} loss became non-finite (NaN/inf) in epoch {epoch} (model {g}, seed {jobs[g].seed}; "
            f"{len(bad)} of {len(lv)} models): inputs too large or a learning rate of {lr} too high; "
            "try --normalize global or a lower --lr")


class _StackedStopping:
    """Early stopping of K stacked models, each by the rule of :mod:`emo.fuse.training.stopping`
    (:func:`~emo.fuse.training.stopping.improves`; ``patience`` epochs without an improvement stop it).
    The best weights stay stacked in the caller (no per-model state copy, unlike ``EarlyStopping``).

    Attributes (numpy, (K,)): ``best`` validation loss, ``best_epoch``, ``epochs`` trained,
    ``running`` (False once stopped; shared with the caller).
    """

    def __init__(self, k: int, patience: int) -> None:
        self.patience = patience
        self.best = np.full(k, math.inf)
        self.best_epoch = np.zeros(k, dtype=int)
        self.wait = np.zeros(k, dtype=int)
        self.epochs = np.zeros(k, dtype=int)
        self.running = np.ones(k, dtype=bool)

    def update(self, epoch: int, val_loss: np.ndarray, lv: np.ndarray) -> list[tuple[int, int]]:
        """Record ``epoch``'s validation losses (k,) of the stacked models ``lv``; returns the
        ``(stack row, model)`` pairs that improved (their weights are the new best)."""
        improved = []
        for r, g in enumerate(lv):
            g = int(g)
            if not self.running[g]:
                continue
            self.epochs[g] = epoch
            if improves(val_loss[r], self.best[g]):
                self.best[g], self.best_epoch[g], self.wait[g] = val_loss[r], epoch, 0
                improved.append((r, g))
            else:
                self.wait[g] += 1
                if self.wait[g] >= self.patience:
                    self.running[g] = False
        return improved


def _fit_chunk(xs, y, jobs: list[Job], cfg, model_args, log, on_epoch=None):
    """Train the models of ``jobs`` together (see the module docstring).

    Parameters live stacked: one leaf tensor (k, *shape) per parameter name, over the k models
    still running (no per-step stacking), in the memory layout of its gradient (:class:`_GradLayouts`).
    One AdamW step updates every model that took a minibatch: the fused kernel of
    :class:`torch.optim.AdamW` (``torch._fused_adamw_``, the sequential path's optimiser) runs on
    the whole stack when every model steps with the same step count, otherwise on per-model row
    views of the stacked parameters, gradients and moments, each with that model's own step count;
    either way the arithmetic is the sequential optimiser's, model by model. When models stop, the
    stack shrinks to the running ones (their rows, moments and step counts are carried over).
    """
    import torch
    from torch.func import functional_call

    from emo.fuse.model.losses import UncertaintyLoss

    dev = cfg.device
    K = len(jobs)
    ytr = [{k: v[j.train] for k, v in y.items()} for j in jobs]
    models = [init_model(j.model_args or model_args, j.seed, ytr[i], cfg.decoder, dev) for i, j in enumerate(jobs)]
    use_unc = cfg.loss_weighting == "uncertainty" and cfg.task == "discrete+valence"
    uncs = [UncertaintyLoss().to(dev) for _ in jobs] if use_unc else None
    names = [n for n, _ in models[0].named_parameters()]
    shapes = [tuple(p.shape) for _, p in models[0].named_parameters()]
    per_model = []
    for k, m in enumerate(models):
        ps = dict(m.named_parameters())
        if [tuple(ps[n].shape) for n in names] != shapes or len(ps) != len(names):
            raise ValueError("models of one batch must have the same parameter shapes")
        per_model.append([ps[n].detach() for n in names] + ([uncs[k].log_delta.detach()] if uncs else []))
    pnames = names + (["unc.log_delta"] if uncs else [])
    decays = [0.0 if _no_decay(n, p) else float(cfg.weight_decay) for n, p in zip(names, per_model[0])] + ([0.0] if uncs else [])
    # the stacked state of the running models: parameters (leaves), AdamW moments, per-model step
    # counts (float32 0-d tensors, as torch.optim keeps them on cpu; ``nsteps`` mirrors them in numpy)
    P = [torch.stack([per_model[k][q] for k in range(K)]).requires_grad_(True) for q in range(len(pnames))]
    M = [torch.zeros_like(p) for p in P]
    V = [torch.zeros_like(p) for p in P]
    steps_t = [torch.zeros((), dtype=torch.float32, device=dev) for _ in range(K)]
    nsteps = np.zeros(K, dtype=np.int64)
    # Each parameter's memory layout follows the layout its gradient arrives in (learnt from the
    # first backward pass: a vmapped nn.Linear's weight gradient arrives transposed), so that
    # autograd hands its gradient over as .grad without a copy (grads are reset to None every step).
    layouts = _GradLayouts(P)
    best_P = [p.detach().clone() for p in P]  # (K, ...) best weights of every model of the chunk
    base = models[0]
    unc_base = uncs[0] if uncs else None
    groups = sorted(set(decays))

    yt = {k: torch.as_tensor(v, device=dev) for k, v in y.items()}
    cols, norms, cw = _stacked_job_settings(jobs, len(xs), dev)

    def gather(live: torch.Tensor, idx: torch.Tensor) -> list:
        """Inputs of the models ``live`` (k,) on rows ``idx`` (k, B) → per input (k, B, L, D)."""
        out = []
        for i, x in enumerate(xs):
            if cols[i] is None:  # index_select: half the time of x[idx] (5 x 256 rows of 6 x 1024)
                g = torch.index_select(x, 0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])
            else:
                g = x[idx[:, :, None], cols[i][live][:, None, :]]
            if norms[i] is not None:  # in place: g is a fresh copy; the values of (g - mean) / std
                g.sub_(norms[i][0][live][:, None]).div_(norms[i][1][live][:, None])
            out.append(g)
        return out

    ls = float(cfg.label_smoothing)

    def per_model_loss(p: list, xb: list, yb: dict, mb, cwb, train: bool):
        out = functional_call(base, dict(zip(names, p[:len(names)])), (xb,))
        losses = masked_task_losses(out, yb, mb, cwb if train else None, ls if train else 0.0)
        if train and unc_base is not None:
            return functional_call(unc_base, {"log_delta": p[-1]}, (losses["discrete"], losses["valence"]))
        return sum(losses.values())

    def loss_of(p, xb, yb, mb, cwb, train):
        in_dims = (0, 0, 0, 0, 0 if cwb is not None else None)
        fn = torch.vmap(lambda a, b, c, d, e: per_model_loss(a, b, c, d, e, train), in_dims=in_dims, randomness="different")
        return fn(p, xb, yb, mb, cwb)

    # per key, the views AdamW works on (parameters, moments, step counts), in memory order (a re-laid-out
    # weight is transposed): key "stack" for the whole stack, else a tuple of stack rows (one model each);
    # built once per stack (cleared when it is re-laid out or shrinks); only the gradients are new each step
    views: dict = {}
    by_decay = [[q for q in range(len(P)) if decays[q] == wd] for wd in groups]

    def pick(ts: list, qs: list[int], rows: tuple[int, ...] | None) -> list:
        """Tensors ``ts[q]`` of the parameters ``qs`` in memory order: whole (``rows`` None) or row by row."""
        return [_physical(ts[q]) for q in qs] if rows is None else [_physical(ts[q][r]) for q in qs for r in rows]

    def adamw_step(rows: tuple[int, ...]) -> None:
        """One torch.optim.AdamW(fused=True) step for the stacked rows ``rows`` (each its own model).

        When every stacked model steps and all have taken the same number of steps (the usual case),
        the kernel runs once per parameter over the whole stack (the update is elementwise with one
        step count, so this is the model-by-model update); otherwise on per-model row views, each
        with its model's own step count."""
        torch._foreach_add_([steps_t[int(lv[r])] for r in rows], 1.0)
        nsteps[lv[list(rows)]] += 1
        whole = len(rows) == len(lv) and bool((nsteps[lv] == nsteps[lv[0]]).all())
        # parameters the loss does not reach have no gradient and, as in torch.optim.AdamW, no step
        # (no weight decay either): e.g. AFG's W_α with a single input
        reached = tuple(q for q in range(len(P)) if P[q].grad is not None)
        qss = [[q for q in qs if P[q].grad is not None] for qs in by_decay]
        key, sel = ("stack" if whole else rows, reached), (None if whole else rows)
        if key not in views:
            _check_same_layout(P, M, V)
            data = [p.data for p in P]
            views[key] = [(pick(data, qs, sel), pick(M, qs, sel), pick(V, qs, sel),
                           [steps_t[int(lv[0])]] * len(qs) if whole else [steps_t[int(lv[r])] for q in qs for r in rows])
                          for qs in qss]
        grads = [p.grad for p in P]
        for (ps, ms, vs, ss), qs, wd in zip(views[key], qss, groups):
            if qs:
                compat.fused_adamw_(ps, pick(grads, qs, sel), ms, vs, [], ss, lr=float(cfg.lr), beta1=0.9, beta2=0.999,
                                    weight_decay=wd, eps=1e-8, amsgrad=False, maximize=False, grad_scale=None, found_inf=None)

    # validation inputs of every model, gathered once (padded with the model's first val row, masked)
    vmax = max(len(j.val) for j in jobs)
    vidx = torch.as_tensor(np.stack([np.concatenate([j.val, np.full(vmax - len(j.val), j.val[0])]) for j in jobs]), device=dev)
    vmask = torch.as_tensor(np.stack([np.arange(vmax) < len(j.val) for j in jobs]), device=dev)
    xv = gather(torch.arange(K, device=dev), vidx)
    yv = {k: v[vidx] for k, v in yt.items()}

    gens = [torch.Generator().manual_seed(j.seed) for j in jobs]
    ntr = [len(j.train) for j in jobs]
    bs = [min(cfg.batch_size, n) for n in ntr]
    trains = [np.asarray(j.train, dtype=np.int64) for j in jobs]
    stopping = _StackedStopping(K, cfg.patience)
    running = stopping.running
    lv = np.arange(K)  # the models still stacked (row r of P is model lv[r])
    steps = 0
    for epoch in range(1, cfg.epochs + 1):
        if not running[lv].any():
            break
        live = torch.as_tensor(lv, device=dev)
        idx, msk = _epoch_plan(lv, trains, bs, gens)
        T = idx.shape[0]
        idx_t = torch.as_tensor(idx, device=dev)
        msk_t = torch.as_tensor(msk, device=dev)
        act = msk.any(-1)  # (T, k): the model takes a step
        cw_live = cw[live] if cw is not None else None
        base.train()
        finite = torch.ones(len(lv), dtype=torch.bool, device=dev)  # per model, checked once per epoch (no sync per step)
        act_dev = torch.as_tensor(act, device=dev)  # padded steps (no rows: 0/0 losses) are not checked
        all_rows = tuple(range(len(lv)))
        for t in range(T):
            xb = gather(live, idx_t[t])
            yb = {k: v[idx_t[t]] for k, v in yt.items()}
            for p in P:
                p.grad = None
            model_losses_t = loss_of(P, xb, yb, msk_t[t], cw_live, True)
            finite &= torch.isfinite(model_losses_t.detach()) | ~act_dev[t]
            with layouts.learn(P):
                model_losses_t.sum().backward()
            if layouts.pending:
                P, M, V = layouts.apply(P, M, V)
                views.clear()
            adamw_step(all_rows if act[t].all() else tuple(int(r) for r in np.flatnonzero(act[t])))
            steps += 1
        # per-model inner-validation loss (no class weights, no smoothing: as the sequential loop)
        base.eval()
        with torch.no_grad():
            vl = loss_of([p.detach() for p in P], [x[live] for x in xv], {k: v[live] for k, v in yv.items()},
                         vmask[live], None, False).double().cpu().numpy()
        _check_finite_losses(finite.cpu().numpy(), vl, lv, running, epoch, jobs, cfg.lr)
        improved = stopping.update(epoch, vl, lv)
        if improved:
            rr = torch.as_tensor([r for r, _ in improved], device=dev)
            gg = torch.as_tensor([g for _, g in improved], device=dev)
            with torch.no_grad():
                for q, p in enumerate(P):
                    best_P[q].index_copy_(0, gg, p.detach().index_select(0, rr))
        if on_epoch is not None:
            with torch.no_grad():
                flat = torch.cat([p.detach().reshape(len(lv), -1) for p in P], 1).clone()
            on_epoch(epoch, lv.copy(), flat, running.copy())
        # stopped models leave the stack: keep the running rows of parameters, moments and steps
        keep_r = np.flatnonzero(running[lv])
        if 0 < len(keep_r) < len(lv):
            kr = torch.as_tensor(keep_r, device=dev)
            with torch.no_grad():
                P = [layouts.like(q, p.detach().index_select(0, kr)).requires_grad_(True) for q, p in enumerate(P)]
                M = [layouts.like(q, m.index_select(0, kr)) for q, m in enumerate(M)]
                V = [layouts.like(q, v.index_select(0, kr)) for q, v in enumerate(V)]
            lv = lv[keep_r]
            views.clear()
    if log:
        log(f"batched: {K} models, {steps} steps, epochs {stopping.epochs.min()}-{stopping.epochs.max()}")
    return models, _restore_best(models, uncs, names, best_P, stopping), steps


def _physical(t):
    """``t`` with its dimensions permuted into memory order (a contiguous view of the same storage):
    what an elementwise kernel that walks memory linearly may be given."""
    order = sorted(range(t.ndim), key=lambda d: -t.stride(d))
    v = t.permute(order)
    if not v.is_contiguous():
        raise RuntimeError(f"tensor of shape {tuple(t.shape)} and strides {t.stride()} is not dense in any dimension order")
    return v


def _check_same_layout(P: list, M: list, V: list) -> None:
    """Raise unless each parameter, its gradient and its two moments share one memory layout
    (strides over the dimensions longer than 1): the fused AdamW kernel walks each tensor's
    memory linearly (:func:`_physical`), so differing layouts would pair the wrong elements.
    It holds by construction (moments are made with ``zeros_like`` and re-laid out with the
    parameters; autograd hands a gradient over only in its parameter's layout and copies it into
    that layout otherwise, so later steps' gradients keep it); checked whenever the views are built."""
    for q, p in enumerate(P):
        want = [st for st, n in zip(p.stride(), p.shape) if n > 1]
        for t in (M[q], V[q]) if p.grad is None else (p.grad, M[q], V[q]):
            if [st for st, n in zip(t.stride(), t.shape) if n > 1] != want:
                raise RuntimeError(f"stacked parameter {q}: strides {p.stride()} but {t.stride()} for its gradient or moments")


class _GradLayouts:
    """Keeps each stacked parameter in the memory layout of its gradient.

    Autograd hands a gradient over as ``.grad`` without copying only when its strides are the
    parameter's (``AccumulateGrad``'s layout contract); otherwise it copies it into the parameter's
    layout, a full pass over the parameter every step. The first backward pass records the strides
    each gradient arrives with (tensor hooks, which run before accumulation); :meth:`apply` then
    re-lays the parameters and their AdamW moments out in that order, and :meth:`like` keeps it
    when the stack shrinks. Values are unchanged: only the memory order differs.
    """

    def __init__(self, P: list) -> None:
        self.order: list[tuple[int, ...] | None] = [None] * len(P)
        self.learnt = False
        self.pending = False

    @contextlib.contextmanager
    def learn(self, P: list):
        """Record the gradients' strides during the first backward pass inside the block."""
        if self.learnt:
            yield
            return
        seen: dict[int, tuple[int, ...]] = {}
        hooks = [p.register_hook(lambda g, q=q: seen.__setitem__(q, tuple(g.stride()))) for q, p in enumerate(P)]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
        self.learnt = True
        for q, p in enumerate(P):
            st = seen.get(q)
            if st is None or st == tuple(p.stride()) or p.ndim < 2:
                continue
            order = tuple(sorted(range(p.ndim), key=lambda d: -st[d]))
            if order != tuple(range(p.ndim)):
                self.order[q] = order
                self.pending = True

    def like(self, q: int, t):
        """``t`` (same shape as parameter ``q``) copied into parameter ``q``'s layout (``t`` itself
        when that is the default, contiguous one)."""
        order = self.order[q]
        if order is None:
            return t
        inv = sorted(range(len(order)), key=lambda d: order[d])
        return t.permute(order).contiguous().permute(inv)

    def apply(self, P: list, M: list, V: list) -> tuple[list, list, list]:
        """The parameters (new leaves, their ``.grad`` carried over), moments re-laid out (see class)."""
        self.pending = False
        out = []
        for q, p in enumerate(P):
            if self.order[q] is None:
                out.append(p)
                continue
            n = self.like(q, p.detach()).requires_grad_(True)
            if p.grad is not None:
                n.grad = self.like(q, p.grad)
            out.append(n)
        return out, [self.like(q, m) for q, m in enumerate(M)], [self.like(q, v) for q, v in enumerate(V)]


def _restore_best(models: list, uncs: list | None, names: list[str], best_P: list, stopping: _StackedStopping) -> list[dict]:
    """Copy each model's best stacked weights (``best_P``: per parameter, (K, ...)) into its own
    module (eval mode, gradients off); returns per model ``{"epochs", "best_epoch",
    "best_val_loss"}`` (and ``"loss_weights"`` of the uncertainty loss)."""
    import torch

    infos = []
    with torch.no_grad():
        for g, m in enumerate(models):
            ps = dict(m.named_parameters())
            for q, n in enumerate(names):
                ps[n].copy_(best_P[q][g])
            if uncs is not None:
                uncs[g].log_delta.copy_(best_P[-1][g])
            m.eval()
            info: dict[str, Any] = {"epochs": int(stopping.epochs[g]), "best_epoch": int(stopping.best_epoch[g]),
                                    "best_val_loss": float(stopping.best[g])}
            if uncs is not None:
                info["loss_weights"] = list(uncs[g].weights)
            infos.append(info)
    for m in models:
        m.requires_grad_(False)
    return infos


# ---------------------------------------------------------------------------
# Cross-validation on top of the batched fit (drop-in for emo.fuse.eval.cv.train_cv)
# ---------------------------------------------------------------------------

#: The lbfgs recipe's per-model fit record kept in a run's fold rows (``metrics.json`` ``folds[i].fit``).
FIT_RECORD = ("l2", "path", "refit", "convex", "converged", "grad_max", "tol", "final_iterations", "max_iter")


def fit_warnings(fold_rows: list[dict[str, Any]]) -> list[str]:
    """Warnings about the lbfgs recipe's fits of a run's folds (:data:`FIT_RECORD`, empty when fine):

    * a fold whose inner-validation loss was still falling at the last point of the L2 path and its
      extension (the best strength may lie beyond the path; ``--l2`` fixes one);
    * a convex head (``--head linear``) whose final solve stopped before its gradient tolerance (at
      its iteration limit, or earlier without further decrease): the probe is near its unique
      optimum, not at it (one warning: the folds are solved together). Non-convex heads stop at their
      limit by design and are only recorded.
    """
    ends = {min(L2_PATH + tuple(L2_PATH_WEAKER)): "weakest", max(L2_PATH + tuple(L2_PATH_STRONGER)): "strongest"}
    out = []
    stopped = next((f for r in fold_rows for f in r.get("fit", []) if f.get("convex") and not f.get("converged", True)), None)
    if stopped is not None:
        out.append(f"linear head: {final_gradient(stopped)}; the folds' probes are near their optimum, not at it")
    for r in fold_rows:
        for f in r.get("fit", []):
            if f.get("l2") in ends and len(f.get("path", [])) > 1:
                out.append(f"fold {r['name']}: the inner-validation loss was still falling at l2={f['l2']:g}, the "
                           f"{ends[f['l2']]} point of the L2 path; the best strength may lie beyond it (--l2 fixes one)")
                break
    return out


def _check_blocks(blocks, inputs) -> None:
    from emo.fuse.training.data import Frames

    for inp in inputs:
        x = blocks.get(inp.name)
        shape = None if x is None else ((len(x), *x.frame_shape) if isinstance(x, Frames) else x.shape)
        if shape is None or len(shape) != 3 or shape[1] != len(inp.layers) or shape[2] != inp.dim:
            raise ValueError(f"features {inp.name!r}: expected (N, {len(inp.layers)}, {inp.dim}), got {shape}")


def train_cv_batched(blocks: dict[str, Any], inputs: list[dict[str, Any]], y: dict[str, np.ndarray], folds: list[Fold],
                     cfg, n_classes: int = 0, speakers: list[str | None] | None = None,
                     test_idx: np.ndarray | None = None, progress: Callable[[str], None] | None = None,
                     log: Callable[[str], None] | None = None, optimizer: str = "adamw", fold_cache: Any = None):
    """:func:`emo.fuse.eval.cv.train_cv` with every fold x seed trained as one batched model.

    Same arguments, same :class:`emo.fuse.eval.cv.CVResult` (fold rows, pooled out-of-fold metrics,
    test-set averages, per-fold states, normalisers, diagnostics); fold rows' ``seconds`` are the
    batched fit's time split evenly over the folds. When :func:`batched_unsupported` gives a
    reason, it is passed to ``log`` and the sequential :func:`emo.fuse.eval.cv.train_cv` runs instead.

    ``optimizer="lbfgs"``: the linear probe is fitted by :func:`fit_linear_lbfgs` (one model per
    fold: the optimum does not depend on the seed); configurations it cannot fit
    (:func:`lbfgs_unsupported`) use AdamW, with the reason passed to ``log``.
    ``optimizer="path"``: the lbfgs recipe (:func:`fit_lbfgs_path`; ``cfg.seeds`` models per fold,
    ``cfg.l2`` fixed or 0 = chosen per fold along :data:`L2_PATH`).

    Raises:
        ValueError: as :func:`emo.fuse.eval.cv.train_cv`.
    """
    from emo.fuse.eval.cv import train_cv
    from emo.fuse.training.inputs import as_inputs

    inputs = as_inputs(inputs)
    speakers_missing = speakers is None or any(not s for s in speakers)
    reason = batched_unsupported(cfg, inputs, speakers_missing and cfg.normalize == "speaker", y)
    if reason is not None:
        if log:
            log(f"sequential training: {reason}")
        return train_cv(blocks, inputs, y, folds, cfg, n_classes, speakers, test_idx, progress, fold_cache)
    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))
    cfg.validate()
    with pinned_threads(cfg.threads):  # torch and numpy's / scipy's BLAS pools
        if optimizer == "lbfgs":
            why = lbfgs_unsupported(cfg)
            if why is not None:
                optimizer = "adamw"
                if log:
                    log(f"AdamW instead of L-BFGS: {why}")
        elif optimizer not in ("adamw", "path"):
            raise ValueError(f"optimizer must be adamw, lbfgs or path, not {optimizer!r}")
        return _train_cv_batched(blocks, inputs, y, folds, cfg, n_classes, speakers, test_idx, progress, log, optimizer, fold_cache)


def _train_cv_batched(blocks, inputs, y, folds, cfg, n_classes, speakers, test_idx, progress, log, optimizer="adamw", fold_cache=None):
    import torch

    from emo.fuse.eval.cv import CVResult
    from emo.fuse.training.data import Normalizer
    from emo.fuse.training.fit import DIAGNOSTIC_ROWS, average_outputs, class_weight_balanced, diagnostics, predict_model
    from emo.fuse.eval.metrics import evaluate, summarize

    _check_blocks(blocks, inputs)
    disc = "discrete" in y and cfg.task in ("discrete", "discrete+valence")
    if disc and n_classes < 2:
        raise ValueError("discrete tasks need n_classes >= 2")
    model_args = cfg.model_args(inputs, n_classes)
    needed = {k for k in ("discrete", "valence", "vad") if k in y and (k != "discrete" or disc)}
    base_norm = Normalizer(cfg.normalize)
    if cfg.normalize == "speaker":
        if speakers is None:
            raise ValueError("--normalize speaker needs speaker ids")
        base_norm.fit(blocks, np.arange(len(speakers)), speakers)
        # every row has a speaker (batched_unsupported): per-speaker statistics are fold independent
        base_norm.global_ = Normalizer("global").fit(blocks, np.arange(len(speakers))).global_
        shared = base_norm.transform(blocks, speakers)
    else:
        shared = Normalizer("none").transform(blocks)
    xs = [torch.as_tensor(np.ascontiguousarray(shared[inp.name], dtype=np.float32), device=cfg.device) for inp in inputs]
    del shared
    jobs, norms, fold_of = [], [], []
    yn = {k: y[k] for k in needed}
    for fi, fold in enumerate(folds):
        if len(fold.train) == 0 or len(fold.val) == 0 or len(fold.test) == 0:
            raise ValueError(f"fold {fold.name}: empty train/val/test split")
        norm = Normalizer(cfg.normalize)
        jn = None
        if cfg.normalize == "global":
            norm.global_ = Normalizer("global").fit(blocks, np.concatenate([fold.train, fold.val])).global_
            jn = [norm.global_[inp.name] for inp in inputs]
        elif cfg.normalize == "speaker":
            norm.global_ = Normalizer("global").fit(blocks, np.concatenate([fold.train, fold.val])).global_
            norm.speaker = base_norm.speaker
        norms.append(norm)
        if fold_cache is not None and fold_cache.has(fi):  # finished in an interrupted run: reused below
            continue
        cwf = class_weight_balanced(y["discrete"][fold.train], n_classes) if (cfg.class_weights and disc) else None
        for s in range(1 if optimizer == "lbfgs" else cfg.seeds):
            jobs.append(Job(np.asarray(fold.train), np.asarray(fold.val), cfg.seed + s, None, jn, cwf))
            fold_of.append(fi)
    if not jobs:
        fit = None
    elif optimizer == "path":  # the lbfgs recipe: every fold in one full-batch solve, l2 chosen per fold
        fit = fit_lbfgs_path(xs, yn, jobs, cfg, model_args, log, l2=cfg.l2 or None)
    else:
        fit = (fit_linear_lbfgs if optimizer == "lbfgs" else fit_batched)(xs, yn, jobs, cfg, model_args, log)
    per_fold_s = fit.seconds / max(1, len(set(fold_of))) if fit else 0.0
    fold_rows, states, diags, oof_parts, test_outs = [], [], [], [], []
    for fi, fold in enumerate(folds):
        ks = [k for k, f in enumerate(fold_of) if f == fi]
        if not ks:  # from the fold cache
            fold_states, out, fold_test, row, diag = fold_cache.resume(fi, fold.name, len(folds), progress)
            diags.append(diag)
            oof_parts.append((fold.test, fi, out))
            states.append(fold_states)
            test_outs.extend(fold_test)
            fold_rows.append(row)
            continue
        t0 = time.perf_counter()
        xte = job_inputs(xs, jobs[ks[0]], fold.test)
        outs = [predict_model(fit.models[k], xte) for k in ks]
        fold_test = []
        if test_idx is not None and len(test_idx):
            xtt = job_inputs(xs, jobs[ks[0]], test_idx)
            fold_test = [predict_model(fit.models[k], xtt) for k in ks]
            test_outs += fold_test
        # the rows diagnostics() reads, not the whole training part (utterance-level inputs only here)
        diag = diagnostics(fit.models[ks[0]], job_inputs(xs, jobs[ks[0]], fold.train[:DIAGNOSTIC_ROWS]))
        diag["fits"] = [fit.infos[k] for k in ks]
        diags.append(diag)
        out = average_outputs(outs)
        metrics = evaluate(out, {k: y[k][fold.test] for k in needed}, n_classes)
        oof_parts.append((fold.test, fi, out))
        fold_states = [{k: v.detach().cpu().clone() for k, v in fit.models[k].state_dict().items()} for k in ks]
        states.append(fold_states)
        row = {**fold.as_dict(), "metrics": metrics, "epochs": [fit.infos[k]["epochs"] for k in ks],
               "seconds": round(per_fold_s + time.perf_counter() - t0, 3)}
        if optimizer == "path":  # what the full-batch recipe chose and how far its solve got, per model
            row["fit"] = [{key: fit.infos[k][key] for key in FIT_RECORD if key in fit.infos[k]} for k in ks]
        fold_rows.append(row)
        if fold_cache is not None:
            fold_cache.save(fi, fold_states, out, fold_test, {**row, "diagnostics": diag})
        if progress:
            progress(f"fold {fi + 1}/{len(folds)} {fold.name}: trained in {row['seconds']:.1f} s (batched with the other folds)")
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


def train_cells(x: np.ndarray, inp, cells: list[tuple[list[int], Fold, int]], cfg, y: dict[str, np.ndarray], n_classes: int,
                speakers: list[str | None] | None = None, test_idx: np.ndarray | None = None,
                log: Callable[[str], None] | None = None) -> list[dict[str, Any]] | None:
    """Train the cells of a layer sweep (:mod:`emo.fuse.eval.sweep`) together: cell ``(cols, fold, seed)``
    is the probe on layers ``x[:, cols]`` of one encoder, trained on ``fold`` with ``cfg.seeds``
    models (seeds ``seed, seed+1, ...``), as :func:`emo.fuse.eval.cv.train_cv` on that fold alone would
    (per-cell global normalisation on the fold's train + validation rows). With
    ``cfg.optimizer == "lbfgs"`` and a linear head, :func:`fit_linear_lbfgs` (one model per cell);
    otherwise :func:`fit_batched`.

    Args:
        x: float32 (N, L, D) features of the encoder's needed layers; inp: its
            :class:`emo.fuse.training.inputs.FeatureInput` (``layers`` replaced per cell).
        cells: (column indices into L, fold, seed) per cell; every cell has the same number of columns.
        cfg: resolved :class:`emo.fuse.config.TrainConfig`; y, n_classes, speakers, test_idx: as ``train_cv``.

    Returns:
        Per cell ``{"n_train", "n_val", "n_test", "epochs", "seconds", "metrics", "test_metrics"?, "pred"}``
        (``pred``: the evaluation rows' ``index`` and averaged outputs),
        or None when the configuration cannot train batched (:func:`batched_unsupported`; then the
        caller trains cell by cell), with the reason passed to ``log``.
    """
    import torch

    from emo.fuse.training.data import Normalizer
    from emo.fuse.training.fit import average_outputs, class_weight_balanced, predict_model
    from emo.fuse.eval.metrics import evaluate

    missing = speakers is None or any(not s for s in speakers)
    reason = batched_unsupported(cfg, [inp], missing and cfg.normalize == "speaker", y)
    if reason is not None:
        if log:
            log(f"sequential training: {reason}")
        return None
    disc = "discrete" in y and cfg.task in ("discrete", "discrete+valence")
    needed = {k for k in ("discrete", "valence", "vad") if k in y and (k != "discrete" or disc)}
    lbfgs = cfg.optimizer == "lbfgs" and lbfgs_unsupported(cfg) is None
    if cfg.optimizer == "lbfgs" and not lbfgs and log:
        log(f"AdamW instead of L-BFGS: {lbfgs_unsupported(cfg)}")
    if cfg.normalize == "speaker":
        bn = Normalizer("speaker").fit({inp.name: x}, np.arange(len(x)), speakers)
        x = bn.transform({inp.name: x}, speakers)[inp.name]
    xs = [torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=cfg.device)]
    jobs, cell_of = [], []
    for ci, (cols, fold, seed) in enumerate(cells):
        cols = np.asarray(cols, dtype=np.int64)
        norm = None
        if cfg.normalize == "global":
            rows = np.concatenate([fold.train, fold.val])  # only these rows and layers are copied
            st = Normalizer("global").fit({inp.name: x[rows[:, None], cols[None, :]]}, np.arange(len(rows))).global_[inp.name]
            norm = [st]
        args = cfg.model_args([replace(inp, layers=[str(c) for c in cols])], n_classes)
        cw = class_weight_balanced(y["discrete"][fold.train], n_classes) if (cfg.class_weights and disc) else None
        for s in range(1 if lbfgs else cfg.seeds):
            jobs.append(Job(np.asarray(fold.train), np.asarray(fold.val), seed + s, [cols], norm, cw, args))
            cell_of.append(ci)
    yn = {k: y[k] for k in needed}
    with pinned_threads(cfg.threads):  # torch and numpy's / scipy's BLAS pools
        fit = (fit_linear_lbfgs if lbfgs else fit_batched)(xs, yn, jobs, cfg, jobs[0].model_args, log)
    per_cell = fit.seconds / max(1, len(cells))
    out = []
    for ci, (cols, fold, seed) in enumerate(cells):
        ks = [k for k, c in enumerate(cell_of) if c == ci]
        pred = average_outputs([predict_model(fit.models[k], job_inputs(xs, jobs[k], fold.test)) for k in ks])
        d: dict[str, Any] = {"n_train": int(len(fold.train)), "n_val": int(len(fold.val)), "n_test": int(len(fold.test)),
                             "epochs": [fit.infos[k]["epochs"] for k in ks], "seconds": round(per_cell, 4),
                             "metrics": evaluate(pred, {k: y[k][fold.test] for k in needed}, n_classes),
                             "pred": {"index": np.asarray(fold.test), **pred}}
        if test_idx is not None and len(test_idx):
            tp = average_outputs([predict_model(fit.models[k], job_inputs(xs, jobs[k], test_idx)) for k in ks])
            if all(np.all(np.isfinite(y[k][test_idx])) if k != "discrete" else np.all(y[k][test_idx] >= 0) for k in needed):
                d["test_metrics"] = evaluate(tp, {k: y[k][test_idx] for k in needed}, n_classes)
        out.append(d)
    return out


# ---------------------------------------------------------------------------
# Full-batch L-BFGS for the linear probe
# ---------------------------------------------------------------------------

#: L-BFGS settings of :func:`fit_linear_lbfgs`: at most this many iterations over all models,
#: stopping earlier when the largest gradient entry falls below ``LBFGS_TOL``.
LBFGS_MAX_ITER, LBFGS_TOL = 500, 1e-5


def lbfgs_unsupported(cfg) -> str | None:
    """Why :func:`fit_linear_lbfgs` cannot fit ``cfg`` (then the AdamW path runs), or None."""
    if cfg.head != "linear":
        return f"--head {cfg.head} is not convex (L-BFGS fits the linear probe only)"
    if cfg.layer_weights:
        return "--layer-weights make the probe bilinear"
    if cfg.decoder != "separate" or cfg.loss_weighting != "fixed":
        return "JDEV / uncertainty weighting are not convex"
    if cfg.frames:
        return "frame-level inputs"
    return None


#: :func:`fit_linear_lbfgs` multiplies a group of jobs with fewer than this many outputs in all
#: (models x classes) through :func:`_narrow_times_design` (the design stored transposed, the same
#: memory). Measured, one thread, forward + weight-gradient product per evaluation, narrow vs plain:
#: 13,708 x 2,688 (MELD MiniLM): 7 columns 18 + 17 vs 30 + 460 ms, 30 columns 36 + 33 vs 64 + 53 ms,
#: 150 columns 130 + 126 vs 155 + 137 ms, 300 columns a tie (265 + 234 vs 262 + 243 ms), 600 columns
#: 526 + 462 vs 465 + 482 ms; 5,030 x 1,024 (a HuBERT-large layer, 5 folds x 6 classes = 30 columns)
#: 4.5 + 4.3 vs 8.0 + 9.3 ms, 150 columns 18 + 17 vs 21 + 20 ms, 300 a tie. (Until 2026-12-07 the
#: limit was 16, from a single 30-column measurement that showed a tie.)
NARROW_COLUMNS = 256


def _narrow_times_design(b, d):
    """``b @ d`` for a narrow ``b`` (R, F) (R = models x classes, often 7) and a design ``d`` (F, N)
    stored as the transpose of the rows, with the gradient ``g @ d.T`` for ``b`` formed in that order.

    Why: with a narrow factor MKL's ``X @ W`` and autograd's weight gradient ``X.T @ G`` run several
    times slower than ``W.T @ X.T`` and ``G.T @ X`` (measured, one thread, 13,708 x 2,688 MELD
    rows, 7 classes: 47 + 104 ms per evaluation as ``X @ W``; 17 + 17 ms this way). Autograd alone
    would form the gradient as ``d @ g.T`` (44 ms), hence the explicit backward. ``d`` gets no gradient.
    """
    return _narrow_product().apply(b, d)


@functools.cache
def _narrow_product():
    """The autograd function of :func:`_narrow_times_design` (made once; torch is imported lazily)."""
    import torch

    class NarrowProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, b, d):
            ctx.save_for_backward(d)
            return b @ d

        @staticmethod
        def backward(ctx, g):
            (d,) = ctx.saved_tensors
            return g.contiguous() @ d.T, None

    return NarrowProduct


#: Rows per block of :func:`_transposed` (16 float32 = one 64-byte cache line of each output row).
TRANSPOSE_BLOCK_ROWS = 16


def _transposed(d):
    """A contiguous copy of ``d.T`` for a 2-D (N, F) tensor, possibly a strided layer slice of (N, L, F).

    Copied in blocks of :data:`TRANSPOSE_BLOCK_ROWS` rows, so that each block writes whole cache
    lines of the output: for a 5,030 x 1,024 layer slice 5.6-9.0 ms against 27-34 ms for
    ``d.contiguous().T.contiguous()`` (and 37 ms for ``d.T.contiguous()``), measured, one thread.
    Values are copied, never computed: the result equals ``d.T.contiguous()`` (which it is on
    other devices)."""
    import torch

    if d.device.type != "cpu":  # the blocks are for CPU caches; on an accelerator, one copy
        return d.T.contiguous()
    n = d.shape[0]
    out = torch.empty(d.shape[1], n, dtype=d.dtype, device=d.device)
    for i in range(0, n, TRANSPOSE_BLOCK_ROWS):
        out[:, i:i + TRANSPOSE_BLOCK_ROWS] = d[i:i + TRANSPOSE_BLOCK_ROWS].T
    return out


def fit_linear_lbfgs(xs: list, y: dict[str, np.ndarray], jobs: list[Job], cfg, model_args: dict[str, Any],
                     log: Callable[[str], None] | None = None) -> BatchedFit:
    """Fit the linear probe (:class:`emo.fuse.model.heads.LinearProbe` + separate linear decoders) of every
    job to convergence by full-batch L-BFGS (:meth:`_LinearProblem.solve`: scipy's L-BFGS-B for small problems, else torch's).

    Objective of model k (convex): the task losses of :func:`masked_task_losses` over its training
    rows (cross-entropy with the configured class weights and label smoothing; MSE for valence /
    VAD) plus ``weight_decay / 2 * ||W_k||²`` on the decoder weights (biases unpenalised), i.e.
    L2 regularisation with the coefficient whose gradient ``weight_decay * W`` is the sequential
    path's decoupled weight decay (exactly so for SGD; with AdamW the decay is rescaled by the
    adaptive step, a difference this choice resolves towards the standard penalised likelihood).
    For cross-entropy without smoothing or class weights this is scikit-learn's
    ``LogisticRegression(C=1 / (weight_decay * n_train))``. No early stopping: the inner
    validation rows are only scored (``best_val_loss``); seeds do not matter (unique optimum).

    The K objectives are separable, so one L-BFGS on their sum reaches every model's own optimum;
    jobs sharing the same layer columns share their design matrix (one matrix product per group
    of jobs and evaluation), and per-model standardisation is folded into the weights
    (``((x - m) / s) W = x (W / s) - (m / s) W``), so inputs are never copied per model.

    The model and objective are :class:`_LinearProblem` (shared with the lbfgs recipe's linear head,
    :func:`fit_lbfgs_path`), solved in float32 to :data:`LBFGS_TOL`.

    Args/Returns/Raises: as :func:`fit_batched`; ``info`` per model: ``epochs`` (L-BFGS
    iterations), ``best_epoch`` (same), ``best_val_loss``, ``optimizer: "lbfgs"``.
    """
    import torch

    t0 = time.perf_counter()
    reason = lbfgs_unsupported(cfg)
    if reason:
        raise ValueError(f"L-BFGS probe: {reason}")
    prob = _LinearProblem(xs, y, jobs, cfg, model_args, torch.float32)
    W, b = prob.start()
    lam = torch.full((len(jobs),), float(cfg.weight_decay), dtype=prob.dtype, device=prob.dev)
    iters, nev, _, _ = prob.solve(W, b, prob.mask([j.train for j in jobs]), lam, LBFGS_MAX_ITER, LBFGS_TOL, 1e-12,
                                  measure=False)  # convergence is not reported here: no final evaluation
    vl = prob.val_losses(W, b, prob.mask([j.val for j in jobs]))
    infos = [{"epochs": iters, "best_epoch": iters, "best_val_loss": float(vl[k]), "optimizer": "lbfgs"} for k in range(len(jobs))]
    if log:
        log(f"L-BFGS: {len(jobs)} linear probes, {iters} iterations, {nev} evaluations")
    return BatchedFit(prob.models(W, b), infos, time.perf_counter() - t0, 1, iters, {"evaluations": nev})


#: :meth:`_LinearProblem.solve` uses scipy's L-BFGS-B (:func:`lbfgs_b`) up to this many parameters
#: (models x features x outputs, plus biases) and ``torch.optim.LBFGS`` above. Measured, one
#: thread: EmoDB's 10-fold linear path (6,230 parameters) 5.0 s -> 2.4 s in the solver with
#: L-BFGS-B; the EmoDB search's ComParE probes (20 problems of 9,660-44,618) 12.9 s with torch
#: against 13.8 s with L-BFGS-B for all of them, a tie; the 25-layer x 5-fold sweep (768,750)
#: 10.2-12.2 s with torch against 14.2-15.5 s. L-BFGS-B's O(history² x n) bookkeeping and float64
#: copies grow with n; torch's bookkeeping is a fixed Python cost per iteration. The limit sits in
#: the measured tie, not at a measured crossover.
LBFGS_B_MAX_PARAMS = 20_000


def lbfgs_b(params: list, objective: Callable[[], Any], max_iter: int, tol: float, ftol: float) -> tuple[int, int, bool, float]:
    """Minimise ``objective()`` (a scalar torch tensor computed from ``params``, leaf tensors that
    require grad) over ``params`` in place with scipy's L-BFGS-B (``scipy.optimize.minimize``, the
    solver of scikit-learn's ``LogisticRegression`` and ``MLPClassifier(solver="lbfgs")``): history
    10 (scipy's default; with 20 its O(m² n) bookkeeping made the EmoDB search's ComParE probes
    1.7x slower than ``torch.optim.LBFGS``; with 10, 13.8 s against 12.9 s), Moré–Thuente line search, the
    iterate kept in float64 and copied into ``params`` (their own dtype) for each evaluation. Stops after ``max_iter`` iterations, when the largest gradient entry
    is at most ``tol`` (``gtol``), or when the relative decrease of the objective is at most ``ftol``.
    Its bookkeeping runs in compiled code: about 3 ms per iteration less than ``torch.optim.LBFGS``
    on the 2-core reference machine (measured on EmoDB's 10-fold linear path).

    Returns:
        (iterations, evaluations, converged: the final largest gradient entry is at most ``tol``,
        that largest entry).

    Raises:
        emo.fuse.eval.runcheck.NonFiniteError: the objective or the iterate became non-finite.
    """
    import torch
    from scipy.optimize import minimize

    sizes = [p.numel() for p in params]
    nev = [0]

    def load(theta: np.ndarray) -> None:
        with torch.no_grad():
            for p, part in zip(params, np.split(theta, np.cumsum(sizes)[:-1])):
                p.copy_(torch.from_numpy(part).view(p.shape))

    def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        load(theta)
        with torch.enable_grad():
            loss = objective()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        nev[0] += 1
        f = float(loss.detach())
        if not math.isfinite(f):
            raise NonFiniteError("the full-batch L-BFGS fit reached a non-finite objective; check the inputs for "
                                 "inf/NaN or use --optimizer adamw / --recipe adamw")
        return f, torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double() for p, g in zip(params, grads)]).numpy()

    x0 = torch.cat([p.detach().reshape(-1).double() for p in params]).numpy()
    r = minimize(value_and_grad, x0, jac=True, method="L-BFGS-B",
                 options={"maxiter": max_iter, "gtol": tol, "ftol": ftol, "maxcor": 10, "maxls": 50})
    if not np.all(np.isfinite(r.x)):
        raise NonFiniteError("the full-batch L-BFGS fit diverged (non-finite weights); check the inputs for inf/NaN "
                             "or use --optimizer adamw / --recipe adamw")
    load(r.x)
    gmax = float(np.abs(r.jac).max()) if r.jac.size else 0.0
    if not math.isfinite(gmax):
        raise NonFiniteError("the full-batch L-BFGS fit ended at a non-finite gradient; check the inputs for inf/NaN "
                             "or use --optimizer adamw / --recipe adamw")
    return int(r.nit), nev[0], bool(gmax <= tol), gmax


def torch_lbfgs(params: list, objective: Callable[[], Any], max_iter: int, tol: float, tol_change: float,
                measure: bool = True) -> tuple[int, int, bool, float | None]:
    """Minimise ``objective()`` over ``params`` in place with ``torch.optim.LBFGS`` (history 20,
    strong Wolfe line search, ``tolerance_grad=tol``, ``tolerance_change=tol_change``): the solver of
    the lbfgs recipe's non-linear heads and of linear problems above :data:`LBFGS_B_MAX_PARAMS`.

    Returns:
        (iterations, evaluations (including one at the returned weights), converged: the largest
        entry of the gradient at the returned weights is at most ``tol`` (a parameter the objective
        does not depend on, without ``.grad``, has gradient 0, as ``torch.optim.LBFGS`` treats it), that
        largest entry). With ``measure=False`` (a caller that does not use them: the
        layer sweep's probes) that last evaluation is skipped and they are ``(False, None)``.

    Raises:
        emo.fuse.eval.runcheck.NonFiniteError: the weights or the final gradient became non-finite.
    """
    import torch

    opt = compat.lbfgs_optimizer(params, lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                                 tolerance_change=tol_change, line_search_fn="strong_wolfe")  # no torch._dynamo import
    nev = [0]

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        nev[0] += 1
        return loss

    opt.step(closure)
    iters = int(opt.state[compat.lbfgs_params(opt)[0]].get("n_iter", 0))
    with torch.no_grad():
        if not all(torch.isfinite(q).all() for q in params):
            raise NonFiniteError("the full-batch L-BFGS fit diverged (non-finite weights); check the inputs for inf/NaN "
                                 "or use --optimizer adamw / --recipe adamw")
    if not measure:
        return iters, nev[0], False, None
    # the gradient at the returned weights: the strong Wolfe search restores the weights after each
    # trial, so the .grad it leaves may belong to a trial point (one more evaluation)
    closure()
    grads = [q.grad for q in params if q.grad is not None]
    gmax = max((float(g.abs().max()) for g in grads), default=0.0)
    if not math.isfinite(gmax):
        raise NonFiniteError("the full-batch L-BFGS fit ended at a non-finite gradient; check the inputs for inf/NaN "
                             "or use --optimizer adamw / --recipe adamw")
    return iters, nev[0], bool(gmax <= tol), gmax


def _l2_path(params: list, lam, solve: Callable[[int], tuple[int, int, bool, float]], val_losses: Callable[[], np.ndarray],
             l2: float | None, path: tuple[float, ...], path_iter: int, final_iter: int,
             solve_some: Callable[[np.ndarray, float, int], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """The lbfgs recipe's choice of each model's L2 (:func:`fit_lbfgs_path`), for any stacked problem.

    With a fixed ``l2``: one solve of at most ``final_iter`` iterations. Else the points of ``path``
    weakest first, each solved (``path_iter`` iterations, warm-started from the previous point) and
    scored by ``val_losses()`` ((K,) inner-validation losses); each model keeps the point with the
    lowest loss (its weights are copied per model), and the walk stops once every model's loss has
    risen :data:`PATH_PATIENCE` times in a row. Models whose best point is an end of ``path`` go on
    past it (:data:`L2_PATH_WEAKER`, :data:`L2_PATH_STRONGER`) while their loss falls: alone through
    ``solve_some`` when given, else all models are solved, the others at their own choice, and those
    restored. Either way the others' choice and weights are as without the extension (a joint refit
    afterwards still mixes every model's curvature into one L-BFGS history, so it agrees within its
    tolerance, not bitwise). On return ``params`` hold
    the chosen weights and ``lam`` (K,) the chosen strengths (the caller refits); each model's
    ``hist`` is sorted by l2.

    Args:
        params: the stacked (K, ...) parameters ``solve`` updates in place. solve(max_iter) ->
            (iterations, evaluations, converged, largest gradient entry) of the training objective at
            the current ``lam``.
        solve_some: optional ``solve_some(idx, l2, max_iter) -> (len(idx),) inner-validation losses``:
            solve only the models ``idx`` at ``l2`` from their current weights, in place (the extension
            past the path's ends then costs the extending models only); None: all models are solved.

    Returns:
        (chosen (K,) float, best_val (K,) float, hist: per model ``[[l2, val_loss], ...]``).

    Raises:
        emo.fuse.eval.runcheck.NonFiniteError: a non-finite inner-validation loss.
    """
    import torch

    K = len(lam)
    hist: list[list[list[float]]] = [[] for _ in range(K)]
    if l2 is not None:
        lam.fill_(float(l2))
        solve(final_iter)
        best_val = val_losses()
        for k in range(K):
            hist[k].append([float(l2), float(best_val[k])])
        return np.full(K, float(l2)), best_val, hist
    best_val, chosen = np.full(K, math.inf), np.full(K, path[0], dtype=float)
    best = [q.detach().clone() for q in params]
    rises, prev = np.zeros(K, dtype=int), np.full(K, math.inf)
    for a in path:
        lam.fill_(float(a))
        solve(path_iter)
        vl = val_losses()
        if not np.all(np.isfinite(vl)):
            raise NonFiniteError(f"non-finite inner-validation loss at l2={a} (inputs with inf/NaN?)")
        better = vl < best_val - 1e-9
        with torch.no_grad():
            for k in np.flatnonzero(better):
                for q, bq in zip(params, best):
                    bq[k] = q[k]
        best_val, chosen = np.where(better, vl, best_val), np.where(better, a, chosen)
        rises, prev = np.where(vl > prev, rises + 1, 0), vl
        for k in range(K):
            hist[k].append([float(a), float(vl[k])])
        if np.all(rises >= PATH_PATIENCE):
            break
    lo_end, hi_end = min(path), max(path)
    for edge, beyond in ((lo_end, [a for a in L2_PATH_WEAKER if a < lo_end]),
                         (hi_end, [a for a in L2_PATH_STRONGER if a > hi_end])):
        going = chosen == edge
        for a in beyond:
            if not going.any():
                break
            with torch.no_grad():  # warm start: every model from its best solution so far
                for q, bq in zip(params, best):
                    q.copy_(bq)
            if solve_some is not None:
                idx = np.flatnonzero(going)
                vl = best_val.copy()
                vl[idx] = solve_some(idx, float(a), path_iter)
            else:
                lam.copy_(torch.as_tensor(np.where(going, a, chosen), dtype=lam.dtype, device=lam.device))
                solve(path_iter)
                vl = val_losses()
            if not np.all(np.isfinite(vl[going])):
                raise NonFiniteError(f"non-finite inner-validation loss at l2={a} (inputs with inf/NaN?)")
            better = going & (vl < best_val - 1e-9)
            with torch.no_grad():
                for k in np.flatnonzero(better):
                    for q, bq in zip(params, best):
                        bq[k] = q[k]
            for k in np.flatnonzero(going):
                hist[k].append([float(a), float(vl[k])])
            best_val, chosen = np.where(better, vl, best_val), np.where(better, a, chosen)
            going = better  # a model goes on while its loss falls
    with torch.no_grad():
        for q, bq in zip(params, best):
            q.copy_(bq)
    lam.copy_(torch.as_tensor(chosen, dtype=lam.dtype, device=lam.device))
    return chosen, best_val, [sorted(h) for h in hist]


class _LinearProblem:
    """The linear probe of every job as one tensor problem (:func:`fit_linear_lbfgs`, and the lbfgs
    recipe's linear head in :func:`fit_lbfgs_path`).

    Model k: outputs ``z_k = ((x - m_k) / s_k) W_k + b_k`` (W_k: (F, n_out), the decoder weights of
    :class:`emo.fuse.model.heads.LinearProbe` + the separate linear decoders; n_out = classes (+1
    valence) (+3 VAD)); the standardisation is folded into the weights, so inputs are never copied
    per model; jobs with the same layer columns share one design matrix. Objective of model k:
    :func:`masked_task_losses` over its rows (``weighted``: the job's class weights and the label
    smoothing; else neither, the inner-validation loss) + ``0.5 * lam_k * ||W_k||²`` (biases unpenalised).

    Raises:
        ValueError: jobs with different feature dimensions.
    """

    def __init__(self, xs: list, y: dict[str, np.ndarray], jobs: list[Job], cfg, model_args: dict[str, Any], dtype) -> None:
        import torch

        self.jobs, self.y, self.cfg, self.model_args, self.dtype = jobs, y, cfg, model_args, dtype
        self.dev = dev = cfg.device
        K = len(jobs)
        self.disc, self.val, self.vad = ("discrete" in y and cfg.task in ("discrete", "discrete+valence"),
                                         cfg.task in ("valence", "discrete+valence"), cfg.task == "vad")
        C = self.C = int(model_args.get("n_classes", 0)) if self.disc else 0
        n_out = self.n_out = C + (1 if self.val else 0) + (3 if self.vad else 0)

        def key(j: Job):
            return tuple(None if (j.cols is None or j.cols[i] is None) else tuple(int(c) for c in j.cols[i]) for i in range(len(xs)))

        self.groups: dict[tuple, list[int]] = {}
        for k, j in enumerate(jobs):
            self.groups.setdefault(key(j), []).append(k)
        self.designs, widths = {}, {}
        for g, ks in self.groups.items():
            parts = []
            for i, x in enumerate(xs):
                sel = x if g[i] is None else (x[:, g[i][0]] if len(g[i]) == 1 else x[:, list(g[i])])
                parts.append(sel if sel.ndim == 2 else sel.reshape(len(x), -1))
            d = (parts[0] if len(parts) == 1 else torch.cat(parts, 1)).to(dtype)
            widths[g] = int(d.shape[1])
            # narrow groups (few models x outputs) keep the design transposed (F, N): see outputs()
            self.designs[g] = _transposed(d) if len(ks) * n_out < NARROW_COLUMNS else d
        F_ = self.F = next(iter(widths.values()))
        if any(w != F_ for w in widths.values()):
            raise ValueError("jobs of one L-BFGS batch must have the same feature dimension")
        self.mu = torch.zeros(K, F_, device=dev, dtype=dtype)
        self.sd = torch.ones(K, F_, device=dev, dtype=dtype)
        for k, j in enumerate(jobs):
            if j.norm is not None and all(n is not None for n in j.norm):
                self.mu[k] = torch.as_tensor(np.concatenate([n[0].reshape(-1) for n in j.norm]), device=dev)
                self.sd[k] = torch.as_tensor(np.concatenate([n[1].reshape(-1) for n in j.norm]), device=dev)
        self.N = len(xs[0])
        self.ys = {}
        for name, v in y.items():  # unlabelled rows are never in a mask; give them harmless values
            t = torch.as_tensor(v, device=dev)
            t = torch.where(t >= 0, t, 0) if name == "discrete" else torch.nan_to_num(t)
            self.ys[name] = t.to(dtype) if t.is_floating_point() else t
        self.cw = None
        if any(j.class_weight is not None for j in jobs) and self.disc:
            self.cw = torch.as_tensor(np.stack([j.class_weight if j.class_weight is not None else np.ones(C, np.float32)
                                                for j in jobs]), device=dev).to(dtype)
        order = np.asarray([k for ks in self.groups.values() for k in ks])
        self.permuted = bool(np.any(order != np.arange(K)))  # jobs not already in group order
        self.order = torch.as_tensor(order, device=dev)
        self.inv = torch.as_tensor(np.argsort(order), device=dev)
        self.sizes = [len(ks) for ks in self.groups.values()]
        self.shift = self.mu / self.sd

    def start(self):
        """(W (K, F, n_out) zeros, b (K, n_out): regression biases at the training mean), both requiring grad."""
        import torch

        K, C = len(self.jobs), self.C
        W = torch.zeros(K, self.F, self.n_out, device=self.dev, dtype=self.dtype, requires_grad=True)
        b = torch.zeros(K, self.n_out, device=self.dev, dtype=self.dtype)
        if self.val:
            b[:, C] = torch.as_tensor([float(np.mean(self.y["valence"][j.train])) for j in self.jobs], device=self.dev)
        if self.vad:
            b[:, C + (1 if self.val else 0):] = torch.as_tensor(np.stack([np.mean(self.y["vad"][j.train], 0) for j in self.jobs]),
                                                                device=self.dev)
        return W, b.requires_grad_(True)

    def mask(self, rows: list) -> Any:
        """(K, N) bool: model k's rows ``rows[k]``."""
        import torch

        m = torch.zeros(len(self.jobs), self.N, dtype=torch.bool, device=self.dev)
        for k, r in enumerate(rows):
            m[k, torch.as_tensor(np.asarray(r, dtype=np.int64))] = True
        return m

    def outputs(self, W, b, classes_first: bool = False):
        """Outputs of every model on every row (standardisation folded into the weights): (K, N, n_out),
        or with ``classes_first`` (K, n_out, N), the layout the products give and the one
        :meth:`_cross_entropy` reduces fastest (its log-softmax over 6 classes: 14 ms per evaluation
        for 125 models x 5,030 rows against 80 ms over the last dimension, measured, one thread)."""
        import torch

        A = (W / self.sd[:, :, None]).transpose(1, 2)  # (K, n_out, F)
        # one gather into group order (none when the jobs already are in it) and one split instead of
        # per-group indexing: the 25 x 5 sweep's fit 7.1 -> 6.1 s back to back (measured; why, from
        # reading autograd and not profiled: each indexed slice's backward allocates a full-size zero)
        A = A[self.order] if self.permuted else A.contiguous()
        c = b - torch.einsum("kf,kfo->ko", self.shift, W)
        outs = []
        for (g, ks), a in zip(self.groups.items(), torch.split(A, self.sizes)):
            a = a.reshape(-1, self.F)  # (Kg*n_out, F), rows (model, output)
            if len(ks) * self.n_out < NARROW_COLUMNS:  # B @ X.T, X.T stored: see _narrow_times_design
                outs.append(_narrow_times_design(a, self.designs[g]).view(len(ks), self.n_out, self.N))
            else:
                z = self.designs[g] @ a.T  # (N, Kg*n_out)
                outs.append(z.reshape(self.N, len(ks), self.n_out).permute(1, 2, 0))
        zc = torch.cat(outs)
        zc = (zc[self.inv] if self.permuted else zc) + c[:, :, None]  # (K, n_out, N)
        return zc if classes_first else zc.transpose(1, 2)

    def losses(self, z, mask, weighted: bool):
        """(K,) task losses of every model on its ``mask`` rows (``weighted``: class weights and label smoothing)."""
        import torch

        C, d = self.C, {}
        if self.disc and not (self.val or self.vad):
            return self._cross_entropy(z.transpose(1, 2), mask, weighted)
        if self.disc:
            d["logits"] = z[..., :C]
        if self.val:
            d["valence"] = z[..., C]
        if self.vad:
            d["vad"] = z[..., C + (1 if self.val else 0):]
        cw = self.cw if weighted else None
        ls = float(self.cfg.label_smoothing) if weighted else 0.0
        f = torch.vmap(lambda o, m, w: sum(masked_task_losses(o, self.ys, m, w, ls).values()),
                       in_dims=(0, 0, 0 if cw is not None else None))
        return f(d, mask, cw)

    def _cross_entropy(self, z, mask, weighted: bool):
        """(K,) :func:`masked_task_losses` cross-entropy of every model at once (no ``vmap``) from
        classes-first outputs ``z`` (K, C, N): per row ``(1 - ε) w_y (-log p_y) + ε / C Σ_c w_c (-log p_c)``
        (``F.cross_entropy`` with ``weight`` and ``label_smoothing``), summed over the mask and
        divided by the masked rows' ``Σ w_y``."""
        import torch

        C = self.C
        logp = torch.log_softmax(z, 1)  # (K, C, N)
        yd = self.ys["discrete"]
        nll = -logp.gather(1, yd.view(1, 1, -1).expand(z.shape[0], 1, -1)).squeeze(1)  # (K, N)
        eps = float(self.cfg.label_smoothing) if weighted else 0.0
        cw = self.cw if weighted else None
        if cw is None:
            per = (1 - eps) * nll - (eps / C) * logp.sum(1) if eps else nll
            den = mask.sum(1).clamp(min=1).to(z.dtype)
        else:
            wy = cw[:, yd]  # (K, N)
            per = (1 - eps) * wy * nll - (eps / C) * (logp * cw[:, :, None]).sum(1)
            den = torch.where(mask, wy, 0.0).sum(1)
        return torch.where(mask, per, 0.0).sum(1) / den

    def _objective_losses(self, W, b, mask, weighted: bool):
        """(K,) :meth:`losses` of (W, b) on the ``mask`` rows, classification alone in the classes-first layout."""
        if self.disc and not (self.val or self.vad):
            return self._cross_entropy(self.outputs(W, b, classes_first=True), mask, weighted)
        return self.losses(self.outputs(W, b), mask, weighted)

    def solve(self, W, b, mask, lam, max_iter: int, tol: float, tol_change: float,
              measure: bool = True) -> tuple[int, int, bool, float | None]:
        """Minimise every model's weighted objective on its ``mask`` rows with L2 ``lam`` (K,) by one
        L-BFGS over the sum, in place: :func:`lbfgs_b` (``tol_change``: its ``ftol``) up to
        :data:`LBFGS_B_MAX_PARAMS` parameters, else ``torch.optim.LBFGS`` (strong Wolfe;
        ``tol_change``: its ``tolerance_change``). Returns and raises as :func:`lbfgs_b`; ``measure``:
        see :func:`torch_lbfgs` (L-BFGS-B always reports the gradient at its result)."""

        def objective():
            return self._objective_losses(W, b, mask, True).sum() + 0.5 * (lam[:, None, None] * W * W).sum()

        if W.numel() + b.numel() <= LBFGS_B_MAX_PARAMS:
            return lbfgs_b([W, b], objective, max_iter, tol, tol_change)
        return torch_lbfgs([W, b], objective, max_iter, tol, tol_change, measure)

    def val_losses(self, W, b, mask) -> np.ndarray:
        """(K,) float64 unweighted, unsmoothed task losses on the ``mask`` rows."""
        import torch

        with torch.no_grad():
            return self._objective_losses(W, b, mask, False).cpu().numpy().astype(float)

    def models(self, W, b) -> list:
        """One :class:`FusionModel` per job (eval mode) with the decoder weights of (W, b)."""
        import torch

        C, out = self.C, []
        for k, j in enumerate(self.jobs):
            m = init_model(j.model_args or self.model_args, j.seed, {kk: v[j.train] for kk, v in self.y.items()},
                           self.cfg.decoder, self.dev)
            with torch.no_grad():
                dec = m.decoder
                if self.disc:
                    dec.emotion.weight.copy_(W[k, :, :C].T)
                    dec.emotion.bias.copy_(b[k, :C])
                if self.val:
                    dec.valence.weight.copy_(W[k, :, C:C + 1].T)
                    dec.valence.bias.copy_(b[k, C:C + 1])
                if self.vad:
                    o = C + (1 if self.val else 0)
                    dec.vad.weight.copy_(W[k, :, o:].T)
                    dec.vad.bias.copy_(b[k, o:])
            m.eval()
            out.append(m)
        return out


# ---------------------------------------------------------------------------
# The deterministic full-batch recipe (``--recipe lbfgs``): every fold in one L-BFGS solve,
# the L2 strength chosen per fold on its inner-validation rows along a warm-started path
# ---------------------------------------------------------------------------

#: L2 path of the lbfgs recipe, weakest first: the coefficient ``l2`` of ``0.5 * l2 * ||W||²``
#: added to each fold's *mean* training loss (scikit-learn's ``C = 1 / (l2 * n_train)``; its
#: ``MLPClassifier(alpha)`` is ``l2 = alpha / n_train``). Half-decade steps as
#: ``LogisticRegressionCV(Cs=...)`` would use them; the path stops once every fold's
#: inner-validation loss has risen for :data:`PATH_PATIENCE` consecutive points. Weakest first
#: (``LogisticRegressionCV`` goes strongest first, which is equivalent for a convex head): a
#: non-convex head warm-started from a strongly regularised solution sits near the all-zero
#: saddle of a ReLU network, whose gradient is below any tolerance, and never leaves it.
L2_PATH = (0.001, 0.003, 0.01, 0.03, 0.1)
PATH_PATIENCE = 2
#: Where a model's lowest inner-validation loss sits at an end of :data:`L2_PATH`, the optimum may
#: lie beyond it: the path goes on past that end through these points (nearest first, each solve
#: warm-started from the model's best solution so far) while the loss of such a model still falls.
#: Added 2026-12-08 after the 1,434-clip synthetic set's linear head chose the weakest point in 9 of
#: 24 folds; models whose choice lies inside the path are not affected (their weights are restored).
L2_PATH_WEAKER = (3e-4, 1e-4, 3e-5, 1e-5)
L2_PATH_STRONGER = (0.3, 1.0, 3.0, 10.0)
#: L-BFGS iterations at most per point of the path (warm-started: an approximate solve that ranks
#: the points), and for the final solve (the refit, or a fixed ``l2``), for the linear head (convex,
#: float64) and the other heads; and the gradient tolerance (largest entry of the gradient of the
#: summed per-fold objectives, i.e. of each fold's own objective).
PATH_MAX_ITER = {"linear": 100, "other": 40}
FINAL_MAX_ITER = {"linear": 500, "other": 150}
PATH_TOL = {"linear": 1e-7, "other": 1e-4}
#: The full-batch recipe holds every fold's gathered training rows at once (models x rows x
#: features); above this many bytes it does not "fit" and the minibatch recipe runs instead.
RECIPE_MAX_BYTES = 3 << 30
#: Heads the full-batch recipe trains (deterministic with dropout off; univa: soft targets).
RECIPE_HEADS = ("linear", "mlp", "afg", "attention", "transformer")


def choose_recipe(cfg, inputs, n_models: int, rows_per_model: int, y: dict | None = None,
                  speakers_missing: bool = False, other: str | None = None) -> dict[str, Any]:
    """The training recipe of a run and why: ``{"recipe": "lbfgs" | "adamw", "reason": str, "requested": cfg.recipe}``.

    ``auto`` (the default) picks ``lbfgs`` (:func:`fit_lbfgs_path`: deterministic full-batch
    L-BFGS of every fold at once, L2 chosen per fold on its inner-validation rows) for
    utterance-level inputs that fit in memory with fewer than ``TrainConfig.LARGE`` (2000) training
    rows per fold, and ``adamw`` (minibatches, early stopping, ``seeds`` averaged) otherwise: large
    training sets (each L-BFGS iteration is a full pass; an AdamW epoch makes many steps), frame-level inputs, multi-label / UniVA / pseudo-labelled
    (soft-target) training, uncertainty loss weighting, ``--sequential``, per-fold stores
    (``other``), or more than :data:`RECIPE_MAX_BYTES` of gathered training inputs.

    Args:
        cfg: :class:`emo.fuse.config.TrainConfig` (``recipe``: auto | lbfgs | adamw).
        inputs: the run's :class:`emo.fuse.training.inputs.FeatureInput` list.
        n_models: models solved together (folds); rows_per_model: the largest fold's training + validation rows.
        y: the label dict (soft-target keys ``multihot``/``weight``/``va`` rule the recipe out).
        other: a reason from the caller that rules the full-batch recipe out.

    Raises:
        ValueError: ``recipe="lbfgs"`` requested for a configuration it cannot train (the reason).
    """
    from emo.fuse.training.inputs import as_inputs

    inputs = as_inputs(inputs)
    if cfg.recipe == "adamw":
        return {"recipe": "adamw", "reason": "--recipe adamw", "requested": "adamw"}
    why = other or batched_unsupported(cfg, inputs, speakers_missing, y)
    if why is None and cfg.head not in RECIPE_HEADS:
        why = f"--head {cfg.head} trains with soft targets / contrastive losses (minibatch recipe)"
    if why is None and cfg.loss_weighting != "fixed":
        why = "--loss-weighting uncertainty learns its weights by minibatch descent"
    if why is None and not cfg.batched:
        why = "--sequential"
    if why is None and rows_per_model >= cfg.LARGE and cfg.recipe == "auto":
        why = (f"{rows_per_model} training rows per fold (>= {cfg.LARGE}): minibatch epochs reach the optimum in "
               "fewer passes over the data than full-batch L-BFGS iterations")
    if why is None:
        feat = sum(len(inp.layers) * inp.dim for inp in inputs)
        need = 2 * n_models * rows_per_model * feat * 4
        if need > RECIPE_MAX_BYTES:
            why = (f"the full-batch inputs of {n_models} folds ({need / 2**30:.1f} GiB) exceed "
                   f"{RECIPE_MAX_BYTES / 2**30:.0f} GiB: minibatches")
    if why is not None:
        if cfg.recipe == "lbfgs":
            raise ValueError(f"--recipe lbfgs cannot train this run: {why}")
        return {"recipe": "adamw", "reason": why, "requested": cfg.recipe}
    return {"recipe": "lbfgs", "requested": cfg.recipe,
            "reason": "utterance-level inputs that fit in memory: deterministic full-batch L-BFGS of every fold at once"}


def _fit_linear_path(xs: list, y: dict[str, np.ndarray], jobs: list[Job], cfg, model_args: dict[str, Any],
                     log: Callable[[str], None] | None, l2: float | None, refit: bool, path: tuple[float, ...], dtype,
                     t0: float) -> BatchedFit:
    """:func:`fit_lbfgs_path` for the linear head: the same path, choice and refit (:func:`_l2_path`) on
    :class:`_LinearProblem` (the probe's tensor form: no per-model copies of the inputs, no ``vmap``
    of the module), in ``dtype`` (float64). ``results/bench_fuse.json``, EmoDB ``--head linear``,
    one thread: 4.6 s of training at dfb010d against 10.3 s at 1a88cfb (before this path), the
    same UAR 0.8039."""
    import torch

    K = len(jobs)
    prob = _LinearProblem(xs, y, jobs, cfg, model_args, dtype)
    W, b = prob.start()
    tmask, vmask = prob.mask([j.train for j in jobs]), prob.mask([j.val for j in jobs])
    tol, tol_change = PATH_TOL["linear"], (1e-12 if dtype == torch.float64 else 1e-9)
    lam = torch.zeros(K, dtype=dtype, device=prob.dev)
    runs: list[tuple[int, int, bool, float]] = []

    def solve(mask, max_iter: int) -> tuple[int, int, bool, float]:
        runs.append(prob.solve(W, b, mask, lam, max_iter, tol, tol_change))
        return runs[-1]

    def solve_some(idx: np.ndarray, a: float, max_iter: int) -> np.ndarray:
        """The models ``idx`` alone at L2 ``a`` (their own :class:`_LinearProblem`), written back into W, b."""
        sub_jobs = [jobs[k] for k in idx]
        sub = _LinearProblem(xs, y, sub_jobs, cfg, model_args, dtype)
        ti = torch.as_tensor(idx, device=prob.dev)
        Ws, bs = W.detach()[ti].clone().requires_grad_(True), b.detach()[ti].clone().requires_grad_(True)
        sub.solve(Ws, bs, sub.mask([j.train for j in sub_jobs]), torch.full((len(idx),), a, dtype=dtype, device=prob.dev),
                  max_iter, tol, tol_change)
        with torch.no_grad():
            W[ti], b[ti] = Ws, bs
        return sub.val_losses(Ws, bs, sub.mask([j.val for j in sub_jobs]))

    chosen, best_val, hist = _l2_path([W, b], lam, lambda it: solve(tmask, it), lambda: prob.val_losses(W, b, vmask),
                                      l2, path, PATH_MAX_ITER["linear"], FINAL_MAX_ITER["linear"], solve_some)
    if refit:
        solve(prob.mask([np.concatenate([j.train, j.val]) for j in jobs]), FINAL_MAX_ITER["linear"])
    infos = _path_infos(runs, chosen, best_val, hist, refit, l2, "linear", tol, convex=True)
    if log:
        log(_path_log(f"{K} linear models", infos))
    return BatchedFit(prob.models(W, b), infos, time.perf_counter() - t0, 1, infos[0]["epochs"],
                      {"evaluations": infos[0]["evaluations"]})


def _path_infos(runs: list, chosen: np.ndarray, best_val: np.ndarray, hist: list, refit: bool, l2: float | None,
                head: str, tol: float, convex: bool) -> list[dict[str, Any]]:
    """The per-model ``info`` of :func:`fit_lbfgs_path` (both its forms) from its solves ``runs``
    ((iterations, evaluations, converged, largest gradient entry) each, the last one the final solve);
    ``head``: ``linear`` or ``other`` (its iteration limits), ``convex``: the linear probe's form."""
    iters = sum(r[0] for r in runs)
    cap = FINAL_MAX_ITER[head] if (refit or l2 is not None) else PATH_MAX_ITER[head]
    return [{"epochs": iters, "best_epoch": iters, "best_val_loss": float(best_val[k]), "optimizer": "lbfgs",
             "l2": float(chosen[k]), "path": hist[k], "refit": bool(refit), "convex": convex,
             "converged": bool(runs[-1][2]), "grad_max": runs[-1][3], "tol": tol, "final_iterations": runs[-1][0],
             "max_iter": cap, "evaluations": sum(r[1] for r in runs)} for k in range(len(chosen))]


def _path_log(what: str, infos: list[dict[str, Any]]) -> str:
    """The lbfgs recipe's log line for ``what`` (e.g. "10 linear models") fitted as ``infos``."""
    i0 = infos[0]
    return (f"L-BFGS recipe: {what} in one solve, {i0['epochs']} iterations, {i0['evaluations']} evaluations, "
            f"l2 chosen {sorted(set(i['l2'] for i in infos))}{', refitted on train + inner validation' if i0['refit'] else ''}; "
            f"{final_gradient(i0)}")


def final_gradient(fit: dict[str, Any]) -> str:
    """The final solve's state in words, from a fit record (:data:`FIT_RECORD`): its largest gradient
    entry against the tolerance, and its iterations against the limit (a solve can also stop short
    of the tolerance before the limit: no further decrease of the objective, or a failed line search)."""
    it, cap, g, tol = fit["final_iterations"], fit["max_iter"], fit["grad_max"], fit["tol"]
    if fit["converged"]:
        return f"final solve: largest gradient entry {g:.1e} <= tolerance {tol:g} after {it} iterations"
    why = "at its iteration limit" if it >= cap else f"after {it} of at most {cap} iterations (no further decrease)"
    return f"the final solve stopped {why} with largest gradient entry {g:.1e} above its tolerance {tol:g}"


def fit_lbfgs_path(xs: list, y: dict[str, np.ndarray], jobs: list[Job], cfg, model_args: dict[str, Any],
                   log: Callable[[str], None] | None = None, l2: float | None = None, refit: bool = True,
                   path: tuple[float, ...] = L2_PATH, dtype=None) -> BatchedFit:
    """Fit every job's :class:`emo.fuse.model.multimodal.FusionModel` by full-batch L-BFGS, all jobs in one solve.

    The parameters of the K models are stacked ((K, ...) leaves) and the model runs under
    ``torch.vmap(torch.func.functional_call)``; the objective is the *sum* of the K per-model
    objectives, each on its own rows, so each model's gradient is its own objective's gradient
    and one ``torch.optim.LBFGS`` (strong Wolfe line search) over the concatenation reaches every
    model's stationary point. Per model k::

        J_k(θ) = task losses of model k over its rows (mean cross-entropy with the configured class
                 weights and label smoothing; MSE of valence / VAD)  +  0.5 · l2_k · Σ ||W||²

    over the weight matrices (biases, 1-d parameters and layer weights unpenalised, as the AdamW
    recipe's decay groups). Dropout is off (``model_args["dropout"]`` should be 0; the model runs in
    eval mode), so the fit is deterministic given the initial weights (``torch.manual_seed(job.seed)``).
    For the linear head (convex: the multinomial logistic / least-squares model; no layer weights,
    JDEV or frames) the same path runs on :class:`_LinearProblem` (:func:`_fit_linear_path`: the
    probe's tensor form, float64, from zero weights) and its optimum is scikit-learn's
    ``LogisticRegression(C=1 / (l2 * n_rows))`` (``tests/test_fuse_recipe.py``).

    Choosing ``l2`` (``l2=None``): the path :data:`L2_PATH`, weakest first, each point warm-started
    from the previous solution (as ``LogisticRegressionCV`` does); after each point every model's
    inner-validation loss (cross-entropy / MSE without weights or smoothing) is computed and each
    model keeps the point with the lowest (the path stops early once every model's loss has risen
    :data:`PATH_PATIENCE` times in a row). With ``refit`` the chosen point is refitted on the
    model's training + inner-validation rows (warm-started; ``LogisticRegressionCV(refit=True)``).
    With a fixed ``l2`` one solve on the training rows.

    Args:
        xs, y, jobs, model_args, log: as :func:`fit_batched` (``Job.val`` rows choose l2).
        cfg: resolved :class:`emo.fuse.config.TrainConfig` (device, label smoothing, decoder).
        l2: fixed L2 coefficient (``None``: chosen along ``path``). refit: see above.
        dtype: torch dtype of the solve (default float64 for the linear head, else float32).

    Returns:
        :class:`BatchedFit`; ``info`` per model: ``epochs`` (L-BFGS iterations, all solves),
        ``best_epoch`` (same), ``best_val_loss``, ``optimizer: "lbfgs"``, ``l2`` (chosen),
        ``path`` (``[[l2, val_loss], ...]``, sorted by l2), ``refit`` (bool), ``convex`` (the linear
        head), ``converged`` (final gradient below tolerance), ``grad_max`` (the final solve's largest
        gradient entry, of the summed objective), ``tol``, ``final_iterations`` and ``max_iter`` (the
        final solve's tolerance, iterations and limit).

    Raises:
        ValueError: models of different parameter shapes, jobs without training/validation rows.
        emo.fuse.eval.runcheck.NonFiniteError: the objective became non-finite (inputs with inf/NaN).
    """
    import copy

    import torch
    from torch.func import functional_call

    t0 = time.perf_counter()
    dev = cfg.device
    K = len(jobs)
    for j in jobs:
        if len(j.train) == 0 or len(j.val) == 0:
            raise ValueError("every job needs training and validation rows")
    linear = (model_args.get("head") == "linear")
    if linear and lbfgs_unsupported(cfg) is None and all((j.model_args or model_args).get("head") == "linear" for j in jobs):
        return _fit_linear_path(xs, y, jobs, cfg, model_args, log, l2, refit, path, dtype or torch.float64, t0)
    dt = dtype or (torch.float64 if linear else torch.float32)
    ytr = [{k: v[j.train] for k, v in y.items()} for j in jobs]
    models = [init_model(j.model_args or model_args, j.seed, ytr[i], cfg.decoder, dev) for i, j in enumerate(jobs)]
    names = [n for n, _ in models[0].named_parameters()]
    shapes = [tuple(p.shape) for _, p in models[0].named_parameters()]
    for m in models:
        if [tuple(p.shape) for _, p in m.named_parameters()] != shapes:
            raise ValueError("models of one batch must have the same parameter shapes")
    decay = [not _no_decay(n, p) for n, p in models[0].named_parameters()]
    base = copy.deepcopy(models[0]).to(dt).eval()
    P = [torch.stack([dict(m.named_parameters())[n].detach() for m in models]).to(dt).requires_grad_(True) for n in names]
    yt = {k: torch.as_tensor(v, device=dev) for k, v in y.items()}
    yt = {k: (v.to(dt) if v.is_floating_point() else v) for k, v in yt.items()}
    cw = None
    if any(j.class_weight is not None for j in jobs):
        c = len(next(j.class_weight for j in jobs if j.class_weight is not None))
        cw = torch.as_tensor(np.stack([j.class_weight if j.class_weight is not None else np.ones(c, np.float32)
                                       for j in jobs]), device=dev).to(dt)
    ls = float(cfg.label_smoothing)

    def gather(rows: list[np.ndarray]):
        """Per input (K, R, L, D) inputs of every model on its rows (padded with its first row), the
        (K, R) mask and the labels."""
        rmax = max(len(r) for r in rows)
        idx = torch.as_tensor(np.stack([np.concatenate([r, np.full(rmax - len(r), r[0])]) for r in rows]), device=dev)
        mask = torch.as_tensor(np.stack([np.arange(rmax) < len(r) for r in rows]), device=dev)
        out = []
        for i, x in enumerate(xs):
            if jobs[0].cols is not None and jobs[0].cols[i] is not None:
                c = torch.as_tensor(np.stack([j.cols[i] for j in jobs]), device=dev)
                g = x[idx[:, :, None], c[:, None, :]]
            else:
                g = x[idx]
            g = g.to(dt)
            if jobs[0].norm is not None and jobs[0].norm[i] is not None:
                m = torch.as_tensor(np.stack([j.norm[i][0] for j in jobs]), device=dev).to(dt)
                s = torch.as_tensor(np.stack([j.norm[i][1] for j in jobs]), device=dev).to(dt)
                g = (g - m[:, None]) / s[:, None]
            out.append(g)
        return out, mask, {k: v[idx] for k, v in yt.items()}

    def per_model(p, xb, yb, mb, cwb, smoothing):
        out = functional_call(base, dict(zip(names, p)), (xb,))
        return sum(masked_task_losses(out, yb, mb, cwb, smoothing).values())

    def losses(data, weighted: bool):
        xb, mb, yb = data
        use_cw = cw if weighted else None
        fn = torch.vmap(lambda p, a, b, c, d: per_model(p, a, b, c, d, ls if weighted else 0.0),
                        in_dims=(0, 0, 0, 0, 0 if use_cw is not None else None))
        return fn(P, xb, yb, mb, use_cw)  # (K,)

    lam = torch.zeros(K, dtype=dt, device=dev)
    runs: list[tuple[int, int, bool, float]] = []
    tol = PATH_TOL["linear" if linear else "other"]

    def solve(data, max_iter: int) -> tuple[int, int, bool, float]:
        def objective():
            pen = sum((lam * (p * p).flatten(1).sum(1)).sum() for p, d in zip(P, decay) if d)
            return losses(data, True).sum() + 0.5 * pen

        runs.append(torch_lbfgs(P, objective, max_iter, tol, 1e-12 if dt == torch.float64 else 1e-9))
        return runs[-1]

    def val_losses() -> np.ndarray:
        with torch.no_grad():
            return losses(val_data, False).cpu().numpy().astype(float)

    with _vmappable_attention(), heap_allocations():
        train_data = gather([np.asarray(j.train) for j in jobs])
        val_data = gather([np.asarray(j.val) for j in jobs])
        chosen, best_val, hist = _l2_path(P, lam, lambda it: solve(train_data, it), val_losses, l2, path,
                                          PATH_MAX_ITER["linear" if linear else "other"],
                                          FINAL_MAX_ITER["linear" if linear else "other"])
        if refit:
            del train_data
            solve(gather([np.sort(np.concatenate([j.train, j.val])) for j in jobs]), FINAL_MAX_ITER["linear" if linear else "other"])
    # a linear head that reaches here has layer weights or JDEV: not the convex probe
    infos = _path_infos(runs, chosen, best_val, hist, refit, l2, "linear" if linear else "other", tol, convex=False)
    with torch.no_grad():
        for k, m in enumerate(models):
            for n, p in zip(names, P):
                dict(m.named_parameters())[n].copy_(p[k].to(torch.float32))
            m.eval()
    if log:
        log(_path_log(f"{K} models", infos))
    return BatchedFit(models, infos, time.perf_counter() - t0, 1, infos[0]["epochs"], {"evaluations": infos[0]["evaluations"]})
