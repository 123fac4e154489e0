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

#: ``split`` values that mark clips left unlabelled on purpose (MER candidates, UniVA's unlabelled
#: pool): a multi-label clip with no word and one of these splits is not warned about.
UNLABELLED_SPLITS = ("unlabeled", "unlabelled", "candidate")

#: The word the MER 2025/2026 loaders give a clip whose word list is empty (``[]``); the emotion
#: wheels do not list it, and ``--emotion-wheel`` accepts it.
NEUTRAL_WORD = "neutral"

#: Fewest clips of the CV pool a multi-label class needs (as ``check_class_counts`` for discrete
#: labels): a word seen once cannot be in a training and an evaluation fold, and is usually a typo.
MIN_CLASS_CLIPS = 2


def _examples(by_word: dict[str, list[str]], words: int = 5, clips: int = 3) -> str:
    """``'hapy' (1 clip: a), 'angyr' (2 clips: b, c)`` for at most ``words`` words."""
    out = []
    for w, names in list(by_word.items())[:words]:
        shown = ", ".join(names[:clips]) + (f" and {len(names) - clips} more" if len(names) > clips else "")
        out.append(f"{w!r} ({len(names)} clip{'s' if len(names) != 1 else ''}: {shown})")
    more = f" and {len(by_word) - words} more word(s)" if len(by_word) > words else ""
    return ", ".join(out) + more


def multilabel_targets(samples: list, pool_rows: np.ndarray, word_map: Callable[[str], str | None] | None = None,
                       min_count: int = 1, *, wheels: Any = None, allow_rare: bool = False, source: str = "",
                       log: Callable[[str], None] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    """Multi-hot targets for ``--task multilabel``.

    The label list is built from the words of the rows ``pool_rows`` (the cross-validation pool:
    every labelled sample outside the held-out test partitions); emo's choice: one label list for
    all folds, so fold models share an output layer. Words of other rows outside the list are ignored.

    No word silently becomes a class (issue 25): without ``wheels`` (open vocabulary) a label carried
    by fewer than :data:`MIN_CLASS_CLIPS` pool clips (most likely a typo), and with ``wheels`` a word
    the emotion wheel does not know (neither in ``format.csv`` nor in ``synonym.xlsx``;
    :data:`NEUTRAL_WORD` is accepted), is refused, naming the word, its clips and ``source`` (the label
    file), unless ``allow_rare`` (``--allow-rare-classes``), which keeps them with a warning. With
    ``wheels``, a rare word family the wheel knows is real (OV-MERD has many) and is kept, with a
    warning: emo's choice, as the papers are silent. Clips whose word set is empty
    (and whose split is not one of :data:`UNLABELLED_SPLITS`) are left out of the supervised loss
    and of evaluation, as unlabelled clips of a discrete task are; emo warns, with their count and
    names, rather than refuse, because unlabelled clips are legitimate (UniVA's unlabelled rows).

    Args:
        samples: the N manifest samples. pool_rows: int indices of the CV pool.
        word_map: word -> label callable (``None``: identity); default ``wheels.base_form`` with ``wheels``.
        min_count: see :meth:`emo.fuse.methods.multilabel.LabelSpace.from_words`.
        wheels: :class:`emo.lexicon.wheel.EmotionWheels` of ``--emotion-wheel`` (word forms, known words).
        allow_rare: keep rare and unknown words (warned) instead of refusing.
        source: where the words come from (label file, manifest), for the messages.
        log: receives ``warning: ...`` lines.

    Returns:
        ``(y, mask, space)``: ``y["multihot"]`` float32 (N, C); ``mask`` bool (N,), rows with at
        least one known word; the :class:`emo.fuse.methods.multilabel.LabelSpace`, whose
        ``warnings`` list what was left out or accepted on request.

    Raises:
        emo.fuse.methods.multilabel.MultiLabelError: no word at all; rare or unknown words without
            ``allow_rare`` (named with their clips and ``source``).
    """
    from emo.fuse.methods.multilabel import LabelSpace, MultiLabelError, sample_words

    if wheels is not None and word_map is None:
        word_map = wheels.base_form
    words = [sample_words(s) for s in samples]
    pool = [int(i) for i in pool_rows]
    where = f" (labels: {source})" if source else ""
    problems = []
    if wheels is not None:  # a word the wheel does not know would become a class of its own, never scored by wheel F1
        plain = LabelSpace([])  # normalise only (lower case, spaces), no mapping
        unknown: dict[str, list[str]] = {}
        for i in pool:
            for w in plain.map_words(words[i]):
                if w != NEUTRAL_WORD and w not in wheels.forms and w not in wheels.synonyms:
                    unknown.setdefault(w, []).append(samples[i].name)
        if unknown:
            problems.append(f"{len(unknown)} emotion word(s) unknown to the emotion wheel {wheels.directory} (in neither format.csv "
                            f"nor synonym.xlsx): {_examples(unknown)}")
    space = LabelSpace.from_words([words[i] for i in pool], word_map=word_map, min_count=min_count)
    rare = {c for c, n in zip(space.classes, space.counts) if n < MIN_CLASS_CLIPS}
    rare_note = None
    if rare:
        carriers: dict[str, list[str]] = {c: [] for c in space.classes if c in rare}
        for i in pool:
            for w in space.map_words(words[i]):
                if w in carriers:
                    carriers[w].append(samples[i].name)
        rare_msg = (f"{len(rare)} label(s) carried by fewer than {MIN_CLASS_CLIPS} clips, each of which would become a class: "
                    f"{_examples(carriers)}")
        if wheels is None:  # open vocabulary: a word seen once is most likely a typo
            problems.append(rare_msg)
        else:  # every word is a known wheel word (unknown ones are refused above): rare families are real, and warned
            rare_note = f"--task multilabel: {rare_msg}{where} (emotion-wheel words: kept)"
    if problems:
        msg = "--task multilabel: " + "; ".join(problems) + where
        if not allow_rare:
            raise MultiLabelError(msg + "; a typo in the label file? Fix the labels, or pass --allow-rare-classes to train on them anyway")
        space.warnings.append(msg + " (kept as classes: --allow-rare-classes)")
    if rare_note is not None:
        space.warnings.append(rare_note)
        if log is not None:
            log(f"warning: {rare_note}")
    multihot, labelled, _ = space.encode(words)
    empty = [samples[i].name for i in range(len(samples))
             if not space.map_words(words[i]) and (samples[i].split or "").strip().lower() not in UNLABELLED_SPLITS]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        space.warnings.append(f"--task multilabel: {len(empty)} of {len(samples)} clips have an empty emotion-word set and are left "
                              f"out of the supervised loss and of evaluation: {shown}{where}; write their words (e.g. "
                              f"'{NEUTRAL_WORD}'), or give them the split 'unlabeled' to leave them out on purpose")
    outside = [samples[i].name for i in range(len(samples)) if not labelled[i] and space.map_words(words[i])]
    if outside:
        shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
        space.warnings.append(f"--task multilabel: {len(outside)} clips carry only words outside the label list of the training pool "
                              f"(left out of evaluation): {shown}{where}")
    for w in space.warnings:
        if log:
            log(f"warning: {w}")
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
