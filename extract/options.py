"""Options of ``emo extract`` (typer-free; the command is generated from them by
:mod:`emo.cliargs` in :mod:`emo.extract.cli`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from emo.extract.datasets import dataset_names
from emo.extract.media import DEFAULT_FPS
from emo.optspec import opt

#: ``--help`` groups of ``emo extract``.
DATASET, ENCODERS, AUGMENT, RUNTIME, OUTPUT = "Dataset", "Encoders", "Augmentation", "Runtime", "Output"


@dataclass(kw_only=True)
class ExtractOptions:
    """Every option of ``emo extract`` (:func:`emo.extract.cli.extract`)."""

    dataset: str = opt(..., f"Dataset adapter: {', '.join(dataset_names())}.", group=DATASET, flags=('--dataset', '-d'))
    root: Path = opt(..., 'Dataset root directory.', group=DATASET, flags=('--root', '-r'))
    encoder: List[str] = opt(..., 'NAME[=SOURCE][:LAYERS], repeatable, e.g. hubert_large:16-21.', group=ENCODERS, flags=('--encoder', '-e'))
    out: Path = opt(Path('features'), "Feature root: stores go to OUT/NAME/ENCODER.h5 (NAME: --name, default the dataset; for folder, the root folder's name).", group=OUTPUT, flags=('--out', '-o'))
    device: str = opt('auto', 'auto (cuda when available, else cpu), cpu, cuda or cuda:N (bf16 autocast on GPU).', group=RUNTIME, flags=('--device',))
    batch_seconds: Optional[float] = opt(None, 'Padded audio seconds per forward pass (default 200 GPU / 60 CPU).', group=RUNTIME, flags=('--batch-seconds',))
    frames: bool = opt(False, 'Also store frame-level features (ragged, per layer).', group=ENCODERS, flags=('--frames',))
    fps: float = opt(DEFAULT_FPS, 'Face-frame sampling rate, frames per second.', group=ENCODERS, flags=('--fps',))
    face_detector: str = opt('mtcnn', 'mtcnn or haar (no download).', group=ENCODERS, flags=('--face-detector',))
    mtcnn_weights: Optional[Path] = opt(None, 'Directory with pnet.pt, rnet.pt, onet.pt.', group=ENCODERS, flags=('--mtcnn-weights',))
    text_column: Optional[str] = opt(None, 'Transcript column (e.g. chinese, english, sentence).', group=DATASET, flags=('--text-column',))
    lexicon: Optional[Path] = opt(None, "NRC-VAD-Lexicon.txt or its folder, for nrc_vad (else $EMO_LEXICON, then emo's data dir).", group=ENCODERS, flags=('--lexicon',))
    subset: Optional[str] = opt(None, 'mer2024/mer2025/mer2026: all, labeled or unlabeled.', group=DATASET, flags=('--subset',))
    track: Optional[str] = opt(None, 'mer2025: 1 or 2; mer2026: 1, 2 or 3 (picks the label files).', group=DATASET, flags=('--track',))
    label_source: Optional[str] = opt(None, 'mer2025/mer2026 track 2: all (default), ovmerd, human or mercaptionplus.', group=DATASET, flags=('--label-source',))
    labels: Optional[Path] = opt(None, 'folder: label CSV (default ROOT/labels.csv).', group=DATASET, flags=('--labels',))
    name: Optional[str] = opt(None, "Dataset name: the folder under --out and the --dataset of emo fuse (default: the adapter's name; for folder, the root folder's name).", group=DATASET, flags=('--name',))
    decode_workers: int = opt(2, 'CPU decode workers per process (threads; see --decode-pool).', group=RUNTIME, flags=('--decode-workers',), min=1)
    decode_pool: str = opt('thread', 'thread or process: pool that decodes media ahead of the models.', group=RUNTIME, flags=('--decode-pool',))
    workers: Optional[int] = opt(None, 'Run on a local dask cluster of N worker processes (one GPU each with --device cuda).', group=RUNTIME, flags=('--workers',), min=1)
    scheduler: Optional[str] = opt(None, 'Run on an existing dask cluster, e.g. tcp://host:8786 (OUT must be shared storage).', group=RUNTIME, flags=('--scheduler',))
    naive: bool = opt(False, 'MER-baseline reference path (one clip per forward, fp32, all hidden states): benchmarks only.', group=ENCODERS, flags=('--naive',))
    compile_model: bool = opt(False, 'torch.compile the speech models (pays on GPU for long runs).', group=ENCODERS, flags=('--compile',))
    limit: Optional[int] = opt(None, 'Only the first N samples (quick tries).', group=DATASET, flags=('--limit',))
    max_seconds: Optional[float] = opt(None, 'Decode at most this many seconds per clip.', group=RUNTIME, flags=('--max-seconds',))
    overwrite: bool = opt(False, 'Replace existing stores instead of resuming.', group=OUTPUT, flags=('--overwrite/--no-overwrite',))
    strict: bool = opt(False, 'Stop at the first per-sample error (exit 1).', group=OUTPUT, flags=('--strict/--no-strict',))
    progress: bool = opt(True, 'Show progress bars (also the model-loading bars of the Hugging Face libraries).', group=OUTPUT, flags=('--progress/--no-progress',))
    shard_size: int = opt(64, 'Samples per shard file: a kill loses at most this many per encoder.', group=OUTPUT, flags=('--shard-size',), min=1)
    flush_seconds: float = opt(60.0, 'Also write a shard at least this often (seconds); 0: only by --shard-size.', group=OUTPUT, flags=('--flush-seconds',))
    trust_remote_code: bool = opt(False, 'Allow encoders whose model repository ships Python code (Baichuan2) to run it. Review that code first: it runs with your permissions.', group=ENCODERS, flags=('--trust-remote-code',))
    adapters: Optional[Path] = opt(None, 'An `emo tune hlft` run: HLFT features, one store per fold (ENCODER+hlft.foldK.h5).', group=ENCODERS, flags=('--adapters',))
    special_tokens: bool = opt(False, 'Text encoders: keep [CLS]/[SEP] in frames and pooling (needed for an HLFT text prefix).', group=ENCODERS, flags=('--special-tokens',))
    text_pooling: Optional[str] = opt(None, 'Text encoders: mean (default) | last | cls ([CLS]/<s> token of BERT-style encoders).', group=ENCODERS, flags=('--text-pooling',))
    augment: List[str] = opt([], 'Corrupt the inputs first and write ENCODER+TAG stores: noise:snr=5-11,source=DIR (speech noise, other speakers) or video:solarize=T,blur=S,rotate=DEG,cutout=F; repeatable.', group=AUGMENT, flags=('--augment',))
    augment_seed: int = opt(0, 'Default seed of --augment specs without seed=.', group=AUGMENT, flags=('--augment-seed',))
