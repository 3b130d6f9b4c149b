"""The peak memory of a fan-out over many real requests, measured in a process of its own.

``python memory_worker.py BASE_URL KIND COUNT...`` sends COUNT requests for each COUNT, read
lazily from a generator (KIND ``sync``) or an async generator (KIND ``async``), through
``generate_as_completed`` at concurrency 64 against the server at BASE_URL, and prints one
JSON line: by COUNT, the peak bytes tracemalloc saw above the start of the run in each
segment of 20,000 outcomes (the peak is reset at the end of each: what a run holds on to
shows in every later segment's peak, a moment's spike in one segment's only).
test_fanout.py runs it without coverage (whose tracing would make it several times slower).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator

import suno_persona as sp

CONCURRENCY = 64
SEGMENT = 20_000


def requests(count: int) -> Iterator[sp.PersonaRequest]:
    for i in range(count):
        yield sp.PersonaRequest(task_id="task", suno_id=f"s{i}", name=f"n{i}")


async def requests_async(count: int) -> AsyncIterator[sp.PersonaRequest]:
    for i, item in enumerate(requests(count)):
        if i % 100 == 0:
            await asyncio.sleep(0)
        yield item


async def run(base_url: str, kind: str, count: int, segment_done: Callable[[], None]) -> None:
    source = requests(count) if kind == "sync" else requests_async(count)
    done = 0
    async with sp.AsyncPersonaClient("k", base_url=base_url, throttle=None) as client:
        results = client.generate_as_completed(source, concurrency=CONCURRENCY)
        async with results:
            async for _, outcome in results:
                if not isinstance(outcome, sp.Persona):
                    raise RuntimeError(f"a request failed: {outcome!r}")  # noqa: TRY004 - a failed check
                done += 1
                if done % SEGMENT == 0 or done == count:
                    segment_done()
    if done != count:
        raise RuntimeError(f"{done} outcomes for {count} requests")


def peaks(base_url: str, kind: str, count: int) -> list[int]:
    found: list[int] = []

    def segment_done() -> None:
        found.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        asyncio.run(run(base_url, kind, count, segment_done))
        return found
    finally:
        tracemalloc.stop()


if __name__ == "__main__":
    url, which, *counts = sys.argv[1:]
    peaks(url, which, 500)  # warm up: imports, caches
    print(json.dumps({count: peaks(url, which, int(count)) for count in counts}))
