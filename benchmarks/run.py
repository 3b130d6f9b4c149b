"""Benchmark harness: suno-persona against plain aiohttp and the usual tenacity recipe.

Run from the repository root with the virtualenv active::

    python -m benchmarks.run                                  # every scenario and contender
    python -m benchmarks.run --scenario cpu --repeat 3
    python -m benchmarks.run --scenario multiprocess          # 4 processes, Redis (needs redis-server)
    python -m benchmarks.run --suite shapes                   # every limiter shape (issue 19)
    python -m benchmarks.run --suite shapes --scenario quota  # one shape

The server (``benchmarks/server.py``) runs in a child process on 127.0.0.1. Markdown tables go to
stdout, progress to stderr. ``benchmarks/README.md`` explains the scenarios and the targets.

The parts, by job: ``scenarios`` (what the server does, how much work), ``contenders`` (raw,
recipe, suno_persona with and without its throttle), ``harness`` (the server process, one
measured run), ``report`` and ``report_shapes`` (the Markdown tables); this module reads the
command line and puts them together.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
from dataclasses import replace

from benchmarks import multiprocess
from benchmarks.contenders import CONTENDERS, OPTIONAL_CONTENDERS, Library
from benchmarks.harness import run_all
from benchmarks.report import render
from benchmarks.scenarios import MULTIPROCESS, SCENARIOS, SHAPES

SUITES = {"scenarios": SCENARIOS, "shapes": SHAPES}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark suno-persona against a local server.")
    parser.add_argument(
        "--suite",
        choices=list(SUITES),
        default="scenarios",
        help="scenarios (default): the scenarios below; shapes: the limiter-shapes suite",
    )
    parser.add_argument(
        "--scenario",
        choices=sorted({*SCENARIOS, *SHAPES, MULTIPROCESS, "all"}),
        default="all",
        help="one scenario of the suite (a shape with --suite shapes), or all",
    )
    parser.add_argument(
        "--contender",
        action="append",
        choices=CONTENDERS + OPTIONAL_CONTENDERS,
        help="repeatable; default: all three (suno_persona_otel only when named); "
        "the shapes suite always runs suno_persona, throttle=None and the recipe",
    )
    parser.add_argument("--requests", type=int, help="override the scenario's request count")
    parser.add_argument("--concurrency", type=int, help="override the scenario's concurrency")
    parser.add_argument(
        "--repeat", type=int, help="runs per contender, median shown (default 1, cpu 15)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="cap per run, seconds")
    parser.add_argument("--budget", type=float, help="cap for everything (default 600 s)")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    if args.scenario not in (*suite, MULTIPROCESS, "all"):
        parser.error(f"--scenario {args.scenario} is not in --suite {args.suite}")
    names = list(suite) if args.scenario == "all" else [args.scenario]
    # processes on one key run their own fleet (benchmarks/multiprocess.py): with a Redis
    # store and without in the scenarios, without a store in the shapes suite
    args.multiprocess = MULTIPROCESS in names or args.scenario == "all"
    names = [name for name in names if name != MULTIPROCESS]
    overrides = {
        key: value
        for key, value in (
            ("requests", args.requests),
            ("concurrency", args.concurrency),
            ("repeat", max(1, args.repeat or 1) if args.repeat is not None else None),
        )
        if value is not None
    }
    args.scenarios = [replace(suite[name], **overrides) for name in names]
    args.contenders = tuple(args.contender or CONTENDERS)
    if args.budget is None:
        args.budget = 600.0 * max(1, args.repeat or 1) * (2 if args.suite == "shapes" else 1)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    faulthandler.dump_traceback_later(args.budget + 60, exit=True)
    library = Library.load()
    results = asyncio.run(run_all(args, library))
    text = render(args, library, results)
    repeat = max(1, args.repeat or 1)
    if args.multiprocess and args.suite == "shapes":
        each = args.requests or multiprocess.EACH
        text += f"\n\n### {multiprocess.NO_STORE_TITLE}\n\n"
        text += multiprocess.report_no_store(each=each, repeat=repeat)
    elif args.multiprocess:
        text += "\n\n### Processes sharing one key through Redis\n\n"
        text += multiprocess.report(processes=(4,), repeat=repeat)  # 16: benchmarks.multiprocess
    faulthandler.cancel_dump_traceback_later()
    print(text)


if __name__ == "__main__":
    main()
