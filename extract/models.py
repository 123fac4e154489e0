"""`emo models ...`: list encoders, fetch weights that install offline (MTCNN)."""

import typer

app = typer.Typer(no_args_is_help=True, help="Encoders and model weights.")


@app.command("list")
def list_models() -> None:
    """List registered encoders with their default sources."""
    from emo.extract.registry import REGISTRY

    for name, e in REGISTRY.items():
        typer.echo(f"{name:16s} {e.modality:6s} {e.source or '-':45s} {e.summary}")


@app.command("fetch")
def fetch(
    model: str = typer.Argument(..., help="Model whose weights to fetch: mtcnn."),
    dest: str = typer.Option(None, "--dest", help="Target directory (default $EMO_HOME/models/mtcnn or ~/.cache/emo/models/mtcnn)."),
    wheel: str = typer.Option(None, "--wheel", help="Use this local facenet-pytorch wheel instead of downloading it."),
    force: bool = typer.Option(False, "--force", help="Fetch again even if verified files are present."),
) -> None:
    """Download weights that cannot come from a model hub, verify their SHA-256 and cache them.

    ``mtcnn``: the official MTCNN weights are extracted from the facenet-pytorch wheel
    (pip download --no-deps; the package is never installed).
    """
    from emo.extract.faces import FaceError, fetch_mtcnn

    if model.lower() != "mtcnn":
        typer.echo(f"unknown model {model!r}: fetchable models are: mtcnn", err=True)
        raise typer.Exit(2)
    try:
        d = fetch_mtcnn(dest, wheel=wheel, force=force)
    except FaceError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(f"MTCNN weights verified in {d}")
