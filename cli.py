"""The `emo` command line (typer). Heavy imports (torch, transformers) stay inside commands.

Help and error messages use rich panels on a terminal and plain text otherwise (pipes, files,
CI logs), where click lays out the options: option names are never cut, whatever the width.
Exit statuses are the same for every command: see :mod:`emo.exitcodes`.
"""

from __future__ import annotations

import sys
from typing import Optional

from emo import exitcodes as _exitcodes

if __name__ == "__main__":  # before the imports below (seconds): a signal now is recorded, and main() exits 130
    _exitcodes.install_signal_handlers()
    _startup = _exitcodes.deferred_interrupts()
    _startup.__enter__()

import typer  # noqa: E402

from emo import __version__  # noqa: E402
from emo.exitcodes import TABLE  # noqa: E402
from emo.extract.cli import extract, store_app  # noqa: E402
from emo.extract.models import app as models_app  # noqa: E402
from emo.fuse.cli import app as fuse_app  # noqa: E402
from emo.fuse.tune_cli import app as tune_app  # noqa: E402
from emo.lexicon.cli import app as lexicon_app  # noqa: E402
from emo.pipeline import score_cmd  # noqa: E402


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
app.command("extract")(extract)
app.command("score")(score_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print emo's version and exit."),
) -> None:
    """emo: multimodal emotion recognition. Extract layer-wise features once, fuse them fast."""


def main() -> None:
    """Run the CLI. SIGINT and SIGTERM alike stop every command with exit 130 (:mod:`emo.exitcodes`): click turns an
    uncaught ``KeyboardInterrupt`` into "Aborted!" and exit 1, which is mapped back here when a signal was recorded."""
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


if __name__ == "__main__":
    main()
