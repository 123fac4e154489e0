"""Model-loading progress bars (Hugging Face Hub downloads, transformers' "Loading weights" and
checkpoint-shard bars, open_clip's Hub downloads) switched off with a command's ``--no-progress``.

Those bars belong to the libraries, not to emo's own tqdm bars, so ``--no-progress`` has to
reach them through the libraries' switches: ``huggingface_hub.utils.disable_progress_bars`` and
``transformers.utils.logging.disable_progress_bar`` when the libraries are loaded, and the
``HF_HUB_DISABLE_PROGRESS_BARS`` environment variable, which both read when imported later
(also in dask worker processes started afterwards). torchvision's ImageNet weight download
(``resnet50`` default source) prints its own bar and is not covered.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


def _transformers_logging():
    return sys.modules.get("transformers.utils.logging")


@contextlib.contextmanager
def model_loading_bars(enabled: bool) -> Iterator[None]:
    """Within the block, model-loading progress bars are shown only when ``enabled``; the previous
    state is restored on exit.

    ``enabled=True`` changes nothing (a user's ``HF_HUB_DISABLE_PROGRESS_BARS=1`` still wins, and
    so does ``HF_HUB_DISABLE_PROGRESS_BARS=0`` over ``enabled=False``). huggingface_hub is imported
    here, before the variable is set for child processes, because it reads the variable once at
    import and would otherwise keep the bars off for the rest of the process.
    """
    if enabled:
        yield
        return
    import warnings

    from huggingface_hub import utils as hub_utils

    was_on = not hub_utils.are_progress_bars_disabled()
    before = os.environ.get(_ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "cannot disable: HF_HUB_DISABLE_PROGRESS_BARS=0 has priority"
        hub_utils.disable_progress_bars()
        tf = _transformers_logging()
        if tf is not None:
            tf.disable_progress_bar()
    if before is None:
        os.environ[_ENV] = "1"  # dask workers and other child processes started inside the block
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_ENV, None)
        if was_on:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hub_utils.enable_progress_bars()
                tf = _transformers_logging()
                if tf is not None:
                    tf.enable_progress_bar()
