"""The retry policy and its tenacity wiring, driven by a fake clock: no real waiting."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

import suno_persona as sp
from suno_persona._retry import RetryBudget, RetryHooks, build_retrying
from suno_persona.testing import PersonaEmulator


def rate_limited(retry_after: float | None = None) -> sp.RateLimitError:
    return sp.RateLimitError("slow down", code=429, http_status=429, retry_after=retry_after)


def maintenance(retry_after: float | None = None) -> sp.ServiceUnavailableError:
    return sp.ServiceUnavailableError(
        "maintenance", code=455, http_status=455, retry_after=retry_after
    )


def server_error() -> sp.ServerError:
    return sp.ServerError("boom", code=500, http_status=500)


async def drive(policy, outcomes, fake_time, *, deadline=None, **kwargs):
    """Run a call whose attempts raise/return ``outcomes`` in turn; return (result, attempts)."""
    attempts = 0
    retrying = build_retrying(
        policy,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        deadline_at=None if deadline is None else fake_time.now + deadline,
        rng=random.Random(7),
        **kwargs,
    )
    async for attempt in retrying:
        with attempt:
            outcome = outcomes[attempts]
            attempts += 1
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome, attempts
    raise AssertionError("unreachable")


class TestPolicyValues:
    def test_defaults(self):
        """The defaults are documented: 5 attempts, 0.5 s first cap, 30 s max, no deadline."""
        policy = sp.RetryPolicy()
        assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (5, 0.5, 30.0)
        assert policy.deadline is None
        assert policy.retry_server_errors is False

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_attempts": 0},
            {"max_attempts": 1.5},
            {"max_attempts": True},
            {"initial_delay": -1},
            {"max_delay": float("nan")},
            {"deadline": -0.1},
        ],
    )
    def test_bad_values_are_refused(self, kwargs):
        """Nonsense values fail when the policy is built, not on first use."""
        with pytest.raises(ValueError):
            sp.RetryPolicy(**kwargs)

    def test_backoff_is_full_jitter_under_a_doubling_cap(self):
        """Each backoff lies in [0, min(max_delay, initial * 2**(n-1))]."""
        policy = sp.RetryPolicy(initial_delay=1, max_delay=10)
        rng = random.Random(1)
        for attempt, cap in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (60, 10), (500, 10)]:
            samples = [policy.backoff(attempt, rng) for _ in range(200)]
            assert all(0 <= s <= cap for s in samples)
            assert max(samples) > cap * 0.8

    @pytest.mark.parametrize(
        ("error", "default", "opted_in"),
        [
            (rate_limited(), True, True),
            (maintenance(), True, True),
            (server_error(), False, True),
            (sp.APIConnectionError("refused", sent=False), True, True),
            (sp.APIConnectionError("reset", sent=True), False, True),
            (sp.APITimeoutError("slow", sent=True), False, True),
            (sp.APITimeoutError("connect", sent=False), True, True),
            (sp.AuthenticationError("no", code=401, http_status=401), False, False),
            (sp.GenerationFailedError("no", code=501, http_status=501), False, False),
            (sp.FeatureDisabledError("no", code=505, http_status=505), False, False),
            (sp.InvalidResponseError("junk", http_status=200), False, False),
            (sp.APIError("odd", code=418, http_status=418), False, False),
            (ValueError("not ours"), False, False),
        ],
    )
    def test_what_is_retryable(self, error, default, opted_in):
        """429, 455 and unsent connections by default; 500 and timeouts only when opted in."""
        assert sp.RetryPolicy().is_retryable(error) is default
        assert sp.RetryPolicy(retry_server_errors=True).is_retryable(error) is opted_in


class TestRetrying:
    async def test_429_is_retried_until_success(self, fake_time):
        """429s are retried with backoff, and the result comes back."""
        policy = sp.RetryPolicy(max_attempts=5, initial_delay=1)
        result, attempts = await drive(policy, [rate_limited(), rate_limited(), "ok"], fake_time)
        assert (result, attempts) == ("ok", 3)
        assert len(fake_time.sleeps) == 2
        assert fake_time.sleeps[0] <= 1
        assert fake_time.sleeps[1] <= 2

    async def test_455_is_retried(self, fake_time):
        """Maintenance is retried like a rate limit."""
        result, attempts = await drive(sp.RetryPolicy(), [maintenance(), "ok"], fake_time)
        assert (result, attempts) == ("ok", 2)

    async def test_exhausted_retries_raise_the_last_error_not_a_retry_error(self, fake_time):
        """When attempts run out, the caller gets the last API error itself."""
        last = rate_limited()
        with pytest.raises(sp.RateLimitError) as info:
            await drive(
                sp.RetryPolicy(max_attempts=3), [rate_limited(), maintenance(), last], fake_time
            )
        assert info.value is last
        assert len(fake_time.sleeps) == 2

    async def test_max_attempts_one_means_no_retry(self, fake_time):
        """RetryPolicy(max_attempts=1) makes exactly one attempt."""
        with pytest.raises(sp.RateLimitError):
            await drive(sp.RetryPolicy(max_attempts=1), [rate_limited(), "ok"], fake_time)
        assert fake_time.sleeps == []

    @pytest.mark.parametrize(
        "error",
        [
            sp.AuthenticationError("k", code=401, http_status=401),
            sp.UnprocessableEntityError("v", code=422, http_status=422),
            sp.GenerationFailedError("g", code=501, http_status=501),
            server_error(),
            sp.APITimeoutError("t", sent=True),
        ],
    )
    async def test_non_retryable_errors_fail_at_once(self, error, fake_time):
        """Errors outside the policy are raised after one attempt."""
        with pytest.raises(type(error)):
            await drive(sp.RetryPolicy(), [error, "ok"], fake_time)
        assert fake_time.sleeps == []

    async def test_server_errors_are_retried_when_opted_in(self, fake_time):
        """retry_server_errors=True retries 500 and timeouts."""
        policy = sp.RetryPolicy(retry_server_errors=True)
        outcomes = [server_error(), sp.APITimeoutError("t", sent=True), "ok"]
        assert await drive(policy, outcomes, fake_time) == ("ok", 3)

    async def test_retry_after_longer_than_backoff_replaces_it(self, fake_time):
        """A Retry-After longer than the computed delay is the delay."""
        policy = sp.RetryPolicy(initial_delay=0.1)
        await drive(policy, [rate_limited(retry_after=7), "ok"], fake_time)
        assert fake_time.sleeps == [7]

    async def test_retry_after_shorter_than_backoff_keeps_backoff(self, fake_time):
        """A Retry-After shorter than the computed delay does not shorten it."""
        policy = sp.RetryPolicy(initial_delay=20, max_delay=20)
        await drive(policy, [rate_limited(retry_after=0.001), "ok"], fake_time)
        expected = policy.backoff(1, random.Random(7))
        assert expected > 0.001
        assert fake_time.sleeps == [expected]

    async def test_retry_after_beyond_max_delay_fails_at_once(self, fake_time):
        """A Retry-After above max_delay fails the call at once, with the hint on the error."""
        policy = sp.RetryPolicy(max_delay=10)
        with pytest.raises(sp.RateLimitError) as info:
            await drive(policy, [rate_limited(retry_after=60), "ok"], fake_time)
        assert info.value.retry_after == 60
        assert fake_time.sleeps == []

    async def test_retry_after_beyond_deadline_fails_at_once(self, fake_time):
        """A Retry-After that would end past the deadline fails at once, without sleeping."""
        policy = sp.RetryPolicy(max_delay=100)
        with pytest.raises(sp.ServiceUnavailableError) as info:
            await drive(policy, [maintenance(retry_after=20), "ok"], fake_time, deadline=5)
        assert info.value.retry_after == 20
        assert fake_time.sleeps == []

    async def test_no_sleep_ends_past_the_deadline(self, fake_time):
        """Under a deadline, the sleeps taken never add up past it."""
        policy = sp.RetryPolicy(max_attempts=100, initial_delay=1, max_delay=4)
        start = fake_time.now
        with pytest.raises(sp.RateLimitError):
            await drive(policy, [rate_limited() for _ in range(100)], fake_time, deadline=10)
        assert fake_time.now - start <= 10
        assert len(fake_time.sleeps) >= 2

    async def test_an_empty_budget_ends_the_call(self, fake_time):
        """When the retry budget refuses, the call fails with its last error, and says so."""
        budget = RetryBudget(capacity=12, cost=5, timeout_cost=10, refund=1)
        refused = []
        hooks = RetryHooks(exhausted=lambda attempt, _error: refused.append(attempt))
        policy = sp.RetryPolicy(retry_server_errors=True)
        with pytest.raises(sp.ServerError):
            await drive(policy, [server_error()] * 5, fake_time, budget=budget, hooks=hooks)
        assert budget.tokens == 2
        assert len(fake_time.sleeps) == 2
        assert refused == [3]

    async def test_a_retry_the_deadline_refuses_costs_nothing(self, fake_time):
        """Regression: the budget was spent before the deadline check refused the retry."""
        budget = RetryBudget(capacity=20, cost=5, timeout_cost=10, refund=1)
        policy = sp.RetryPolicy(retry_server_errors=True, initial_delay=30, max_delay=30)
        for _ in range(4):
            with pytest.raises(sp.ServerError):
                await drive(policy, [server_error()] * 5, fake_time, deadline=0.001, budget=budget)
        assert budget.tokens == 20

    async def test_429_and_455_retries_cost_no_budget(self, fake_time):
        """The gate paces 429s and 455s: a burst of them never drains the budget."""
        budget = RetryBudget(capacity=5, cost=5, timeout_cost=10, refund=1)
        outcomes = [rate_limited(), maintenance(), rate_limited(), "done"]
        assert await drive(sp.RetryPolicy(), outcomes, fake_time, budget=budget) == ("done", 4)
        assert budget.tokens == 5

    async def test_cancellation_is_never_retried(self, fake_time):
        """CancelledError raised by an attempt propagates at once."""
        with pytest.raises(asyncio.CancelledError):
            await drive(sp.RetryPolicy(), [asyncio.CancelledError(), "ok"], fake_time)
        assert fake_time.sleeps == []

    async def test_foreign_exceptions_are_not_retried(self, fake_time):
        """A bug (any exception that is not ours) is not retried."""
        with pytest.raises(KeyError):
            await drive(sp.RetryPolicy(), [KeyError("bug"), "ok"], fake_time)

    async def test_one_log_line_per_retry_with_code_and_delay(self, fake_time, caplog):
        """Each retry logs the code and the delay on the suno_persona logger."""
        caplog.set_level(logging.DEBUG, logger="suno_persona")
        await drive(sp.RetryPolicy(), [rate_limited(retry_after=2), maintenance(), "ok"], fake_time)
        lines = [r.getMessage() for r in caplog.records if r.name == "suno_persona"]
        assert len(lines) == 2
        assert "code 429" in lines[0]
        assert "sleeping 2.000s" in lines[0]
        assert "code 455" in lines[1]


async def test_an_exhausted_budget_is_logged_once_per_outage(caplog):
    """Regression: every call of an outage logged its own 'budget exhausted' warning."""
    async with PersonaEmulator() as emu:
        emu.fail_next(500, times=1000)
        policy = sp.RetryPolicy(
            max_attempts=10, initial_delay=0.001, max_delay=0.001, retry_server_errors=True
        )
        throttle = sp.ThrottlePolicy(retry_budget=10, retry_cost=5)
        async with sp.AsyncPersonaClient(
            "sk-test", base_url=emu.base_url, retry=policy, throttle=throttle
        ) as client:
            for i in range(5):
                await client.generate_many(
                    [sp.PersonaRequest(task_id="t", suno_id=f"s{i}", name="n")]
                )
    warnings = [r for r in caplog.records if "budget exhausted" in r.getMessage()]
    assert len(warnings) == 1
