"""Benchmark: `suno-persona batch` on a big file, against `generate_as_completed` alone.

Run from the repository root with the virtualenv active::

    python -m benchmarks.batch_stream                      # 1,000,000 lines, concurrency 64
    python -m benchmarks.batch_stream --lines 100000

Both contenders run in their own process against the same fast local server
(``benchmarks/server.py``, no rate limit) in a third one. For each it reports the wall time,
the throughput in requests per second and the peak resident memory (``ru_maxrss`` of the
process, from ``os.wait4``). Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = Path(__file__).resolve().with_name("server.py")
KEY = "bench-key"
TARGET_RSS_MIB = 100
TARGET_RATIO = 1.2

LIBRARY = """
import asyncio, sys
import suno_persona as sp

async def main(url, lines, concurrency, key):
    def requests():
        for n in range(lines):
            yield {"task_id": f"task_{n}", "suno_id": f"suno_{n}", "name": f"Singer {n}"}
    ok = 0
    async with sp.AsyncPersonaClient(key, base_url=url) as client:
        async with client.generate_as_completed(requests(), concurrency=concurrency) as results:
            async for _, outcome in results:
                ok += isinstance(outcome, sp.Persona)
    assert ok == lines, ok

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def _run(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB, and exit status of ``command``."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode


def _write_input(path: Path, lines: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            fields = {"task_id": f"task_{n}", "suno_id": f"suno_{n}", "name": f"Singer {n}"}
            out.write(json.dumps(fields) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", "0", "--watch-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            source, sink = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            print(f"writing {args.lines} lines", file=sys.stderr)
            _write_input(source, args.lines)
            rows = []
            print("generate_as_completed alone", file=sys.stderr)
            library = [
                sys.executable,
                "-c",
                LIBRARY,
                url,
                str(args.lines),
                str(args.concurrency),
                KEY,
            ]
            rows.append(("generate_as_completed alone", *_run(library)))
            print("suno-persona batch", file=sys.stderr)
            batch = [
                sys.executable, "-m", "suno_persona", "batch", str(source), "-o", str(sink),
                "--base-url", url, "--api-key", KEY, f"--concurrency={args.concurrency}",
            ]  # fmt: skip
            rows.append(("suno-persona batch", *_run(batch)))
            with sink.open("rb") as out:
                records = sum(1 for _ in out)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    base = rows[0][1]
    print(
        f"### {args.lines:,} lines, concurrency {args.concurrency}\n\n"
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. Targets for batch: peak RSS < {TARGET_RSS_MIB} MiB, "
        f"time <= {TARGET_RATIO} x generate_as_completed alone.\n\n"
        "| contender | exit | time (s) | requests/s | time / alone | peak RSS (MiB) |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for name, seconds, rss, status in rows:
        print(
            f"| {name} | {status} | {seconds:.1f} | {args.lines / seconds:,.0f} | "
            f"{seconds / base:.2f} | {rss:.1f} |"
        )
    print(f"\nbatch wrote {records:,} records.")


if __name__ == "__main__":
    main()
