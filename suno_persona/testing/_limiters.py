"""The limiters real APIs and gateways put in front of an endpoint, as pure models.

Each model decides, for one request arriving at ``now``, what the server answers: a
:class:`Verdict` with the status (200, 429 or 455), the ``Retry-After`` it would send (in
seconds, before rounding), the RateLimit header fields it would announce, and how long the
answer takes. They hold no clock and do no I/O, so one model serves three masters: the
throttle's simulator on fake time (``tests/simulator.py``), the benchmark server on real time
(``benchmarks/``), and the emulator.

The families:

* :class:`TokenBucket`: ``rate`` per second, ``burst`` capacity (most API gateways);
* :class:`FixedWindow`: ``limit`` per window aligned to the clock, ``Retry-After`` to its end
  (a quota is the same with a long window);
* :class:`SlidingLog`: ``limit`` accepted requests in any trailing ``window``;
* :class:`DenialCounting`: ``limit`` requests, refused ones included, in any trailing
  ``window`` (HAProxy's ``http_req_rate`` with ``deny``): it accepts nothing while the client
  stays above the limit;
* :class:`ConcurrencyLimit`: ``limit`` requests in flight, each taking ``latency``
  (nginx ``limit_conn``);
* :class:`RandomRefusals`: a ``share`` of requests refused at random, no real limit;
* :class:`ChangingLimit`: a token bucket whose rate follows a schedule;
* :class:`Slow`: no limit, every answer takes ``latency``;
* :class:`Maintenance`: 455 for every request during a window.

Times are seconds on whatever clock the caller uses; ``start`` is when the run began.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Sequence

from suno_persona.testing._verdicts import (
    EMPTY,
    Base,
    Limiter,
    Verdict,
    policy_headers,
    retry_after_header,
)

__all__ = [
    "ChangingLimit",
    "ConcurrencyLimit",
    "DenialCounting",
    "FixedWindow",
    "Limiter",
    "Maintenance",
    "RandomRefusals",
    "SlidingLog",
    "Slow",
    "TokenBucket",
    "Verdict",
    "retry_after_header",
]


class TokenBucket(Base):
    """``rate`` tokens per second, ``burst`` capacity, full at first.

    Args:
        rate: Tokens per second.
        burst: Capacity.
        retry_after: Send the wait for the next token with each 429.
        headers: Announce ``RateLimit-Policy`` (``burst`` per ``burst / rate`` seconds) and
            ``RateLimit`` (whole tokens left, seconds until the next one).
        latency: Seconds per answer.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 10,
        *,
        retry_after: bool = False,
        headers: bool = False,
        latency: float = 0.0,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.retry_after = retry_after
        self.headers = headers
        self.latency = latency
        self._tokens = float(burst)
        self._stamp: float | None = None

    def _rate_at(self, now: float) -> float:
        return self.rate

    def arrive(self, now: float) -> Verdict:
        """Take a token, or refuse with the wait for the next one."""
        rate = self._rate_at(now)
        if self._stamp is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        accepted = self._tokens >= 1.0
        if accepted:
            self._tokens -= 1.0
        wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / rate
        headers = (
            policy_headers(self.burst, self.burst / rate, self._tokens, wait)
            if self.headers
            else EMPTY
        )
        if accepted:
            return self._ok(headers)
        return self._refuse(wait if self.retry_after else None, headers)

    def ideal(self, requests: int, start: float) -> float:
        """The burst at once, then one request per token."""
        return max(0, requests - self.burst) / self.rate


class ChangingLimit(TokenBucket):
    """A token bucket whose rate follows ``schedule``: ``(rate, seconds)`` pairs from ``start``.

    The last rate lasts for ever.
    """

    def __init__(
        self,
        schedule: Sequence[tuple[float, float]],
        burst: int = 10,
        *,
        start: float = 0.0,
        retry_after: bool = False,
    ) -> None:
        super().__init__(schedule[0][0], burst, retry_after=retry_after)
        self.schedule = tuple(schedule)
        self.start = start

    def _rate_at(self, now: float) -> float:
        elapsed = now - self.start
        for rate, seconds in self.schedule[:-1]:
            if elapsed < seconds:
                return rate
            elapsed -= seconds
        return self.schedule[-1][0]

    def ideal(self, requests: int, start: float) -> float:
        """The burst at once, then each phase's tokens."""
        left, elapsed = float(requests - self.burst), 0.0
        for index, (rate, seconds) in enumerate(self.schedule):
            if index == len(self.schedule) - 1 or left <= rate * seconds:
                return elapsed + max(0.0, left) / rate
            left -= rate * seconds
            elapsed += seconds
        return elapsed  # pragma: no cover - the last phase returns


class FixedWindow(Base):
    """``limit`` requests per ``window`` seconds, windows aligned to the clock (``now // window``).

    A quota ("100 per 5 s") is a fixed window too. Refused requests do not count.

    Args:
        limit: Requests accepted per window.
        window: Its length in seconds.
        retry_after: Send the time to the window's end with each 429.
        headers: Announce ``RateLimit-Policy`` and ``RateLimit`` (left in this window, and
            seconds to its end).
        latency: Seconds per answer.
    """

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        retry_after: bool = True,
        headers: bool = False,
        latency: float = 0.0,
    ) -> None:
        self.limit = limit
        self.window = window
        self.retry_after = retry_after
        self.headers = headers
        self.latency = latency
        self._index = -1
        self._count = 0

    def arrive(self, now: float) -> Verdict:
        """Count the request in its window, or refuse until the window ends."""
        index = math.floor(now / self.window)
        if index != self._index:
            self._index, self._count = index, 0
        accepted = self._count < self.limit
        if accepted:
            self._count += 1
        reset = (index + 1) * self.window - now
        headers = (
            policy_headers(self.limit, self.window, self.limit - self._count, reset)
            if self.headers
            else EMPTY
        )
        if accepted:
            return self._ok(headers)
        return self._refuse(reset if self.retry_after else None, headers)

    def ideal(self, requests: int, start: float) -> float:
        """The first window's quota at once, each later window's at its start."""
        windows = math.ceil(requests / self.limit) - 1
        if windows <= 0:
            return 0.0
        first_end = (math.floor(start / self.window) + 1) * self.window
        return first_end + (windows - 1) * self.window - start


class SlidingLog(Base):
    """``limit`` accepted requests in any trailing ``window`` seconds (a log of accept times).

    Args:
        limit: Requests accepted in any window.
        window: Its length in seconds.
        retry_after: Send the time until the oldest accept leaves the window with each 429.
        latency: Seconds per answer.
    """

    def __init__(
        self, limit: int, window: float = 1.0, *, retry_after: bool = False, latency: float = 0.0
    ) -> None:
        self.limit = limit
        self.window = window
        self.retry_after = retry_after
        self.latency = latency
        self._log: collections.deque[float] = collections.deque()

    def arrive(self, now: float) -> Verdict:
        """Accept when fewer than ``limit`` accepts lie in the trailing window."""
        log = self._log
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) < self.limit:
            log.append(now)
            return self._ok()
        return self._refuse(log[0] + self.window - now if self.retry_after else None)

    def ideal(self, requests: int, start: float) -> float:
        """``limit`` at once, then ``limit`` more each window."""
        return max(0, math.ceil(requests / self.limit) - 1) * self.window


class DenialCounting(Base):
    """``limit`` requests in any trailing ``window``, counting the ones it refused too.

    HAProxy's ``http_req_rate(window)`` with ``http-request deny deny_status 429``: every
    request counts against the rate, so a client that keeps sending above the limit is
    refused for as long as it does.

    Args:
        limit: Requests allowed in any window.
        window: Its length in seconds.
        retry_after: Seconds of ``Retry-After`` sent with each 429 (``None``: none).
        latency: Seconds per answer.
    """

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        retry_after: float | None = None,
        latency: float = 0.0,
    ) -> None:
        self.limit = limit
        self.window = window
        self.retry_after = retry_after
        self.latency = latency
        self._log: collections.deque[float] = collections.deque()

    def arrive(self, now: float) -> Verdict:
        """Count the request, then refuse it if the count is over the limit."""
        log = self._log
        while log and log[0] <= now - self.window:
            log.popleft()
        log.append(now)
        if len(log) <= self.limit:
            return self._ok()
        return self._refuse(self.retry_after)

    def ideal(self, requests: int, start: float) -> float:
        """``limit`` at once, then ``limit`` more each window."""
        return max(0, math.ceil(requests / self.limit) - 1) * self.window


class ConcurrencyLimit(Base):
    """``limit`` requests in flight; each accepted one takes ``latency``, refusals are instant.

    Args:
        limit: Requests the server processes at once.
        latency: Seconds each accepted request takes.
        retry_after: Seconds of ``Retry-After`` sent with each 429 (``None``: none).
    """

    def __init__(
        self, limit: int, latency: float = 0.25, *, retry_after: float | None = None
    ) -> None:
        self.limit = limit
        self.latency = latency
        self.retry_after = retry_after
        self.in_flight = 0

    def arrive(self, now: float) -> Verdict:
        """Take a place, or refuse at once."""
        if self.in_flight < self.limit:
            self.in_flight += 1
            return self._ok()
        return Verdict(429, retry_after=self.retry_after)

    def leave(self, now: float, verdict: Verdict) -> None:
        """An accepted request's answer left: its place is free."""
        if verdict.accepted:
            self.in_flight -= 1

    def ideal(self, requests: int, start: float) -> float:
        """``limit`` at a time, ``latency`` each."""
        return math.ceil(requests / self.limit) * self.latency


class RandomRefusals(Base):
    """A ``share`` of requests refused at random whatever the rate: no real limit.

    Args:
        share: The probability that a request is refused.
        retry_after: Seconds of ``Retry-After`` sent with each 429 (``None``: none).
        seed: Seeds the draws.
        latency: Seconds per answer.
    """

    def __init__(
        self,
        share: float,
        *,
        retry_after: float | None = None,
        seed: int = 0,
        latency: float = 0.0,
    ) -> None:
        self.share = share
        self.retry_after = retry_after
        self.latency = latency
        self._random = random.Random(seed)  # noqa: S311 - a simulation, not cryptography

    def arrive(self, now: float) -> Verdict:
        """Refuse with probability ``share``."""
        if self._random.random() < self.share:
            return self._refuse(self.retry_after)
        return self._ok()

    def ideal(self, requests: int, start: float) -> float:
        """No limit: nothing to wait for (compare with sending without a throttle)."""
        return 0.0


class Slow(Base):
    """No limit; every answer takes ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def arrive(self, now: float) -> Verdict:
        """Accept."""
        return self._ok()

    def ideal(self, requests: int, start: float) -> float:
        """No limit: compare with sending without a throttle."""
        return 0.0


class Maintenance(Base):
    """455 for every request from ``begin`` for ``seconds``, with ``Retry-After`` to its end.

    Args:
        begin: When the window starts.
        seconds: How long it lasts.
        retry_after: Send the time to the window's end with each 455.
        latency: Seconds per answer.
    """

    def __init__(
        self, begin: float, seconds: float, *, retry_after: bool = False, latency: float = 0.0
    ) -> None:
        self.begin = begin
        self.end = begin + seconds
        self.retry_after = retry_after
        self.latency = latency

    def arrive(self, now: float) -> Verdict:
        """455 inside the window, 200 outside."""
        if self.begin <= now < self.end:
            wait = self.end - now if self.retry_after else None
            return Verdict(455, retry_after=wait, latency=self.latency)
        return self._ok()

    def ideal(self, requests: int, start: float) -> float:
        """The window's end."""
        return max(0.0, self.end - start)
