"""``emo fuse search``: nested search over stores, layer windows, heads and hyper-parameters.

Why nested. Choosing the stores, layers, head and regularisation while looking at the evaluation
folds makes the reported number a maximum over many noisy estimates (selection inflation). Here
every choice is made *inside* each outer fold from that fold's training rows only:

1. The **outer folds** are the dataset's protocol (``speaker``: leave-one-speaker-out; ``K``:
   stratified k-fold; ``split``: train / test with the dev partition for selection).
2. Inside outer fold ``o``, the **inner folds** split the outer training rows (by speaker when
   speakers are known: leave-one-speaker-out over the training speakers, or ``inner_folds``
   speaker groups; ``split``: train -> dev). Every candidate is trained on each inner training part
   and predicts its inner evaluation part; the pooled inner predictions rank the candidates.
3. **Successive halving** (Jamieson & Talwalkar, AISTATS 2016; Li et al., *Hyperband*, JMLR 2018),
   per outer fold: rung 0 scores every candidate on the first ``ceil(I / eta)`` inner folds; only the
   best ``1 / eta`` (at least ``ensemble`` + 1) are trained on the remaining inner folds (rung 1) and
   ranked on all of them. Cuts use only outer-training rows, so they are nested too.
4. The best ``ensemble`` candidates of the last rung are fused at the posterior level with simplex
   weights tuned on their pooled inner predictions (:func:`emo.fuse.eval.ensemble.search_weights`,
   the decision ensemble of ``emo fuse ensemble``); with ``ensemble = 1`` the best candidate alone.
5. The outer fold only **scores**: each candidate's model trained on the whole outer training part
   predicts the outer evaluation rows, and the chosen configuration's fused prediction is the
   nested prediction of those rows. The pooled nested predictions give the **nested estimate**,
   with a speaker (group) bootstrap interval (:func:`emo.fuse.eval.stats.bootstrap_ci`).

Beside it, on the same candidates and the same outer predictions, two selection-inflated numbers
are reported, labelled as such: the **optimistic same-data estimate** (the candidate with the best
pooled outer score, i.e. chosen on the evaluation folds) and the **top-10-of-50 protocol** of
MERTools (``MER2026_Track1/statistics.py``: draw 50 random configurations, report the mean outer
score of the best 10). The gap optimistic - nested is the inflation a peer's protocol would add.

The final configuration (what ``OUT/run`` holds) is chosen by the same procedure on all data (its
inner folds are the outer folds: the candidates' outer predictions are its inner predictions) and
refitted on all labelled rows (``split``: on the train partition; dev selects).

Resumable: every work unit (candidate x outer fold x inner folds, or candidate x outer folds) is
written to ``OUT/cache/<hash>.npz`` (:func:`emo.fsio.atomic_path`) when it finishes; the hash covers
the candidate, the data (store provenance, sample names, labels, speakers) and the fold rows, so a
rerun after a kill trains only what is missing and a change of data or folds never reuses a stale
unit. Units run in local processes (one torch thread each) or on a dask cluster (``scheduler``);
both run the same function on the same inputs and give the same numbers (tested).

The candidate trainer is one function, :func:`fit_predict` (``emo.fuse.training.batched.train_cv_batched``:
``linear`` = full-batch L-BFGS probe, other heads the batched AdamW recipe; candidates whose stores
are searched as frame sequences, ``frames: true`` in the space, the sequential minibatch loop of
``emo fuse train --frames``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from emo.fuse.training.threads import pin_process, pinned_threads

#: Bumped when the trainer or the unit layout changes (old cache entries are then never reused).
#: Unit hashes also cover :func:`emo.fuse.training.resume.trainer_code` (the ``emo.fuse`` sources
#: and the torch/numpy/scipy versions), so a cache written by another emo or torch is not reused
#: even where this constant was not bumped.
#: search-v2 (2026-12-07): the linear probe's solver changed (``_LinearProblem``, L-BFGS-B for
#: small problems), so its predictions differ from search-v1's within the solver tolerance.
TRAINER_VERSION = "search-v2"
#: Default weight-decay grid of the default space: decades from 1e-3 to 100 (the L2 coefficient of the
#: linear probe's mean loss, as the lbfgs recipe's path; at EmoDB's 480 training rows scikit-learn's
#: C from 2 down to 2e-5). Until 2026-12-08 it was (1e-2, 1e-1, 1): the inner folds chose its
#: strongest point (1) in most EmoDB outer folds and its weakest (0.01) for MELD text. With 1e-3..10
#: the ensemble chosen in 9 of 10 EmoDB outer folds still held a member at 10 (ComParE, 6,373-d),
#: hence 100. The search reports such choices (``grid_edges``).
DEFAULT_WEIGHT_DECAY = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: The default grid of the heads trained by AdamW (``mlp``, ``afg``, ...), where ``weight_decay`` is
#: the decoupled decay (``lr * weight_decay`` of the weights per step): 10 or 100 would erase them.
DEFAULT_WEIGHT_DECAY_ADAMW = (1e-2, 1e-1, 1.0)
#: Metrics the search can rank by (higher is better).
SEARCH_METRICS = ("uar", "waf", "accuracy")


class SearchError(ValueError):
    """A search that cannot run (bad space file, no stores, unknown metric); the message says which."""


# ---------------------------------------------------------------------------
# Candidates and the space
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One configuration: feature specs (``store`` or ``store:LAYERS``), head and hyper-parameters.

    Attributes:
        features: emo feature specs, e.g. ``("compare",)`` or ``("minilm:2-4", "egemaps")`` (the
            layers of one spec are concatenated by the linear probe, tokens for the other heads).
        head: ``linear`` (L-BFGS logistic probe), ``mlp``, ``afg``, ``attention``, ``transformer``.
        weight_decay: L2 coefficient (linear: ``weight_decay / 2 * ||W||^2``; others: AdamW decay).
        hidden: hidden size (heads other than ``linear``). dropout: dropout (same).
        class_weights: balanced class weights in the cross-entropy.
        frames: the stores among ``features`` read as frame sequences (:class:`emo.fuse.training.data.Frames`,
            ``emo extract --frames``): each feeds a ``frame_encoder`` (``lstm`` or ``textcnn``,
            :mod:`emo.fuse.model.frames`) whose output is its token; empty: utterance vectors only.
    """

    features: tuple[str, ...]
    head: str = "linear"
    weight_decay: float = 1e-2
    hidden: int = 256
    dropout: float = 0.5
    class_weights: bool = False
    frames: tuple[str, ...] = ()
    frame_encoder: str = "lstm"

    def key(self) -> dict[str, Any]:
        """JSON-able identity (what the cache hash and the leaderboard use). Utterance-level candidates
        have the keys (and so the ids and cache units) they had before frame-level candidates existed."""
        d = asdict(self)
        d["features"] = list(self.features)
        if self.head == "linear":  # no hidden layer: these do not change the model
            d.pop("hidden")
            d.pop("dropout")
        if self.frames:
            d["frames"] = list(self.frames)
        else:
            d.pop("frames")
            d.pop("frame_encoder")
        return d

    @property
    def id(self) -> str:
        """12 hex digits of SHA-256 of :meth:`key`."""
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        """Short readable name, e.g. ``compare linear wd=0.01 cw``."""
        s = f"{'+'.join(self.features)} {self.head} wd={self.weight_decay:g}"
        if self.head != "linear":
            s += f" h={self.hidden} do={self.dropout:g}"
        if self.frames:
            s += f" frames({','.join(self.frames)}: {self.frame_encoder})"
        return s + (" cw" if self.class_weights else "")

    @classmethod
    def from_key(cls, d: dict[str, Any]) -> "Candidate":
        return cls(**{**d, "features": tuple(d["features"]), "frames": tuple(d.get("frames", ()))})


def layer_choices(layers: list[str], windows: Iterable[int] = (1, 3), whole: bool = True) -> list[str]:
    """Layer specs of a layer-wise store: every single layer and every contiguous window of each
    size in ``windows`` (stride 1), plus all layers (``whole``). ``layers`` in store order.

    Returns:
        Layer specs (``"3"``, ``"2-4"``, ``"0-6"``); a store with one layer gives ``[that layer]``.
    """
    if len(layers) == 1:
        return [layers[0]]
    out: list[str] = []
    for w in sorted(set(int(w) for w in windows)):
        if w < 1 or w > len(layers):
            continue
        for i in range(len(layers) - w + 1):
            s = layers[i] if w == 1 else f"{layers[i]}-{layers[i + w - 1]}"
            if s not in out:
                out.append(s)
    full = f"{layers[0]}-{layers[-1]}"
    if whole and full not in out:
        out.append(full)
    return out


@dataclass
class Space:
    """A declared search space (``--config space.yaml``; keys as the attributes).

    Attributes:
        stores: per store ``{"name": str, "layers": "all" | spec | [specs], "windows": [int],
            "frames": bool}``; ``layers`` omitted or ``all``: :func:`layer_choices` of the store's
            layers. ``frames: true``: the store is searched as frame sequences (it must hold them:
            ``emo extract --frames``), never as utterance vectors in the same search (one name, one
            kind of input, so a chosen ensemble reads each store one way); only heads other than
            ``linear`` take frames (the linear probe is skipped for those feature sets).
        combine: sizes of store combinations (1: each store alone; 2: also every pair, feature-level).
        heads, weight_decay, hidden, dropout, class_weights: grids (the cross product is taken;
            ``hidden`` and ``dropout`` only for heads other than ``linear``). ``weight_decay`` not
            given (None): :data:`DEFAULT_WEIGHT_DECAY` for the linear probe (its L2) and
            :data:`DEFAULT_WEIGHT_DECAY_ADAMW` for the other heads (AdamW's decay); see :meth:`weight_decays`.
        frame_encoder: grid of frame encoders (``lstm``, ``textcnn``) for feature sets with frames.
    """

    stores: list[dict[str, Any]]
    combine: list[int] = field(default_factory=lambda: [1])
    heads: list[str] = field(default_factory=lambda: ["linear"])
    weight_decay: list[float] | None = None
    hidden: list[int] = field(default_factory=lambda: [256])
    dropout: list[float] = field(default_factory=lambda: [0.5])
    class_weights: list[bool] = field(default_factory=lambda: [False, True])
    frame_encoder: list[str] = field(default_factory=lambda: ["lstm"])

    def weight_decays(self, head: str) -> list[float]:
        """The weight-decay grid of ``head``: the declared one, else the head's default."""
        if self.weight_decay is not None:
            return list(self.weight_decay)
        return list(DEFAULT_WEIGHT_DECAY if head == "linear" else DEFAULT_WEIGHT_DECAY_ADAMW)

    @property
    def frame_stores(self) -> list[str]:
        """Names of the stores searched as frame sequences (``frames: true``)."""
        return [s["name"] for s in self.stores if s.get("frames")]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "space") -> "Space":
        """Parse a space mapping. Raises SearchError naming ``source`` on unknown keys or bad values."""
        if not isinstance(d, dict):
            raise SearchError(f"{source}: a search space must be a mapping, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad:
            raise SearchError(f"{source}: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        if "stores" not in d or not d["stores"]:
            raise SearchError(f"{source}: 'stores' is required (a list of store names or {{name, layers, windows}})")
        stores = []
        for s in d["stores"]:
            s = {"name": s} if isinstance(s, str) else dict(s)
            if "name" not in s:
                raise SearchError(f"{source}: store entry {s} has no name")
            stores.append(s)
        kw = {k: (v if isinstance(v, list) else [v]) for k, v in d.items() if k != "stores"}
        sp = cls(stores=stores, **kw)
        for h in sp.heads:
            if h not in ("linear", "mlp", "afg", "attention", "transformer"):
                raise SearchError(f"{source}: head {h!r} is not searchable (linear, mlp, afg, attention, transformer)")
        if any(not (isinstance(w, (int, float)) and w >= 0 and math.isfinite(w)) for w in (sp.weight_decay or [])):
            raise SearchError(f"{source}: weight_decay values must be finite and >= 0, got {sp.weight_decay}")
        for s in stores:
            bad = sorted(set(s) - {"name", "layers", "windows", "frames"})
            if bad:
                raise SearchError(f"{source}: store {s['name']!r}: unknown key(s) {', '.join(bad)} (known: frames, layers, name, windows)")
            if not isinstance(s.get("frames", False), bool):
                raise SearchError(f"{source}: store {s['name']!r}: frames must be true or false, got {s['frames']!r}")
        kinds: dict[str, set[bool]] = {}
        for s in stores:
            kinds.setdefault(s["name"], set()).add(bool(s.get("frames", False)))
        both = sorted(n for n, k in kinds.items() if len(k) > 1)
        if both:
            raise SearchError(f"{source}: store(s) {', '.join(both)} listed both with and without frames: a search reads "
                              "each store one way (frame sequences or utterance vectors)")
        from emo.fuse.model.sequence import FRAME_ENCODERS

        for e in sp.frame_encoder:
            if e not in FRAME_ENCODERS:
                raise SearchError(f"{source}: frame_encoder {e!r} is not one of {', '.join(FRAME_ENCODERS)}")
        if sp.frame_stores and not [h for h in sp.heads if h != "linear"]:
            raise SearchError(f"{source}: store(s) {', '.join(sp.frame_stores)} are searched as frames, which only heads "
                              "other than linear take (add mlp, afg, attention or transformer to heads)")
        return sp

    @classmethod
    def read(cls, path: str | Path) -> "Space":
        """Read a YAML or JSON space file. Raises SearchError naming the file."""
        import yaml

        p = Path(path)
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise SearchError(f"{p}: cannot read the search space ({e})") from None
        return cls.from_dict(d, str(p))

    def candidates(self, store_layers: dict[str, list[str]]) -> list[Candidate]:
        """Expand to candidates, in a fixed order. ``store_layers``: store -> its layers (store order).

        Raises:
            SearchError: a store of the space that is not in ``store_layers``.
        """
        specs_per_store = []
        for s in self.stores:
            name = s["name"]
            if name not in store_layers:
                raise SearchError(f"store {name!r} of the search space was not found (found: {', '.join(sorted(store_layers))})")
            lay = s.get("layers", "all")
            if lay in (None, "all"):
                choices = layer_choices(store_layers[name], s.get("windows", (1, 3)))
            else:
                choices = [str(x) for x in (lay if isinstance(lay, list) else [lay])]
            one = len(store_layers[name]) == 1
            specs_per_store.append([name if one else f"{name}:{c}" for c in choices])
        feature_sets: list[tuple[str, ...]] = []
        for k in sorted(set(int(c) for c in self.combine)):
            for combo in itertools.combinations(range(len(specs_per_store)), k):
                feature_sets.extend(itertools.product(*(specs_per_store[i] for i in combo)))
        frame_stores = set(self.frame_stores)
        out = []
        for fs in feature_sets:
            fr = tuple(sorted({spec.split(":")[0] for spec in fs} & frame_stores))
            for head in self.heads:
                if fr and head == "linear":
                    continue  # the linear probe takes utterance vectors only
                hd = [(h, d) for h in self.hidden for d in self.dropout] if head != "linear" else [(256, 0.5)]
                for wd in self.weight_decays(head):
                    for h, d in hd:
                        for cw in self.class_weights:
                            for enc in (self.frame_encoder if fr else ["lstm"]):
                                out.append(Candidate(tuple(fs), head, float(wd), int(h), float(d), bool(cw), fr, enc))
        seen, uniq = set(), []
        for c in out:
            if c.id not in seen:
                seen.add(c.id)
                uniq.append(c)
        return uniq


def default_space(store_layers: dict[str, list[str]]) -> Space:
    """Sensible defaults for the stores present: every utterance-level store alone, its single layers
    and 3-layer windows and all layers when layer-wise; the L-BFGS linear probe with
    :data:`DEFAULT_WEIGHT_DECAY` with and without balanced class weights."""
    return Space(stores=[{"name": n} for n in sorted(store_layers)])


# ---------------------------------------------------------------------------
# Data and folds
# ---------------------------------------------------------------------------

@dataclass
class SearchData:
    """Everything a work unit needs (pickled once per worker).

    Attributes:
        blocks: store -> float32 (N, L, D), all of the store's layers, or for a store searched as
            frames its :class:`emo.fuse.training.data.Frames` (T_i, L, D). inputs: store -> its
            :class:`emo.fuse.training.inputs.FeatureInput` (all layers). y: ``{"discrete": int (N,)}``
            (-1 unlabelled). speakers: (N,) or None. classes: class names. normalize: the
            normalisation of every candidate (``speaker`` when speakers are known, else ``global``).
    """

    blocks: dict[str, np.ndarray]
    inputs: dict[str, Any]
    y: dict[str, np.ndarray]
    speakers: list[str] | None
    classes: list[str]
    normalize: str
    names: list[str] = field(default_factory=list)

    def candidate_inputs(self, cand: Candidate) -> tuple[dict[str, np.ndarray], list]:
        """The candidate's blocks (selected layers) and FeatureInputs."""
        from emo.extract.layers import parse_layers
        from emo.fuse.training.data import parse_feature_spec

        blocks, inputs = {}, []
        for spec in cand.features:
            fsp = parse_feature_spec(spec)
            inp = self.inputs[fsp.name]
            if fsp.layers is None:
                sel = list(inp.layers)
            else:
                sel = [str(x) for x in (parse_layers(fsp.layers) if isinstance(fsp.layers, str) else fsp.layers)]
            missing = [x for x in sel if x not in inp.layers]
            if missing:
                raise SearchError(f"{spec}: layers {missing} not in store {fsp.name} (has {inp.layers})")
            idx = [inp.layers.index(x) for x in sel]
            b = self.blocks[fsp.name]
            if inp.frames:
                from emo.fuse.training.data import Frames

                blocks[fsp.name] = b if idx == list(range(len(inp.layers))) else Frames(np.ascontiguousarray(b.data[:, idx]), b.starts, b.lengths)
            else:
                blocks[fsp.name] = np.ascontiguousarray(b[:, idx])
            inputs.append(replace(inp, layers=sel, spec=f"{inp.spec.split(':')[0]}:{','.join(sel)}" if inp.spec else spec))
        return blocks, inputs

    def speaker_normalized(self, store: str) -> np.ndarray:
        """``blocks[store]`` standardised per speaker (:class:`emo.fuse.training.data.Normalizer` ``speaker``:
        each speaker's own mean/std, labels unused), all layers; computed once and kept."""
        cache = self.__dict__.setdefault("_speaker_cache", {})
        if store not in cache:
            from emo.fuse.training.data import Normalizer

            b = {store: self.blocks[store]}
            cache[store] = Normalizer("speaker").fit(b, np.arange(len(self.speakers)), self.speakers).transform(b, self.speakers)[store]
        return cache[store]

    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of store provenance, sample names, labels, speakers and normalisation."""
        h = hashlib.sha256()
        # a frame-level input adds its flag (utterance-only data keep the fingerprint they had)
        h.update(json.dumps({k: [v.layers, v.dim, v.provenance] + (["frames"] if v.frames else []) for k, v in sorted(self.inputs.items())},
                            sort_keys=True, default=str).encode())
        h.update(json.dumps([self.names, self.speakers, self.classes, self.normalize]).encode())
        h.update(np.ascontiguousarray(self.y["discrete"]).tobytes())
        return h.hexdigest()[:16]


@dataclass
class OuterFold:
    """One outer fold: ``train`` (rows its scoring models train on), ``test`` (scored rows),
    ``inner``: list of (train, eval) row arrays inside ``train`` (``split``: train -> dev, so
    ``inner`` rows are outside ``train``: the dev partition)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    inner: list[tuple[np.ndarray, np.ndarray]]


def speaker_groups(speakers: np.ndarray, rows: np.ndarray, k: int) -> list[np.ndarray]:
    """Split ``rows`` into evaluation groups by speaker: one per speaker (``k <= 0`` or ``k`` >= the
    number of speakers) or ``k`` groups of whole speakers (sorted speakers dealt round-robin)."""
    spk = sorted(set(speakers[rows].tolist()))
    if k <= 0 or k >= len(spk):
        parts = [[s] for s in spk]
    else:
        parts = [spk[i::k] for i in range(k)]
    return [np.sort(rows[np.isin(speakers[rows], p)]) for p in parts]


def make_outer_folds(protocol: str, fs, y: np.ndarray, rows: np.ndarray, inner_folds: int, seed: int) -> list[OuterFold]:
    """Outer folds with their inner folds (see module docstring).

    Args:
        protocol: ``speaker``, ``K`` (an integer: stratified k-fold, inner = stratified k-fold too)
            or ``split`` (train/dev/test partitions).
        fs: the :class:`emo.fuse.training.data.FeatureSet`. y: int (N,) labels. rows: labelled rows.
        inner_folds: inner speaker groups (0: one per speaker) or inner k for k-fold.

    Raises:
        ProtocolError: as :mod:`emo.fuse.eval.protocols` (too few speakers, missing partitions).
    """
    from emo.fuse.eval.protocols import ProtocolError, stratified_kfold

    if protocol == "speaker":
        sp = np.asarray([s or "" for s in fs.speakers], dtype=object)
        if np.any(sp[rows] == ""):
            raise ProtocolError("--folds speaker needs a speaker for every labelled sample")
        groups = speaker_groups(sp, rows, 0)
        if len(groups) < 3:
            raise ProtocolError(f"nested leave-one-speaker-out needs at least 3 speakers, found {len(groups)}")
        out = []
        for te in groups:
            tr = np.setdiff1d(rows, te)
            inner = [(np.setdiff1d(tr, ev), ev) for ev in speaker_groups(sp, tr, inner_folds)]
            out.append(OuterFold(f"speaker={sp[te[0]]}", tr, te, inner))
        return out
    if protocol == "split":
        parts = np.asarray([s or "" for s in fs.splits], dtype=object)
        tr = rows[parts[rows] == "train"]
        dev = rows[np.isin(parts[rows], ("dev", "val", "valid"))]
        te = rows[parts[rows] == "test"]
        if not len(tr) or not len(dev) or not len(te):
            raise ProtocolError(f"--folds split needs train, dev and test partitions; found {sorted(set(parts) - {''})}")
        return [OuterFold("split", tr, te, [(tr, dev)])]
    try:
        k = int(protocol)
    except ValueError:
        raise ProtocolError(f"--folds must be speaker, split or an integer K, not {protocol!r}") from None
    out = []
    for f in stratified_kfold(y[rows], k, seed):
        tr, te = np.sort(rows[np.concatenate([f.train, f.val])]), np.sort(rows[f.test])
        kin = inner_folds if inner_folds > 1 else k - 1
        inner = []
        for g in stratified_kfold(y[tr], kin, seed + 1):
            inner.append((np.sort(tr[np.concatenate([g.train, g.val])]), np.sort(tr[g.test])))
        out.append(OuterFold(f.name, tr, te, inner))
    return out


# ---------------------------------------------------------------------------
# The candidate trainer (one function) and work units
# ---------------------------------------------------------------------------

def train_config(cand: Candidate, data: SearchData, threads: int = 1):
    """The :class:`emo.fuse.config.TrainConfig` of a candidate (``linear``: L-BFGS, one model)."""
    from emo.fuse.config import TrainConfig

    lin = cand.head == "linear"
    fr = bool(cand.frames)
    # frame-level candidates train one model per fold (seeds=1; emo fuse train's auto would be 5 below
    # 2,000 rows): a frame encoder costs 10-100x an utterance head, and the search multiplies it by
    # every inner fold. Our choice; the papers do not search frame encoders.
    return TrainConfig(head=cand.head, task="discrete", hidden=cand.hidden, dropout=cand.dropout,
                       weight_decay=cand.weight_decay, class_weights=cand.class_weights, normalize=data.normalize,
                       optimizer="lbfgs" if lin else "adamw", seeds=1 if (lin or fr) else 0, threads=threads, device="cpu",
                       frames=fr, frame_encoder=cand.frame_encoder if fr else "lstm")


def _job_folds(jobs: list[tuple[np.ndarray, np.ndarray]], data: SearchData, lbfgs: bool, seed: int) -> list:
    """emo Folds for the jobs. L-BFGS fits its training rows to the optimum (no early stopping): the
    validation rows are only scored, so they are the training rows themselves. AdamW heads stop
    early on one training speaker (speakers known) or a stratified 10% of the training rows."""
    from emo.fuse.eval.protocols import Fold, inner_validation

    folds = []
    for k, (tr, ev) in enumerate(jobs):
        tr = np.sort(np.asarray(tr, dtype=np.int64))
        if lbfgs:
            folds.append(Fold(f"job{k}", tr, tr, np.sort(ev)))
            continue
        if data.speakers is not None:
            sp = np.asarray(data.speakers, dtype=object)
            uniq = sorted(set(sp[tr].tolist()))
            if len(uniq) >= 2:
                v = uniq[np.random.default_rng(seed + k).integers(len(uniq))]
                folds.append(Fold(f"job{k}", tr[sp[tr] != v], tr[sp[tr] == v], np.sort(ev)))
                continue
        a, b = inner_validation(tr, data.y["discrete"], seed + k)
        folds.append(Fold(f"job{k}", a, b, np.sort(ev)))
    return folds


def fit_predict(cand: Candidate, data: SearchData, jobs: list[tuple[np.ndarray, np.ndarray]],
                threads: int = 1, seed: int = 0, return_result: bool = False):
    """Train ``cand`` on each job's training rows and predict its evaluation rows.

    The single entry point of the search's trainer: :func:`emo.fuse.training.batched.train_cv_batched` with
    the candidate's :func:`train_config` (all jobs of a call in one batched fit); for candidates with
    frame-level inputs it runs :func:`emo.fuse.eval.cv.train_cv` instead (its own fallback: the
    sequential minibatch loop of ``emo fuse train --frames``, one job after another).

    Args:
        jobs: list of (train rows, evaluation rows), int arrays into the data's rows.
        threads: torch threads (1 in workers: candidates run in parallel instead).

    Returns:
        Per job, float32 (n_eval, C) class posteriors in the job's (sorted) evaluation-row order;
        with ``return_result`` also the :class:`emo.fuse.eval.cv.CVResult` and folds.

    Raises:
        FloatingPointError: non-finite predictions (a diverged fit).
    """
    if cand.head == "linear" and not return_result:
        return _fit_predict_lbfgs(cand, data, jobs, threads)
    from emo.fuse.training.batched import train_cv_batched

    cfg = train_config(cand, data, threads)
    blocks, inputs = data.candidate_inputs(cand)
    folds = _job_folds(jobs, data, cand.head == "linear", seed)
    # frame-level candidates: train_cv_batched itself falls back to the sequential loop (batched_unsupported)
    res = train_cv_batched(blocks, inputs, data.y, folds, cfg, len(data.classes), data.speakers, None, None, None,
                           optimizer=cfg.optimizer)
    out = []
    for k, f in enumerate(folds):
        sel = res.oof["fold"] == k
        idx = res.oof["index"][sel]
        order = np.argsort(idx)
        if not np.array_equal(idx[order], f.test):
            raise RuntimeError(f"{cand.label()}: predictions of job {k} do not cover its evaluation rows")
        p = np.asarray(res.oof["probs"][sel][order], dtype=np.float32)
        if not np.all(np.isfinite(p)):
            raise FloatingPointError(f"{cand.label()}: non-finite predictions (diverged fit)")
        out.append(p)
    return (out, res, folds) if return_result else out


def _row_space(xs: list, inputs: list, rows: np.ndarray) -> tuple[list, list]:
    """Exact dimension reduction for the L2-penalised linear probe when the features outnumber the rows.

    With an unpenalised bias and the penalty ``||W||^2``, the optimum ``W`` of every job lies in the
    span of its training rows (the representer theorem; Schoelkopf, Herbrich & Smola, COLT 2001),
    hence in the span of ``rows`` (the union of the jobs' training rows). With ``Q`` (F, r) an
    orthonormal basis of that span (SVD), ``x W = (x Q)(Q^T W)`` for every row ``x`` and
    ``||Q^T W|| = ||W||``: fitting on ``x Q`` (r <= |rows| columns) reaches the same logits for
    training and evaluation rows alike. Used only without per-job standardisation (which would
    change the span per job); ComParE on EmoDB: 6,373 -> <= 535 columns.

    Returns:
        (xs, inputs): unchanged when F <= len(rows), else one input ``rowspace`` of shape (N, 1, r).
    """
    import torch

    from emo.fuse.training.inputs import FeatureInput

    n = int(xs[0].shape[0])
    x = torch.cat([t.reshape(n, -1) for t in xs], 1)
    if x.shape[1] <= len(rows):
        return xs, inputs
    # Q = X_u^T U S^-1 from the eigendecomposition of the Gram matrix X_u X_u^T = U S^2 U^T
    # (|rows| x |rows|, cheaper than an SVD of X_u when F >> |rows|); z = X Q = (X X_u^T) U S^-1
    g = (x @ x[torch.as_tensor(rows)].T).double()  # (N, |rows|)
    ev, u = torch.linalg.eigh(g[torch.as_tensor(rows)])
    keep = ev > ev.max() * 1e-10
    z = (g @ (u[:, keep] / ev[keep].sqrt())).float()
    inp = FeatureInput("rowspace", inputs[0].modality, ["0"], int(z.shape[1]))
    return [z.reshape(n, 1, -1).contiguous()], [inp]


def _fit_predict_lbfgs(cand: Candidate, data: SearchData, jobs: list[tuple[np.ndarray, np.ndarray]], threads: int) -> list[np.ndarray]:
    """The linear probe's fast path: the same model and objective as ``train_cv_batched(optimizer="lbfgs")``
    (:func:`emo.fuse.training.batched.fit_linear_lbfgs`, the same normalisation), without its per-fold metric
    tables. Tested equal to the general path."""
    import torch

    from emo.fuse.training.batched import Job, fit_linear_lbfgs, job_inputs
    from emo.fuse.training.data import Normalizer
    from emo.fuse.training.fit import class_weight_balanced, predict_model

    cfg = train_config(cand, data, threads)
    blocks, inputs = data.candidate_inputs(cand)
    C = len(data.classes)
    with pinned_threads(threads):
        if cfg.normalize == "speaker":  # per-speaker statistics are fold independent: computed once per store
            shared = {inp.name: data.speaker_normalized(inp.name)[:, [data.inputs[inp.name].layers.index(x) for x in inp.layers]]
                      for inp in inputs}
        else:
            shared = blocks
        xs = [torch.as_tensor(np.ascontiguousarray(shared[inp.name], dtype=np.float32)) for inp in inputs]
        if cfg.normalize != "global":  # no per-job standardisation: project onto the training rows' span
            xs, inputs = _row_space(xs, inputs, np.unique(np.concatenate([np.asarray(tr) for tr, _ in jobs])))
        js = []
        for tr, ev in jobs:
            tr = np.sort(np.asarray(tr, dtype=np.int64))
            jn = None
            if cfg.normalize == "global":
                g = Normalizer("global").fit(blocks, tr).global_
                jn = [g[inp.name] for inp in inputs]
            cw = class_weight_balanced(data.y["discrete"][tr], C) if cfg.class_weights else None
            js.append(Job(tr, tr, cfg.seed, None, jn, cw))
        fit = fit_linear_lbfgs(xs, {"discrete": data.y["discrete"]}, js, cfg, cfg.model_args(inputs, C))
        out = []
        for job, m, (_, ev) in zip(js, fit.models, jobs):
            p = np.asarray(predict_model(m, job_inputs(xs, job, np.sort(np.asarray(ev, dtype=np.int64))))["probs"], dtype=np.float32)
            if not np.all(np.isfinite(p)):
                raise FloatingPointError(f"{cand.label()}: non-finite predictions (diverged fit)")
            out.append(p)
        return out


@dataclass(frozen=True, eq=False)
class Unit:
    """One piece of work: candidate ``cand`` on ``jobs`` (label ``tag``: ``outer`` or ``o<k>r<rung>``)."""

    cand: Candidate
    tag: str
    jobs: tuple

    @property
    def ident(self) -> tuple[str, str]:
        """(candidate id, tag): the key of :func:`execute`'s result."""
        return (self.cand.id, self.tag)

    def hash(self, data_fp: str) -> str:
        h = hashlib.sha256()
        from emo.fuse.training.resume import trainer_code

        h.update(json.dumps({"cand": self.cand.key(), "data": data_fp, "trainer": TRAINER_VERSION, "code": trainer_code()},
                            sort_keys=True).encode())
        for tr, ev in self.jobs:
            h.update(np.asarray(tr, dtype=np.int64).tobytes())
            h.update(b"|")
            h.update(np.asarray(ev, dtype=np.int64).tobytes())
            h.update(b"#")
        return h.hexdigest()[:24]


_WORKER_DATA: SearchData | None = None


def _init_worker(data: SearchData) -> None:
    global _WORKER_DATA
    pin_process(1)  # torch and numpy's / scipy's BLAS pools: workers run beside each other
    _WORKER_DATA = data


def run_unit(unit: Unit, data: SearchData | None = None) -> tuple[list[np.ndarray], float]:
    """Execute a unit (in a worker process, a dask worker or in-process) with one thread for torch and
    the BLAS pools (:func:`emo.fuse.training.threads.pinned_threads`). Returns (probs per job, seconds)."""
    d = data if data is not None else _WORKER_DATA
    if d is None:
        raise RuntimeError("run_unit: no data (worker not initialised)")
    t0 = time.perf_counter()
    with pinned_threads(1):  # free where the worker's initializer pinned it already
        probs = fit_predict(unit.cand, d, [(np.asarray(a), np.asarray(b)) for a, b in unit.jobs], threads=1)
    return probs, time.perf_counter() - t0


class UnitCache:
    """Finished units under ``OUT/cache/<hash>.npz`` (written atomically through :mod:`emo.fsio`)."""

    def __init__(self, root: Path, data_fp: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fp = data_fp

    def path(self, unit: Unit) -> Path:
        return self.root / f"{unit.hash(self.fp)}.npz"

    def get(self, unit: Unit) -> tuple[list[np.ndarray], float] | None:
        p = self.path(unit)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                probs = [z[f"p{k}"] for k in range(int(z["n"]))]
                secs = float(z["seconds"])
        except (OSError, ValueError, KeyError):
            return None  # unreadable (should not happen: writes are atomic); recomputed
        if len(probs) != len(unit.jobs) or any(len(p) != len(ev) for p, (_, ev) in zip(probs, unit.jobs)):
            return None
        return probs, secs

    def put(self, unit: Unit, probs: list[np.ndarray], seconds: float) -> None:
        from emo import fsio

        with fsio.atomic_path(self.path(unit), suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, n=np.int64(len(probs)), seconds=np.float64(seconds), **{f"p{k}": p for k, p in enumerate(probs)})


def execute(units: list[Unit], data: SearchData, cache: UnitCache, workers: int = 1, scheduler: Any = None,
            deadline: float | None = None, progress: Callable[[str], None] | None = None) -> dict[tuple[str, str], tuple[list[np.ndarray], float]]:
    """Run the units not in the cache, in parallel, caching each as it finishes.

    Args:
        workers: local processes (1: in this process). scheduler: a dask ``Client``, or the address
            of a dask scheduler (``tcp://host:8786``); then dask runs the units.
        deadline: ``time.monotonic()`` after which no new unit is started (running ones finish);
            units not started are absent from the result.

    Returns:
        :attr:`Unit.ident` -> (probs per job, seconds); the same values whichever executor ran them.
    """
    out: dict[tuple[str, str], tuple[list[np.ndarray], float]] = {}
    todo = []
    for u in units:
        c = cache.get(u)
        if c is not None:
            out[u.ident] = c
        else:
            todo.append(u)
    if not todo:
        return out

    def done(u, r):
        cache.put(u, r[0], r[1])
        out[u.ident] = r
        if progress:
            progress(f"{u.cand.label()} [{u.tag}] {r[1]:.1f}s")

    def expired():
        return deadline is not None and time.monotonic() > deadline

    if scheduler is not None:
        from dask.distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            # hash=False: a fresh key per call. With the default content hash, the next halving round
            # scattered the same key while the previous round's release was still in flight, and the
            # scheduler dropped the data under the new round's units ("lost dependencies").
            dref = client.scatter(data, broadcast=True, hash=False)
            pending = {}
            it = iter(todo)
            nslots = max(1, sum(client.nthreads().values()))
            for u in itertools.islice(it, nslots):
                pending[client.submit(run_unit, u, dref, pure=False)] = u
            ac = as_completed(list(pending))
            for fut in ac:
                u = pending.pop(fut)
                done(u, fut.result())
                if not expired():
                    nxt = next(it, None)
                    if nxt is not None:
                        f2 = client.submit(run_unit, nxt, dref, pure=False)
                        pending[f2] = nxt
                        ac.add(f2)
        finally:
            if not isinstance(scheduler, Client):
                client.close()
        return out
    if workers <= 1:
        for u in todo:
            if expired():
                break
            done(u, run_unit(u, data))  # pinned to one thread inside, restored after
        return out
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                initargs=(data,)) as ex:
        it = iter(todo)
        pending = {ex.submit(run_unit, u): u for u in itertools.islice(it, 2 * workers)}
        while pending:
            fin, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in fin:
                u = pending.pop(fut)
                done(u, fut.result())
                if not expired():
                    nxt = next(it, None)
                    if nxt is not None:
                        pending[ex.submit(run_unit, nxt)] = nxt
    return out


# ---------------------------------------------------------------------------
# Scores and selection
# ---------------------------------------------------------------------------

def score(y: np.ndarray, probs: np.ndarray, metric: str, n_classes: int) -> float:
    """``metric`` (uar, waf, accuracy) of argmax predictions; y int (n,), probs (n, C)."""
    from emo.fuse.eval.stats import class_metric

    return float(class_metric(y, probs.argmax(1), n_classes, metric))


def select(cands: list[Candidate], preds: dict[Candidate, np.ndarray], y: np.ndarray, metric: str, n_classes: int,
           ensemble: int) -> dict[str, Any]:
    """Choose the configuration from selection predictions (rows aligned with ``y``).

    Ranks ``cands`` by ``metric`` of ``preds[c]`` (ties: the earlier candidate), takes the best
    ``ensemble`` and tunes simplex weights on the same rows (:func:`emo.fuse.eval.ensemble.search_weights`).

    Returns:
        ``{"members": [Candidate], "weights": [float], "scores": {id: score}, "score": fused selection score}``.
    """
    from emo.fuse.eval.ensemble import fuse_outputs, search_weights

    scores = {c.id: score(y, preds[c], metric, n_classes) for c in cands}
    ranked = sorted(cands, key=lambda c: -scores[c.id])  # stable: ties keep the space order
    members = ranked[:max(1, ensemble)]
    if len(members) == 1:
        w = np.ones(1)
    else:
        w, _ = search_weights([{"probs": preds[c]} for c in members], {"discrete": y}, metric, n_classes)
    keep = w > 1e-9
    members = [m for m, k in zip(members, keep) if k]
    w = w[keep] / w[keep].sum()
    fused = fuse_outputs([{"probs": preds[c]} for c in members], w)["probs"]
    return {"members": members, "weights": [float(x) for x in w], "scores": scores,
            "score": score(y, fused, metric, n_classes)}


def fuse(members: list[Candidate], weights: list[float], preds: dict[Candidate, np.ndarray]) -> np.ndarray:
    """Weighted sum of the members' posteriors (float64 (n, C))."""
    from emo.fuse.eval.ensemble import fuse_outputs

    return fuse_outputs([{"probs": preds[c]} for c in members], np.asarray(weights))["probs"]


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------

def parse_budget(text: str | int | None) -> tuple[str, float | None]:
    """``"300s"``, ``"5m"``, ``"1h"`` -> ("seconds", s); ``"40"`` -> ("candidates", 40); None/"" -> ("none", None).

    Raises:
        SearchError: not a positive number with an optional s/m/h suffix.
    """
    if text is None or text == "" or text == 0:
        return "none", None
    s = str(text).strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}
    try:
        if s[-1] in mult:
            v = float(s[:-1]) * mult[s[-1]]
            kind = "seconds"
        else:
            v = float(int(s))
            kind = "candidates"
    except (ValueError, IndexError):
        raise SearchError(f"--budget must be seconds (300s, 5m, 1h) or a number of candidates (40), not {text!r}") from None
    if not v > 0:
        raise SearchError(f"--budget must be positive, got {text!r}")
    return kind, v


def load_search_data(features_dir: str | Path, dataset: str, stores: list[str] | None, normalize: str = "auto",
                     protocol: str = "speaker", frames: list[str] | None = None):
    """Load every store (all layers, utterance vectors; the stores named in ``frames`` as frame
    sequences, :class:`emo.fuse.training.data.Frames`) and the discrete labels.

    Returns:
        (FeatureSet, SearchData, labelled rows).

    Raises:
        SearchError: no store found; FeatureError / StoreError from loading (named files).
    """
    from emo.extract.store import store_path  # noqa: F401  (the store layout lives there)
    from emo.fuse.training.data import load_features, targets

    root = Path(features_dir) / dataset
    if stores is None:
        stores = sorted(p.stem for p in root.glob("*.h5") if "+" not in p.stem) if root.is_dir() else []
    if not stores:
        raise SearchError(f"no feature stores found in {root} (run emo extract first, or name them with --store)")
    frames = sorted(set(frames or []))
    missing = [f for f in frames if f not in stores]
    if missing:
        raise SearchError(f"store(s) {', '.join(missing)} of the search space were not found in {root} "
                          f"(found: {', '.join(stores)})")
    fs = load_features(features_dir, dataset, list(stores), "intersect", frames=frames or False)
    if not fs.classes:
        raise SearchError(f"{dataset}: the search needs discrete labels; the manifest has none")
    y, mask = targets(fs.samples, "discrete", fs.classes)
    rows = np.flatnonzero(mask)
    for k, b in fs.blocks.items():
        if k not in frames and not np.all(np.isfinite(b[rows])):  # frames: checked by load_features (file named)
            raise SearchError(f"store {k}: non-finite features in labelled rows")
    spk = fs.speakers
    known = all(s for s in spk)
    if normalize == "auto":
        normalize = "speaker" if (known and protocol != "split") else "global"
    data = SearchData(dict(fs.blocks), {inp.name: inp for inp in fs.inputs}, y, list(spk) if known else None,
                      list(fs.classes), normalize, list(fs.names))
    return fs, data, rows


class _Rungs:
    """The units of a nested search and their results (``res``: :func:`execute`'s dict).

    Per candidate: one ``outer`` unit (every outer fold's train -> test), and per outer fold k the
    inner folds [0, r0) (rung 0) and [r0, n_inner) (rung 1, for the survivors of the halving cut).
    """

    def __init__(self, outer: list[OuterFold], r0: int, n_inner: int, y: np.ndarray, n_classes: int, metric: str) -> None:
        self.outer, self.r0, self.n_inner, self.y, self.C, self.metric = outer, r0, n_inner, y, n_classes, metric
        self.res: dict = {}

    def outer_unit(self, c: Candidate) -> Unit:
        return Unit(c, "outer", tuple((f.train, f.test) for f in self.outer))

    def inner_unit(self, c: Candidate, k: int, lo: int, hi: int) -> Unit:
        return Unit(c, f"o{k}i{lo}-{hi}", tuple(self.outer[k].inner[lo:hi]))

    def outer_probs(self, c: Candidate) -> np.ndarray:
        """float32 (n_rows, C) outer-fold probabilities of ``c`` (NaN on rows no outer fold tests)."""
        p = np.full((len(self.y), self.C), np.nan, dtype=np.float32)
        for f, q in zip(self.outer, self.res[self.outer_unit(c).ident][0]):
            p[np.sort(f.test)] = q
        return p

    def inner_preds(self, c: Candidate, k: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Pooled inner predictions of candidate c in outer fold k over inner folds [0, hi): (rows, probs)."""
        ev_rows, ps = [], []
        for lo_hi in ([(0, self.r0)] + ([(self.r0, hi)] if hi > self.r0 else [])):
            u = self.inner_unit(c, k, *lo_hi)
            for (_, ev), q in zip(u.jobs, self.res[u.ident][0]):
                ev_rows.append(np.sort(ev))
                ps.append(q)
        return np.concatenate(ev_rows), np.concatenate(ps)

    def rung0(self, cands: list[Candidate], run: Callable, deadline: float | None) -> list[Candidate]:
        """Every candidate's outer unit and, per outer fold, its first ``r0`` inner folds; returns the
        candidates that finished them (before ``deadline``). ``run(units, deadline)`` returns
        :func:`execute`'s dict. Raises SearchError when no candidate finished."""
        outer, r0 = self.outer, self.r0
        shared_train = len(outer) == 1 and len(outer[0].inner) == 1 and np.array_equal(outer[0].inner[0][0], outer[0].train)
        if shared_train:  # split: the dev and test predictions come from the same fit (train -> dev + test), one unit
            f0 = outer[0]
            both = np.union1d(f0.inner[0][1], f0.test)
            units0 = [Unit(c, "split", ((f0.train, both),)) for c in cands]
            for ident, (ps, secs) in run(units0, deadline).items():
                c = next(c for c in cands if c.id == ident[0])
                p = ps[0]
                self.res[self.outer_unit(c).ident] = ([p[np.searchsorted(both, np.sort(f0.test))]], secs / 2)
                self.res[self.inner_unit(c, 0, 0, r0).ident] = ([p[np.searchsorted(both, np.sort(f0.inner[0][1]))]], secs / 2)
        else:
            units0 = []
            for c in cands:
                units0.append(self.outer_unit(c))
                units0.extend(self.inner_unit(c, k, 0, r0) for k in range(len(outer)))
            self.res.update(run(units0, deadline))
        done = [c for c in cands if self.outer_unit(c).ident in self.res
                and all(self.inner_unit(c, k, 0, r0).ident in self.res for k in range(len(outer)))]
        if not done:
            raise SearchError("the budget ended before any candidate finished; give a larger --budget")
        return done

    def rung1(self, done: list[Candidate], keep_n: int, run: Callable, deadline: float | None) -> dict[int, tuple]:
        """Per outer fold: rank ``done`` on rung 0's pooled inner score, keep the best ``keep_n`` and run
        their remaining inner folds. Returns ``{k: (survivors, rung-0 scores by id)}``."""
        survivors, rung1 = {}, []
        for k in range(len(self.outer)):
            r0_scores = {}
            for c in done:
                ri, pi = self.inner_preds(c, k, self.r0)
                r0_scores[c.id] = score(self.y[ri], pi, self.metric, self.C)
            surv = sorted(done, key=lambda c: -r0_scores[c.id])[:keep_n]
            survivors[k] = (surv, r0_scores)
            if self.r0 < self.n_inner:
                rung1.extend(self.inner_unit(c, k, self.r0, self.n_inner) for c in surv)
        self.res.update(run(rung1, deadline))
        return survivors


def _select_per_fold(plan: _Rungs, done: list[Candidate], survivors: dict, seconds: dict[str, float], ensemble: int,
                     log: Callable[[str], None]) -> tuple[list[dict], np.ndarray, dict[str, int]]:
    """Inside each outer fold, choose the members and weights on its inner predictions only
    (:func:`select`), then score the outer fold's test rows with them.

    Returns:
        per_fold: one record per outer fold (choice, inner and outer scores, rung scores).
        nested: float64 (n_rows, C) fused outer probabilities (NaN outside the test rows).
        chosen_counts: how often each ensemble ("w*label + ...") was chosen.
    """
    y, C, metric, r0, n_inner = plan.y, plan.C, plan.metric, plan.r0, plan.n_inner
    nested = np.full((len(y), C), np.nan)
    per_fold, chosen_counts = [], {}
    for k, f in enumerate(plan.outer):
        surv, r0_scores = survivors[k]
        full = [c for c in surv if r0 == n_inner or plan.inner_unit(c, k, r0, n_inner).ident in plan.res]
        for c in full:
            if r0 < n_inner:
                seconds[c.id] += plan.res[plan.inner_unit(c, k, r0, n_inner).ident][1]
        preds, rows_k = {}, None
        for c in full:
            ri, pi = plan.inner_preds(c, k, n_inner)
            order_ = np.argsort(ri)
            rows_k, preds[c] = ri[order_], pi[order_]
        sel = select(full, preds, y[rows_k], metric, C, ensemble)
        te = np.sort(f.test)
        op = {c: plan.outer_probs(c)[te] for c in sel["members"]}
        nested[te] = fuse(sel["members"], sel["weights"], op)
        key = " + ".join(f"{w:.2f}*{m.label()}" for m, w in zip(sel["members"], sel["weights"]))
        chosen_counts[key] = chosen_counts.get(key, 0) + 1
        per_fold.append({"fold": f.name, "n_train": int(len(f.train)), "n_test": int(len(te)),
                         "inner_folds": n_inner, "rung0_inner_folds": r0, "candidates": len(done),
                         "survivors": len(full), "chosen": [m.id for m in sel["members"]],
                         "chosen_labels": [m.label() for m in sel["members"]], "weights": sel["weights"],
                         "inner_score": sel["score"], "outer_score": score(y[te], nested[te], metric, C),
                         "rung0_scores": {c.id: round(v, 4) for c, v in ((c, r0_scores[c.id]) for c in done)},
                         "inner_scores": {cid: round(v, 4) for cid, v in sel["scores"].items()}})
        log(f"{f.name}: chose {key} (inner {metric} {sel['score']:.4f}), outer {metric} {per_fold[-1]['outer_score']:.4f}")
    return per_fold, nested, chosen_counts


GRID_FIELDS = ("weight_decay", "hidden", "dropout")


def grid_edges(space: Space, per_fold: list[dict], cands: list[Candidate]) -> dict[str, Any]:
    """For each numeric grid of ``space`` with two or more values: in how many outer folds the chosen
    ensemble's heaviest member (:func:`_select_per_fold`) sits at the grid's lowest or highest value;
    such choices say the best value may lie outside the grid (widen it in ``--config``).

    Light members are not counted: an ensemble gains from members unlike its heaviest one, so it
    often takes a grid's ends as minor members. A fold whose heaviest weight is shared by members
    with different values of the field is ``tied`` and not counted; for ``hidden`` and ``dropout`` a
    fold whose heaviest member has no hidden layer (``linear``) is not counted either.

    Returns:
        ``{field: {"grid": [...], "at_lowest": folds, "at_highest": folds, "counted": folds,
        "tied": folds, "folds": n}}`` and ``"warnings"``: a sentence for an end (or both ends
        together) chosen in more than half of the counted folds.
    """
    by_id = {c.id: c for c in cands}
    out: dict[str, Any] = {"warnings": []}
    for name in GRID_FIELDS:
        def grid_of(head: str, name: str = name) -> list:
            return sorted(set(space.weight_decays(head) if name == "weight_decay" else getattr(space, name)))

        grids = {h: grid_of(h) for h in space.heads}
        if all(len(g) < 2 for g in grids.values()):
            continue
        lo = hi = counted = tied = 0
        for pf in per_fold:
            w = np.asarray(pf.get("weights") or [], dtype=float)
            heavy = [by_id.get(i) for i, wi in zip(pf["chosen"], w) if len(w) and wi == w.max()]
            if not heavy or any(c is None for c in heavy):
                continue
            if name != "weight_decay" and all(c.head == "linear" for c in heavy):
                continue
            values = {getattr(c, name) for c in heavy if name == "weight_decay" or c.head != "linear"}
            if len(values) > 1:
                tied += 1
                continue
            (v,) = values
            grid = grids.get(heavy[0].head) or grid_of(heavy[0].head)
            if len(grid) < 2:
                continue
            counted, lo, hi = counted + 1, lo + (v == grid[0]), hi + (v == grid[-1])
        shown = sorted({json.dumps(g) for g in grids.values()})
        grid = json.loads(shown[0]) if len(shown) == 1 else {h: g for h, g in grids.items()}
        out[name] = {"grid": grid, "at_lowest": lo, "at_highest": hi, "counted": counted, "tied": tied,
                     "folds": len(per_fold)}
        said = False
        ends = (grid[0], grid[-1]) if isinstance(grid, list) else None
        for k, (end, n_end) in enumerate((("lowest", lo), ("highest", hi))):
            if n_end > counted / 2:
                said = True
                v = f" ({ends[k]:g})" if ends else ""
                out["warnings"].append(f"{name}: the {end} value of the grid{v} was chosen in {n_end} of {counted} "
                                       f"outer folds; the best value may lie outside the grid (widen {name} in --config)")
        if not said and counted and lo + hi > counted / 2:
            v = f" ({ends[0]:g} or {ends[1]:g})" if ends else ""
            out["warnings"].append(f"{name}: an end of the grid{v} was chosen in {lo + hi} of {counted} outer folds; "
                                   f"the best value may lie outside the grid (widen {name} in --config)")
    return out


def _estimates(plan: _Rungs, done: list[Candidate], nested: np.ndarray, speakers, n_boot: int, seed: int) -> dict[str, Any]:
    """The nested estimate with its group-bootstrap interval (groups: speakers, else outer folds),
    and beside it the optimistic same-data estimate and MERTools' top-10-of-50 protocol on the same
    candidates. Returns ``{"ev", "outer_scores", "nested", "optimistic", "top10_of_50"}``."""
    from emo.fuse.eval.stats import bootstrap_ci

    y, C, metric, outer = plan.y, plan.C, plan.metric, plan.outer
    ev = np.sort(np.concatenate([f.test for f in outer]))
    groups = (np.asarray(speakers, dtype=object)[ev] if speakers is not None
              else np.asarray([f.name for f in outer for _ in f.test], dtype=object)[np.argsort(np.concatenate([f.test for f in outer]))])
    yt = y[ev]

    def ci(p):
        if len(set(groups.tolist())) < 2:
            return {"estimate": score(yt, p, metric, C), "low": None, "high": None,
                    "note": "one evaluation group: no group bootstrap"}
        return bootstrap_ci(lambda r: score(yt[r], p[r], metric, C), groups, n_boot=n_boot, seed=seed)

    outer_scores = {c.id: score(yt, plan.outer_probs(c)[ev], metric, C) for c in done}
    best_outer = max(done, key=lambda c: outer_scores[c.id])
    rng = np.random.default_rng(seed + 1)
    n50 = min(50, len(done))
    draw = rng.choice(len(done), n50, replace=False)
    top10 = sorted((outer_scores[done[i].id] for i in draw), reverse=True)[:min(10, n50)]
    nested_ci = ci(nested[ev])
    optimistic = {"estimate": outer_scores[best_outer.id], "candidate": best_outer.label(), "id": best_outer.id,
                  "interval": ci(plan.outer_probs(best_outer)[ev]),
                  "how": "the candidate with the best pooled outer score, chosen on the evaluation folds themselves"}
    top10_50 = {"estimate": float(np.mean(top10)), "n_drawn": int(n50), "n_top": len(top10),
                "how": "MERTools protocol: mean outer score of the best 10 of 50 random candidates on the same folds"
                       + ("" if n50 == 50 else f" (only {n50} candidates evaluated: top {len(top10)} of {n50})")}
    return {"ev": ev, "outer_scores": outer_scores, "nested": nested_ci, "optimistic": optimistic, "top10_of_50": top10_50}


def _leaderboard(done: list[Candidate], per_fold: list[dict], outer_scores: dict[str, float],
                 seconds: dict[str, float]) -> list[dict[str, Any]]:
    """One row per evaluated candidate, best mean inner score first (the outer score is labelled
    same-data: it must not be used to choose)."""
    counts_by_id: dict[str, int] = {}
    for pf in per_fold:
        for cid in pf["chosen"]:
            counts_by_id[cid] = counts_by_id.get(cid, 0) + 1
    lb = []
    for c in done:
        inner_mean = float(np.mean([pf["inner_scores"].get(c.id, pf["rung0_scores"][c.id]) for pf in per_fold]))
        rung = int(np.mean([c.id in pf["inner_scores"] for pf in per_fold]) * 100)
        lb.append({"id": c.id, "candidate": c.label(), "inner_score": round(inner_mean, 4),
                   "full_inner_folds_pct": rung, "outer_score_same_data": round(outer_scores[c.id], 4),
                   "seconds": round(seconds[c.id], 2), "chosen_in_folds": counts_by_id.get(c.id, 0), **{"config": c.key()}})
    lb.sort(key=lambda r: -r["inner_score"])
    return lb


def search(features_dir: str | Path, dataset: str, out: str | Path, space: Space | None = None, protocol: str = "speaker",
           metric: str = "uar", budget: str | int | None = None, ensemble: int = 3, halving: int = 3, inner_folds: int = 0,
           workers: int = 1, scheduler: Any = None, seed: int = 0, n_boot: int = 2000, stores: list[str] | None = None,
           write_run: bool = True, progress: Callable[[str], None] | None = None, command: list[str] | None = None,
           options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the nested search (module docstring) and write ``out`` (``search.json``, ``leaderboard.csv``,
    ``report.md``, plots, ``run/`` and ``cache/``).

    Args:
        features_dir, dataset: the stores (``FEATURES_DIR/DATASET/*.h5``). space: None = :func:`default_space`.
        protocol: ``speaker``, ``split`` or an integer K. metric: uar | waf | accuracy (ranking and reporting).
        budget: see :func:`parse_budget` (candidates: the first N of the seeded order; seconds: no new
            rung-0 candidate after 60 % of it, the rest is for rung 1 and the refit).
        ensemble: members of the decision ensemble chosen per fold (1: the best candidate alone).
        halving: eta of successive halving (<= 1: off). inner_folds: 0 = one per speaker.
        workers / scheduler: local processes / a dask Client or address. seed: candidate order, weights.
        command: the argv recorded in ``search.json`` and the run directories. options: the command's
            resolved options (:class:`emo.fuse.options.SearchOptions`), recorded as ``search.json``
            ``options`` (``emo fuse search --config OUT/search.json`` reads them back).

    Returns:
        The ``search.json`` dict.

    Raises:
        SearchError, ProtocolError, FeatureError, StoreError: bad input (named).
    """
    t_start = time.monotonic()
    log = progress or (lambda s: None)
    if metric not in SEARCH_METRICS:
        raise SearchError(f"--metric must be one of {', '.join(SEARCH_METRICS)}, not {metric!r}")
    if ensemble < 1:
        raise SearchError(f"--ensemble must be >= 1, got {ensemble}")
    bkind, bval = parse_budget(budget)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fs, data, rows = load_search_data(features_dir, dataset, stores, protocol=protocol,
                                      frames=space.frame_stores if space is not None else None)
    store_layers = {k: list(v.layers) for k, v in data.inputs.items()}
    space = space or default_space(store_layers)
    cands = space.candidates(store_layers)
    order = np.random.default_rng(seed).permutation(len(cands))
    cands = [cands[i] for i in order]
    n_space = len(cands)
    if bkind == "candidates":
        cands = cands[:int(bval)]
    y = data.y["discrete"]
    C = len(data.classes)
    outer = make_outer_folds(protocol, fs, y, rows, inner_folds, seed)
    cache = UnitCache(out / "cache", data.fingerprint())
    deadline0 = deadline = None
    if bkind == "seconds":
        deadline0 = t_start + 0.6 * bval
        deadline = t_start + bval
    log(f"search: {len(cands)} of {n_space} candidates, {len(outer)} outer folds x {len(outer[0].inner)} inner folds, "
        f"metric {metric}, normalize {data.normalize}")

    n_inner = len(outer[0].inner)
    eta = halving if halving > 1 else 1
    r0 = n_inner if eta == 1 or n_inner == 1 else max(1, math.ceil(n_inner / eta))
    plan = _Rungs(outer, r0, n_inner, y, C, metric)
    run = lambda units, until: execute(units, data, cache, workers, scheduler, until, log)  # noqa: E731
    done_cands = plan.rung0(cands, run, deadline0)
    seconds = {c.id: plan.res[plan.outer_unit(c).ident][1]
               + sum(plan.res[plan.inner_unit(c, k, 0, r0).ident][1] for k in range(len(outer))) for c in done_cands}
    keep_n = max(ensemble + 1, math.ceil(len(done_cands) / eta)) if r0 < n_inner else len(done_cands)
    survivors_all = plan.rung1(done_cands, keep_n, run, deadline)
    per_fold, nested, chosen_counts = _select_per_fold(plan, done_cands, survivors_all, seconds, ensemble, log)
    est = _estimates(plan, done_cands, nested, data.speakers, n_boot, seed)
    ev, yt, outer_scores = est["ev"], y[est["ev"]], est["outer_scores"]
    nested_ci, optimistic, top10_50 = est["nested"], est["optimistic"], est["top10_of_50"]
    write_nested_predictions(out / "nested_predictions.csv", plan, nested, data)

    # final choice on all data: the outer folds are its inner folds (outer predictions = selection predictions)
    if len(outer) > 1:
        final = select(done_cands, {c: plan.outer_probs(c)[ev] for c in done_cands}, yt, metric, C, ensemble)
        final_rows = rows
        final_how = "selected on the outer folds' predictions of all labelled rows, refitted on all labelled rows"
    else:
        final = {"members": [c for c in done_cands if c.id in per_fold[0]["chosen"]], "weights": per_fold[0]["weights"],
                 "score": per_fold[0]["inner_score"]}
        final["members"] = sorted(final["members"], key=lambda c: per_fold[0]["chosen"].index(c.id))
        final_rows = outer[0].train
        final_how = "selected on the dev partition, refitted on the train partition"
    lb = _leaderboard(done_cands, per_fold, outer_scores, seconds)
    gap = optimistic["estimate"] - nested_ci["estimate"]
    edges = grid_edges(space, per_fold, done_cands)
    for w in edges["warnings"]:
        log(f"warning: {w}")
    result = {
        "command": command, "options": options, "dataset": dataset, "features_dir": str(features_dir), "protocol": protocol,
        "metric": metric, "normalize": data.normalize, "n_labelled": int(len(rows)), "n_evaluated": int(len(ev)),
        "classes": data.classes, "stores": {k: {"layers": v.layers, "dim": v.dim, "provenance": v.provenance}
                                            for k, v in sorted(data.inputs.items())},
        "space": {"n_candidates_in_space": n_space, "n_candidates_evaluated": len(done_cands),
                  "definition": {**asdict(space), "weight_decay": space.weight_decay if space.weight_decay is not None
                                 else {h: space.weight_decays(h) for h in space.heads}}},
        "budget": {"kind": bkind, "value": bval}, "halving": {"eta": eta, "rung0_inner_folds": r0, "inner_folds": n_inner,
                                                             "survivors_per_fold": keep_n},
        "ensemble": ensemble, "seed": seed, "data_fingerprint": data.fingerprint(),
        "nested": {**nested_ci, "how": "chosen inside each outer fold on its inner folds only; outer folds only score"},
        "optimistic_same_data": optimistic, "top10_of_50": top10_50,
        "gap_optimistic_minus_nested": round(gap, 4),
        "per_fold": per_fold, "chosen_counts": chosen_counts, "grid_edges": edges,
        "final": {"members": [m.key() for m in final["members"]], "labels": [m.label() for m in final["members"]],
                  "weights": final["weights"], "selection_score": final["score"], "how": final_how},
        "leaderboard": lb, "seconds": round(time.monotonic() - t_start, 1),
        "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(), "workers": workers,
        "executor": "dask" if scheduler is not None else ("processes" if workers > 1 else "in-process"),
    }
    if write_run:
        result["final"]["run"] = write_final_runs(out, fs, data, final["members"], final["weights"], final_rows,
                                                  features_dir, dataset, command)
    result["seconds"] = round(time.monotonic() - t_start, 1)
    write_outputs(out, result)
    return result


def write_nested_predictions(path: Path, plan: _Rungs, nested: np.ndarray, data: SearchData) -> Path:
    """``OUT/nested_predictions.csv``: one row per evaluated (outer-test) row: ``name``, ``speaker``,
    ``label``, ``fold`` (the outer fold that scored it), ``pred`` and ``prob_<class>`` of the nested
    prediction (the ensemble chosen inside that fold). Two searches on the same rows compare row by
    row from these files (a paired speaker bootstrap of their difference). Written atomically.

    Raises:
        FloatingPointError: a non-finite nested probability (never written silently).
    """
    from emo.fsio import write_csv

    rows = []
    for f in plan.outer:
        for i in np.sort(f.test):
            p = nested[i]
            if not np.all(np.isfinite(p)):
                raise FloatingPointError(f"nested prediction of {data.names[i]} is not finite")
            rows.append({"name": data.names[i], "speaker": "" if data.speakers is None else data.speakers[i],
                         "label": data.classes[int(plan.y[i])], "fold": f.name, "pred": data.classes[int(np.argmax(p))],
                         **{f"prob_{c}": f"{float(v):.6g}" for c, v in zip(data.classes, p)}})
    return write_csv(path, rows)


def write_final_runs(out: Path, fs, data: SearchData, members: list[Candidate], weights: list[float], rows: np.ndarray,
                     features_dir, dataset: str, command) -> dict[str, Any]:
    """Refit each chosen member on ``rows`` and write ``OUT/run``, which ``emo score --run`` applies.

    One member: ``OUT/run`` is an emo run directory (:func:`emo.fuse.run.save_run`), a one-fold run
    (fold ``all``). Several: ``OUT/run`` is a decision-ensemble run (:class:`emo.fuse.run.EnsembleRun`):
    ``run/members/<k>-<id>/`` holds each member's run and ``run/config.json`` their weights, so
    ``emo score`` predicts ``sum_i w_i p_i``, the weighted ensemble the search chose, as the nested
    estimate scored it (each member refitted on all selection rows). The whole directory is written
    atomically (:func:`emo.fsio.atomic_dir`). Each member's metrics.json holds in-sample numbers,
    labelled so.

    Returns:
        ``{"run": "run", "kind": "run" | "decision-ensemble", "members": [{"dir", "candidate", "weight"}]}``
        (``dir`` relative to ``out``).
    """
    import shutil

    from emo import fsio
    from emo.fuse.run import ENSEMBLE_KIND, save_run, write_ensemble_config

    order = np.argsort(-np.asarray(weights), kind="stable")
    fitted = []
    for i in order:
        c = members[i]
        _, res, folds = fit_predict(c, data, [(rows, rows)], threads=max(1, (os.cpu_count() or 1)), return_result=True)
        cfg = train_config(c, data, 1).resolve(len(folds[0].train))
        _, inputs = data.candidate_inputs(c)
        config = {"command": command, "dataset": dataset, "features_dir": str(features_dir),
                  "feature_specs": [inp.spec for inp in inputs], "inputs": [inp.to_dict() for inp in inputs],
                  "task": "discrete", "classes": data.classes, "model": cfg.model_args(inputs, len(data.classes)),
                  "training": asdict(cfg),
                  "protocol": {"folds": "all", "seed": 0, "align": "intersect", "test_splits": [], "train_splits": [],
                               "n_samples": len(data.names), "n_labelled": int(len(rows)),
                               "inner_validation": "none (L-BFGS to the optimum)" if c.head == "linear" else "one training speaker / 10%"},
                  "search": {"candidate": c.key(), "weight": float(weights[i]), "members": len(members),
                             "note": "refitted on all selection rows by emo fuse search; metrics.json is in-sample (the "
                                     "honest estimate is the nested one in search.json)"}}
        fitted.append((c, float(weights[i]), config, res, folds))
    stale = out / "members"
    if (stale / "weights.json").is_file():  # the layout before the ensemble run directory: members beside run/
        shutil.rmtree(stale)
    if len(fitted) == 1:
        c, w, config, res, folds = fitted[0]
        save_run(out / "run", config, res, data.names, folds, data.y)
        return {"run": "run", "kind": "run", "members": [{"dir": "run", "candidate": c.label(), "weight": w}]}
    written = []
    with fsio.atomic_dir(out / "run") as tmp:
        for rank, (c, w, config, res, folds) in enumerate(fitted):
            d = f"members/{rank}-{c.id}"
            save_run(tmp / d, config, res, data.names, folds, data.y)
            written.append({"dir": f"run/{d}", "candidate": c.label(), "weight": w})
        write_ensemble_config(tmp, [(m["dir"][len("run/"):], m["weight"]) for m in written], union_inputs(data, members),
                              {"command": command, "dataset": dataset, "features_dir": str(features_dir),
                               "search": {"members": [c.key() for c, *_ in fitted], "labels": [c.label() for c, *_ in fitted],
                                          "note": "the decision ensemble chosen by emo fuse search, each member refitted on "
                                                  "all selection rows; the honest estimate is the nested one in search.json"}})
    return {"run": "run", "kind": ENSEMBLE_KIND, "members": written}


def union_inputs(data: SearchData, members: list[Candidate]) -> list:
    """Per store used by ``members``, one :class:`emo.fuse.training.inputs.FeatureInput` with the union of
    their layers in store order (what ``emo score`` extracts or reads once for the ensemble)."""
    layers: dict[str, set[str]] = {}
    for c in members:
        _, inputs = data.candidate_inputs(c)
        for inp in inputs:
            layers.setdefault(inp.name, set()).update(inp.layers)
    out = []
    for name in sorted(layers):
        inp = data.inputs[name]
        sel = [k for k in inp.layers if k in layers[name]]
        out.append(replace(inp, layers=sel, spec=f"{(inp.spec or name).split(':')[0]}:{','.join(sel)}"))
    return out


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """search.json, leaderboard.csv, report.md and the plots (all written atomically)."""
    from emo.fsio import write_csv, write_json

    write_json(out / "search.json", result)
    write_csv(out / "leaderboard.csv", [{k: v for k, v in r.items() if k != "config"} for r in result["leaderboard"]])
    plots = plot_search(out, result)
    (out / "report.md").parent.mkdir(exist_ok=True, parents=True)
    from emo import fsio

    fsio.write_text(out / "report.md", report_markdown(result, plots))


def plot_search(out: Path, result: dict[str, Any]) -> list[str]:
    """``estimates.png`` (nested with interval vs the optimistic and top-10-of-50 numbers) and
    ``inner_vs_outer.png`` (each candidate's mean inner score against its same-data outer score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emo import fsio

    m = result["metric"].upper()
    names = []
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    n = result["nested"]
    labels = ["nested", "optimistic\n(same data)", "top-10-of-50\n(MERTools)"]
    vals = [n["estimate"], result["optimistic_same_data"]["estimate"], result["top10_of_50"]["estimate"]]
    ax.bar(range(3), vals, color=["#2b7", "#c55", "#d94"])
    if n.get("low") is not None:
        ax.errorbar([0], [n["estimate"]], yerr=[[n["estimate"] - n["low"]], [n["high"] - n["estimate"]]], color="k", capsize=5)
    ax.set_xticks(range(3), labels)
    ax.set_ylim(max(0.0, min(vals) - 0.15), min(1.0, max(vals) + 0.05))
    ax.set_ylabel(m)
    ax.set_title(f"{result['dataset']}: selection inflation")
    fig.tight_layout()
    with fsio.atomic_path(out / "estimates.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    names.append("estimates.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    lb = result["leaderboard"]
    ax.scatter([r["inner_score"] for r in lb], [r["outer_score_same_data"] for r in lb], s=10, alpha=0.6)
    ch = [r for r in lb if r["chosen_in_folds"]]
    ax.scatter([r["inner_score"] for r in ch], [r["outer_score_same_data"] for r in ch], s=30, color="r", label="chosen in some fold")
    ax.set_xlabel(f"mean inner {m} (selection)")
    ax.set_ylabel(f"outer {m} (same data)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with fsio.atomic_path(out / "inner_vs_outer.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    names.append("inner_vs_outer.png")
    return names


def report_markdown(r: dict[str, Any], plots: list[str]) -> str:
    """The search's report.md."""
    m = r["metric"].upper()
    n = r["nested"]

    def iv(d):
        return f"[{d['low']:.4f}, {d['high']:.4f}]" if d.get("low") is not None else "(no interval: one evaluation group)"

    lines = [f"# emo fuse search: {r['dataset']}", "",
             f"Protocol: `{r['protocol']}` outer folds, inner folds inside each ({r['halving']['inner_folds']} per outer fold; "
             f"successive halving eta={r['halving']['eta']}, rung 0 on {r['halving']['rung0_inner_folds']} inner folds). "
             f"Metric: {m}. Normalisation: {r['normalize']}. Candidates evaluated: {r['space']['n_candidates_evaluated']} "
             f"of {r['space']['n_candidates_in_space']}. Ensemble size: {r['ensemble']}.", "",
             "| estimate | " + m + " | interval (95 %, speaker bootstrap) | what it is |", "|---|---|---|---|",
             f"| **nested** | **{n['estimate']:.4f}** | {iv(n)} | {n['how']} |",
             f"| optimistic (same data) | {r['optimistic_same_data']['estimate']:.4f} | {iv(r['optimistic_same_data']['interval'])} | "
             f"{r['optimistic_same_data']['how']}: {r['optimistic_same_data']['candidate']} |",
             f"| top-10-of-50 | {r['top10_of_50']['estimate']:.4f} | - | {r['top10_of_50']['how']} |", "",
             f"Inflation (optimistic - nested): {r['gap_optimistic_minus_nested']:+.4f}.", ""]
    lines += [f"![{p}]({p})" for p in plots] + ["", "## Chosen per outer fold", "", "| fold | chosen (weight x candidate) | inner | outer |",
                                                  "|---|---|---|---|"]
    for pf in r["per_fold"]:
        ch = " + ".join(f"{w:.2f} x {lab}" for lab, w in zip(pf["chosen_labels"], pf["weights"]))
        lines.append(f"| {pf['fold']} | {ch} | {pf['inner_score']:.4f} | {pf['outer_score']:.4f} |")
    for w in (r.get("grid_edges") or {}).get("warnings", []):
        lines += ["", f"Warning: {w}."]
    lines += ["", "## How often each configuration was chosen", "", "| configuration | folds |", "|---|---|"]
    for k, v in sorted(r["chosen_counts"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {v} |")
    fin = r["final"]
    lines += ["", "## Final configuration (`run/`)", "", f"{fin['how']}: " +
              " + ".join(f"{w:.2f} x {lab}" for lab, w in zip(fin["labels"], fin["weights"])) + ".",
              "Apply it with `emo score --run OUT/run ...`" + (": a decision-ensemble run (each member's run under `run/members/`, "
                                                                 "their weights in `run/config.json`), so emo score predicts the same "
                                                                 "weighted sum of posteriors the search chose." if len(fin["labels"]) > 1 else "."),
              "", "## Leaderboard (top 30 by mean inner score)", "",
              f"| candidate | inner {m} | full inner folds % | outer {m} (same data) | seconds | chosen |", "|---|---|---|---|---|---|"]
    for row in r["leaderboard"][:30]:
        lines.append(f"| {row['candidate']} | {row['inner_score']:.4f} | {row['full_inner_folds_pct']} | "
                     f"{row['outer_score_same_data']:.4f} | {row['seconds']:.1f} | {row['chosen_in_folds']} |")
    lines += ["", f"Wall time {r['seconds']} s, load average {r['load_average_1min']} on {r['cpu_count']} CPUs, "
              f"executor {r['executor']} ({r['workers']} workers).", ""]
    return "\n".join(lines)
