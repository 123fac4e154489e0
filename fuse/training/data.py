"""Loading cached features and labels for the fusion stage, and per-fold normalisation.

Reads only the selected layers from ``features/<dataset>/<encoder>.h5`` (one sequential read
per layer, see :class:`emo.extract.store.FeatureStore`) into float32 arrays (N, L, D), aligned
with the labels of the dataset manifest (``samples.csv``). With ``frames=True``, encoders whose
store holds frame-level features (``emo extract --frames``) are loaded as :class:`Frames`
(variable-length sequences (T_i, L, D), stored packed) instead, for the LSTM frame encoders of
:class:`emo.fuse.model.multimodal.FusionModel`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo.extract.datasets.base import Sample
from emo.extract.spec import Spec, SpecError, parse_spec
from emo.fuse.training.inputs import FeatureInput
from emo.fuse.eval.runcheck import require_finite

#: Provenance attributes copied from each store into a run's config.
PROVENANCE_KEYS = ("encoder", "source", "weights_hash", "pooling", "sample_rate", "fps", "modality", "dtype", "emo_version", "created",
                   "derived_from",  # derived stores (CLIPL-A): how to recompute them (emo score)
                   "import_kind", "import_folder", "import_files", "import_hash",  # emo store import: where they came from
                   # issue 23: what else changes an input value, for the run's input_contract (emo.fuse.eval.contract)
                   "dataset_options", "face_detector", "face_weights_hash", "face_size", "face_template", "max_side",
                   "lexicon_hash", "max_seconds")


class FeatureError(ValueError):
    """Features that cannot be used together: bad spec, missing layers, mismatched sample sets."""


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """int64 (N,): start of each of N consecutive sequences of ``lengths`` (0, T_0, T_0 + T_1, ...)."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)


@dataclass
class Frames:
    """Frame-level features of N utterances: variable-length sequences stored packed.

    Utterance ``i`` is ``data[starts[i] : starts[i] + lengths[i]]``, an array (T_i, L, D) over the
    selected layers. Row selection (:meth:`__getitem__`) shares ``data`` (no frame copy); a
    sequence may be empty (T_i = 0, e.g. a clip without a detected face).

    Attributes:
        data: float32 (F, L, D), F >= sum of ``lengths``.
        starts: int64 (N,) first frame of each utterance in ``data``.
        lengths: int64 (N,) frame count T_i of each utterance.
    """

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.data.ndim != 3 or self.starts.shape != self.lengths.shape or self.starts.ndim != 1:
            raise FeatureError(f"frames: data must be (F, L, D) and starts/lengths (N,); got {self.data.shape}, "
                               f"{self.starts.shape}, {self.lengths.shape}")
        if len(self.lengths) and (self.lengths.min() < 0 or (self.starts + self.lengths).max() > len(self.data)):
            raise FeatureError(f"frames: sequences reach past the {len(self.data)} stored frames")

    @classmethod
    def from_list(cls, seqs: list[np.ndarray]) -> "Frames":
        """Pack a list of N arrays (T_i, D) (one layer) or (T_i, L, D) into :class:`Frames` (float32).

        Raises:
            FeatureError: arrays of different ranks or per-frame shapes (the first offending index is named).
        """
        arrs = [np.asarray(a, dtype=np.float32) for a in seqs]
        arrs = [a[:, None, :] if a.ndim == 2 else a for a in arrs]
        if not arrs:
            return cls(np.zeros((0, 1, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
        shape = arrs[0].shape[1:]
        for i, a in enumerate(arrs):
            if a.ndim != 3 or a.shape[1:] != shape:
                raise FeatureError(f"frame sequence {i} has shape {a.shape}; expected (T, {', '.join(map(str, shape))}) "
                                   "like the first one (pass (T_i, D) or (T_i, L, D) arrays)")
        lengths = np.array([a.shape[0] for a in arrs], dtype=np.int64)
        return cls(np.concatenate(arrs, axis=0), _offsets(lengths), lengths)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(L, D): layers and dimension of each frame."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    def __getitem__(self, idx) -> "Frames":
        """Rows ``idx`` (int array or slice) as :class:`Frames` sharing ``data``."""
        return Frames(self.data, self.starts[idx], self.lengths[idx])

    def frame_index(self) -> np.ndarray:
        """int64 (ΣT_i,): positions in ``data`` of this set's frames, utterance by utterance."""
        total = int(self.lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        row_start = np.repeat(self.starts - _offsets(self.lengths), self.lengths)
        return np.arange(total, dtype=np.int64) + row_start

    def row_of_frame(self) -> np.ndarray:
        """int64 (ΣT_i,): the utterance (row) each frame of :meth:`frame_index` belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def compact(self) -> "Frames":
        """Only this set's frames, contiguous (``data`` of exactly ΣT_i frames, in row order); ``self``
        when it already is, else a copy."""
        starts = _offsets(self.lengths)
        if len(self.data) == int(self.lengths.sum()) and np.array_equal(starts, self.starts):
            return self
        return Frames(np.ascontiguousarray(self.data[self.frame_index()]), starts, self.lengths.copy())

    def to_list(self) -> list[np.ndarray]:
        """The sequences as a list of (T_i, L, D) arrays (views into ``data``)."""
        return [self.data[s:s + n] for s, n in zip(self.starts, self.lengths)]

    def mean_pooled(self) -> np.ndarray:
        """Utterance vectors (N, L, D) float32: the mean over each sequence's frames (zeros when T_i = 0)."""
        out = np.zeros((len(self), *self.data.shape[1:]), dtype=np.float32)
        if len(self) and self.lengths.sum():
            np.add.at(out, self.row_of_frame(), self.data[self.frame_index()])
            out /= np.maximum(self.lengths, 1)[:, None, None]
        return out


def read_frames(store, layers: list[str], names: list[str]) -> Frames:
    """Frame-level features of ``layers`` for ``names`` from a :class:`emo.extract.store.FeatureStore`.

    Returns:
        :class:`Frames` with data (ΣT_i, L, D) float32, in ``names`` order.

    Raises:
        emo.extract.store.StoreError: the store has no frames (written without ``--frames``) or lacks a sample.
        FeatureError: layers whose sequences differ in length or dimension.
    """
    per_layer = [store.read_frames(k, names) for k in layers]
    lengths = np.array([a.shape[0] for a in per_layer[0]], dtype=np.int64)
    for k, seqs in zip(layers, per_layer):
        if any(a.shape[0] != n for a, n in zip(seqs, lengths)):
            raise FeatureError(f"{store.path}: frame sequences of layer {k} differ in length from layer {layers[0]}")
    dims = {seqs[0].shape[1] if seqs else 0 for seqs in per_layer}
    if len(dims) > 1:
        raise FeatureError(f"{store.path}: frame features of layers {layers} differ in dimension ({sorted(dims)})")
    d = dims.pop()
    data = np.stack([np.concatenate(seqs, axis=0) if seqs else np.zeros((0, d), np.float32) for seqs in per_layer], axis=1)
    return Frames(np.ascontiguousarray(data, dtype=np.float32), _offsets(lengths), lengths)


#: A parsed ``NAME[=SOURCE][:LAYERS]`` feature spec (the grammar of ``emo extract --encoder``,
#: :mod:`emo.extract.spec`). ``layers`` None means every layer stored; ``source`` None means
#: whatever the store holds.
FeatureSpec = Spec


def parse_feature_spec(text: str) -> FeatureSpec:
    """Parse ``egemaps``, ``hubert_large:16-21`` or ``hubert_large=/ckpt/dir:16-21`` (:func:`emo.extract.spec.parse_spec`).

    Raises:
        FeatureError: empty name or malformed layer spec.
    """
    try:
        return parse_spec(text)
    except SpecError as e:
        raise FeatureError(f"feature {e}") from None


@dataclass
class FeatureSet:
    """Features and labels of one dataset, aligned by sample.

    Attributes:
        names: sample names, length N.
        blocks: encoder name → float32 array (N, L, D) of the selected layers, in ``inputs`` order,
            or, for frame-level inputs, :class:`Frames` (sequences (T_i, L, D)).
        inputs: one :class:`emo.fuse.training.inputs.FeatureInput` per encoder: ``name``, ``modality``,
            ``layers``, ``dim`` (per frame for frame-level inputs), ``frames`` (bool: frame-level),
            ``spec`` (the ``emo extract --encoder`` spec with layers) and ``provenance`` (store
            attributes incl. ``weights_hash``).
        samples: the manifest :class:`Sample` of each row.
        classes: discrete class order from the manifest (``None`` when the dataset has none).
        dataset: dataset name.
        valence_scale: (low, high) of the dataset's valence labels when on their own scale (MER:
            [-5, 5]; from ``dataset.json``), else ``None``.
    """

    names: list[str]
    blocks: dict[str, np.ndarray]
    inputs: list[FeatureInput]
    samples: list[Sample]
    classes: list[str] | None
    dataset: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    valence_scale: list[float] | None = None

    @property
    def speakers(self) -> list[str | None]:
        """Speaker id per row (``None`` where the manifest has none)."""
        return [s.speaker for s in self.samples]

    @property
    def splits(self) -> list[str | None]:
        """Source partition per row (``train``, ``dev``, ``test1``, ... or ``None``)."""
        return [s.split for s in self.samples]

    def subset(self, idx: np.ndarray) -> "FeatureSet":
        """Rows ``idx`` (int array) of every block and list."""
        idx = np.asarray(idx, dtype=np.int64)
        return FeatureSet([self.names[i] for i in idx], {k: v[idx] for k, v in self.blocks.items()}, self.inputs,
                          [self.samples[i] for i in idx], self.classes, self.dataset, dict(self.dropped))


def store_modality(name: str, attrs: dict[str, Any]) -> str:
    """The modality (``audio``, ``face``, ``text``) of the store of encoder ``name``: its ``modality``
    attribute (written since the first schema), else the registered encoder's.

    Raises:
        FeatureError: neither the store nor the registry knows it.
    """
    if attrs.get("modality"):
        return str(attrs["modality"])
    from emo.extract.registry import encoder_modality

    modality = encoder_modality(name)
    if modality is None:
        raise FeatureError(f"store of {name!r} records no modality and {name!r} is not a registered encoder")
    return modality


def _require_finite_frames(frames: "Frames", names: list[str], what: str) -> None:
    """:func:`emo.fuse.eval.runcheck.require_finite` for ragged frame sequences (sample i: its own frames)."""
    bad = [not np.all(np.isfinite(frames.data[a:a + n])) for a, n in zip(frames.starts, frames.lengths)]
    if any(bad):
        require_finite([np.array([np.nan]) if b else np.zeros(1) for b in bad], names, what)


def store_layers(spec: FeatureSpec, store, layers: list[str] | None = None) -> list[str]:
    """The layer keys of ``store`` to use for ``spec``: ``layers`` if given, else the spec's, else all stored.
    Layer combinations are resolved against the store (``mean(last4)`` -> ``mean(21-24)``,
    :func:`emo.extract.combine.resolve`).

    Raises:
        FeatureError: the spec names a source other than the store's, or a layer the store lacks.
    """
    from emo.extract.layers import LayerSpecError, format_layers, is_combination

    if spec.source and store.attrs.get("source") and spec.source != store.attrs.get("source"):
        raise FeatureError(f"{store.path}: extracted from source {store.attrs.get('source')!r}, but --features asks for {spec.source!r}")
    keys = list(layers) if layers else (list(spec.layers) if spec.layers else list(store.layers))
    if any(is_combination(k) for k in keys):  # mean(last4) -> mean(21-24); parts must be stored
        from emo.extract.combine import parts_of, resolve

        try:
            keys = list(dict.fromkeys(resolve(k, store.layers) for k in keys))
            for k in keys:
                parts_of(k, store.layers)
        except LayerSpecError as e:
            raise FeatureError(f"{store.path}: {e}") from None
    missing = [k for k in keys if k not in store.layers and not is_combination(k)]
    if missing:
        raise FeatureError(f"{store.path}: no layer(s) {', '.join(missing)}; stored: {format_layers(store.layers)}")
    return keys


def load_features(features_dir: str | Path, dataset: str, specs: list[str | FeatureSpec], align: str = "strict",
                  frames: bool | list[str] = False) -> FeatureSet:
    """Load the selected layers of each feature store of ``dataset`` and the manifest labels.

    Args:
        features_dir: the ``--out`` of ``emo extract`` (holds ``<dataset>/<encoder>.h5`` and the manifest).
        dataset: dataset name (sub-folder).
        specs: feature specs (strings or :class:`FeatureSpec`); an encoder may appear once.
        align: ``strict`` refuses stores whose sample sets differ; ``intersect`` keeps the samples
            every store has (the count dropped per store is in ``FeatureSet.dropped``).
        frames: ``True``: every encoder whose store holds frame-level features (``emo extract
            --frames``) is loaded as :class:`Frames` (the others stay utterance-level); a list of
            encoder names: exactly those (each must have frames); ``False``: utterance vectors only.

    Returns:
        A :class:`FeatureSet` in manifest order.

    Raises:
        FeatureError: duplicate encoders, a spec's source differing from the store's, missing
            layers, layers of different dimensions in one spec, differing sample sets
            (strict), store samples absent from the manifest, no samples left; ``frames``
            requested but no store (or a named store) has frame-level features.
        emo.extract.store.StoreError: missing or unreadable store.
        emo.extract.datasets.DatasetError: missing manifest.
    """
    from emo.extract.datasets.base import read_manifest
    from emo.extract.combine import combination_provenance, layer_dim
    from emo.extract.layers import format_layers
    from emo.extract.store import FeatureStore, store_path

    if align not in ("strict", "intersect"):
        raise FeatureError(f"unknown --align {align!r}; use strict or intersect")
    specs = [s if isinstance(s, FeatureSpec) else parse_feature_spec(s) for s in specs]
    if not specs:
        raise FeatureError("no --features given")
    seen = [s.name for s in specs]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise FeatureError(f"encoder(s) {', '.join(dup)} given more than once in --features; give one spec with all its layers")
    ddir = Path(features_dir) / dataset
    meta, samples = read_manifest(ddir)
    by_name = {s.name: s for s in samples}
    stores = []
    for spec in specs:
        st = FeatureStore(store_path(features_dir, dataset, spec.name))
        layers = store_layers(spec, st)
        dims = {layer_dim(st, k) for k in layers}
        if len(dims) > 1:
            raise FeatureError(f"{st.path}: selected layers {format_layers(layers)} differ in dimension ({sorted(dims)}); select layers of one size")
        unknown = [n for n in st.names if n not in by_name]
        if unknown:
            raise FeatureError(f"{st.path}: {len(unknown)} sample(s) not in the manifest {ddir / 'samples.csv'} (e.g. {unknown[0]!r}); re-run emo extract")
        stores.append((spec, st, layers))
    name_sets = [set(st.names) for _, st, _ in stores]
    common = set.intersection(*name_sets)
    dropped = {spec.name: len(st.names) - len(common) for spec, st, _ in stores}
    if any(dropped.values()):
        if align == "strict":
            detail = "; ".join(f"{st.path.name}: {len(st.names)} samples" for _, st, _ in stores)
            raise FeatureError(f"feature stores cover different samples ({detail}); "
                               f"{len(common)} are in all of them. Pass --align intersect to use only those")
        warnings.warn(f"--align intersect: using the {len(common)} samples every store has (dropped per store: {dropped})", stacklevel=2)
    names = [s.name for s in samples if s.name in common]
    if not names:
        raise FeatureError(f"no samples shared by the feature stores of {dataset}")
    if frames is True:
        use_frames = {spec.name for spec, st, _ in stores if st.has_frames}
        if not use_frames:
            raise FeatureError(f"frame-level fusion requested, but none of the stores {', '.join(str(st.path) for _, st, _ in stores)} "
                               "has frame-level features; re-extract with emo extract --frames")
    else:
        use_frames = set(frames or [])
        unknown = sorted(use_frames - {spec.name for spec in specs})
        if unknown:
            raise FeatureError(f"frames requested for {', '.join(unknown)}, which are not among the --features")
        for spec, st, _ in stores:
            if spec.name in use_frames and not st.has_frames:
                raise FeatureError(f"{st.path} has no frame-level features; re-extract {spec.name} with emo extract --frames")
    blocks, inputs = {}, []
    for spec, st, layers in stores:
        seq = spec.name in use_frames
        if seq:
            blocks[spec.name] = read_frames(st, layers, names)
            dim = blocks[spec.name].frame_shape[1]
            _require_finite_frames(blocks[spec.name], names, f"{st.path} (dataset {dataset!r})")
        else:
            blocks[spec.name] = st.read(layers, names)
            dim = layer_dim(st, layers[0])
            require_finite(blocks[spec.name], names, f"{st.path} (dataset {dataset!r})")  # NaN/inf never reach training
        prov = {k: st.attrs[k] for k in PROVENANCE_KEYS if k in st.attrs}
        combined = combination_provenance(layers, st.layers)
        if combined:  # virtual layers computed from the store (emo.extract.combine): what and how
            prov["layer_combinations"] = combined
        src = st.attrs.get("source") or None
        full = str(FeatureSpec(spec.name, src, tuple(layers) if (spec.layers or len(st.layers) > 1) else None))
        inputs.append(FeatureInput(spec.name, store_modality(spec.name, st.attrs), layers, dim, seq, full, prov))
    return FeatureSet(names, blocks, inputs, [by_name[n] for n in names], meta.get("classes"), meta.get("dataset", dataset), dropped,
                      meta.get("valence_scale"))


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

def label_source(features_dir: str | Path, dataset: str) -> str:
    """Where the labels of a feature set came from, for messages that must name the file: the label
    file ``emo extract`` read (``folder``: ``labels=`` or ``<root>/labels.csv``; other adapters: the
    corpus root) and the manifest copy training reads (``<features_dir>/<dataset>/samples.csv``)."""
    import json

    from emo.extract.datasets.base import DATASET_JSON, MANIFEST

    ddir = Path(features_dir) / dataset
    manifest = ddir / MANIFEST
    try:
        meta = json.loads((ddir / DATASET_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return str(manifest)
    root, opts = meta.get("root") or "", meta.get("options") or {}
    if opts.get("labels"):
        origin = str(opts["labels"])
    elif meta.get("adapter") == "folder" and root:
        origin = str(Path(root) / "labels.csv")
    elif root:
        origin = f"the {meta.get('adapter')} label files under {root}"
    else:
        return str(manifest)
    return f"{origin}, as copied into {manifest}"


def targets(samples: list[Sample], task: str, classes: list[str] | None, vad_targets: str = "dataset",
            lexicon: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Label arrays for ``task`` and the mask of samples that have every label it needs.

    ``vad_targets="lexicon"``: the VAD targets are the NRC-VAD points of the samples' discrete
    labels in [-1, 1], neutral = origin (:func:`emo.lexicon.bridge.label_targets`; the NRC-VAD
    bridge paper, Sec. III), so a VAD head trains on any discretely labelled dataset; ``lexicon``
    is the NRC-VAD file (``None``: ``$EMO_LEXICON`` / emo's data directory).

    Returns:
        (y, mask): ``y["discrete"]`` int64 (N,) class indices into ``classes`` (-1 where missing),
        ``y["valence"]`` float32 (N,), ``y["vad"]`` float32 (N, 3) (NaN where missing), as the task
        needs them; ``mask`` bool (N,).

    Raises:
        FeatureError: a discrete task (or lexicon VAD targets) without a class list, a class the
            lexicon bridge has no VAD for, a missing lexicon, or no sample with the needed labels.
    """
    from emo.fuse.model.decoders import task_parts

    disc, val, vad = task_parts(task)
    y: dict[str, np.ndarray] = {}
    mask = np.ones(len(samples), dtype=bool)
    if disc:
        if not classes:
            raise FeatureError(f"task {task!r} needs discrete labels, but the dataset manifest has no class list")
        index = {c: i for i, c in enumerate(classes)}
        y["discrete"] = np.array([index.get(s.discrete, -1) if s.discrete is not None else -1 for s in samples], dtype=np.int64)
        mask &= y["discrete"] >= 0
    if val:
        y["valence"] = np.array([np.nan if s.valence is None else s.valence for s in samples], dtype=np.float32)
        mask &= np.isfinite(y["valence"])
    if vad and vad_targets == "lexicon":
        from emo.lexicon.bridge import label_targets

        if not classes:
            raise FeatureError("--vad-targets lexicon maps discrete labels to NRC-VAD, but the dataset manifest has no class list")
        try:
            y["vad"] = label_targets([s.discrete if s.discrete in classes else None for s in samples], classes, lexicon)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise FeatureError(f"--vad-targets lexicon: {e}") from e
        mask &= np.isfinite(y["vad"]).all(axis=1)
    elif vad:
        y["vad"] = np.array([[np.nan if v is None else v for v in (s.valence, s.arousal, s.dominance)] for s in samples], dtype=np.float32)
        mask &= np.isfinite(y["vad"]).all(axis=1)
    if not mask.any():
        raise FeatureError(f"no sample has the labels task {task!r} needs")
    return y, mask


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

NORMALIZE = ("none", "global", "speaker")
_EPS = 1e-6


#: Rows per block of :func:`_stats` (bounds its float64 temporaries: 256 x 6 x 1024 x 8 B = 12.6 MB).
STATS_BLOCK_ROWS = 256


def _stats(x: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation over axis 0 of ``x[rows]`` (all rows when ``rows`` is
    ``None``), float32 (x.shape[1:]), accumulated in float64 in two passes (mean, then the sum of
    squared deviations), block by block of :data:`STATS_BLOCK_ROWS` rows: the values of
    ``x.mean(0, dtype=float64)`` and ``x.std(0, dtype=float64)`` to float64 rounding, without
    copying ``x[rows]`` or building float64 temporaries of the whole selection. Standard
    deviations below ``_EPS`` (constant dimensions) become 1. ``rows`` may be indices or a boolean
    mask over axis 0. No rows (a speaker whose clips have no frames, e.g. no detected face): NaN
    statistics, as numpy's mean of nothing, never used to transform (there is nothing to transform)."""
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
    n = len(x) if rows is None else len(rows)
    if n == 0:
        nan = np.full(x.shape[1:], np.nan, dtype=np.float32)
        return nan, nan.copy()

    def blocks():
        for i in range(0, n, STATS_BLOCK_ROWS):
            yield np.asarray(x[i:i + STATS_BLOCK_ROWS] if rows is None else x[rows[i:i + STATS_BLOCK_ROWS]])

    total = np.zeros(x.shape[1:], dtype=np.float64)
    for b in blocks():
        total += b.sum(axis=0, dtype=np.float64)
    mean64 = total / n
    sq = np.zeros_like(total)
    for b in blocks():
        d = b - mean64
        sq += np.einsum("i...,i...->...", d, d)
    std = np.sqrt(sq / n).astype(np.float32)
    std[std < _EPS] = 1.0
    return mean64.astype(np.float32), std


class Normalizer:
    """Per-feature standardisation ``(x - mean) / std``, per encoder, layer and dimension.

    Modes:
        ``none``: identity.
        ``global``: mean/std (L, D) of the fold's training part (train + inner validation rows).
        ``speaker``: mean/std of each speaker's own utterances (unsupervised speaker
            normalisation, standard in speech emotion work: it uses the features of every
            utterance of a speaker, labels never), so a test speaker is normalised by its own
            statistics. Samples without a speaker, and at prediction time speakers the run
            has never seen, fall back to the global training statistics.

    Frame-level inputs (:class:`Frames`) are standardised frame by frame with statistics over
    all frames of the rows concerned (``global``: every training frame; ``speaker``: every frame
    of the speaker), per layer and dimension, so they too are (L, D).

    Constant dimensions get std 1. Statistics are float32; :meth:`to_dict` / :meth:`from_dict`
    serialise them as JSON lists.
    """

    def __init__(self, mode: str = "none") -> None:
        if mode not in NORMALIZE:
            raise ValueError(f"unknown --normalize {mode!r}; use one of {', '.join(NORMALIZE)}")
        self.mode = mode
        self.global_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.speaker: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def fit(self, blocks: dict[str, np.ndarray | Frames], train_idx: np.ndarray,
            speakers: list[str | None] | None = None) -> "Normalizer":
        """Global statistics from rows ``train_idx`` (for :class:`Frames`, from all their frames);
        for ``speaker`` mode, per-speaker statistics from all rows."""
        if self.mode == "none":
            return self

        def stats(x, rows):
            if isinstance(x, Frames):
                sub = x[rows]
                return _stats(sub.data[sub.frame_index()])
            return _stats(x, rows)

        for k, x in blocks.items():
            self.global_[k] = stats(x, train_idx)
        if self.mode == "speaker":
            if speakers is None:
                raise ValueError("--normalize speaker needs speaker ids")
            spk = np.asarray([s if s else "" for s in speakers], dtype=object)
            for s in sorted(set(spk) - {""}):
                rows = np.flatnonzero(spk == s)
                for k, x in blocks.items():
                    self.speaker.setdefault(k, {})[s] = stats(x, rows)
        return self

    def transform(self, blocks: dict[str, np.ndarray | Frames], speakers: list[str | None] | None = None) -> dict[str, np.ndarray | Frames]:
        """Normalised copies of ``blocks`` (encoder → (N, L, D) float32, or compacted :class:`Frames`
        normalised frame by frame).

        Raises:
            FeatureError: an encoder without statistics, or a per-sample (per-frame) shape other than the fitted one.
        """
        if self.mode == "none":
            return {k: (v.compact() if isinstance(v, Frames) else np.asarray(v, dtype=np.float32)) for k, v in blocks.items()}
        out = {}
        for k, x in blocks.items():
            if k not in self.global_:
                raise FeatureError(f"normaliser has no statistics for features {k!r}")
            mean, std = self.global_[k]
            frames = x if isinstance(x, Frames) else None
            if frames is not None:
                frames = frames.compact()
                row = frames.row_of_frame()
                x = frames.data
            if x.shape[1:] != mean.shape:
                raise FeatureError(f"features {k!r}: shape {x.shape[1:]} per {'frame' if frames is not None else 'sample'}, "
                                   f"the run was trained on {mean.shape}")
            y = np.empty(x.shape, dtype=np.float32)
            if self.mode == "speaker" and speakers is not None:
                spk = np.asarray([s if s else "" for s in speakers], dtype=object)
                if frames is not None:
                    spk = spk[row]
                known = self.speaker.get(k, {})
                done = np.zeros(len(x), dtype=bool)
                for s in set(spk):
                    if s in known:
                        rows = spk == s
                        m, sd = known[s]
                        y[rows] = (x[rows] - m) / sd
                        done |= rows
                y[~done] = (x[~done] - mean) / std
            else:
                y[:] = (x - mean) / std
            out[k] = Frames(y, frames.starts, frames.lengths) if frames is not None else y
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{mode, global: {enc: {mean, std}}, speaker: {enc: {spk: {mean, std}}}}`` (lists of (L, D))."""
        d: dict[str, Any] = {"mode": self.mode}
        if self.global_:
            d["global"] = {k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in self.global_.items()}
        if self.speaker:
            d["speaker"] = {k: {spk: {"mean": m.tolist(), "std": s.tolist()} for spk, (m, s) in v.items()} for k, v in self.speaker.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        """Inverse of :meth:`to_dict` (statistics back to float32 arrays)."""
        n = cls(d["mode"])
        f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
        n.global_ = {k: (f32(v["mean"]), f32(v["std"])) for k, v in d.get("global", {}).items()}
        n.speaker = {k: {s: (f32(x["mean"]), f32(x["std"])) for s, x in v.items()} for k, v in d.get("speaker", {}).items()}
        return n
