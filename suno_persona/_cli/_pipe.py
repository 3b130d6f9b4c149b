"""INPUT that may keep the reader waiting (a pipe, a terminal), read off the event loop.

A regular file is read on the loop: a read returns at once. A pipe's writer may take its
time (``slow-export | suno-persona batch -``): a blocking read on the loop would hold back
every request in flight, their answers and records, Ctrl-C, and let their timeouts run out
on answers that had already come. So a daemon thread reads and parses such INPUT and hands
the parsed lines to the loop in batches: everything read so far before each wait for more,
at most a few batches ahead of what the batch has taken.

The thread reads the file descriptor with :func:`os.read`, never through ``sys.stdin``: a
daemon thread blocked inside a buffered stream at exit can make the interpreter abort.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from suno_persona._cli import _records
from suno_persona._cli._records import Format, Parsed

__all__ = ["read_off_the_loop"]

BATCH: Final = 256  # parsed lines per hand-over, at most
AHEAD: Final = 4  # hand-overs not yet taken by the loop, at most
_CHUNK: Final = 64 * 1024
_LONE_CR: Final = re.compile(r"(?<=\r)(?!\n)")  # splits after a \r not followed by \n

Item = tuple[int, Parsed]
_Handed = list[Item] | BaseException | None  # a batch, the reader's failure, or the end


class _LoopGone(Exception):  # noqa: N818 - a condition, not a bug
    """The event loop closed: nobody takes what the thread reads any more."""


async def read_off_the_loop(fd: int, form: Format) -> AsyncIterator[Item]:
    """The numbered, parsed lines of ``fd`` (``_records.parse_jsonl`` / ``parse_csv``).

    An error of the reader (an ``OSError`` of the read) is raised here, after the lines
    read before it.
    """
    loop = asyncio.get_running_loop()
    handed: asyncio.Queue[_Handed] = asyncio.Queue()
    room = threading.Semaphore(AHEAD)
    stopped = threading.Event()

    def hand(what: _Handed) -> None:
        room.acquire()
        if stopped.is_set():
            raise _LoopGone
        try:
            loop.call_soon_threadsafe(handed.put_nowait, what)
        except RuntimeError:  # the loop is closed
            raise _LoopGone from None

    def before_read() -> None:
        if stopped.is_set():  # the batch is over: the fd may be closed, even reused
            raise _LoopGone

    threading.Thread(
        target=_pump, args=(fd, form, hand, before_read), name="suno-persona-input", daemon=True
    ).start()
    try:
        while True:
            what = await handed.get()
            room.release()
            if what is None:
                return
            if isinstance(what, BaseException):
                raise what
            for item in what:
                yield item
    finally:
        stopped.set()
        room.release()  # a thread waiting to hand over more wakes, sees the stop and ends


def _pump(
    fd: int, form: Format, hand: Callable[[_Handed], None], before_read: Callable[[], None]
) -> None:
    """The thread: parse ``fd`` to its end, handing batches over before each wait."""
    batch: list[Item] = []

    def flush() -> None:
        nonlocal batch
        before_read()
        if batch:
            full, batch = batch, []
            hand(full)

    try:
        try:
            for item in _parse(_lines(fd, before_read=flush), form):
                batch.append(item)
                if len(batch) >= BATCH:
                    flush()
            flush()
        except _LoopGone:
            raise
        except BaseException as error:  # noqa: BLE001 - raised on the loop, in order
            flush()
            hand(error)
            return
        hand(None)
    except _LoopGone:
        return


def _parse(lines: Iterator[bytes], form: Format) -> Iterator[Item]:
    if form == "csv":
        # As a text file opened with encoding="utf-8-sig", errors="replace", newline="":
        # a line ends at \n, \r\n or a lone \r. A line ends at b"\n", never inside a UTF-8
        # sequence, so lines decode one by one.
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        texts = (decoder.decode(line) for line in lines)
        return _records.parse_csv(part for text in texts for part in _LONE_CR.split(text) if part)
    return _records.parse_jsonl(lines)


def _lines(fd: int, *, before_read: Callable[[], None]) -> Iterator[bytes]:
    """The lines of ``fd`` with their ends, as a binary file gives them."""
    pending = bytearray()
    while True:
        before_read()
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        start = len(pending)
        pending += chunk
        begin = 0
        end = pending.find(b"\n", start)
        while end >= 0:
            yield bytes(pending[begin : end + 1])
            begin = end + 1
            end = pending.find(b"\n", begin)
        del pending[:begin]
    if pending:
        yield bytes(pending)
