"""`emo lexicon ...` commands.

    emo lexicon vad happy sad "apple juice"
    emo lexicon nearest 0.8 0.5 0.4 --radius 0.25
    emo lexicon classify -- -0.6 0.7 0.2 --labels meld

VAD values are in [-1, 1] (NRC-VAD's [0, 1] mapped with 2x - 1). Negative numbers
may be given directly or after ``--``. numpy/scikit-learn are imported inside the
commands so ``emo --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Discrete labels <-> valence-arousal-dominance (NRC-VAD).")

# Accept negative numbers as arguments (``classify -0.5 0.2 0.1``).
_NUMBERS = {"ignore_unknown_options": True}

_LEXICON = typer.Option(None, "--lexicon", help="NRC-VAD-Lexicon.txt or its folder (else $EMO_LEXICON, then emo's data dir).")
_EMOLEX = typer.Option(None, "--emolex", help="EmoLex word-level file or its folder (else $EMO_EMOLEX, then emo's data dir).")
_VOCAB = typer.Option(
    "affect", "--vocabulary",
    help="'affect' (emo's 185 curated affect terms), 'emolex' (NRC-VAD words EmoLex marks with an emotion) or a word-list file.",
)
_MIN_EMO = typer.Option(1, "--min-emotions", min=1, max=8, help="With --vocabulary emolex: emotions a word needs in EmoLex.")
_V = typer.Argument(..., help="Valence in [-1, 1].")
_A = typer.Argument(..., help="Arousal in [-1, 1].")
_D = typer.Argument(..., help="Dominance in [-1, 1].")

# What the commands report as "error: ..." (exit status: emo.exitcodes). LexiconNotFoundError is a
# FileNotFoundError; LexiconFormatError, UnknownLabelError and bad VAD/vocabulary input are ValueErrors.
_USER_ERRORS = (FileNotFoundError, ValueError)


def _fail(err: Exception) -> None:
    """Report ``err`` and exit: 2 (usage) for an unknown --labels set, 1 (error) for the rest
    (missing or malformed lexicon/vocabulary files, inputs the lexicon cannot place)."""
    from emo.exitcodes import ExitCode
    from emo.lexicon.labels import UnknownLabelError

    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=ExitCode.USAGE if isinstance(err, UnknownLabelError) else ExitCode.ERROR)


@app.command("vad")
def vad_cmd(
    words: list[str] = typer.Argument(..., help="Words to look up (case-insensitive)."),
    lexicon: Optional[Path] = _LEXICON,
) -> None:
    """Print each word's valence, arousal, dominance in [-1, 1], or 'not in lexicon'."""
    from emo.lexicon.nrc import load_nrc_vad

    try:
        lex = load_nrc_vad(lexicon)
    except _USER_ERRORS as e:
        _fail(e)
    for w in words:
        v = lex.lookup(w)
        if v is None:
            typer.echo(f"{w}\tnot in lexicon")
        else:
            typer.echo(f"{w}\t{v[0]:+.3f}\t{v[1]:+.3f}\t{v[2]:+.3f}")


@app.command("nearest", context_settings=_NUMBERS)
def nearest_cmd(
    valence: float = _V,
    arousal: float = _A,
    dominance: float = _D,
    radius: float = typer.Option(0.25, "--radius", min=0.0, help="L2 radius in VAD space (0.25 as in Jia et al. 2024)."),
    lexicon: Optional[Path] = _LEXICON,
    emolex: Optional[Path] = _EMOLEX,
    vocabulary: str = _VOCAB,
    min_emotions: int = _MIN_EMO,
) -> None:
    """Open vocabulary: every emotion word within --radius of (V, A, D), nearest first ('word<TAB>distance')."""
    from emo.lexicon.vocabulary import get_vocabulary

    try:
        vocab = get_vocabulary(vocabulary, lexicon, emolex, min_emotions)
        hits = vocab.nearest((valence, arousal, dominance), radius)
    except _USER_ERRORS as e:
        _fail(e)
    if not hits:
        typer.echo(f"no vocabulary word within {radius} of ({valence}, {arousal}, {dominance})")
    for w, d in hits:
        typer.echo(f"{w}\t{d:.3f}")


@app.command("classify", context_settings=_NUMBERS)
def classify_cmd(
    valence: float = _V,
    arousal: float = _A,
    dominance: float = _D,
    labels: str = typer.Option("mer", "--labels", help="Label set: mer, meld, emodb, mead, ravdess, cremad."),
    lexicon: Optional[Path] = _LEXICON,
    emolex: Optional[Path] = _EMOLEX,
    vocabulary: str = _VOCAB,
    min_emotions: int = _MIN_EMO,
) -> None:
    """Discrete label of (V, A, D): k-means over the emotion vocabulary, centres started at the basic emotions."""
    from emo.lexicon.classifier import VADClassifier
    from emo.lexicon.vocabulary import get_vocabulary

    try:
        vocab = get_vocabulary(vocabulary, lexicon, emolex, min_emotions)
        clf = VADClassifier(labels, vocabulary=vocab, lexicon=lexicon)
        label = clf.predict([valence, arousal, dominance])
    except _USER_ERRORS as e:
        _fail(e)
    typer.echo(label)
