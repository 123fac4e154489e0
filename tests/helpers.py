"""Test helpers: small randomly initialised models of the real architectures, saved locally (hubs are
unreachable), and synthetic lexicon files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def tiny_hubert(path: Path, layers: int = 4, hidden: int = 32, stable: bool = True, kind: str = "hubert", seed: int = 0) -> Path:
    """Save a tiny HuBERT (or wav2vec2) with HuBERT-large's layout (layer-norm front-end,
    stable layer norm) to ``path`` and return it. Same code path as a real checkpoint."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg_cls, model_cls = (HubertConfig, HubertModel) if kind == "hubert" else (Wav2Vec2Config, Wav2Vec2Model)
    cfg = cfg_cls(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * hidden,
        conv_dim=(16, 16, 16, 16, 16, 16, 16), conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable,
    )
    model = model_cls(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    return path


def write_lexicon(path: Path, entries: dict) -> Path:
    """Write an NRC-VAD style lexicon (``word<TAB>v<TAB>a<TAB>d``, scores in [0, 1]) to ``path``."""
    lines = ["Word\tValence\tArousal\tDominance"] + [f"{w}\t{v:.3f}\t{a:.3f}\t{d:.3f}" for w, (v, a, d) in entries.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def link_clips(sources: Iterable[Path], root: Path) -> Path:
    """Symlink each source file into ``root`` (created) under its own name; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for src in sources:
        (root / src.name).symlink_to(src)
    return root


def toy_provenance(**kw) -> dict:
    """Provenance of a small synthetic feature store (``StoreWriter``), with ``kw`` overriding fields."""
    return {"encoder": "toy", "source": "x", "weights_hash": "abc", "pooling": "mean", "sample_rate": 16000, **kw}


def run_emo(*args: str, ok: tuple[int, ...] = (0,)):
    """``python -m emo.cli ARGS`` as a subprocess; asserts its exit code is in ``ok`` (output in the message)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "emo.cli", *args], capture_output=True, text=True)
    assert r.returncode in ok, f"emo {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r
