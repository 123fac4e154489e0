"""MER 2025 / MER 2026 shaped folders built at test time from the real av clips (symlinks, no copies)."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np

#: clips.csv emotion -> MER class (disgust has no MER class: those clips join the candidates)
TO_MER = {"neutral": "neutral", "angry": "angry", "happy": "happy", "sad": "sad", "fearful": "worried", "surprised": "surprise"}
#: a valence on the MER [-5, 5] scale and open-vocabulary words per MER class (test labels, not data)
VALENCE = {"neutral": 0.0, "angry": -3.5, "happy": 4.0, "sad": -3.0, "worried": -2.0, "surprise": 1.0}
WORDS = {"neutral": "[]", "angry": "['angry', 'furious']", "happy": "happy, joyful", "sad": "['sad', 'lonely']",
         "worried": "worried, anxious, nervous", "surprise": "['surprised', 'amazed']"}


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_wav(path: Path, audio: np.ndarray, sr: int = 16000) -> None:
    """float32 mono in [-1, 1] -> 16-bit PCM wav."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def build_mer_pool(av: Path, root: Path, year: int, wavs: int = 3) -> dict:
    """Lay out ``root`` as the MER ``year`` (2025 or 2026) release from ``av/clips.csv``.

    Labelled clips (with a MER class) get Track 1 and Track 2 labels; the rest are candidates.
    The first ``wavs`` labelled clips also get a pre-extracted 16 kHz wav in ``audio/`` (decoded
    from the clip, then the clip's audio scaled by 0.5 so a test can tell which one was read).

    Returns:
        ``{"labelled": [(name, mer_class)], "candidates": [names], "wav": [names]}``.
    """
    from emo.extract.media import load_audio

    with open(av / "clips.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    (root / "video").mkdir(parents=True)
    (root / "audio").mkdir()
    (root / "openface_face").mkdir()
    labelled, candidates, subs = [], [], []
    for i, r in enumerate(rows):
        src = av / r["path"]
        name = f"sample_{i:08d}"
        (root / "video" / f"{name}{src.suffix}").symlink_to(src)
        mer = TO_MER.get(r["emotion"])
        (labelled.append((name, mer)) if mer else candidates.append(name))
        subs.append([name, "", r["transcript"]])
    wav_names = [n for n, _ in labelled[:wavs]]
    for n in wav_names:
        src = next((root / "video").glob(f"{n}.*"))
        write_wav(root / "audio" / f"{n}.wav", 0.5 * load_audio(src, 16000))
    _write(root / "subtitle_chieng.csv", ["name", "chinese", "english"], subs)
    half = len(labelled) // 2
    if year == 2025:
        _write(root / "track1_train_disdim.csv", ["name", "discrete", "valence"],
               [[n, c, VALENCE[c]] for n, c in labelled])
        _write(root / "track2_train_ovmerd.csv", ["name", "openset"], [[n, WORDS[c]] for n, c in labelled[:half]])
        _write(root / "track2_train_mercaptionplus.csv", ["name", "openset"], [[n, WORDS[c]] for n, c in labelled[half:]])
        _write(root / "track_all_candidates.csv", ["name"], [[n] for n in candidates])
    else:
        _write(root / "track1_train.csv", ["name", "discrete"], [[n, c] for n, c in labelled])
        _write(root / "track2_train_human.csv", ["name", "openset"], [[n, WORDS[c]] for n, c in labelled[:half]])
        _write(root / "track2_train_mercaptionplus.csv", ["name", "openset"], [[n, WORDS[c]] for n, c in labelled[half:]])
        _write(root / "track1_track2_candidate.csv", ["name"], [[n] for n in candidates])
        a = labelled[0][0]
        _write(root / "track3_emoprefer.csv", ["name", "a1", "a2", "preference"],
               [[a, "She looks happy and relaxed.", "She is furious.", "a1"],
                [labelled[1][0], "He sounds sad.", "He sounds calm.", "a2"]])
        _write(root / "track3_candidate.csv", ["name", "a1", "a2"],
               [[a, "A worried face.", "A neutral face."], [candidates[0], "Nothing happens.", "Joyful laughter."]])
    return {"labelled": labelled, "candidates": candidates, "wav": wav_names}
