"""What the command shows on the console: error lines, logs, the progress display, the summary.

Everything goes to stderr except a command's result (``generate``'s JSON, ``batch -o -``'s
records, ``emulator``'s URL). Keys in use are masked in all of it. The retry counter and
the progress display are fed by the client's events (``event_hooks``), never by log text.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Final, Protocol, TextIO

import attrs

from suno_persona import APIError, SunoPersonaError
from suno_persona.events import RetryScheduled

__all__ = [
    "Logs",
    "Progress",
    "RetryCounter",
    "Secrets",
    "Tally",
    "describe",
    "print_error",
    "progress",
    "summary",
    "write",
]

_LOGGER: Final = "suno_persona"
_REFRESH: Final = 0.1


def write(stream: TextIO, line: str) -> None:
    """Write one line and flush it."""
    stream.write(line + "\n")
    stream.flush()


def print_error(text: str) -> None:
    """The one-line error of a command, on stderr."""
    write(sys.stderr, f"error: {text}")


def describe(error: SunoPersonaError) -> str:
    """An error in one line, with the attempts made when there were several."""
    text = str(error)
    if error.attempts > 1 and not isinstance(error, APIError):
        text += f" after {error.attempts} attempts"
    return text


class Secrets:
    """The keys in use, to be masked in everything the command prints or writes."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def add(self, value: str) -> None:
        """Mask ``value`` from now on."""
        if value and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every key in use replaced by ``***``."""
        for value in self._values:
            text = text.replace(value, "***")
        return text


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (rich's progress redirects it)."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__(logging.DEBUG)
        self._secrets = secrets
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._secrets.redact(self.format(record))
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  # pragma: no cover - logging must never break the run
            self.handleError(record)


class RetryCounter:
    """An event hook that counts the retries the client schedules.

    Attributes:
        count: Retries so far.
        changed: Called after each one (the progress display redraws).
    """

    def __init__(self) -> None:
        self.count = 0
        self.changed: Callable[[], None] = _nothing

    def __call__(self, event: object) -> None:
        if isinstance(event, RetryScheduled):
            self.count += 1
            self.changed()


def _nothing() -> None:
    pass


class Logs:
    """The logging set-up of one run (debug logs on stderr with ``-v``), and its retry counter."""

    def __init__(self, secrets: Secrets, *, verbose: bool) -> None:
        self.retries = RetryCounter()
        level = logging.DEBUG if verbose else logging.INFO
        # Without -v the library's records are swallowed here, not printed by logging's
        # last-resort handler: the command reports what went wrong in its own words.
        self._wiring: list[tuple[str, int, logging.Handler]] = [
            (_LOGGER, level, logging.NullHandler())
        ]
        if verbose:
            to_stderr = _StderrHandler(secrets)
            self._wiring += [(_LOGGER, level, to_stderr), ("aiohttp.access", level, to_stderr)]
        self._saved: list[tuple[logging.Logger, int, logging.Handler]] = []

    def __enter__(self) -> Logs:  # noqa: PYI034 - no typing.Self in 3.10
        for name, level, handler in self._wiring:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level, handler))
            logger.setLevel(level)
            logger.addHandler(handler)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for logger, level, handler in reversed(self._saved):
            logger.removeHandler(handler)
            logger.setLevel(level)
        self._saved.clear()


@attrs.define
class Tally:
    """What a batch run has done so far.

    Attributes:
        read: Non-blank lines read from INPUT.
        earlier: Lines that had a persona from an earlier run (not sent again).
        invalid: Lines that broke the schema (never sent).
        succeeded: Lines sent that got a persona.
        failed: Lines sent that got an error.
        total: Lines this run deals with, when known in advance (for the progress bar).
    """

    read: int = 0
    earlier: int = 0
    invalid: int = 0
    succeeded: int = 0
    failed: int = 0
    total: int | None = None
    started: float = attrs.field(factory=time.monotonic)

    @property
    def done(self) -> int:
        """Lines of this run that have their record."""
        return self.invalid + self.succeeded + self.failed

    @property
    def all_failed(self) -> int:
        """Lines that failed: invalid ones, and those the API refused."""
        return self.invalid + self.failed

    @property
    def not_run(self) -> int:
        """Lines read that have no record of this run or an earlier one."""
        return self.read - self.earlier - self.done

    def rate(self) -> float:
        """Lines done per second."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


def summary(tally: Tally, retries: int, where: str, *, interrupted: bool) -> str:
    """The last line of a batch run."""
    succeeded = tally.succeeded + tally.earlier
    lines = f"{tally.read} lines read" if interrupted else f"{tally.read} lines"
    parts = [lines, f"{succeeded} succeeded"]
    if tally.earlier:
        parts[-1] += f" ({tally.earlier} in an earlier run)"
    parts.append(f"{tally.all_failed} failed")
    if tally.not_run:
        parts.append(f"{tally.not_run} not run")
    elapsed = time.monotonic() - tally.started
    head = "interrupted" if interrupted else "done"
    return (
        f"{head}: {', '.join(parts)}; {retries} {'retry' if retries == 1 else 'retries'}; "
        f"{elapsed:.1f}s; records {where}"
    )


class Progress(Protocol):
    """Redraws the progress display, when there is one."""

    def update(self) -> None: ...


class _NoProgress:
    def update(self) -> None:
        pass


def _stats(tally: Tally, retries: RetryCounter) -> str:
    return (
        f"ok {tally.succeeded}  failed {tally.all_failed}  retries {retries.count}  "
        f"{tally.rate():.1f}/s"
    )


class _PlainProgress:
    """One line on a terminal, redrawn in place: for when rich is not installed."""

    def __init__(self, tally: Tally, retries: RetryCounter, stream: TextIO) -> None:
        self._tally = tally
        self._retries = retries
        self._stream = stream
        self._drawn = 0.0

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _REFRESH:
            return
        self._drawn = now
        tally = self._tally
        total = "?" if tally.total is None else tally.total
        text = f"batch {tally.done}/{total}  {_stats(tally, self._retries)}"
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()

    def close(self) -> None:
        self.update(force=True)
        self._stream.write("\n")
        self._stream.flush()


def shows_progress() -> bool:
    """Whether there is a terminal to draw progress on."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress(tally: Tally, retries: RetryCounter) -> Iterator[Progress]:
    """A progress display on stderr when it is a terminal: rich's when installed, else plain."""
    if not shows_progress():
        yield _NoProgress()
        return
    try:
        from rich.console import Console  # noqa: PLC0415 - optional: the [cli] extra
        from rich.progress import (  # noqa: PLC0415 - same
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        plain = _PlainProgress(tally, retries, sys.stderr)
        try:
            plain.update(force=True)
            yield plain
        finally:
            plain.close()
        return

    bar = Progress(
        TextColumn("batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("batch", total=tally.total, stats=_stats(tally, retries))

    class _Rich:
        def update(self) -> None:
            bar.update(task, completed=tally.done, stats=_stats(tally, retries))

    with bar:
        try:
            yield _Rich()
        finally:
            _Rich().update()
