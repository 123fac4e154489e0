"""`emo models ...`: list encoders, fetch weights that install offline (MTCNN)."""

import typer

app = typer.Typer(no_args_is_help=True, help="Encoders and model weights.")


@app.command("list")
def list_models() -> None:
    """List registered encoders with their default sources."""
    from emo.extract.registry import REGISTRY

    for name, e in REGISTRY.items():
        typer.echo(f"{name:16s} {e.modality:6s} {e.source or '-':45s} {e.summary}")
