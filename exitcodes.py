"""Exit status of every ``emo`` command: one meaning per code, the same in ``emo extract``,
``emo score``, ``emo fuse ...``, ``emo lexicon ...``, ``emo store ...`` and ``emo models ...``.

=====  ===============  ===========================================================================
code   name             meaning
=====  ===============  ===========================================================================
0      ``OK``           everything asked for was done
1      ``ERROR``        the command stopped without finishing: unreadable or inconsistent input
                        (missing store, lexicon or run directory, stores that do not match, disk
                        full, store in use, ``--strict`` stop at a per-sample error)
2      ``USAGE``        the command line is wrong: unknown option, missing or invalid option value,
                        options that cannot go together (click/typer's own code for usage errors)
3      ``PARTIAL``      the command finished but some samples failed; they are listed in the
                        summary (and, for ``emo extract``, in each store's ``failed/`` group; for
                        ``emo score``, as error rows of the output CSV)
130    ``INTERRUPTED``  stopped by SIGINT/SIGTERM; finished work is kept (rerun to resume)
=====  ===============  ===========================================================================

This module imports nothing from emo, so every layer (lexicon, extract, fuse, the top-level CLI)
may use it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit statuses of the ``emo`` CLI (see the module docstring for their meaning)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    INTERRUPTED = 130


#: (code, one-line meaning) rows, in the order of the table above (used for help texts and the README).
TABLE: tuple[tuple[int, str], ...] = (
    (ExitCode.OK, "everything asked for was done"),
    (ExitCode.ERROR, "stopped without finishing: unreadable or inconsistent input, missing files, disk full, --strict"),
    (ExitCode.USAGE, "wrong command line: unknown option, missing or invalid value, incompatible options"),
    (ExitCode.PARTIAL, "finished, but some samples failed (listed in the summary)"),
    (ExitCode.INTERRUPTED, "interrupted (SIGINT/SIGTERM); finished work is kept"),
)


# --------------------------------------------------------------------------------------------------
# Interrupts (issue 25): SIGINT and SIGTERM alike, never swallowed by a C-extension callback

import contextlib as _contextlib  # noqa: E402
import signal as _signal  # noqa: E402
import threading as _threading  # noqa: E402

_pending: int | None = None
_defer_depth = 0
_announced = False


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received (``signum``); every ``emo`` command maps it to exit 130 with finished work kept."""

    def __init__(self, signum: int = _signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(_signal.Signals(self.signum).name)


def _handler(signum, frame) -> None:  # noqa: ARG001
    global _pending
    first = _pending is None
    if first:
        _pending = int(signum)
    if _defer_depth and first:
        return  # recorded: raised at the next check_interrupt(), outside the C code that is running
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Make SIGTERM behave like SIGINT (raise :class:`Interrupted`, a ``KeyboardInterrupt``) and record every
    such signal, so a signal that a C-extension callback swallows (openSMILE's ctypes callback prints
    "Exception ignored on calling ctypes callback" and carries on) is still seen by
    :func:`check_interrupt`. No-op outside the main thread. Clears a previously recorded signal."""
    global _pending
    _pending = None
    if _threading.current_thread() is not _threading.main_thread():
        return
    for sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(sig, _handler)


def interrupt_pending() -> int | None:
    """The signal number recorded since :func:`install_signal_handlers` (``None``: none)."""
    return _pending


def check_interrupt() -> None:
    """Raise :class:`Interrupted` if SIGINT/SIGTERM arrived, even one a callback swallowed.

    Call it after each unit of work (a clip, a batch, a fold), and before keeping that unit's result: a
    result computed while a signal arrived is discarded, never stored.
    """
    if _pending is not None:
        raise Interrupted(_pending)


@_contextlib.contextmanager
def deferred_interrupts():
    """Inside, the first SIGINT/SIGTERM is only recorded (a second one raises at once): wrap calls into C
    extensions whose callbacks would swallow the ``KeyboardInterrupt``, then :func:`check_interrupt`."""
    global _defer_depth
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1


def ensure_signal_handlers() -> None:
    """:func:`install_signal_handlers` unless they are installed already (then a recorded signal is kept)."""
    if _threading.current_thread() is not _threading.main_thread():
        return
    if _signal.getsignal(_signal.SIGINT) is not _handler or _signal.getsignal(_signal.SIGTERM) is not _handler:
        install_signal_handlers()


def ignore_signals_at_exit() -> None:
    """Ignore SIGINT and SIGTERM from now on (main thread only): for the end of a command, when its exit
    status is decided and its files are written. CPython's shutdown puts back the default handler of every
    signal that has a Python handler (then a SIGTERM kills the process with -15 although nothing is lost);
    an ignored signal stays ignored. Not for code that carries on working afterwards."""
    if _threading.current_thread() is not _threading.main_thread():
        return
    for sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(sig, _signal.SIG_IGN)


def interrupt_message(what: str = "finished work is kept; rerun the same command to resume") -> str:
    """One line for stderr: which signal stopped the command and what was kept."""
    global _announced
    _announced = True
    name = _signal.Signals(_pending).name if _pending is not None else "SIGINT"
    return f"interrupted ({name}): {what}"


def interrupt_announced() -> bool:
    """Whether :func:`interrupt_message` was called (the command already said why it stopped)."""
    return _announced


def clear_interrupt() -> None:
    """Forget a recorded signal (for embedding: after handling :class:`Interrupted` and carrying on)."""
    global _pending
    _pending = None
