"""Benchmark: client instructions per request, counted by callgrind, next to plain aiohttp.

Run from the repository root with the virtualenv active (needs ``valgrind`` on PATH)::

    python -m benchmarks.instructions                   # 300 and 300 + 800 requests
    python -m benchmarks.instructions --requests 2000 --jobs 1

A deterministic companion to ``python -m benchmarks.run --scenario cpu``. On a small shared
machine the CPU time per request moves by 20-30 % between runs, too much to judge a 10 % target;
the number of instructions the client executes moves by well under 1 %. Each contender runs in
a child process (this file with a hidden ``--child``) under ``valgrind --tool=callgrind`` twice:
a 50-request warm-up, then BASE requests in one run and BASE + REQUESTS in the other, both at
concurrency 32. The difference of the two totals over REQUESTS is the count per request: start-up,
imports, the warm-up and building the requests (both runs build BASE + REQUESTS) cancel out. The
server (``benchmarks/server.py``) runs in its own process, not instrumented. ``--jobs`` valgrind
runs go at once (default 2: one contender per core); the counts hardly depend on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.contenders import Library, Outcome, Workload, run_raw
from benchmarks.harness import local_server

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("raw", "suno_persona")
CONCURRENCY = 32
WARMUP = 50
COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")
# The child's environment: a fixed hash seed, so that set and dict orders (and the work they
# cost) are the same in both runs; no .pyc written, so that a first import costs the same in both.
CHILD_ENV = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


# --------------------------------------------------------------------------- child


def _workload(library: Library, count: int) -> Workload:
    bodies = [
        {"task_id": f"task_{i:06d}", "suno_id": f"suno_{i:06d}", "name": f"V {i}"}
        for i in range(count)
    ]
    return Workload(CONCURRENCY, bodies, library.requests_for(bodies))


def _check(outcome: Outcome, count: int, what: str) -> None:
    if outcome.ok != count:
        raise RuntimeError(f"{what}: {outcome.ok}/{count} succeeded, e.g. {outcome.first_error}")


async def _child(name: str, base_url: str, count: int, built: int) -> None:
    library = Library.load()
    if name == "suno_persona" and library.module is None:
        raise RuntimeError(f"suno_persona: {library.unavailable}")
    contender = run_raw if name == "raw" else library.run
    _check(await contender(base_url, _workload(library, WARMUP)), WARMUP, "warm-up")
    # Both runs build the same BASE + REQUESTS requests and send the first ``count``.
    work = _workload(library, built)
    work = Workload(CONCURRENCY, work.bodies[:count], work.persona_requests[:count])
    gc.collect()
    _check(await contender(base_url, work), count, "measured batch")


# --------------------------------------------------------------------------- parent


async def _count(valgrind: str, name: str, base_url: str, count: int, built: int) -> int:
    """Instructions callgrind counts for one child run that sends ``count`` requests."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        name,
        base_url,
        str(count),
        str(built),
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    match = COLLECTED.search(stderr)
    if process.returncode or match is None:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{name}, {count} requests: exit {process.returncode}: {tail}")
    collected = int(match.group(1))
    took = time.monotonic() - started
    print(f"{name}, {count} requests: {collected:,} instructions ({took:.0f} s)", file=sys.stderr)
    return collected


async def measure(valgrind: str, base: int, requests: int, jobs: int) -> dict[str, float]:
    """Instructions per request of each contender: (N(base + requests) - N(base)) / requests."""
    gate = asyncio.Semaphore(jobs)
    built = base + requests

    async with local_server() as base_url:

        async def one(name: str, count: int) -> int:
            async with gate:
                return await _count(valgrind, name, base_url, count, built)

        async def per_request(name: str) -> float:
            small = await one(name, base)
            large = await one(name, built)
            return (large - small) / requests

        results = await asyncio.gather(*map(per_request, CONTENDERS))
    return dict(zip(CONTENDERS, results, strict=True))


def report(results: dict[str, float], base: int, requests: int, valgrind: str) -> str:
    version = subprocess.run(
        [valgrind, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    raw = results["raw"]
    lines = [
        f"### Client instructions per request: {requests} requests, concurrency {CONCURRENCY}",
        "",
        (
            f"Instructions counted by callgrind ({version}, Python {platform.python_version()}) "
            f"in the client process; each figure is the difference between a run of {base} + "
            f"{requests} requests and one of {base}, over {requests}, so start-up, imports and a "
            f"{WARMUP}-request warm-up cancel out; the server is another process, not "
            "instrumented."
        ),
        "",
        "| contender | instructions per request | ratio to raw |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {value:,.0f} | {value / raw:.3f} |" for name, value in results.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=800, help="the measured difference")
    parser.add_argument("--base", type=int, default=300, help="requests in the shorter run")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    # the child program: NAME URL COUNT BUILT
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        name, base_url, count, built = args.child
        asyncio.run(_child(name, base_url, int(count), int(built)))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        sys.exit(2)
    library = Library.load()
    if library.module is None:
        print(f"suno_persona: {library.unavailable}", file=sys.stderr)
        sys.exit(2)
    results = asyncio.run(measure(valgrind, args.base, args.requests, max(1, args.jobs)))
    print(report(results, args.base, args.requests, valgrind))


if __name__ == "__main__":
    main()
