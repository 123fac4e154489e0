"""The `emo` command line (typer). Heavy imports (torch, transformers) stay inside commands."""

from __future__ import annotations

import typer

from emo.extract.cli import extract, store_app
from emo.extract.models import app as models_app
from emo.fuse.cli import app as fuse_app
from emo.lexicon.cli import app as lexicon_app
from emo.pipeline import score_cmd

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="emo: multimodal emotion recognition. Extract layer-wise features once, fuse them fast.",
)
app.add_typer(fuse_app, name="fuse")
app.add_typer(lexicon_app, name="lexicon")
app.add_typer(models_app, name="models")
app.add_typer(store_app, name="store")
app.command("extract")(extract)
app.command("score")(score_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
