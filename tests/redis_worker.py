"""One process of the multi-process tests and benchmark: N requests through a real client.

``python redis_worker.py BASE_URL KEY STORE N [TIMEOUT]`` (STORE ``-`` for none; TIMEOUT the
store's, default 0.1 s) opens a client, prints
``ready``, reads the moment to start (wall clock) from its stdin, waits for it, sends N
requests with ``generate_many`` and prints one JSON line: start and end (wall clock),
successes, 429s seen, the time of each script call the store answered (measured here,
around the store's script call: the library keeps no timings) and the warnings that the
store was unavailable. :func:`run_fleet` starts
several of them together (the test and the benchmark both use it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import suno_persona as sp
from suno_persona.redis import RedisThrottleStore

SCRIPT = str(Path(__file__).resolve())


READY_WITHIN = 60.0  # seconds for every worker to import and open (16 of them on 2 cores)


def time_script_calls(state: Any) -> list[float]:
    """The seconds of each script call ``state`` makes from now on that the store answered."""
    timings: list[float] = []
    run: Callable[[list[str]], Awaitable[Any]] = state._run_script

    async def timed(argv: list[str]) -> Any:
        started = time.perf_counter()
        reply = await run(argv)
        timings.append(time.perf_counter() - started)
        return reply

    state._run_script = timed
    return timings


class Unavailable(logging.Handler):
    """Counts the library's warnings that the store is unavailable (each one a spell of
    throttling in this process alone)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("the throttle store %r is unavailable"):
            self.count += 1


async def main(base_url: str, key: str, store: str, count: int, timeout: float | None) -> None:
    refused = 0

    def hook(event: object) -> None:
        nonlocal refused
        if isinstance(event, sp.events.AttemptFinished) and event.http_status == 429:
            refused += 1

    requests = [
        {"task_id": f"task-{i}", "suno_id": f"suno-{time.time_ns()}-{i}", "name": "n"}
        for i in range(count)
    ]
    client = sp.AsyncPersonaClient(
        key,
        base_url=base_url,
        throttle_store=None if store == "-" else throttle_store(store, timeout),
        event_hooks=[hook],
        retry=sp.RetryPolicy(max_attempts=50, max_delay=10.0),
    )
    state = client._throttle.state
    timings = time_script_calls(state) if hasattr(state, "_run_script") else []
    unavailable = Unavailable()
    logging.getLogger("suno_persona").addHandler(unavailable)
    async with client:
        print("ready", flush=True)
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        start = time.time()
        results = await client.generate_many(requests)
        end = time.time()
        fell_back = getattr(state, "local", None) is not None
    ok = sum(isinstance(r, sp.Persona) for r in results)
    print(
        json.dumps(
            {
                "start": start,
                "end": end,
                "ok": ok,
                "refused": refused,
                "calls": timings,
                "unavailable": unavailable.count,
                "fell_back": fell_back,
            }
        )
    )


def throttle_store(url: str, timeout: float | None) -> str | RedisThrottleStore:
    return url if timeout is None else RedisThrottleStore(url, timeout=timeout)


async def run_fleet(
    base_url: str,
    key: str,
    store: str,
    processes: int,
    each: int,
    *,
    store_timeout: float | None = None,
) -> list[dict]:
    """Run ``processes`` workers of ``each`` requests, started together; their JSON lines.

    Every worker has imported the library and opened its client before any starts: they
    start 0.5 s after the last one is ready. The workers run without coverage, even under
    ``coverage run``: they are timed, and tracing every line made them several times slower
    than the client is.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            base_url,
            key,
            store,
            str(each),
            *([] if store_timeout is None else [repr(store_timeout)]),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(processes)
    ]
    try:
        lines = [await asyncio.wait_for(_ready(proc), READY_WITHIN) for proc in procs]
    except BaseException:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
        raise
    if any(line.strip() != b"ready" for line in lines):
        for proc in procs:
            proc.kill()
        raise RuntimeError(f"a worker did not start: {lines}")
    start_at = time.time() + 0.5
    outs = await asyncio.wait_for(
        asyncio.gather(*(p.communicate(f"{start_at!r}\n".encode()) for p in procs)), 120
    )
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"a worker failed: exit codes {[p.returncode for p in procs]}")
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]


async def _ready(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    return await proc.stdout.readline()


if __name__ == "__main__":
    base, api_key, where, n, *rest = sys.argv[1:]
    asyncio.run(main(base, api_key, where, int(n), float(rest[0]) if rest else None))
