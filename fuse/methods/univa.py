"""UniVA: valence-arousal driven supervised contrastive learning per modality, and the soft-target
trainer behind ``--task multilabel``, ``--univa`` and ``--pseudo-labels``.

Source: Zheng, Yu, Xia, "A Unimodal Valence-Arousal Driven Contrastive Learning Framework for
Multimodal Multi-Label Emotion Recognition" (UniVA, ACM MM 2024).

* :func:`sample_va`: the valence-arousal (VA) of each sample, from the dataset's own valence and
  arousal columns, else the NRC-VAD of its label word(s), else the NRC-VAD of its transcript
  (:mod:`emo.lexicon`); one source per run, recorded in the run config.
* :func:`va_contrastive_loss` (eq. 3–5): supervised contrastive loss on one modality's
  embeddings where two samples are positives when their VA distance is below δ (0.1).
* :class:`emo.fuse.model.heads.UniVAHead` (``--head univa``): per-modality encoders (whose embeddings the contrastive loss shapes), a
  fusion layer over them, and per-modality projection heads.
* :func:`univa_loss` (eq. 11): ``L = λ Σ_m L_CL^m + (1 − λ) L_KL + η`` with L_KL of
  :func:`emo.fuse.methods.multilabel.kl_loss` (eq. 10) and η of
  :func:`emo.lexicon.correlation.correlation_prior_loss` (eq. 9).
* :func:`fit_soft_model`: trains a :class:`~emo.fuse.model.decoders.FusionModel` on soft targets
  (normalised multi-hot, one-hot, pseudo-label distributions) with per-row weights (a weight 0
  row — an unlabelled clip — contributes only to the label-free terms, CL and η).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from emo.fuse.eval.runcheck import NonFiniteError
from emo.fuse.model.heads import UniVAHead
from emo.fuse.training.stopping import EarlyStopping

#: Row arrays the trainer adds to the label dict ``y`` for the soft fit (passed with the labels).
ROW_KEYS = ("multihot", "weight", "va", "va_known")

#: VA sources of :func:`sample_va`.
VA_SOURCES = ("auto", "dataset", "label", "transcript")


class UniVAError(ValueError):
    """Unusable UniVA settings or data (named)."""


class UniVANonFiniteError(UniVAError, NonFiniteError):
    """A non-finite UniVA training loss: a :class:`UniVAError` that is also the
    :class:`emo.fuse.eval.runcheck.NonFiniteError` every other training loop raises, so one
    ``except NonFiniteError`` catches a NaN loss whichever loop produced it."""


@dataclass
class UniVAConfig:
    """UniVA loss settings (recorded in the run config).

    Attributes:
        lam: λ of eq. 11 (weight of the contrastive terms; the KL term gets 1 − λ). The paper
            tunes λ; emo's default 0.3 is its own choice.
        delta: δ, VA distance (Euclidean, in the units of the VA source: [-1, 1] for NRC-VAD)
            below which two samples are positives (eq. 3; paper: 0.1).
        tau: temperature τ of eq. 4 (SupCon's usual 0.07; the paper does not fix it in what emo read).
        correlation: add the η prior of eq. 9 (needs class names with NRC-VAD entries).
        eta_weight: factor on η (eq. 11 has 1). η as written is not bounded below by 0: where
            M_jl < 0 it rewards pushing probability away from label l towards j, so with strongly
            anti-correlated labels it can favour some classes; a smaller weight damps that.
        va_source: ``auto``, ``dataset``, ``label`` or ``transcript`` (:func:`sample_va`).
    """

    lam: float = 0.3
    delta: float = 0.1
    tau: float = 0.07
    correlation: bool = True
    eta_weight: float = 1.0
    va_source: str = "auto"

    def validate(self) -> None:
        """Raises UniVAError naming the first bad setting."""
        if not 0.0 <= self.lam < 1.0:
            raise UniVAError(f"--univa-lambda must be in [0, 1), not {self.lam}")
        if self.delta <= 0 or self.tau <= 0 or self.eta_weight < 0:
            raise UniVAError("UniVA δ and τ must be > 0 and the η weight >= 0")
        if self.va_source not in VA_SOURCES:
            raise UniVAError(f"--va-source must be one of {', '.join(VA_SOURCES)}, not {self.va_source!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------
# Valence-arousal of the samples
# ---------------------------------------------------------------------------

def sample_va(samples: Sequence[Any], source: str = "auto", lexicon=None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Valence-arousal of each sample for the contrastive positives.

    Sources (one for the whole run, so distances are never taken across scales):

    * ``dataset``: the sample's own ``valence`` and ``arousal`` (units as in the dataset);
    * ``label``: the mean NRC-VAD (V, A) in [-1, 1] of its emotion words (``Sample.emotions``, else
      ``discrete``): known labels via :func:`emo.lexicon.labels.label_vad` (neutral at the origin),
      other words looked up in NRC-VAD; unlabelled samples have none;
    * ``transcript``: the mean NRC-VAD of the transcript's words (:func:`emo.lexicon.nrc.text_vad`);
      samples without any lexicon word have none. This reads no label, so unlabelled clips get one;
    * ``auto``: ``dataset`` when any sample has both columns, else ``label`` when any has a label,
      else ``transcript``.

    Args:
        samples: :class:`emo.extract.datasets.base.Sample` objects (N).
        lexicon: NRC-VAD (:class:`~emo.lexicon.nrc.VADLexicon`, path or ``None`` to locate it);
            not read for ``dataset``.

    Returns:
        ``(va, known, info)``: float32 (N, 2) (zeros where unknown), bool (N,), and
        ``{"source": ..., "n_known": ..., "lexicon": path or None}`` for the run config.

    Raises:
        UniVAError: unknown source, or no sample has a VA from it.
        LexiconNotFoundError: a lexicon source without a lexicon file.
    """
    if source not in VA_SOURCES:
        raise UniVAError(f"unknown VA source {source!r}; use one of {', '.join(VA_SOURCES)}")
    from emo.fuse.methods.multilabel import sample_words

    if source == "auto":
        if any(s.valence is not None and s.arousal is not None for s in samples):
            source = "dataset"
        elif any(sample_words(s) for s in samples):
            source = "label"
        else:
            source = "transcript"
    n = len(samples)
    va = np.zeros((n, 2), dtype=np.float32)
    known = np.zeros(n, dtype=bool)
    lex_path = None
    if source == "dataset":
        for i, s in enumerate(samples):
            if s.valence is not None and s.arousal is not None:
                va[i] = (s.valence, s.arousal)
                known[i] = True
    else:
        from emo.lexicon.nrc import VADLexicon, load_nrc_vad

        lex = lexicon if isinstance(lexicon, VADLexicon) else load_nrc_vad(lexicon)
        lex_path = str(lex.path)
        if source == "label":
            from emo.lexicon.correlation import labels_va

            cache: dict[str, np.ndarray | None] = {}
            for i, s in enumerate(samples):
                vs = []
                for w in sample_words(s) or []:
                    if w not in cache:
                        try:
                            cache[w] = labels_va([w], lex, neutral_word=False)[0]
                        except KeyError:
                            cache[w] = None
                    if cache[w] is not None:
                        vs.append(cache[w])
                if vs:
                    va[i] = np.mean(vs, axis=0)
                    known[i] = True
        else:
            from emo.lexicon.nrc import text_vad

            for i, s in enumerate(samples):
                v, coverage, _ = text_vad(s.transcript, lex)
                if coverage > 0:
                    va[i] = v[:2]
                    known[i] = True
    if not known.any():
        raise UniVAError(f"no sample has a valence-arousal from source {source!r}")
    return va, known, {"source": source, "n_known": int(known.sum()), "n": n, "lexicon": lex_path}


# ---------------------------------------------------------------------------
# Eq. 3-5: VA-driven supervised contrastive loss
# ---------------------------------------------------------------------------

def va_positives(va: torch.Tensor, known: torch.Tensor, delta: float) -> torch.Tensor:
    """Positive-pair mask of eq. 3: ``P_ij = ‖va_i − va_j‖₂ < δ``, i ≠ j, both VA known.

    Args:
        va: float (B, 2); known: bool (B,); delta: δ in VA units.

    Returns:
        bool (B, B), symmetric, False on the diagonal.
    """
    d = torch.cdist(va.float(), va.float())
    pos = (d < delta) & known[:, None] & known[None, :]
    pos.fill_diagonal_(False)
    return pos


def va_contrastive_loss(views: torch.Tensor, va: torch.Tensor, known: torch.Tensor, delta: float = 0.1,
                        tau: float = 0.07) -> torch.Tensor:
    """UniVA eq. 3–5 for one modality: supervised contrastive loss (SupCon form) whose positives
    are samples with nearby valence-arousal.

    The V views of the B samples are stacked into V·B anchors. For anchor i with embedding
    ``z_i`` (L2-normalised) and positives ``P(i)`` (every other view whose VA lies within δ of
    i's, which always includes i's own other views, so no anchor lacks a positive)::

        L = (1/|A|) Σ_{i∈A} −(1/|P(i)|) Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{k≠i} exp(z_i·z_k/τ) )

    A = anchors with known VA; views of samples without VA serve only as negatives.

    Args:
        views: float (V, B, D), V ≥ 2 views (e.g. two dropout passes) of B samples' embeddings.
        va: float (B, 2) valence-arousal; known: bool (B,).
        delta: δ; tau: τ.

    Returns:
        Scalar tensor ≥ 0; 0 when no anchor has VA (or B·V < 2).

    Raises:
        ValueError: V < 2 or shapes that do not match.
    """
    if views.ndim != 3 or views.shape[0] < 2:
        raise ValueError(f"views must be (V >= 2, B, D), got shape {tuple(views.shape)}")
    v, b, _ = views.shape
    if va.shape != (b, 2) or known.shape != (b,):
        raise ValueError(f"va must be ({b}, 2) and known ({b},), got {tuple(va.shape)} and {tuple(known.shape)}")
    z = nn.functional.normalize(views.reshape(v * b, -1), dim=-1)
    va_all, known_all = va.repeat(v, 1), known.repeat(v)
    pos = va_positives(va_all, known_all, delta)
    anchors = known_all & pos.any(dim=1)
    if not anchors.any():
        return views.sum() * 0.0
    logits = z @ z.T / tau
    self_mask = torch.eye(v * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -math.inf)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(self_mask, 0.0)
    per_anchor = -(log_prob * pos).sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per_anchor[anchors].mean()


# ---------------------------------------------------------------------------
# Eq. 11 and the soft-target trainer (the model's head: emo.fuse.model.heads.UniVAHead)
# ---------------------------------------------------------------------------

def univa_loss(out: dict[str, Any], head: UniVAHead | None, target: torch.Tensor, weight: torch.Tensor,
               va: torch.Tensor | None, known: torch.Tensor | None, cfg: UniVAConfig | None,
               M: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """UniVA eq. 11 on one minibatch: ``L = λ Σ_m L_CL^m + (1 − λ) L_KL + η``.

    Without ``cfg`` (plain soft-target training) this is ``L_KL`` alone (λ = 0, no η).

    Args:
        out: :class:`FusionModel` output (``logits`` (B, C); ``info["modality"]`` with a UniVA head).
        head: the model's :class:`UniVAHead` (for the projection views), or ``None``.
        target: float (B, C) target distributions; weight: float (B,) (0 = unlabelled row).
        va, known: (B, 2), (B,) sample VA (:func:`sample_va`), needed when ``cfg`` is given.
        M: (C, C) correlation matrix for η, or ``None`` to leave η out.

    Returns:
        (loss, parts): parts ``kl``, ``cl`` (sum over modalities), ``eta`` as floats.
    """
    from emo.fuse.methods.multilabel import kl_loss

    kl = kl_loss(out["logits"], target, weight)
    parts = {"kl": float(kl.detach())}
    if cfg is None:
        return kl, parts
    loss = (1.0 - cfg.lam) * kl
    if cfg.lam > 0:
        if head is None or "modality" not in out.get("info", {}):
            raise UniVAError("UniVA contrastive losses need the univa head (--head univa)")
        cl = sum(va_contrastive_loss(v, va, known, cfg.delta, cfg.tau) for v in head.views(out["info"]["modality"]).values())
        loss = loss + cfg.lam * cl
        parts["cl"] = float(cl.detach())
    if M is not None:
        from emo.lexicon.correlation import correlation_prior_loss

        eta = correlation_prior_loss(torch.softmax(out["logits"], dim=-1), M)
        loss = loss + cfg.eta_weight * eta
        parts["eta"] = float(eta.detach())
    return loss, parts




def fit_soft_model(xs_tr: list[torch.Tensor], target_tr: np.ndarray, weight_tr: np.ndarray, xs_va: list[torch.Tensor],
                   target_va: np.ndarray, model_args: dict[str, Any], *, lr: float = 1e-3, weight_decay: float = 1e-2,
                   epochs: int = 100, patience: int = 10, batch_size: int = 64, seed: int = 0, device: str = "cpu",
                   univa: UniVAConfig | None = None, va_tr: np.ndarray | None = None, known_tr: np.ndarray | None = None,
                   M: np.ndarray | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model on soft targets with per-row weights; early stopping on the validation KL.

    Args:
        xs_tr, xs_va: one float32 tensor (n, L_i, D_i) per input (utterance-level features).
        target_tr: float32 (n, C) target distributions (rows sum to 1; any row with weight 0 may be zeros).
        weight_tr: float32 (n,) ≥ 0: 1 labelled, e.g. 0.5 pseudo-labelled, 0 unlabelled (UniVA
            terms only). target_va: (m, C), every row labelled.
        model_args: :meth:`TrainConfig.model_args` (``task`` must give a ``logits`` output).
        univa: UniVA settings (``None``: KL only). va_tr, known_tr: (n, 2), (n,) sample VA.
        M: (C, C) correlation matrix for η (``None``: no η).

    Returns:
        (model in eval mode with the best validation weights, info ``epochs``, ``best_epoch``,
        ``best_val_loss``, ``last_parts`` (loss terms of the last batch)).

    Raises:
        UniVAError: shapes that do not match, no labelled training row, non-finite targets.
        UniVANonFiniteError (a UniVAError and an emo.fuse.eval.runcheck.NonFiniteError): the training
            loss became NaN or infinite.
    """
    from emo.fuse.methods.multilabel import kl_loss

    n = len(xs_tr[0])
    if target_tr.shape[0] != n or weight_tr.shape != (n,):
        raise UniVAError(f"targets {target_tr.shape} / weights {weight_tr.shape} do not match {n} training rows")
    if not (np.all(np.isfinite(target_tr)) and np.all(np.isfinite(weight_tr)) and np.all(weight_tr >= 0)):
        raise UniVAError("training targets or weights are not finite and non-negative")
    if not (weight_tr > 0).any():
        raise UniVAError("no labelled training row (every weight is 0)")
    if univa is not None and univa.lam > 0 and (va_tr is None or known_tr is None):
        raise UniVAError("UniVA contrastive losses need the samples' valence-arousal (va_tr, known_tr)")
    from emo.fuse.model.multimodal import FusionModel

    torch.manual_seed(seed)
    model = FusionModel(**model_args).to(device)
    head = model.head if isinstance(model.head, UniVAHead) else None
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name.startswith("pool.") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    t_tr = torch.as_tensor(target_tr, dtype=torch.float32, device=device)
    w_tr = torch.as_tensor(weight_tr, dtype=torch.float32, device=device)
    t_va = torch.as_tensor(target_va, dtype=torch.float32, device=device)
    va_t = torch.as_tensor(va_tr, dtype=torch.float32, device=device) if va_tr is not None else None
    kn_t = torch.as_tensor(known_tr, dtype=torch.bool, device=device) if known_tr is not None else None
    M_t = torch.as_tensor(M, dtype=torch.float32, device=device) if (M is not None and univa is not None and univa.correlation) else None
    bs = max(2, min(batch_size, n))
    gen = torch.Generator().manual_seed(seed)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(kl_loss(model(xs_va)["logits"], t_va))

    stopping, epoch, parts = EarlyStopping(patience), 0, {}
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        stop = n - (1 if n % bs == 1 and n > 1 else 0)
        for s in range(0, stop, bs):
            idx = perm[s:s + bs].to(device)
            out = model([x[idx] for x in xs_tr])
            loss, parts = univa_loss(out, head, t_tr[idx], w_tr[idx], None if va_t is None else va_t[idx],
                                     None if kn_t is None else kn_t[idx], univa, M_t)
            if not torch.isfinite(loss):
                raise UniVANonFiniteError(f"non-finite training loss at epoch {epoch} ({parts}): inputs too large or "
                                       f"a learning rate too high; try --normalize global or a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if stopping.update(epoch, val_loss(), model):
            break
    stopping.restore(model)
    model.eval()
    return model, {**stopping.info(epoch), "last_parts": parts}


def uses_soft_fit(cfg, y_tr: dict[str, np.ndarray]) -> bool:
    """Whether a fit goes through :func:`soft_fit`: multi-label task, UniVA losses or head,
    or per-row weights (pseudo-labels)."""
    return (getattr(cfg, "task", "") == "multilabel" or bool(getattr(cfg, "univa", False))
            or getattr(cfg, "head", "") == "univa" or "weight" in y_tr)


def soft_fit(xs_tr: list, y_tr: dict[str, np.ndarray], xs_va: list, y_va: dict[str, np.ndarray], cfg, model_args: dict[str, Any],
             seed: int) -> tuple[Any, dict[str, Any]]:
    """One model trained by :func:`emo.fuse.methods.univa.fit_soft_model` from the trainer's arrays.

    Targets: the normalised multi-hot (``multihot``, UniVA eq. 10) or the one-hot of ``discrete``;
    rows with weight 0 (unlabelled) keep a zero target. The validation rows are all labelled.
    With ``cfg.univa``: λ = ``cfg.univa_lambda``, δ = ``cfg.univa_delta``, τ = ``cfg.univa_tau``,
    VA from ``y["va"]``; η with ``y["correlation"]`` (the (C, C) matrix of :func:`correlation_for`).
    """
    from emo.fuse.methods.multilabel import normalized_targets

    c = int(model_args["n_classes"])

    def soft(y: dict[str, np.ndarray]) -> np.ndarray:
        if "multihot" in y:
            return normalized_targets(y["multihot"])
        d = np.asarray(y["discrete"])
        t = np.zeros((len(d), c), dtype=np.float32)
        ok = d >= 0
        t[np.flatnonzero(ok), d[ok]] = 1.0
        return t

    cfg = cfg.resolve(len(xs_tr[0]))
    t_tr = soft(y_tr)
    w_tr = np.asarray(y_tr.get("weight", np.ones(len(t_tr), np.float32)), dtype=np.float32)
    w_tr = np.where(t_tr.sum(axis=1) > 0, w_tr, 0.0).astype(np.float32)
    univa = None
    M = y_tr.get("correlation")
    if getattr(cfg, "univa", False):
        univa = UniVAConfig(lam=cfg.univa_lambda, delta=cfg.univa_delta, tau=cfg.univa_tau, va_source=cfg.va_source,
                            correlation=M is not None and cfg.univa_eta > 0, eta_weight=cfg.univa_eta)
        univa.validate()
    return fit_soft_model(xs_tr, t_tr, w_tr, xs_va, soft(y_va), model_args, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          epochs=cfg.epochs, patience=cfg.patience, batch_size=cfg.batch_size, seed=seed, device=cfg.device,
                          univa=univa, va_tr=y_tr.get("va"), known_tr=y_tr.get("va_known"), M=M)


def eta_vertex_minimum(M, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Why UniVA with η (eq. 11) can predict one class for every clip: η's value at one-hot predictions.

    For one sample, eq. 9 is ``η(ŷ) = Σ_{j,l} M_jl (ŷ_j − ŷ_l)² = 2 ŷᵀ(diag(r) − M) ŷ`` with ``r`` the
    row sums of ``M``. A uniform ŷ gives 0; a one-hot ŷ on class k gives ``2 Σ_{l≠k} M_kl``. Eq. 8's
    cosines are negative between labels of opposite valence, so for some classes that sum is negative:
    predicting such a class for every sample, whatever the input, makes η negative (below any balanced
    prediction), and these one-hot points are local minima of η. With eq. 11's unit weight, η
    (MELD with NRC-VAD: −4.97 at ``joy``, −3.25 at ``neutral`` and ``surprise``) outweighs the KL term
    (``log 7`` = 1.95 for a uniform prediction), so a model whose features separate the classes
    weakly lowers its loss most by committing every clip to one of them (``results/seams.json``,
    finding 7: every MELD test utterance ``neutral``).

    Args:
        M: (C, C) correlation matrix (eq. 8). classes: names, for the result.

    Returns:
        ``{"one_hot": {class: η}, "uniform": 0.0, "argmin": class with the lowest one-hot η,
        "eta_min": float, "negative": classes whose one-hot η is < 0 (sorted by η),
        "collapses": bool (any)}``.
    """
    m = np.asarray(M, dtype=np.float64)
    m = (m + m.T) / 2
    c = m.shape[0]
    off = m.sum(1) - np.diag(m)
    names = list(classes) if classes is not None and len(classes) == c else [str(i) for i in range(c)]
    vals = {names[k]: round(float(2 * off[k]), 6) for k in range(c)}
    k = int(np.argmin(off))
    neg = [names[j] for j in np.argsort(off) if off[j] < 0]
    return {"one_hot": vals, "uniform": 0.0, "argmin": names[k], "eta_min": round(float(2 * off[k]), 6),
            "negative": neg, "collapses": bool(neg)}


def univa_record(cfg, M: np.ndarray | None, note: str, va_info: dict[str, Any], unlabelled_rows: int,
                 classes: Sequence[str] | None = None, say=None) -> dict[str, Any]:
    """The ``univa`` entry of a run's ``config.json``: the loss settings of ``cfg`` (λ, δ, τ, η weight),
    the valence-arousal source ``va_info`` (:func:`sample_va`), the number of unlabelled training rows,
    the eq. 8 matrix ``M`` (C, C) rounded to 6 digits (``None`` with the reason ``note``) and, when η
    is on, :func:`eta_vertex_minimum`; ``say`` receives a warning when eq. 11 rewards predicting one
    class for every clip (issue 23). Source: Zheng, Yu, Xia, UniVA, eq. 3-11."""
    rec = {"lambda": cfg.univa_lambda, "delta": cfg.univa_delta, "tau": cfg.univa_tau, "eta_weight": cfg.univa_eta,
           "va": va_info, "unlabelled_rows": unlabelled_rows,
           "correlation": None if M is None else M.round(6).tolist(), "correlation_note": note,
           "source": "Zheng, Yu, Xia, UniVA, eq. 3-11"}
    if M is not None and cfg.univa_eta > 0:  # issue 23: eq. 9's η rewards one constant class
        vm = eta_vertex_minimum(M, classes)
        rec["eta_vertex_minimum"] = vm
        if vm["collapses"] and say:
            say(f"warning: UniVA η (eq. 9, weight {cfg.univa_eta:g}) is negative when every clip is predicted one of "
                f"{vm['negative']} (down to {vm['eta_min']:.3f} for {vm['argmin']!r}) and 0 for a uniform prediction: "
                "eq. 11 rewards predicting one class for every clip (try --univa-eta 0 or a small weight)")
    return rec
