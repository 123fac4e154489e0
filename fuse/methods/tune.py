"""``emo tune hlft``: HLFT adapters per fold from a cached layer prefix, into a run directory.

Input: a feature store holding the *frame-level* hidden state entering the first adapted layer
(``emo extract --encoder hubert_large:15 --frames`` for the window 16–21; for text encoders with
``special_tokens=True``, so that [CLS]/[SEP] are in the cached sequence as they are in the
model's attention), and the dataset manifest next to it. The encoder weights are loaded from the
store's recorded ``source`` (or ``--source``) and must hash to the store's ``weights_hash``: a
prefix from one checkpoint is never continued by another.

Output (``--out``)::

    config.json            command, dataset, classes, encoder provenance (store attributes), the
                           prefix store (path, SHA-256, layer, frames), window, HLFT settings,
                           protocol, and per fold: sizes, held-out (evaluation) sample names,
                           adapter file and its SHA-256
    fold-K.safetensors     adapters (``adapters.<layer>.*``) + head (``head.*``) of fold K
    metrics.json           per-fold WAF/UAR/accuracy, mean ± std, pooled out-of-fold
    predictions.csv        out-of-fold predictions (name, fold, label, prediction, probabilities)

Folds come from :mod:`emo.fuse.eval.protocols` exactly as ``emo fuse train`` builds them (same seed,
same folds): stratified k-fold, leave-one-speaker-out, or the source's split.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from emo import fsio
from emo.fuse.methods.hlft import HLFTConfig
from emo.fuse.eval.protocols import Fold

#: Run-directory marker in config.json.
RUN_KIND = "hlft"


class TuneError(ValueError):
    """Unusable input for ``emo tune hlft`` (missing prefix, mismatched weights, bad task); the message says what to run."""


def build_folds(protocol: str, y: np.ndarray, speakers: list[str | None], splits: list[str | None], seed: int,
                test_splits: list[str] | None = None) -> list[Fold]:
    """Folds over N labelled rows for ``--folds`` = ``K``, ``speaker`` or ``split`` (rows index ``y``),
    from :mod:`emo.fuse.eval.protocols` with the same arguments ``emo fuse train`` passes.

    Raises:
        emo.fuse.eval.protocols.ProtocolError: unusable protocol for the data (named).
    """
    from emo.fuse.eval.protocols import (
        ProtocolError,
        leave_one_speaker_out,
        predefined_split,
        stratified_kfold,
    )

    if protocol == "speaker":
        return leave_one_speaker_out(speakers, seed)
    if protocol == "split":
        return predefined_split(splits, y, test_splits or ["test"], seed)
    try:
        k = int(protocol)
    except ValueError:
        raise ProtocolError(f"--folds must be a number of folds, 'speaker' or 'split', not {protocol!r}") from None
    return stratified_kfold(y, k, seed, n=len(y))


def _atomic_text(path: Path, text: str) -> None:
    if path.is_symlink():
        raise TuneError(f"refusing to write {path}: it is a symbolic link")
    fsio.write_text(path, text)


def tune_hlft(features_dir: str | Path, dataset: str, encoder: str, layers: str = "16-21", protocol: str = "5",
              out: str | Path | None = None, cfg: HLFTConfig | None = None, prefix_store: str | Path | None = None,
              source: str | None = None, task: str = "discrete", test_splits: list[str] | None = None,
              command: list[str] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train one HLFT adapter set per fold on the cached prefix and write the run directory.

    Args:
        features_dir: the ``--out`` of ``emo extract`` (holds ``<dataset>/samples.csv`` and the stores).
        dataset, encoder: dataset name and encoder (store) name, e.g. ``mer2024``, ``hubert_large``.
        layers: the adapter window ``A-B`` (1-based transformer layers, inclusive; default 16-21).
        protocol: ``"5"`` (stratified k-fold), ``"speaker"`` or ``"split"``.
        out: run directory (``None``: nothing written).
        cfg: :class:`emo.fuse.methods.hlft.HLFTConfig` (the paper's recipe by default).
        prefix_store: store with the frame-level hidden state ``A-1`` (default
            ``<features_dir>/<dataset>/<encoder>.h5``).
        source: checkpoint (hub id / directory) to load; default: the store's recorded source.
        task: only ``discrete`` (eq. 2 is a classification loss).

    Returns:
        ``{"config": ..., "metrics": ...}`` (what config.json and metrics.json hold).

    Raises:
        TuneError: a task other than discrete, a store without the prefix frames, a text prefix
            without special tokens, weights that do not match the store, too few labelled samples.
    """
    from emo.extract.adapters import (
        AdaptedWindow,
        load_encoder_model,
        parse_window,
    )
    from emo.extract.datasets.base import read_manifest
    from emo.extract.encoders.base import hash_weights
    from emo.extract.store import FeatureStore, store_path
    from emo.fuse.methods.hlft import train_hlft_cv

    cfg = cfg or HLFTConfig()
    cfg.validate()
    if task != "discrete":
        raise TuneError(f"emo tune hlft trains a classifier (Zhao et al., MRAC '24, eq. 2): --task must be discrete, not {task!r}")
    first, last = parse_window(layers, 10 ** 6)
    key = str(first - 1)
    path = Path(prefix_store) if prefix_store else store_path(features_dir, dataset, encoder)
    hint = (f"extract it with: emo extract --dataset {dataset} --root ... --encoder {encoder}:{key} --frames "
            f"--out {features_dir}")
    if not path.is_file():
        raise TuneError(f"prefix store {path} not found; {hint}")
    store = FeatureStore(path)
    if not store.has_frames or key not in store.layers:
        raise TuneError(f"{path} has no frame-level hidden state {key} (the input of layer {first}); stored layers "
                        f"{store.layers}, frames={store.has_frames}; {hint}")
    attrs = store.attrs
    if attrs.get("modality") == "text" and not attrs.get("special_tokens"):
        raise TuneError(f"{path}: a text prefix must include the special tokens ([CLS]/[SEP] take part in attention); "
                        f"extract it with the encoder option special_tokens=True")
    src = source or attrs.get("source")
    if not src:
        raise TuneError(f"{path} records no model source; pass --source")
    want, got = attrs.get("weights_hash") or "", hash_weights(src)
    if want and got and want != got:
        raise TuneError(f"weights of {src} (hash {got}) differ from those that computed {path} (hash {want}); "
                        "the prefix and the adapted layers must come from one checkpoint")
    meta, samples = read_manifest(Path(features_dir) / dataset)
    classes = meta.get("classes") or []
    if len(classes) < 2:
        raise TuneError(f"dataset {dataset}: the manifest has no class list; HLFT needs discrete labels")
    index = {c: i for i, c in enumerate(classes)}
    in_store = set(store.names)
    rows = [s for s in samples if s.name in in_store and s.discrete in index]
    if len(rows) < 4:
        raise TuneError(f"only {len(rows)} labelled samples in {path}; HLFT needs more")
    names = [s.name for s in rows]
    y = np.array([index[s.discrete] for s in rows], dtype=np.int64)
    folds = build_folds(protocol, y, [s.speaker for s in rows], [s.split for s in rows], cfg.seed, test_splits)
    if progress:
        progress(f"{len(names)} labelled samples, {len(folds)} folds, prefix {path} layer {key}")
    seqs = store.read_frames(key, names, dtype=np.float16)
    empty = [names[i] for i, s in enumerate(seqs) if len(s) == 0]
    if empty:
        raise TuneError(f"{path}: {len(empty)} sample(s) have no frames (e.g. {empty[0]!r}: no text / no audio); "
                        "exclude them from the dataset")
    model = load_encoder_model(src)
    window = AdaptedWindow(model, first, last)
    prefix_sha = fsio.sha256_file(path)
    provenance = {k: attrs.get(k) for k in ("encoder", "source", "weights_hash", "model_type", "modality", "pooling",
                                            "sample_rate", "normalize", "special_tokens", "tokenizer", "max_tokens")
                  if attrs.get(k) is not None}
    outdir = None
    if out is not None:
        outdir = Path(out)
        outdir.mkdir(parents=True, exist_ok=True)
    res = train_hlft_cv(window, seqs, y, folds, len(classes), cfg, out_dir=outdir,
                        provenance={"encoder": provenance, "prefix_store_sha256": prefix_sha}, progress=progress)
    fold_rows = []
    for fold, row in zip(folds, res["folds"]):
        fold_rows.append({**fold.as_dict(), "test_names": [names[i] for i in fold.test],
                          "adapter_file": Path(row["adapter_file"]).name if row["adapter_file"] else None,
                          "sha256": row["sha256"], "best_epoch": row["best_epoch"], "epochs": row["epochs"]})
    config = {
        "kind": RUN_KIND, "command": command, "dataset": dataset, "features_dir": str(features_dir),
        "classes": classes, "task": task, "encoder": {"name": encoder, **provenance, "loaded_from": src},
        "prefix_store": {"path": str(path), "sha256": prefix_sha, "layer": key, "dtype": attrs.get("dtype"),
                         "frames": int(sum(len(s) for s in seqs))},
        "window": {"first": first, "last": last, "layers": window.layer_keys, "adapter_dim": window.bottleneck,
                   "placement": "after the feed-forward sub-layer, before the residual add and layer norm"},
        "hlft": asdict(cfg),
        "protocol": {"folds": protocol, "seed": cfg.seed, "test_splits": test_splits, "n_labelled": len(names)},
        "folds": fold_rows,
    }
    metrics = {"folds": [{"name": r["name"], "n_test": r["n_test"], "metrics": r["metrics"], "best_epoch": r["best_epoch"],
                          "epochs": r["epochs"], "seconds": r["seconds"], "history": r["history"]} for r in res["folds"]],
               "summary": res["summary"], "pooled": res["pooled"]}
    if outdir is not None:
        _atomic_text(outdir / "config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        _atomic_text(outdir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        fold_of = np.full(len(names), -1)
        for k, f in enumerate(folds):
            fold_of[f.test] = k
        with fsio.atomic_open(outdir / "predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "fold", "label", "prediction", *[f"p_{c}" for c in classes]])
            for i, n in enumerate(names):
                if fold_of[i] < 0:
                    continue
                p = res["oof_probs"][i]
                w.writerow([n, fold_of[i], classes[y[i]], classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    return {"config": config, "metrics": metrics}


def results_table(metrics: dict[str, Any]) -> str:
    """Plain-text table like ``emo fuse train``'s: one row per fold, mean ± std, pooled."""
    keys = ("waf", "uar", "accuracy")
    w = max([len(r["name"]) for r in metrics["folds"]] + [10])
    lines = [f"{'fold':<{w}}  {'n':>5}  " + "  ".join(f"{k:>13}" for k in keys)]
    for r in metrics["folds"]:
        lines.append(f"{r['name']:<{w}}  {r['n_test']:>5}  " + "  ".join(f"{r['metrics'][k]:>13.4f}" for k in keys))
    s = metrics["summary"]
    lines.append(f"{'mean ± std':<{w}}  {'':>5}  " + "  ".join(f"{s['mean'][k]:>6.4f}±{s['std'][k]:.4f}" for k in keys))
    lines.append(f"{'pooled':<{w}}  {'':>5}  " + "  ".join(f"{metrics['pooled'][k]:>13.4f}" for k in keys))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Per-fold HLFT feature stores (``emo extract --adapters RUN``) for ``emo fuse train``
# ---------------------------------------------------------------------------


def fold_stores(features_dir: str | Path, dataset: str, name: str) -> list[Path]:
    """Per-fold stores ``<name>.fold0.h5``, ``<name>.fold1.h5``, ... of a feature name, in fold order
    (``[]`` when there are none). Raises :class:`TuneError` on a gap in the fold numbers."""
    import re

    d = Path(features_dir) / dataset
    pat = re.compile(re.escape(name) + r"\.fold(\d+)\.h5$")
    found = {int(m.group(1)): p for p in d.glob(f"{name}.fold*.h5") if (m := pat.match(p.name))}
    if not found:
        return []
    if sorted(found) != list(range(len(found))):
        raise TuneError(f"{d}: per-fold stores of {name} have folds {sorted(found)}; expected 0..{len(found) - 1}")
    return [found[k] for k in range(len(found))]


def check_fold_store(attrs: dict[str, Any], path: str | Path, k: int, test_names: list[str]) -> None:
    """Refuse fold ``k``'s features unless the adapters that computed them held out exactly the
    samples fold ``k`` evaluates on (their names' SHA-256 is in the store's provenance).

    Raises:
        TuneError: not fold ``k``'s store, or a different held-out set (fold counts or seeds differ
            between ``emo tune hlft`` and ``emo fuse train``, or another dataset subset).
    """
    from emo.extract.adapters import names_digest

    if attrs.get("hlft_fold") != k:
        raise TuneError(f"{path}: store is for fold {attrs.get('hlft_fold')!r}, needed for fold {k}")
    if attrs.get("hlft_held_out_sha256") != names_digest(test_names):
        raise TuneError(
            f"{path}: the adapters of fold {k} held out {attrs.get('hlft_held_out_n')} sample(s), but this run's fold {k} "
            f"evaluates on {len(test_names)} other or different ones: some evaluation features would come from adapters "
            "trained on them. Use the same --folds and --seed as `emo tune hlft` (and the same samples).")


def train_cv_fold_stores(blocks: dict[str, Any], fold_features: dict[str, list[Path]], layers: dict[str, list[str]] | None,
                         names: list[str], inputs: list, y: dict[str, np.ndarray], folds: list[Fold], cfg: Any,
                         n_classes: int = 0, speakers: list | None = None, test_idx: np.ndarray | None = None,
                         progress: Callable[[str], None] | None = None):
    """``emo fuse train`` with per-fold HLFT features: fold K reads the features of every name in
    ``fold_features`` from that name's fold-K store (computed by the adapters that held out exactly
    fold K's evaluation samples, checked by :func:`check_fold_store`), then trains like
    :func:`emo.fuse.training.train.train_cv` on that one fold; the folds' results are merged into one
    :class:`emo.fuse.training.train.CVResult` (pooled metrics over all out-of-fold predictions; on a held-out
    test set, the average over all fold models, each fold's features from its own adapters).

    Args:
        blocks: encoder name → (N, L, D) features of the other inputs (the per-fold names may hold
            any stand-in of the right shape; they are replaced per fold).
        fold_features: per-fold name → its stores in fold order (:func:`fold_stores`).
        layers: per-fold name → the layer keys to read (``None``: those of its entry in ``inputs``).
        names: the N sample names (rows of ``blocks``).
        Other arguments: as :func:`emo.fuse.training.train.train_cv`.

    Raises:
        TuneError: a store count that differs from the fold count, or a fold whose evaluation samples
            are not the adapters' held-out samples.
    """
    from emo.extract.store import FeatureStore
    from emo.fuse.eval.cv import CVResult, train_cv
    from emo.fuse.eval.metrics import evaluate, summarize

    if layers is None:
        layers = {inp["name"]: list(inp["layers"]) for inp in inputs if inp["name"] in fold_features}
    for name, paths in fold_features.items():
        if len(paths) != len(folds):
            raise TuneError(f"{name}: {len(paths)} per-fold stores but this run has {len(folds)} folds; "
                            "use the same --folds as `emo tune hlft`")
    parts = []
    for k, fold in enumerate(folds):
        bk = dict(blocks)
        test_names = [names[i] for i in fold.test]
        for name, paths in fold_features.items():
            st = FeatureStore(paths[k])
            check_fold_store(st.attrs, paths[k], k, test_names)
            bk[name] = st.read(layers[name], names)
        r = train_cv(bk, inputs, y, [fold], cfg, n_classes, speakers, test_idx, progress)
        r.folds[0]["feature_stores"] = {name: str(paths[k]) for name, paths in fold_features.items()}
        parts.append(r)
    oof: dict[str, np.ndarray] = {}
    for key in parts[0].oof:
        oof[key] = np.concatenate([p.oof[key] if key != "fold" else np.full(len(p.oof["index"]), k)
                                   for k, p in enumerate(parts)])
    rows = oof["index"]
    needed = {k: v[rows] for k, v in y.items() if k in ("discrete", "valence", "vad")}
    pooled = evaluate({k: oof[k] for k in ("probs", "valence", "vad") if k in oof}, needed, n_classes)
    test = None
    if parts[0].test is not None:
        outs = {k: np.mean([p.test[k] for p in parts], axis=0).astype(np.float32)
                for k in parts[0].test if k not in ("index", "metrics")}
        test = {"index": parts[0].test["index"], **outs}
        if "metrics" in parts[0].test:
            test["metrics"] = evaluate(outs, {k: y[k][test["index"]] for k in needed}, n_classes)
    fold_rows = [p.folds[0] for p in parts]
    return CVResult(fold_rows, summarize([r["metrics"] for r in fold_rows]), pooled, oof, test,
                    [p.states[0] for p in parts], [p.normalizers[0] for p in parts],
                    [d for p in parts for d in p.diagnostics])


def find_fold_stores(features_dir: str | Path, dataset: str, specs: list[str]) -> dict[str, list[Path]]:
    """The ``--features`` specs of ``emo fuse train`` that name per-fold HLFT stores (``emo extract
    --adapters RUN``), told by the store layout: ``<name>.h5`` is absent and ``<name>.fold0.h5``,
    ``<name>.fold1.h5``, ... exist. One ``stat`` per spec when every store exists (the ordinary
    run); the folder is listed only for a missing store.

    Returns:
        name -> its per-fold stores in fold order (:func:`fold_stores`); empty for ordinary stores.

    Raises:
        TuneError: a gap in a name's fold numbers.
    """
    from emo.extract.spec import parse_spec
    from emo.extract.store import store_path

    found = {}
    for text in specs:
        name = parse_spec(str(text)).name
        if not store_path(features_dir, dataset, name).exists() and (paths := fold_stores(features_dir, dataset, name)):
            found[name] = paths
    return found


def load_fold_store_features(features_dir: str | Path, dataset: str, specs: list[str], found: dict[str, list[Path]],
                             align: str = "strict", frames: bool = False) -> Any:
    """:func:`emo.fuse.training.data.load_features` of a run with per-fold HLFT stores ``found``
    (:func:`find_fold_stores`): each such spec loads fold 0's store as the stand-in (same layers and
    dimension; fold k's features replace it in :func:`train_cv_fold_stores`), and the loaded input
    gets its own name back with the per-fold stores in its provenance (:func:`rename_fold_inputs`)."""
    from emo.extract.spec import parse_spec
    from emo.fuse.training.data import load_features

    texts = []
    for text in specs:
        name = parse_spec(str(text)).name
        texts.append(str(text).replace(name, found[name][0].stem, 1) if name in found else text)
    fs = load_features(features_dir, dataset, texts, align, frames=frames)
    rename_fold_inputs(fs, found)
    return fs


def rename_fold_inputs(fs: Any, fold_features: dict[str, list[Path]]) -> None:
    """Give the stand-in inputs of :func:`load_fold_store_features` their own name back (blocks and inputs
    of a :class:`emo.fuse.training.data.FeatureSet`, in place) and record the per-fold stores in the provenance."""
    stand_in = {paths[0].stem: name for name, paths in fold_features.items()}
    for inp in fs.inputs:
        if inp.name in stand_in:
            name = stand_in[inp.name]
            fs.blocks[name] = fs.blocks.pop(inp.name)
            inp.spec = (inp.spec or name).replace(inp.name, name, 1)
            from emo.extract.store import FeatureStore

            a0 = FeatureStore(fold_features[name][0]).attrs
            keep = {k: a0[k] for k in ("hlft_base_encoder", "hlft_window", "hlft_adapter_dim", "source", "modality",
                                       "special_tokens", "normalize") if k in a0}
            inp.provenance = {**inp.provenance, **keep, "encoder": name,
                              "hlft_fold_stores": [str(p) for p in fold_features[name]],
                              "hlft_fold_adapters": [_fold_adapter(p) for p in fold_features[name]]}
            inp.name = name


def _fold_adapter(path: Path) -> dict[str, Any]:
    from emo.extract.store import FeatureStore

    a = FeatureStore(path).attrs
    return {"file": a.get("hlft_adapters"), "sha256": a.get("hlft_adapters_sha256"), "fold": a.get("hlft_fold")}


def hlft_inputs(inputs: list) -> dict[str, Any]:
    """The inputs of a trained run that were per-fold HLFT features: name → input (its provenance has
    ``hlft_fold_adapters``)."""
    return {inp["name"]: inp for inp in inputs if (inp.get("provenance") or {}).get("hlft_fold_adapters")}


def hlft_score_encoders(inp: Any, device: str = "cpu", **options: Any) -> list:
    """For ``emo score`` with a run trained on per-fold HLFT features: the base encoder of ``inp`` (its
    recorded ``hlft_base_encoder``, ``source`` and layers) once per fold, each with that fold's adapter set
    (checked against the recorded SHA-256), named ``<base>+hlft.fold<K>`` (:func:`emo.extract.adapters.adapt_encoder`).

    Raises:
        TuneError: an adapter file that is missing or changed since training.
    """
    from emo.extract.adapters import adapt_encoder
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.spec import format_spec

    prov = inp["provenance"]
    spec = parse_encoder_spec(format_spec(prov["hlft_base_encoder"], prov.get("source") or None, list(inp["layers"])))
    out = []
    for fa in prov["hlft_fold_adapters"]:
        f = Path(fa["file"] or "")
        if not f.is_file() or fsio.sha256_file(f) != fa["sha256"]:
            raise TuneError(f"{inp['name']}: adapter file {f} of fold {fa['fold']} is {'missing' if not f.is_file() else 'changed'} "
                            "since training (SHA-256 recorded in the run)")
        opts = dict(options)
        if prov.get("modality") == "text" and "special_tokens" in prov:
            opts["special_tokens"] = bool(prov["special_tokens"])
        enc = spec.build(device=device, **opts)
        adapt_encoder(enc, f, fold=int(fa["fold"]))
        out.append(enc)
    return out
