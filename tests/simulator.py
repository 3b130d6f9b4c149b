"""The throttle against every limiter family, on virtual time: seconds of traffic in milliseconds.

A :class:`VirtualTimeLoop` is an asyncio event loop whose clock only moves when every task
waits: ``select`` jumps straight to the next timer instead of sleeping. The real client runs
on it, its retries, backoff, deadlines and throttle included, with one thing replaced: the
HTTP exchange, which asks a model of the server (``suno_persona.testing._limiters``) for its
answer and waits out the network's and the server's latency on the virtual clock. The same
seed gives the same run, to the microsecond.

:func:`run` drives ``requests`` calls through one contender with ``callers`` at a time and
returns a :class:`Run`: how long it took, how many of each answer it got, and when each call
was first sent (its admission wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import random
import selectors
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import tenacity
from multidict import CIMultiDict

import suno_persona as sp
from suno_persona import _transport
from suno_persona.events import CallStarted
from suno_persona.testing._limiters import Limiter, Verdict, retry_after_header

KEY = "sk-simulated"
BASE_URL = "http://127.0.0.1:9"
RTT = 0.003
"""Round trip of the simulated network, in seconds (loopback-like, as in the benchmarks)."""
CLIENT_RETRY = sp.RetryPolicy(max_attempts=50, max_delay=10)
"""The retry policy of the measurements in the issue: 50 attempts, 10 s at most between."""


class SimulationStuckError(RuntimeError):
    """Every task waits for something that no timer will bring: the run would hang."""


class _VirtualSelector(selectors.SelectSelector):
    """Registers like ``select`` does, but never waits: it moves the virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise SimulationStuckError("no task can make progress and no timer is set")
        self.now += max(0.0, timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def simulate(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` to completion on a fresh :class:`VirtualTimeLoop`.

    The garbage collector is held off meanwhile: a finalizer it runs (an object of an
    earlier run) may schedule a callback at any point, and a run's outcome would then
    depend on the runs before it in the process.
    """
    loop = VirtualTimeLoop()
    gc.collect()
    gc.disable()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        gc.enable()


@attrs.define
class Run:
    """What one contender did against one server.

    Attributes:
        seconds: From the first call to the last outcome, on the virtual clock.
        requests: Calls made.
        succeeded: Calls that got a persona.
        answers: Answers by HTTP status (200, 429, 455), over all attempts.
        first_sent: Per call (by index), when its first attempt reached the server, from
            the moment the call started.
        errors: The errors of the calls that failed, by type name.
    """

    seconds: float = 0.0
    requests: int = 0
    succeeded: int = 0
    answers: Counter[int] = attrs.Factory(Counter)
    first_sent: dict[int, float] = attrs.Factory(dict)
    errors: Counter[str] = attrs.Factory(Counter)
    refused_at: list[float] = attrs.Factory(list)
    admission_waits: list[float] = attrs.Factory(list)
    """Per call of the client, by index: from its start to its first request's arrival."""

    @property
    def refusals_per_request(self) -> float:
        """429s per call made."""
        return self.answers[429] / max(1, self.requests)

    def ratio(self, ideal: float) -> float:
        """Time over ``ideal``."""
        return self.seconds / ideal if ideal > 0 else float("inf")


class Server:
    """One limiter behind a simulated network; counts what it answered."""

    def __init__(self, limiter: Limiter, *, rtt: float = RTT) -> None:
        self.limiter = limiter
        self.rtt = rtt
        self.answers: Counter[int] = Counter()
        self.arrivals: dict[int, float] = {}
        self.refused_at: list[float] = []
        self._ids = itertools.count(1)

    async def exchange(self, index: int) -> tuple[int, CIMultiDict[str], bytes]:
        """One request of call ``index``: half a round trip, the server, half back."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rtt / 2)
        now = loop.time()
        self.arrivals.setdefault(index, now)
        verdict = self.limiter.arrive(now)
        if verdict.latency:
            await asyncio.sleep(verdict.latency)
        self.limiter.leave(loop.time(), verdict)
        self.answers[verdict.status] += 1
        if verdict.status == 429:
            self.refused_at.append(now)
        await asyncio.sleep(self.rtt / 2)
        return verdict.status, _headers(verdict), self._body(verdict)

    def _body(self, verdict: Verdict) -> bytes:
        if verdict.accepted:
            data = {"persona_id": f"persona_{next(self._ids)}"}
            return json.dumps({"code": 200, "message": "success", "data": data}).encode()
        return json.dumps({"code": verdict.status, "message": "refused", "data": None}).encode()


def _headers(verdict: Verdict) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(verdict.headers)
    headers["Content-Type"] = "application/json"
    if verdict.retry_after is not None:
        headers["Retry-After"] = retry_after_header(verdict.retry_after)
    return headers


def _index_of(body: bytes | None) -> int:
    """The call's index, which :func:`requests_for` put in the request's name."""
    return int(json.loads(body or b"{}")["name"].rsplit("-", 1)[1])


@contextlib.contextmanager
def _served_by(servers: list[Server]) -> Iterator[None]:
    """Route the client's HTTP exchanges to ``servers`` (by base URL), on the virtual clock."""
    by_url = {f"{BASE_URL}{i}" if i else BASE_URL: server for i, server in enumerate(servers)}
    original = _transport.send

    async def send(_session: Any, url: str, prepared: Any, _timeout: float | None) -> Any:
        base = url.split("/api/", 1)[0]
        return await by_url[base].exchange(_index_of(prepared.body))

    _transport.send = send  # type: ignore[assignment]
    try:
        yield
    finally:
        _transport.send = original  # type: ignore[assignment]


def requests_for(count: int, offset: int = 0) -> list[dict[str, str]]:
    """``count`` distinct valid requests, numbered from ``offset``."""
    return [
        {"task_id": f"task_{i}", "suno_id": f"suno_{i}", "name": f"sim-{i}"}
        for i in range(offset, offset + count)
    ]


def make_client(seed: int = 0, base_url: str = BASE_URL, **options: Any) -> sp.AsyncPersonaClient:
    """A client on the running virtual loop's clock, with seeded jitter."""
    options.setdefault("retry", CLIENT_RETRY)
    client = sp.AsyncPersonaClient(KEY, base_url=base_url, **options)
    client._clock = asyncio.get_running_loop().time
    client._rng = random.Random(seed)
    return client


async def _client_calls(
    client: sp.AsyncPersonaClient, bodies: list[dict[str, str]], callers: int
) -> list[Any]:
    async with client:
        return await client.generate_many(bodies, concurrency=callers)


async def _recipe_calls(server: Server, bodies: list[dict[str, str]], callers: int) -> list[Any]:
    """aiohttp + tenacity's full-jitter backoff under a semaphore (the usual recipe)."""
    gate = asyncio.Semaphore(callers)

    class ThrottledError(Exception):
        pass

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(ThrottledError),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=20),
        stop=tenacity.stop_after_attempt(20),
        reraise=True,
    )
    async def create(index: int) -> str:
        status, _headers, body = await server.exchange(index)
        if status in {429, 455}:
            raise ThrottledError
        return str(json.loads(body)["data"]["persona_id"])

    async def call(body: dict[str, str]) -> Any:
        async with gate:
            try:
                return await create(_index_of(json.dumps(body).encode()))
            except ThrottledError as error:
                return error

    return await asyncio.gather(*map(call, bodies))


def run(
    limiter_factory: Callable[[float], Limiter],
    contender: str = "client",
    *,
    requests: int = 300,
    callers: int = 32,
    seed: int = 0,
    start: float = 0.0,
    processes: int = 1,
    **options: Any,
) -> Run:
    """``requests`` calls against the limiter that ``limiter_factory(start)`` makes.

    Args:
        limiter_factory: Makes the server's limiter, given the virtual time the run starts.
        contender: ``"client"`` (the default client, with ``options``), ``"none"`` (the
            client with ``throttle=None``) or ``"recipe"``.
        requests: Calls made, split evenly among ``processes``.
        callers: Calls at a time (per process).
        seed: Seeds the jitter of the backoff.
        start: Virtual time at which the run starts (a window's phase).
        processes: Independent clients sharing the one server (processes with no shared
            store).
        options: Passed to the client's constructor.
    """
    outcome = Run(requests=requests)
    random.seed(seed)
    started: dict[int, float] = {}

    def on_start(event: object) -> None:
        if isinstance(event, CallStarted):
            started[int(event.request.name.rsplit("-", 1)[1])] = asyncio.get_running_loop().time()

    if contender != "recipe":
        options["event_hooks"] = [*options.get("event_hooks", ()), on_start]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(start)
        server = Server(limiter_factory(start))
        share = requests // processes
        with _served_by([server]):
            began = loop.time()
            if contender == "recipe":
                calls = [_recipe_calls(server, requests_for(requests), callers)]
            else:
                if contender == "none":
                    options["throttle"] = None
                calls = [
                    _client_calls(
                        make_client(seed + p, **options), requests_for(share, p * share), callers
                    )
                    for p in range(processes)
                ]
            results = [r for batch in await asyncio.gather(*calls) for r in batch]
            outcome.seconds = loop.time() - began
        outcome.answers = server.answers
        outcome.refused_at = [t - began for t in server.refused_at]
        outcome.first_sent = {i: at - began for i, at in server.arrivals.items()}
        outcome.admission_waits = [
            server.arrivals[i] - started[i] - server.rtt / 2 for i in sorted(started)
        ]
        for result in results:
            if isinstance(result, BaseException):
                outcome.errors[type(result).__name__] += 1
            else:
                outcome.succeeded += 1

    simulate(main)
    return outcome
