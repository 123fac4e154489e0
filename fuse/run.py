"""Run directories: what ``emo fuse train --out runs/NAME`` writes, and :func:`load_run` to use it.

Layout::

    config.json          everything needed to rebuild the models: feature specs with layers and each
                         store's provenance (weights_hash), which inputs are frame-level
                         (``inputs[i]["frames"]``), task, classes, head arguments, protocol,
                         folds (sizes, checkpoint file, global normalisation statistics from the
                         fold's training part) and per-speaker statistics for --normalize speaker
    fold-K.safetensors   the fold's models (one per seed, keys prefixed ``s<j>.``); no pickles
    metrics.json         per-fold metrics, mean/std over folds, pooled out-of-fold metrics, test metrics
    predictions.csv      name, fold, true, pred, prob_<class>..., valence_true, valence, ...
    report.md            metrics table, per-class precision/recall, confusion matrix (:mod:`emo.fuse.eval.report`)
    confusion.png        pooled out-of-fold confusion matrix (discrete tasks; confusion-test.png for a test set)

Integrity (issue 11): a run directory is written into a temporary sibling and renamed into place
when complete (:func:`emo.fsio.atomic_dir`; the previous run stays in place until then), so a
kill while saving never leaves a mix of old and new folds. ``config.json`` records the SHA-256
of every checkpoint (``folds[k]["sha256"]``); :meth:`Run.models` verifies them before loading
(:func:`emo.fuse.eval.runcheck.verify_checkpoints`) and refuses non-finite weights. Checkpoints are
written with canonical bytes (:func:`emo.fsio.write_safetensors`: the safetensors library
orders its metadata map by hash, differently in every process), so retraining with the same
settings gives bit-identical checkpoint files and digests.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from emo import __version__
from emo.fsio import write_csv, write_json, write_safetensors
from emo.fuse.training.inputs import FeatureInput, as_inputs
from emo.fuse.eval.report import write_report

__all__ = ["RunError", "Run", "EnsembleRun", "ENSEMBLE_KIND", "load_run", "read_config", "save_run", "write_ensemble_config",
           "prediction_columns", "write_csv", "write_json"]

#: ``config.json`` ``kind`` of a decision-ensemble run directory (:class:`EnsembleRun`).
ENSEMBLE_KIND = "decision-ensemble"


class RunError(ValueError):
    """A run directory that cannot be loaded (missing or inconsistent files, named in the message)."""


def save_run(out: str | Path, config: dict[str, Any], result, names: list[str], folds: list, y: dict[str, np.ndarray]) -> Path:
    """Write a run directory (see module docstring) from a :class:`emo.fuse.eval.cv.CVResult`.

    Args:
        out: directory; written as a whole into a temporary sibling and swapped into place when
            complete (:func:`emo.fsio.atomic_dir`): a previous run there is replaced only then.
        config: the run config (:func:`emo.fuse.training.train.train`); fold entries and normalisation are added here.
        result: :class:`emo.fuse.eval.cv.CVResult`; names: sample name per row; folds: the
            :class:`emo.fuse.eval.protocols.Fold` list; y: label arrays per row.

    Raises:
        emo.fuse.eval.runcheck.RunDirError: ``out`` is unusable (checked again here; ``emo fuse train``
            checks it before training).
    """
    from emo import fsio
    from emo.fuse.eval.runcheck import check_run_out

    check_run_out(out, lock=False)  # `emo fuse train` locked the run directory when it started
    with fsio.atomic_dir(out) as tmp:
        _save_run_into(tmp, config, result, names, folds, y)
    return Path(out)


def _save_run_into(out: Path, config: dict[str, Any], result, names: list[str], folds: list, y: dict[str, np.ndarray]) -> Path:
    from emo.fuse.eval.runcheck import checkpoint_digests

    config = dict(config)
    config["emo_version"] = __version__
    config["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    norm_mode = result.normalizers[0].mode if result.normalizers else "none"
    config["normalization"] = {"mode": norm_mode}
    if norm_mode == "speaker":
        config["normalization"]["speaker"] = result.normalizers[0].to_dict().get("speaker", {})
    fold_entries = []
    for k, (fold, states, norm) in enumerate(zip(folds, result.states, result.normalizers)):
        ckpt = f"fold-{k}.safetensors"
        tensors = {f"s{j}.{name}": t.numpy() for j, st in enumerate(states) for name, t in st.items()}
        write_safetensors(out / ckpt, tensors, metadata={"fold": fold.name, "seeds": str(len(states))})
        entry = {**fold.as_dict(), "checkpoint": ckpt, "seeds": len(states), "sha256": checkpoint_digests(out, [ckpt])[ckpt]}
        nd = norm.to_dict()
        if "global" in nd:
            entry["normalization"] = {"global": nd["global"]}
        if fold.name.startswith("speaker="):
            entry["test_speaker"] = fold.name.split("=", 1)[1]
        fold_entries.append(entry)
    config["folds"] = fold_entries
    from emo import fsio

    write_json(out / "config.json", fsio.seal_json(config))  # content SHA-256: an edited config is refused
    metrics = {"folds": [{"name": r["name"], "n_test": r["n_test"], "epochs": r["epochs"], **r["metrics"],
                          **({"fit": r["fit"]} if "fit" in r else {})} for r in result.folds],
               **result.summary, "pooled": result.pooled, "n": int(len(result.oof["index"])), "n_folds": len(result.folds)}
    if result.test is not None and "metrics" in result.test:
        metrics["test"] = result.test["metrics"]
    if config.get("protocol"):  # issue 23: every result states its protocol and its warnings
        metrics["protocol"] = config["protocol"]
    metrics["warnings"] = list(config.get("warnings", []))
    metrics["seconds"] = round(sum(float(r.get("seconds", 0.0)) for r in result.folds), 3)
    write_json(out / "metrics.json", metrics)
    classes = config.get("classes")
    threshold = (config.get("training") or {}).get("threshold")
    rows = []

    def add_rows(idx, fold_names, outs):
        for r, i in enumerate(idx):
            rows.append({"name": names[i], "fold": fold_names[r], **prediction_columns(outs, r, y, i, classes, threshold)})

    fold_names = [folds[f].name for f in result.oof["fold"]]
    add_rows(result.oof["index"], fold_names, result.oof)
    if result.test is not None:
        add_rows(result.test["index"], ["test"] * len(result.test["index"]), result.test)
    write_csv(out / "predictions.csv", rows)
    write_report(out, config, metrics)
    return out


def prediction_columns(outs: dict[str, np.ndarray], r: int, y: dict[str, np.ndarray], i: int,
                       classes: list[str] | None, threshold: float | None = None) -> dict[str, str]:
    """The ``predictions.csv`` columns of one sample: ``true``, ``pred``, ``prob_<class>``...,
    ``valence_true``/``valence``, ``<dim>_true``/``<dim>`` for VAD (empty ``*_true`` when unlabelled).

    Args:
        outs: model outputs (``probs`` (n, C), ``valence`` (n,), ``vad`` (n, 3)); ``r`` indexes them.
        y: labels over the dataset rows; ``i`` indexes them. classes: class order (discrete tasks).
    """
    row: dict[str, str] = {}
    if "probs" in outs and "multihot" in y:  # --task multilabel: ;-separated label lists (threshold ζ)
        from emo.fuse.methods.multilabel import DEFAULT_THRESHOLD, predict_multihot

        pred = predict_multihot(outs["probs"][r:r + 1], DEFAULT_THRESHOLD if threshold is None else threshold)[0]
        row["true"] = ";".join(c for c, t in zip(classes, y["multihot"][i]) if t > 0)
        row["pred"] = ";".join(c for c, p in zip(classes, pred) if p)
        row.update({f"prob_{c}": f"{outs['probs'][r, j]:.6f}" for j, c in enumerate(classes)})
    elif "probs" in outs:
        row["true"] = classes[y["discrete"][i]] if y["discrete"][i] >= 0 else ""
        row["pred"] = classes[int(outs["probs"][r].argmax())]
        row.update({f"prob_{c}": f"{outs['probs'][r, j]:.6f}" for j, c in enumerate(classes)})
    if "valence" in outs:
        row["valence_true"] = "" if not np.isfinite(y["valence"][i]) else f"{y['valence'][i]:.6g}"
        row["valence"] = f"{outs['valence'][r]:.6f}"
    if "vad" in outs:
        for j, d in enumerate(("valence", "arousal", "dominance")):
            row[f"{d}_true"] = "" if not np.isfinite(y["vad"][i, j]) else f"{y['vad'][i, j]:.6g}"
            row[d] = f"{outs['vad'][r, j]:.6f}"
    return row


class Run:
    """A trained run loaded from its directory (see :func:`load_run`).

    Attributes:
        path: the run directory. config: parsed ``config.json``. classes: class order (discrete
        tasks) or None. task: the task name. feature_specs: encoder specs with layers, as
        ``emo extract --encoder`` takes them (e.g. ``"hubert_large=TencentGameMate/chinese-hubert-large:16-21"``).
        inputs: one :class:`emo.fuse.training.inputs.FeatureInput` per encoder (``name``, ``modality``,
        ``layers``, ``dim``, ``frames`` (frame-level input: :meth:`predict` wants its frame
        sequences), ``spec``, ``provenance``).
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.classes: list[str] | None = config.get("classes")
        self.task: str = config["task"]
        self.feature_specs: list[str] = list(config["feature_specs"])
        try:
            self.inputs: list[FeatureInput] = as_inputs(config["inputs"])
        except (ValueError, TypeError) as e:
            raise RunError(f"{path / 'config.json'}: bad inputs entry ({e})") from None
        self._models: list[list] | None = None
        self._normalizers: list | None = None

    @property
    def frame_inputs(self) -> list[str]:
        """Encoders the run reads as frame sequences (trained with ``--frames``); extract them with ``frames=True``."""
        return [inp.name for inp in self.inputs if inp.frames]

    @property
    def n_folds(self) -> int:
        """Number of fold models in the run."""
        return len(self.config["folds"])

    def models(self) -> list[list]:
        """Per fold, its seed models (eval mode), loaded lazily from ``fold-K.safetensors``.

        Raises:
            RunError: a missing checkpoint or one whose tensors do not fit the config's model.
        """
        if self._models is None:
            from safetensors.torch import load_file

            from emo.fuse.model.multimodal import FusionModel

            self._models = []
            for entry in self.config["folds"]:
                p = self.path / entry["checkpoint"]
                if not p.is_file():
                    raise RunError(f"{p} is missing from the run directory")
                try:
                    tensors = load_file(str(p))
                except Exception as e:  # safetensors' own errors (truncated header, bad offsets)
                    raise RunError(f"{p}: not a readable safetensors checkpoint ({type(e).__name__}: {e})") from None
                bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
                if bad:
                    raise RunError(f"{p}: non-finite weights (NaN/inf) in {', '.join(bad[:3])}"
                                   f"{' and more' if len(bad) > 3 else ''}: the run cannot give finite predictions")
                fold = []
                for j in range(int(entry["seeds"])):
                    pre = f"s{j}."
                    sd = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
                    # runs written before afg_scores existed used the per-input AFG scores
                    m = FusionModel(**{"afg_scores": "per-input", **self.config["model"]})
                    try:
                        m.load_state_dict(sd)
                    except RuntimeError as e:
                        raise RunError(f"{p}: model {j} does not match the config ({e})") from None
                    m.eval()
                    fold.append(m)
                self._models.append(fold)
        return self._models

    def normalizer(self, k: int):
        """The :class:`emo.fuse.training.data.Normalizer` of fold ``k`` (global stats of that fold, shared speaker
        stats), built from the config once per run (not per :meth:`predict` call)."""
        if self._normalizers is None:
            from emo.fuse.training.data import Normalizer

            n = self.config["normalization"]
            speaker = Normalizer.from_dict({"mode": n["mode"], "speaker": n.get("speaker", {})}).speaker
            self._normalizers = []
            for entry in self.config["folds"]:
                norm = Normalizer.from_dict({"mode": n["mode"], **entry.get("normalization", {})})
                norm.speaker = speaker
                self._normalizers.append(norm)
        return self._normalizers[k]

    def predict(self, features: dict[str, Any], speakers: list[str | None] | None = None,
                folds: list[int] | None = None, speaker_stats: dict | None = None) -> dict[str, np.ndarray]:
        """Predict with the mean over fold models (and their seeds).

        Args:
            features: encoder name → float32 (N, L, D) in the run's layer order (``inputs[i]["layers"]``).
                For frame-level inputs (:attr:`frame_inputs`), under the key ``name`` or
                ``f"{name}/frames"``: a list of N arrays (T_i, D) (single-layer input) or (T_i, L, D)
                (frames of the run's layers, T_i may differ per sample and may be 0), or an
                :class:`emo.fuse.training.data.Frames`, as :func:`emo.fuse.training.data.read_frames` returns from a store.
            speakers: speaker per sample, for runs trained with ``--normalize speaker``: a speaker
                seen at training time uses its stored statistics; unknown speakers (and ``None``)
                fall back to each fold's global training statistics.
            folds: average only these fold models (default: all).
            speaker_stats: for ``--normalize speaker`` runs, per-speaker statistics of the scored
                clips themselves (``Normalizer("speaker").fit(...).speaker``: encoder -> speaker ->
                (mean, std)); they replace the training speakers' statistics (``emo score`` passes
                them, issue 23). Speakers without an entry use each fold's global statistics.

        Returns:
            ``{"probs": (N, C)}`` for discrete tasks, ``{"valence": (N,)}``, ``{"vad": (N, 3)}`` as the task has them (float32).

        Raises:
            RunError: missing encoder, wrong shape, or utterance vectors where the run needs frames (named).
        """
        from emo.fuse.training.minibatch import torch_inputs
        from emo.fuse.training.fit import average_outputs, predict_model

        blocks = input_blocks(self.path, self.inputs, features, self.feature_specs, "run")
        outs = []
        models = self.models()
        for k in (range(self.n_folds) if folds is None else folds):
            norm = self.normalizer(k)
            if speaker_stats is not None:
                import copy

                norm = copy.copy(norm)
                norm.speaker = speaker_stats
            xb = norm.transform(blocks, speakers)
            xs = torch_inputs(xb, self.inputs, "cpu")
            outs.append(average_outputs([predict_model(m, xs) for m in models[k]]))
        return average_outputs(outs)


def input_blocks(path: Path, inputs: list[FeatureInput], features: dict[str, Any], feature_specs: list[str],
                 kind: str = "run") -> dict[str, Any]:
    """The blocks of a run's (or decision ensemble's) ``inputs`` out of ``features``, checked.

    Args:
        inputs: the run's :class:`emo.fuse.training.inputs.FeatureInput` list. features: encoder name ->
            float32 (N, L, D) in the inputs' layer order; for a frame-level input, under
            ``f"{name}/frames"`` (preferred when present) or ``name``, a list of N arrays (T_i, D) or
            (T_i, L, D) (T_i may differ and may be 0) or an :class:`emo.fuse.training.data.Frames`.
        feature_specs: named in the error for a missing input. kind: ``run`` or ``ensemble`` (messages).

    Returns:
        name -> float32 (N, L, D) array or :class:`Frames` (lists converted).

    Raises:
        RunError: a missing input, utterance vectors where frames are needed, a wrong per-sample or
            per-frame shape, different numbers of samples (the run directory and input named).
    """
    from emo.fuse.training.data import FeatureError, Frames

    frame_inputs = [inp.name for inp in inputs if inp.frames]
    n = None
    blocks: dict[str, Any] = {}
    for inp in inputs:
        name, seq = inp.name, inp.frames
        x = features.get(f"{name}/frames") if seq and f"{name}/frames" in features else features.get(name)
        want = (len(inp.layers), inp.dim)
        if x is None:
            what = "frame sequences" if seq else "features"
            raise RunError(f"{path}: {what} for {name!r} missing (the {kind} needs {', '.join(feature_specs)}"
                           f"{'; frame-level: ' + ', '.join(frame_inputs) if frame_inputs else ''})")
        if seq:
            if isinstance(x, np.ndarray) and x.dtype != object:
                raise RunError(f"{path}: {name!r} is a frame-level input of this {kind} (trained with --frames): pass a list "
                               f"of (T_i, {want[1]}) or (T_i, {want[0]}, {want[1]}) arrays, or Frames, not an array of shape {x.shape}")
            if not isinstance(x, Frames):
                try:
                    x = Frames.from_list(list(x))
                except FeatureError as e:
                    raise RunError(f"{path}: frames of {name!r}: {e}") from None
            shape = (len(x), *x.frame_shape)
            if len(x) and tuple(shape[1:]) != want:
                raise RunError(f"{path}: frames of {name!r} are (T, {', '.join(map(str, shape[1:]))}) per sample, "
                               f"the {kind} needs (T, {want[0]}, {want[1]}) (layers {inp.layers})")
        else:
            x = np.asarray(x)
            shape = x.shape
            if x.ndim != 3 or tuple(x.shape[1:]) != want:
                raise RunError(f"{path}: features {name!r} have shape {x.shape}, the {kind} needs (N, {want[0]}, {want[1]}) "
                               f"(layers {inp.layers})")
        if n is not None and shape[0] != n:
            raise RunError(f"{path}: feature arrays have different numbers of samples")
        n = shape[0]
        blocks[name] = x
    return blocks


class EnsembleRun:
    """A decision ensemble of runs as one run directory: ``config.json`` (``kind``
    :data:`ENSEMBLE_KIND`) names member run directories inside it (``members/<k>-<id>/``, each a
    complete ``emo fuse train``-style run) and their weights; :meth:`predict` returns the weighted
    sum of the members' class posteriors, ``p = sum_i w_i p_i`` (the posterior-level fusion of
    ``emo fuse ensemble``, Wang et al., MER 2023). Written by ``emo fuse search`` for an ensemble
    of more than one member (:func:`write_ensemble_config`); ``emo score --run`` applies it like a run.

    Members may read frame sequences (runs trained with ``--frames``): a store is then frame-level
    for the whole ensemble (its input in :attr:`inputs` has ``frames`` true, and so must every
    member's input of that store; a store is read either as frames or as utterance vectors in one
    ensemble), and :meth:`predict` takes its frame sequences as :meth:`Run.predict` does.

    Attributes (as :class:`Run`):
        path, config, classes, task. inputs: per store one :class:`emo.fuse.training.inputs.FeatureInput`
        holding the union of the members' layers (what is extracted or read once; ``frames``: the
        store is read as frame sequences). feature_specs: their specs. members: the member
        :class:`Run` objects. weights: float (M,), summing to 1.

    Raises (on construction):
        RunError: a task other than discrete, a bad inputs entry, a member that is missing, another
            ensemble, of other task or classes, whose input is not among :attr:`inputs` (layers,
            dimension, weights_hash) or differs from it in being frame-level (naming the member
            directory and the input), weights that are not a distribution, differing normalisation modes.
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        cfg_path = path / "config.json"
        self.path = path
        self.config = config
        self.task: str = config["task"]
        self.classes: list[str] | None = config.get("classes")
        if self.task != "discrete":
            raise RunError(f"{cfg_path}: a decision ensemble of {self.task!r} runs is not supported (discrete only)")
        try:
            self.inputs: list[FeatureInput] = as_inputs(config["inputs"])
        except (ValueError, TypeError) as e:
            raise RunError(f"{cfg_path}: bad inputs entry ({e})") from None
        self.feature_specs: list[str] = list(config["feature_specs"])
        entries = config["members"]
        if not isinstance(entries, list) or not entries:
            raise RunError(f"{cfg_path}: 'members' must be a non-empty list")
        self.members: list[Run] = []
        for m in entries:
            rel = _member_dir(m.get("dir"), cfg_path)
            member = load_run(path / rel)
            if not isinstance(member, Run):
                raise RunError(f"{path / rel}: a member must be a single run, not another ensemble")
            if member.task != self.task or member.classes != self.classes:
                raise RunError(f"{path / rel}: task or classes differ from the ensemble's ({member.task}, {member.classes})")
            union = {inp.name: inp for inp in self.inputs}
            for inp in member.inputs:
                u = union.get(inp.name)
                if u is not None and bool(u.frames) != bool(inp.frames):
                    level = lambda f: "frame-level" if f else "utterance-level"  # noqa: E731
                    raise RunError(f"{path / rel}: input {inp.name} is {level(inp.frames)} in this member but {level(u.frames)} "
                                   f"in the ensemble ({cfg_path}): a store is read either as frames or as utterance vectors "
                                   "in one ensemble")
                if u is None or not set(inp.layers) <= set(u.layers) or u.dim != inp.dim \
                        or u.provenance.get("weights_hash") != inp.provenance.get("weights_hash"):
                    raise RunError(f"{path / rel}: input {inp.name} {inp.layers} is not among the ensemble's inputs "
                                   f"(layers, dimension and weights_hash must match {cfg_path})")
            self.members.append(member)
        w = np.asarray([float(m.get("weight", float("nan"))) for m in entries], dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-6):
            raise RunError(f"{cfg_path}: member weights must be finite, >= 0 and sum to 1, got {w.tolist()}")
        self.weights = w
        modes = {(m.config.get("normalization") or {}).get("mode") for m in self.members}
        if modes != {(config.get("normalization") or {}).get("mode")}:
            raise RunError(f"{cfg_path}: the members' normalisation modes {sorted(map(str, modes))} differ from the ensemble's")

    @property
    def frame_inputs(self) -> list[str]:
        """Stores the ensemble reads as frame sequences (its members trained with ``--frames`` on them);
        extract them with ``frames=True``."""
        return [inp.name for inp in self.inputs if inp.frames]

    @property
    def n_folds(self) -> int:
        """1: the members are applied together."""
        return 1

    def predict(self, features: dict[str, Any], speakers: list[str | None] | None = None,
                folds: list[int] | None = None, speaker_stats: dict | None = None) -> dict[str, np.ndarray]:
        """``{"probs": float32 (N, C)}`` = ``sum_i w_i p_i``, ``p_i`` the member's :meth:`Run.predict` on
        its own layers, cut out of ``features``.

        Args:
            features: encoder name -> float32 (N, L, D) in the layer order of :attr:`inputs`. For a
                frame-level input (:attr:`frame_inputs`), under ``f"{name}/frames"`` (preferred when
                present) or ``name``: a list of N arrays (T_i, D) (single-layer input) or (T_i, L, D)
                (T_i may differ per sample and may be 0), or an :class:`emo.fuse.training.data.Frames`
                (data (F, L, D)), in the layer order of :attr:`inputs`. Each member gets its own layers
                under the input's name (a :class:`Frames` sharing ``starts``/``lengths`` for frame inputs).
            speakers: speaker per sample, passed on to every member.
            folds: None or ``[0]`` (the ensemble is one fold).
            speaker_stats: ``{encoder: {speaker: (mean, std)}}`` over :attr:`inputs`' layers, each (L, D)
                (for a frame input, over the speaker's frames, as ``Normalizer("speaker").fit`` computes
                them for a :class:`Frames` block); cut to each member's layers the same way and passed on.

        Raises:
            RunError: ``folds`` other than None or ``[0]``; a missing encoder, a wrong shape (per sample,
                or per frame for a frame input), utterance vectors where the ensemble needs frames,
                different numbers of samples (named); the members' own errors.
        """
        from emo.fuse.training.data import Frames

        if folds not in (None, [0]):
            raise RunError(f"{self.path}: a decision ensemble has one fold (0), not {folds}")
        arrays = input_blocks(self.path, self.inputs, features, self.feature_specs, "ensemble")
        union = {inp.name: inp.layers for inp in self.inputs}

        def cut(x, i):  # the member's layers i of a union block: (N, L, D) array or Frames (F, L, D)
            return Frames(x.data[:, i], x.starts, x.lengths) if isinstance(x, Frames) else x[:, i]

        total = None
        for w, member in zip(self.weights, self.members):
            idx = {inp.name: [union[inp.name].index(k) for k in inp.layers] for inp in member.inputs}
            feats = {n: cut(arrays[n], i) for n, i in idx.items()}
            # per-speaker (mean, std), each (L, D) over the union's layers (per frame for frame inputs): the same cut
            stats = None if speaker_stats is None else {
                n: {spk: (mean[i], std[i]) for spk, (mean, std) in speaker_stats.get(n, {}).items()} for n, i in idx.items()}
            p = np.asarray(member.predict(feats, speakers=speakers, speaker_stats=stats)["probs"], dtype=np.float64)
            total = w * p if total is None else total + w * p
        return {"probs": total.astype(np.float32)}


def write_ensemble_config(out: str | Path, members: list[tuple[str, float]], inputs: list[FeatureInput],
                          extra: dict[str, Any]) -> Path:
    """Write ``out/config.json`` of a decision-ensemble run (:class:`EnsembleRun`) whose member run
    directories are already under ``out``.

    Args:
        members: (directory relative to ``out``, weight) per member; weights sum to 1.
        inputs: per store the union of the members' layers (the order the scored features come in);
            ``frames`` true for a store the members read as frame sequences (all of them, or none).
        extra: further keys (``command``, ``dataset``, ``search``...).

    Raises:
        RunError: the written directory does not load (:func:`load_run`): a member missing, layers
            outside ``inputs``, a member input whose ``frames`` flag differs from its ``inputs`` entry,
            weights not summing to 1.
    """
    from emo import fsio

    out = Path(out)
    first = read_config(out / _member_dir(members[0][0], out / "config.json") / "config.json")
    config = {**extra, "kind": ENSEMBLE_KIND, "task": first["task"], "classes": first.get("classes"),
              "feature_specs": [inp.spec or inp.name for inp in inputs], "inputs": [inp.to_dict() for inp in inputs],
              "normalization": {"mode": (first.get("normalization") or {}).get("mode", "none")},
              "members": [{"dir": d, "weight": float(w)} for d, w in members],
              "fuse": "p = sum_i w_i p_i over the members' class posteriors", "emo_version": __version__,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    EnsembleRun(out, config)  # the directory loads with this config: checked before it is written
    write_json(out / "config.json", fsio.seal_json(config))
    return out / "config.json"


def _member_dir(d: Any, cfg_path: Path) -> Path:
    """A member directory of an ensemble run: a relative path inside the run directory.

    Raises:
        RunError: absolute, empty, or leaving the run directory (``..``), naming ``cfg_path``.
    """
    rel = Path(str(d or ""))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise RunError(f"{cfg_path}: member directory {d!r} must be a path inside the run directory")
    return rel


def read_config(cfg_path: str | Path, kind: str = "run configuration") -> dict[str, Any]:
    """Read a run's ``config.json`` and verify its content SHA-256 (:func:`emo.fsio.seal_json`, written by
    emo since issue 25; an older run without it is read unverified).

    Raises:
        RunError: invalid JSON, not an object, or content that differs from the recorded SHA-256 (an edit
            such as a shortened ``classes`` list would otherwise give a malformed predictions CSV), naming the file.
    """
    from emo import fsio

    try:
        return fsio.read_sealed_json(cfg_path, kind)
    except fsio.ChecksumError as e:
        raise RunError(f"{e}; retrain the run (emo never guesses which value was changed)") from None


def load_run(run_dir: str | Path) -> Run | EnsembleRun:
    """Open a run directory written by ``emo fuse train`` (or a decision-ensemble run of ``emo fuse
    search``: :class:`EnsembleRun`, same interface for prediction).

    Raises:
        RunError: an unfinished temporary directory, a run directory missing after a killed replacement
            (the message names the previous run beside it), no ``config.json``, one that is not valid JSON
            or lacks required keys, a missing checkpoint or one whose SHA-256 differs from the
            recorded one (corrupt bytes, or a fold file of another run).
    """
    from emo.fuse.eval.runcheck import RunDirError, check_run_dir

    path = Path(run_dir)
    if not path.exists():
        # emo.fsio.atomic_dir without an atomic exchange (renameat2 unsupported by the file system)
        # moves the previous run to .<name>.old-* before renaming the new one in: a kill between the
        # two renames leaves no run here but the previous one, complete, beside it
        olds = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        if olds:
            raise RunError(f"{path} not found; `emo fuse train` was killed while replacing it, the previous run "
                           f"is complete at {olds[-1]} (rename it back to use it)")
    try:
        check_run_dir(path)  # an unfinished temporary of a killed `emo fuse train` is refused
    except RunDirError as e:
        raise RunError(str(e)) from None
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunError(f"{cfg_path} not found: not an emo run directory")
    config = read_config(cfg_path)
    if config.get("kind") == ENSEMBLE_KIND:
        missing = [k for k in ("task", "feature_specs", "inputs", "members", "normalization") if k not in config]
        if missing:
            raise RunError(f"{cfg_path}: missing key(s) {', '.join(missing)}")
        return EnsembleRun(path, config)
    missing = [k for k in ("task", "feature_specs", "inputs", "model", "folds", "normalization") if k not in config]
    if missing:
        raise RunError(f"{cfg_path}: missing key(s) {', '.join(missing)}")
    if config.get("kind") == "multitask":
        raise RunError(f"{cfg_path}: a multi-task run (--task {config['task']}); loading it for prediction and scoring "
                       "is not supported yet (its predictions.csv holds every task's out-of-fold predictions)")
    from emo.fuse.eval.runcheck import RunDirError, verify_checkpoints

    try:
        verify_checkpoints(path, config)  # every checkpoint present, with the SHA-256 recorded at training
    except RunDirError as e:
        raise RunError(str(e)) from None
    return Run(path, config)
