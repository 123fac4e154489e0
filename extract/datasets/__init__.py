"""Dataset adapters: ``--dataset NAME --root DIR`` picks one.

Every adapter yields :class:`Sample` records (name, media path, transcript,
labels, speaker, split). Known adapters: see :data:`ADAPTERS`.
"""

from __future__ import annotations

from typing import Any

from emo.extract.datasets.base import (
    MER_CLASSES,
    DatasetAdapter,
    DatasetError,
    Sample,
    read_manifest,
    write_manifest,
)
from emo.extract.datasets.emodb import EmoDB
from emo.extract.datasets.folder import Folder
from emo.extract.datasets.meld import MELD
from emo.extract.datasets.mer import MER2023, MER2024

ADAPTERS: dict[str, type[DatasetAdapter]] = {a.name: a for a in (MER2023, MER2024, EmoDB, MELD, Folder)}


def get_dataset(name: str, root: str, **options: Any) -> DatasetAdapter:
    """Build the adapter called ``name`` over ``root``.

    Raises:
        DatasetError: unknown name (the message lists the known ones) or unusable root.
    """
    if name not in ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](root, **{k: v for k, v in options.items() if v is not None})


__all__ = ["ADAPTERS", "MER_CLASSES", "DatasetAdapter", "DatasetError", "Sample", "get_dataset",
           "read_manifest", "write_manifest"]
