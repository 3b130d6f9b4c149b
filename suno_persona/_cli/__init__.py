"""The ``suno-persona`` command: one persona, a batch streamed from a file, or an emulator.

::

    suno-persona generate --task-id T --suno-id S --name N [...]   prints {"persona_id": ...}
    suno-persona batch INPUT -o OUTPUT [--concurrency N]          one record per line
    suno-persona emulator [--port P] [--api-key K ...]            serves until interrupted

Exit status: 0 when every request succeeded, 1 when one failed (the API's error, or a
request that broke the schema), 2 when the command could not start (a bad option, no API
key, an unreadable INPUT, an OUTPUT that cannot be written or is not a batch file),
``128 + signal`` when ``generate`` or ``batch`` is stopped by SIGINT or SIGTERM (130 for
Ctrl-C), 141 when ``batch``'s standard output is closed by its reader. The emulator exits 0
on SIGINT or SIGTERM.

Modules: :mod:`._main` (the parser, ``main``, ``generate``, ``emulator``), :mod:`._batch`
(the batch engine), :mod:`._records` (pure: input lines, records, resume),
:mod:`._console` (what is printed), :mod:`._connect` (options into a client; signals). The
command uses the public API only; the API key never appears in anything it prints.
"""

from __future__ import annotations

from suno_persona._cli._main import main

__all__ = ["main"]
