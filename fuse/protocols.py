"""Cross-validation protocols: seeded stratified k-fold, leave-one-speaker-out, predefined split.

Every fold has three disjoint index sets: ``train`` (fits the model), ``val`` (an inner
validation split held out *from the training part*, used only for early stopping) and
``test`` (the evaluation fold, never seen during training or model selection).

Inner validation: for k-fold, a stratified ~10% of the training part (seeded); for
leave-one-speaker-out, all samples of one training speaker (chosen by the seed), so the
validation speaker is unseen like the test speaker; for the predefined split, the source's
``dev``/``val`` partition when it exists, else a stratified 10% of ``train``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Partition names treated as the development set by :func:`predefined_split`.
DEV_SPLITS = ("dev", "val", "valid", "validation")


class ProtocolError(ValueError):
    """A protocol that cannot be applied to the data (too few samples/speakers, missing splits)."""


@dataclass
class Fold:
    """One fold: int index arrays into the sample list (train, inner validation, evaluation)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict:
        """Name and sizes (n_train, n_val, n_test), for configs and tables."""
        return {"name": self.name, "n_train": int(len(self.train)), "n_val": int(len(self.val)), "n_test": int(len(self.test))}


def _can_stratify(y: np.ndarray | None, n_splits: int) -> bool:
    if y is None:
        return False
    _, counts = np.unique(y, return_counts=True)
    return counts.min() >= n_splits


def inner_validation(idx: np.ndarray, y: np.ndarray | None, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices ``idx`` (int, (n,)) into (train, val) with ``val`` ≈ ``fraction`` of them.

    Stratified on ``y[idx]`` (int class indices, (N,)) when every class has at least 2 members,
    else random; seeded. Returns sorted int64 arrays.

    Raises:
        ProtocolError: fewer than 2 training samples.
    """
    from sklearn.model_selection import train_test_split

    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) < 2:
        raise ProtocolError(f"cannot hold out a validation split from {len(idx)} training sample(s)")
    n_val = max(1, int(round(fraction * len(idx))))
    strat = None
    if y is not None:
        yy = y[idx]
        _, counts = np.unique(yy, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts) and len(idx) - n_val >= len(counts):
            strat = yy
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def stratified_kfold(y: np.ndarray | None, n_splits: int, seed: int = 0, n: int | None = None) -> list[Fold]:
    """Seeded k-fold CV: ``StratifiedKFold(shuffle=True, random_state=seed)`` on the class indices ``y``
    (int, (N,)); plain ``KFold`` when ``y`` is None (regression tasks, pass ``n``) or a class has fewer
    than ``n_splits`` members. Same seed, same folds.

    Raises:
        ProtocolError: ``n_splits < 2`` or more folds than samples.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y) if y is not None else n
    if n is None:
        raise ProtocolError("stratified_kfold needs labels or n")
    if n_splits < 2 or n_splits > n:
        raise ProtocolError(f"cannot make {n_splits} folds from {n} samples")
    if _can_stratify(y, n_splits):
        splits = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(n), y)
    else:
        splits = KFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(n))
    folds = []
    for k, (tr, te) in enumerate(splits):
        tr, va = inner_validation(tr, y, seed + 1000 + k)
        folds.append(Fold(f"fold{k}", tr, va, np.sort(te)))
    return folds


def leave_one_speaker_out(speakers: list[str | None], seed: int = 0) -> list[Fold]:
    """Leave-one-speaker-out CV (``sklearn.model_selection.LeaveOneGroupOut``), one fold per speaker,
    in sorted speaker order; the inner validation split is one other training speaker (seeded).

    Args:
        speakers: speaker id per sample, length N.

    Raises:
        ProtocolError: a sample without a speaker, or fewer than 3 speakers (train, val, test).
    """
    from sklearn.model_selection import LeaveOneGroupOut

    missing = [i for i, s in enumerate(speakers) if s is None or s == ""]
    if missing:
        raise ProtocolError(f"leave-one-speaker-out needs a speaker for every sample; {len(missing)} have none")
    groups = np.asarray(speakers, dtype=object)
    uniq = sorted(set(speakers))
    if len(uniq) < 3:
        raise ProtocolError(f"leave-one-speaker-out needs at least 3 speakers, found {len(uniq)}")
    rng = np.random.default_rng(seed)
    folds = []
    splits = {groups[te[0]]: (tr, te) for tr, te in LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups)}
    for spk in uniq:
        tr, te = splits[spk]
        others = sorted(set(groups[tr]))
        val_spk = others[int(rng.integers(len(others)))]
        is_val = groups[tr] == val_spk
        folds.append(Fold(f"speaker={spk}", np.sort(tr[~is_val]), np.sort(tr[is_val]), np.sort(te)))
    return folds


def predefined_split(splits: list[str | None], y: np.ndarray | None, test_splits: list[str], seed: int = 0) -> list[Fold]:
    """The source's own partition as a single fold: train on ``train``, stop early on ``dev``/``val``
    (or a stratified 10% of ``train`` when there is none), evaluate on the ``test_splits`` partitions.

    Raises:
        ProtocolError: no ``train`` samples or no samples in ``test_splits`` (the message lists the partitions found).
    """
    sp = np.asarray([s or "" for s in splits], dtype=object)
    found = sorted(set(sp) - {""})
    tr = np.flatnonzero(sp == "train")
    te = np.flatnonzero(np.isin(sp, test_splits))
    if len(tr) == 0 or len(te) == 0:
        raise ProtocolError(f"--folds split needs 'train' and test partition(s) {test_splits}; found partitions {found}")
    va = np.flatnonzero(np.isin(sp, DEV_SPLITS))
    if len(va) == 0:
        tr, va = inner_validation(tr, y, seed)
    return [Fold("split", tr, va, te)]


#: Partitions that hold evaluation data (MER 2023's labelled ``test1/2/3``, a source's ``test``):
#: with ``--folds K`` or ``speaker`` they never enter the cross-validation pool unless named in
#: ``--train-splits``; those named in ``--test-split`` are the held-out test set.
EVAL_SPLITS = ("test", "test1", "test2", "test3")


def make_folds(protocol: str, fs, y: dict[str, np.ndarray], rows: np.ndarray, seed: int, test_splits: list[str],
               train_splits: list[str] | None = None) -> tuple[list[Fold], np.ndarray | None]:
    """Folds over ``rows`` (labelled samples of the CV pool) for ``--folds`` = ``K``, ``speaker`` or ``split``;
    indices are into the full sample list. Returns (folds, held-out test rows or None).

    ``fs`` is an :class:`emo.fuse.data.FeatureSet` (its ``splits`` and ``speakers`` per row are
    read), ``y`` the label arrays of :func:`emo.fuse.data.targets`.

    With ``K`` or ``speaker``, samples whose partition is in ``test_splits`` are held out of the CV
    pool and scored by the averaged fold models; samples of the other evaluation partitions
    (:data:`EVAL_SPLITS`) are left out entirely unless their partition is in ``train_splits``.

    Raises:
        emo.fuse.protocols.ProtocolError: unusable protocol for the data (named).
    """
    raw_splits, speakers = fs.splits, fs.speakers  # properties building lists: once, not per row
    splits = np.asarray([s or "" for s in raw_splits], dtype=object)
    yd = y.get("discrete")
    if protocol == "split":
        folds = predefined_split([raw_splits[i] for i in rows], None if yd is None else yd[rows], test_splits, seed)
        return [Fold(f.name, rows[f.train], rows[f.val], rows[f.test]) for f in folds], None
    is_test = np.isin(splits[rows], test_splits) if test_splits else np.zeros(len(rows), bool)
    held = np.isin(splits[rows], [s_ for s_ in EVAL_SPLITS if s_ not in (train_splits or [])]) & ~is_test
    pool, test = rows[~is_test & ~held], rows[is_test]
    if len(pool) == 0:
        raise ProtocolError(f"no samples left for cross-validation: every labelled sample is in an evaluation partition "
                            f"({sorted(set(splits[rows]))}); name the ones to train on with --train-splits")
    if protocol == "speaker":
        folds = leave_one_speaker_out([speakers[i] for i in pool], seed)
    else:
        try:
            k = int(protocol)
        except ValueError:
            raise ProtocolError(f"--folds must be a number of folds, 'speaker' or 'split', not {protocol!r}") from None
        folds = stratified_kfold(None if yd is None else yd[pool], k, seed, n=len(pool))
    folds = [Fold(f.name, pool[f.train], pool[f.val], pool[f.test]) for f in folds]
    return folds, (test if len(test) else None)


def fold_warnings(folds: list[Fold], y: np.ndarray | None, n_classes: int) -> list[str]:
    """Warnings about folds that cannot represent every class (discrete tasks; ``y`` int class
    indices over all rows): a class absent from a fold's training rows, or an inner validation
    split with fewer samples than classes (at least one class unseen by early stopping). Empty
    list when all is well or ``y`` is None."""
    if y is None or n_classes < 2:
        return []
    out = []
    for f in folds:
        missing = sorted(set(range(n_classes)) - set(np.unique(y[f.train]).tolist()))
        if missing:
            out.append(f"fold {f.name}: class(es) {missing} absent from the training rows; the model never sees them")
        vmiss = sorted(set(range(n_classes)) - set(np.unique(y[f.val]).tolist()))
        if vmiss:
            out.append(f"fold {f.name}: the inner validation split ({len(f.val)} samples) lacks class(es) {vmiss}; "
                       "early stopping does not see them")
    return out
