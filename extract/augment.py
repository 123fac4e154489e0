"""Input corruptions for noise-robustness work (``emo extract --augment``).

MER-NOISE (Wang et al., "Hierarchical Audio-Visual Information Fusion with Multi-label Joint
Decoding for MER 2023", §MER-NOISE; the MER 2023 challenge's noisy track) corrupts the audio
with speech noise at an SNR drawn from {5, 6, ..., 11} dB and the video with four image
corruptions: solarize (brightness), Gaussian blur (articulation), rotation (position) and
cutout (content). This module implements both as *encoder wrappers*: :class:`AugmentedEncoder`
corrupts each input just before the wrapped encoder sees it, so the engine decodes, batches and
stores as for clean features, and the result goes to its own store ``<encoder>+<tag>.h5``
(``egemaps+noise.h5``) whose provenance records the augmentation, its seed and the hash of the
noise files.

Spec grammar (one ``--augment`` value)::

    noise:snr=5-11,source=DIR[,seed=0][,name=noise][,speaker_regex=^(\\d\\d)]
    video:solarize=128,blur=2.0,rotate=15,cutout=0.25[,p=1.0][,seed=0][,name=video]

Every choice (SNR level, noise file, offset; which corruptions fire and their random parts) is
drawn from a generator seeded with ``(seed, sha256(sample name))``: the same sample gets the same
corruption on every run and machine, whatever the batch order, and different samples get
independent ones.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from emo.extract.encoders.base import AudioInput, Encoded, FaceInput

#: Audio files a noise folder may hold.
NOISE_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac")


class AugmentError(ValueError):
    """A malformed ``--augment`` spec or an unusable noise source (the message names it)."""


def sample_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one sample's corruption: seeded with ``seed`` and the first 8 bytes of
    ``sha256(name)``, so it depends on nothing but the seed and the sample name."""
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, digest & 0xFFFFFFFF, digest >> 32])


def power(x: np.ndarray) -> float:
    """Mean power ``mean(x²)`` in float64 (linear units, full-scale² for audio in [-1, 1])."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """``10 log10(P_signal / P_noise)`` in dB (``inf`` for silent noise)."""
    pn = power(noise)
    return math.inf if pn == 0 else 10.0 * math.log10(power(signal) / pn)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr: float) -> tuple[np.ndarray, np.ndarray]:
    """Add ``noise`` to ``signal`` scaled so the signal-to-noise ratio is ``snr`` dB.

    ``noise`` is scaled by ``g = sqrt(P_s / (P_n · 10^(snr/10)))`` with powers over the whole clip
    (:func:`power`), the usual definition (e.g. MUSAN-style augmentation in Kaldi/ESPnet).

    Args:
        signal: float (T,) clip. noise: float (T,) noise segment of the same length.
        snr: target SNR in dB.

    Returns:
        (mixed float32 (T,), scaled noise float32 (T,)). The mix is not clipped (features are
        computed from float audio).

    Raises:
        AugmentError: lengths differ, or the noise segment is silent (no SNR can be reached).
    """
    s = np.asarray(signal, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    if s.shape != n.shape:
        raise AugmentError(f"signal has shape {s.shape}, noise {n.shape}")
    ps, pn = power(s), power(n)
    if pn == 0:
        raise AugmentError("noise segment is silent")
    g = math.sqrt(ps / (pn * 10.0 ** (snr / 10.0)))
    scaled = n * g
    return (s + scaled).astype(np.float32), scaled.astype(np.float32)


def parse_range(text: str, what: str) -> list[int]:
    """``"5-11"`` → [5, 6, ..., 11]; ``"5"`` → [5]; ``"5;10"`` → [5, 10] (integers, dB)."""
    try:
        if ";" in text:
            return [int(v) for v in text.split(";")]
        if "-" in text.lstrip("-"):
            lo, hi = text.lstrip("-").split("-", 1)
            lo_v = -int(lo) if text.startswith("-") else int(lo)
            vals = list(range(lo_v, int(hi) + 1))
            if not vals:
                raise ValueError
            return vals
        return [int(text)]
    except ValueError:
        raise AugmentError(f"{what} {text!r}: expected an integer, a range LO-HI or a list A;B") from None


#: Physical SNR range (dB) of speech-noise augmentation. Below -30 dB the noise is ~1000x the speech power
#: (nothing of the speech is left, and the gain overflows float32 for quiet noise); above 60 dB the noise is
#: below the quantisation noise of 16-bit audio (~ -96 dBFS relative to typical speech levels): inaudible, a no-op.
SNR_DB_RANGE = (-30, 60)


def check_snr(snrs: list[int], spec: str) -> None:
    """Refuse SNRs outside :data:`SNR_DB_RANGE`.

    Raises:
        AugmentError: naming the spec, the bad value and the range.
    """
    lo, hi = SNR_DB_RANGE
    bad = [v for v in snrs if not lo <= v <= hi]
    if bad:
        raise AugmentError(f"--augment {spec!r}: SNR {bad[0]} dB is outside the physical range {lo}..{hi} dB "
                           f"(below {lo} dB no speech is left and the gain overflows; above {hi} dB the noise is inaudible)")


def check_spec(spec: str) -> None:
    """Check an ``--augment`` spec's syntax and values before any model is loaded (no files read).

    Raises:
        AugmentError: unknown kind, malformed or out-of-range values (SNR outside :data:`SNR_DB_RANGE`).
    """
    kind, opts = _options(spec)
    if kind == "noise":
        if "source" not in opts:
            raise AugmentError(f"--augment {spec!r}: needs source=DIR (a folder of speech recordings)")
        check_snr(parse_range(opts.get("snr", "5-11"), "snr"), spec)
        unknown = set(opts) - {"snr", "source", "seed", "name", "speaker_regex"}
        if unknown:
            raise AugmentError(f"--augment {spec!r}: unknown option(s) {', '.join(sorted(unknown))} (noise takes snr, source, seed, name, speaker_regex)")
    elif kind != "video":
        raise AugmentError(f"--augment {spec!r}: unknown kind {kind!r}; use noise:... or video:...")
    if "seed" in opts and not opts["seed"].lstrip("-").isdigit():
        raise AugmentError(f"--augment {spec!r}: seed {opts['seed']!r} is not an integer")


def _options(spec: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = spec.strip().partition(":")
    opts: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise AugmentError(f"--augment {spec!r}: option {part!r} is not KEY=VALUE")
        opts[k.strip().lower()] = v.strip()
    return kind.strip().lower(), opts


# ---------------------------------------------------------------------------
# Audio: speech noise at a random SNR
# ---------------------------------------------------------------------------

@dataclass
class NoiseFile:
    """One noise recording: its path, speaker (``None`` when unknown) and, once loaded, audio."""

    path: Path
    speaker: str | None = None


class NoiseBank:
    """A folder of noise recordings (MUSAN's speech subset, or other speakers' utterances).

    Speakers of the noise files, used to keep noise speaker-independent, come from (first match):
    ``speakers.csv`` in the folder (columns ``path`` or ``name`` and ``speaker``), ``speakers``
    (a mapping from resolved path to speaker, e.g. the dataset's own samples when the folder is
    the dataset itself), or ``speaker_regex`` whose first group, matched on the file stem, is the
    speaker (``^(\\d\\d)`` for EmoDB). Files whose speaker stays unknown are used for every clip.

    Audio is decoded lazily (``emo.extract.media.load_audio``) at ``sample_rate`` and cached.

    Raises:
        AugmentError: the folder does not exist or holds no audio file.
    """

    def __init__(self, source: str | Path, sample_rate: int = 16000, speakers: dict[str, str | None] | None = None,
                 speaker_regex: str | None = None) -> None:
        self.source = Path(source)
        if not self.source.is_dir():
            raise AugmentError(f"noise source {self.source} is not a directory")
        files = sorted(p for p in self.source.rglob("*") if p.is_file() and p.suffix.lower() in NOISE_SUFFIXES)
        if not files:
            raise AugmentError(f"noise source {self.source} holds no audio file ({', '.join(NOISE_SUFFIXES)})")
        table = self._speakers_csv()
        rx = re.compile(speaker_regex) if speaker_regex else None
        self.files: list[NoiseFile] = []
        for p in files:
            rel = p.relative_to(self.source).as_posix()
            spk = table.get(rel, table.get(p.stem))
            if spk is None and speakers:
                spk = speakers.get(str(p.resolve()))
            if spk is None and rx is not None:
                m = rx.search(p.stem)
                spk = m.group(1) if m and m.groups() else None
            self.files.append(NoiseFile(p, spk or None))
        self.sample_rate = sample_rate
        self._audio: dict[int, np.ndarray] = {}

    def _speakers_csv(self) -> dict[str, str]:
        path = self.source / "speakers.csv"
        if not path.is_file():
            return {}
        out = {}
        from emo.extract.datasets.base import DatasetError, read_csv

        try:
            rows = read_csv(path, ["speaker"], any_of=[["path", "name"]])  # the strict reader
        except DatasetError as e:
            raise AugmentError(str(e)) from None
        if True:
            for i, row in enumerate(rows, start=2):
                key = row.get("path") or row.get("name")
                if not key or "speaker" not in row:
                    raise AugmentError(f"{path} row {i}: needs a path (or name) and a speaker column")
                out[key] = row["speaker"]
        return out

    def hash(self) -> str:
        """SHA-256 (16 hex digits) over the noise files' relative paths and contents: changes when any file does."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.path.relative_to(self.source).as_posix().encode())
            with open(f.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()[:16]

    def audio(self, i: int) -> np.ndarray:
        """Decoded float32 (T,) audio of file ``i`` (cached).

        Raises:
            emo.extract.media.MediaError: the file cannot be decoded.
        """
        if i not in self._audio:
            from emo.extract.media import load_audio

            self._audio[i] = load_audio(self.files[i].path, self.sample_rate)
        return self._audio[i]

    def candidates(self, speaker: str | None, media: Path | None = None) -> list[int]:
        """Indices of files usable as noise for a clip of ``speaker`` (and file ``media``): never the
        clip's own file, never a file of the same (known) speaker."""
        own = str(Path(media).resolve()) if media is not None else None
        return [i for i, f in enumerate(self.files)
                if (speaker is None or f.speaker is None or f.speaker != speaker)
                and (own is None or str(f.path.resolve()) != own)]


@dataclass
class NoiseAugment:
    """Speech-noise mixing (MER-NOISE audio corruption).

    For each clip: an SNR drawn uniformly from ``snrs`` (dB, default the paper's 5..11), a
    noise file drawn uniformly from the :class:`NoiseBank` files of *other* speakers, a random
    offset into it (the noise is tiled when shorter than the clip), mixed by :func:`mix_at_snr`.
    A silent clip is left unchanged (no SNR is defined); silent noise files are skipped.
    """

    bank: NoiseBank
    snrs: list[int] = field(default_factory=lambda: list(range(5, 12)))
    seed: int = 0
    tag: str = "noise"
    spec: str = ""

    def choose(self, name: str, n_samples: int, speaker: str | None, media: Path | None = None) -> dict[str, Any]:
        """The deterministic choice for one clip: ``snr`` (dB), ``file`` (index), ``offset`` (samples).

        Raises:
            AugmentError: no noise file of another speaker exists.
        """
        rng = sample_rng(self.seed, name)
        snr = int(rng.choice(self.snrs))
        cands = self.bank.candidates(speaker, media)
        if not cands:
            raise AugmentError(f"{name}: no noise file in {self.bank.source} from a speaker other than {speaker!r}")
        order = rng.permutation(len(cands))
        return {"snr": snr, "order": [cands[j] for j in order], "u": float(rng.random())}

    def apply(self, name: str, audio: np.ndarray, speaker: str | None = None, media: Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Mix one clip (float32 (T,)) with noise; returns (mixed float32 (T,), info: ``snr``, ``noise``
        (file path), ``offset``, ``noise_speaker``)."""
        a = np.asarray(audio, dtype=np.float32)
        if power(a) == 0 or a.size == 0:
            return a, {"snr": None, "noise": None, "silent": True}
        c = self.choose(name, a.size, speaker, media)
        from emo.extract.media import MediaError

        skipped = []
        for i in c["order"]:  # first usable (non-silent, decodable) file in this clip's random order
            try:
                n = self.bank.audio(i)
            except MediaError as e:
                skipped.append(str(e))
                n = np.zeros(0, np.float32)
            if n.size == 0 or power(n) == 0:
                skipped.append(f"{self.bank.files[i].path}: silent")
                continue
            reps = math.ceil((a.size + n.size) / n.size)
            tiled = np.tile(n, reps) if reps > 1 else n
            offset = int(c["u"] * n.size)
            seg = tiled[offset:offset + a.size]
            mixed, _ = mix_at_snr(a, seg, c["snr"])
            return mixed, {"snr": c["snr"], "noise": str(self.bank.files[i].path), "offset": offset,
                           "noise_speaker": self.bank.files[i].speaker}
        raise AugmentError(f"{name}: every candidate noise file in {self.bank.source} is silent or unreadable "
                           f"({'; '.join(skipped[:3])})")

    def provenance(self) -> dict[str, Any]:
        return {"augment": self.spec or f"noise:snr={self.snrs[0]}-{self.snrs[-1]},source={self.bank.source}",
                "augment_seed": int(self.seed), "augment_kind": "noise",
                "noise_source": str(self.bank.source.resolve()), "noise_files": len(self.bank.files),
                "noise_files_hash": self.bank.hash(), "noise_snr_db": ";".join(map(str, self.snrs))}


# ---------------------------------------------------------------------------
# Video: the four MER-NOISE image corruptions on aligned face crops
# ---------------------------------------------------------------------------

@dataclass
class VideoCorruption:
    """Solarize, Gaussian blur, rotation and cutout on aligned face crops (MER-NOISE video).

    Each corruption with a non-zero strength fires per clip with probability ``p`` and is applied
    to every crop of the clip alike (a clip-level corruption, like a bad camera):

    * ``solarize``: threshold in [0, 255]; pixels at or above it are inverted
      (``torchvision.transforms.v2.functional.solarize``); lower = stronger. 0 = off.
    * ``blur``: Gaussian sigma in pixels (kernel ``2·ceil(3σ)+1``; ``v2.functional.gaussian_blur``).
    * ``rotate``: maximum angle in degrees; the angle is uniform in [-rotate, rotate]
      (``v2.functional.rotate``, zero fill).
    * ``cutout``: side of a square hole as a fraction of the crop side, at a random position,
      filled with zeros (``v2.functional.erase``).

    The paper gives the corruption types, not their strengths: these are emo's knobs.
    """

    solarize: float = 0.0
    blur: float = 0.0
    rotate: float = 0.0
    cutout: float = 0.0
    p: float = 1.0
    seed: int = 0
    tag: str = "video"
    spec: str = ""

    def apply(self, name: str, crops: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Corrupt uint8 (F, H, W, 3) crops; returns (uint8 (F, H, W, 3), info of what fired)."""
        import torch
        from torchvision.transforms.v2 import functional as TF

        rng = sample_rng(self.seed, name)
        fire = {k: bool(getattr(self, k) > 0 and rng.random() < self.p) for k in ("solarize", "blur", "rotate", "cutout")}
        angle = float(rng.uniform(-self.rotate, self.rotate))
        pos = rng.random(2)
        info: dict[str, Any] = {k: v for k, v in fire.items()}
        if crops.size == 0 or not any(fire.values()):
            return crops, info
        x = torch.as_tensor(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)  # (F, 3, H, W) uint8
        h, w = x.shape[-2:]
        if fire["solarize"]:
            x = TF.solarize(x, threshold=float(self.solarize))
        if fire["blur"]:
            k = 2 * math.ceil(3 * self.blur) + 1
            x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(self.blur)] * 2)
        if fire["rotate"]:
            x = TF.rotate(x, angle=angle, fill=0)
            info["angle"] = angle
        if fire["cutout"]:
            side_h, side_w = max(1, round(self.cutout * h)), max(1, round(self.cutout * w))
            i, j = int(pos[0] * (h - side_h + 1)), int(pos[1] * (w - side_w + 1))
            x = TF.erase(x, i, j, side_h, side_w, v=torch.zeros((), dtype=x.dtype))
            info["cutout_at"] = [i, j]
        return x.permute(0, 2, 3, 1).contiguous().numpy(), info

    def provenance(self) -> dict[str, Any]:
        return {"augment": self.spec or f"video:solarize={self.solarize},blur={self.blur},rotate={self.rotate},cutout={self.cutout}",
                "augment_seed": int(self.seed), "augment_kind": "video"}


def parse_augment(spec: str, sample_rate: int = 16000, speakers: dict[str, str | None] | None = None,
                  seed: int | None = None) -> NoiseAugment | VideoCorruption:
    """Parse one ``--augment`` spec (module docstring) into an augmentation.

    Args:
        spec: ``noise:...`` or ``video:...``.
        sample_rate: audio rate of the noise files (Hz). speakers: resolved media path → speaker
            for noise files that are samples of the dataset (see :class:`NoiseBank`).
        seed: default seed when the spec has none.

    Raises:
        AugmentError: unknown kind or option, bad values, a missing or empty noise source.
    """
    kind, opts = _options(spec)
    s = int(opts.pop("seed", seed if seed is not None else 0))
    tag = opts.pop("name", kind)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
        raise AugmentError(f"--augment {spec!r}: name {tag!r} must be letters, digits, '_', '-' or '.'")
    if kind == "noise":
        if "source" not in opts:
            raise AugmentError(f"--augment {spec!r}: needs source=DIR (a folder of speech recordings)")
        bank = NoiseBank(opts.pop("source"), sample_rate, speakers, opts.pop("speaker_regex", None))
        snrs = parse_range(opts.pop("snr", "5-11"), "snr")
        check_snr(snrs, spec)
        if opts:
            raise AugmentError(f"--augment {spec!r}: unknown option(s) {', '.join(opts)} (noise takes snr, source, seed, name, speaker_regex)")
        return NoiseAugment(bank, snrs, s, tag, spec)
    if kind == "video":
        try:
            vals = {k: float(opts.pop(k, 0.0)) for k in ("solarize", "blur", "rotate", "cutout")}
            p = float(opts.pop("p", 1.0))
        except ValueError as e:
            raise AugmentError(f"--augment {spec!r}: {e}") from None
        if opts:
            raise AugmentError(f"--augment {spec!r}: unknown option(s) {', '.join(opts)} (video takes solarize, blur, rotate, cutout, p, seed, name)")
        if not (0 <= vals["solarize"] <= 255 and vals["blur"] >= 0 and 0 <= vals["rotate"] <= 180 and 0 <= vals["cutout"] < 1 and 0 <= p <= 1):
            raise AugmentError(f"--augment {spec!r}: need solarize in [0, 255], blur >= 0, rotate in [0, 180], cutout in [0, 1), p in [0, 1]")
        if not any(vals.values()):
            raise AugmentError(f"--augment {spec!r}: give at least one of solarize, blur, rotate, cutout")
        return VideoCorruption(**vals, p=p, seed=s, tag=tag, spec=spec)
    raise AugmentError(f"--augment {spec!r}: unknown kind {kind!r}; use noise:... or video:...")


class AugmentedEncoder:
    """An encoder whose inputs are corrupted first; it writes to its own store ``<name>+<tag>``.

    Wraps any :class:`emo.extract.encoders.base.Encoder` (everything not overridden here is the
    wrapped encoder's: modality, layers, dims, cost, batch budget). Audio augmentations apply to
    audio encoders' :class:`AudioInput`, video corruptions to face encoders' :class:`FaceInput`;
    other pairs raise :class:`AugmentError` at construction.

    Provenance: the wrapped encoder's, plus the augmentation's keys (``augment``,
    ``augment_seed``, ``noise_files_hash``, ...); ``weights_hash`` becomes a hash of the clean
    weights hash and those keys (so a store resumes only under the same augmentation) and the
    clean one is kept as ``clean_weights_hash``; ``clean_encoder`` names the wrapped encoder.

    Args:
        inner: the encoder. augment: :class:`NoiseAugment` or :class:`VideoCorruption`.
        samples: name → (speaker, media path) of the dataset, for speaker-independent noise.
        log: optional callable receiving ``(name, info)`` for every corrupted input.
    """

    def __init__(self, inner, augment: NoiseAugment | VideoCorruption,
                 samples: dict[str, tuple[str | None, Path | None]] | None = None,
                 log: Callable[[str, dict], None] | None = None) -> None:
        if isinstance(augment, NoiseAugment) and inner.modality != "audio":
            raise AugmentError(f"--augment {augment.spec}: audio noise needs an audio encoder, {inner.name} is {inner.modality}")
        if isinstance(augment, VideoCorruption) and inner.modality != "face":
            raise AugmentError(f"--augment {augment.spec}: video corruptions need a face encoder, {inner.name} is {inner.modality}")
        self.inner = inner
        self.augment = augment
        self.samples = samples or {}
        self.log = log
        self.name = f"{inner.name}+{augment.tag}"
        self._prov: dict[str, Any] | None = None

    def __getattr__(self, key: str):  # everything else is the wrapped encoder's
        if key == "inner":
            raise AttributeError(key)
        return getattr(self.inner, key)

    def provenance(self) -> dict[str, Any]:
        if self._prov is None:
            p = dict(self.inner.provenance())
            extra = self.augment.provenance()
            h = hashlib.sha256(repr((p.get("weights_hash"), sorted(extra.items()))).encode()).hexdigest()[:16]
            p.update(extra, clean_encoder=self.inner.name, clean_weights_hash=p.get("weights_hash", ""),
                     weights_hash=h, encoder=self.name)
            self._prov = p
        return dict(self._prov)

    def encode(self, batch: list) -> list[Encoded]:
        items = []
        for item in batch:
            spk, media = self.samples.get(item.name, (None, None))
            if isinstance(item, AudioInput) and isinstance(self.augment, NoiseAugment):
                a, info = self.augment.apply(item.name, item.audio, spk, media)
                items.append(AudioInput(item.name, a))
            elif isinstance(item, FaceInput) and isinstance(self.augment, VideoCorruption):
                c, info = self.augment.apply(item.name, item.crops)
                items.append(FaceInput(item.name, c))
            else:
                items.append(item)
                info = {}
            if self.log is not None:
                self.log(item.name, info)
        return self.inner.encode(items)


def augment_encoders(encoders: list, specs: list[str], samples: list, sample_rate: int = 16000,
                     seed: int = 0) -> list:
    """Wrap ``encoders`` with each ``--augment`` spec (what ``emo extract --augment`` does).

    Every spec applies to the encoders of its modality (noise → audio encoders, video → face
    encoders); encoders of other modalities are dropped from an augmented run (their clean stores
    are what the user already has). Noise files that are samples of the dataset (same resolved
    path) take the sample's speaker.

    Returns:
        The wrapped encoders (each writes ``<encoder>+<tag>.h5``).

    Raises:
        AugmentError: a bad spec, or no encoder of the spec's modality.
    """
    speakers = {str(Path(s.media).resolve()): s.speaker for s in samples if s.media is not None}
    by_name = {s.name: (s.speaker, Path(s.media) if s.media is not None else None) for s in samples}
    out = []
    for spec in specs:
        aug = parse_augment(spec, sample_rate, speakers, seed)
        modality = "audio" if isinstance(aug, NoiseAugment) else "face"
        chosen = [e for e in encoders if e.modality == modality]
        if not chosen:
            raise AugmentError(f"--augment {spec}: no {modality} encoder among --encoder {', '.join(e.name for e in encoders)}")
        out.extend(AugmentedEncoder(e, aug, by_name) for e in chosen)
    return out
