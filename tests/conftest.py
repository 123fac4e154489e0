"""Shared fixtures: real data from ../shared/data (or $EMO_SHARED_DATA), tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("EMO_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """Root of the real recordings; skips (with the reason) when absent."""
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data not found at {d} (set EMO_SHARED_DATA)")
    return d


def pytest_collection_modifyitems(config, items):
    """Tests that read the real recordings (the ``shared`` fixture) get the ``shared`` marker, so
    ``make test-fast`` (``-m "not slow and not shared"``) leaves them to ``make test``."""
    for item in items:
        if "shared" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)
