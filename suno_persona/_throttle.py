"""The gate that every request of one client passes: one per client, shared by all tasks.

It does four things, so that concurrent tasks cooperate instead of each hammering the API:

* a cap on requests in flight (``max_concurrency``);
* a slow start while nothing is known of the API's limit: at first only ``initial_window``
  requests are in flight, one more for each success (so it doubles every round trip),
  until the first 429 or until ``max_window`` requests are in flight;
* an adaptive send rate learned from 429s: a token bucket whose rate is cut to a share of
  the rate the server accepted, at most once per measurement window and never below a
  floor, then grows back along a CUBIC curve (the idea of botocore's adaptive retry mode);
* a pause of all sends when the server says ``Retry-After`` (one shared deadline);
* a maintenance breaker: after a 455 only one probe request is in flight at a time, on a
  backoff schedule; when a probe gets any other answer, every waiting task resumes;

plus a retry budget (botocore's retry quota): each retry spends tokens, each success earns
some back, and an empty budget makes calls fail with their last error instead of retrying.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from suno_persona._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    RateLimitError,
    ServiceUnavailableError,
    SunoPersonaError,
)

__all__ = ["Throttle", "ThrottlePolicy", "Ticket"]

_MAX_EVENTS = 100_000
_MIN_REJECTED = 2
_EPSILON = 1e-9  # a token short by a rounding error is a token


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _fraction(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _window_size(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class ThrottlePolicy:
    """How one client's calls cooperate; pass ``throttle=None`` to the client to turn it off.

    Attributes:
        adaptive_rate: Learn a send rate from 429s.
        initial_window: Requests in flight at first, while the API's limit is unknown;
            ``None`` turns the slow start off.
        max_window: The slow start ends when this many requests are in flight without
            a 429.
        beta: After a burst of 429s the rate becomes ``beta`` times the rate the server
            accepted over the last ``window`` seconds.
        window: Measurement window in seconds; the rate is cut at most once per window.
        min_rate: Floor of the learned rate, in requests per second.
        growth: CUBIC's scaling constant: how fast the rate grows back (requests/s per s³).
        probe_initial: Seconds before the first maintenance probe after a 455.
        probe_max: Longest interval between maintenance probes.
        retry_budget: Tokens in the retry budget (0 turns the budget off).
        retry_cost: Tokens a retry spends.
        timeout_retry_cost: Tokens a retry after a timeout or broken connection spends.
        success_refund: Tokens a success earns back.
    """

    adaptive_rate: bool = True
    initial_window: int | None = attrs.field(default=4, validator=_window_size)
    max_window: int = attrs.field(default=64, validator=_window_size)
    beta: float = attrs.field(default=0.85, validator=_fraction)
    window: float = attrs.field(default=1.0, validator=_positive)
    min_rate: float = attrs.field(default=1.0, validator=_positive)
    growth: float = attrs.field(default=0.4, validator=_positive)
    probe_initial: float = attrs.field(default=0.25, validator=_non_negative)
    probe_max: float = attrs.field(default=1.0, validator=_non_negative)
    retry_budget: int = 500
    retry_cost: int = 5
    timeout_retry_cost: int = 10
    success_refund: int = 1


class Ticket:
    """One request's pass through the gate: ``async with throttle.slot(deadline) as ticket``.

    Entering waits for permission to send; the ticket then reports the outcome back, and
    leaving gives the places it held back. The order of the waits matters: a place in
    flight and in the start-up window first, then the breaker and the send rate, so no
    request passes a check made before it waited.
    """

    __slots__ = ("_admitted_at", "_deadline_at", "_probe", "_reported", "_throttle", "_windowed")

    def __init__(self, throttle: Throttle, deadline_at: float | None) -> None:
        self._throttle = throttle
        self._deadline_at = deadline_at
        self._probe = False
        self._windowed = False
        self._reported = False
        self._admitted_at = 0.0

    async def __aenter__(self) -> Ticket:  # noqa: PYI034 - no typing.Self in 3.10
        await self._throttle._enter(self)  # noqa: SLF001
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._throttle._leave(self)  # noqa: SLF001

    def succeeded(self) -> None:
        """The API accepted the request."""
        self._reported = True
        self._throttle._on_success(probe=self._probe, sent_at=self._admitted_at)  # noqa: SLF001

    def failed(self, error: SunoPersonaError) -> None:
        """The request ended with ``error``."""
        self._reported = True
        self._throttle._on_error(error, probe=self._probe, sent_at=self._admitted_at)  # noqa: SLF001


class Throttle:
    """The per-client gate. Not thread-safe: it lives in one event loop, like the client."""

    def __init__(
        self,
        policy: ThrottlePolicy | None,
        *,
        max_concurrency: int | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._max_concurrency = max_concurrency
        self._in_flight = (
            asyncio.Semaphore(max_concurrency) if max_concurrency is not None else None
        )
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._waiting = 0
        # slow start
        self._window = policy.initial_window if policy is not None else None
        self._windowed = 0
        # adaptive rate
        self._rate: float | None = None
        self._rate_max = 0.0
        self._cut_at = 0.0
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._accepted: collections.deque[float] = collections.deque(maxlen=_MAX_EVENTS)
        self._rejected: collections.deque[float] = collections.deque(maxlen=_MAX_EVENTS)
        self._first_event_at: float | None = None
        # how requests sent after the last cut fared, to tell a limit from random 429s
        self._cut_share: float | None = None
        self._after_cut = [0, 0]
        self._noise = 0.0
        # Retry-After
        self._paused_until = 0.0
        # maintenance breaker
        self._breaker_open = False
        self._probe_in_flight = False
        self._next_probe_at = 0.0
        self._probe_interval = 0.0
        # retry budget
        self._budget = policy.retry_budget if policy is not None else 0

    def rebind(self) -> None:
        """Make new asyncio primitives, for a client moving to a new loop (the old one ended).

        Semaphores, locks and events bind to the loop that first waits on them; the learned
        state (rate, breaker, budget) is kept.
        """
        if self._max_concurrency is not None:
            self._in_flight = asyncio.Semaphore(self._max_concurrency)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._waiting = 0

    @property
    def rate(self) -> float | None:
        """The learned send rate in requests per second, ``None`` while unlimited."""
        return self._current_rate(self._clock())

    def slot(self, deadline_at: float | None) -> Ticket:
        """A place to send one request: use as ``async with throttle.slot(d) as ticket``."""
        return Ticket(self, deadline_at)

    async def _enter(self, ticket: Ticket) -> None:
        deadline_at = ticket._deadline_at  # noqa: SLF001
        if self._in_flight is not None:
            await self._wait(self._in_flight.acquire(), deadline_at)
        try:
            ticket._windowed = await self._enter_window(deadline_at)  # noqa: SLF001
            ticket._probe = await self._admit(deadline_at)  # noqa: SLF001
            ticket._admitted_at = self._clock()  # noqa: SLF001
        except BaseException:
            self._leave(ticket)
            raise

    def _leave(self, ticket: Ticket) -> None:
        if ticket._probe and not ticket._reported:  # noqa: SLF001
            self._probe_in_flight = False
            self._notify()
        if ticket._windowed:  # noqa: SLF001
            self._windowed -= 1
            if self._waiting:
                self._notify()
        if self._in_flight is not None:
            self._in_flight.release()

    def spend_retry(self, error: BaseException) -> bool:
        """Take the cost of one retry after ``error`` from the budget; ``False`` when empty."""
        policy = self.policy
        if policy is None or policy.retry_budget == 0:
            return True
        cost = (
            policy.timeout_retry_cost
            if isinstance(error, APIConnectionError) and error.sent
            else policy.retry_cost
        )
        if self._budget < cost:
            return False
        self._budget -= cost
        return True

    async def _admit(self, deadline_at: float | None) -> bool:
        if self.policy is None:
            return False
        while self._breaker_open:
            now = self._clock()
            if not self._probe_in_flight and now >= self._next_probe_at:
                self._probe_in_flight = True
                return True
            if deadline_at is not None and deadline_at <= now:
                raise APITimeoutError(
                    "the call's deadline passed while the API was in maintenance",
                    sent=False,
                    deadline=True,
                )
            if self._probe_in_flight:
                await self._wait_for_change(deadline_at)
            else:
                wake_at = self._next_probe_at
                if deadline_at is not None:
                    wake_at = min(wake_at, deadline_at)
                await self._sleep(wake_at - now)
        if self._rate is None and self._paused_until <= self._clock():
            return False
        await self._wait(self._take_token(deadline_at), deadline_at)
        return False

    async def _enter_window(self, deadline_at: float | None) -> bool:
        """Take a place in the start-up window, if the slow start is still on."""
        while self._window is not None and self._rate is None:
            if self._windowed < self._window:
                self._windowed += 1
                return True
            await self._wait_for_change(deadline_at)
        return False

    async def _wait_for_change(self, deadline_at: float | None) -> None:
        self._waiting += 1
        try:
            await self._wait(self._changed.wait(), deadline_at)
        finally:
            self._waiting -= 1

    def _notify(self) -> None:
        """Wake every task waiting on the gate's state, so each looks at it again."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _take_token(self, deadline_at: float | None) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._paused_until - now
                if wait <= 0:
                    rate = self._current_rate(now)
                    if rate is None:
                        return
                    self._tokens = min(
                        max(1.0, rate * 0.1),
                        self._tokens + (now - self._refilled_at) * rate,
                    )
                    self._refilled_at = now
                    if self._tokens >= 1 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1)
                        return
                    wait = (1 - self._tokens) / rate
                if deadline_at is not None and now + wait > deadline_at:
                    raise APITimeoutError(
                        "the call's deadline would pass while waiting to send",
                        sent=False,
                        deadline=True,
                    )
                await self._sleep(wait)

    async def _wait(self, waiting: Awaitable[object], deadline_at: float | None) -> None:
        if deadline_at is None:
            await waiting
            return
        remaining = deadline_at - self._clock()
        try:
            await asyncio.wait_for(waiting, max(remaining, 0.0))
        except asyncio.TimeoutError:
            raise APITimeoutError(
                "the call's deadline passed while waiting to send", sent=False, deadline=True
            ) from None

    def _current_rate(self, now: float) -> float | None:
        if self._rate is None or self.policy is None:
            return None
        policy = self.policy
        since = now - self._cut_at
        k = (self._rate_max * (1 - policy.beta) / policy.growth) ** (1 / 3)
        grown = self._rate_max + policy.growth * (since - k) ** 3
        return max(policy.min_rate, self._rate if since <= 0 else max(self._rate, grown))

    def _count(self, now: float, sent_at: float, *, refused: bool) -> None:
        """Note an answer of the API: refused with 429, or accepted (anything else)."""
        (self._rejected if refused else self._accepted).append(now)
        if self._first_event_at is None:
            self._first_event_at = now
        if sent_at > self._cut_at:
            self._after_cut[refused] += 1

    def _on_success(self, *, probe: bool, sent_at: float = 0.0) -> None:
        policy = self.policy
        if policy is None:
            return
        self._count(self._clock(), sent_at, refused=False)
        self._budget = min(policy.retry_budget, self._budget + policy.success_refund)
        if probe or self._breaker_open:
            self._close_breaker()
        if self._window is not None:
            self._window += 1
            if self._window >= policy.max_window:
                self._window = None
            if self._waiting:
                self._notify()

    def _on_error(self, error: SunoPersonaError, *, probe: bool, sent_at: float = 0.0) -> None:
        policy = self.policy
        if policy is None:
            return
        now = self._clock()
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None and isinstance(error, (RateLimitError, ServiceUnavailableError)):
            self._paused_until = max(self._paused_until, now + retry_after)
        if isinstance(error, ServiceUnavailableError) or (
            probe and not isinstance(error, APIError)
        ):
            # A probe that got no answer from the API says nothing about the maintenance.
            self._open_breaker(now, retry_after, probe=probe)
            return
        if probe:
            self._close_breaker()
        if not isinstance(error, RateLimitError):
            if not isinstance(error, APIConnectionError):
                # Any other answer was processed, not throttled: it counts as accepted.
                self._count(now, sent_at, refused=False)
        else:
            self._count(now, sent_at, refused=True)
            if policy.adaptive_rate:
                self._maybe_cut(now)
            if self._window is not None and self._rate is not None:
                self._window = None
                if self._waiting:
                    self._notify()

    def _maybe_cut(self, now: float) -> None:
        policy = self.policy
        assert policy is not None  # noqa: S101 - only called with a policy
        if self._rate is not None and self._cut_did_not_help():
            return
        if self._rate is not None and now - self._cut_at < policy.window:
            return
        horizon = now - policy.window
        for events in (self._accepted, self._rejected):
            while events and events[0] < horizon:
                events.popleft()
        accepted, rejected = len(self._accepted), len(self._rejected)
        share = rejected / (accepted + rejected)
        if accepted == 0 or rejected < _MIN_REJECTED or share < max(0.05, 2 * self._noise):
            return
        span = min(policy.window, max(now - (self._first_event_at or now), policy.window / 5))
        measured = accepted / span if span > 0 else policy.min_rate
        current = self._current_rate(now)
        base = measured if current is None else min(measured, current)
        self._rate_max = max(policy.min_rate, base)
        self._rate = max(policy.min_rate, base * policy.beta)
        self._cut_at = now
        self._tokens = 0.0
        self._refilled_at = now
        self._cut_share = share
        self._after_cut = [0, 0]

    def _cut_did_not_help(self) -> bool:
        """Undo the last cut when requests sent after it are refused about as often.

        Cutting to ``beta`` times the accepted rate puts the client under a real limit, so
        its 429s should all but stop. When they go on at half the share or more, they are
        not about our rate (random refusals, another client's load): the cut is undone, and
        later cuts need a share of 429s twice that noise.
        """
        if self._cut_share is None:
            return False
        ok, rejected = self._after_cut
        if rejected < _MIN_REJECTED or rejected < 0.5 * self._cut_share * (ok + rejected):
            return False
        self._noise = max(self._noise, rejected / (ok + rejected))
        self._rate = self._rate_max
        self._cut_share = None
        return True

    def _open_breaker(self, now: float, retry_after: float | None, *, probe: bool) -> None:
        policy = self.policy
        assert policy is not None  # noqa: S101 - only called with a policy
        if not self._breaker_open:
            self._breaker_open = True
            self._probe_interval = policy.probe_initial
        elif probe:
            self._probe_interval = min(policy.probe_max, self._probe_interval * 2)
        if probe or self._next_probe_at < now:
            # The server's own Retry-After, when it gives one, says when to look again.
            wait = self._probe_interval if retry_after is None else retry_after
            self._next_probe_at = now + wait
        if probe:
            self._probe_in_flight = False
            self._notify()

    def _close_breaker(self) -> None:
        self._probe_in_flight = False
        if self._breaker_open:
            self._breaker_open = False
            self._notify()
