"""INPUT from a pipe, read by a thread off the event loop (suno_persona._cli._pipe)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading

import pytest

from suno_persona import PersonaRequest
from suno_persona._cli import _pipe, _records
from suno_persona._errors import RequestValidationError


def _line(n: int) -> bytes:
    return json.dumps({"task_id": f"t{n}", "suno_id": f"s{n}", "name": f"n{n}"}).encode()


async def _collect(fd: int, form: str) -> list:
    return [item async for item in _pipe.read_off_the_loop(fd, form)]  # type: ignore[arg-type]


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "suno-persona-input"]


async def _until_no_reader() -> None:
    for _ in range(500):
        if not _readers():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the reader thread did not end")


async def test_every_line_comes_in_order_across_batches_and_chunks():
    count = 3 * _pipe.BATCH * _pipe.AHEAD + 7  # more than is ever handed over ahead
    data = b"\n".join(_line(n) for n in range(1, count + 1))  # the last line has no end
    data = data.replace(_line(5), b"   ").replace(_line(6), b"{")  # blank, then broken
    read, write = os.pipe()

    def produce() -> None:  # a thread: a full pipe blocks the writer, not the loop
        for start in range(0, len(data), 10_000):  # odd-sized writes split lines
            os.write(write, data[start : start + 10_000])
        os.close(write)

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    try:
        items = await _collect(read, "jsonl")
    finally:
        writer.join(10)
        os.close(read)
    assert [number for number, _ in items] == [n for n in range(1, count + 1) if n != 5]
    assert items[0] == (1, PersonaRequest(task_id="t1", suno_id="s1", name="n1"))
    assert isinstance(items[4][1], RequestValidationError)  # line 6
    assert items[-1][1] == PersonaRequest(
        task_id=f"t{count}", suno_id=f"s{count}", name=f"n{count}"
    )
    await _until_no_reader()


@pytest.mark.parametrize(
    "data",
    [
        '\ufefftask_id,suno_id,name\nt1,s1,"Two\nlines"\nt2,s2,Caf\u00e9\n'.encode(),
        b'task_id,suno_id,name\r\nt1,s1,"Two\r\nlines"\r\nt2,s2,n2\r\n,,\r\nt3,s3,"x\ny',
        b"task_id,suno_id,name\rt1,s1,n1\rt2,s2,n2\r",  # old Mac line ends
        b"task_id,suno_id,name\nt1,s1,\xff\xfe\nt2,s2\n",  # not UTF-8; a row too short
    ],
)
async def test_csv_from_a_pipe_reads_as_the_same_file_would(data, tmp_path):
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    try:
        piped = await _collect(read, "csv")
    finally:
        os.close(read)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    # read as `batch in.csv` reads a file (suno_persona._cli._batch._parse)
    with path.open("rb") as raw, io.TextIOWrapper(raw, "utf-8-sig", "replace", "") as lines:
        from_file = list(_records.parse_csv(lines))
    assert len(piped) >= 2
    assert repr(piped) == repr(from_file)  # errors compare by what they say


async def test_the_loop_runs_while_the_pipe_waits_and_the_read_lines_are_handed_over():
    read, write = os.pipe()
    try:
        lines = _pipe.read_off_the_loop(read, "jsonl")
        os.write(write, _line(1) + b"\n")
        assert (await asyncio.wait_for(anext(lines), 10))[0] == 1
        waiting = asyncio.ensure_future(anext(lines))
        ticks = 0
        for _ in range(20):  # the loop goes on while the thread waits for a line
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 20
        assert not waiting.done()
        os.write(write, _line(2) + b"\n")
        assert (await asyncio.wait_for(waiting, 10))[0] == 2
        await lines.aclose()
    finally:
        os.close(write)  # the thread, waiting for a line, sees the end and stops
        await _until_no_reader()
        os.close(read)


async def test_leaving_early_stops_the_thread_handing_over():
    read, write = os.pipe()
    payload = b"".join(_line(n) + b"\n" for n in range(1, 2 * _pipe.BATCH * _pipe.AHEAD))

    def send() -> None:
        with contextlib.suppress(OSError):  # the reader may be gone before all is read
            os.write(write, payload)

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    try:
        lines = _pipe.read_off_the_loop(read, "jsonl")
        assert (await asyncio.wait_for(anext(lines), 10))[0] == 1
        await lines.aclose()
        await _until_no_reader()  # it was waiting for room to hand over more: it ended
    finally:
        os.close(read)
        writer.join(10)
        os.close(write)


async def test_a_failing_read_is_raised_on_the_loop(tmp_path):
    directory = os.open(tmp_path, os.O_RDONLY)  # read() of a directory fails: EISDIR
    try:
        with pytest.raises(IsADirectoryError):
            await _collect(directory, "jsonl")
    finally:
        os.close(directory)
    await _until_no_reader()
