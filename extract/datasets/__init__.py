"""Dataset adapters: ``--dataset NAME --root DIR`` picks one.

Every adapter yields :class:`Sample` records (name, media path, transcript,
labels, speaker, split). An adapter registers itself with the :func:`register_dataset`
decorator next to its class; this package imports every adapter module, so
:func:`adapters` / :func:`dataset_names` list them all.
"""

from __future__ import annotations

from typing import Any

from emo.extract.datasets.base import (
    ADAPTERS,
    MER_CLASSES,
    DatasetAdapter,
    DatasetError,
    Sample,
    read_manifest,
    register_dataset,
    write_manifest,
)
from emo.extract.datasets.emodb import EmoDB
from emo.extract.datasets.folder import Folder
from emo.extract.datasets.meld import MELD
from emo.extract.datasets.mer import MER2023, MER2024


def adapters() -> dict[str, type[DatasetAdapter]]:
    """Every registered adapter, name -> class (registered by :func:`register_dataset` at each class)."""
    return ADAPTERS


def dataset_names() -> list[str]:
    """Sorted names of the registered adapters (``--dataset`` choices)."""
    return sorted(ADAPTERS)


def get_dataset(name: str, root: str, **options: Any) -> DatasetAdapter:
    """Build the adapter called ``name`` over ``root``.

    Raises:
        DatasetError: unknown name (the message lists the known ones) or unusable root.
    """
    if name not in ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](root, **{k: v for k, v in options.items() if v is not None})


__all__ = ["ADAPTERS", "MER2023", "MER2024", "MELD", "MER_CLASSES", "DatasetAdapter", "DatasetError", "EmoDB",
           "Folder", "Sample", "adapters", "dataset_names", "get_dataset", "read_manifest", "register_dataset",
           "write_manifest"]
