"""The retry policy, and how it drives tenacity.

A fresh :class:`tenacity.AsyncRetrying` is built for every call (tenacity keeps its
statistics per thread, not per task, so one shared object would mix up attempt counts).
The client builds it only once a first attempt has failed, and hands it that failure as
attempt 1: the successful path does not pay for a retry machine it does not use.
Sleep and clock are passed in, so tests drive time by hand.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable

import attrs
import tenacity

from suno_persona import _validators
from suno_persona._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    SunoPersonaError,
)

__all__ = ["RetryBudget", "RetryHooks", "RetryPolicy", "build_retrying", "is_retryable"]

logger = logging.getLogger("suno_persona")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how long to wait before trying a call again.

    Retried by default: 429 (rate limited), 455 (maintenance), and a connection that could
    not be opened (nothing was sent). A 500 or a timeout may have created the persona, so
    they are retried only with ``retry_server_errors=True``.

    Attributes:
        max_attempts: All attempts, the first included; ``1`` means no retries.
        initial_delay: Cap of the first backoff, in seconds; each retry doubles the cap.
        max_delay: Largest sleep between attempts, and the longest pause a ``Retry-After``
            may impose on the client's other calls. A ``Retry-After`` longer than this makes
            the call fail at once, with ``retry_after`` set on the error, and is not adopted
            as a pause.
        deadline: Seconds for the whole call, sleeps and waits included; ``None`` is
            unbounded. No sleep starts that would end past it, and each attempt's timeout
            shrinks to what remains.
        retry_server_errors: Also retry 500 and timeouts (a repeat may create a second
            persona if the first attempt did reach the server).
    """

    max_attempts: int = attrs.field(default=5, validator=_validators.count(1))
    initial_delay: float = attrs.field(default=0.5, validator=_validators.seconds)
    max_delay: float = attrs.field(default=30.0, validator=_validators.seconds)
    deadline: float | None = attrs.field(
        default=None, validator=_validators.optional(_validators.seconds)
    )
    retry_server_errors: bool = attrs.field(default=False, validator=_validators.boolean)

    def __attrs_post_init__(self) -> None:
        if self.initial_delay > self.max_delay:
            raise ValueError(
                f"initial_delay ({self.initial_delay}) must not exceed max_delay ({self.max_delay})"
            )

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


def is_retryable(policy: RetryPolicy, error: BaseException, *, idempotent: bool) -> bool:
    """Whether ``policy`` tries ``error`` again, for a call that is safe to repeat or not.

    A call that is safe to repeat (a GET: the task query, the balance) is also retried
    after any 5xx, a timeout and a broken connection; a call's deadline still ends it.
    """
    if not idempotent:
        return policy.is_retryable(error)
    if isinstance(error, APITimeoutError) and error.deadline:
        return False
    if isinstance(error, APIConnectionError):
        return True
    if isinstance(error, APIError) and 500 <= error.code <= 599:  # noqa: PLR2004 - 5xx
        return True
    return policy.is_retryable(error)


def _retry_after(error: BaseException | None) -> float | None:
    return error.retry_after if isinstance(error, APIError) else None


class RetryBudget:
    """Tokens that retries spend and successes earn back (botocore's retry quota).

    Only retries the shared gate does not pace cost anything: after a 500, a connection
    failure or a timeout. 429 and 455 are governed by the gate (learned rate, pause,
    breaker), so a burst of them never drains the budget and drops work.

    Args:
        capacity: Tokens when full.
        cost: Tokens a retry spends.
        timeout_cost: Tokens a retry after a timeout or broken connection spends.
        refund: Tokens a success earns back.
    """

    __slots__ = ("_capacity", "_cost", "_refund", "_timeout_cost", "tokens", "warned")

    def __init__(self, *, capacity: int, cost: int, timeout_cost: int, refund: int) -> None:
        self._capacity = capacity
        self._cost = cost
        self._timeout_cost = timeout_cost
        self._refund = refund
        self.tokens = capacity
        self.warned = False

    def cost_of(self, error: BaseException) -> int:
        """What a retry after ``error`` costs."""
        if isinstance(error, (RateLimitError, ServiceUnavailableError)):
            return 0
        if isinstance(error, APIConnectionError) and error.sent:
            return self._timeout_cost
        return self._cost

    def spend(self, cost: int) -> bool:
        """Take ``cost`` tokens; ``False`` (and nothing taken) when there are not enough."""
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True

    def give_back(self, cost: int) -> None:
        """Return tokens spent on a retry that was never sent."""
        self.tokens = min(self._capacity, self.tokens + cost)

    def succeeded(self) -> None:
        """A success earns some tokens back (and a later exhaustion is worth a warning again)."""
        self.tokens = min(self._capacity, self.tokens + self._refund)
        self.warned = False


@attrs.frozen
class RetryHooks:
    """What the retry driver tells its caller.

    Attributes:
        scheduled: Called with ``(attempt, delay, error)`` when a retry is scheduled.
        exhausted: Called with ``(attempt, error)`` when the budget refuses a retry.
    """

    scheduled: Callable[[int, float, BaseException], None] = lambda *_: None
    exhausted: Callable[[int, BaseException], None] = lambda *_: None


def build_retrying(  # noqa: C901 - one driver, its hooks inline
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
    deadline_at: float | None,
    rng: random.Random,
    budget: RetryBudget | None = None,
    paced: bool = False,
    hooks: RetryHooks = RetryHooks(),
    blocked_until: Callable[[], float] = lambda: -math.inf,
    idempotent: bool = False,
) -> tenacity.AsyncRetrying:
    """A fresh tenacity driver for one call under ``policy``.

    Args:
        policy: The policy.
        sleep: Awaited for every backoff.
        clock: Monotonic seconds, the same clock ``deadline_at`` is on.
        deadline_at: When the whole call must be over, or ``None``.
        rng: Source of jitter.
        budget: The retry budget, spent only once a retry is certain to be scheduled
            (after every other check passed); an empty one ends the call.
        paced: A shared gate paces the retries and decides what a ``Retry-After`` means
            for them (see the throttle), so the call's own wait after a 429 is the first
            backoff alone, however many attempts it made (the gate does the waiting), and
            after a 455 its backoff; without one the call waits at least the
            ``Retry-After``.
        hooks: Told of each retry scheduled and each one the budget refused.
        blocked_until: Until when the shared gate holds every send back: a retry that
            could not be sent before the deadline is not scheduled at all.
        idempotent: The call is safe to repeat (see :func:`is_retryable`).
    """

    def should_retry(state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        if error is None or not is_retryable(policy, error, idempotent=idempotent):
            return False
        retry_after = _retry_after(error)
        if retry_after is not None and retry_after > policy.max_delay:
            return False
        return state.attempt_number < policy.max_attempts

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if paced and isinstance(error, RateLimitError):
            # The gate paces every send of the client (and holds them through a spent
            # window): a longer wait of this call's own would only leave its turn unused.
            return policy.backoff(1, rng)
        delay = policy.backoff(state.attempt_number, rng)
        retry_after = _retry_after(error)
        if retry_after is None or paced:
            return delay
        return max(delay, retry_after)

    def stop(state: tenacity.RetryCallState) -> bool:
        if deadline_at is not None and (
            max(clock() + state.upcoming_sleep, blocked_until()) >= deadline_at
        ):
            return True
        error = state.outcome.exception() if state.outcome else None
        if budget is None or error is None or budget.spend(budget.cost_of(error)):
            return False
        hooks.exhausted(state.attempt_number, error)
        return True

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.info(
            "retrying after attempt %d: %s; sleeping %.3fs",
            state.attempt_number,
            _describe(error),
            state.upcoming_sleep,
        )
        if error is not None:
            hooks.scheduled(state.attempt_number, state.upcoming_sleep, error)

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
