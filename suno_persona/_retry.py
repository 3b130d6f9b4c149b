"""The retry policy, and how it drives tenacity.

A fresh :class:`tenacity.AsyncRetrying` is built for every call (tenacity keeps its
statistics per thread, not per task, so one shared object would mix up attempt counts).
The client builds it only once a first attempt has failed, and hands it that failure as
attempt 1: the successful path does not pay for a retry machine it does not use.
Sleep and clock are passed in, so tests drive time by hand.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import tenacity

from suno_persona._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ServerError,
    SunoPersonaError,
)

__all__ = ["RetryPolicy", "build_retrying"]

logger = logging.getLogger("suno_persona")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _at_least_one(_inst: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how long to wait before trying a call again.

    Retried by default: 429 (rate limited), 455 (maintenance), and a connection that could
    not be opened (nothing was sent). A 500 or a timeout may have created the persona, so
    they are retried only with ``retry_server_errors=True``.

    Attributes:
        max_attempts: All attempts, the first included; ``1`` means no retries.
        initial_delay: Cap of the first backoff, in seconds; each retry doubles the cap.
        max_delay: Largest sleep between attempts. A ``Retry-After`` longer than this makes
            the call fail at once, with ``retry_after`` set on the error.
        deadline: Seconds for the whole call, sleeps and waits included; ``None`` is
            unbounded. No sleep starts that would end past it, and each attempt's timeout
            shrinks to what remains.
        retry_server_errors: Also retry 500 and timeouts (a repeat may create a second
            persona if the first attempt did reach the server).
    """

    max_attempts: int = attrs.field(default=5, validator=_at_least_one)
    initial_delay: float = attrs.field(default=0.5, validator=_positive)
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    deadline: float | None = attrs.field(default=None, validator=_positive)
    retry_server_errors: bool = False

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is an outcome this policy tries again (attempts aside)."""
        if not isinstance(error, SunoPersonaError):
            return False
        if isinstance(error, APITimeoutError) and error.deadline:
            return False
        if isinstance(error, APIConnectionError):
            return self.retry_server_errors or not error.sent
        if isinstance(error, ServerError):
            return self.retry_server_errors
        return type(error).retryable

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff after the ``attempt``-th attempt (1-based)."""
        cap = min(self.max_delay, self.initial_delay * 2 ** min(attempt - 1, 62))
        return rng.uniform(0, cap)


def _retry_after(error: BaseException | None) -> float | None:
    return error.retry_after if isinstance(error, APIError) else None


def build_retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
    deadline_at: float | None,
    rng: random.Random,
    spend: Callable[[BaseException], bool] = lambda _error: True,
) -> tenacity.AsyncRetrying:
    """A fresh tenacity driver for one call under ``policy``.

    Args:
        policy: The policy.
        sleep: Awaited for every backoff.
        clock: Monotonic seconds, the same clock ``deadline_at`` is on.
        deadline_at: When the whole call must be over, or ``None``.
        rng: Source of jitter.
        spend: Asked once per retry, after every other check passed; ``False`` (the retry
            budget is empty) ends the call with its last error.
    """

    def should_retry(state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        if error is None or not policy.is_retryable(error):
            return False
        retry_after = _retry_after(error)
        if retry_after is not None and retry_after > policy.max_delay:
            return False
        if state.attempt_number >= policy.max_attempts:
            return False
        return spend(error)

    def wait(state: tenacity.RetryCallState) -> float:
        delay = policy.backoff(state.attempt_number, rng)
        retry_after = _retry_after(state.outcome.exception() if state.outcome else None)
        return delay if retry_after is None else max(delay, retry_after)

    def stop(state: tenacity.RetryCallState) -> bool:
        upcoming = state.upcoming_sleep
        return deadline_at is not None and clock() + upcoming >= deadline_at

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.info(
            "retrying after attempt %d: %s; sleeping %.3fs",
            state.attempt_number,
            _describe(error),
            state.upcoming_sleep,
        )

    return tenacity.AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=should_retry,
        before_sleep=before_sleep,
        reraise=True,
    )


def _describe(error: BaseException | None) -> str:
    if isinstance(error, APIError):
        return f"code {error.code}"
    return type(error).__name__
