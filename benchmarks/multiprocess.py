"""Benchmark: 4 processes on one key, with and without the throttle shared through Redis.

Run from the repository root with the virtualenv active (needs ``redis-server`` on PATH and
``suno-persona[redis]``)::

    python -m benchmarks.multiprocess              # 4 processes x 100 requests, 50/s burst 10
    python -m benchmarks.multiprocess --repeat 3

An emulator limited to 50 requests per second with a burst of 10 serves in this process; a
redis-server without persistence runs on a free loopback port; each client process is
``tests/redis_worker.py``. It reports time over the ideal ((400 - 10) / 50 s), 429s per
request, and the time of one script call (EVALSHA, p50 and p99) as seen by the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from suno_persona.testing import PersonaEmulator

WORKER = Path(__file__).resolve().parent.parent / "tests" / "redis_worker.py"
KEY = "bench-key"
RATE = 50.0
BURST = 10
EACH = 100
TARGET_RATIO = 1.15
TARGET_429 = 0.05
# Issue 19: four processes on one key with no shared store, each its own throttle.
TARGET_429_NO_STORE = 0.10
NO_STORE_TITLE = "Four processes on one key with no shared store (50/s)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker() -> ModuleType:
    """``tests/redis_worker.py``, whose ``run_fleet`` the test uses too."""
    spec = importlib.util.spec_from_file_location("redis_worker", WORKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def measure(store: str, processes: int, each: int) -> dict:
    async with PersonaEmulator(api_keys=[KEY], rate_limit=RATE, burst=BURST) as emulator:
        results = await _worker().run_fleet(emulator.base_url, KEY, store, processes, each)
    total = processes * each
    took = max(r["end"] for r in results) - min(r["start"] for r in results)
    calls = sorted(c for r in results for c in r["calls"])
    return {
        "ratio": took / ((total - BURST) / RATE),
        "refused": sum(r["refused"] for r in results) / total,
        "ok": sum(r["ok"] for r in results),
        "p50": statistics.median(calls) * 1000 if calls else float("nan"),
        "p99": calls[int(0.99 * (len(calls) - 1))] * 1000 if calls else float("nan"),
        "calls": len(calls) / total,
    }


def report(processes: int = 4, each: int = 100, repeat: int = 1) -> str:
    """The markdown table of the scenario (``python -m benchmarks.run`` prints it too)."""
    program = shutil.which("redis-server")
    if program is None:
        return "Not run: redis-server is not installed (apt-get install redis-server)."
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        redis = subprocess.Popen(
            [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.5)
            rows = []
            for _ in range(repeat):
                for name, store in (("in-process (default)", "-"),
                                    ("shared through Redis", f"redis://127.0.0.1:{port}/0")):  # fmt: skip
                    print(f"running {name} ...", file=sys.stderr)
                    rows.append((name, asyncio.run(measure(store, processes, each))))
        finally:
            redis.kill()
            redis.wait()
    lines = [
        (
            f"{processes} processes x {each} requests, one key, emulator {RATE:g}/s burst {BURST}; "
            f"targets for the shared store: time <= {TARGET_RATIO}x ideal, "
            f"<= {TARGET_429} 429s per request; without a store (issue 19): "
            f"<= {TARGET_429_NO_STORE} 429s per request"
        ),
        "",
        (
            "| throttle state | time / ideal | 429s per request | script calls per request "
            "| script call p50 | script call p99 |"
        ),
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows:
        shared = name.startswith("shared")
        mark = (" ✓" if m["ratio"] <= TARGET_RATIO else " ✗") if shared else ""
        target = TARGET_429 if shared else TARGET_429_NO_STORE
        mark429 = "✓" if m["refused"] <= target else "✗"
        lines.append(
            f"| {name} | {m['ratio']:.2f}x{mark} | {m['refused']:.3f} {mark429} | "
            + (f"{m['calls']:.2f} | {m['p50']:.2f} ms | {m['p99']:.2f} ms |" if shared else "- | - | - |")
        )  # fmt: skip
    return "\n".join(lines)


def report_no_store(processes: int = 4, each: int = EACH, repeat: int = 1) -> str:
    """Every run of ``processes`` clients on one key, each with its own in-process throttle."""
    rows = []
    for run in range(repeat):
        print(f"running {processes} processes without a shared store ({run + 1}/{repeat}) ...",
              file=sys.stderr)  # fmt: skip
        m = asyncio.run(measure("-", processes, each))
        mark = "✓" if m["refused"] <= TARGET_429_NO_STORE else "✗"
        rows.append(
            f"| {run + 1} | {m['ok']}/{processes * each} | {m['ratio']:.2f}x | "
            f"{m['refused']:.3f} {mark} |"
        )
    return "\n".join(
        [
            (
                f"{processes} processes x {each} requests, one key, each client with its own "
                f"in-process throttle (no `throttle_store`), emulator {RATE:g}/s burst {BURST}, "
                f"ideal ({processes * each} - {BURST}) / {RATE:g} s. Target: <= "
                f"{TARGET_429_NO_STORE} 429s per request. Every run:"
            ),
            "",
            "| run | succeeded | time / ideal | 429s per request |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--requests", type=int, default=EACH, help="per process")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--no-store", action="store_true", help="only the processes without a shared store"
    )
    args = parser.parse_args()
    if args.no_store:
        print(report_no_store(args.processes, args.requests, args.repeat))
        return
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    print(report(args.processes, args.requests, args.repeat))


if __name__ == "__main__":
    main()
