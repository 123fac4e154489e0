"""HLFT: hierarchical layer fine-tuning with adapters on cached layer prefixes (MRAC '24, eq. 1–4).

Source: Zhao, Chen, Li, Jiang, Xie, "Improving Multimodal Emotion Recognition by Leveraging
Acoustic Adaptation and Visual Alignment" (MRAC '24), acoustic adaptation. HLFT(16–21) of HuBERT-large reaches
80.24 WAF on MER 2024 Train&Val against 73.98 for the frozen HL(16–21).

The model (:class:`HLFTModel`), from the cached hidden state entering layer ``a``:

1. layers ``a..b`` with a bottleneck adapter each (eq. 1, :mod:`emo.extract.adapters`), frozen
   otherwise; their outputs ``h_i`` (B, T, D), i = a..b;
2. learnable layer weights ``F = Σ_i w_i h_i`` (frame level; pooling is linear, so the pooled
   ``f = mean_t F = Σ_i w_i f_i`` over the k pooled layer outputs ``f_i``), free weights, no
   softmax, initialised 1.0 on ``init_layer`` (18) and 0 elsewhere, or ``1/k`` each (``uniform``)
   (:class:`emo.fuse.model.heads.LayerWeights`);
3. masked reconstruction: during training a random set of frames of ``F`` is replaced by a
   learned mask embedding (zero-initialised), HuBERT-style span masking (each real frame starts a
   masked span of ``mask_span`` = 10 frames with probability ``mask_prob`` = 0.065, as HuBERT's
   ``mask_prob``/``mask_length``; the number of spans per utterance is
   ``floor(mask_prob · T / mask_span + u)``, u ~ U(0, 1), as in wav2vec 2.0's sampler), the masked
   sequence is mean-pooled over real frames to ``g`` and an MLP (FC–ReLU–FC, hidden
   ``mlp_hidden`` = 256; the paper is silent) gives ``f_masked = MLP(g)``;
4. ``L_ce = CE(FC(f_masked), y)`` (eq. 2), ``L_mlm = MSE(f_masked, f)`` (eq. 3),
   ``L = L_ce + L_mlm`` (eq. 4). The reconstruction target ``f`` is detached (stop-gradient;
   the paper is silent; without it both sides can shrink together).

At evaluation nothing is masked: prediction = ``FC(MLP(f))``. Recipe (paper): batch 16,
Adam, lr 1e-4, weight decay 0.02 (Adam's L2 term); early stopping on the inner validation split
of each fold (its CE loss, or its WAF with ``select="waf"``), by :class:`emo.fuse.training.stopping.EarlyStopping`
(the one rule of every loop: improvement = decrease by more than ``MIN_DELTA`` = 1e-5). One adapter set per fold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from emo.extract.adapters import AdaptedWindow, masked_mean, pad_sequences
from emo.fuse.model.heads import LayerWeights
from emo.fuse.eval.protocols import Fold
from emo.fuse.training.stopping import EarlyStopping
from torch import nn


@dataclass
class HLFTConfig:
    """Training settings of :func:`fit_hlft` (defaults: the paper's recipe where it gives one).

    Attributes:
        init_layer: layer key whose weight starts at 1.0 (``"18"``), or ``"uniform"`` (1/k each).
        mask_prob, mask_span: HuBERT span masking (0.065, 10 frames).
        mlp_hidden: hidden width of the FC–ReLU–FC reconstruction MLP (256; not in the paper).
        batch_size, lr, weight_decay: 16, 1e-4, 0.02 (Adam).
        optimizer: ``adam`` (the paper's: ``torch.optim.Adam``, whose weight decay is an L2 term in the
            gradient) or ``adamw`` (decoupled weight decay, ``torch.optim.AdamW``).
        epochs, patience: at most ``epochs``; stop after ``patience`` epochs without improvement.
        select: ``loss`` (inner-validation CE) or ``waf`` (inner-validation WAF) for early stopping.
        max_frames: training crops each sequence to a random window of at most this many frames
            (``None``: whole sequences); evaluation always uses whole sequences.
        seed: adapters, head, masks and batch order.
        threads: torch intra-op threads (0: leave as is).
    """

    init_layer: str = "18"
    mask_prob: float = 0.065
    mask_span: int = 10
    mlp_hidden: int = 256
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.02
    optimizer: str = "adam"
    epochs: int = 30
    patience: int = 3
    select: str = "loss"
    max_frames: int | None = None
    eval_batch: int = 64
    seed: int = 0
    threads: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        checks = [
            (0 <= self.mask_prob < 1, f"--mask-prob must be in [0, 1), not {self.mask_prob}"),
            (self.mask_span >= 1, "--mask-span must be >= 1"),
            (self.mlp_hidden >= 1 and self.batch_size >= 1 and self.epochs >= 1 and self.patience >= 1,
             "--mlp-hidden, --batch-size, --epochs and --patience must be >= 1"),
            (self.lr > 0 and self.weight_decay >= 0, "--lr must be > 0 and --weight-decay >= 0"),
            (self.select in ("loss", "waf"), f"--select must be loss or waf, not {self.select!r}"),
            (self.optimizer in ("adam", "adamw"), f"--optimizer must be adam or adamw, not {self.optimizer!r}"),
            (self.max_frames is None or self.max_frames >= 1, "--max-frames must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


def span_mask(mask: torch.Tensor, prob: float, span: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """HuBERT / wav2vec 2.0 span masking over the real frames of each row.

    Args:
        mask: (B, T) bool, True on real frames.
        prob: probability that a frame starts a masked span (HuBERT ``mask_prob`` 0.065... the
            expected masked share before overlaps is ``prob``).
        span: span length in frames (HuBERT ``mask_length`` 10), cut at the end of the utterance.
        gen: optional CPU generator (reproducible masks).

    Returns:
        (B, T) bool, True where a frame is masked; only real frames are ever masked. Number of
        spans per row: ``floor(prob * T_i / span + u)``, u ~ U(0, 1) (wav2vec 2.0's sampler), start
        positions drawn without replacement from ``0..T_i - span`` (``0`` when ``T_i <= span``).
    """
    lengths = mask.sum(1).cpu()
    out = torch.zeros(mask.shape, dtype=torch.bool)
    if prob <= 0:
        return out.to(mask.device)
    u = torch.rand(len(lengths), generator=gen)
    for i, n in enumerate(lengths.tolist()):
        if n == 0:
            continue
        k = math.floor(prob * n / span + float(u[i]))
        if k <= 0:
            continue
        n_starts = max(1, n - span + 1)
        k = min(k, n_starts)
        starts = torch.randperm(n_starts, generator=gen)[:k]
        for s in starts.tolist():
            out[i, s:min(s + span, n)] = True
    return out.to(mask.device)


class HLFTModel(nn.Module):
    """Adapted window + layer weights + masked-reconstruction MLP + classifier (eq. 1–4).

    Args:
        window: :class:`emo.extract.adapters.AdaptedWindow` (layers a..b with adapters).
        n_classes: C.
        init_layer: ``"18"`` (any key of ``window.layer_keys``) or ``"uniform"``.
        mlp_hidden: FC–ReLU–FC hidden width.

    forward(hidden (B, T, D), mask (B, T) bool, frame_mask (B, T) bool or None) → dict with
    ``logits`` (B, C), ``f`` (B, D) pooled weighted features, ``f_masked`` (B, D), ``layers``
    (B, k, D) the pooled outputs of layers a..b (what an HLFT feature store holds).
    """

    def __init__(self, window: AdaptedWindow, n_classes: int, init_layer: str = "18", mlp_hidden: int = 256) -> None:
        super().__init__()
        keys = window.layer_keys
        if init_layer != "uniform" and init_layer not in keys:
            raise ValueError(f"--layer-weights-init {init_layer!r} is not in the adapter window {keys[0]}-{keys[-1]} "
                             "(use a layer of the window or 'uniform')")
        self.window = window
        d = window.hidden_size
        self.weights = LayerWeights(keys, init_layer if init_layer != "uniform" else "uniform")
        self.mask_emb = nn.Parameter(torch.zeros(d))
        self.mlp = nn.Sequential(nn.Linear(d, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, d))
        self.fc = nn.Linear(d, n_classes)

    def trainable(self) -> list[nn.Parameter]:
        """Adapters, layer weights, mask embedding, MLP and classifier (never encoder weights)."""
        return [p for p in self.parameters() if p.requires_grad]

    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything trainable except the adapters (saved next to them as ``head.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("window.")}

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, frame_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        outs = self.window(hidden, mask)  # k x (B, T, D)
        stacked = torch.stack(outs, dim=2)  # (B, T, k, D)
        frames = self.weights(stacked)  # (B, T, D): F = Σ w_i h_i
        f = masked_mean(frames, mask)
        if frame_mask is not None and bool(frame_mask.any()):
            g = masked_mean(torch.where(frame_mask[..., None], self.mask_emb.to(frames.dtype), frames), mask)
        else:
            g = f
        f_masked = self.mlp(g)
        layers = torch.stack([masked_mean(o, mask) for o in outs], dim=1)  # (B, k, D)
        return {"logits": self.fc(f_masked), "f": f, "f_masked": f_masked, "layers": layers}


def hlft_loss(out: dict[str, torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = L_ce + L_mlm`` (eq. 4) with ``L_ce = CE(FC(f_masked), y)`` (eq. 2) and
    ``L_mlm = MSE(f_masked, stopgrad(f))`` (eq. 3, mean over batch and dimensions)."""
    ce = nn.functional.cross_entropy(out["logits"], y)
    mlm = nn.functional.mse_loss(out["f_masked"], out["f"].detach())
    return ce + mlm, {"ce": ce.item(), "mlm": mlm.item()}


# ---------------------------------------------------------------------------
# Training and prediction
# ---------------------------------------------------------------------------


def _batches(lengths: np.ndarray, bs: int, gen: torch.Generator) -> list[np.ndarray]:
    """Shuffled minibatches with light length bucketing (rows sorted by length inside windows of
    20 batches, batch order shuffled) so each batch pads little."""
    n = len(lengths)
    perm = torch.randperm(n, generator=gen).numpy()
    window = 20 * bs
    parts = [perm[w:w + window][np.argsort(lengths[perm[w:w + window]], kind="stable")] for w in range(0, n, window)]
    perm = np.concatenate(parts)
    batches = [perm[s:s + bs] for s in range(0, n, bs)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def _crop(seq: np.ndarray, max_frames: int | None, gen: torch.Generator) -> np.ndarray:
    if max_frames is None or len(seq) <= max_frames:
        return seq
    s = int(torch.randint(0, len(seq) - max_frames + 1, (1,), generator=gen))
    return seq[s:s + max_frames]


def eval_batches(lengths: Sequence[int], batch: int = 64, max_frames: int = 8192) -> list[np.ndarray]:
    """Length-sorted evaluation batches of at most ``batch`` rows and ``max_frames`` padded frames
    (rows × longest sequence), so long clips never build a huge padded tensor; a longer single
    sequence forms a batch of its own."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1 > batch or (len(cur) + 1) * int(lengths[i]) > max_frames):
            out.append(np.array(cur))
            cur = []
        cur.append(int(i))
    if cur:
        out.append(np.array(cur))
    return out


def predict_hlft(model: HLFTModel, seqs: Sequence[np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
    """Evaluate without masking, in length-sorted batches (:func:`eval_batches`).

    Args:
        seqs: N prefix sequences, each (T_i, D) float16/float32.

    Returns:
        ``probs`` (N, C) float32 (softmax), ``layers`` (N, k, D) float32 pooled outputs of the adapted
        layers a..b, ``f`` (N, D) float32, rows in input order.
    """
    model.eval()
    n = len(seqs)
    probs = layers = f = None
    with torch.no_grad():
        for idx in eval_batches([len(s) for s in seqs], batch):
            h, m = pad_sequences([seqs[i] for i in idx])
            out = model(h, m)
            p = torch.softmax(out["logits"], -1).numpy()
            if probs is None:
                probs = np.zeros((n, p.shape[1]), np.float32)
                layers = np.zeros((n, *out["layers"].shape[1:]), np.float32)
                f = np.zeros((n, out["f"].shape[1]), np.float32)
            probs[idx], layers[idx], f[idx] = p, out["layers"].numpy(), out["f"].numpy()
    return {"probs": probs, "layers": layers, "f": f}


def pooled_layers(window: AdaptedWindow, seqs: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
    """Pooled outputs of the window's layers (N, k, D) float32 for prefix sequences (T_i, D):
    what ``emo extract --adapters`` writes (mean over real frames, as every emo store)."""
    window.eval()
    n = len(seqs)
    out = np.zeros((n, len(window.layer_keys), window.hidden_size), np.float32)
    with torch.no_grad():
        for idx in eval_batches([len(s) for s in seqs], batch):
            h, m = pad_sequences([seqs[i] for i in idx])
            outs = window(h, m)
            out[idx] = torch.stack([masked_mean(o, m) for o in outs], dim=1).numpy()
    return out


@dataclass
class FitInfo:
    """What one :func:`fit_hlft` call did (per epoch losses, the selected epoch, seconds)."""

    epochs: int = 0
    best_epoch: int = 0
    best_score: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def fit_hlft(window: AdaptedWindow, seqs_tr: Sequence[np.ndarray], y_tr: np.ndarray, seqs_va: Sequence[np.ndarray],
             y_va: np.ndarray, n_classes: int, cfg: HLFTConfig, train_adapters: bool = True,
             progress: Callable[[str], None] | None = None) -> tuple[HLFTModel, FitInfo]:
    """Train one HLFT model (fresh identity adapters and head) with early stopping.

    Args:
        window: the adapted window; its adapters are re-initialised (seeded) here.
        seqs_tr, seqs_va: prefix sequences (T_i, D) (hidden state ``a - 1``), float16 or float32.
        y_tr, y_va: int class indices (n,).
        n_classes: C.
        cfg: :class:`HLFTConfig`.
        train_adapters: ``False`` keeps the adapters at identity (the frozen-encoder ablation:
            only layer weights, MLP and classifier train).

    Returns:
        (model with the best inner-validation weights, in eval mode, :class:`FitInfo`).

    Raises:
        ValueError: bad settings, empty splits, labels outside ``[0, C)``.
    """
    from emo.fuse.eval.metrics import classification_metrics

    cfg.validate()
    if len(seqs_tr) == 0 or len(seqs_va) == 0:
        raise ValueError("HLFT needs non-empty training and inner-validation splits")
    for name, yy in (("train", y_tr), ("validation", y_va)):
        if len(yy) and (yy.min() < 0 or yy.max() >= n_classes):
            raise ValueError(f"{name} labels outside [0, {n_classes})")
    t0 = time.perf_counter()
    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        window.reset_adapters(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = HLFTModel(window, n_classes, cfg.init_layer, cfg.mlp_hidden)
        for p in window.adapters.parameters():
            p.requires_grad_(train_adapters)
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        opt = opt_cls(model.trainable(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        lengths = np.array([len(s) for s in seqs_tr])
        ytr = torch.as_tensor(np.asarray(y_tr), dtype=torch.long)
        yva = np.asarray(y_va)
        info = FitInfo()
        stop = EarlyStopping(cfg.patience, keep=_trainable_key)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            tot, nb = {"loss": 0.0, "ce": 0.0, "mlm": 0.0}, 0
            for idx in _batches(lengths, cfg.batch_size, gen):
                h, m = pad_sequences([_crop(seqs_tr[i], cfg.max_frames, gen) for i in idx])
                fm = span_mask(m, cfg.mask_prob, cfg.mask_span, gen)
                out = model(h, m, fm)
                loss, parts = hlft_loss(out, ytr[idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"HLFT loss became {float(loss)} at epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot["loss"] += loss.item()
                tot["ce"] += parts["ce"]
                tot["mlm"] += parts["mlm"]
                nb += 1
            pv = predict_hlft(model, seqs_va, cfg.eval_batch)
            val_ce = float(nn.functional.nll_loss(torch.log(torch.as_tensor(pv["probs"]).clamp_min(1e-12)),
                                                  torch.as_tensor(yva, dtype=torch.long)))
            val_waf = classification_metrics(yva, pv["probs"].argmax(1), n_classes)["waf"]
            row = {"epoch": epoch, **{k: v / max(nb, 1) for k, v in tot.items()}, "val_ce": val_ce, "val_waf": val_waf}
            info.history.append(row)
            if progress:
                progress(f"epoch {epoch}: loss {row['loss']:.4f} (ce {row['ce']:.4f}, mlm {row['mlm']:.4f}), "
                         f"val ce {val_ce:.4f}, val WAF {val_waf:.4f}")
            score = val_ce if cfg.select == "loss" else -val_waf
            info.epochs = epoch
            done = stop.update(epoch, score, model)
            info.best_score, info.best_epoch = stop.best, stop.best_epoch
            if done:
                break
        stop.restore(model)
        model.eval()
        info.seconds = time.perf_counter() - t0
        return model, info
    finally:
        torch.set_num_threads(prev_threads)


def _trainable_key(k: str) -> bool:
    """State-dict keys of trainable tensors: adapters and the head (never frozen encoder weights)."""
    return not k.startswith("window.") or k.startswith("window.adapters.")


@dataclass
class HLFTFoldResult:
    """One fold: metrics on its evaluation rows, fit info, and where its adapter file went."""

    fold: Fold
    metrics: dict[str, Any]
    info: FitInfo
    probs: np.ndarray
    adapter_file: str | None = None
    sha256: str | None = None


def train_hlft_cv(window: AdaptedWindow, seqs: Sequence[np.ndarray], y: np.ndarray, folds: list[Fold], n_classes: int,
                  cfg: HLFTConfig, out_dir=None, provenance: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Cross-validated HLFT: one adapter set (plus head) per fold, trained on ``fold.train``,
    early-stopped on ``fold.val``, scored once on ``fold.test`` (WAF, UAR, accuracy).

    Args:
        seqs: prefix sequences of all N samples, (T_i, D); y: int class indices (N,).
        folds: from :mod:`emo.fuse.eval.protocols` (k-fold, leave-one-speaker-out, predefined split).
        out_dir: when given, ``fold-K.safetensors`` is written there per fold (adapters + ``head.*``),
            its metadata naming the fold, its held-out sample indices and ``provenance``.

    Returns:
        ``{"folds": [per fold dict], "summary": {"mean", "std"}, "pooled": metrics over all
        out-of-fold predictions, "oof_probs": (N, C) float32 (NaN where a row was never tested),
        "results": [HLFTFoldResult]}``.
    """
    from pathlib import Path

    from emo.extract.adapters import save_adapters
    from emo.fuse.eval.metrics import classification_metrics, summarize

    y = np.asarray(y)
    oof = np.full((len(seqs), n_classes), np.nan, np.float32)
    results: list[HLFTFoldResult] = []
    for k, fold in enumerate(folds):
        if len(fold.train) == 0 or len(fold.val) == 0 or len(fold.test) == 0:
            raise ValueError(f"fold {fold.name}: empty train/val/test split")
        if set(fold.test.tolist()) & (set(fold.train.tolist()) | set(fold.val.tolist())):
            raise ValueError(f"fold {fold.name}: evaluation rows overlap the training rows")
        model, info = fit_hlft(window, [seqs[i] for i in fold.train], y[fold.train], [seqs[i] for i in fold.val],
                               y[fold.val], n_classes, cfg,
                               progress=(lambda s, n=fold.name: progress(f"{n} {s}")) if progress else None)
        pt = predict_hlft(model, [seqs[i] for i in fold.test], cfg.eval_batch)["probs"]
        oof[fold.test] = pt
        metrics = classification_metrics(y[fold.test], pt.argmax(1), n_classes)
        r = HLFTFoldResult(fold, metrics, info, pt)
        if out_dir is not None:
            path = Path(out_dir) / f"fold-{k}.safetensors"
            r.sha256 = save_adapters(window, path, {f"head.{n}": v for n, v in model.head_state().items()},
                                     info={"fold": k, "fold_name": fold.name, "n_classes": n_classes,
                                           "test_rows": fold.test.tolist(), "config": asdict(cfg),
                                           "provenance": provenance or {}})
            r.adapter_file = str(path)
        results.append(r)
        if progress:
            progress(f"{fold.name}: WAF {metrics['waf']:.4f}, UAR {metrics['uar']:.4f}, accuracy {metrics['accuracy']:.4f} "
                     f"(best epoch {info.best_epoch}/{info.epochs}, {info.seconds:.0f} s)")
    tested = np.concatenate([f.test for f in folds])
    pooled = classification_metrics(y[tested], oof[tested].argmax(1), n_classes)
    rows = [{**r.fold.as_dict(), "metrics": r.metrics, "best_epoch": r.info.best_epoch, "epochs": r.info.epochs,
             "seconds": round(r.info.seconds, 2), "history": r.info.history, "adapter_file": r.adapter_file,
             "sha256": r.sha256} for r in results]
    return {"folds": rows, "summary": summarize([r.metrics for r in results]), "pooled": pooled, "oof_probs": oof,
            "results": results}
