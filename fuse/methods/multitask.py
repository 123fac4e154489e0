"""Several label sets per run: emotion and intention (MEIJU), emotion and sentiment (MELD), ...

Source: Lin, Li, Li, Li, "Multi-modal Fusion for Emotion and Intention Joint Understanding"
(MEIJU challenge, ICASSP 2025). Their recipe: train an emotion classifier and an intention
classifier separately, freeze them, then train a *joint module* on top that lets each task read
the other's representation; their Table 3 ablates the joint module. The challenge's score is
JRBM, the harmonic mean of the two tasks' weighted F1 (:func:`jrbm`).

``--task NAME[+NAME...]`` names the tasks; each is a discrete label column: ``emotion`` (or
``discrete``) is the manifest's ``discrete`` label, any other name is the column
``Sample.labels[NAME]`` (``labels.csv`` column of that name), or ``--label-column
NAME=COLUMN`` to read another column. Each task has its own class list (``emotion``: the
dataset's; others: the sorted distinct values), its own cross-entropy and its own metrics.
The single-task names ``discrete``, ``valence``, ``vad``, ``discrete+valence`` keep their
meaning (:mod:`emo.fuse.training.train`); :func:`is_multitask` tells the two apart.

``--joint`` (how the tasks meet):

* ``none``: one independent :class:`emo.fuse.model.multimodal.FusionModel` per task, trained exactly as
  a single-task run (same seeds, same code path: its outputs equal those of ``--task emotion``
  alone). The paper's "without joint module" row.
* ``crossattn``: the ``none`` models are trained, frozen, and a :class:`JointModule` is trained on
  their fused states (the paper's recipe; the module's internals are emo's choice, see there).
* ``shared``: one fusion head shared by all tasks, one linear classifier per task, summed
  cross-entropies (classic hard parameter sharing; the usual "multi-task" baseline).

Rows used by a run must carry every task's label (the others are dropped, counted in the config).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from emo.fuse.eval.protocols import Fold
from emo.fuse.training.stopping import EarlyStopping
from emo.fuse.training.threads import pinned_threads

JOINTS = ("none", "crossattn", "shared")
#: Task names read from the manifest's ``discrete`` label (the dataset's emotion classes).
EMOTION_NAMES = ("emotion", "discrete")


@dataclass(frozen=True)
class LabelTask:
    """One classification task: its name, the label column it reads (``discrete`` = the manifest's
    emotion label, else a key of ``Sample.labels``) and its class list (index order)."""

    name: str
    column: str
    classes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "classes": list(self.classes)}


def is_multitask(task: str, label_columns: list[str] | None = None) -> bool:
    """True when ``task`` is not one of the single-task names of :data:`emo.fuse.model.decoders.TASKS`
    (or label columns are given)."""
    from emo.fuse.model.decoders import TASKS

    return bool(label_columns) or task not in TASKS


def parse_tasks(task: str, label_columns: list[str] | None = None) -> list[tuple[str, str]]:
    """``"emotion+intent"`` and ``["intent=intention_label"]`` → ``[("emotion", "discrete"), ("intent", "intention_label")]``.

    Raises:
        ValueError: empty or duplicate task names, a regression task name (``valence``, ``vad``:
            use the single-task ``--task discrete+valence``), a malformed ``--label-column`` or one
            for a task not in ``--task``.
    """
    names = [t.strip() for t in task.split("+")]
    if not names or any(not n for n in names):
        raise ValueError(f"--task {task!r}: empty task name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--task {task!r}: task(s) {', '.join(dup)} given twice")
    reg = [n for n in names if n in ("valence", "vad", "arousal", "dominance")]
    if reg:
        raise ValueError(f"--task {task!r}: multi-task runs take discrete label columns; regression task(s) "
                         f"{', '.join(reg)} exist only as --task valence/vad/discrete+valence")
    cols: dict[str, str] = {}
    for lc in label_columns or []:
        k, eq, v = lc.partition("=")
        if not eq or not k.strip() or not v.strip():
            raise ValueError(f"--label-column {lc!r}: expected NAME=COLUMN")
        if k.strip() not in names:
            raise ValueError(f"--label-column {lc!r}: {k.strip()!r} is not one of the tasks {', '.join(names)}")
        cols[k.strip()] = v.strip()
    return [(n, cols.get(n, "discrete" if n in EMOTION_NAMES else n)) for n in names]


def _label(sample, column: str) -> str | None:
    if column in EMOTION_NAMES:
        return sample.discrete
    v = (sample.labels or {}).get(column)
    return None if v is None or str(v).strip() == "" else str(v).strip()


def task_targets(samples: list, specs: list[tuple[str, str]], classes: list[str] | None = None
                 ) -> tuple[list[LabelTask], dict[str, np.ndarray], np.ndarray]:
    """Class-index labels of every task and the mask of rows that have all of them.

    Args:
        samples: :class:`emo.extract.datasets.base.Sample` rows. specs: :func:`parse_tasks`.
        classes: the dataset's emotion classes (for the ``discrete`` column).

    Returns:
        (tasks, y, mask): y[name] int64 (N,) class indices (-1 where missing); mask bool (N,).

    Raises:
        emo.fuse.training.data.FeatureError: a column no sample has, a task with fewer than 2 classes,
            or no row with every label.
    """
    from emo.fuse.training.data import FeatureError

    tasks, y = [], {}
    mask = np.ones(len(samples), dtype=bool)
    for name, col in specs:
        raw = [_label(s, col) for s in samples]
        present = sorted({v for v in raw if v is not None})
        if not present:
            have = sorted({k for s in samples for k in (s.labels or {})})
            raise FeatureError(f"task {name!r}: no sample has a {col!r} label (label columns in the manifest: "
                               f"{', '.join(have) or 'none'}; map one with --label-column {name}=COLUMN)")
        cls = list(classes) if (col in EMOTION_NAMES and classes) else present
        unknown = sorted(set(present) - set(cls))
        if unknown:
            raise FeatureError(f"task {name!r}: labels {unknown} are not among the dataset classes {cls}")
        if len(cls) < 2:
            raise FeatureError(f"task {name!r}: column {col!r} has a single class {cls}; a classifier needs two")
        index = {c: i for i, c in enumerate(cls)}
        y[name] = np.array([index[v] if v is not None else -1 for v in raw], dtype=np.int64)
        mask &= y[name] >= 0
        tasks.append(LabelTask(name, col, tuple(cls)))
    if not mask.any():
        raise FeatureError(f"no sample has every label of the tasks {', '.join(n for n, _ in specs)}")
    return tasks, y, mask


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

def jrbm(scores: list[float] | tuple[float, ...]) -> float:
    """JRBM, the MEIJU challenge score: the harmonic mean of the tasks' scores,
    ``2·M_emo·M_int / (M_emo + M_int)`` for two tasks (Lin et al., ICASSP 2025 MEIJU), generalised
    to ``n / Σ 1/M_t`` for n tasks (emo's extension). 0 when any score is 0.

    Raises:
        ValueError: no scores, or a score outside [0, 1] or not finite.
    """
    s = [float(v) for v in scores]
    if not s:
        raise ValueError("jrbm: no scores")
    if any(not math.isfinite(v) or v < 0 or v > 1 for v in s):
        raise ValueError(f"jrbm: scores must be in [0, 1], got {s}")
    if any(v == 0 for v in s):
        return 0.0
    return len(s) / sum(1.0 / v for v in s)


def task_metrics(probs: dict[str, np.ndarray], y: dict[str, np.ndarray], tasks: list[LabelTask]) -> dict[str, Any]:
    """Per task ``<task>_waf`` (weighted F1), ``<task>_uar``, ``<task>_accuracy``, ``<task>_micro_f1``,
    ``<task>_confusion``, and over tasks ``jrbm`` (:func:`jrbm` of the weighted F1s) and
    ``jrbm_micro`` (of the micro-F1s).

    Args:
        probs: task → (n, C_t) class probabilities. y: task → (n,) int class indices.
    """
    from sklearn.metrics import f1_score

    from emo.fuse.eval.metrics import classification_metrics

    m: dict[str, Any] = {}
    for t in tasks:
        pred = probs[t.name].argmax(1)
        c = classification_metrics(y[t.name], pred, len(t.classes))
        for k, v in c.items():
            m[f"{t.name}_{k}"] = v
        m[f"{t.name}_micro_f1"] = float(f1_score(y[t.name], pred, average="micro"))
    m["jrbm"] = jrbm([m[f"{t.name}_waf"] for t in tasks])
    m["jrbm_micro"] = jrbm([m[f"{t.name}_micro_f1"] for t in tasks])
    return m


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def embed(model, xs: list):
    """The fused utterance state ``z`` (B, H) of a :class:`emo.fuse.model.multimodal.FusionModel`, i.e. its
    forward pass up to the decoder (layer pooling, frame encoders, head)."""
    return model.embed(xs)[0]


def _torch():
    import torch
    from torch import nn

    return torch, nn


def build_joint_module(dims: list[int], n_classes: list[int], hidden: int = 128, n_heads: int = 4, dropout: float = 0.1):
    """The joint module of ``--joint crossattn`` (emo's design; the MEIJU paper gives no internals).

    Inputs per task t: the frozen task model's fused state ``z_t`` (B, D_t) and its class
    posterior ``p_t`` (B, C_t). Each task is represented by two tokens of width ``hidden``:
    its state ``s_t = W_t z_t`` and its decision ``d_t = E_t p_t``. Task t reads the others by
    cross-attention, its state as the query over the other tasks' tokens:

        a_t = MHA(query = s_t, keys = values = {s_u, d_u : u ≠ t})          (B, hidden)
        g_t = σ(W_g,t [s_t ; a_t])                                              learned gate
        h_t = LayerNorm(s_t + g_t ⊙ a_t),   logits_t = V_t h_t

    The gate lets a task ignore the other (g → 0) where it does not help, so the module can fall
    back to its own representation; reading the other's posterior lets it use, e.g., that a
    "questioning" intention makes "surprise" more likely.

    Returns:
        an ``nn.Module``: forward(zs: list of (B, D_t), ps: list of (B, C_t)) → list of logits (B, C_t);
        ``last_gates`` holds the mean gate per task of the last call (for inspection).
    """
    torch, nn = _torch()

    class _Joint(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h = hidden
            heads = max(k for k in range(1, n_heads + 1) if h % k == 0)
            self.state = nn.ModuleList(nn.Linear(d, h) for d in dims)
            self.decision = nn.ModuleList(nn.Linear(c, h) for c in n_classes)
            self.attn = nn.ModuleList(nn.MultiheadAttention(h, heads, dropout=dropout, batch_first=True) for _ in dims)
            self.gate = nn.ModuleList(nn.Linear(2 * h, h) for _ in dims)
            self.norm = nn.ModuleList(nn.LayerNorm(h) for _ in dims)
            self.drop = nn.Dropout(dropout)
            self.out = nn.ModuleList(nn.Linear(h, c) for c in n_classes)
            self.last_gates: list[float] = []

        def forward(self, zs: list, ps: list) -> list:
            s = [torch.relu(m(z)) for m, z in zip(self.state, zs)]
            d = [m(p) for m, p in zip(self.decision, ps)]
            logits, gates = [], []
            for t in range(len(s)):
                kv = torch.stack([x for u in range(len(s)) if u != t for x in (s[u], d[u])], dim=1)  # (B, 2(T-1), h)
                a, _ = self.attn[t](s[t][:, None], kv, kv, need_weights=False)
                a = a[:, 0]
                g = torch.sigmoid(self.gate[t](torch.cat([s[t], a], dim=-1)))
                gates.append(float(g.detach().mean()))
                logits.append(self.out[t](self.drop(self.norm[t](s[t] + g * a))))
            self.last_gates = gates
            return logits

    if len(dims) < 2:
        raise ValueError("the joint module needs at least two tasks")
    return _Joint()


def build_shared_model(model_args: dict[str, Any], n_classes: list[int]):
    """``--joint shared``: one :class:`emo.fuse.model.multimodal.FusionModel` trunk (its own decoder is
    the first task's classifier) plus a linear classifier per further task on the same fused state.

    forward(xs) → list of logits (B, C_t), one per task.
    """
    _, nn = _torch()
    from emo.fuse.model.multimodal import FusionModel

    class _Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = FusionModel(**{**model_args, "task": "discrete", "n_classes": n_classes[0], "decoder": "separate"})
            self.extra = nn.ModuleList(nn.Linear(self.trunk.head.out_dim, c) for c in n_classes[1:])

        def forward(self, xs: list) -> list:
            z = embed(self.trunk, xs)
            return [self.trunk.decoder.emotion(z)] + [m(z) for m in self.extra]

    return _Shared()


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def _rows(xs: list, idx):
    return [x[idx] for x in xs]


def _predict_logits(fn: Callable, xs: list, n: int, batch: int) -> list:
    """Run ``fn(list of row-batches) -> list of (b, C_t) logits`` over n rows in order; numpy softmax probs per task."""
    torch, _ = _torch()
    parts: list[list] = []
    with torch.no_grad():
        for s in range(0, n, batch):
            out = fn(_rows(xs, slice(s, s + batch)))
            if not parts:
                parts = [[] for _ in out]
            for k, o in enumerate(out):
                parts[k].append(torch.softmax(o, -1))
    return [torch.cat(p).cpu().numpy().astype(np.float32) for p in parts]


def fit_multi(module, forward: Callable, xs_tr: list, ys_tr: list, xs_va: list, ys_va: list, cfg, seed: int,
              label_smoothing: float = 0.0, eval_batch: int = 512) -> tuple[Any, dict[str, Any]]:
    """Train ``module`` (already built, on ``cfg.device``) whose ``forward(xs) -> [logits_t]`` gives
    one (B, C_t) logit tensor per task, on the summed cross-entropies; AdamW (``cfg.lr``,
    ``cfg.weight_decay`` on matrices), shuffled minibatches of ``cfg.batch_size``, early stopping
    on the summed validation loss (patience ``cfg.patience``), best weights restored.

    Args:
        xs_*: lists of row-indexable inputs (tensors (n, ...) or :class:`emo.fuse.model.frames.PackedFrames`).
        ys_*: one int64 tensor (n,) per task.

    Returns:
        (module in eval mode, info: ``epochs``, ``best_epoch``, ``best_val_loss``).
    """
    torch, _ = _torch()
    from torch.nn import functional as F

    torch.manual_seed(seed)
    decay = [p for n, p in module.named_parameters() if p.ndim >= 2 and p.requires_grad]
    no_decay = [p for n, p in module.named_parameters() if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    n = len(xs_tr[0])
    bs = max(1, min(cfg.batch_size, n))
    gen = torch.Generator().manual_seed(seed)
    n_va = len(xs_va[0])

    def loss_of(outs, ys, ls):
        return sum(F.cross_entropy(o, y, label_smoothing=ls) for o, y in zip(outs, ys))

    def val_loss() -> float:
        module.eval()
        total = 0.0
        with torch.no_grad():
            for s in range(0, n_va, eval_batch):
                sl = slice(s, s + eval_batch)
                outs = forward(_rows(xs_va, sl))
                total += float(loss_of(outs, [y[sl] for y in ys_va], 0.0)) * len(ys_va[0][sl])
        return total / max(n_va, 1)

    stopping, epoch = EarlyStopping(cfg.patience), 0
    for epoch in range(1, cfg.epochs + 1):
        module.train()
        perm = torch.randperm(n, generator=gen)
        stop = n - (1 if n % bs == 1 and n > 1 else 0)
        for s in range(0, stop, bs):
            idx = perm[s:s + bs].to(cfg.device)
            loss = loss_of(forward(_rows(xs_tr, idx)), [y[idx] for y in ys_tr], label_smoothing)
            if not torch.isfinite(loss):  # the guard of emo.fuse.training.fit: a NaN model never reaches a run directory
                from emo.fuse.eval.runcheck import NonFiniteError

                raise NonFiniteError(f"the training loss became non-finite (NaN/inf) in epoch {epoch}: inputs too large or "
                                     f"a learning rate of {cfg.lr} too high; try --normalize global or a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if stopping.update(epoch, val_loss(), module):
            break
    stopping.restore(module)
    module.eval()
    return module, stopping.info(epoch)


@dataclass
class MultiConfig:
    """Multi-task settings next to :class:`emo.fuse.config.TrainConfig`: ``joint`` (one of
    :data:`JOINTS`) and the joint module's width ``joint_hidden``."""

    joint: str = "none"
    joint_hidden: int = 128

    def validate(self) -> None:
        if self.joint not in JOINTS:
            raise ValueError(f"--joint must be one of {', '.join(JOINTS)}, not {self.joint!r}")
        if self.joint_hidden < 1:
            raise ValueError("--joint-hidden must be >= 1")


def train_multitask_cv(blocks: dict[str, Any], inputs: list[dict[str, Any]], y: dict[str, np.ndarray],
                       tasks: list[LabelTask], folds: list[Fold], cfg, multi: MultiConfig,
                       speakers: list[str | None] | None = None, test_idx: np.ndarray | None = None,
                       progress: Callable[[str], None] | None = None):
    """Cross-validated multi-task training on preloaded arrays (the API behind ``emo fuse train
    --task A+B``).

    Args:
        blocks, inputs, folds, speakers, test_idx: as :func:`emo.fuse.eval.cv.train_cv`.
        y: task name → int64 (N,) class indices (:func:`task_targets`); rows used by folds must have all.
        tasks: the :class:`LabelTask` list (order = output order).
        cfg: :class:`emo.fuse.config.TrainConfig` (its ``task``/``decoder`` are ignored: every task is
            a classification with the separate decoder). multi: :class:`MultiConfig`.

    Returns:
        :class:`emo.fuse.eval.cv.CVResult` whose metrics are :func:`task_metrics` (per task and JRBM),
        outputs ``probs/<task>`` (n, C_t), states per fold per seed with keys ``<task>.<param>``
        (``none``/``crossattn``: the task models), ``joint.<param>`` (``crossattn``) or
        ``shared.<param>`` (``shared``); diagnostics hold the joint gates.

    Raises:
        ValueError: bad settings, fewer than two tasks with ``--joint crossattn``, empty folds.
    """
    from emo.fuse.training.inputs import as_inputs

    inputs = as_inputs(inputs)
    multi.validate()
    if multi.joint == "crossattn" and len(tasks) < 2:
        raise ValueError("--joint crossattn needs at least two tasks (--task A+B)")
    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))
    cfg = copy.copy(cfg)
    cfg.task, cfg.decoder, cfg.loss_weighting = "discrete", "separate", "fixed"
    cfg.validate()
    with pinned_threads(cfg.threads):  # torch and numpy's / scipy's BLAS pools
        return _train_multitask_cv(blocks, inputs, y, tasks, folds, cfg, multi, speakers, test_idx, progress)


def _train_multitask_cv(blocks, inputs, y, tasks, folds, cfg, multi, speakers, test_idx, progress):
    import torch

    from emo.fuse.training.data import Normalizer
    from emo.fuse.eval.metrics import summarize
    from emo.fuse.training.minibatch import torch_inputs
    from emo.fuse.eval.cv import CVResult, fold_inputs
    from emo.fuse.training.fit import average_outputs, class_weight_balanced, fit_model, predict_model

    names = [t.name for t in tasks]
    ncls = [len(t.classes) for t in tasks]
    dev = cfg.device
    base_norm = Normalizer(cfg.normalize)
    if cfg.normalize == "speaker":
        if speakers is None:
            raise ValueError("--normalize speaker needs speaker ids")
        base_norm.fit(blocks, np.arange(len(speakers)), speakers)
    xs_shared = torch_inputs(base_norm.transform(blocks), inputs, dev) if cfg.normalize == "none" else None
    fold_rows, states, norms, diags, oof_parts, test_outs = [], [], [], [], [], []
    for fi, fold in enumerate(folds):
        t0 = time.perf_counter()
        if len(fold.train) == 0 or len(fold.val) == 0 or len(fold.test) == 0:
            raise ValueError(f"fold {fold.name}: empty train/val/test split")
        norm, xs = fold_inputs(blocks, inputs, fold, cfg.normalize, base_norm, speakers, dev, xs_shared)
        def sel(rows, xs=xs):
            return [x[torch.as_tensor(rows)] for x in xs]

        xtr, xva, xte = sel(fold.train), sel(fold.val), sel(fold.test)
        xtest = sel(test_idx) if test_idx is not None and len(test_idx) else None
        fold_states, outs, touts, infos, gates = [], [], [], [], []
        for s in range(cfg.seeds):
            seed = cfg.seed + s
            state: dict[str, Any] = {}
            info: dict[str, Any] = {}
            if multi.joint == "shared":
                args = cfg.model_args(inputs, ncls[0])
                torch.manual_seed(seed)  # initialisation depends on the seed only
                model = build_shared_model(args, ncls).to(dev)
                ytr = [torch.as_tensor(y[t][fold.train], device=dev) for t in names]
                yva = [torch.as_tensor(y[t][fold.val], device=dev) for t in names]
                model, info["shared"] = fit_multi(model, model, xtr, ytr, xva, yva, cfg, seed, cfg.label_smoothing)
                state.update({f"shared.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()})
                pe = _predict_logits(model, xte, len(fold.test), 512)
                outs.append({f"probs/{t}": p for t, p in zip(names, pe)})
                if xtest is not None:
                    pt = _predict_logits(model, xtest, len(test_idx), 512)
                    touts.append({f"probs/{t}": p for t, p in zip(names, pt)})
            else:
                models = []
                for t, c in zip(names, ncls):
                    cw = class_weight_balanced(y[t][fold.train], c) if cfg.class_weights else None
                    m, info[t] = fit_model(xtr, {"discrete": y[t][fold.train]}, xva, {"discrete": y[t][fold.val]}, cfg,
                                           cfg.model_args(inputs, c), seed, cw)
                    models.append(m)
                    state.update({f"{t}.{k}": v.detach().cpu().clone() for k, v in m.state_dict().items()})
                if multi.joint == "none":
                    outs.append({f"probs/{t}": predict_model(m, xte)["probs"] for t, m in zip(names, models)})
                    if xtest is not None:
                        touts.append({f"probs/{t}": predict_model(m, xtest)["probs"] for t, m in zip(names, models)})
                else:
                    for m in models:
                        m.requires_grad_(False)

                    def frozen(rows_x, models=models):
                        with torch.no_grad():
                            zs, ps = [], []
                            for m in models:
                                z = embed(m, rows_x)
                                zs.append(z)
                                ps.append(torch.softmax(m.decoder(z)["logits"], -1))
                        return zs, ps

                    k_models = len(models)

                    def feats(xsub, n, frozen=frozen, k_models=k_models):
                        parts = [frozen(_rows(xsub, slice(a, a + 512))) for a in range(0, n, 512)]
                        return [torch.cat([p[0][k] for p in parts]) for k in range(k_models)] + \
                               [torch.cat([p[1][k] for p in parts]) for k in range(k_models)]

                    T = len(models)
                    ftr, fva, fte = feats(xtr, len(fold.train)), feats(xva, len(fold.val)), feats(xte, len(fold.test))
                    torch.manual_seed(seed)
                    joint = build_joint_module([int(f.shape[1]) for f in ftr[:T]], ncls, multi.joint_hidden,
                                               dropout=min(cfg.dropout, 0.3)).to(dev)
                    def fwd(f, joint=joint, T=T):
                        return joint(f[:T], f[T:])

                    ytr = [torch.as_tensor(y[t][fold.train], device=dev) for t in names]
                    yva = [torch.as_tensor(y[t][fold.val], device=dev) for t in names]
                    joint, info["joint"] = fit_multi(joint, fwd, ftr, ytr, fva, yva, cfg, seed, cfg.label_smoothing)
                    state.update({f"joint.{k}": v.detach().cpu().clone() for k, v in joint.state_dict().items()})
                    pe = _predict_logits(fwd, fte, len(fold.test), 4096)
                    gates.append(list(joint.last_gates))
                    outs.append({f"probs/{t}": p for t, p in zip(names, pe)})
                    if xtest is not None:
                        ftest = feats(xtest, len(test_idx))
                        touts.append({f"probs/{t}": p for t, p in zip(names, _predict_logits(fwd, ftest, len(test_idx), 4096))})
            fold_states.append(state)
            infos.append(info)
        out = average_outputs(outs)
        if touts:
            test_outs.extend(touts)
        metrics = task_metrics({t: out[f"probs/{t}"] for t in names}, {t: y[t][fold.test] for t in names}, tasks)
        diag: dict[str, Any] = {"fits": infos}
        if gates:
            diag["joint_gates"] = gates
        diags.append(diag)
        oof_parts.append((fold.test, fi, out))
        states.append(fold_states)
        norms.append(norm)
        fold_rows.append({**fold.as_dict(), "metrics": metrics, "epochs": [_epochs(i) for i in infos],
                          "seconds": round(time.perf_counter() - t0, 3)})
        if progress:
            progress(f"{fold.name}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in [f"{t}_waf" for t in names] + ["jrbm"]))
    idx = np.concatenate([p[0] for p in oof_parts])
    oof = {"index": idx, "fold": np.concatenate([np.full(len(p[0]), p[1]) for p in oof_parts])}
    for k in oof_parts[0][2]:
        oof[k] = np.concatenate([p[2][k] for p in oof_parts])
    pooled = task_metrics({t: oof[f"probs/{t}"] for t in names}, {t: y[t][idx] for t in names}, tasks)
    test = None
    if test_outs:
        tout = average_outputs(test_outs)
        test = {"index": np.asarray(test_idx), **tout}
        if all(np.all(y[t][test_idx] >= 0) for t in names):
            test["metrics"] = task_metrics({t: tout[f"probs/{t}"] for t in names}, {t: y[t][test_idx] for t in names}, tasks)
    summary = summarize([r["metrics"] for r in fold_rows])
    return CVResult(fold_rows, summary, pooled, oof, test, states, norms, diags)


def _epochs(info: dict[str, Any]) -> dict[str, int]:
    return {k: int(v["epochs"]) for k, v in info.items()}


# ---------------------------------------------------------------------------
# Stores in, run directory out
# ---------------------------------------------------------------------------

def train_multitask(features_dir: str | Path, dataset: str, features: list[str], cfg, task: str,
                    label_columns: list[str] | None = None, multi: MultiConfig | None = None, protocol: str = "5",
                    out: str | Path | None = None, align: str = "strict", test_splits: list[str] | None = None,
                    command: list[str] | None = None, progress: Callable[[str], None] | None = None,
                    augmented: list[str] | None = None, evaluate_on: str | None = None):
    """Load features and every task's labels, build folds (stratified on the first task), run
    :func:`train_multitask_cv` and write the run directory (:func:`save_multitask_run`).
    ``augmented``/``evaluate_on``: as :func:`emo.fuse.training.train.train` (:mod:`emo.fuse.methods.augmented`).

    Returns:
        (result, config).

    Raises:
        emo.fuse.training.data.FeatureError, emo.fuse.eval.protocols.ProtocolError, ValueError: as :func:`emo.fuse.training.train.train`.
    """
    from emo.fuse.training.data import load_features
    from emo.fuse.eval.protocols import make_folds

    multi = multi or MultiConfig()
    multi.validate()
    specs = parse_tasks(task, label_columns)
    fs = load_features(features_dir, dataset, features, align, frames=cfg.frames)
    tasks, y, mask = task_targets(fs.samples, specs, fs.classes)
    rows = np.flatnonzero(mask)
    if test_splits is None:
        test_splits = ["test"] if protocol == "split" else []
    folds, test_idx = make_folds(protocol, fs, {"discrete": y[tasks[0].name]}, rows, cfg.seed, test_splits)
    from emo.fuse.methods.augmented import apply_augmentation

    blocks, names, speakers = fs.blocks, fs.names, fs.speakers
    aug = apply_augmentation(features_dir, dataset, fs, y, folds, test_idx, augmented, evaluate_on)
    if aug is not None:
        blocks, y, folds, test_idx, names, speakers = aug.blocks, aug.y, aug.folds, aug.test_idx, aug.names, aug.speakers
    cfg = cfg.resolve(max((len(f.train) for f in folds), default=0))
    result = train_multitask_cv(blocks, fs.inputs, y, tasks, folds, cfg, multi, speakers, test_idx, progress)
    config = {
        "command": command, "kind": "multitask", "dataset": fs.dataset, "features_dir": str(features_dir),
        "feature_specs": [inp.spec for inp in fs.inputs], "inputs": [inp.to_dict() for inp in fs.inputs],
        "task": task, "tasks": [t.as_dict() for t in tasks], "joint": asdict(multi),
        "classes": None,
        "model": {t.name: cfg.model_args(fs.inputs, len(t.classes)) for t in tasks},
        "training": asdict(cfg),
        "protocol": {"folds": protocol, "seed": cfg.seed, "align": align, "test_splits": test_splits,
                     "n_samples": len(fs.names), "n_labelled": int(mask.sum()),
                     "n_missing_a_label": int((~mask).sum()),
                     "stratified_on": tasks[0].name},
    }
    if aug is not None:
        config["augmentation"] = aug.info
    if out is not None:
        save_multitask_run(out, config, result, names, folds, y, tasks)
    return result, config


def save_multitask_run(out: str | Path, config: dict[str, Any], result, names: list[str], folds: list,
                       y: dict[str, np.ndarray], tasks: list[LabelTask]) -> Path:
    """Write a multi-task run directory: ``config.json`` (``kind: multitask``, the tasks and their
    classes), ``fold-K.safetensors`` (per seed ``s<j>.<task>.<param>`` / ``s<j>.joint.<param>``),
    ``metrics.json`` (per task metrics and JRBM per fold, mean/std, pooled, test) and
    ``predictions.csv`` (name, fold, then per task ``<task>_true``, ``<task>_pred``, ``<task>_prob_<class>``)."""
    import datetime as _dt

    from emo.fsio import write_safetensors

    from emo import __version__
    from emo.fsio import write_csv, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["emo_version"] = __version__
    config["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    config["normalization"] = {"mode": result.normalizers[0].mode if result.normalizers else "none"}
    entries = []
    for k, (fold, st, norm) in enumerate(zip(folds, result.states, result.normalizers)):
        ckpt = f"fold-{k}.safetensors"
        tensors = {f"s{j}.{n}": t.numpy() for j, s in enumerate(st) for n, t in s.items()}
        write_safetensors(out / ckpt, tensors, metadata={"fold": fold.name, "seeds": str(len(st))})
        entry = {**fold.as_dict(), "checkpoint": ckpt, "seeds": len(st)}
        nd = norm.to_dict()
        if "global" in nd:
            entry["normalization"] = {"global": nd["global"]}
        entries.append(entry)
    config["folds"] = entries
    config["diagnostics"] = [{k: v for k, v in d.items() if k == "joint_gates"} for d in result.diagnostics]
    write_json(out / "config.json", config)

    metrics = {"folds": [{"name": r["name"], "n_test": r["n_test"], "epochs": r["epochs"], **r["metrics"]} for r in result.folds],
               **result.summary, "pooled": result.pooled, "n": len(result.oof["index"]), "n_folds": len(result.folds),
               "tasks": [t.as_dict() for t in tasks]}
    if result.test is not None and "metrics" in result.test:
        metrics["test"] = result.test["metrics"]
    write_json(out / "metrics.json", metrics)
    rows = []

    def add(idx, fold_names, outs):
        for r, i in enumerate(idx):
            row = {"name": names[i], "fold": fold_names[r]}
            for t in tasks:
                p = outs[f"probs/{t.name}"][r]
                row[f"{t.name}_true"] = t.classes[y[t.name][i]] if y[t.name][i] >= 0 else ""
                row[f"{t.name}_pred"] = t.classes[int(p.argmax())]
                row.update({f"{t.name}_prob_{c}": f"{p[j]:.6f}" for j, c in enumerate(t.classes)})
            rows.append(row)

    add(result.oof["index"], [folds[f].name for f in result.oof["fold"]], result.oof)
    if result.test is not None:
        add(result.test["index"], ["test"] * len(result.test["index"]), result.test)
    write_csv(out / "predictions.csv", rows)
    return out


def multitask_table(result, tasks: list[LabelTask]) -> str:
    """Plain-text table: per fold each task's WAF and UAR, JRBM and JRBM (micro); then mean ± std, pooled, test."""
    keys = [k for t in tasks for k in (f"{t.name}_waf", f"{t.name}_uar")] + ["jrbm", "jrbm_micro"]
    w = max([len(r["name"]) for r in result.folds] + [10])
    kw = max(13, *(len(k) for k in keys))
    lines = [f"{'fold':<{w}}  {'n':>5}  " + "  ".join(f"{k:>{kw}}" for k in keys)]
    for r in result.folds:
        lines.append(f"{r['name']:<{w}}  {r['n_test']:>5}  " + "  ".join(f"{r['metrics'][k]:>{kw}.4f}" for k in keys))
    lines.append(f"{'mean ± std':<{w}}  {'':>5}  " + "  ".join(f"{result.summary['mean'][k]:.4f}±{result.summary['std'][k]:.4f}".rjust(kw) for k in keys))
    lines.append(f"{'pooled':<{w}}  {len(result.oof['index']):>5}  " + "  ".join(f"{result.pooled[k]:>{kw}.4f}" for k in keys))
    if result.test and "metrics" in result.test:
        lines.append(f"{'test':<{w}}  {len(result.test['index']):>5}  " + "  ".join(f"{result.test['metrics'][k]:>{kw}.4f}" for k in keys))
    return "\n".join(lines)
