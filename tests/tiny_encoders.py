"""Small randomly initialised models of the issue-26 architectures (WavLM, data2vec-audio, Whisper,
DINOv2, VideoMAE), saved locally with ``save_pretrained`` so the encoders load them through the same
``from_pretrained(DIR)`` path as a real checkpoint (model hubs are unreachable in tests)."""

from __future__ import annotations

from pathlib import Path

_CONV = dict(conv_dim=(16, 16, 16, 16, 16, 16, 16), conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def tiny_wavlm(path: Path, layers: int = 4, hidden: int = 32, stable: bool = True, seed: int = 0) -> Path:
    """WavLM with WavLM-large's layout (layer-norm front-end, stable layer norm) or, with
    ``stable=False``, base-plus's (group-norm front-end, post-norm)."""
    import torch
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(seed)
    cfg = WavLMConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * hidden,
                      feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable,
                      num_buckets=32, max_bucket_distance=64, **_CONV)
    WavLMModel(cfg).eval().save_pretrained(path)
    return path


def tiny_data2vec_audio(path: Path, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    torch.manual_seed(seed)
    cfg = Data2VecAudioConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                              intermediate_size=2 * hidden, num_conv_pos_embeddings=5, **{k: v for k, v in _CONV.items() if not k.startswith("num_conv_pos")})
    Data2VecAudioModel(cfg).eval().save_pretrained(path)
    return path


def tiny_whisper(path: Path, layers: int = 3, hidden: int = 32, mel_bins: int = 80, seed: int = 0) -> Path:
    """Whisper with the real input geometry (30-s windows: 3000 mel frames -> 1500 encoder frames) and
    a tiny width, plus its ``WhisperFeatureExtractor`` config."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=hidden, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=2 * hidden, decoder_ffn_dim=2 * hidden,
                        num_mel_bins=mel_bins, vocab_size=64, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1, begin_suppress_tokens=None, suppress_tokens=None)
    WhisperModel(cfg).eval().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=mel_bins).save_pretrained(path)
    return path


def tiny_dinov2(path: Path, layers: int = 3, hidden: int = 32, image: int = 28, seed: int = 0) -> Path:
    """DINOv2 plus a ``BitImageProcessor`` config like the released one (shorter edge, bicubic, center
    crop, ImageNet mean/std), at the tiny image size."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * hidden,
                       image_size=image, patch_size=14)
    Dinov2Model(cfg).eval().save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image}, resample=3,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True).save_pretrained(path)
    return path


def tiny_videomae(path: Path, layers: int = 3, hidden: int = 32, image: int = 32, frames: int = 4, seed: int = 0) -> Path:
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(seed)
    cfg = VideoMAEConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * hidden,
                         image_size=image, patch_size=16, num_frames=frames, tubelet_size=2)
    VideoMAEModel(cfg).eval().save_pretrained(path)
    return path
