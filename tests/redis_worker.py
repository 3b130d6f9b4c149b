"""One process of the multi-process tests and benchmark: N requests through a real client.

``python redis_worker.py BASE_URL KEY STORE N START_AT`` (STORE ``-`` for none) waits until
the wall clock reaches START_AT, sends N requests with ``generate_many`` and prints one JSON
line: start and end (wall clock), successes, 429s seen, and the store's script-call times.
:func:`run_fleet` starts several of them together (the test and the benchmark both use it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import suno_persona as sp

SCRIPT = str(Path(__file__).resolve())


async def main(base_url: str, key: str, store: str, count: int, start_at: float) -> None:
    refused = 0

    def hook(event: object) -> None:
        nonlocal refused
        if isinstance(event, sp.events.AttemptFinished) and event.http_status == 429:
            refused += 1

    requests = [
        {"task_id": f"task-{i}", "suno_id": f"suno-{time.time_ns()}-{i}", "name": "n"}
        for i in range(count)
    ]
    async with sp.AsyncPersonaClient(
        key,
        base_url=base_url,
        throttle_store=None if store == "-" else store,
        event_hooks=[hook],
        retry=sp.RetryPolicy(max_attempts=50, max_delay=10.0),
    ) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        start = time.time()
        results = await client.generate_many(requests)
        end = time.time()
        state = client._throttle.state
        timings = list(getattr(state, "call_seconds", []))
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
                "fell_back": fell_back,
            }
        )
    )


async def run_fleet(base_url: str, key: str, store: str, processes: int, each: int) -> list[dict]:
    """Run ``processes`` workers of ``each`` requests, started together; their JSON lines.

    The workers run without coverage, even under ``coverage run``: they are timed, and
    tracing every line made them several times slower than the client is.
    """
    start_at = time.time() + 2.0  # every process imported and connected by then
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            base_url,
            key,
            store,
            str(each),
            repr(start_at),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(processes)
    ]
    outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"a worker failed: exit codes {[p.returncode for p in procs]}")
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]


if __name__ == "__main__":
    base, api_key, where, n, at = sys.argv[1:]
    asyncio.run(main(base, api_key, where, int(n), float(at)))
