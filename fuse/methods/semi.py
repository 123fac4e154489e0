"""Glue between ``emo fuse train`` and the issue-14 capabilities: multi-label targets, UniVA
losses with unlabelled rows, pseudo-labelled rows.

The trainer calls:

* :func:`multilabel_targets` for ``--task multilabel`` (label list from the CV pool's words);
* :func:`prepare_semi` after building the folds: adds pseudo-labelled rows (``--pseudo-labels``)
  and, with ``--univa``, the unlabelled rows with a valence-arousal to each fold's *training*
  rows (weight 0: they feed only the label-free contrastive and η terms), and the per-row arrays
  ``weight``, ``va``, ``va_known``;
* :func:`emo.fuse.methods.univa.soft_fit` replaces the cross-entropy fit when any of these is on;
* :func:`multilabel_evaluate` for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

def multilabel_targets(samples: list, pool_rows: np.ndarray, word_map: Callable[[str], str | None] | None = None,
                       min_count: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    """Multi-hot targets for ``--task multilabel``.

    The label list is built from the words of the rows ``pool_rows`` (the cross-validation pool:
    every labelled sample outside the held-out test partitions); emo's choice: one label list for
    all folds, so fold models share an output layer. Words of other rows outside the list are ignored.

    Returns:
        ``(y, mask, space)``: ``y["multihot"]`` float32 (N, C); ``mask`` bool (N,), rows with at
        least one known word; the :class:`emo.fuse.methods.multilabel.LabelSpace`.
    """
    from emo.fuse.methods.multilabel import LabelSpace, sample_words

    words = [sample_words(s) for s in samples]
    space = LabelSpace.from_words([words[i] for i in pool_rows], word_map=word_map, min_count=min_count)
    multihot, labelled, _ = space.encode(words)
    return {"multihot": multihot}, labelled, space


def prepare_semi(samples: list, names: list[str], y: dict[str, np.ndarray], mask: np.ndarray, folds: list,
                 test_idx: np.ndarray | None, classes: list[str] | None, *, univa: bool = False, va_source: str = "auto",
                 lexicon=None, pseudo_labels=None, pseudo_weight: float = 0.5) -> tuple[list, dict[str, np.ndarray], dict[str, Any]]:
    """Add pseudo-labelled and (with ``univa``) unlabelled rows to the training part of each fold.

    Args:
        samples, names: the feature set's samples and names (N rows).
        y, mask: labels (:func:`emo.fuse.training.data.targets` or :func:`multilabel_targets`) and labelled rows.
        folds: the protocol's folds over labelled rows; test_idx: held-out test rows or None.
        classes: class order (discrete / multi-label).
        univa: add unlabelled rows with a valence-arousal (weight 0) and the ``va`` arrays.
        va_source, lexicon: :func:`emo.fuse.methods.univa.sample_va`.
        pseudo_labels: a ``pseudo.csv`` path or ``None``; pseudo_weight: its rows' loss weight.

    Returns:
        ``(folds, y, info)``: folds with extended training rows (validation and evaluation rows
        unchanged), ``y`` with ``weight`` (and ``va``, ``va_known``; pseudo classes written into
        ``discrete``), and ``info`` for the run config.

    Raises:
        emo.fuse.methods.pseudo.PseudoLabelError: see :func:`emo.fuse.methods.pseudo.add_pseudo_labels`.
        emo.fuse.methods.univa.UniVAError: no sample with a valence-arousal.
    """
    from emo.fuse.eval.protocols import Fold

    y = dict(y)
    info: dict[str, Any] = {}
    n = len(names)
    weight = mask.astype(np.float32)
    if pseudo_labels is not None:
        from emo.fuse.methods.pseudo import add_pseudo_labels, read_pseudo_labels

        if "discrete" not in y:
            raise ValueError("--pseudo-labels needs a discrete task")
        p = read_pseudo_labels(pseudo_labels)
        folds, disc, w, pinfo = add_pseudo_labels(folds, names, mask, list(classes or []), p, pseudo_weight)
        rows = disc >= 0
        y["discrete"] = np.where(rows, disc, y["discrete"])
        weight = np.where(rows, w, weight).astype(np.float32)
        info["pseudo_labels"] = {"file": str(pseudo_labels), **pinfo}
    if univa:
        from emo.fuse.methods.univa import sample_va

        va, known, vinfo = sample_va(samples, va_source, lexicon)
        y["va"], y["va_known"] = va, known
        used = set(np.concatenate([f.train for f in folds] + [f.val for f in folds] + [f.test for f in folds]).tolist())
        if test_idx is not None:
            used |= set(np.asarray(test_idx).tolist())
        extra = np.asarray([i for i in range(n) if known[i] and weight[i] == 0 and not mask[i] and i not in used], dtype=np.int64)
        folds = [Fold(f.name, np.concatenate([f.train, extra]), f.val, f.test) for f in folds]
        info["univa_va"] = vinfo
        info["unlabelled_rows"] = int(len(extra))
    y["weight"] = weight
    return folds, y, info


def correlation_for(classes: list[str] | None, lexicon=None) -> tuple[np.ndarray | None, str]:
    """UniVA eq. 8 matrix M over ``classes`` (:func:`emo.lexicon.correlation.correlation_matrix`) for η,
    or ``(None, reason)`` when some class has no valence-arousal in NRC-VAD (η is then left out, and the
    reason recorded in the run config)."""
    from emo.lexicon.correlation import correlation_matrix

    if not classes:
        return None, "no class list"
    try:
        return correlation_matrix(list(classes), lexicon), "cosine of the classes' NRC-VAD valence-arousal (eq. 8)"
    except KeyError as e:
        return None, f"η left out: {e.args[0] if e.args else e}"


def multilabel_evaluate(probs: np.ndarray, multihot: np.ndarray, threshold: float) -> dict[str, float]:
    """:func:`emo.fuse.methods.multilabel.multilabel_metrics` of ``probs > threshold`` (at least one label per clip)."""
    from emo.fuse.methods.multilabel import multilabel_metrics, predict_multihot

    return multilabel_metrics(multihot > 0, predict_multihot(probs, threshold))


def semi_plan(plan: Any, ctx: Any) -> Any:
    """Fold-plan plug-in (:mod:`emo.fuse.training.plan`) of ``--pseudo-labels`` and ``--univa``:
    :func:`prepare_semi` adds the pseudo-labelled and unlabelled clips to each fold's training rows
    (also the plan's ``clip_folds``: they are clips of the run) and the row weights to ``y``; with
    UniVA, ``y`` gains the eq. 8 matrix (:func:`correlation_for`) and ``info`` the ``univa`` record
    (:func:`emo.fuse.methods.univa.univa_record`). Unchanged plan when neither option is on."""
    from dataclasses import replace

    cfg = ctx.cfg
    if ctx.pseudo_labels is None and not cfg.univa:
        return plan
    folds, y, info = prepare_semi(ctx.fs.samples, plan.names, plan.y, plan.mask, plan.folds, plan.test_idx, ctx.classes,
                                  univa=cfg.univa, va_source=cfg.va_source, lexicon=ctx.lexicon,
                                  pseudo_labels=ctx.pseudo_labels, pseudo_weight=ctx.pseudo_weight)
    if cfg.univa:
        from emo.fuse.methods.univa import univa_record

        M, why = correlation_for(ctx.classes, ctx.lexicon)
        if M is not None:
            y["correlation"] = M
        info["univa"] = univa_record(cfg, M, why, info.pop("univa_va"), info.pop("unlabelled_rows"), ctx.classes, ctx.say)
    return replace(plan, folds=folds, clip_folds=folds, y=y, info={**plan.info, **info})
