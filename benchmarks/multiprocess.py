"""Benchmark: 4 and 16 processes on one key, with and without the throttle shared through Redis.

Run from the repository root with the virtualenv active (needs ``redis-server`` on PATH and
``suno-persona[redis]``)::

    python -m benchmarks.multiprocess                       # 4 and 16 processes, 50/s burst 10
    python -m benchmarks.multiprocess --processes 4 --repeat 3
    python -m benchmarks.multiprocess --no-store --processes 4   # issue 19's table

An emulator limited to 50 requests per second with a burst of 10 serves in this process; a
redis-server without persistence runs on a free loopback port; each client process is
``tests/redis_worker.py``. Each process sends ``500 / processes`` requests by default, so
that a run takes about 10 s (the ideal is (total - 10) / 50 s) whatever the count. Every
run is one line: time over the ideal, the fleet's accepted rate (between its 20th and its
20th-last acceptance: the burst and the tail left out) and 429s per request, each marked
against the targets of issue 20 (within 5 % of the limit, at most 0.05 429s per request),
the warnings that the store was unavailable (an error, or no answer within its 0.1 s
timeout: each one a spell of throttling alone), the processes that ended throttling alone, and the script calls
that the store answered (per request, and their times as the workers measured them around
the store's script call, p50 and p99).
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
EACH = 100  # per process, in the table of issue 19 (no store)
PROCESSES = (4, 16)
RUN_SECONDS = 10.0  # a run of the fleet at the limit, whatever its size
TRIM = 20  # acceptances left out at each end of the accepted rate
TARGET_RATE_SHARE = 0.05
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


async def measure(store: str, processes: int, each: int, timeout: float | None = None) -> dict:
    async with PersonaEmulator(api_keys=[KEY], rate_limit=RATE, burst=BURST) as emulator:
        fleet = _worker().run_fleet
        results = await fleet(emulator.base_url, KEY, store, processes, each, store_timeout=timeout)
        accepted = sorted(r.timestamp for r in emulator.requests if r.code == 200)
    total = processes * each
    took = max(r["end"] for r in results) - min(r["start"] for r in results)
    calls = sorted(c for r in results for c in r["calls"])
    return {
        "ratio": took / ((total - BURST) / RATE),
        "refused": sum(r["refused"] for r in results) / total,
        "ok": sum(r["ok"] for r in results),
        "rate": steady_rate(accepted),
        "alone": sum(bool(r["fell_back"]) for r in results),
        "p50": statistics.median(calls) * 1000 if calls else float("nan"),
        "p99": calls[int(0.99 * (len(calls) - 1))] * 1000 if calls else float("nan"),
        "calls": len(calls) / total,
        "unavailable": sum(r["unavailable"] for r in results),
    }


def steady_rate(accepted: list[float]) -> float:
    """Acceptances per second between the 20th and the 20th-last (fewer left out of a short run)."""
    trim = min(TRIM, max(0, (len(accepted) - 2) // 4))
    kept = accepted[trim : len(accepted) - trim]
    if len(kept) < 2 or kept[-1] <= kept[0]:
        return float("nan")
    return (len(kept) - 1) / (kept[-1] - kept[0])


def per_process(processes: int) -> int:
    """Requests per process for a run of about ``RUN_SECONDS`` at the limit."""
    return max(1, round(RATE * RUN_SECONDS / processes))


def parse_processes(text: str) -> tuple[int, ...]:
    """``"4,16"`` -> ``(4, 16)``: process counts, each at least 1."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of counts >= 1, got {text!r}")
    return counts


def mark(met: bool) -> str:
    return "✓" if met else "✗"


def row(processes: int, name: str, run: int, m: dict) -> str:
    total = processes * m["each"]
    rate_met = abs(m["rate"] - RATE) <= TARGET_RATE_SHARE * RATE
    store = (
        f"{m['unavailable']} | {m['alone']} | {m['calls']:.2f} | {m['p50']:.2f} ms | {m['p99']:.2f} ms"
        if name.startswith("shared")
        else "- | - | - | - | -"
    )
    return (
        f"| {processes} | {name} | {run} | {m['ok']}/{total} | {m['ratio']:.2f}x | "
        f"{m['rate']:.1f}/s {mark(rate_met)} | {m['refused']:.3f} {mark(m['refused'] <= TARGET_429)} "
        f"| {store} |"
    )


def report(
    processes: tuple[int, ...] = PROCESSES,
    each: int | None = None,
    repeat: int = 1,
    store_timeout: float | None = None,
) -> str:
    """The markdown table of every run (``python -m benchmarks.run`` prints it too).

    ``each`` is the requests per process (default: :func:`per_process` of each count);
    ``store_timeout`` the store's (default: its own, 0.1 s).
    """
    program = shutil.which("redis-server")
    if program is None:
        return "Not run: redis-server is not installed (apt-get install redis-server)."
    port = free_port()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        redis = subprocess.Popen(
            [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.5)
            for count in processes:
                n = each or per_process(count)
                for run in range(1, repeat + 1):
                    for name, store in (("in-process (default)", "-"),
                                        ("shared through Redis", f"redis://127.0.0.1:{port}/0")):  # fmt: skip
                        print(f"running {count} processes x {n}, {name} ({run}/{repeat}) ...",
                              file=sys.stderr)  # fmt: skip
                        m = asyncio.run(measure(store, count, n, store_timeout))
                        rows.append(row(count, name, run, {**m, "each": n}))
        finally:
            redis.kill()
            redis.wait()
    sizes = ", ".join(f"{count} x {each or per_process(count)}" for count in processes)
    return "\n".join(
        [
            (
                f"Processes x requests: {sizes}; one key, emulator {RATE:g}/s burst {BURST}, "
                f"store timeout {store_timeout or 0.1:g} s, "
                f"ideal (total - {BURST}) / {RATE:g} s. Targets (issue 20): the accepted rate "
                f"within {TARGET_RATE_SHARE:.0%} of {RATE:g}/s, <= {TARGET_429} 429s per "
                "request. Every run:"
            ),
            "",
            (
                "| processes | throttle state | run | succeeded | time / ideal | accepted rate "
                "| 429s per request | store unavailable | ended alone | script calls per request "
                "| script call p50 | script call p99 |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


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
    parser.add_argument(
        "--processes",
        type=parse_processes,
        default=PROCESSES,
        help="comma-separated process counts (default 4,16)",
    )
    parser.add_argument(
        "--requests", type=int, help=f"per process (default {RATE * RUN_SECONDS:g} / processes)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--store-timeout", type=float, help="the store's timeout (default 0.1 s)")
    parser.add_argument(
        "--no-store",
        action="store_true",
        help=f"only the processes without a shared store (issue 19's table, {EACH} requests each)",
    )
    args = parser.parse_args()
    if args.no_store:
        for count in args.processes:
            print(report_no_store(count, args.requests or EACH, args.repeat))
        return
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    print(report(args.processes, args.requests, args.repeat, args.store_timeout))


if __name__ == "__main__":
    main()
