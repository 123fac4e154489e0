"""CLIPL-A: contrastive alignment of visual features to acoustic features (Zhao, Chen, Li, Jiang,
Xie, "Improving Multimodal Emotion Recognition by Leveraging Acoustic Adaptation and Visual
Alignment", MRAC '24, the MER 2024-SEMI paper, visual alignment, eq. 5–7).

* eq. 5, the vision MLP: ``f_v = ReLU(W_1 ReLU(W_2 f̂_v + b_1) + b_2)`` mapping a stored visual
  feature (d_v) into the space of a stored audio feature (d_a → d_a), :class:`VisionMLP`;
* eq. 6–7, a symmetric InfoNCE over the batch (the CLIP / ALBEF image–text contrastive form) with
  cosine similarity and a learnable temperature, log-parameterised (initial τ = 0.07) and
  clamped as CLIP does (logit scale 1/τ ≤ 100), :func:`info_nce`;
* only the MLP and τ train (the audio features are fixed); batch 1024, lr 1e-4 (paper). Labels are
  never read: every clip with both features is used, labelled or not.

Choices where the paper is silent (stated so): both sides are standardised with the mean/std of
the training clips (raw features such as eGeMAPS span many scales); clips whose visual or audio
vector is all zeros (``no_face``/``silent`` placeholders) are left out; Adam; a fixed number of
epochs (default 100) with no early stopping; the held-out 10 % of clips (seeded) is used only for
the retrieval report (audio↔video Recall@1/5/10 and median rank vs chance), where "before" is
the same MLP at its random initialisation (raw features of different sizes cannot be compared).

:func:`write_aligned_store` writes ``f_v`` of every clip with the visual feature as a derived
feature store ``<source>+clipla.h5`` whose provenance names the source and target stores (path,
weights hash, file SHA-256) and the MLP file (SHA-256), usable by ``emo fuse train`` like any store.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emo import fsio

#: CLIP's initial temperature and the largest logit scale it allows (Radford et al. 2021).
INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0

MLP_FILE = "clipla.safetensors"
CONFIG_FILE = "align.json"
#: The ``kind`` an ``align.json`` records beside its content SHA-256 (:func:`emo.fsio.seal_json`): another
#: sealed emo file copied over it (a run's ``config.json``) is refused by its kind.
KIND = "clipla-alignment"


class AlignError(ValueError):
    """Unusable alignment input or run directory (named)."""


class VisionMLP(nn.Module):
    """CLIPL-A eq. 5: ``f_v = ReLU(W_1 ReLU(W_2 f̂_v + b_1) + b_2)``, W_2: d_v → d_a, W_1: d_a → d_a.

    forward(x: float (B, d_v)) → float (B, d_a), non-negative (the final ReLU of eq. 5).
    """

    def __init__(self, d_v: int, d_a: int) -> None:
        super().__init__()
        self.w2 = nn.Linear(d_v, d_a)
        self.w1 = nn.Linear(d_a, d_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.w1(torch.relu(self.w2(x))))


class CLIPLA(nn.Module):
    """:class:`VisionMLP` plus CLIP's learnable log logit scale ``log(1/τ)`` (init τ = 0.07)."""

    def __init__(self, d_v: int, d_a: int) -> None:
        super().__init__()
        self.mlp = VisionMLP(d_v, d_a)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))

    def logit_scale(self) -> torch.Tensor:
        """``exp(log_scale)`` clamped to [1, 100] (CLIP clamps the log scale to [0, ln 100])."""
        return self.log_scale.clamp(0.0, math.log(MAX_LOGIT_SCALE)).exp()


def info_nce(v: torch.Tensor, a: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIPL-A eq. 6–7: symmetric InfoNCE with cosine similarity.

    ``S_ij = s · cos(v_i, a_j)``; ``L = ½ [CE(S, I) + CE(Sᵀ, I)]`` where CE(·, I) is the mean
    cross-entropy of each row against its own column (clip i's video ↔ clip i's audio).

    Args:
        v: float (B, D) aligned visual features; a: float (B, D) audio features (same clips, same order).
        logit_scale: s = 1/τ (scalar tensor or float).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: shapes differ or B < 1.
    """
    if v.shape != a.shape or v.ndim != 2 or v.shape[0] < 1:
        raise ValueError(f"info_nce: v {tuple(v.shape)} and a {tuple(a.shape)} must both be (B >= 1, D)")
    s = logit_scale * nn.functional.normalize(v, dim=-1) @ nn.functional.normalize(a, dim=-1).T
    target = torch.arange(v.shape[0], device=v.device)
    return 0.5 * (nn.functional.cross_entropy(s, target) + nn.functional.cross_entropy(s.T, target))


def retrieval_metrics(v: np.ndarray, a: np.ndarray) -> dict[str, Any]:
    """Cross-modal retrieval by cosine similarity, clip i's audio ↔ clip i's video.

    Args:
        v, a: float (N, D) embeddings in the same clip order.

    Returns:
        ``{"n", "audio_to_video": {"R@1", "R@5", "R@10", "median_rank"}, "video_to_audio": {...},
        "chance": {"R@1", "R@5", "R@10", "median_rank"}}``; ranks are 1-based; chance Recall@k is
        min(k, N)/N and the chance median rank (N + 1)/2.
    """
    v = np.asarray(v, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if v.shape != a.shape or v.ndim != 2 or len(v) == 0:
        raise AlignError(f"retrieval needs two (N, D) arrays of the same shape, got {v.shape} and {a.shape}")
    vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    sim = an @ vn.T  # rows: audio queries, columns: videos
    n = len(v)

    def ranks(s: np.ndarray) -> np.ndarray:
        true = s[np.arange(n), np.arange(n)]
        return 1 + (s > true[:, None]).sum(axis=1)  # ties count in the query's favour

    out: dict[str, Any] = {"n": n}
    for name, s in (("audio_to_video", sim), ("video_to_audio", sim.T)):
        r = ranks(s)
        out[name] = {**{f"R@{k}": float(np.mean(r <= k)) for k in (1, 5, 10)}, "median_rank": float(np.median(r))}
    out["chance"] = {**{f"R@{k}": min(k, n) / n for k in (1, 5, 10)}, "median_rank": (n + 1) / 2}
    return out


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = x.std(axis=0, dtype=np.float64).astype(np.float32)
    std[std < 1e-6] = 1.0
    return mean, std


def train_alignment(video: np.ndarray, audio: np.ndarray, *, epochs: int = 100, batch_size: int = 1024, lr: float = 1e-4,
                    holdout: float = 0.1, seed: int = 0, device: str = "cpu",
                    holdout_rows: np.ndarray | None = None) -> tuple[CLIPLA, dict[str, Any]]:
    """Train CLIPL-A on paired clip features; report retrieval on a held-out part.

    Args:
        video: float (N, d_v) visual features; audio: float (N, d_a) audio features, same clips.
        epochs, batch_size, lr: optimisation (paper: batch 1024, lr 1e-4; Adam).
        holdout: fraction of clips (seeded permutation, at least 2 when N allows) kept out of
            training for the retrieval report.
        seed: permutation, initialisation and batch order.
        holdout_rows: explicit held-out rows (e.g. one fold of a cross-validated retrieval
            report); overrides ``holdout``.

    Returns:
        (model, info): info holds ``n_train``, ``n_holdout``, ``holdout_index`` (rows), the
        standardisation ``stats``, ``loss`` per epoch (first, last), the final ``temperature``
        and ``retrieval`` ``{"before", "after"}`` on the held-out clips (and on the training clips).

    Raises:
        AlignError: fewer than 4 clips, shapes that differ, non-finite values.
    """
    video = np.asarray(video, dtype=np.float32)
    audio = np.asarray(audio, dtype=np.float32)
    if video.ndim != 2 or audio.ndim != 2 or len(video) != len(audio):
        raise AlignError(f"video {video.shape} and audio {audio.shape} must be (N, d) arrays over the same N clips")
    if len(video) < 4:
        raise AlignError(f"CLIPL-A needs at least 4 clips with both features, got {len(video)}")
    if not (np.isfinite(video).all() and np.isfinite(audio).all()):
        raise AlignError("features contain NaN or inf")
    n = len(video)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if holdout_rows is not None:
        ho = np.unique(np.asarray(holdout_rows, dtype=np.int64))
        if len(ho) and (ho.min() < 0 or ho.max() >= n or len(ho) > n - 2):
            raise AlignError(f"holdout rows must lie in [0, {n}) and leave at least 2 training clips")
        tr = np.setdiff1d(np.arange(n), ho)
    else:
        n_ho = min(max(2, int(round(holdout * n))), n - 2) if holdout > 0 else 0
        ho, tr = np.sort(perm[:n_ho]), np.sort(perm[n_ho:])
    vm, vs = _standardiser(video[tr])
    am, as_ = _standardiser(audio[tr])
    V = torch.as_tensor((video - vm) / vs, device=device)
    A = torch.as_tensor((audio - am) / as_, device=device)
    torch.manual_seed(seed)
    model = CLIPLA(video.shape[1], audio.shape[1]).to(device)

    def embed(rows: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model.mlp(V[torch.as_tensor(rows, device=device)]).cpu().numpy()

    def report(rows: np.ndarray) -> dict[str, Any] | None:
        return retrieval_metrics(embed(rows), A[torch.as_tensor(rows, device=device)].cpu().numpy()) if len(rows) >= 2 else None

    before = {"holdout": report(ho), "train": report(tr)}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    t0 = time.perf_counter()
    bs = max(2, min(batch_size, len(tr)))
    tr_t = torch.as_tensor(tr)
    for _ in range(epochs):
        model.train()
        order = tr_t[torch.randperm(len(tr), generator=gen)]
        total, count = 0.0, 0
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            loss = info_nce(model.mlp(V[idx]), A[idx], model.logit_scale())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if not math.isfinite(losses[-1]):
            raise AlignError(f"non-finite contrastive loss at epoch {len(losses)}")
    after = {"holdout": report(ho), "train": report(tr)}
    info = {
        "n": n, "n_train": len(tr), "n_holdout": len(ho), "holdout_index": ho.tolist(),
        "stats": {"video_mean": vm.tolist(), "video_std": vs.tolist(), "audio_mean": am.tolist(), "audio_std": as_.tolist()},
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "Adam", "seed": seed,
        "loss_first_epoch": losses[0] if losses else None, "loss_last_epoch": losses[-1] if losses else None,
        "temperature": float(1.0 / model.logit_scale().detach()), "seconds": round(time.perf_counter() - t0, 2),
        "retrieval": {"before": before, "after": after},
    }
    return model.eval(), info


# ---------------------------------------------------------------------------
# Stores in, run directory and derived store out
# ---------------------------------------------------------------------------

def _one_layer(features_dir, dataset: str, spec_text: str):
    from emo.extract.store import FeatureStore, store_path
    from emo.fuse.training.data import parse_feature_spec, store_layers

    spec = parse_feature_spec(spec_text)
    st = FeatureStore(store_path(features_dir, dataset, spec.name))
    layers = store_layers(spec, st)
    if len(layers) != 1:
        raise AlignError(f"{st.path}: CLIPL-A aligns one layer per side; give one, e.g. {spec.name}:{layers[-1]}")
    return spec, st, layers[0]


def _store_record(st, layer: str) -> dict[str, Any]:
    """What an alignment records of a store: path, encoder, its ``source`` attribute (the ``=SOURCE`` of the
    extraction spec; "" for the encoder's default), layer, weights hash, file SHA-256 and modality."""
    return {"path": str(Path(st.path).resolve()), "encoder": st.attrs.get("encoder"), "encoder_source": st.attrs.get("source", ""),
            "layer": layer, "weights_hash": st.attrs.get("weights_hash"), "sha256": fsio.sha256_file(Path(st.path)),
            "modality": st.attrs.get("modality")}


def apply_alignment(model: CLIPLA, cfg: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The aligned features ``f_v`` (eq. 5) of source features ``x``: float (N, d_v) → float32 (N, d_a).

    The source features are standardised with the statistics recorded at training (``cfg["stats"]``)
    and passed through the vision MLP; all-zero rows (a clip without that modality) stay zero.
    ``model``, ``cfg``: from :func:`load_alignment`.

    Raises:
        AlignError: ``x`` is not (N, d_v) for the MLP's d_v, or holds NaN/inf.
    """
    x = np.asarray(x, dtype=np.float32)
    stats = cfg["stats"]
    vm, vs = np.asarray(stats["video_mean"], np.float32), np.asarray(stats["video_std"], np.float32)
    if x.ndim != 2 or x.shape[1] != vm.shape[0]:
        raise AlignError(f"source features of shape {x.shape}; the alignment expects (N, {vm.shape[0]})")
    if not np.all(np.isfinite(x)):
        raise AlignError("source features hold NaN/inf")
    zero = np.all(x == 0, axis=1)
    with torch.no_grad():
        y = model.mlp(torch.as_tensor((x - vm) / vs)).numpy().astype(np.float32)
    y[zero] = 0.0
    return y


def align(features_dir: str | Path, dataset: str, source: str, target: str, out: str | Path, *, epochs: int = 100,
          batch_size: int = 1024, lr: float = 1e-4, holdout: float = 0.1, seed: int = 0, device: str = "cpu",
          command: list[str] | None = None) -> dict[str, Any]:
    """Train CLIPL-A from two feature stores and write the run directory ``out``.

    ``out`` receives ``clipla.safetensors`` (the MLP and log scale; no pickles) and ``align.json``
    (settings, standardisation statistics, the two stores' records, retrieval before/after).

    Args:
        features_dir, dataset: the ``emo extract --out`` root and dataset.
        source: visual feature spec with one layer (``clip_vit_l:proj``); target: audio spec (``hubert_large:18``).

    Returns:
        The ``align.json`` content.

    Raises:
        AlignError: a spec with more than one layer, fewer than 4 shared clips.
        emo.extract.store.StoreError: missing stores.
    """
    from safetensors.torch import save_file

    s_spec, s_st, s_layer = _one_layer(features_dir, dataset, source)
    t_spec, t_st, t_layer = _one_layer(features_dir, dataset, target)
    names = [n for n in s_st.names if n in t_st.index]
    if not names:
        raise AlignError(f"{s_st.path} and {t_st.path} share no clip")
    video = s_st.read([s_layer], names)[:, 0]
    audio = t_st.read([t_layer], names)[:, 0]
    keep = ~(np.all(video == 0, axis=1) | np.all(audio == 0, axis=1))
    excluded = [n for n, k in zip(names, keep) if not k]
    names = [n for n, k in zip(names, keep) if k]
    model, info = train_alignment(video[keep], audio[keep], epochs=epochs, batch_size=batch_size, lr=lr,
                                  holdout=holdout, seed=seed, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mlp_path = out / MLP_FILE
    with fsio.atomic_path(mlp_path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    config = {
        "method": "CLIPL-A (Zhao et al., MRAC '24, eq. 5-7)", "command": command, "dataset": dataset,
        "features_dir": str(features_dir), "source": {**_store_record(s_st, s_layer), "spec": source},
        "target": {**_store_record(t_st, t_layer), "spec": target}, "d_v": int(video.shape[1]), "d_a": int(audio.shape[1]),
        "n_shared": len(keep), "excluded_all_zero": excluded, "holdout_names": [names[i] for i in info["holdout_index"]],
        "mlp_file": MLP_FILE, "mlp_sha256": fsio.sha256_file(mlp_path), "labels_read": False,
        **{k: v for k, v in info.items() if k != "holdout_index"}, "kind": KIND,
    }
    config = fsio.seal_json(config)  # content SHA-256 and kind: checked by load_alignment (issue 25)
    fsio.write_text(out / CONFIG_FILE, json.dumps(config, indent=2))
    return config


def load_alignment(run_dir: str | Path) -> tuple[CLIPLA, dict[str, Any]]:
    """The trained :class:`CLIPLA` and ``align.json`` of an :func:`align` run directory.

    ``align.json`` is verified against its content SHA-256 and kind (:data:`KIND`; :func:`emo.fsio.seal_json`,
    written by :func:`align`; an ``align.json`` written before emo sealed it is read unverified, but must
    still describe a CLIPL-A alignment), then the MLP file against the SHA-256 ``align.json`` records.

    Raises:
        AlignError: missing files; an ``align.json`` that is not JSON, was edited or damaged (its content
            differs from its SHA-256), is of another kind or lacks the alignment's fields; an MLP file
            whose SHA-256 differs from the recorded one or that does not load. Each names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    cfg_path, mlp_path = run_dir / CONFIG_FILE, run_dir / MLP_FILE
    if not cfg_path.is_file() or not mlp_path.is_file():
        raise AlignError(f"{run_dir} is not a CLIPL-A run (needs {CONFIG_FILE} and {MLP_FILE}; run `emo fuse align` first)")
    try:
        cfg = fsio.read_sealed_json(cfg_path, "CLIPL-A alignment")
    except fsio.ChecksumError as e:
        raise AlignError(f"{e}; re-run emo fuse align") from None
    sealed = bool(cfg.get(fsio.SEAL_KEY))
    if (cfg.get("kind") != KIND) if sealed else not str(cfg.get("method", "")).startswith("CLIPL-A"):
        raise AlignError(f"{cfg_path}: not a CLIPL-A alignment (kind {cfg.get('kind', cfg.get('method'))!r}, expected {KIND!r}); "
                         "give the folder emo fuse align wrote")
    missing = [k for k in ("d_v", "d_a", "stats", "mlp_sha256", "source", "target") if k not in cfg]
    if missing:
        raise AlignError(f"{cfg_path}: CLIPL-A alignment without {', '.join(missing)}; re-run emo fuse align")
    if fsio.sha256_file(mlp_path) != cfg.get("mlp_sha256"):
        raise AlignError(f"{mlp_path}: SHA-256 differs from the one recorded in {cfg_path} (file changed after training)")
    model = CLIPLA(int(cfg["d_v"]), int(cfg["d_a"]))
    try:
        model.load_state_dict(load_file(str(mlp_path)))
    except (SafetensorError, RuntimeError, OSError) as e:
        raise AlignError(f"{mlp_path}: not the CLIPL-A MLP that {cfg_path} describes ({e})") from None
    return model.eval(), cfg


def derived_name(source_encoder: str) -> str:
    """Store name of aligned features: ``<source encoder>+clipla``."""
    return f"{source_encoder}+clipla"


def write_aligned_store(run_dir: str | Path, features_dir: str | Path | None = None, dataset: str | None = None,
                        overwrite: bool = False) -> Path:
    """Write ``f_v`` (eq. 5) of every clip of the source store as ``<source>+clipla.h5``.

    The derived store has one layer, ``clipla`` (d_a), float32, modality of the source; its
    provenance names the source and target stores (path, weights hash, SHA-256 at training time)
    and the MLP file (SHA-256); ``weights_hash`` is the MLP file's SHA-256 (16 hex digits). Clips
    whose source vector is all zeros (e.g. ``no_face``) get zeros and keep their flags.

    Args:
        run_dir: an :func:`align` run. features_dir, dataset: where to read the source store and
            write the derived one (default: those recorded in the run).

    Returns:
        Path of the written store.

    Raises:
        AlignError: the source store changed since training (SHA-256 differs).
        emo.extract.store.StoreError: store errors (existing store with other provenance without ``overwrite``).
    """
    from emo.extract.store import FeatureStore, StoreWriter, store_path
    from emo.extract.types import Encoded

    model, cfg = load_alignment(run_dir)
    features_dir = Path(features_dir if features_dir is not None else cfg["features_dir"])
    dataset = dataset or cfg["dataset"]
    src = cfg["source"]
    st = FeatureStore(store_path(features_dir, dataset, src["encoder"]))
    if Path(st.path).resolve() == Path(src["path"]) and fsio.sha256_file(Path(st.path)) != src["sha256"]:
        raise AlignError(f"{st.path} changed since the alignment was trained (SHA-256 differs); retrain with emo fuse align")
    if st.attrs.get("weights_hash") != src.get("weights_hash"):
        raise AlignError(f"{st.path} holds features of weights {st.attrs.get('weights_hash')}, the alignment was trained on "
                         f"{src.get('weights_hash')}")
    y = apply_alignment(model, cfg, st.read([src["layer"]], list(st.names))[:, 0])
    name = derived_name(src["encoder"])
    prov = {
        "dataset": dataset, "encoder": name, "source": f"{src['encoder']}:{src['layer']} -> CLIPL-A",
        "weights_hash": cfg["mlp_sha256"][:16], "pooling": st.attrs.get("pooling"), "modality": st.attrs.get("modality"),
        "sample_rate": st.attrs.get("sample_rate"), "fps": st.attrs.get("fps"),
        "derived_from": json.dumps({"method": "clipla", "source": src, "target": cfg["target"],
                                    "mlp_file": str((Path(run_dir) / MLP_FILE).resolve()), "mlp_sha256": cfg["mlp_sha256"]}),
    }
    path = store_path(features_dir, dataset, name)
    with StoreWriter(path, prov, ["clipla"], dtype="float32", overwrite=overwrite, flush_seconds=None, shard_size=4096) as w:
        for i, n in enumerate(st.names):
            if n in w.done:  # resuming a store of the same provenance (same MLP): nothing to redo
                continue
            w.add(n, Encoded({"clipla": y[i]}, flags=st.flags(n)))
        w.finalize()
    return path
