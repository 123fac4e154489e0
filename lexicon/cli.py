"""`emo lexicon ...` commands."""

import typer

app = typer.Typer(no_args_is_help=True, help="Discrete labels <-> valence-arousal-dominance (NRC-VAD).")
