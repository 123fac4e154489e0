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
from pathlib import Path

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


#: The ``--folds`` default: speaker-independent folds whenever the data know speakers.
AUTO = "auto"

#: Fewest speakers for which ``--folds auto`` chooses leave-one-speaker-out (train, validation, test speaker).
MIN_AUTO_SPEAKERS = 3

#: Prefix of ``--folds file:PATH``: fold lists read from files (:func:`read_fold_lists`).
FILE_PREFIX = "file:"


def resolve_protocol(protocol: str, speakers: list[str | None]) -> tuple[str, str]:
    """The protocol ``--folds auto`` stands for, and why (one sentence for the run's record).

    ``auto``: leave-one-speaker-out (``speaker``) when every sample of the pool has a speaker and
    there are at least :data:`MIN_AUTO_SPEAKERS`; else stratified 5-fold, which mixes speakers (or
    unknown speakers) between training and test, and the reason says so. Any other value is
    returned as given (``"asked for with --folds X"``).

    Args:
        protocol: the ``--folds`` value. speakers: speaker id per sample of the cross-validation pool.
    """
    if protocol != AUTO:
        return protocol, f"asked for with --folds {protocol}"
    known = [s for s in speakers if s not in (None, "")]
    n_spk = len(set(known))
    if known and len(known) == len(speakers) and n_spk >= MIN_AUTO_SPEAKERS:
        return "speaker", f"--folds auto: every sample has a speaker ({n_spk} speakers), so leave-one-speaker-out"
    if not known:
        why = "the dataset records no speakers"
    elif len(known) < len(speakers):
        why = f"{len(speakers) - len(known)} of {len(speakers)} samples have no speaker"
    else:
        why = f"only {n_spk} speaker(s)"
    return "5", f"--folds auto: {why}, so stratified 5-fold (speaker-dependent: test speakers may also be in training)"


def read_fold_lists(path: str | Path, names: list[str]) -> list[tuple[str, set[str]]]:
    """Predefined evaluation folds from files: ``[(fold name, names of its test samples)]``.

    Two layouts:

    * EmoBox (Ma et al., 2024): a folder with ``fold_<k>/<dataset>_test_fold_<k>.jsonl`` (one JSON
      object per line, ``key`` = ``<dataset>-<utterance>``); the ``<dataset>-`` prefix is removed
      when the remainder is a sample name. The train lists are read only to check that they are the
      complement of the test lists.
    * a CSV ``name,fold``: the fold in which each sample is evaluated.

    Args:
        path: the folder or CSV. names: the sample names of the feature set (for matching keys).

    Raises:
        ProtocolError: no fold files, unreadable lines, a key that names no sample (with an example
            and the count), a sample in two test folds.
    """
    import csv
    import json

    path = Path(path)
    known = set(names)

    def match(key: str, where: str) -> str:
        if key in known:
            return key
        if "-" in key and key.split("-", 1)[1] in known:
            return key.split("-", 1)[1]
        raise ProtocolError(f"{where}: {key!r} names no sample of the features (names look like {names[0]!r})")

    folds: list[tuple[str, set[str]]] = []
    if path.is_dir():
        dirs = sorted((d for d in path.glob("fold_*") if d.is_dir()), key=lambda d: (len(d.name), d.name))
        for d in dirs:
            tests = sorted(d.glob("*_test_fold_*.jsonl"))
            if len(tests) != 1:
                raise ProtocolError(f"{d}: expected one *_test_fold_*.jsonl file, found {len(tests)}")
            got: set[str] = set()
            for i, line in enumerate(tests[0].read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    key = json.loads(line)["key"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ProtocolError(f"{tests[0]} line {i}: not a JSON object with a 'key'") from None
                got.add(match(str(key), f"{tests[0]} line {i}"))
            folds.append((d.name, got))
        if not folds:
            raise ProtocolError(f"{path}: no fold_<k>/ folders (EmoBox layout: fold_<k>/<dataset>_test_fold_<k>.jsonl)")
    elif path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"name", "fold"} <= set(reader.fieldnames):
                raise ProtocolError(f"{path}: a fold list CSV needs the columns name,fold; found {reader.fieldnames}")
            by: dict[str, set[str]] = {}
            for i, row in enumerate(reader, 2):
                by.setdefault(str(row["fold"]).strip(), set()).add(match(row["name"].strip(), f"{path} row {i}"))
        folds = [(f"fold_{k}", v) for k, v in sorted(by.items())]
    else:
        raise ProtocolError(f"--folds file:{path}: no such file or folder")
    seen: dict[str, str] = {}
    for name, members in folds:
        for m in members:
            if m in seen:
                raise ProtocolError(f"{path}: sample {m!r} is in the test lists of both {seen[m]} and {name}")
            seen[m] = name
    return folds


def folds_from_lists(lists: list[tuple[str, set[str]]], names: list[str], pool: np.ndarray, y: np.ndarray | None,
                     seed: int) -> tuple[list[Fold], int]:
    """:class:`Fold` objects over ``pool`` (row indices) from :func:`read_fold_lists`: each fold tests
    its listed samples and trains on the rest of the pool (inner validation: a stratified 10 % of
    that, seeded). Returns (folds, number of pool rows in no test list: they train in every fold
    and are never evaluated).

    Raises:
        ProtocolError: a fold without test samples in the pool.
    """
    pos = {names[i]: i for i in pool}
    in_any: set[int] = set()
    folds = []
    for k, (name, members) in enumerate(lists):
        te = np.asarray(sorted(pos[m] for m in members if m in pos), dtype=np.int64)
        if len(te) == 0:
            raise ProtocolError(f"fold list {name}: none of its {len(members)} samples is labelled in the pool")
        in_any |= set(te.tolist())
        tr = np.setdiff1d(pool, te)
        tr, va = inner_validation(tr, y, seed + 1000 + k)
        folds.append(Fold(name, tr, va, te))
    return folds, int(len(pool) - len(in_any))


def speaker_overlap(folds: list[Fold], speakers: list[str | None]) -> dict:
    """Whether ``folds`` keep test speakers out of training: ``{"speaker_independent": bool | None,
    "n_speakers", "folds_mixed"`` (folds whose test speakers also train or validate),
    ``"shared_speakers"`` (the most test speakers any fold shares with its training part)}.
    ``speaker_independent`` is None when a row used by a fold has no speaker (cannot be known)."""
    rows = np.unique(np.concatenate([np.concatenate([f.train, f.val, f.test]) for f in folds])) if folds else np.zeros(0, int)
    spk = [speakers[i] for i in rows]
    if not spk or any(s in (None, "") for s in spk):
        return {"speaker_independent": None, "n_speakers": len({s for s in spk if s}), "folds_mixed": None, "shared_speakers": None}
    mixed, most = 0, 0
    for f in folds:
        shared = {speakers[i] for i in f.test} & {speakers[i] for i in np.concatenate([f.train, f.val])}
        mixed += bool(shared)
        most = max(most, len(shared))
    return {"speaker_independent": mixed == 0, "n_speakers": len(set(spk)), "folds_mixed": mixed, "shared_speakers": most}


_KINDS = {"speaker": "leave-one-speaker-out", "split": "predefined split"}
_INNER = {"speaker": "one training speaker per fold (seeded)", "split": "the dev partition, else a stratified 10% of train"}


def protocol_record(requested: str, used: str, why: str, folds: list[Fold], speakers: list[str | None],
                    normalize: str, extra: dict | None = None) -> dict:
    """The ``protocol`` record of a run's ``config.json`` and ``metrics.json``: ``kind``, ``folds``
    (``--folds`` as resolved), ``requested``, ``n_folds``, ``grouping`` (``speaker`` or None),
    ``speaker_independent`` (measured on the folds by :func:`speaker_overlap`: True, False or None
    when speakers are unknown), ``inner_validation``, ``normalization`` (mode and where its
    statistics come from), ``reason`` and ``statement`` (one sentence for tables and reports)."""
    kind = _KINDS.get(used) or ("fold lists from " + used[len(FILE_PREFIX):] if used.startswith(FILE_PREFIX)
                                 else f"stratified {used}-fold")
    ov = speaker_overlap(folds, speakers)
    norm = {"none": "none", "global": "global: each fold's training + inner-validation rows",
            "speaker": "speaker: each speaker's own statistics (all of that speaker's clips, labels unused)"}.get(normalize, normalize)
    rec = {"kind": kind, "folds": used, "requested": requested, "n_folds": len(folds),
           "grouping": "speaker" if used == "speaker" else None, **ov,
           "inner_validation": _INNER.get(used, "stratified 10% of each fold's training part (seeded)"),
           "normalization": norm, "reason": why, **(extra or {})}
    rec["statement"] = protocol_statement(rec)
    return rec


def protocol_statement(rec: dict) -> str:
    """One line for the top of a results table and ``report.md``: the protocol in words, led by
    ``SPEAKER-DEPENDENT`` when test speakers were also in training and ``speakers unknown`` when
    that cannot be checked."""
    si = rec.get("speaker_independent")
    n = rec.get("n_folds")
    head = (f"speaker-independent {rec['kind']} ({n} folds; no test speaker in training)" if si
            else (f"SPEAKER-DEPENDENT {rec['kind']} ({n} folds; {rec.get('folds_mixed')} of {n} folds share up to "
                  f"{rec.get('shared_speakers')} speakers between training and test)" if si is False
                  else f"{rec['kind']} ({n} folds; speakers unknown, so speaker independence cannot be checked)"))
    return (f"protocol: {head}; inner validation: {rec.get('inner_validation')}; normalisation: {rec.get('normalization')} "
            f"[{rec.get('reason')}]")


def cv_pool(splits, rows: np.ndarray, test_splits: list[str], train_splits: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cross-validation pool, held-out test rows) of ``rows`` (int indices) given each row's partition
    ``splits`` (see :func:`make_folds`)."""
    splits = np.asarray([s or "" for s in splits], dtype=object)
    is_test = np.isin(splits[rows], test_splits) if test_splits else np.zeros(len(rows), bool)
    held = np.isin(splits[rows], [s_ for s_ in EVAL_SPLITS if s_ not in (train_splits or [])]) & ~is_test
    return rows[~is_test & ~held], rows[is_test]


def resolve_for(protocol: str, fs, rows: np.ndarray, test_splits: list[str], train_splits: list[str] | None = None) -> tuple[str, str]:
    """:func:`resolve_protocol` over the cross-validation pool :func:`make_folds` would use."""
    if protocol != AUTO:
        return resolve_protocol(protocol, [])
    pool, _ = cv_pool(fs.splits, rows, test_splits, train_splits)
    speakers = fs.speakers
    return resolve_protocol(protocol, [speakers[i] for i in pool])


def make_folds(protocol: str, fs, y: dict[str, np.ndarray], rows: np.ndarray, seed: int, test_splits: list[str],
               train_splits: list[str] | None = None) -> tuple[list[Fold], np.ndarray | None]:
    """Folds over ``rows`` (labelled samples of the CV pool) for ``--folds`` = ``K``, ``speaker`` or ``split``;
    indices are into the full sample list. Returns (folds, held-out test rows or None).

    ``fs`` is an :class:`emo.fuse.training.data.FeatureSet` (its ``splits`` and ``speakers`` per row are
    read), ``y`` the label arrays of :func:`emo.fuse.training.data.targets`.

    With ``K`` or ``speaker``, samples whose partition is in ``test_splits`` are held out of the CV
    pool and scored by the averaged fold models; samples of the other evaluation partitions
    (:data:`EVAL_SPLITS`) are left out entirely unless their partition is in ``train_splits``.

    Raises:
        emo.fuse.eval.protocols.ProtocolError: unusable protocol for the data (named).
    """
    raw_splits, speakers = fs.splits, fs.speakers  # properties building lists: once, not per row
    splits = np.asarray([s or "" for s in raw_splits], dtype=object)
    yd = y.get("discrete")
    if protocol == "split":
        folds = predefined_split([raw_splits[i] for i in rows], None if yd is None else yd[rows], test_splits, seed)
        return [Fold(f.name, rows[f.train], rows[f.val], rows[f.test]) for f in folds], None
    pool, test = cv_pool(splits, rows, test_splits, train_splits)
    if len(pool) == 0:
        raise ProtocolError(f"no samples left for cross-validation: every labelled sample is in an evaluation partition "
                            f"({sorted(set(splits[rows]))}); name the ones to train on with --train-splits")
    if protocol == AUTO:
        protocol = resolve_protocol(protocol, [speakers[i] for i in pool])[0]
    if protocol.startswith(FILE_PREFIX):
        lists = read_fold_lists(protocol[len(FILE_PREFIX):], fs.names)
        folds, _ = folds_from_lists(lists, fs.names, pool, yd, seed)
        return folds, (test if len(test) else None)
    if protocol == "speaker":
        folds = leave_one_speaker_out([speakers[i] for i in pool], seed)
    else:
        try:
            k = int(protocol)
        except ValueError:
            raise ProtocolError(f"--folds must be auto, a number of folds, 'speaker', 'split' or file:PATH, not {protocol!r}") from None
        folds = stratified_kfold(None if yd is None else yd[pool], k, seed, n=len(pool))
    folds = [Fold(f.name, pool[f.train], pool[f.val], pool[f.test]) for f in folds]
    return folds, (test if len(test) else None)


def fold_warnings(folds: list[Fold], y: np.ndarray | None, n_classes: int, classes: list[str] | None = None) -> list[str]:
    """Warnings about folds that cannot represent every class (discrete tasks; ``y`` int class
    indices over all rows): a class absent from a fold's training rows, or an inner validation
    split with fewer samples than classes (at least one class unseen by early stopping). Classes
    are named by ``classes`` when given (else by index). Empty list when all is well or ``y`` is None."""
    if y is None or n_classes < 2:
        return []
    label = (lambda idx: [classes[i] for i in idx]) if classes and len(classes) >= n_classes else (lambda idx: idx)  # noqa: E731
    out = []
    for f in folds:
        missing = sorted(set(range(n_classes)) - set(np.unique(y[f.train]).tolist()))
        if missing:
            out.append(f"fold {f.name}: class(es) {label(missing)} absent from the training rows; the model never sees them")
        vmiss = sorted(set(range(n_classes)) - set(np.unique(y[f.val]).tolist()))
        if vmiss:
            out.append(f"fold {f.name}: the inner validation split ({len(f.val)} samples) lacks class(es) {label(vmiss)}; "
                       "early stopping does not see them")
    return out
