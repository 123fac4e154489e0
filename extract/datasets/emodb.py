"""EmoDB, the Berlin Database of Emotional Speech (Burkhardt et al., Interspeech 2005)."""

from __future__ import annotations

import re

from emo.extract.datasets.base import DatasetAdapter, DatasetError, Sample, read_csv, register_dataset

#: File-name emotion letter -> label (German initials: Wut, Langeweile, Ekel, Angst, Freude, Trauer, Neutral).
EMODB_CODES = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
_NAME = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")


@register_dataset
class EmoDB(DatasetAdapter):
    """EmoDB: ``wav/SSTTTEV.wav`` (SS speaker, TTT sentence, E emotion letter, V take).

    Labels and speakers come from the file name; transcripts from ``labels.csv``
    (``transcription_de``) when it is present.
    """

    name = "emodb"
    classes = ["neutral", "anger", "boredom", "disgust", "fear", "happiness", "sadness"]

    def load(self) -> list[Sample]:
        wav_dir = self.root / "wav" if (self.root / "wav").is_dir() else self.root
        text: dict[str, str] = {}
        if (self.root / "labels.csv").is_file():
            for row in read_csv(self.root / "labels.csv", ["file"]):
                stem = row["file"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
                text[stem] = row.get("transcription_de", "")
        out = []
        for p in sorted(wav_dir.glob("*.wav")):
            m = _NAME.match(p.stem)
            if not m:
                raise DatasetError(f"emodb: {p} does not follow the SSTTTEV file-name code")
            out.append(Sample(name=p.stem, media=p, transcript=text.get(p.stem, ""),
                              discrete=EMODB_CODES[m.group(3)], speaker=m.group(1)))
        if not out:
            raise DatasetError(f"emodb: no .wav files under {wav_dir}")
        return out
