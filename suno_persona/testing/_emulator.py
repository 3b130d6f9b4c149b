"""A local emulator of the "Generate a Suno persona" endpoint, serving real HTTP on loopback.

The decisions are made by ``_answer`` (in ``_decide``), a synchronous method over plain
values (method, path, headers, body bytes); the aiohttp handler around it only reads the
request, waits the configured latency and writes the reply. Because ``_answer`` never awaits,
every check-and-update of the emulator's state is atomic on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from aiohttp import web

from suno_persona import PersonaRequest
from suno_persona.testing._answers import (
    MESSAGES,
    REASONS,
    RETRY_AFTER_CODES,
    Bucket,
    Fault,
    RecordedRequest,
    Reply,
)
from suno_persona.testing._decide import RESOURCES, Decisions
from suno_persona.testing._tasks import EmulatedTask

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["PersonaEmulator"]

_ENDPOINT_PATH: Final = "/api/v1/client/job/suno-persona-generate"
_SHUTDOWN_TIMEOUT: Final = 1.0


class PersonaEmulator(Decisions):
    """A local, in-process emulator of the crun.ai "Generate a Suno persona" endpoint.

    It serves ``POST /api/v1/client/job/suno-persona-generate`` over real HTTP with aiohttp,
    on loopback by default, and answers with the provider's JSON envelope
    ``{"code": ..., "message": ..., "data": ...}``. It also serves the task query
    (``GET /api/v1/client/job/TaskInfo?task_id=...``, for the tasks added with
    :meth:`add_task`; 404 for another) and the balance (``GET
    /api/v1/client/account/balance``: :attr:`credits`, or 1000000 when unlimited). Any
    other path or method gets the 404 envelope. Auth, maintenance, the faults of
    :meth:`fail_next` (queued per endpoint) and the rate limit (a bucket per key and
    endpoint) apply to all three. For a request to the persona endpoint the checks run in
    this order:

    1. **auth**: the ``x-api-key`` header must be one of ``api_keys`` (else 401);
    2. **maintenance** set with :meth:`maintenance` (455, with ``Retry-After``);
    3. **injected faults** queued with :meth:`fail_next`;
    4. **rate limit**: a token bucket per API key (429, with ``Retry-After``); requests
       rejected here or earlier do not take a token;
    5. **validation** of the body with :meth:`suno_persona.PersonaRequest.from_dict` (422,
       the message names the field and the rule);
    6. **the task**, with ``check_tasks=True``: a task added with :meth:`add_task` that
       has succeeded, holds the ``suno_id``, and whose song lasts past the vocal window
       (else 422);
    7. **credits**: each new persona costs one (402 when none are left).

    Persona ids are unique per ``(task_id, suno_id)`` pair. The provider's documentation is
    silent on a repeated pair; the emulator treats the create as idempotent: a repeat of a
    pair answers 200 with the persona id made the first time, costs no credit, and leaves
    :attr:`personas` unchanged (even when other fields differ).

    The answer is decided when the request arrives, then the emulator waits ``latency``
    before sending it: like the real service, a client that times out during that wait may
    still have created a persona.

    All state lives on the event loop the emulator was started in; configure it and read
    its records from that loop (the test's loop, with the pytest fixtures).

    Args:
        api_keys: The keys the emulator accepts.
        rate_limit: Requests per second allowed per API key, or ``None`` for no limit.
        burst: Capacity of each key's token bucket (the bucket starts full).
        credits: Credits available, one per new persona; ``None`` for unlimited.
        latency: Seconds to wait before each answer, or a zero-argument callable
            returning them (called once per request).
        retry_after: Whether 429 and 455 answers carry a ``Retry-After`` header.
        rate_limit_headers: Whether answers announce the rate limit in the IETF draft's
            ``RateLimit-Policy`` (``q`` = ``burst`` per ``w`` = the seconds to refill it) and
            ``RateLimit`` fields (``r`` = whole tokens left, ``t`` = seconds until full).
        errors_in_http_status: ``True`` sends each error with the HTTP status equal to its
            code; ``False`` sends every answer as HTTP 200, the code only in the body.
        host: The address to listen on.
        port: The port to listen on; ``0`` picks a free one.
        fail_rate: The share of authenticated requests (0 to 1) answered at random with one
            of ``fail_codes``, after maintenance and the faults of :meth:`fail_next`.
        fail_codes: The codes of those random answers.
        seed: Seeds the draws of ``fail_rate``, for a run that repeats exactly.
        clock: The emulator's monotonic clock (maintenance, rate limit, record times);
            pass a fake one, with ``sleep``, to test throttling and ``Retry-After`` on fake
            time, e.g. the same fake clock the client under test uses.
        sleep: Awaited for the latency of each answer.
        check_tasks: Check each persona request against the tasks added with
            :meth:`add_task` (step 6).

    Attributes:
        api_keys: The keys the emulator accepts.
        credits: Credits left (``None`` for unlimited); tests may set it.
        requests: Every request received, in order of arrival, as :class:`RecordedRequest`.
        personas: The personas created: persona id -> the request that created it.
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("sk-test",),
        rate_limit: float | None = None,
        burst: int = 10,
        credits: int | None = None,  # noqa: A002  (the option's documented name)
        latency: float | Callable[[], float] = 0.0,
        retry_after: bool = True,
        rate_limit_headers: bool = False,
        errors_in_http_status: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_rate: float = 0.0,
        fail_codes: Iterable[int] = (429, 455, 500),
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        check_tasks: bool = False,
    ) -> None:
        if isinstance(api_keys, str):
            raise TypeError("api_keys must be an iterable of keys, not a single str")
        keys = tuple(api_keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("api_keys must hold at least one non-empty string")
        if rate_limit is not None and not (rate_limit > 0 and math.isfinite(rate_limit)):
            raise ValueError(f"rate_limit must be a positive number, got {rate_limit!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if credits is not None and credits < 0:
            raise ValueError(f"credits must be >= 0, got {credits!r}")
        if not 0 <= fail_rate <= 1:
            raise ValueError(f"fail_rate must be from 0 to 1, got {fail_rate!r}")
        codes = tuple(fail_codes)
        if not codes or not all(400 <= c <= 599 for c in codes):  # noqa: PLR2004 - error codes
            raise ValueError(f"fail_codes must be error codes from 400 to 599, got {codes!r}")
        self.api_keys: tuple[str, ...] = keys
        self._fail_rate = fail_rate
        self._fail_codes = codes
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self.credits: int | None = credits
        self.requests: list[RecordedRequest] = []
        self.personas: dict[str, PersonaRequest] = {}
        self._rate_limit = rate_limit
        self._burst = burst
        self._latency = latency
        self._clock = clock
        self._sleep = sleep
        self._retry_after = retry_after
        self._rate_limit_headers = rate_limit_headers
        self._errors_in_http_status = errors_in_http_status
        self._host = host
        self._port = port
        self._by_pair: dict[tuple[str, str], str] = {}
        self._buckets: dict[tuple[int, str], Bucket] = {}
        self._faults: dict[str, collections.deque[Fault]] = {
            resource: collections.deque() for resource in RESOURCES.values()
        }
        self._tasks: dict[str, EmulatedTask] = {}
        self._check_tasks = check_tasks
        self._maintenance_until: float | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        where = self._base_url or "not started"
        return f"<PersonaEmulator {where}, {len(self.personas)} personas>"

    @property
    def base_url(self) -> str:
        """The root URL the emulator serves, e.g. ``"http://127.0.0.1:54321"``.

        Raises:
            RuntimeError: The emulator is not running.
        """
        if self._base_url is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._base_url

    @property
    def endpoint_url(self) -> str:
        """The full URL of the endpoint: :attr:`base_url` followed by its path."""
        return self.base_url + _ENDPOINT_PATH

    async def start(self) -> None:
        """Start serving.

        Raises:
            RuntimeError: The emulator is already running.
            OSError: The address could not be bound.
        """
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop serving and close every connection. Calling it again does nothing."""
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def fail_next(
        self,
        code: int,
        message: str | None = None,
        times: int = 1,
        *,
        retry_after: int = 1,
        endpoint: str = "persona",
    ) -> None:
        """Make the next ``times`` authenticated requests to an endpoint answer ``code``.

        Faults queue up: a second call takes effect once the first one is used up.

        Args:
            code: The error code to answer, from 400 to 599 (e.g. 500, 501, 505, 429, 455).
            message: The envelope's message; the provider's meaning of the code by default.
            times: How many requests get this answer.
            retry_after: The ``Retry-After`` seconds sent with a 429 or 455 (when the
                emulator sends ``Retry-After`` at all).
            endpoint: ``"persona"`` (the default), ``"task"`` (TaskInfo) or ``"balance"``.

        Raises:
            ValueError: ``code`` is not an error code, ``times`` or ``retry_after`` is
                negative, or ``endpoint`` is none of the three.
        """
        if endpoint not in self._faults:
            raise ValueError(f"endpoint must be 'persona', 'task' or 'balance', got {endpoint!r}")
        if isinstance(code, bool) or not 400 <= code <= 599:  # noqa: PLR2004  (error codes)
            raise ValueError(f"code must be an error code from 400 to 599, got {code!r}")
        if times < 0 or retry_after < 0:
            raise ValueError("times and retry_after must be >= 0")
        if times:
            text = MESSAGES.get(code, "error") if message is None else message
            seconds = retry_after if code in RETRY_AFTER_CODES else None
            self._faults[endpoint].append(Fault(code, text, seconds, left=times))

    def maintenance(self, seconds: float) -> None:
        """Answer 455 (service under maintenance) for the next ``seconds``; ``0`` ends it.

        While it lasts, ``Retry-After`` carries the whole seconds left, rounded up.

        Raises:
            ValueError: ``seconds`` is negative or not finite.
        """
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._maintenance_until = self._clock() + seconds if seconds > 0 else None

    def add_task(
        self,
        task_id: str,
        songs: Mapping[str, float | None],
        *,
        pending: float = 0.0,
        running: float = 0.0,
        error: tuple[int, str] | None = None,
    ) -> None:
        """Add (or replace) a music task, which goes ``pending`` -> ``running`` -> done.

        It is ``pending`` for ``pending`` seconds from now, then ``running`` for
        ``running`` seconds, then ``success`` (``failed`` when ``error`` is given).

        Args:
            task_id: The task's id.
            songs: Each song's ``suno_id`` and duration in seconds (``None``: the answer
                gives no duration).
            pending: Seconds the task stays ``pending``.
            running: Seconds it then stays ``running``.
            error: ``(code, message)`` of the failed task's result; ``None``: it succeeds.

        Raises:
            ValueError: ``task_id`` is empty, or a delay is negative or not finite.
        """
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task_id must be a non-empty string")
        if not all(seconds >= 0 and math.isfinite(seconds) for seconds in (pending, running)):
            raise ValueError("pending and running must be finite numbers of seconds >= 0")
        self._tasks[task_id] = EmulatedTask(
            task_id=task_id,
            songs=dict(songs),
            added_at=self._clock(),
            epoch=time.time(),
            pending=pending,
            running=running,
            error=error,
        )

    def reset(self) -> None:
        """Forget the records, the pending faults and the maintenance; refill the buckets.

        The personas made so far and the credits left are kept.
        """
        self.requests.clear()
        for faults in self._faults.values():
            faults.clear()
        self._maintenance_until = None
        self._buckets.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._answer(
            request.method, request.path, request.headers, body, request.query.get("task_id")
        )
        delay = self._latency() if callable(self._latency) else self._latency
        if delay > 0:
            await self._sleep(delay)
        return self._respond(reply)

    def _respond(self, reply: Reply) -> web.Response:
        envelope = {"code": reply.code, "message": reply.message, "data": reply.data}
        headers = {}
        if reply.retry_after is not None and self._retry_after:
            headers["Retry-After"] = str(reply.retry_after)
        if reply.quota is not None and self._rate_limit is not None:
            remaining, reset = reply.quota
            window = max(1, math.ceil(self._burst / self._rate_limit))
            headers["RateLimit-Policy"] = f'"default";q={self._burst};w={window}'
            headers["RateLimit"] = f'"default";r={remaining};t={reset}'
        status = reply.code if self._errors_in_http_status else 200
        reason = REASONS.get(status) or _reason_phrase(status)
        return web.json_response(envelope, status=status, reason=reason, headers=headers)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
