"""Benchmark harness: suno-persona against plain aiohttp and the usual tenacity recipe.

Run from the repository root with the virtualenv active::

    python -m benchmarks.run                                  # every scenario and contender
    python -m benchmarks.run --scenario cpu --repeat 3
    python -m benchmarks.run --scenario multiprocess          # 4 processes, Redis (needs redis-server)

The server (``benchmarks/server.py``) runs in a child process on 127.0.0.1. Markdown tables go to
stdout, progress to stderr. ``benchmarks/README.md`` explains the scenarios and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from benchmarks import multiprocess

ENDPOINT = "/api/v1/client/job/suno-persona-generate"
MULTIPROCESS = "multiprocess"
SERVER_SCRIPT = Path(__file__).resolve().with_name("server.py")
API_KEY = "bench-key"
THROTTLED = frozenset({429, 455})

# The usual recipe: full-jitter exponential backoff.
# Attempt n is followed by a wait drawn from uniform(0, min(MAX_WAIT, MULTIPLIER * 2 ** (n - 1))).
RECIPE_MULTIPLIER = 0.5
RECIPE_MAX_WAIT = 20.0
RECIPE_MAX_ATTEMPTS = 20

# suno_persona is given room to finish every run: the benchmark measures pacing, not giving up.
LIBRARY_MAX_ATTEMPTS = 50
LIBRARY_MAX_DELAY = 10.0

CONTENDERS = ("raw", "recipe", "suno_persona")
UNTHROTTLED = "suno_persona (throttle=None)"
# Run only when asked for (--contender): suno_persona with the OpenTelemetry hook and the SDK.
OPTIONAL_CONTENDERS = ("suno_persona_otel",)
TARGET_TIME_RATIO = 1.25
TARGET_429_PER_REQUEST = 0.10
TARGET_455_SLACK = 10
TARGET_AFTER_WINDOW = 1.5
TARGET_CPU_RATIO = 1.10
TARGET_SLOW_RATIO = 1.2


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    requests: int
    concurrency: int
    rate: float = 0.0
    burst: int = 1
    window: float = 0.0
    warmup: int = 0
    repeat: int = 1
    retry_after: bool = False
    latency: float = 0.0
    schedule: tuple[tuple[float, float], ...] = ()  # (rate, seconds); the last one lasts
    blip_at: float = -1.0
    blip_times: int = 0
    report: str = "rate"
    contenders: tuple[str, ...] = ()  # default: the command line's

    @property
    def ideal(self) -> float:
        """Seconds the server's limit needs to accept every request (after its burst)."""
        if not self.schedule:
            return max(0, self.requests - self.burst) / self.rate if self.rate else math.nan
        left, elapsed = self.requests - self.burst, 0.0
        for index, (rate, seconds) in enumerate(self.schedule):
            last = index == len(self.schedule) - 1
            if last or left <= rate * seconds:
                return elapsed + left / rate
            left -= rate * seconds
            elapsed += seconds
        return elapsed  # pragma: no cover

    def reset_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"rate": self.rate, "burst": self.burst}
        if self.retry_after:
            params["retry_after"] = 1
        if self.latency:
            params["latency"] = self.latency
        if self.schedule:
            params["schedule"] = ",".join(f"{r:g}:{s:g}" for r, s in self.schedule)
        if self.blip_times:
            params["blip_at"], params["blip_times"] = self.blip_at, self.blip_times
        return params

    def describe(self) -> str:
        if self.schedule:
            limit = " -> ".join(f"{r:g}/s for {s:g} s" for r, s in self.schedule[:-1])
            limit += f" -> {self.schedule[-1][0]:g}/s"
            limit = f"a limit that changes: {limit}, burst {self.burst}"
        else:
            limit = f"token bucket {self.rate:g} requests/s, burst {self.burst}"
        extra = []
        extra.append(
            "429 with Retry-After (whole seconds)"
            if self.retry_after
            else "429 without Retry-After"
        )
        if self.blip_times:
            extra.append(
                f"{self.blip_times} extra 429s with Retry-After: 1 at t = {self.blip_at:g} s"
            )
        return f"Server: {limit}, {', '.join(extra)}"


SCENARIOS = {
    "rate": Scenario("rate", "Rate limit", requests=300, concurrency=32, rate=50.0, burst=10),
    "retry_after": Scenario(
        "retry_after",
        "Rate limit with Retry-After",
        requests=300,
        concurrency=32,
        rate=50.0,
        burst=10,
        retry_after=True,
    ),
    "blip": Scenario(
        "blip",
        "Two 429s in a long run at the limit",
        requests=400,
        concurrency=32,
        rate=50.0,
        burst=10,
        retry_after=True,
        blip_at=2.0,
        blip_times=2,
    ),
    "changing": Scenario(
        "changing",
        "A limit that changes",
        requests=650,
        concurrency=32,
        rate=50.0,
        burst=10,
        retry_after=True,
        schedule=((50.0, 4.0), (10.0, 4.0), (100.0, 4.0)),
    ),
    "slow": Scenario(
        "slow",
        "A slow API (0.2 s per answer)",
        requests=200,
        concurrency=100,
        latency=0.2,
        report="slow",
        contenders=("suno_persona", UNTHROTTLED),
    ),
    "maintenance": Scenario(
        "maintenance", "Maintenance window", 100, 50, window=2.0, report="maintenance"
    ),
    "cpu": Scenario(
        "cpu", "Client CPU", requests=2000, concurrency=32, warmup=200, repeat=15, report="cpu"
    ),
}


@dataclass
class Workload:
    concurrency: int
    bodies: list[dict[str, str]]
    persona_requests: list[Any]


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    first_error: str | None = None

    def add_failure(self, error: object) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = repr(error)


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

    def count(self, code: int) -> int:
        return self.counts.get(str(code), 0)


Contender = Callable[[str, Workload], Awaitable[Outcome]]


# --------------------------------------------------------------------------- contenders


async def run_raw(base_url: str, work: Workload) -> Outcome:
    """Plain aiohttp; a 429 or 455 is sent again at once, with no backoff."""
    url = base_url + ENDPOINT
    gate = asyncio.Semaphore(work.concurrency)

    async with aiohttp.ClientSession(headers={"x-api-key": API_KEY}) as session:

        async def create(body: dict[str, str]) -> str:
            async with gate:
                while True:
                    async with session.post(url, json=body) as response:
                        payload = await response.json()
                    if response.status not in THROTTLED:
                        break
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload}")
            return payload["data"]["persona_id"]

        results = await asyncio.gather(*map(create, work.bodies), return_exceptions=True)
    return _tally(results, lambda r: isinstance(r, str))


def _throttled(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientResponseError) and exc.status in THROTTLED


@retry(
    retry=retry_if_exception(_throttled),
    wait=wait_random_exponential(multiplier=RECIPE_MULTIPLIER, max=RECIPE_MAX_WAIT),
    stop=stop_after_attempt(RECIPE_MAX_ATTEMPTS),
    reraise=True,
)
async def _recipe_create(session: aiohttp.ClientSession, url: str, body: dict[str, str]) -> str:
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        payload = await response.json()
    return payload["data"]["persona_id"]


async def run_recipe(base_url: str, work: Workload) -> Outcome:
    """aiohttp + tenacity's @retry with full-jitter exponential backoff, under a semaphore."""
    url = base_url + ENDPOINT
    gate = asyncio.Semaphore(work.concurrency)

    async with aiohttp.ClientSession(headers={"x-api-key": API_KEY}) as session:

        async def create(body: dict[str, str]) -> str:
            async with gate:
                return await _recipe_create(session, url, body)

        results = await asyncio.gather(*map(create, work.bodies), return_exceptions=True)
    return _tally(results, lambda r: isinstance(r, str))


@dataclass
class Library:
    """suno_persona if its client is usable yet, else why not."""

    module: Any = None
    unavailable: str = ""
    notes: list[str] = field(default_factory=list)
    policy: Any = None

    @classmethod
    def load(cls) -> Library:
        try:
            sp = importlib.import_module("suno_persona")
        except Exception as exc:
            return cls(unavailable=f"n/a (import failed: {exc!r})")
        client_class = getattr(sp, "AsyncPersonaClient", None)
        if client_class is None or not hasattr(client_class, "generate_many"):
            return cls(unavailable="n/a (not available)")
        library = cls(module=sp)
        policy_class = getattr(sp, "RetryPolicy", None)
        if policy_class is None:
            library.notes.append("suno_persona has no RetryPolicy: its default policy was used.")
            return library
        try:
            library.policy = policy_class(
                max_attempts=LIBRARY_MAX_ATTEMPTS, deadline=None, max_delay=LIBRARY_MAX_DELAY
            )
        except TypeError as exc:
            library.notes.append(f"RetryPolicy(...) refused ({exc}): default policy used.")
        return library

    def requests_for(self, bodies: list[dict[str, str]]) -> list[Any]:
        if self.module is None:
            return []
        return [self.module.PersonaRequest(**body) for body in bodies]

    async def run(
        self, base_url: str, work: Workload, hooks: tuple[Any, ...] = (), **extra: Any
    ) -> Outcome:
        sp = self.module
        options: dict[str, Any] = {"api_key": API_KEY, "base_url": base_url, **extra}
        if self.policy is not None:
            options["retry"] = self.policy
        if hooks:
            options["event_hooks"] = hooks
        async with sp.AsyncPersonaClient(**options) as client:
            results = await client.generate_many(
                work.persona_requests, concurrency=work.concurrency
            )
        return _tally(results, lambda r: isinstance(r, sp.Persona))

    def with_otel(self) -> Contender:
        """The client with an OpenTelemetryHook, recording into the SDK (spans batched)."""
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - optional
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )

        from suno_persona.otel import OpenTelemetryHook  # noqa: PLC0415

        async def run(base_url: str, work: Workload) -> Outcome:
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
            meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
            hook = OpenTelemetryHook(tracer_provider=tracer_provider, meter_provider=meter_provider)
            try:
                return await self.run(base_url, work, (hook,))
            finally:
                tracer_provider.shutdown()
                meter_provider.shutdown()

        return run


def _tally(results: list[Any], succeeded: Callable[[Any], bool]) -> Outcome:
    outcome = Outcome()
    for result in results:
        if succeeded(result):
            outcome.ok += 1
        else:
            outcome.add_failure(result)
    return outcome


# --------------------------------------------------------------------------- server


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

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "stats")


# --------------------------------------------------------------------------- running


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

    async def run(self, scenario: Scenario, name: str) -> Measurement:
        if name not in self.contenders:
            return Measurement(name, status=self.library.unavailable)
        limit = min(self.timeout, self.deadline - time.monotonic())
        if limit < 1:
            return Measurement(name, status="skipped (time budget spent)")
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
        stats = await self.control.stats()
        measurement = Measurement(name, counts=stats["counts"], total_http=stats["total"])
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
    contenders: dict[str, Contender] = {"raw": run_raw, "recipe": run_recipe}
    if library.module is not None:
        contenders["suno_persona"] = library.run

        async def unthrottled(base_url: str, work: Workload) -> Outcome:
            return await library.run(base_url, work, throttle=None)

        contenders[UNTHROTTLED] = unthrottled
        if "suno_persona_otel" in args.contenders:
            contenders["suno_persona_otel"] = library.with_otel()
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
                    runs[name].append(await bench.run(scenario, name))
                    _progress(scenario, runs[name][-1], repeat, scenario.repeat)
            results[scenario.name] = list(runs.values())
    return results


def _progress(scenario: Scenario, m: Measurement, repeat: int, repeats: int) -> None:
    detail = m.status
    if m.status == "ok":
        detail = f"{m.wall:.2f} s, CPU {m.cpu:.3f} s, {m.total_http} HTTP requests"
    print(f"[{scenario.name} {repeat + 1}/{repeats}] {m.contender}: {detail}", file=sys.stderr)


# --------------------------------------------------------------------------- reporting


def _median(runs: list[Measurement], value: Callable[[Measurement], float]) -> float:
    return statistics.median(value(m) for m in runs)


def _fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _check(value: float, limit: float, spec: str = ".2f") -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:{spec}} {'✓' if value <= limit else '✗'}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _failed_row(runs: list[Measurement], width: int) -> list[str] | None:
    bad = next((m for m in runs if m.status != "ok"), None)
    if bad is None:
        return None
    return [bad.contender, bad.status] + ["n/a"] * (width - 2)


def _succeeded(runs: list[Measurement], requests: int) -> str:
    return f"{min(m.outcome.ok for m in runs)}/{requests}"


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
                _fmt(wall),
                _check(wall / scenario.ideal, time_target),
                _fmt(throttled, ".0f"),
                _check(throttled / scenario.requests, throttled_target, ".3f"),
                _fmt(_median(runs, lambda m: m.total_http), ".0f"),
            ]
        rows.append(row)
    targets = f"time / ideal <= {time_target}, 429s per request <= {throttled_target}"
    if scenario.blip_times:
        targets += ", nothing lost"
    intro = (
        f"{scenario.describe()}. Ideal time (the limit accepting all {scenario.requests} "
        f"requests after its burst): {scenario.ideal:.2f} s. Targets: {targets}."
    )
    return f"{intro}\n\n{_table(header, rows)}"


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
                _fmt(wall),
                _check(wall / base, TARGET_SLOW_RATIO),
            ]
        rows.append(row)
    intro = (
        f"Server: no limit, every answer after {scenario.latency:g} s. The same client with "
        f"and without its throttle. Target: within {TARGET_SLOW_RATIO} x throttle=None "
        "(the slow start must not throttle a slow API)."
    )
    return f"{intro}\n\n{_table(header, rows)}"


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
                _check(_median(runs, lambda m: m.count(455)), target_455, ".0f"),
                _check(_median(runs, lambda m: m.after_window), TARGET_AFTER_WINDOW),
                _fmt(_median(runs, lambda m: m.wall)),
                _fmt(_median(runs, lambda m: m.total_http), ".0f"),
            ]
        rows.append(row)
    intro = (
        f"Server: every request answered 455 (no Retry-After) for {scenario.window:g} s from "
        f"the start, no rate limit. Targets: 455s <= concurrency + {TARGET_455_SLACK} = "
        f"{target_455}, all done <= {TARGET_AFTER_WINDOW} s after the window ends."
    )
    return f"{intro}\n\n{_table(header, rows)}"


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
                _fmt(_median(runs, lambda m: m.wall)),
                _fmt(_median(runs, lambda m: m.cpu / scenario.requests * 1e6), ".0f"),
                _check(statistics.median(ratios) if ratios else math.nan, TARGET_CPU_RATIO),
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
    return f"{intro}\n\n{_table(header, rows)}"


def _spread(ratios: list[float]) -> str:
    """The interquartile range of ``ratios``, as ``low-high``."""
    if len(ratios) < 2:  # quartiles need two values
        return "n/a"
    low, _, high = statistics.quantiles(ratios, n=4)
    return f"{low:.2f}-{high:.2f}"


REPORTS = {
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
    for scenario in args.scenarios:
        groups = results[scenario.name]
        heading = f"### {scenario.title}: {scenario.requests} requests"
        heading += f", concurrency {scenario.concurrency}"
        if scenario.repeat > 1:
            heading += f" (median of {scenario.repeat} runs)"
        parts += ["", heading, "", REPORTS[scenario.report](scenario, groups)]
        notes = _failure_notes(groups)
        if "suno_persona" in args.contenders:
            notes += library.notes
        if scenario.name not in ("cpu", "slow") and "raw" in args.contenders:
            notes.append("raw sends a 429 or 455 again at once, with no backoff.")
        if notes:
            parts += ["", *(f"- {note}" for note in notes)]
    return "\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark suno-persona against a local server.")
    parser.add_argument("--scenario", choices=[*SCENARIOS, MULTIPROCESS, "all"], default="all")
    parser.add_argument(
        "--contender",
        action="append",
        choices=CONTENDERS + OPTIONAL_CONTENDERS,
        help="repeatable; default: all three (suno_persona_otel only when named)",
    )
    parser.add_argument("--requests", type=int, help="override the scenario's request count")
    parser.add_argument("--concurrency", type=int, help="override the scenario's concurrency")
    parser.add_argument(
        "--repeat", type=int, help="runs per contender, median shown (default 1, cpu 15)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="cap per run, seconds")
    parser.add_argument("--budget", type=float, help="cap for everything (default 600 s)")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    # the processes-sharing-Redis scenario runs its own fleet (benchmarks/multiprocess.py)
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
    args.scenarios = [replace(SCENARIOS[name], **overrides) for name in names]
    args.contenders = tuple(args.contender or CONTENDERS)
    if args.budget is None:
        args.budget = 600.0 * max(1, args.repeat or 1)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    faulthandler.dump_traceback_later(args.budget + 60, exit=True)
    library = Library.load()
    results = asyncio.run(run_all(args, library))
    text = render(args, library, results)
    if args.multiprocess:
        text += "\n\n### Processes sharing one key through Redis\n\n" + multiprocess.report(
            repeat=max(1, args.repeat or 1)
        )
    faulthandler.cancel_dump_traceback_later()
    print(text)


if __name__ == "__main__":
    main()
