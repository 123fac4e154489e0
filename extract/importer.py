"""``emo store import``: a feature store from features someone else extracted.

Two layouts are read:

* **MERTools** (the MER challenge baselines, https://github.com/zeroQiaoba/MERTools):
  ``features/<model>-UTT/<name>.npy`` (one utterance vector per clip, shape (D,) or (1, D)) and
  ``features/<model>-FRAME/<name>.npy`` (frame-level, (T, D)). MERTools' audio feature is already
  one combination (the mean of the last four hidden layers), so it is stored as one layer.
* **EmoBox** (Ma et al., LREC-COLING 2024, https://github.com/emo-box/EmoBox):
  ``dump/<dataset>/<model>/<key>.npy``, frame-level (T, D) for one layer, or (L, T, D) for every
  layer (its ``--all_layers`` dumps), stored as layers ``0``..``L-1``. EmoBox keys are
  ``<dataset>-<name>`` (``emodb-03a01Wa``): the ``<dataset>-`` prefix (the dump's dataset folder)
  is removed when the name without it is a sample of the dataset.

Frame-level inputs are mean-pooled over their frames into the utterance vector (and kept as frames
with ``frames=True``). Every file is checked before anything is written: a file whose name is not a
sample of the dataset, a file of another shape than the others, an unreadable or non-finite file
is refused with the file named, so a half-imported store never exists. Files load with
``allow_pickle=False``.

Provenance (store attributes): ``import_kind`` (``mertools-utt``, ``mertools-frame``, ``emobox``),
``import_folder`` (the folder relative to its layout's root: ``<model>-UTT`` or
``<dataset>/<model>``), ``import_root`` (that root, absolute), ``import_files`` (file count) and
``import_hash`` (SHA-256 over the sorted file names and bytes, first 16 hex digits; also the store's
``weights_hash``, so a re-import of changed files is refused as a different store unless
``overwrite``), plus the dataset's own provenance (:func:`emo.extract.identity.dataset_provenance`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("mertools", "emobox")


class ImportFeaturesError(ValueError):
    """Features that cannot be imported: the message names the file and the problem."""


@dataclass
class ImportPlan:
    """What :func:`plan_import` found: files per sample, their layout and provenance.

    Attributes:
        kind: ``mertools-utt``, ``mertools-frame`` or ``emobox``.
        files: sample name -> .npy path, in sorted file order.
        layers: the layer keys stored.
        dim: feature dimension D.
        frame_level: the files hold frame sequences (pooled by their mean).
        provenance: the ``import_*`` attributes (see the module docstring).
    """

    kind: str
    files: dict[str, Path]
    layers: list[str]
    dim: int
    frame_level: bool
    provenance: dict[str, Any]


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file without reading its data."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - a broken or pickled file: named in the message
        raise ImportFeaturesError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    return tuple(arr.shape), arr.dtype


def content_hash(files: list[Path]) -> str:
    """SHA-256 (first 16 hex digits) over each file's name and bytes, in the given order (1 MiB blocks)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def plan_import(kind: str, folder: str | Path, sample_names: list[str], layer: str | None = None,
                allow_missing: bool = False) -> ImportPlan:
    """Check a folder of per-clip ``.npy`` files against a dataset's samples; read only headers.

    Args:
        kind: ``mertools`` (the folder is ``<model>-UTT`` or ``<model>-FRAME``) or ``emobox``
            (the folder is ``dump/<dataset>/<model>``).
        folder: the folder of ``<name>.npy`` files.
        sample_names: the dataset's sample names.
        layer: layer key for single-layer files (default ``"utt"`` for MERTools -UTT, ``"frame_mean"``
            for -FRAME, ``"0"`` for single-layer EmoBox dumps).
        allow_missing: accept a folder without files for some samples (they are then absent from the store).

    Returns:
        :class:`ImportPlan`.

    Raises:
        ImportFeaturesError: unknown kind; a missing or empty folder; a MERTools folder not named
            ``-UTT``/``-FRAME``; a file whose name is not a sample (the file named); two files for one
            sample; shapes that differ from the first file's or have the wrong rank (the file named);
            samples without a file (the first named, unless ``allow_missing``).
    """
    from emo.extract.layers import LayerSpecError, parse_layers

    if kind not in KINDS:
        raise ImportFeaturesError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportFeaturesError(f"{folder}: not a directory")
    if kind == "mertools":
        tail = folder.name.upper()
        if tail.endswith("-UTT"):
            sub, rank = "mertools-utt", 1
        elif tail.endswith("-FRAME"):
            sub, rank = "mertools-frame", 2
        else:
            raise ImportFeaturesError(f"{folder}: a MERTools feature folder is named <model>-UTT or <model>-FRAME")
        rel, root = folder.name, folder.parent
        prefix = ""
    else:
        sub, rank = "emobox", None
        rel, root = f"{folder.parent.name}/{folder.name}", folder.parent.parent
        prefix = f"{folder.parent.name}-"
    files = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise ImportFeaturesError(f"{folder}: no .npy files")
    known = set(sample_names)
    by_name: dict[str, Path] = {}
    for f in files:
        stem = f.stem
        name = stem if stem in known or not prefix or not stem.startswith(prefix) else stem[len(prefix):]
        if name not in known:
            raise ImportFeaturesError(f"{f}: {stem!r} is not a sample of the dataset "
                                      f"({len(known)} samples, e.g. {sorted(known)[:1]})")
        if name in by_name:
            raise ImportFeaturesError(f"{f}: a second file for sample {name!r} (first: {by_name[name].name})")
        by_name[name] = f
    first_shape: tuple[int, ...] | None = None
    first_file = None
    for name, f in by_name.items():
        shape, dtype = _header(f)
        if not np.issubdtype(dtype, np.floating) and not np.issubdtype(dtype, np.integer):
            raise ImportFeaturesError(f"{f}: dtype {dtype} is not numeric")
        if sub == "mertools-utt" and len(shape) == 2 and shape[0] == 1:
            shape = (shape[1],)
        want_rank = rank if rank is not None else (2 if first_shape is None or len(first_shape) == 2 else 3)
        if first_shape is None and rank is None:
            if len(shape) not in (2, 3):
                raise ImportFeaturesError(f"{f}: shape {shape}; an EmoBox dump holds (T, D) or (L, T, D) arrays")
            want_rank = len(shape)
        if len(shape) != want_rank:
            what = {1: "(D,)", 2: "(T, D)", 3: "(L, T, D)"}[want_rank]
            raise ImportFeaturesError(f"{f}: shape {shape}, expected {what} like "
                                      f"{first_file.name if first_file else 'this layout'}")
        if first_shape is None:
            first_shape, first_file = shape, f
        fixed = (shape[-1],) if len(shape) < 3 else (shape[0], shape[-1])
        ref = (first_shape[-1],) if len(first_shape) < 3 else (first_shape[0], first_shape[-1])
        if fixed != ref:
            raise ImportFeaturesError(f"{f}: shape {shape} does not match {first_file.name} {first_shape} "
                                      "(feature dimension and layer count must agree)")
        if len(shape) >= 2 and shape[-2] == 0:
            raise ImportFeaturesError(f"{f}: shape {shape} has no frames")
    missing = [n for n in sample_names if n not in by_name]
    if missing and not allow_missing:
        raise ImportFeaturesError(f"{folder}: no file for {len(missing)} of {len(sample_names)} samples "
                                  f"(e.g. {missing[0]!r}); pass --allow-missing to import the others")
    assert first_shape is not None
    if len(first_shape) == 3:
        layers = [str(i) for i in range(first_shape[0])]
    else:
        key = layer or {"mertools-utt": "utt", "mertools-frame": "frame_mean", "emobox": "0"}[sub]
        try:
            parsed = parse_layers(key)
        except LayerSpecError as e:
            raise ImportFeaturesError(f"--layer {key!r}: {e}") from None
        if not parsed or len(parsed) != 1:
            raise ImportFeaturesError(f"--layer {key!r}: give one layer key")
        layers = parsed
    ordered = [by_name[n] for n in sorted(by_name, key=lambda n: by_name[n].name)]
    prov = {"import_kind": sub, "import_folder": rel, "import_root": str(root.resolve()),
            "import_files": len(ordered), "import_hash": content_hash(ordered)}
    return ImportPlan(sub, by_name, layers, int(first_shape[-1]), len(first_shape) >= 2, prov)


def load_clip(plan: ImportPlan, name: str, frames: bool = False):
    """The :class:`emo.extract.types.Encoded` of one sample: layer -> float32 (D,) (the mean over
    frames for frame-level files), with frames layer -> (T, D) when ``frames``.

    Raises:
        ImportFeaturesError: unreadable or non-finite values (the file named).
    """
    from emo.extract.types import Encoded

    f = plan.files[name]
    try:
        a = np.asarray(np.load(f, allow_pickle=False), dtype=np.float64)
    except Exception as e:  # noqa: BLE001
        raise ImportFeaturesError(f"{f}: unreadable ({type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(a)):
        raise ImportFeaturesError(f"{f}: {int((~np.isfinite(a)).sum())} non-finite value(s)")
    if not plan.frame_level:
        return Encoded(layers={plan.layers[0]: a.reshape(-1).astype(np.float32)})
    if a.ndim == 2:
        a = a[None]
    layers = {k: a[j].mean(axis=0).astype(np.float32) for j, k in enumerate(plan.layers)}
    fr = {k: a[j].astype(np.float32) for j, k in enumerate(plan.layers)} if frames else None
    return Encoded(layers=layers, frames=fr)


def import_store(kind: str, folder: str | Path, adapter, out: str | Path, encoder: str, modality: str = "audio",
                 layer: str | None = None, frames: bool = False, allow_missing: bool = False,
                 overwrite: bool = False, dtype: str = "float32") -> tuple[Path, ImportPlan]:
    """Import a MERTools or EmoBox feature folder as ``<out>/<dataset>/<encoder>.h5`` and write the
    dataset manifest beside it, so ``emo fuse train --features ENCODER`` runs on it.

    Every file is checked (:func:`plan_import`) and loaded (:func:`load_clip`) before the store is
    opened; the store is written with :class:`emo.extract.store.StoreWriter`.

    Args:
        kind: ``mertools`` or ``emobox``. folder: the .npy folder. adapter: the dataset
            (:class:`emo.extract.datasets.DatasetAdapter`) whose samples the files must match.
        out: feature root (``emo extract --out``). encoder: the store's name (``--features`` name).
        modality: ``audio``, ``face`` or ``text``. layer: key for single-layer files.
        frames: also store the frame sequences of frame-level files.
        allow_missing: see :func:`plan_import`. overwrite: replace an existing store.
        dtype: store dtype (``float32`` keeps the imported values; ``float16`` halves the size).

    Returns:
        (store path, the plan).

    Raises:
        ImportFeaturesError: see :func:`plan_import` / :func:`load_clip`; ``frames`` with utterance files;
            an unknown modality.
        emo.extract.store.StoreError: an existing store of other provenance (without ``overwrite``),
            a locked store, an unwritable ``out``.
    """
    from emo.extract.datasets import write_manifest
    from emo.extract.identity import dataset_provenance
    from emo.extract.store import StoreWriter, check_writable, store_path
    from emo.extract.types import MODALITIES

    if modality not in MODALITIES:
        raise ImportFeaturesError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    samples = adapter.samples()
    plan = plan_import(kind, folder, [s.name for s in samples], layer=layer, allow_missing=allow_missing)
    if frames and not plan.frame_level:
        raise ImportFeaturesError(f"{folder}: --frames needs frame-level files (MERTools -FRAME or EmoBox dumps)")
    encoded = {n: load_clip(plan, n, frames) for n in plan.files}  # every file checked before writing
    path = store_path(out, adapter.dataset, encoder)
    ds_dir = check_writable(Path(out) / adapter.dataset)
    prov: dict[str, Any] = {
        "encoder": encoder, "source": f"{plan.kind}:{plan.provenance['import_folder']}",
        "weights_hash": plan.provenance["import_hash"],
        "pooling": "imported" if not plan.frame_level else "mean_over_imported_frames",
        "sample_rate": 0, "modality": modality, "dataset": adapter.dataset,
        **dataset_provenance(adapter), **plan.provenance,
    }
    w = StoreWriter(path, prov, plan.layers, frames=frames, dtype=dtype, overwrite=overwrite)
    try:
        for s in samples:
            if s.name in encoded and s.name not in w.done:
                w.add(s.name, encoded[s.name])
        write_manifest(ds_dir, adapter, samples)
        w.finalize()
    finally:
        w.close()
    return path, plan
