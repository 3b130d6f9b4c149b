"""``AsyncPersonaClient``: configuration, the session's lifecycle, and the I/O edge.

Everything about the wire format lives in ``_protocol``; everything about when to try
again lives in ``_retry`` and ``_throttle``. Foreign exceptions (aiohttp, asyncio) are
translated into ours in ``_transport`` and nowhere else; the checks of the configuration
live in ``_config``.

A client belongs to the event loop it is used in. When that loop has ended (a script that
calls ``asyncio.run`` twice), the next call rebinds the client to the loop it runs in; a
client whose loop is still running elsewhere refuses to be used from another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import random
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp

from suno_persona import _config, _protocol, _store, _transport
from suno_persona._deadline import Deadline, WouldPassDeadline
from suno_persona._errors import (
    APIError,
    APITimeoutError,
    RateLimitError,
    ServiceUnavailableError,
    SunoPersonaError,
)
from suno_persona._fanout import (
    Completions,
    as_completed,
    check_concurrency,
    check_source,
    gather_in_order,
)
from suno_persona._models import Persona, PersonaRequest
from suno_persona._quota import Quota, parse_quota
from suno_persona._retry import RetryBudget, RetryHooks, RetryPolicy, build_retrying
from suno_persona._throttle import Answer, GateClosed, Pass, Throttle, ThrottlePolicy
from suno_persona.events import (
    AttemptFinished,
    CallFinished,
    CallStarted,
    Event,
    RetryBudgetExhausted,
    RetryScheduled,
)

if TYPE_CHECKING:
    from suno_persona.redis import RedisThrottleStore

__all__ = ["AsyncPersonaClient"]

logger = logging.getLogger("suno_persona")

DEFAULT_BASE_URL = _config.DEFAULT_BASE_URL
MAX_BODY_BYTES = _transport.MAX_BODY_BYTES
_DEFAULT_CONCURRENCY = 100
_NO_RETRIES = RetryPolicy(max_attempts=1)
_UNBOUNDED = Deadline()

Outcome = Persona | SunoPersonaError
"""One result of a fan-out: the :class:`Persona`, or the request's :class:`SunoPersonaError`."""
Requests = (
    Iterable[PersonaRequest | Mapping[str, Any]] | AsyncIterable[PersonaRequest | Mapping[str, Any]]
)
_WHAT = "PersonaRequest objects or field mappings"
EventHook = Callable[[Event], object]


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET
_CALL_IDS = itertools.count(1)  # next() on it is atomic: ids are unique in the process


class _Call:
    """One call's bookkeeping: what it sends, by when, and how many times it did."""

    __slots__ = (
        "call_id",
        "deadline",
        "prepared",
        "quota",
        "request",
        "sent",
        "spent",
        "started",
        "url",
    )

    def __init__(
        self,
        request: PersonaRequest,
        prepared: _protocol.PreparedRequest,
        url: str,
        started: float,
        deadline: Deadline,
    ) -> None:
        self.request = request
        self.prepared = prepared
        self.url = url
        self.started = started
        self.deadline = deadline
        self.call_id = 0
        self.sent = 0
        self.spent = 0
        self.quota: Quota | None = None
        """What the last reply announced of the limit (RateLimit headers), if anything."""


class AsyncPersonaClient:
    """An asyncio client for the "Generate a Suno persona" endpoint.

    One client is meant to be shared by every task of an application: it holds one
    aiohttp session (created lazily inside the running loop), one throttle that all
    calls cooperate through, and one cap on requests in flight.

    Args:
        api_key: The crun.ai API key; defaults to the ``SUNO_API_KEY`` environment variable.
        base_url: Defaults to ``SUNO_API_BASE_URL``, then ``https://api.crun.ai``. Must be
            https, except for loopback hosts, unless ``allow_insecure_http`` is set.
        timeout: Seconds for one attempt (connect, send and read the whole reply). Time
            spent waiting at the client's own gate is not part of it.
        retry: The :class:`RetryPolicy`; ``None`` turns retries off (one attempt per call).
        max_concurrency: Cap on requests in flight across all calls of this client; the
            connection pool has the same size, so a request never waits for a connection
            after its timeout started. ``None``: no cap (and an unlimited pool). With a
            ``session`` of your own, the cap is also held to its connector's limits.
        session: An aiohttp session to use; it is never closed by the client.
        throttle: The :class:`ThrottlePolicy` shared by all calls; ``None`` turns the
            shared throttle off (every call then only backs off on its own; the cap on
            requests in flight stays).
        allow_insecure_http: Permit plain http to a host that is not loopback.
        event_hooks: Callables called with every :mod:`suno_persona.events` event.
        throttle_store: Where the throttle's shared state lives: ``None`` (the default,
            then ``SUNO_THROTTLE_STORE``) keeps it in this client; a Redis URL
            (``redis://``, ``rediss://``, ``unix://``) or a
            :class:`suno_persona.redis.RedisThrottleStore` shares the learned rate, the
            ``Retry-After`` pause and the maintenance probe with every client of the same
            key and base URL using that Redis (needs ``suno-persona[redis]``). The cap on
            requests in flight, the slow start and the retry budget stay per client.

    Raises:
        SunoPersonaError: No key was given and ``SUNO_API_KEY`` is unset, the key is empty
            or has control characters, or ``base_url`` is not acceptable (not http(s), a
            user name or password, a query or fragment, plain http to a remote host).
        ValueError: Another argument has the wrong type or value (a ``timeout`` that is
            not a finite number > 0, a ``retry`` that is not a ``RetryPolicy``, ...); the
            message names it.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen value
        max_concurrency: int | None = _DEFAULT_CONCURRENCY,
        session: aiohttp.ClientSession | None = None,
        throttle: ThrottlePolicy | None = ThrottlePolicy(),  # noqa: B008 - frozen value
        allow_insecure_http: bool = False,
        event_hooks: Iterable[EventHook] = (),
        throttle_store: str | RedisThrottleStore | None = None,
    ) -> None:
        self._api_key = _config.resolve_api_key(api_key)
        self._base_url = _config.resolve_base_url(
            base_url,
            allow_insecure_http=_config.check_bool("allow_insecure_http", allow_insecure_http),
        )
        self._url = self._base_url + _protocol.ENDPOINT_PATH
        self._timeout = _config.check_timeout(timeout)
        _config.check_instance("retry", retry, RetryPolicy)
        _config.check_instance("session", session, aiohttp.ClientSession)
        _config.check_instance("throttle", throttle, ThrottlePolicy)
        max_concurrency = _config.check_max_concurrency(max_concurrency)
        self._retry = retry if retry is not None else _NO_RETRIES
        if session is not None:
            max_concurrency = _cap_to_pool(max_concurrency, session.connector)
        self._max_concurrency = max_concurrency
        self._user_session = session
        self._session: aiohttp.ClientSession | None = session
        self._watcher: AsyncGenerator[None, None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._root = self
        self._children: weakref.WeakSet[AsyncPersonaClient] = weakref.WeakSet()
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._hooks = _config.check_event_hooks(event_hooks)
        self._failed_hooks: set[int] = set()
        self._throttle = Throttle(
            throttle,
            max_concurrency=max_concurrency,
            max_pause=self._retry.max_delay,
            clock=self._now,
            sleep=self._pause,
            emit=self._emit,
            state=_store.build_state(
                throttle_store,
                throttle,
                base_url=self._base_url,
                api_key=self._api_key,
                max_pause=self._retry.max_delay,
                probe_lease=self._timeout,
                clock=self._now,
                emit=self._emit,
            ),
        )
        self._budget = (
            RetryBudget(
                capacity=throttle.retry_budget,
                cost=throttle.retry_cost,
                timeout_cost=throttle.timeout_retry_cost,
                refund=throttle.success_refund,
            )
            if throttle is not None and throttle.retry_budget > 0
            else None
        )

    def _now(self) -> float:
        return self._clock()

    async def _pause(self, seconds: float) -> None:
        await self._sleep(seconds)

    def _emit(self, event: object) -> None:
        """Hand ``event`` to every hook; a hook that raises is logged once and ignored."""
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:  # noqa: PERF203 - a hook must never break a call
                if id(hook) not in self._failed_hooks:
                    self._failed_hooks.add(id(hook))
                    logger.exception("event hook %r raised; its later errors are not logged", hook)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncPersonaClient base_url={self._base_url!r} api_key='***' {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def with_options(
        self,
        *,
        timeout: float | Literal[_Unset.UNSET] = _UNSET,
        retry: RetryPolicy | Literal[_Unset.UNSET] | None = _UNSET,
        event_hooks: Iterable[EventHook] | Literal[_Unset.UNSET] = _UNSET,
    ) -> AsyncPersonaClient:
        """A client that differs from this one only in the settings given.

        It shares this client's session, connection pool, cap on requests in flight,
        throttle and retry budget: a ``Retry-After`` seen through one is honoured by the
        other. An argument left out keeps this client's value. Closing this client closes
        the new one too (its calls then raise :class:`SunoPersonaError`); closing the new
        one, or leaving its ``async with``, does not close this one.

        ```python
        async with AsyncPersonaClient() as client:
            patient = client.with_options(timeout=120, retry=RetryPolicy(max_attempts=10))
            persona = await patient.generate_persona(task_id="t", suno_id="s", name="n")
        ```

        Args:
            timeout: Seconds for one attempt, as in the constructor.
            retry: The :class:`RetryPolicy`; ``None`` turns retries off.
            event_hooks: The hooks of the calls made through the new client, instead of
                this client's. The throttle's own events (``RateChanged``, ...) still go
                to the hooks of the client that was constructed.

        Raises:
            SunoPersonaError: This client is closed.
            ValueError: An argument has the wrong type or value; the message names it.
        """
        if self._closed:
            raise SunoPersonaError("the client is closed")
        root = self._root
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)
        child._session = None
        child._watcher = None
        child._user_session = root._user_session  # noqa: SLF001 - same class
        child._children = weakref.WeakSet()
        if timeout is not _UNSET:
            child._timeout = _config.check_timeout(timeout)
        if retry is not _UNSET:
            _config.check_instance("retry", retry, RetryPolicy)
            child._retry = retry if retry is not None else _NO_RETRIES
        if event_hooks is not _UNSET:
            child._hooks = _config.check_event_hooks(event_hooks)
        root._children.add(child)  # noqa: SLF001 - same class
        return child

    async def __aenter__(self) -> AsyncPersonaClient:  # noqa: PYI034 - no typing.Self in 3.10
        await self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's own session (never one passed in). Safe to call twice.

        Closing a client also closes every client :meth:`with_options` made from it;
        closing one of those closes only itself.
        """
        if self._closed:
            return
        self._closed = True
        if self._root is not self:
            return
        for child in list(self._children):
            child._closed = True  # noqa: SLF001 - same class
        await self._throttle.aclose()
        session, self._session = self._session, None
        watcher, self._watcher = self._watcher, None
        if session is not None and session is not self._user_session:
            await session.close()
        if watcher is not None:
            await watcher.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        session = getattr(self, "_session", None)
        if session is not None and session is not self._user_session and not session.closed:
            _warn(
                f"Unclosed {type(self).__name__}; use 'async with' or 'await client.close()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    async def generate_persona(
        self, request: PersonaRequest | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Persona:
        """Turn a finished Suno song into a persona and return it.

        Pass a :class:`PersonaRequest`, a mapping of its fields (a dict read from JSON, as
        in ``generate_persona({"task_id": ..., "suno_id": ..., "name": ...})``), or its
        fields as keyword arguments. The request is validated before anything is sent; 429
        and 455 are retried under the client's :class:`RetryPolicy`.

        The persona carries ``attempts`` (requests sent) and ``elapsed`` (seconds for the
        whole call); an error raised carries them too.

        Raises:
            RequestValidationError: The request breaks a rule of the schema (nothing sent).
            APIError: The API answered with an error code (see the subclasses).
            APIConnectionError: The API could not be reached, or the connection broke.
            InvalidResponseError: The reply was neither a success nor an error envelope.
        """
        if request is not None and fields:
            raise TypeError(
                "pass either a PersonaRequest (or a mapping of its fields) or keyword fields, "
                "not both"
            )
        return await self._generate(_coerce(request if request is not None else fields))

    async def generate_many(
        self,
        requests: Requests,
        *,
        concurrency: int = 8,
    ) -> list[Outcome]:
        """Create many personas, at most ``concurrency`` at a time.

        ``requests`` may be any iterable or async iterable (a list, a generator, a database
        cursor, an async generator); it is read lazily, at most ``2 * concurrency`` items
        ahead of the requests that have finished, so only the results are kept.

        Returns:
            One outcome per input, in input order: the :class:`Persona`, or the
                :class:`SunoPersonaError` for that request (returned, not raised). An
                input that fails validation gets its :class:`RequestValidationError` and
                is not sent. Cancellation still propagates.

        Raises:
            TypeError: ``requests`` is a mapping, a str or bytes, or not iterable.
            Exception: Whatever the input iterator raises, once the calls in flight are
                cancelled.
        """
        check_source(requests, "requests", _WHAT)
        return await gather_in_order(self._generate_outcome, requests, concurrency)

    def generate_as_completed(
        self,
        requests: Requests,
        *,
        concurrency: int = 8,
    ) -> Completions[Outcome]:
        """Create many personas and yield ``(index, outcome)`` as each one finishes.

        ``requests`` may be any iterable or async iterable, of any size: it is read lazily,
        at most ``2 * concurrency`` items ahead of the outcomes you have received, and
        nothing is kept per finished item, so memory depends on ``concurrency`` only. The
        index counts the items in input order from 0.

        Every index is yielded exactly once. Cancelling the consumer cancels the work
        still outstanding and leaves no task behind. An exception raised by the input
        iterator cancels the work in flight and is then raised by the loop. To stop the
        work the moment you leave the loop early, use the result as a context manager:

        ```python
        async with client.generate_as_completed(requests) as results:
            async for index, outcome in results:
                ...
        ```

        (A bare ``async for`` with ``break`` stops the work when the iterator is
        garbage-collected: right away, unless a reference to it is kept.)

        Raises:
            TypeError: ``requests`` is a mapping, a str or bytes, or not iterable.
            ValueError: ``concurrency`` is not an int >= 1.
        """
        check_source(requests, "requests", _WHAT)
        check_concurrency(concurrency)
        return Completions(as_completed(self._generate_outcome, requests, concurrency))

    async def _generate_outcome(self, request: PersonaRequest | Mapping[str, Any]) -> Outcome:
        try:
            return await self._generate(_coerce(request))
        except SunoPersonaError as error:
            return error

    async def _generate(self, request: PersonaRequest) -> Persona:
        session = self._open_session() or await self._ensure_open()
        # The client's own session sends the headers itself; a session of yours is not ours
        # to change, so they go with each request.
        prepared = _protocol.build_request(
            request, api_key=self._api_key if session is self._user_session else None
        )
        now = self._clock()
        seconds = self._retry.deadline
        call = _Call(
            request,
            prepared,
            self._url,
            now,
            _UNBOUNDED if seconds is None else Deadline(now + seconds),
        )
        if self._hooks:
            call.call_id = next(_CALL_IDS)
            self._emit(CallStarted(request=request, url=call.url, call_id=call.call_id))
        try:
            persona_id = await self._run(session, call)
        except SunoPersonaError as error:
            # On Python 3.10 a coroutine may still see, as the exception being handled, a
            # foreign one its task was woken with; our errors must not chain it.
            _detach(error)
            error.attempts = call.sent
            error.elapsed = self._clock() - call.started
            if self._hooks:
                self._finished(call, error.elapsed, error=error)
            raise
        except BaseException:
            if self._hooks:
                self._finished(call, self._clock() - call.started)
            raise
        persona = Persona(
            persona_id=persona_id,
            request=request,
            attempts=call.sent,
            elapsed=self._clock() - call.started,
        )
        if self._hooks:
            self._finished(call, persona.elapsed, persona=persona)
        return persona

    def _finished(
        self,
        call: _Call,
        elapsed: float,
        *,
        persona: Persona | None = None,
        error: SunoPersonaError | None = None,
    ) -> None:
        """Emit the call's :class:`CallFinished` (with neither persona nor error: cancelled)."""
        self._emit(
            CallFinished(
                request=call.request,
                attempts=call.sent,
                elapsed=elapsed,
                persona=persona,
                error=error,
                call_id=call.call_id,
            )
        )

    async def _run(self, session: aiohttp.ClientSession, call: _Call) -> str:
        """The attempts of one call, under the retry policy; the persona id."""
        policy = self._retry
        # Most first attempts succeed: the tenacity driver is built only once one has
        # failed, and that failure is handed to it as the outcome of attempt 1.
        try:
            return await self._attempt(session, call, 1)
        except SunoPersonaError as error:
            if not error.retryable or policy.max_attempts == 1:
                raise
            first_failure = error
        retrying = build_retrying(
            policy,
            sleep=self._throttle.sleep,
            clock=self._clock,
            deadline_at=call.deadline.at,
            rng=self._rng,
            budget=self._budget,
            paced=self._throttle.state is not None,
            hooks=self._retry_hooks(call),
            blocked_until=self._throttle.blocked_until,
        )
        try:
            async for try_ in retrying:
                with try_:
                    number = try_.retry_state.attempt_number
                    if number == 1:
                        raise first_failure
                    return await self._attempt(session, call, number)
        except GateClosed:
            raise SunoPersonaError(
                "the client was closed while the call was waiting to retry"
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _retry_hooks(self, call: _Call) -> RetryHooks:
        budget = self._budget

        def scheduled(attempt: int, delay: float, error: BaseException) -> None:
            call.spent = 0 if budget is None else budget.cost_of(error)
            if self._hooks and isinstance(error, SunoPersonaError):
                # The backoff, or the shared pause when that holds the next send back longer.
                delay = max(delay, self._throttle.blocked_until() - self._clock())
                self._emit(
                    RetryScheduled(
                        request=call.request,
                        attempt=attempt,
                        delay=delay,
                        error=error,
                        call_id=call.call_id,
                    )
                )

        def exhausted(attempt: int, error: BaseException) -> None:
            if budget is not None and not budget.warned:
                # Once per outage, not once per call: a success makes it worth saying again.
                budget.warned = True
                logger.warning(
                    "retry budget exhausted: calls fail with their last error instead of "
                    "retrying until a request succeeds (first after attempt %d)",
                    attempt,
                )
            if self._hooks and isinstance(error, SunoPersonaError):
                self._emit(
                    RetryBudgetExhausted(
                        request=call.request, attempt=attempt, error=error, call_id=call.call_id
                    )
                )

        return RetryHooks(scheduled=scheduled, exhausted=exhausted)

    async def _attempt(  # noqa: C901 - the hot path, kept in one frame on purpose
        self, session: aiohttp.ClientSession, call: _Call, number: int
    ) -> str:
        """One attempt: through the gate, then one HTTP exchange; the persona id."""
        sent = call.sent
        try:
            if self._closed:
                raise GateClosed  # noqa: TRY301 - turned into our error below, with the others
            throttle = self._throttle
            passage = throttle.try_enter() or await throttle.enter(call.deadline)
            try:
                now = self._clock()
                timeout = min(self._timeout, call.deadline.remaining(now))
                if timeout <= 0:
                    raise WouldPassDeadline("starting the attempt", 0.0)  # noqa: TRY301 - as above
                call.sent += 1
                logger.debug("attempt %d: %s %s", number, call.prepared.method, call.url)
                # Our own session already applies self._timeout; only a shorter one, or a
                # session of the user's, needs a timeout of its own on the request.
                own_timeout = (
                    timeout == self._root._timeout  # noqa: SLF001 - the session's own timeout
                    and session is not self._user_session
                )
                try:
                    status, persona_id = await self._exchange(
                        session, call, None if own_timeout else timeout
                    )
                except SunoPersonaError as failed:
                    self._attempt_failed(call, number, now, passage, failed)
                    # Without the frames below this one: their locals hold the reply, which
                    # may echo the key, and that is what a traceback with locals would show.
                    raise failed.with_traceback(None)  # noqa: B904 - the same error, fewer frames
            except BaseException:
                throttle.leave(passage)
                raise
        except WouldPassDeadline as signal:
            stopped: SunoPersonaError = APITimeoutError(
                f"the call's deadline would pass while {signal.reason}", sent=False, deadline=True
            )
            if math.isfinite(signal.wait):
                stopped.retry_after = signal.wait
        except GateClosed:
            stopped = SunoPersonaError("the client was closed while the call was waiting to send")
        except SunoPersonaError as failure:
            failure.retryable = self._retry.is_retryable(failure)
            raise
        else:
            throttle.leave_accepted(passage, call.quota)
            if self._budget is not None:
                self._budget.succeeded()
            if self._hooks:
                self._attempt_finished(call, number, now, status)
            return persona_id
        if call.sent == sent and call.spent and self._budget is not None:
            self._budget.give_back(call.spent)
        call.spent = 0
        raise stopped

    def _attempt_failed(
        self, call: _Call, number: int, started: float, passage: Pass, error: SunoPersonaError
    ) -> None:
        _redact(error, self._api_key)
        _detach(error)
        answer, retry_after = _answer_of(error)
        passage.report(answer, retry_after, call.quota)
        if self._hooks:
            status = getattr(error, "http_status", None)
            self._attempt_finished(call, number, started, status, error)

    def _attempt_finished(
        self,
        call: _Call,
        number: int,
        started: float,
        http_status: int | None,
        error: SunoPersonaError | None = None,
    ) -> None:
        """Emit the attempt's :class:`AttemptFinished` (``error`` ``None``: it succeeded)."""
        self._emit(
            AttemptFinished(
                request=call.request,
                attempt=number,
                elapsed=self._clock() - started,
                http_status=http_status,
                error=error,
                call_id=call.call_id,
            )
        )

    async def _exchange(
        self, session: aiohttp.ClientSession, call: _Call, timeout: float | None
    ) -> tuple[int, str]:
        """Send and parse: the raw reply, which may echo the key, lives only in this frame.

        A cancellation that comes from closing the client (aiohttp cancels what waits on the
        connections it closes) is our error; the caller's own cancellation propagates.
        """
        try:
            status, headers, body = await _transport.send(session, call.url, call.prepared, timeout)
        except asyncio.CancelledError:
            if not self.closed or _cancelling():
                raise
            raise SunoPersonaError("the client was closed while the call was in flight") from None
        wall = time.time()
        call.quota = parse_quota(headers, now=wall)
        persona_id = _protocol.parse_persona_id(status, headers, body, now=wall)
        return status, persona_id

    def _open_session(self) -> aiohttp.ClientSession | None:
        """The session, when it is ready for this loop (the common case); else ``None``."""
        root = self._root
        session = root._session  # noqa: SLF001 - same class
        if (
            self._closed
            or session is None
            or session.closed
            or root._loop is not asyncio.get_running_loop()  # noqa: SLF001 - same class
        ):
            return None
        return session

    async def _ensure_open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SunoPersonaError("the client is closed")
        if self._root is not self:
            return await self._root._ensure_open()  # noqa: SLF001 - same class
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._bind(loop)
        session = self._session
        if session is None or (session.closed and session is not self._user_session):
            limit = self._max_concurrency or 0
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit),
                timeout=_transport.attempt_timeout(aiohttp.ClientTimeout(), self._timeout),
                headers=_protocol.request_headers(self._api_key),
            )
            # Closes the session when its loop shuts down (asyncio.run does that), so a
            # client outliving its loop leaves no connection of that loop open.
            self._watcher = _close_at_shutdown(session)
            await anext(self._watcher)
            self._throttle.register()
        return session

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` the client's loop, unless the loop it is bound to still runs."""
        previous = self._loop
        if previous is not None and previous.is_running():
            raise SunoPersonaError(
                "this client is bound to another event loop that is still running (in "
                "another thread?); use one client per event loop"
            )
        user = self._user_session
        if user is not None and getattr(user, "_loop", loop) is not loop:
            raise SunoPersonaError(
                "the session passed to the client belongs to another event loop; create the "
                "aiohttp session in the loop that uses the client (or let the client make one)"
            )
        stale, self._session = self._session, user
        watcher, self._watcher = self._watcher, None
        self._loop = loop
        if previous is not None:
            self._throttle.rebind()
        if stale is not None and stale is not user:
            # The session belonged to the ended loop: close what can still be closed.
            with contextlib.suppress(Exception):
                await stale.close()
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.aclose()


def _cancelling() -> bool:
    """Whether the current task itself was asked to cancel (Python 3.11+ can tell).

    On 3.10 a cancellation during ``close()`` is taken to come from the close: letting it
    out would end the call with no outcome, and a fan-out would wait for it for ever.
    """
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is not None and cancelling() > 0


async def _close_at_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Suspends until closed; the loop's ``shutdown_asyncgens`` then closes ``session``."""
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


def _detach(error: SunoPersonaError) -> None:
    """Chain nothing: a foreign exception's frames may hold the key in their locals."""
    error.__cause__ = None
    error.__context__ = None


def _redact(error: SunoPersonaError, secret: str) -> None:
    """Replace ``secret`` (the API key) in the error's message, where a reply may echo it."""
    if secret in error.message:
        error.message = error.message.replace(secret, "***")
        error.args = (error.message,)


def _answer_of(error: SunoPersonaError) -> tuple[Answer, float | None]:
    """How the throttle should read an attempt's error: the one place that decides it."""
    if isinstance(error, RateLimitError):
        return Answer.REFUSED, error.retry_after
    if isinstance(error, ServiceUnavailableError):
        return Answer.MAINTENANCE, error.retry_after
    if isinstance(error, APIError):
        return Answer.ACCEPTED, None
    return Answer.NO_ANSWER, None


def _cap_to_pool(cap: int | None, connector: aiohttp.BaseConnector | None) -> int | None:
    """The in-flight cap held to a user's connector's limits, so no call waits in its pool."""
    limits = [cap] if cap is not None else []
    if connector is not None:
        limits += [n for n in (connector.limit, connector.limit_per_host) if n]
    return min(limits) if limits else None


def _coerce(request: PersonaRequest | Mapping[str, Any]) -> PersonaRequest:
    if isinstance(request, PersonaRequest):
        return request
    return PersonaRequest.from_dict(request)
