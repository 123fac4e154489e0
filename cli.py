"""The `emo` command line (typer). Heavy imports (torch, transformers) stay inside commands.

Help and error messages use rich panels on a terminal and plain text otherwise (pipes, files,
CI logs), where click lays out the options: option names are never cut, whatever the width.
Exit statuses are the same for every command: see :mod:`emo.exitcodes`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

from emo import exitcodes as _exitcodes

if __name__ == "__main__":  # before the imports below (seconds): a signal now is recorded, and main() exits 130
    _exitcodes.install_signal_handlers()
    _startup = _exitcodes.deferred_interrupts()
    _startup.__enter__()

import typer  # noqa: E402

from emo import __version__  # noqa: E402
from emo.cliargs import GroupedCommand  # noqa: E402
from emo.exitcodes import TABLE, ExitCode  # noqa: E402
from emo.extract.datasets import dataset_names  # noqa: E402
from emo.extract.cli import extract, models_app, store_app  # noqa: E402
from emo.fuse.cli import app as fuse_app  # noqa: E402
from emo.fuse.tune_cli import app as tune_app  # noqa: E402
from emo.lexicon.cli import app as lexicon_app  # noqa: E402


def markup_mode() -> Optional[str]:
    """``"rich"`` when stdout is a terminal, else ``None`` (plain click help: nothing truncated)."""
    try:
        return "rich" if sys.stdout.isatty() else None
    except (AttributeError, ValueError):  # replaced or closed stdout
        return None


_EXIT_HELP = "Exit status: " + "; ".join(f"{int(code)} {text}" for code, text in TABLE) + "."

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=markup_mode(),
    context_settings={"max_content_width": 120},
    help="emo: multimodal emotion recognition. Extract layer-wise features once, fuse them fast.\n\n" + _EXIT_HELP,
)
app.add_typer(fuse_app, name="fuse")
app.add_typer(tune_app, name="tune")
app.add_typer(lexicon_app, name="lexicon")
app.add_typer(models_app, name="models")
app.add_typer(store_app, name="store")
app.command("extract", cls=GroupedCommand)(extract)


@app.command("score")
def score_cmd(
    paths: Optional[list[Path]] = typer.Argument(None, help="Media files and/or folders (searched recursively)."),
    run: Path = typer.Option(..., "--run", help="Run directory written by `emo fuse train`."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output CSV."),
    transcripts: Optional[Path] = typer.Option(None, "--transcripts", help="CSV with columns name,transcript (names: file stems), for runs with text features."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help=f"Score a dataset through its adapter ({', '.join(dataset_names())}: its names and transcripts) instead of files; with --root."),
    root: Optional[Path] = typer.Option(None, "--root", "-r", help="Dataset root, with --dataset."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="With --dataset: transcript column (e.g. chinese, english)."),
    name: Optional[str] = typer.Option(None, "--name", help="With --dataset: the dataset name given to emo extract --name (the folder under --features-dir)."),
    features_dir: Optional[Path] = typer.Option(None, "--features-dir", help="Reuse these emo extract stores (DIR/ENCODER.h5, or DIR/DATASET/ with --dataset) for files they hold, when their provenance matches the run."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help="NRC-VAD-Lexicon.txt, for runs with nrc_vad features and for vad_label/vad_words (else the run's, then $EMO_LEXICON)."),
    radius: float = typer.Option(0.25, "--radius", min=0.0, help="Runs with a VAD output: L2 radius of vad_words (0.25 as in Jia et al. 2024)."),
    vocabulary: str = typer.Option("affect", "--vocabulary", help="Runs with a VAD output: 'affect', 'emolex' or a word-list file (as emo lexicon nearest)."),
    vad_labels: Optional[str] = typer.Option(None, "--vad-labels", help="Runs with a VAD output: k-means classes, a label set (mer, meld, emodb, ...) or comma-separated names (default: the run's)."),
    track: Optional[str] = typer.Option(None, "--track", help="With --dataset mer2025/mer2026: the track (1, 2 or 3)."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or cuda:N."),
    cache: Optional[Path] = typer.Option(None, help="Keep extracted features here (default: temporary)."),
    face_detector: Optional[str] = typer.Option(None, help="mtcnn or haar, for runs with face features (default: the run's detector; another is refused)."),
    subset: Optional[str] = typer.Option(None, "--subset", help="With --dataset mer2023-mer2026: candidates (the clips to predict; default for mer2025/mer2026) | train (the labelled clips: in-sample for the fold models that saw them) | all."),
    submission: Optional[Path] = typer.Option(None, "--submission", help="Also write the challenge's submission file here (MER 2025/2026: name,discrete for Track 1; name,openset for Track 2), candidates only."),
    speakers: Optional[Path] = typer.Option(None, "--speakers", help="CSV with name and a speaker column (--speaker-column), for runs trained with --normalize speaker (with --dataset: its speakers by default)."),
    speaker_column: str = typer.Option("speaker", "--speaker-column", help="The speaker column of --speakers."),
    speaker_fallback: str = typer.Option("refuse", "--speaker-fallback", help="--normalize speaker runs, clips whose speaker is unknown or has fewer than --min-speaker-clips clips: refuse | global (each fold's global training statistics; written into every row)."),
    min_speaker_clips: int = typer.Option(5, "--min-speaker-clips", min=1, help="Fewest scored clips of a speaker whose own statistics normalise them."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", help="Pre-extracted wav files (NAME.wav) that audio encoders read instead of the media's own track (MER 2025/2026 training reads audio/NAME.wav)."),
    mtcnn_weights: Optional[Path] = typer.Option(None, help="Directory with pnet.pt, rnet.pt, onet.pt."),
    progress: bool = typer.Option(True, help="Show progress bars (also the model-loading bars of the Hugging Face libraries)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow encoders whose model repository ships Python code (Baichuan2) to run it (review it first)."),
) -> None:
    """Score new files with a trained run: name, relative path, flags, predicted label, one probability
    column per class; for runs with a VAD output also valence, arousal, dominance (in [-1, 1] for
    --vad-targets lexicon runs), vad_label (k-means label) and vad_words (words within --radius,
    ';'-separated, nearest first). A valence output keeps its training scale (config.json:
    valence_scale, [-5, 5] for MER).

    Broken files get an error row and are listed in the summary; exit status 3 when any failed.
    """
    from emo.extract.datasets import DatasetError, get_dataset
    from emo.extract.faces.core import FaceError
    from emo.extract.progress import model_loading_bars
    from emo.extract.store import StoreError
    from emo.extract.types import EncoderError
    from emo.fuse.run import RunError
    from emo.exitcodes import interrupt_message
    from emo.pipeline import SPEAKER_FALLBACKS, ScoreInterrupted, resolve_subset, score, write_submission

    if (dataset is None) != (root is None):
        raise typer.BadParameter("--dataset and --root go together")
    if dataset is not None and paths:
        raise typer.BadParameter("give either files/folders or --dataset/--root, not both")
    if dataset is None and not paths:
        raise typer.BadParameter("give files/folders to score, or --dataset NAME --root DIR")
    try:
        mer_subset = resolve_subset(dataset, subset)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if speaker_fallback not in SPEAKER_FALLBACKS:
        raise typer.BadParameter(f"--speaker-fallback must be one of {', '.join(SPEAKER_FALLBACKS)}")
    try:
        extra = {"subset": mer_subset} if mer_subset else {}
        adapter = get_dataset(dataset, str(root), text_column=text_column, track=track, dataset_name=name, **extra) if dataset else None
        fdir = features_dir
        if fdir is not None and adapter is not None and (fdir / adapter.dataset).is_dir():
            fdir = fdir / adapter.dataset
        with model_loading_bars(progress):  # --no-progress also silences the libraries' model-loading bars
            res = score(paths, run, out, device=device, cache=cache, face_detector=face_detector,
                        mtcnn_weights=str(mtcnn_weights) if mtcnn_weights else None, progress=progress,
                        transcripts=transcripts, adapter=adapter, features_dir=fdir, lexicon=lexicon,
                        warn=lambda m: typer.echo(f"warning: {m}", err=True), radius=radius, vocabulary=vocabulary,
                        vad_labels=vad_labels, trust_remote_code=trust_remote_code, speakers=speakers,
                        speaker_column=speaker_column, speaker_fallback=speaker_fallback,
                        min_speaker_clips=min_speaker_clips, audio_dir=audio_dir)
        if submission is not None:
            typer.echo(f"submission: {write_submission(out, submission, track)}")
    except ScoreInterrupted as e:
        typer.echo(interrupt_message(f"{e.done} of {e.n} files scored and written to {e.out}; the other rows have status "
                                     "'interrupted' (the CSV is incomplete); rerun the same command to resume"), err=True)
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except (RunError, DatasetError, StoreError, EncoderError, FaceError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    reused = sum(res["reused"].values())
    typer.echo(f"scored {res['ok']}/{res['n']} files -> {res['out']}"
               + (f" ({reused} encoder x file features reused from {fdir})" if reused else ""))
    for n, e in res["failed"].items():
        typer.echo(f"  failed {n}: {e}")
    if res["failed"]:
        raise typer.Exit(ExitCode.PARTIAL)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emo {__version__}")
        raise typer.Exit()


def load_plugins(modules: list[str]) -> None:
    """Import plug-in modules (their ``@register_head`` / ``@register_encoder`` decorators register
    what they define): the ``--plugin`` options, then ``$EMO_PLUGINS`` (comma-separated).

    Raises:
        typer.BadParameter: a module that cannot be imported (exit 2).
    """
    import importlib

    names = [*modules, *(m.strip() for m in os.environ.get("EMO_PLUGINS", "").split(",") if m.strip())]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure of a plug-in is a bad command line)
            raise typer.BadParameter(f"cannot import plug-in {name!r}: {type(e).__name__}: {e}", param_hint="--plugin") from None


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print emo's version and exit."),
    plugin: List[str] = typer.Option([], "--plugin", help="Import this module first (repeatable; also $EMO_PLUGINS, comma-separated): "
                                     "its registered fusion heads (emo.fuse.model.heads.register_head) or encoders become choices."),
) -> None:
    """emo: multimodal emotion recognition. Extract layer-wise features once, fuse them fast."""
    load_plugins(list(plugin))


def main() -> None:
    """Run the CLI. SIGINT and SIGTERM alike stop every command with exit 130 (:mod:`emo.exitcodes`): click turns an
    uncaught ``KeyboardInterrupt`` into "Aborted!" and exit 1, which is mapped back here when a signal was recorded.
    Once the command has returned, SIGINT and SIGTERM are ignored (:func:`emo.exitcodes.ignore_signals_at_exit`):
    the exit status is decided and every file is written, and CPython restores the default handlers while it
    shuts down, so a late SIGTERM would otherwise kill the process (-15) after a complete, correct run."""
    from emo.exitcodes import (ExitCode, check_interrupt, ensure_signal_handlers, interrupt_announced, interrupt_message,
                                interrupt_pending)

    app.rich_markup_mode = markup_mode()  # decided when the command runs, not when emo.cli was imported
    ensure_signal_handlers()  # already installed by `python -m emo.cli` (a recorded signal is kept)
    startup = globals().get("_startup")
    if startup is not None:  # end the start-up deferral: a signal received while importing stops us now
        startup.__exit__(None, None, None)
        globals().pop("_startup")
    try:
        check_interrupt()
        app()
    except SystemExit as e:  # typer turns an uncaught KeyboardInterrupt into a silent exit 130
        if interrupt_pending() is not None and e.code != 0:
            if not interrupt_announced():
                print(interrupt_message(), file=sys.stderr)
            sys.exit(int(ExitCode.INTERRUPTED))
        raise
    except KeyboardInterrupt:
        print(interrupt_message(), file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    finally:  # the command is over: a signal during interpreter shutdown is only recorded, never a traceback
        _exitcodes.deferred_interrupts().__enter__()
        _exitcodes.ignore_signals_at_exit()


if __name__ == "__main__":
    main()
