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
