"""A run as a contract for scoring (issue 23): everything that changes an input value, recorded at
training time (:func:`input_contract`, ``config.json["input_contract"]``) and compared by
``emo score`` (:func:`contract_differences`), which recomputes what it can (the run's face-frame
rate, its face detector by default) and refuses, naming it, what differs.

Recorded per input: its modality; the audio source (``wav``: a pre-extracted file beside the
media, as MER 2025/2026's ``audio/NAME.wav``; ``media``: the media file's own track; ``mixed``);
sample rate; face detector, face-frame rate, crop size and decode size; transcript column
(``dataset_options``' ``text_column``; ``default`` when the adapter's default); lexicon hash
(``nrc_vad``); and for the run, the normalisation and where its statistics come from.
"""

from __future__ import annotations

import json
from typing import Any

#: Store attributes copied into the contract for face inputs (``emo extract``'s face-crop provenance).
FACE_KEYS = ("face_detector", "face_weights_hash", "fps", "face_size", "face_template", "max_side")


def _options(prov: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(prov.get("dataset_options") or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}


def audio_source(samples) -> str:
    """``wav`` when every sample's audio came from its own pre-extracted file (``Sample.audio``),
    ``media`` when none did, ``mixed`` otherwise (``samples``: :class:`emo.extract.datasets.base.Sample`)."""
    has = [s.audio is not None for s in samples if s.media is not None or s.audio is not None]
    if not has:
        return "none"
    return "wav" if all(has) else ("media" if not any(has) else "mixed")


def input_contract(inputs, samples, normalize: str) -> dict[str, Any]:
    """The ``input_contract`` of a run's ``config.json``: ``{"inputs": {name: {...}}, "normalization":
    {"mode", "statistics"}}`` (see the module docstring).

    Args:
        inputs: the run's :class:`emo.fuse.training.inputs.FeatureInput` list (with store provenance).
        samples: the training samples (their ``audio`` attribute says where audio came from).
        normalize: ``none``, ``global`` or ``speaker``.
    """
    out: dict[str, Any] = {}
    for inp in inputs:
        prov = dict(inp.provenance or {})
        rec: dict[str, Any] = {"modality": inp.modality}
        if inp.modality == "audio":
            rec["audio_source"] = audio_source(samples)
            rec["sample_rate"] = prov.get("sample_rate")
        elif inp.modality == "face":
            rec.update({k: prov.get(k) for k in FACE_KEYS if prov.get(k) not in (None, "")})
        elif inp.modality == "text":
            rec["text_column"] = _options(prov).get("text_column") or "default"
            if prov.get("lexicon_hash"):
                rec["lexicon_hash"] = prov.get("lexicon_hash")
        out[inp.name] = rec
    stats = {"none": "none", "global": "each fold's training rows (stored in the run)",
             "speaker": "each speaker's own clips (at scoring: the scored speakers' own clips)"}[normalize]
    return {"inputs": out, "normalization": {"mode": normalize, "statistics": stats}}


def contract_differences(contract: dict[str, Any], *, audio: str | None = None, face_detector: str | None = None,
                         text_column: str | None = None) -> list[str]:
    """What scoring would compute differently from training: one sentence per difference (empty:
    consistent). ``audio``: where the scored clips' audio comes from (:func:`audio_source`);
    ``face_detector``: the detector scoring would use; ``text_column``: the transcript column
    scoring reads (``None``: not known, e.g. a ``--transcripts`` file; ``default``: the adapter's
    default; neither is compared)."""
    out = []
    for name, rec in (contract or {}).get("inputs", {}).items():
        src = rec.get("audio_source")
        if audio and src in ("wav", "media") and audio != src:
            what = {"wav": "pre-extracted wav files (MER audio/NAME.wav)", "media": "the media files' own audio track"}
            out.append(f"{name}: the run's audio came from {what[src]}, scoring would read {what.get(audio, audio)}")
        det = rec.get("face_detector")
        if face_detector and det and det != face_detector:
            out.append(f"{name}: the run's face crops came from the {det!r} detector, scoring would use {face_detector!r}")
        col = rec.get("text_column")
        if text_column not in (None, "default") and col not in (None, "default") and col != text_column:
            out.append(f"{name}: the run's transcripts came from column {col!r}, scoring would read {text_column!r}")
    return out
