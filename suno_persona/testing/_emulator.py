"""A local emulator of the "Generate a Suno persona" endpoint, serving real HTTP on loopback.

The decisions are made by :meth:`PersonaEmulator._answer`, a synchronous method over plain
values (method, path, headers, body bytes); the aiohttp handler around it only reads the
request, waits the configured latency and writes the reply. Because ``_answer`` never awaits,
every check-and-update of the emulator's state is atomic on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import secrets
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import attrs
from aiohttp import web

from suno_persona import PersonaRequest, RequestValidationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["PersonaEmulator", "RecordedRequest", "serve"]

_ENDPOINT_PATH: Final = "/api/v1/client/job/suno-persona-generate"
_REDACTED: Final = "<redacted>"
_SECRET_HEADERS: Final = frozenset({"x-api-key", "authorization"})
_SHUTDOWN_TIMEOUT: Final = 1.0

# The provider's words for each documented code: the default message of an injected fault.
_MESSAGES: Final[Mapping[int, str]] = {
    401: "key missing or invalid",
    402: "not enough credits",
    404: "resource or endpoint not found",
    422: "request failed validation",
    429: "rate limited",
    455: "service under maintenance",
    500: "unexpected server error",
    501: "generation failed",
    505: "feature disabled",
}

# The provider's names for its codes, used as the HTTP reason phrase (455 has no standard one).
_REASONS: Final[Mapping[int, str]] = {
    401: "Unauthorized",
    402: "Insufficient Credits",
    404: "Not Found",
    422: "Validation Error",
    429: "Rate Limited",
    455: "Service Unavailable",
    500: "Server Error",
    501: "Generation Failed",
    505: "Feature Disabled",
}

_RETRY_AFTER_CODES: Final = frozenset({429, 455})


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request the emulator received, as it was answered.

    API keys are never recorded: the values of ``x-api-key`` and ``Authorization`` are
    replaced by ``"<redacted>"``, and the query string is not kept.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request path, without the query string.
        headers: The request headers, secrets redacted.
        json: The parsed JSON body, or ``None`` when the body was empty or not JSON.
        code: The code the emulator answered with (the envelope's ``code``).
        timestamp: When the request arrived, on the emulator's clock (by default
            :func:`time.monotonic`).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    code: int
    timestamp: float


@attrs.frozen
class _Reply:
    code: int
    message: str
    data: dict[str, str] | None = None
    retry_after: int | None = None


@attrs.define
class _Fault:
    code: int
    message: str
    retry_after: int | None
    left: int


@attrs.define
class _Bucket:
    tokens: float
    stamp: float

    def take(self, now: float, rate: float, capacity: int) -> float | None:
        """Take a token; return ``None`` on success, else the seconds until one is available."""
        self.tokens = min(float(capacity), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


class PersonaEmulator:
    """A local, in-process emulator of the crun.ai "Generate a Suno persona" endpoint.

    It serves ``POST /api/v1/client/job/suno-persona-generate`` over real HTTP with aiohttp,
    on loopback by default, and answers with the provider's JSON envelope
    ``{"code": ..., "message": ..., "data": ...}``. Any other path or method gets the 404
    envelope. For a request to the endpoint the checks run in this order:

    1. **auth**: the ``x-api-key`` header must be one of ``api_keys`` (else 401);
    2. **maintenance** set with :meth:`maintenance` (455, with ``Retry-After``);
    3. **injected faults** queued with :meth:`fail_next`;
    4. **rate limit**: a token bucket per API key (429, with ``Retry-After``); requests
       rejected here or earlier do not take a token;
    5. **validation** of the body with :meth:`suno_persona.PersonaRequest.from_dict` (422,
       the message names the field and the rule);
    6. **credits**: each new persona costs one (402 when none are left).

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
        errors_in_http_status: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_rate: float = 0.0,
        fail_codes: Iterable[int] = (429, 455, 500),
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
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
        self._errors_in_http_status = errors_in_http_status
        self._host = host
        self._port = port
        self._by_pair: dict[tuple[str, str], str] = {}
        self._buckets: dict[int, _Bucket] = {}
        self._faults: collections.deque[_Fault] = collections.deque()
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
        self, code: int, message: str | None = None, times: int = 1, *, retry_after: int = 1
    ) -> None:
        """Make the next ``times`` authenticated requests to the endpoint answer ``code``.

        Faults queue up: a second call takes effect once the first one is used up.

        Args:
            code: The error code to answer, from 400 to 599 (e.g. 500, 501, 505, 429, 455).
            message: The envelope's message; the provider's meaning of the code by default.
            times: How many requests get this answer.
            retry_after: The ``Retry-After`` seconds sent with a 429 or 455 (when the
                emulator sends ``Retry-After`` at all).

        Raises:
            ValueError: ``code`` is not an error code, or ``times`` or ``retry_after`` is
                negative.
        """
        if isinstance(code, bool) or not 400 <= code <= 599:  # noqa: PLR2004  (error codes)
            raise ValueError(f"code must be an error code from 400 to 599, got {code!r}")
        if times < 0 or retry_after < 0:
            raise ValueError("times and retry_after must be >= 0")
        if times:
            text = _MESSAGES.get(code, "error") if message is None else message
            seconds = retry_after if code in _RETRY_AFTER_CODES else None
            self._faults.append(_Fault(code, text, seconds, left=times))

    def maintenance(self, seconds: float) -> None:
        """Answer 455 (service under maintenance) for the next ``seconds``; ``0`` ends it.

        While it lasts, ``Retry-After`` carries the whole seconds left, rounded up.

        Raises:
            ValueError: ``seconds`` is negative or not finite.
        """
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._maintenance_until = self._clock() + seconds if seconds > 0 else None

    def reset(self) -> None:
        """Forget the records, the pending faults and the maintenance; refill the buckets.

        The personas made so far and the credits left are kept.
        """
        self.requests.clear()
        self._faults.clear()
        self._maintenance_until = None
        self._buckets.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._answer(request.method, request.path, request.headers, body)
        delay = self._latency() if callable(self._latency) else self._latency
        if delay > 0:
            await self._sleep(delay)
        return self._respond(reply)

    def _respond(self, reply: _Reply) -> web.Response:
        envelope = {"code": reply.code, "message": reply.message, "data": reply.data}
        headers = {}
        if reply.retry_after is not None and self._retry_after:
            headers["Retry-After"] = str(reply.retry_after)
        status = reply.code if self._errors_in_http_status else 200
        reason = _REASONS.get(status) or _reason_phrase(status)
        return web.json_response(envelope, status=status, reason=reason, headers=headers)

    def _answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        try:
            payload: Any = json.loads(body)
        except (ValueError, RecursionError):
            payload, is_json = None, False
        else:
            is_json = True
        reply = self._decide(method, path, headers, payload, is_json=is_json)
        self.requests.append(
            RecordedRequest(
                method=method,
                path=path,
                headers={
                    k: _REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()
                },
                json=payload,
                code=reply.code,
                timestamp=self._clock(),
            )
        )
        return reply

    def _decide(
        self, method: str, path: str, headers: Mapping[str, str], payload: Any, *, is_json: bool
    ) -> _Reply:
        if path != _ENDPOINT_PATH or method != "POST":
            return _Reply(404, f"no endpoint {method} {path}")
        key = headers.get("x-api-key")
        if not key:
            return _Reply(401, "API key missing: send it in the x-api-key header")
        if key not in self.api_keys:
            return _Reply(401, "API key invalid")
        refusal = self._refusal(self.api_keys.index(key), self._clock())
        if refusal is not None:
            return refusal
        if not is_json:
            return _Reply(422, "request: body must be JSON")
        return self._create(payload)

    def _refusal(self, key_index: int, now: float) -> _Reply | None:
        """Maintenance, injected faults, random faults and the rate limit, in that order."""
        if self._maintenance_until is not None:
            left = self._maintenance_until - now
            if left > 0:
                return _Reply(455, _MESSAGES[455], retry_after=math.ceil(left))
            self._maintenance_until = None
        if self._faults:
            fault = self._faults[0]
            fault.left -= 1
            if fault.left == 0:
                self._faults.popleft()
            return _Reply(fault.code, fault.message, retry_after=fault.retry_after)
        if self._fail_rate and self._random.random() < self._fail_rate:
            code = self._random.choice(self._fail_codes)
            seconds = 1 if code in _RETRY_AFTER_CODES else None
            return _Reply(code, _MESSAGES.get(code, "error"), retry_after=seconds)
        if self._rate_limit is not None:
            bucket = self._buckets.setdefault(key_index, _Bucket(float(self._burst), now))
            wait = bucket.take(now, self._rate_limit, self._burst)
            if wait is not None:
                return _Reply(429, _MESSAGES[429], retry_after=max(1, math.ceil(wait)))
        return None

    def _create(self, payload: Any) -> _Reply:
        """Validate the body, then make the persona (or find the one made for the pair)."""
        try:
            persona = PersonaRequest.from_dict(payload)
        except RequestValidationError as exc:
            return _Reply(422, str(exc))
        pair = (persona.task_id, persona.suno_id)
        persona_id = self._by_pair.get(pair)
        if persona_id is None:
            if self.credits is not None:
                if self.credits <= 0:
                    return _Reply(402, _MESSAGES[402])
                self.credits -= 1
            persona_id = self._new_id()
            self._by_pair[pair] = persona_id
            self.personas[persona_id] = persona
        return _Reply(200, "success", data={"persona_id": persona_id})

    def _new_id(self) -> str:
        while True:
            persona_id = f"persona_{secrets.token_hex(8)}"
            if persona_id not in self.personas:
                return persona_id


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_keys: Iterable[str] = ("sk-test",),
    rate_limit: float | None = None,
    burst: int = 10,
    credits: int | None = None,  # noqa: A002  (the option's documented name)
    latency: float | Callable[[], float] = 0.0,
    retry_after: bool = True,
    errors_in_http_status: bool = True,
    fail_rate: float = 0.0,
    fail_codes: Iterable[int] = (429, 455, 500),
    seed: int | None = None,
    maintenance: tuple[float, float] | None = None,
    ready: Callable[[str], object] | None = None,
) -> None:
    """Run a :class:`PersonaEmulator` until cancelled, then stop it cleanly.

    Made for the ``suno-persona emulator`` command: it prints nothing and handles no
    signals; cancel the task to stop it.

    Args:
        host: The address to listen on.
        port: The port to listen on; ``0`` picks a free one.
        api_keys: The keys the emulator accepts.
        rate_limit: Requests per second allowed per API key, or ``None`` for no limit.
        burst: Capacity of each key's token bucket.
        credits: Credits available, or ``None`` for unlimited.
        latency: Seconds to wait before each answer, or a callable returning them.
        retry_after: Whether 429 and 455 answers carry ``Retry-After``.
        errors_in_http_status: Whether errors use their code as the HTTP status.
        fail_rate: The share of requests answered at random with one of ``fail_codes``.
        fail_codes: The codes of those random answers.
        seed: Seeds the draws of ``fail_rate``.
        maintenance: ``(after, seconds)``: answer 455 for ``seconds``, starting ``after``
            seconds after the emulator starts listening.
        ready: Called with the emulator's base URL once it is listening.
    """
    emulator = PersonaEmulator(
        api_keys=api_keys,
        rate_limit=rate_limit,
        burst=burst,
        credits=credits,
        latency=latency,
        retry_after=retry_after,
        errors_in_http_status=errors_in_http_status,
        host=host,
        port=port,
        fail_rate=fail_rate,
        fail_codes=fail_codes,
        seed=seed,
    )
    async with emulator:
        if maintenance is not None:
            after, seconds = maintenance
            asyncio.get_running_loop().call_later(after, emulator.maintenance, seconds)
        if ready is not None:
            ready(emulator.base_url)
        await asyncio.Event().wait()
