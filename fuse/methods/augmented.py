"""Training on clean plus augmented (noisy) copies of the training clips; evaluating on clean or
noisy copies (MER-NOISE robustness; ``emo fuse train --augmented egemaps+noise``).

Augmented stores are written by ``emo extract --augment`` (:mod:`emo.extract.augment`) as
``<encoder>+<tag>.h5`` next to the clean ``<encoder>.h5``. A *copy group* is one tag: all
augmented stores ``<encoder>+<tag>`` of the run's encoders. For a group, every sample gets a
second row whose features come from the augmented stores (encoders without a store in the
group keep their clean features, e.g. text features when only the audio was corrupted).

:func:`expand_with_copies` appends the groups' rows after the N clean rows (group g occupies
rows ``N·(g+1) ... N·(g+2)-1``) and rewrites the folds:

* ``train``: the clean training rows plus their copies in every *training* group (only the
  training clips: the inner validation rows and the evaluation rows never gain copies, so no
  evaluation clip reaches training in any form);
* ``val``: unchanged (clean: early stopping sees the same data as without augmentation);
* ``test`` (and the held-out test set): the clean rows, or with an *evaluation* group, the
  same clips' copies from that group (``--evaluate-on noise5``).

Refused: an augmented store whose clean weights differ from the clean store's (features from
different checkpoints never mix), frame-level inputs (not supported here), an evaluation group
that lacks some evaluated clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo.fuse.eval.protocols import Fold


@dataclass
class CopyGroup:
    """Augmented features of one tag, aligned with the clean rows.

    Attributes:
        tag: the augmentation name (``noise`` for ``egemaps+noise.h5``).
        blocks: encoder name → float32 (N, L, D), clean features where the group has no store.
        present: bool (N,): rows whose every augmented store has the sample.
        stores: encoder name → augmented store name used (e.g. ``{"egemaps": "egemaps+noise"}``).
        provenance: augmented store name → its augmentation provenance (``augment``, seed, noise hash).
    """

    tag: str
    blocks: dict[str, np.ndarray]
    present: np.ndarray
    stores: dict[str, str]
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)


def split_store_name(name: str) -> tuple[str, str]:
    """``"egemaps+noise"`` → ``("egemaps", "noise")``.

    Raises:
        ValueError: no ``+TAG`` suffix.
    """
    base, plus, tag = name.rpartition("+")
    if not plus or not base or not tag:
        raise ValueError(f"augmented store {name!r}: expected ENCODER+TAG (as emo extract --augment names it, e.g. egemaps+noise)")
    return base, tag


AUG_KEYS = ("augment", "augment_seed", "augment_kind", "noise_source", "noise_files", "noise_files_hash", "noise_snr_db",
            "clean_encoder", "clean_weights_hash", "weights_hash")


def load_copy_groups(features_dir: str | Path, dataset: str, fs, stores: list[str]) -> list[CopyGroup]:
    """Load augmented stores (names ``ENCODER+TAG``) as copy groups of the clean :class:`emo.fuse.training.data.FeatureSet` ``fs``.

    Returns:
        one :class:`CopyGroup` per distinct tag, in first-mention order.

    Raises:
        ValueError: a name without ``+TAG``, an encoder not among ``fs``'s utterance-level inputs,
            the same store twice, an augmented store of other clean weights than the clean store.
        emo.extract.store.StoreError: missing store or layers.
    """
    from emo.extract.store import FeatureStore, store_path

    by_tag: dict[str, dict[str, str]] = {}
    for s in stores:
        base, tag = split_store_name(s)
        inp = next((i for i in fs.inputs if i["name"] == base), None)
        if inp is None:
            raise ValueError(f"augmented store {s!r}: its clean encoder {base!r} is not among the --features "
                             f"({', '.join(i['name'] for i in fs.inputs)})")
        if inp.get("frames"):
            raise ValueError(f"augmented store {s!r}: frame-level inputs (--frames) cannot take augmented copies; use utterance features")
        if base in by_tag.setdefault(tag, {}):
            raise ValueError(f"augmented store {s!r} given twice")
        by_tag[tag][base] = s
    groups = []
    n = len(fs.names)
    for tag, encs in by_tag.items():
        blocks = {k: np.asarray(v, dtype=np.float32) for k, v in fs.blocks.items()}
        present = np.ones(n, dtype=bool)
        prov = {}
        for base, sname in encs.items():
            inp = next(i for i in fs.inputs if i["name"] == base)
            st = FeatureStore(store_path(features_dir, dataset, sname))
            clean_hash = inp.get("provenance", {}).get("weights_hash")
            aug_clean = st.attrs.get("clean_weights_hash")
            if aug_clean is None:
                raise ValueError(f"{st.path}: not an augmented store (no clean_weights_hash in its provenance; "
                                 "write it with emo extract --augment)")
            if clean_hash is not None and str(aug_clean) != str(clean_hash):
                raise ValueError(f"{st.path}: augmented features of weights {aug_clean!r}, but the clean {base} store has "
                                 f"{clean_hash!r}; re-extract one of them so both come from the same checkpoint")
            have = set(st.names)
            rows = np.array([nm in have for nm in fs.names], dtype=bool)
            x = blocks[base].copy()
            if rows.any():
                x[rows] = st.read(list(inp["layers"]), [nm for nm, r in zip(fs.names, rows) if r])
            blocks[base] = x
            present &= rows
            prov[sname] = {k: st.attrs[k] for k in AUG_KEYS if k in st.attrs}
        groups.append(CopyGroup(tag, blocks, present, dict(encs), prov))
    return groups


def expand_with_copies(blocks: dict[str, np.ndarray], y: dict[str, np.ndarray], folds: list[Fold],
                       test_idx: np.ndarray | None, groups: list[CopyGroup], train_tags: list[str],
                       eval_tag: str | None = None, names: list[str] | None = None,
                       speakers: list[str | None] | None = None) -> dict[str, Any]:
    """Append the groups' rows and rewrite folds (module docstring).

    Args:
        blocks: encoder → (N, L, D) clean features. y: label arrays over N rows (any shapes (N, ...)).
        folds, test_idx: over the N clean rows. groups: :func:`load_copy_groups`.
        train_tags: tags whose copies of the training rows join training.
        eval_tag: tag whose copies replace the evaluation rows (``None``: clean evaluation).
        names, speakers: per-row lists, extended the same way (copies keep the clip's name; their speaker
            is ``<speaker>+<tag>``, so per-speaker normalisation treats each speaker's copies of one
            augmentation as their own condition: a noisy test speaker is normalised by its noisy clips).

    Returns:
        dict with ``blocks``, ``y``, ``folds``, ``test_idx``, ``names``, ``speakers`` over the
        extended rows, and ``counts``: per fold the number of added training copies.

    Raises:
        ValueError: an unknown tag, or an evaluation group missing some evaluated clip (named).
    """
    n = len(next(iter(blocks.values())))
    tags = [g.tag for g in groups]
    for t in [*train_tags, *([eval_tag] if eval_tag else [])]:
        if t not in tags:
            raise ValueError(f"no augmented stores with tag {t!r} (loaded: {', '.join(tags) or 'none'})")
    off = {g.tag: n * (k + 1) for k, g in enumerate(groups)}
    big = {k: np.concatenate([v] + [g.blocks[k] for g in groups], axis=0) for k, v in blocks.items()}
    yy = {k: np.concatenate([v] * (len(groups) + 1), axis=0) for k, v in y.items()}
    pres = {g.tag: g.present for g in groups}

    def evaluated(rows: np.ndarray, what: str) -> np.ndarray:
        if eval_tag is None:
            return rows
        miss = rows[~pres[eval_tag][rows]]
        if len(miss):
            eg = names[int(miss[0])] if names else int(miss[0])
            raise ValueError(f"--evaluate-on {eval_tag}: {len(miss)} {what} clip(s) have no augmented copy (e.g. {eg!r}); "
                             "extract the augmented store for every sample")
        return rows + off[eval_tag]

    new_folds, counts = [], []
    for f in folds:
        extra = [f.train[pres[t][f.train]] + off[t] for t in train_tags]
        counts.append(int(sum(len(e) for e in extra)))
        new_folds.append(Fold(f.name, np.concatenate([f.train, *extra]).astype(np.int64), f.val,
                              evaluated(f.test, f"fold {f.name}")))
    out = {"blocks": big, "y": yy, "folds": new_folds, "counts": counts,
           "test_idx": None if test_idx is None else evaluated(np.asarray(test_idx), "test"),
           "names": None if names is None else list(names) * (len(groups) + 1),
           # a copy's speaker is "<speaker>+<tag>": --normalize speaker normalises each speaker's
           # copies of one augmentation by their own statistics (per speaker and condition)
           "speakers": None if speakers is None else list(speakers) + [None if s is None else f"{s}+{g.tag}"
                                                                      for g in groups for s in speakers]}
    return out


@dataclass
class Augmented:
    """What :func:`apply_augmentation` returns: the run's rows with copies (``blocks``, ``y``, ``folds``,
    ``test_idx``, ``names``, ``speakers`` over the extended rows) and ``info`` for the run's config."""

    blocks: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    folds: list[Fold]
    test_idx: np.ndarray | None
    names: list[str]
    speakers: list[str | None]
    info: dict[str, Any]


def apply_augmentation(features_dir: str | Path, dataset: str, fs, y: dict[str, np.ndarray], folds: list[Fold],
                       test_idx: np.ndarray | None, augmented: list[str] | None, evaluate_on: str | None) -> Augmented | None:
    """``emo fuse train --augmented ENCODER+TAG ... [--evaluate-on TAG]`` on a loaded feature set.

    Args:
        fs: the clean :class:`emo.fuse.training.data.FeatureSet`; y, folds, test_idx: over its rows.
        augmented: augmented store names whose copies of the training clips join training.
        evaluate_on: a tag whose copies replace the evaluated clips (the ``+TAG`` stores of the
            run's encoders; given only here, they need not be in ``augmented``).

    Returns:
        :class:`Augmented`, or ``None`` when neither option is given (nothing changes).

    Raises:
        ValueError: as :func:`load_copy_groups` and :func:`expand_with_copies`; an ``--evaluate-on``
            tag without any ``<encoder>+TAG`` store.
    """
    augmented = list(augmented or [])
    if not augmented and not evaluate_on:
        return None
    if not all(isinstance(b, np.ndarray) for b in fs.blocks.values()):
        raise ValueError("--augmented/--evaluate-on work with utterance-level features only (not with --frames)")
    from emo.extract.store import store_path

    train_tags = list(dict.fromkeys(split_store_name(s)[1] for s in augmented))
    stores = list(augmented)
    if evaluate_on and evaluate_on not in train_tags:
        ev = [f"{i['name']}+{evaluate_on}" for i in fs.inputs if store_path(features_dir, dataset, f"{i['name']}+{evaluate_on}").is_file()]
        if not ev:
            raise ValueError(f"--evaluate-on {evaluate_on}: no store {', '.join(i['name'] + '+' + evaluate_on + '.h5' for i in fs.inputs)} "
                             f"under {Path(features_dir) / dataset}; write one with emo extract --augment ...,name={evaluate_on}")
        stores += ev
    groups = load_copy_groups(features_dir, dataset, fs, stores)
    ex = expand_with_copies(fs.blocks, y, folds, test_idx, groups, train_tags, evaluate_on, fs.names, fs.speakers)
    info = {"augmented": augmented, "evaluate_on": evaluate_on or "clean",
            "copies_per_fold": ex["counts"], "groups": {g.tag: {"stores": g.stores, "present": int(g.present.sum()),
                                                               "provenance": g.provenance} for g in groups}}
    return Augmented(ex["blocks"], ex["y"], ex["folds"], ex["test_idx"], ex["names"], ex["speakers"], info)


def augment_plan(plan: Any, ctx: Any) -> Any:
    """Fold-plan plug-in (:mod:`emo.fuse.training.plan`) of ``--augmented``/``--evaluate-on``:
    :func:`apply_augmentation` on the plan's labels, folds and test rows; the plan's rows become
    the clean rows plus the copies (``blocks``, ``y``, ``y_true``, ``names``, ``speakers``), its
    folds gain (or evaluate on) copies, ``info`` gains ``augmentation``. The plan's ``clip_folds``
    stay: copies are not clips of their own. Unchanged plan when neither option is given."""
    from dataclasses import replace

    aug = apply_augmentation(ctx.features_dir, ctx.dataset, ctx.fs, plan.y_true, plan.folds, plan.test_idx,
                             ctx.augmented, ctx.evaluate_on)
    if aug is None:
        return plan
    return replace(plan, blocks=aug.blocks, y=aug.y, y_true=aug.y, folds=aug.folds, test_idx=aug.test_idx,
                   names=aug.names, speakers=aug.speakers, info={**plan.info, "augmentation": aug.info})
