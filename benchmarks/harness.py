"""The harness: the benchmark server in a child process, and one measured run of a contender.

:func:`local_server` starts ``benchmarks/server.py``; :class:`Control` drives its control
endpoints; :meth:`Bench.run` resets the server to a scenario, runs one contender on its
workload and returns a :class:`Measurement` (wall time, client CPU, the server's counts, the
model's ideal time); :func:`run_all` runs every scenario, each round every contender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.contenders import Contender, Library, Outcome, Workload, contenders_for
from benchmarks.scenarios import Scenario

SERVER_SCRIPT = Path(__file__).resolve().with_name("server.py")


@dataclass
class Measurement:
    contender: str
    status: str = "ok"
    outcome: Outcome = field(default_factory=Outcome)
    wall: float = math.nan
    cpu: float = math.nan
    after_window: float = math.nan
    counts: dict[str, int] = field(default_factory=dict)
    total_http: int = 0
    ideal: float = math.nan  # the server's model: seconds a perfect client needs
    repeat: int = 0

    def count(self, code: int) -> int:
        return self.counts.get(str(code), 0)


@contextlib.asynccontextmanager
async def local_server() -> AsyncIterator[str]:
    """Start benchmarks/server.py in a child process; yield its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER_SCRIPT),
        "--port",
        "0",
        "--watch-stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


class Control:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def _call(self, method: str, path: str, **params: float) -> dict[str, Any]:
        url = f"{self.base_url}/_control/{path}"
        async with self.session.request(method, url, params=params) as response:
            response.raise_for_status()
            return await response.json()

    async def reset(self, scenario: Scenario) -> None:
        await self._call("POST", "reset", **scenario.reset_params())

    async def maintenance(self, seconds: float) -> None:
        await self._call("POST", "maintenance", seconds=seconds)

    async def stats(self, requests: int) -> dict[str, Any]:
        return await self._call("GET", "stats", requests=requests)


async def _bounded(coro: Awaitable[Outcome], limit: float) -> Outcome | str:
    """Await ``coro`` for at most ``limit`` seconds; a string says why there is no outcome."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return f"timeout (> {limit:g} s)"
    error = task.exception()
    if error is not None:
        return f"error: {error!r}"[:200]
    return task.result()


@dataclass
class Bench:
    """What every run shares: the server, the contenders and the time budget."""

    base_url: str
    control: Control
    library: Library
    contenders: dict[str, Contender]
    timeout: float
    deadline: float

    async def run(self, scenario: Scenario, name: str, repeat: int = 0) -> Measurement:
        if name not in self.contenders:
            return Measurement(name, status=self.library.unavailable, repeat=repeat)
        limit = min(self.timeout, self.deadline - time.monotonic())
        if limit < 1:
            return Measurement(name, status="skipped (time budget spent)", repeat=repeat)
        contender = self.contenders[name]
        if scenario.warmup:
            await self.control.reset(scenario)
            warmup = self.workload(scenario, scenario.warmup, "w")
            await _bounded(contender(self.base_url, warmup), limit)
        work = self.workload(scenario, scenario.requests, "")
        await self.control.reset(scenario)
        gc.collect()
        await asyncio.sleep(0.05)
        start = time.monotonic()
        if scenario.window:
            await self.control.maintenance(scenario.window)
            start = (start + time.monotonic()) / 2
        cpu_start = time.process_time()
        result = await _bounded(contender(self.base_url, work), limit)
        cpu = time.process_time() - cpu_start
        end = time.monotonic()
        stats = await self.control.stats(scenario.requests)
        measurement = Measurement(
            name,
            counts=stats["counts"],
            total_http=stats["total"],
            ideal=math.nan if stats["ideal"] is None else stats["ideal"],
            repeat=repeat,
        )
        if isinstance(result, str):
            measurement.status = result
            return measurement
        measurement.outcome = result
        measurement.wall = end - start
        measurement.cpu = cpu
        if scenario.window:
            measurement.after_window = end - (start + scenario.window)
        return measurement

    def workload(self, scenario: Scenario, count: int, tag: str) -> Workload:
        bodies = [
            {"task_id": f"task_{tag}{i:06d}", "suno_id": f"suno_{tag}{i:06d}", "name": f"V {i}"}
            for i in range(count)
        ]
        return Workload(scenario.concurrency, bodies, self.library.requests_for(bodies))


async def run_all(args: argparse.Namespace, library: Library) -> dict[str, list[list[Measurement]]]:
    """Every scenario of ``args.scenarios``, each round every contender; the runs by contender."""
    contenders = contenders_for(args.contenders, library)
    deadline = time.monotonic() + args.budget
    results: dict[str, list[list[Measurement]]] = {}
    async with local_server() as base_url, aiohttp.ClientSession() as session:
        bench = Bench(
            base_url, Control(session, base_url), library, contenders, args.timeout, deadline
        )
        for scenario in args.scenarios:
            names = list(scenario.contenders or args.contenders)
            if scenario.name == "cpu" and "raw" not in names:
                names.insert(0, "raw")
            runs: dict[str, list[Measurement]] = {name: [] for name in names}
            for repeat in range(scenario.repeat):
                # The order turns every round: here the first contender of a round measured
                # a few percent faster than the same code run second.
                shift = repeat % len(names)
                for name in names[shift:] + names[:shift]:
                    runs[name].append(await bench.run(scenario, name, repeat))
                    _progress(scenario, runs[name][-1], repeat, scenario.repeat)
            results[scenario.name] = list(runs.values())
    return results


def _progress(scenario: Scenario, m: Measurement, repeat: int, repeats: int) -> None:
    detail = m.status
    if m.status == "ok":
        detail = f"{m.wall:.2f} s, CPU {m.cpu:.3f} s, {m.total_http} HTTP requests"
    print(f"[{scenario.name} {repeat + 1}/{repeats}] {m.contender}: {detail}", file=sys.stderr)
