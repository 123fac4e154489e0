"""`emo fuse ...` commands."""

import typer

app = typer.Typer(no_args_is_help=True, help="Train fusion heads on cached features.")
