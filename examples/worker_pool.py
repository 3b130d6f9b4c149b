"""An asyncio worker pool: N workers take persona requests off a queue, sharing one client.

The pool runs until the queue is drained or ``stop`` is set. On ``stop`` (the script sets it
on SIGINT or SIGTERM) no worker takes another request; the requests in flight get ``grace``
seconds to finish, then are cancelled. Whatever was not finished (cancelled in flight, or
still queued) comes back in :attr:`PoolReport.unfinished`, for a real service to put back on
its queue.

Run it (the key and the API's URL come from ``SUNO_API_KEY`` and ``SUNO_API_BASE_URL``)::

    python examples/worker_pool.py examples/personas.jsonl --workers 4

and press Ctrl-C to see it stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import suno_persona as sp

Request = Mapping[str, Any]
Outcome = sp.Persona | sp.SunoPersonaError


@dataclass
class PoolReport:
    """What a pool did: each finished request with its outcome, and those it did not finish."""

    outcomes: list[tuple[Request, Outcome]] = field(default_factory=list)
    unfinished: list[Request] = field(default_factory=list)


async def run_pool(
    client: sp.AsyncPersonaClient,
    queue: asyncio.Queue[Request],
    *,
    workers: int = 4,
    stop: asyncio.Event | None = None,
    grace: float = 5.0,
    on_result: Callable[[Request, Outcome], object] | None = None,
) -> PoolReport:
    """Run ``workers`` workers over ``queue`` until it is drained or ``stop`` is set."""
    stop = stop or asyncio.Event()
    report = PoolReport()
    busy: dict[asyncio.Task[None], Request] = {}

    async def worker() -> None:
        me = asyncio.current_task()
        assert me is not None  # noqa: S101 - always true inside a task
        while not stop.is_set():
            request = await queue.get()
            busy[me] = request
            try:
                try:
                    outcome: Outcome = await client.generate_persona(request)
                except sp.SunoPersonaError as error:
                    outcome = error
                report.outcomes.append((request, outcome))
                if on_result is not None:
                    on_result(request, outcome)
            finally:
                del busy[me]
                queue.task_done()

    tasks = [asyncio.create_task(worker(), name=f"worker-{n}") for n in range(workers)]
    drained = asyncio.create_task(queue.join())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({drained, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not drained.done():
            in_flight = [task for task in tasks if task in busy]
            if in_flight:
                await asyncio.wait(in_flight, timeout=grace)
            report.unfinished.extend(busy.values())
    finally:
        for task in (*tasks, drained, stopping):
            task.cancel()
        await asyncio.gather(*tasks, drained, stopping, return_exceptions=True)
    while not queue.empty():
        report.unfinished.append(queue.get_nowait())
        queue.task_done()
    return report


def load(path: Path) -> list[Request]:
    """The JSON objects of a JSON Lines file; a line that is not one is kept as ``{}``."""
    requests: list[Request] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                fields = json.loads(line)
            except json.JSONDecodeError:
                fields = None
            # {} fails validation in the worker, like any other bad request
            requests.append(fields if isinstance(fields, dict) else {})
    return requests


def show(request: Request, outcome: Outcome) -> None:
    name = request.get("name", "?")
    if isinstance(outcome, sp.Persona):
        print(f"ok    {name}: {outcome.persona_id}", flush=True)
    else:
        print(f"error {name}: {type(outcome).__name__}: {outcome}", flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="a JSON Lines file of request fields")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--grace", type=float, default=5.0, help="seconds for in-flight work")
    args = parser.parse_args(argv)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    queue: asyncio.Queue[Request] = asyncio.Queue()
    for request in load(args.input):
        queue.put_nowait(request)
    async with sp.AsyncPersonaClient() as client:
        print(f"{args.workers} workers, {queue.qsize()} requests", flush=True)
        report = await run_pool(
            client, queue, workers=args.workers, stop=stop, grace=args.grace, on_result=show
        )
    head = "stopped" if stop.is_set() else "done"
    print(f"{head}: {len(report.outcomes)} finished, {len(report.unfinished)} unfinished")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
