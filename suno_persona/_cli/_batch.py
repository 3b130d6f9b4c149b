"""The ``batch`` command: a persona per line of INPUT, streamed, in bounded memory.

INPUT is read line by line and handed lazily to ``generate_as_completed``; each record is
appended to OUTPUT (flushed) as its request finishes, so records come in the order requests
finish, each with its ``line``. Memory holds the requests in flight, the line numbers of
those, and one bit per line that has a persona (for resume); never the file. A pipe or a
terminal is read by a thread (:mod:`suno_persona._cli._pipe`), so that waiting for its next
line never holds back the requests already under way.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Final, TextIO

from suno_persona import AsyncPersonaClient, Persona, PersonaRequest
from suno_persona._cli import _records
from suno_persona._cli._connect import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    connection,
    open_client,
    until_signal,
)
from suno_persona._cli._console import (
    Logs,
    Progress,
    Secrets,
    Tally,
    print_error,
    progress,
    shows_progress,
    summary,
    write,
)
from suno_persona._cli._pipe import Item, read_off_the_loop
from suno_persona._cli._records import Finished, Format, Parsed, Record
from suno_persona._cli._tasks import seed_from_file

__all__ = ["run_batch"]

STDIO: Final = "-"
_SIGPIPE: Final = 13  # the exit status of a command stopped by a closed pipe is 128 + 13


class _OutputClosed(Exception):  # noqa: N818 - a condition, not a bug
    """The reader of OUTPUT went away (a closed pipe)."""


class _Sink:
    """OUTPUT, appended to one flushed record at a time."""

    def __init__(self, stream: TextIO, where: str) -> None:
        self.stream = stream
        self.where = where

    def append(self, item: Record) -> None:
        try:
            self.stream.write(_records.dumps(item))
            self.stream.flush()
        except BrokenPipeError:
            raise _OutputClosed from None


def _form(args: argparse.Namespace) -> Format:
    if args.format is not None:
        return args.format  # type: ignore[no-any-return]  # argparse checked the choice
    return "csv" if str(args.input).lower().endswith(".csv") else "jsonl"


def _open_input(name: str) -> IO[bytes]:
    if name == STDIO:
        return sys.stdin.buffer
    try:
        stream = open(name, "rb")  # noqa: SIM115, PTH123 - closed by the caller's ExitStack
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    if stat.S_ISDIR(os.fstat(stream.fileno()).st_mode):
        stream.close()
        raise UsageError(f"cannot read {name}: Is a directory")
    return stream


def _parse(stream: IO[bytes], form: Format, stack: contextlib.ExitStack) -> Iterator[Item]:
    if form == "csv":
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
        stack.callback(text.detach)  # INPUT is closed (or not) as it was opened
        return _records.parse_csv(text)
    return _records.parse_jsonl(stream)


def _count(name: str, form: Format, finished: Finished) -> int | None:
    """Lines this run deals with, for the progress bar: only for a regular INPUT file."""
    if name == STDIO or not shows_progress():
        return None
    with Path(name).open("rb") as stream:
        lines = io.TextIOWrapper(stream, "utf-8-sig", "replace", "") if form == "csv" else stream
        return sum(1 for number in _records.count_lines(lines, form) if number not in finished)


def _open_output(name: str, source: str) -> tuple[TextIO, Finished]:
    """OUTPUT for appending, and the lines an earlier run finished (read once, streaming)."""
    if name == STDIO:
        return sys.stdout, Finished()
    path = Path(name)
    with contextlib.suppress(OSError):
        if source != STDIO and path.samefile(source):
            raise UsageError("OUTPUT is the INPUT file: choose another -o")
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        regular = True
    except OSError as error:
        raise UsageError(f"cannot write {name}: {error.strerror or error}") from None
    try:  # a pipe or a device (/dev/stdout) is only written to: reading it could block
        stream = path.open("a+b" if regular else "ab")
    except OSError as error:
        raise UsageError(f"cannot write {name}: {error.strerror or error}") from None
    try:
        return _text(stream), _resume(stream, name) if regular else Finished()
    except BaseException:
        stream.close()
        raise


def _text(stream: IO[bytes]) -> TextIO:
    return io.TextIOWrapper(stream, encoding="utf-8", write_through=True)


def _resume(stream: IO[bytes], name: str) -> Finished:
    """The lines an earlier run finished; a last line cut short by a crash is cut off."""
    stream.seek(0)
    try:
        finished, useful, size = _records.scan_records(stream)
    except _records.NotABatchFile as error:
        raise UsageError(
            f"{name} line {error.position} is not a batch record; not appending to it "
            "(choose another -o)"
        ) from None
    if useful < size:
        stream.truncate(useful)
    return finished


class _Router:
    """Where each parsed line goes: a request to send, or straight to OUTPUT as a record."""

    def __init__(self, finished: Finished, sink: _Sink, tally: Tally, redact: Secrets) -> None:
        self.finished = finished
        self.sink = sink
        self.tally = tally
        self.redact = redact
        self.pending: dict[int, int] = {}  # index in the fan-out -> line number
        self._index = 0

    def route(self, number: int, parsed: Parsed) -> PersonaRequest | None:
        """The request to send for line ``number``; ``None`` when there is none to send."""
        tally = self.tally
        tally.read += 1
        if number in self.finished:
            tally.earlier += 1
        elif isinstance(parsed, PersonaRequest):
            self.pending[self._index] = number
            self._index += 1
            return parsed
        else:
            tally.invalid += 1
            self.sink.append(_records.record(number, parsed, self.redact.redact))
        return None


def _requests(lines: Iterator[Item], router: _Router) -> Iterator[PersonaRequest]:
    """The requests to send, lazily; a line that is not valid gets its record on the way."""
    for number, parsed in lines:
        request = router.route(number, parsed)
        if request is not None:
            yield request


async def _requests_from(
    lines: AsyncIterator[Item], router: _Router
) -> AsyncIterator[PersonaRequest]:
    """:func:`_requests` of INPUT read off the loop (a pipe or a terminal)."""
    async for number, parsed in lines:
        request = router.route(number, parsed)
        if request is not None:
            yield request


async def _send(  # noqa: PLR0917 - private, called from one place
    client: AsyncPersonaClient,
    requests: Iterator[PersonaRequest] | AsyncIterator[PersonaRequest],
    pending: dict[int, int],
    concurrency: int,
    sink: _Sink,
    tally: Tally,
    secrets: Secrets,
    shown: Progress,
    wait_for_tasks: bool,
) -> None:
    results = client.generate_as_completed(
        requests, concurrency=concurrency, wait_for_task=wait_for_tasks
    )
    async with results:
        async for index, outcome in results:
            number = pending.pop(index)
            sink.append(_records.record(number, outcome, secrets.redact))
            if isinstance(outcome, Persona):
                tally.succeeded += 1
            else:
                tally.failed += 1
            shown.update()


async def run_batch(args: argparse.Namespace, secrets: Secrets, logs: Logs) -> int:
    """The ``batch`` command."""
    reach = connection(args, secrets)
    source, target = str(args.input), str(args.output)
    form = _form(args)
    with contextlib.ExitStack() as stack:
        stream = _open_input(source)
        if stream is not sys.stdin.buffer:
            stack.enter_context(stream)
        out, finished = _open_output(target, source)
        if out is not sys.stdout:
            stack.callback(_close_quietly, out)
        sink = _Sink(out, "on stdout" if target == STDIO else f"in {target}")
        tally = Tally(total=_count(source, form, finished))
        router = _Router(finished, sink, tally, secrets)
        requests: Iterator[PersonaRequest] | AsyncIterator[PersonaRequest]
        if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            requests = _requests(_parse(stream, form, stack), router)
        else:  # a pipe or a terminal: waiting for its next line must not stop the loop
            requests = _requests_from(read_off_the_loop(stream.fileno(), form), router)
        seeds = seed_from_file(source, form) if reach.emulate and source != STDIO else None
        async with open_client(
            reach,
            event_hooks=[logs.retries],
            tasks=seeds,
            task_poll_interval=args.poll_interval,
            check_tasks=args.wait_for_tasks,
        ) as client:
            if args.check_balance and await client.get_balance() <= 0:
                print_error("the account's balance is 0 credits: nothing was sent")
                return EXIT_FAILED
            with progress(tally, logs.retries) as shown:
                logs.retries.changed = shown.update
                try:
                    stopped_by = await until_signal(
                        _send(
                            client,
                            requests,
                            router.pending,
                            args.concurrency,
                            sink,
                            tally,
                            secrets,
                            shown,
                            args.wait_for_tasks,
                        )
                    )
                except _OutputClosed:
                    _silence_stdout()
                    return 128 + _SIGPIPE
    write(
        sys.stderr,
        summary(tally, logs.retries.count, sink.where, interrupted=stopped_by is not None),
    )
    if stopped_by is not None:
        return 128 + stopped_by
    return EXIT_OK if tally.all_failed == 0 else EXIT_FAILED


def _close_quietly(out: TextIO) -> None:
    """Close OUTPUT; a pipe whose reader went away has nothing more to say."""
    with contextlib.suppress(BrokenPipeError):
        out.close()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail too."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
