"""The contenders: plain aiohttp, the usual recipe, and suno_persona (with and without throttle).

Each is an ``async (base_url, Workload) -> Outcome``: it sends every request of the workload to
the benchmark server, at most ``concurrency`` at a time, and counts what succeeded.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from benchmarks.scenarios import UNTHROTTLED

ENDPOINT = "/api/v1/client/job/suno-persona-generate"
API_KEY = "bench-key"
THROTTLED = frozenset({429, 455})
CONTENDERS = ("raw", "recipe", "suno_persona")
# Run only when asked for (--contender): suno_persona with the OpenTelemetry hook and the SDK.
OPTIONAL_CONTENDERS = ("suno_persona_otel",)

# The usual recipe: full-jitter exponential backoff.
# Attempt n is followed by a wait drawn from uniform(0, min(MAX_WAIT, MULTIPLIER * 2 ** (n - 1))).
RECIPE_MULTIPLIER = 0.5
RECIPE_MAX_WAIT = 20.0
RECIPE_MAX_ATTEMPTS = 20

# suno_persona is given room to finish every run: the benchmark measures pacing, not giving up.
LIBRARY_MAX_ATTEMPTS = 50
LIBRARY_MAX_DELAY = 10.0


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


Contender = Callable[[str, Workload], Awaitable[Outcome]]


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


def contenders_for(names: tuple[str, ...], library: Library) -> dict[str, Contender]:
    """Every contender that can run: raw, recipe, and suno_persona's when it loaded."""
    contenders: dict[str, Contender] = {"raw": run_raw, "recipe": run_recipe}
    if library.module is not None:
        contenders["suno_persona"] = library.run

        async def unthrottled(base_url: str, work: Workload) -> Outcome:
            return await library.run(base_url, work, throttle=None)

        contenders[UNTHROTTLED] = unthrottled
        if "suno_persona_otel" in names:
            contenders["suno_persona_otel"] = library.with_otel()
    return contenders
