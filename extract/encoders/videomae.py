"""VideoMAE (Tong et al., "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised
Video Pre-Training", NeurIPS 2022; https://github.com/MCG-NJU/VideoMAE) as a layer-wise encoder of
clips of aligned face frames, through ``transformers.VideoMAEModel`` (MERTools extracts VideoMAE on
face clips the same way).

A clip's face crops (sampled at ``emo extract --fps``) are cut into windows of ``num_frames`` frames
(16 for the released models): a clip with at most ``num_frames`` crops gives one window whose frames
are spread uniformly over the crops (crops repeat when there are fewer); a longer clip gives
``ceil(F / num_frames)`` windows over consecutive equal segments, each sampled uniformly. Layer ``k``
of a window is the mean over its spatio-temporal tokens of ``hidden_states[k]`` (``0``: the tubelet
embeddings with positions; ``N``: the last block's output, before the final LayerNorm that
checkpoints without mean pooling apply to ``last_hidden_state``); the clip's vector is the mean over its windows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emo.extract.encoders.dinov2 import hf_image_preprocess
from emo.extract.encoders.face import IMAGENET_MEAN, IMAGENET_STD, FaceFrameEncoder, ImagePreprocess
from emo.extract.registry import register_encoder
from emo.extract.types import Encoded, EncoderError, FaceInput, autocast_dtype, hash_weights


def window_indices(n_crops: int, num_frames: int) -> list[np.ndarray]:
    """Crop indices of each window (see the module docstring): a list of int64 arrays of ``num_frames``.

    Raises:
        ValueError: ``n_crops < 1`` or ``num_frames < 1``.
    """
    if n_crops < 1 or num_frames < 1:
        raise ValueError(f"window_indices needs n_crops >= 1 and num_frames >= 1, got {n_crops}, {num_frames}")
    n_win = max(1, math.ceil(n_crops / num_frames))
    bounds = np.linspace(0, n_crops, n_win + 1)
    out = []
    for w in range(n_win):
        lo, hi = bounds[w], bounds[w + 1]
        # centres of num_frames equal sub-intervals of [lo, hi), floored to crop indices
        idx = np.floor(lo + (np.arange(num_frames) + 0.5) * (hi - lo) / num_frames).astype(np.int64)
        out.append(np.clip(idx, 0, n_crops - 1))
    return out


@register_encoder(
    "videomae_base", "MCG-NJU/videomae-base",
    summary="VideoMAE ViT-B (Tong et al. 2022) on face clips: token mean per layer, 13 x 768",
)
@register_encoder(
    "videomae_large", "MCG-NJU/videomae-large",
    summary="VideoMAE ViT-L on face clips: token mean per layer, 25 x 1024",
)
class VideoMAEEncoder(FaceFrameEncoder):
    """VideoMAE (``transformers.VideoMAEModel``) over windows of ``num_frames`` face crops.

    Preprocessing: the checkpoint's ``VideoMAEImageProcessor`` (shorter edge 224, bilinear, center
    crop 224, ImageNet mean/std); without one, those defaults at the config's ``image_size``.

    Options:
        max_windows (int): windows per forward pass (default 4; 1 window = ``num_frames`` frames).

    Shapes: crops uint8 (F, H, W, 3) -> per layer float32 (hidden_size,); with ``frames=True`` one
    row per window, float32 (windows, hidden_size). A clip without faces gives zeros and ``no_face``.

    Raises:
        EncoderError: no source, an unloadable checkpoint, or a checkpoint that is not VideoMAE.
    """

    pooling = "mean_tokens_windows"

    def __init__(self, name, source=None, layers=None, device="cpu", frames=False, **options):
        super().__init__(name, source=source, layers=layers, device=device, frames=frames, **options)
        from transformers import VideoMAEModel

        if not source:
            raise EncoderError(f"{name}: a hub id or local directory is required")
        try:
            model = VideoMAEModel.from_pretrained(source)
        except Exception as e:  # noqa: BLE001
            raise EncoderError(f"{name}: cannot load VideoMAEModel from {source}: {type(e).__name__}: {e}") from e
        cfg = model.config
        if cfg.model_type != "videomae":
            raise EncoderError(f"{name}: {source} is a {cfg.model_type} model, not VideoMAE")
        self.n_blocks = int(cfg.num_hidden_layers)
        self.width = int(cfg.hidden_size)
        self.num_frames = int(cfg.num_frames)
        size = int(cfg.image_size)
        self.preprocessor = hf_image_preprocess(
            source, ImagePreprocess(size, (size, size), IMAGENET_MEAN, IMAGENET_STD, "bilinear"))
        self.max_windows = int(options.get("max_windows", 4))
        if self.max_windows < 1:
            raise EncoderError(f"{name}: max_windows must be >= 1, got {self.max_windows}")
        self._select()
        depth = max(int(k) for k in self.layers)
        del model.encoder.layer[max(1, depth):]  # hidden_states[k] for k <= depth do not depend on later blocks
        self._finish(model)

    def available_layers(self) -> list[str]:
        return [str(i) for i in range(self.n_blocks + 1)]

    def dims(self) -> dict[str, int]:
        return {k: self.width for k in self.layers}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "num_frames": self.num_frames}

    def forward_frames(self, pixels) -> dict[str, Any]:
        """Windows (W, T, 3, h, w) -> selected layer -> (W, D): mean over tokens of ``hidden_states[k]``."""
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return {k: out.hidden_states[int(k)].mean(dim=1) for k in self.layers}

    def encode(self, batch: list[FaceInput]) -> list[Encoded]:
        """Encode clips window by window (see the module docstring).

        Raises:
            EncoderError: malformed crops (naming the clip) or a failing forward pass.
        """
        import torch

        for item in batch:
            self._check(item)
        wins: list[tuple[int, np.ndarray]] = []  # (clip index, crop indices)
        for i, item in enumerate(batch):
            if len(item.crops):
                wins.extend((i, idx) for idx in window_indices(len(item.crops), self.num_frames))
        feats: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        dtype = autocast_dtype(self.device)
        try:
            with torch.inference_mode():
                for s in range(0, len(wins), self.max_windows):
                    chunk = wins[s:s + self.max_windows]
                    clips = [self.preprocess(batch[i].crops[idx]) for i, idx in chunk]  # each (T, 3, h, w)
                    pixels = torch.stack(clips)
                    with torch.autocast(self.torch_device.type, dtype=dtype, enabled=dtype is not None):
                        out = self.forward_frames(pixels)
                    for k in self.layers:
                        feats[k].append(out[k].float().cpu().numpy())
        except torch.OutOfMemoryError as e:
            raise EncoderError(f"{self.name}: out of memory on {len(wins)} windows ({e})") from e
        except RuntimeError as e:
            raise EncoderError(f"{self.name}: forward pass failed on clips {', '.join(b.name for b in batch[:5])}: {e}") from e
        allf = {k: (np.concatenate(v) if v else np.zeros((0, self.width), np.float32)) for k, v in feats.items()}
        owner = np.array([i for i, _ in wins], dtype=np.int64)
        results = []
        for i, item in enumerate(batch):
            rows = np.flatnonzero(owner == i)
            if not len(rows):
                layers = {k: np.zeros(self.width, np.float32) for k in self.layers}
                fr = {k: np.zeros((0, self.width), np.float32) for k in self.layers} if self.frames else None
                results.append(Encoded(layers=layers, frames=fr, flags={"no_face"}))
                continue
            layers = {k: allf[k][rows].mean(axis=0, dtype=np.float64).astype(np.float32) for k in self.layers}
            fr = {k: np.ascontiguousarray(allf[k][rows], dtype=np.float32) for k in self.layers} if self.frames else None
            results.append(Encoded(layers=layers, frames=fr))
        return results

    def weights_hash(self) -> str:
        return hash_weights(self.source)
