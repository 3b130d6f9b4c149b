"""The call pipeline: one call's attempts, through the gate, under the retry policy, with events.

Generic over the endpoint: a :class:`Call` carries what to send, how to read the reply
(``parse``), the gate it passes (``throttle``: each resource learns its own rate) and whether
it is safe to repeat (``idempotent``: the GETs retry 5xx, timeouts and broken connections).

The hot path is :meth:`CallPipeline._attempt`: a send that would not wait passes the gate
without an await, and a success is reported and left in one step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import aiohttp

from suno_persona import _protocol, _transport
from suno_persona._deadline import Deadline, WouldPassDeadline
from suno_persona._errors import (
    APIError,
    APITimeoutError,
    RateLimitError,
    ServiceUnavailableError,
    SunoPersonaError,
)
from suno_persona._models import Persona, PersonaRequest
from suno_persona._quota import Quota, parse_quota
from suno_persona._retry import (
    RetryBudget,
    RetryHooks,
    RetryPolicy,
    build_retrying,
    is_retryable,
)
from suno_persona._throttle import Answer, GateClosed, Pass, Throttle
from suno_persona.events import (
    AttemptFinished,
    CallFinished,
    CallStarted,
    RetryBudgetExhausted,
    RetryScheduled,
)

if TYPE_CHECKING:
    import random

__all__ = ["Call", "CallPipeline", "detach"]

logger = logging.getLogger("suno_persona")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Parse(Protocol[T_co]):
    """Reads a reply into the call's result, or raises the matching error (``now``: epoch)."""

    def __call__(
        self, status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> T_co: ...


CALL_IDS = itertools.count(1)  # next() on it is atomic: ids are unique in the process


class Call(Generic[T]):
    """One call's bookkeeping: what it sends, by when, and how many times it did.

    ``request`` is the persona request the events are about; ``None`` for a call that has
    no events of its own (the GETs).
    """

    __slots__ = (
        "call_id",
        "deadline",
        "idempotent",
        "parse",
        "prepared",
        "quota",
        "request",
        "sent",
        "spent",
        "started",
        "throttle",
        "url",
    )

    def __init__(
        self,
        request: PersonaRequest | None,
        prepared: _protocol.PreparedRequest,
        url: str,
        started: float,
        deadline: Deadline,
        *,
        parse: Parse[T],
        throttle: Throttle,
        idempotent: bool = False,
    ) -> None:
        self.request = request
        self.prepared = prepared
        self.url = url
        self.started = started
        self.deadline = deadline
        self.parse = parse
        self.throttle = throttle
        self.idempotent = idempotent
        self.call_id = 0
        self.sent = 0
        self.spent = 0
        self.quota: Quota | None = None
        """What the last reply announced of the limit (RateLimit headers), if anything."""


class CallPipeline:
    """The client's attempts, retries and call events (a part of :class:`AsyncPersonaClient`).

    It reads the client's settings and shared parts from the attributes declared here.
    """

    _api_key: str
    _timeout: float
    _retry: RetryPolicy
    _hooks: tuple[Callable[[object], object], ...]
    _clock: Callable[[], float]
    _rng: random.Random
    _budget: RetryBudget | None
    _closed: bool
    _root: Any  # the client that was constructed (see _settings): its _timeout
    _user_session: aiohttp.ClientSession | None
    _failed_hooks: set[int]

    def _emit(self, event: object) -> None:
        """Hand ``event`` to every hook; a hook that raises is logged once and ignored."""
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:  # noqa: PERF203 - a hook must never break a call
                if id(hook) not in self._failed_hooks:
                    self._failed_hooks.add(id(hook))
                    logger.exception("event hook %r raised; its later errors are not logged", hook)

    def _started(self, call: Call[T]) -> None:
        """Number the call and emit its :class:`CallStarted` (only with hooks and a request)."""
        if call.request is not None:
            call.call_id = next(CALL_IDS)
            self._emit(CallStarted(request=call.request, url=call.url, call_id=call.call_id))

    def _failed(self, call: Call[T], error: SunoPersonaError) -> None:
        """Stamp ``error`` with the call's attempts and time, and emit its :class:`CallFinished`."""
        # On Python 3.10 a coroutine may still see, as the exception being handled, a
        # foreign one its task was woken with; our errors must not chain it.
        detach(error)
        error.attempts = call.sent
        error.elapsed = self._clock() - call.started
        if self._hooks:
            self._finished(call, error.elapsed, error=error)

    def _finished(
        self,
        call: Call[T],
        elapsed: float,
        *,
        persona: Persona | None = None,
        error: SunoPersonaError | None = None,
    ) -> None:
        """Emit the call's :class:`CallFinished` (with neither persona nor error: cancelled)."""
        if call.request is None:
            return
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

    async def _run(self, session: aiohttp.ClientSession, call: Call[T]) -> T:
        """The attempts of one call, under the retry policy; the parsed result."""
        policy = self._retry
        # Most first attempts succeed: the tenacity driver is built only once one has
        # failed, and that failure is handed to it as the outcome of attempt 1.
        try:
            return await self._attempt(session, call, 1)
        except SunoPersonaError as error:
            if not error.retryable or policy.max_attempts == 1:
                raise
            first_failure = error
        throttle = call.throttle
        retrying = build_retrying(
            policy,
            sleep=throttle.sleep,
            clock=self._clock,
            deadline_at=call.deadline.at,
            rng=self._rng,
            budget=self._budget,
            paced=throttle.state is not None,
            hooks=self._retry_hooks(call),
            blocked_until=throttle.blocked_until,
            idempotent=call.idempotent,
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

    def _retry_hooks(self, call: Call[T]) -> RetryHooks:
        budget = self._budget

        def scheduled(attempt: int, delay: float, error: BaseException) -> None:
            call.spent = 0 if budget is None else budget.cost_of(error)
            if self._hooks and call.request is not None and isinstance(error, SunoPersonaError):
                # The backoff, or the shared pause when that holds the next send back longer.
                delay = max(delay, call.throttle.blocked_until() - self._clock())
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
            if self._hooks and call.request is not None and isinstance(error, SunoPersonaError):
                self._emit(
                    RetryBudgetExhausted(
                        request=call.request, attempt=attempt, error=error, call_id=call.call_id
                    )
                )

        return RetryHooks(scheduled=scheduled, exhausted=exhausted)

    async def _attempt(  # noqa: C901 - the hot path, kept in one frame on purpose
        self, session: aiohttp.ClientSession, call: Call[T], number: int
    ) -> T:
        """One attempt: through the gate, then one HTTP exchange; the parsed result."""
        sent = call.sent
        try:
            if self._closed:
                raise GateClosed  # noqa: TRY301 - turned into our error below, with the others
            throttle = call.throttle
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
                    status, result = await self._exchange(
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
            failure.retryable = is_retryable(self._retry, failure, idempotent=call.idempotent)
            raise
        else:
            throttle.leave_accepted(passage, call.quota)
            if self._budget is not None:
                self._budget.succeeded()
            if self._hooks:
                self._attempt_finished(call, number, now, status)
            return result
        if call.sent == sent and call.spent and self._budget is not None:
            self._budget.give_back(call.spent)
        call.spent = 0
        raise stopped

    def _attempt_failed(
        self, call: Call[T], number: int, started: float, passage: Pass, error: SunoPersonaError
    ) -> None:
        _redact(error, self._api_key)
        detach(error)
        answer, retry_after = _answer_of(error)
        passage.report(answer, retry_after, call.quota)
        if self._hooks:
            status = getattr(error, "http_status", None)
            self._attempt_finished(call, number, started, status, error)

    def _attempt_finished(
        self,
        call: Call[T],
        number: int,
        started: float,
        http_status: int | None,
        error: SunoPersonaError | None = None,
    ) -> None:
        """Emit the attempt's :class:`AttemptFinished` (``error`` ``None``: it succeeded)."""
        if call.request is None:
            return
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
        self, session: aiohttp.ClientSession, call: Call[T], timeout: float | None
    ) -> tuple[int, T]:
        """Send and parse: the raw reply, which may echo the key, lives only in this frame.

        A cancellation that comes from closing the client (aiohttp cancels what waits on the
        connections it closes) is our error; the caller's own cancellation propagates.
        """
        try:
            status, headers, body = await _transport.send(session, call.url, call.prepared, timeout)
        except asyncio.CancelledError:
            if not self._closed or _cancelling():
                raise
            raise SunoPersonaError("the client was closed while the call was in flight") from None
        wall = time.time()
        call.quota = parse_quota(headers, now=wall)
        return status, call.parse(status, headers, body, now=wall)


def _cancelling() -> bool:
    """Whether the current task itself was asked to cancel (Python 3.11+ can tell).

    On 3.10 a cancellation during ``close()`` is taken to come from the close: letting it
    out would end the call with no outcome, and a fan-out would wait for it for ever.
    """
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is not None and cancelling() > 0


def detach(error: SunoPersonaError) -> None:
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
