"""The report: Markdown tables ready for docs/benchmarks.md, one per scenario, with targets.

Each ``report_*`` turns the runs of one scenario (a list per contender) into an introduction
(the server, the ideal, the targets) and a table; :func:`render` puts them under headings.
The limiter-shapes suite's tables are ``benchmarks/report_shapes.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import math
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.contenders import Library
from benchmarks.harness import Measurement
from benchmarks.report_shapes import report_shape, summary
from benchmarks.scenarios import UNTHROTTLED, Scenario
from benchmarks.tables import check, fmt, table

TARGET_TIME_RATIO = 1.25
TARGET_429_PER_REQUEST = 0.10
TARGET_455_SLACK = 10
TARGET_AFTER_WINDOW = 1.5
TARGET_CPU_RATIO = 1.10
TARGET_SLOW_RATIO = 1.2


def _median(runs: list[Measurement], value: Callable[[Measurement], float]) -> float:
    return statistics.median(value(m) for m in runs)


def _failed_row(runs: list[Measurement], width: int) -> list[str] | None:
    bad = next((m for m in runs if m.status != "ok"), None)
    if bad is None:
        return None
    return [bad.contender, bad.status] + ["n/a"] * (width - 2)


def _succeeded(runs: list[Measurement], requests: int) -> str:
    return f"{min(m.outcome.ok for m in runs)}/{requests}"


def _ideal(groups: list[list[Measurement]]) -> float:
    ideals = [m.ideal for runs in groups for m in runs if not math.isnan(m.ideal)]
    return statistics.median(ideals) if ideals else math.nan


def report_rate(scenario: Scenario, groups: list[list[Measurement]]) -> str:
    time_target, throttled_target = TARGET_TIME_RATIO, TARGET_429_PER_REQUEST
    if scenario.name == "rate":
        time_target, throttled_target = 1.05, 0.06
    header = ["contender", "succeeded", "time (s)", "time / ideal", "429s", "429s per request"]
    header.append("HTTP requests")
    rows = []
    for runs in groups:
        row = _failed_row(runs, len(header))
        if row is None:
            wall = _median(runs, lambda m: m.wall)
            throttled = _median(runs, lambda m: m.count(429))
            row = [
                runs[0].contender,
                _succeeded(runs, scenario.requests),
                fmt(wall),
                check(wall / _median(runs, lambda m: m.ideal), time_target),
                fmt(throttled, ".0f"),
                check(throttled / scenario.requests, throttled_target, ".3f"),
                fmt(_median(runs, lambda m: m.total_http), ".0f"),
            ]
        rows.append(row)
    targets = f"time / ideal <= {time_target}, 429s per request <= {throttled_target}"
    if scenario.blip_times:
        targets += ", nothing lost"
    intro = (
        f"Server: {scenario.server}. Ideal time (the limit accepting all {scenario.requests} "
        f"requests after its burst): {_ideal(groups):.2f} s. Targets: {targets}."
    )
    return f"{intro}\n\n{table(header, rows)}"


def report_slow(scenario: Scenario, groups: list[list[Measurement]]) -> str:
    header = ["contender", "succeeded", "time (s)", "ratio to throttle=None"]
    baseline = next((runs for runs in groups if runs[0].contender == UNTHROTTLED), [])
    base = _median(baseline, lambda m: m.wall) if baseline else math.nan
    rows = []
    for runs in groups:
        row = _failed_row(runs, len(header))
        if row is None:
            wall = _median(runs, lambda m: m.wall)
            row = [
                runs[0].contender,
                _succeeded(runs, scenario.requests),
                fmt(wall),
                check(wall / base, TARGET_SLOW_RATIO),
            ]
        rows.append(row)
    intro = (
        f"Server: no limit, every answer after {scenario.param('latency'):g} s. The same client with "
        f"and without its throttle. Target: within {TARGET_SLOW_RATIO} x throttle=None "
        "(the slow start must not throttle a slow API)."
    )
    return f"{intro}\n\n{table(header, rows)}"


def report_maintenance(scenario: Scenario, groups: list[list[Measurement]]) -> str:
    target_455 = scenario.concurrency + TARGET_455_SLACK
    header = ["contender", "succeeded", "455s", "done after window (s)", "total time (s)"]
    header.append("HTTP requests")
    rows = []
    for runs in groups:
        row = _failed_row(runs, len(header))
        if row is None:
            row = [
                runs[0].contender,
                _succeeded(runs, scenario.requests),
                check(_median(runs, lambda m: m.count(455)), target_455, ".0f"),
                check(_median(runs, lambda m: m.after_window), TARGET_AFTER_WINDOW),
                fmt(_median(runs, lambda m: m.wall)),
                fmt(_median(runs, lambda m: m.total_http), ".0f"),
            ]
        rows.append(row)
    intro = (
        f"Server: every request answered 455 (no Retry-After) for {scenario.window:g} s from "
        f"the start, no rate limit. Targets: 455s <= concurrency + {TARGET_455_SLACK} = "
        f"{target_455}, all done <= {TARGET_AFTER_WINDOW} s after the window ends."
    )
    return f"{intro}\n\n{table(header, rows)}"


def report_cpu(scenario: Scenario, groups: list[list[Measurement]]) -> str:
    header = ["contender", "succeeded", "wall (s)", "CPU per request (µs)", "ratio to raw"]
    header.append("middle half of rounds")
    baseline = next((runs for runs in groups if runs[0].contender == "raw"), [])
    rows = []
    for runs in groups:
        row = _failed_row(runs, len(header))
        if row is None:
            pairs = zip(runs, baseline, strict=False)
            ratios = [m.cpu / raw.cpu for m, raw in pairs if raw.status == "ok"]
            row = [
                runs[0].contender,
                _succeeded(runs, scenario.requests),
                fmt(_median(runs, lambda m: m.wall)),
                fmt(_median(runs, lambda m: m.cpu / scenario.requests * 1e6), ".0f"),
                check(statistics.median(ratios) if ratios else math.nan, TARGET_CPU_RATIO),
                _spread(ratios),
            ]
        rows.append(row)
    intro = (
        "Client process CPU (time.process_time) for successful POSTs, server in another "
        f"process, after a {scenario.warmup}-request warm-up. Each round runs every contender "
        "back to back, in an order that turns every round; the ratio is the median over rounds "
        "of CPU / raw's CPU in the same round, and the middle half of rounds the range of its "
        "second and third quarters (how much the machine moved the rounds). "
        f"Target: ratio to raw <= {TARGET_CPU_RATIO}."
    )
    return f"{intro}\n\n{table(header, rows)}"


def _spread(ratios: list[float]) -> str:
    """The interquartile range of ``ratios``, as ``low-high``."""
    if len(ratios) < 2:  # quartiles need two values
        return "n/a"
    low, _, high = statistics.quantiles(ratios, n=4)
    return f"{low:.2f}-{high:.2f}"


REPORTS = {
    "shape": report_shape,
    "rate": report_rate,
    "slow": report_slow,
    "maintenance": report_maintenance,
    "cpu": report_cpu,
}


def _failure_notes(groups: list[list[Measurement]]) -> list[str]:
    notes = []
    for runs in groups:
        failed = [m for m in runs if m.status == "ok" and m.outcome.failed]
        if failed:
            worst = max(failed, key=lambda m: m.outcome.failed)
            notes.append(
                f"{worst.contender}: {worst.outcome.failed} request(s) failed in a run, e.g. "
                f"{(worst.outcome.first_error or '')[:160]}"
            )
    return notes


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def machine_line() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = [f"Python {platform.python_version()}"]
    versions += [f"{package} {_version(package)}" for package in ("aiohttp", "tenacity")]
    versions.append(f"suno-persona {_version('suno-persona')}")
    system = f"{platform.system()} {platform.release()}"
    return f"Machine: {model}, {cores} cores, {system}; {', '.join(versions)}."


def render(args: argparse.Namespace, library: Library, results: dict[str, Any]) -> str:
    parts = ["## Benchmarks", "", machine_line()]
    shapes = [scenario for scenario in args.scenarios if scenario.report == "shape"]
    if shapes:
        parts += ["", "### Limiter shapes", "", summary(shapes, results)]
    for scenario in args.scenarios:
        groups = results[scenario.name]
        heading = f"### {scenario.title}: {scenario.requests} requests"
        heading += f", concurrency {scenario.concurrency}"
        if scenario.report == "shape":
            heading = f"#### Shape `{scenario.name}`: {scenario.requests} requests, "
            heading += f"{scenario.concurrency} callers, every run"
        elif scenario.repeat > 1:
            heading += f" (median of {scenario.repeat} runs)"
        parts += ["", heading, "", REPORTS[scenario.report](scenario, groups)]
        notes = _failure_notes(groups)
        if "suno_persona" in args.contenders:
            notes += library.notes
        raw = "raw" in (scenario.contenders or args.contenders)
        if scenario.name not in ("cpu", "slow") and raw:
            notes.append("raw sends a 429 or 455 again at once, with no backoff.")
        if notes:
            parts += ["", *(f"- {note}" for note in notes)]
    return "\n".join(parts)
