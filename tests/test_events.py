"""Call metadata, event hooks and per-call options, against servers on 127.0.0.1.

Time is faked where an exact sequence or duration is asserted: the client's clock moves
only when it sleeps, so backoff and pauses cost nothing and ``elapsed`` is exact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket

import attrs
import helpers
import pytest
from conftest import ENDPOINT, envelope
from helpers import FIELDS, fast_retry

import suno_persona as sp
from suno_persona import events as ev
from suno_persona.testing import PersonaEmulator

KEY = "sk-secret-key-for-events"
FAST = fast_retry(max_attempts=3)
LIMITED = (429, envelope(429, "slow down"), {"Retry-After": "0"})


client_for = functools.partial(helpers.client_for, key=KEY, retry=FAST)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kinds(events):
    return [type(event).__name__ for event in events]


class TestCallMetadata:
    async def test_success_counts_one_attempt(self, server, fake_time):
        """A first-time success: attempts 1, elapsed the (fake) time the call took."""
        async with client_for(server.base_url, fake_time) as client:
            persona = await client.generate_persona(**FIELDS)
        assert (persona.attempts, persona.elapsed) == (1, 0.0)

    async def test_success_after_retries_counts_every_request(self, server, fake_time):
        """Two 429s then a success: three requests sent, and the backoff is in elapsed."""
        server.script = [LIMITED, LIMITED]
        async with client_for(server.base_url, fake_time) as client:
            persona = await client.generate_persona(**FIELDS)
        assert persona.attempts == len(server.seen) == 3
        assert persona.elapsed == pytest.approx(sum(fake_time.sleeps))
        assert persona.elapsed > 0

    @pytest.mark.parametrize("code", [401, 402, 404, 422, 501, 505])
    async def test_final_api_error_counts_one_attempt(self, server, fake_time, code):
        """An API error that is not retried: attempts 1, elapsed set."""
        server.script = [(code, envelope(code, "no"))]
        async with client_for(server.base_url, fake_time) as client:
            with pytest.raises(sp.APIError) as info:
                await client.generate_persona(**FIELDS)
        assert (info.value.attempts, info.value.elapsed) == (1, 0.0)

    @pytest.mark.parametrize("code", [429, 455])
    async def test_retried_api_error_counts_every_attempt(self, server, fake_time, code):
        """A 429 or 455 to the last attempt: attempts = max_attempts = requests sent."""
        server.script = [(code, envelope(code, "wait"), {"Retry-After": "0"})] * 3
        async with client_for(server.base_url, fake_time, throttle=None) as client:
            with pytest.raises(sp.APIError) as info:
                await client.generate_persona(**FIELDS)
        assert info.value.attempts == len(server.seen) == FAST.max_attempts
        assert info.value.elapsed == pytest.approx(sum(fake_time.sleeps))

    async def test_invalid_response_counts_its_attempt(self, server, fake_time):
        """A reply that is no envelope: one attempt, elapsed set."""
        server.script = [(200, b"<html>")]
        async with client_for(server.base_url, fake_time) as client:
            with pytest.raises(sp.InvalidResponseError) as info:
                await client.generate_persona(**FIELDS)
        assert (info.value.attempts, info.value.elapsed) == (1, 0.0)

    async def test_refused_connection_counts_as_attempts(self, fake_time):
        """Nothing listens: each connection tried is an attempt, though no byte was sent."""
        client = client_for(f"http://127.0.0.1:{free_port()}", fake_time, throttle=None)
        async with client:
            with pytest.raises(sp.APIConnectionError) as info:
                await client.generate_persona(**FIELDS)
        assert info.value.attempts == FAST.max_attempts
        assert info.value.elapsed == pytest.approx(sum(fake_time.sleeps))

    async def test_timeout_counts_its_attempt(self, server):
        """A reply slower than the timeout: the attempt counts; elapsed covers it."""

        async def slow(_request):
            await asyncio.sleep(5)
            return (200, envelope(200, "late", "persona_late"))

        server.script = [slow]
        policy = sp.RetryPolicy(max_attempts=1)
        async with client_for(server.base_url, timeout=0.05, retry=policy) as client:
            with pytest.raises(sp.APITimeoutError) as info:
                await client.generate_persona(**FIELDS)
        assert info.value.attempts == 1
        assert 0.04 < info.value.elapsed < 4

    async def test_validation_error_sends_nothing(self, server):
        """A request that breaks the schema: nothing sent, attempts 0."""
        async with client_for(server.base_url) as client:
            with pytest.raises(sp.RequestValidationError) as info:
                await client.generate_persona(task_id="", suno_id="s", name="n")
        assert info.value.attempts == 0
        assert server.seen == []

    async def test_deadline_at_the_gate_sends_nothing(self, server, fake_time):
        """A shared pause longer than the deadline: the call ends at the gate, attempts 0."""
        server.script = [(429, envelope(429, "later"), {"Retry-After": "3"})]
        policy = sp.RetryPolicy(max_attempts=1, deadline=2.0, max_delay=5)
        async with client_for(server.base_url, fake_time, retry=policy) as client:
            with pytest.raises(sp.RateLimitError):
                await client.generate_persona(**FIELDS)
            with pytest.raises(sp.APITimeoutError) as info:
                await client.generate_persona(**FIELDS)
        assert (info.value.attempts, info.value.sent) == (0, False)
        assert info.value.elapsed == 0.0
        assert len(server.seen) == 1


class TestEventSequence:
    async def test_429_429_200(self, server, fake_time):
        """Two 429s (Retry-After: 0) then a success, event by event."""
        server.script = [LIMITED, LIMITED]
        seen: list[object] = []
        async with client_for(server.base_url, fake_time, event_hooks=[seen.append]) as client:
            persona = await client.generate_persona(**FIELDS)
        assert kinds(seen) == [
            "CallStarted",
            "PauseStarted",
            "AttemptFinished",
            "RetryScheduled",
            "PauseStarted",
            "AttemptFinished",
            "RetryScheduled",
            "AttemptFinished",
            "CallFinished",
        ]
        started, _, first, retry1, _, second, retry2, third, finished = seen
        request = persona.request
        assert started == ev.CallStarted(
            request=request, url=server.base_url + ENDPOINT, call_id=started.call_id
        )
        per_call = [started, first, retry1, second, retry2, third, finished]
        assert {event.call_id for event in per_call} == {started.call_id}
        assert all(event.request is request for event in per_call)
        assert [(e.attempt, e.http_status) for e in (first, second, third)] == [
            (1, 429),
            (2, 429),
            (3, 200),
        ]
        assert isinstance(first.error, sp.RateLimitError)
        assert isinstance(second.error, sp.RateLimitError)
        assert third.error is None
        assert [(r.attempt, r.error) for r in (retry1, retry2)] == [
            (1, first.error),
            (2, second.error),
        ]
        assert [r.delay for r in (retry1, retry2)] == fake_time.sleeps[-2:]
        assert seen[1] == seen[4] == ev.PauseStarted(seconds=0.0, code=429)
        assert finished == ev.CallFinished(
            request=request,
            attempts=3,
            elapsed=persona.elapsed,
            persona=persona,
            error=None,
            call_id=started.call_id,
        )

    async def test_455_maintenance(self, server, fake_time):
        """A 455 opens the breaker and pauses every call; the next success closes it."""
        server.script = [(455, envelope(455, "maintenance"), {"Retry-After": "1"})]
        seen: list[object] = []
        async with client_for(server.base_url, fake_time, event_hooks=[seen.append]) as client:
            persona = await client.generate_persona(**FIELDS)
        assert kinds(seen) == [
            "CallStarted",
            "BreakerOpened",
            "PauseStarted",
            "AttemptFinished",
            "RetryScheduled",
            "BreakerClosed",
            "AttemptFinished",
            "CallFinished",
        ]
        _, opened, paused, first, retry, closed, second, finished = seen
        assert opened == ev.BreakerOpened(next_probe_in=1.0)
        assert paused == ev.PauseStarted(seconds=1.0, code=455)
        assert (first.attempt, first.http_status) == (1, 455)
        assert isinstance(first.error, sp.ServiceUnavailableError)
        assert (retry.attempt, retry.delay) == (1, 1.0)
        assert closed == ev.BreakerClosed(open_for=1.0)
        assert (second.attempt, second.http_status, second.error) == (2, 200, None)
        assert (finished.attempts, finished.elapsed, finished.persona) == (2, 1.0, persona)

    async def test_failed_call_finishes_with_its_error(self, server, fake_time):
        """A call that fails: CallFinished carries the error, no persona."""
        server.script = [(401, envelope(401, "bad key"))]
        seen: list[object] = []
        async with client_for(server.base_url, fake_time, event_hooks=[seen.append]) as client:
            with pytest.raises(sp.AuthenticationError) as info:
                await client.generate_persona(**FIELDS)
        assert kinds(seen) == ["CallStarted", "AttemptFinished", "CallFinished"]
        assert seen[1].error is info.value
        assert (seen[2].error, seen[2].persona, seen[2].attempts) == (info.value, None, 1)

    async def test_no_reply_has_no_status(self, fake_time):
        """A refused connection: AttemptFinished has http_status None."""
        seen: list[object] = []
        client = client_for(
            f"http://127.0.0.1:{free_port()}",
            fake_time,
            retry=sp.RetryPolicy(max_attempts=1),
            event_hooks=[seen.append],
        )
        async with client:
            with pytest.raises(sp.APIConnectionError):
                await client.generate_persona(**FIELDS)
        assert seen[1].http_status is None
        assert isinstance(seen[1].error, sp.APIConnectionError)

    async def test_budget_refusal_is_an_event(self, server, fake_time):
        """An empty retry budget: RetryBudgetExhausted instead of RetryScheduled."""
        server.script = [(500, envelope(500, "oops"))]
        seen: list[object] = []
        throttle = sp.ThrottlePolicy(retry_budget=1, retry_cost=5)
        policy = sp.RetryPolicy(initial_delay=0.001, retry_server_errors=True)
        client = client_for(
            server.base_url, fake_time, retry=policy, throttle=throttle, event_hooks=[seen.append]
        )
        async with client:
            with pytest.raises(sp.ServerError):
                await client.generate_persona(**FIELDS)
        assert kinds(seen) == [
            "CallStarted",
            "AttemptFinished",
            "RetryBudgetExhausted",
            "CallFinished",
        ]
        assert (seen[2].attempt, seen[2].call_id) == (1, seen[0].call_id)

    async def test_concurrent_calls_have_their_own_call_id(self, server):
        """Calls in flight together: each one's events share a call_id no other call has."""
        seen: list[object] = []
        async with client_for(server.base_url, event_hooks=[seen.append]) as client:
            await client.generate_many([{**FIELDS, "suno_id": f"s{i}"} for i in range(20)])
        started = [e for e in seen if isinstance(e, ev.CallStarted)]
        assert len({e.call_id for e in started}) == 20
        for call in started:
            mine = [e for e in seen if getattr(e, "call_id", None) == call.call_id]
            assert kinds(mine) == ["CallStarted", "AttemptFinished", "CallFinished"]

    async def test_no_event_holds_the_key(self, server, fake_time):
        """Every event of a busy call, repr'd, never shows the key (even one a reply echoes)."""
        server.script = [
            LIMITED,
            (455, envelope(455, f"maintenance for {KEY}"), {"Retry-After": "1"}),
            (500, envelope(500, f"bad {KEY}")),
        ]
        seen: list[object] = []
        policy = fast_retry(retry_server_errors=True)
        client = client_for(server.base_url, fake_time, retry=policy, event_hooks=[seen.append])
        async with client:
            await client.generate_persona(**FIELDS)
        assert len(seen) > 8
        for event in seen:
            assert KEY not in repr(event)
            assert KEY not in repr(attrs.asdict(event, recurse=False))
            error = getattr(event, "error", None)
            assert error is None or KEY not in str(error)


class TestHooks:
    async def test_raising_hook_is_logged_once(self, server, caplog):
        """A hook that raises on every event: calls succeed, one log record per hook."""
        calls: list[object] = []

        def broken(event):
            calls.append(event)
            raise RuntimeError("hook bug")

        def also_broken(_event):
            raise KeyError("other")

        seen: list[object] = []
        hooks = [broken, also_broken, seen.append]
        with caplog.at_level(logging.ERROR, logger="suno_persona"):
            async with client_for(server.base_url, event_hooks=hooks) as client:
                for _ in range(3):
                    await client.generate_persona(**FIELDS)
        records = [r for r in caplog.records if "event hook" in r.getMessage()]
        assert len(records) == 2
        assert "broken" in records[0].getMessage()
        assert len(calls) == len(seen) == 9

    async def test_a_hook_shared_with_a_derived_client_is_logged_once(self, server, caplog):
        """The clients of one family log a failing hook once between them."""

        def broken(_event):
            raise RuntimeError("hook bug")

        with caplog.at_level(logging.ERROR, logger="suno_persona"):
            async with client_for(server.base_url, event_hooks=[broken]) as parent:
                await parent.with_options(timeout=5).generate_persona(**FIELDS)
                await parent.generate_persona(**FIELDS)
        assert len([r for r in caplog.records if "event hook" in r.getMessage()]) == 1

    async def test_hooks_are_checked(self):
        """event_hooks must be an iterable of callables; a ValueError names it."""
        for bad in (print, "print", [print, 3], 42, {"a": print}):
            with pytest.raises(ValueError, match="event_hooks"):
                sp.AsyncPersonaClient(KEY, event_hooks=bad)

    async def test_hooks_accept_any_iterable(self, server):
        """A generator of hooks is read once, at construction."""
        seen: list[object] = []
        async with client_for(server.base_url, event_hooks=(h for h in [seen.append])) as client:
            await client.generate_persona(**FIELDS)
        assert kinds(seen) == ["CallStarted", "AttemptFinished", "CallFinished"]


class TestWithOptions:
    async def test_shares_the_throttle(self, server, fake_time):
        """A 429 with Retry-After through the child pauses the parent's next send."""
        server.script = [(429, envelope(429, "slow"), {"Retry-After": "2"})]
        async with client_for(server.base_url, fake_time) as parent:
            child = parent.with_options(retry=sp.RetryPolicy(max_attempts=1))
            with pytest.raises(sp.RateLimitError):
                await child.generate_persona(**FIELDS)
            before = fake_time.now
            await parent.generate_persona(**FIELDS)
            assert fake_time.now - before == pytest.approx(2.0)
            assert child._throttle is parent._throttle

    async def test_shares_the_session(self, server):
        """Both send through one session and pool."""
        async with client_for(server.base_url) as parent:
            child = parent.with_options(timeout=5)
            await child.generate_persona(**FIELDS)
            await parent.generate_persona(**FIELDS)
            assert await child._ensure_open() is await parent._ensure_open()

    async def test_overrides_retry(self, server, fake_time):
        """The child's retry policy applies to its calls only."""
        server.script = [LIMITED] * 3
        async with client_for(server.base_url, fake_time, throttle=None) as parent:
            child = parent.with_options(retry=None)
            with pytest.raises(sp.RateLimitError) as info:
                await child.generate_persona(**FIELDS)
            assert info.value.attempts == 1
            persona = await parent.generate_persona(**FIELDS)
            assert persona.attempts == 3

    async def test_overrides_timeout(self, server):
        """A shorter timeout in the child times out where the parent would wait."""

        async def slow(_request):
            await asyncio.sleep(0.3)
            return (200, envelope(200, "ok", "persona_slow"))

        server.script = [slow, slow]
        policy = sp.RetryPolicy(max_attempts=1)
        async with client_for(server.base_url, timeout=10, retry=policy) as parent:
            child = parent.with_options(timeout=0.05)
            with pytest.raises(sp.APITimeoutError):
                await child.generate_persona(**FIELDS)
            persona = await parent.generate_persona(**FIELDS)
        assert persona.persona_id == "persona_slow"

    async def test_longer_timeout_than_the_parent(self, server):
        """A child may wait longer than the session's own timeout."""

        async def slow(_request):
            await asyncio.sleep(0.2)
            return (200, envelope(200, "ok", "persona_slow"))

        server.script = [slow, slow]
        policy = sp.RetryPolicy(max_attempts=1)
        async with client_for(server.base_url, timeout=0.05, retry=policy) as parent:
            persona = await parent.with_options(timeout=10).generate_persona(**FIELDS)
            with pytest.raises(sp.APITimeoutError):
                await parent.generate_persona(**FIELDS)
        assert persona.persona_id == "persona_slow"

    async def test_unset_options_inherit(self, server):
        """Only the given settings change; hooks too."""
        parent_events: list[object] = []
        child_events: list[object] = []
        async with client_for(server.base_url, event_hooks=[parent_events.append]) as parent:
            same = parent.with_options()
            assert (same._timeout, same._retry, same._hooks) == (
                parent._timeout,
                parent._retry,
                parent._hooks,
            )
            other = parent.with_options(event_hooks=[child_events.append])
            await other.generate_persona(**FIELDS)
            assert kinds(child_events) == ["CallStarted", "AttemptFinished", "CallFinished"]
            assert parent_events == []
            await same.generate_persona(**FIELDS)
            assert len(parent_events) == 3
            grandchild = other.with_options(timeout=3)
            assert (grandchild._hooks, grandchild._timeout) == (other._hooks, 3.0)
            assert child_events[0].call_id != parent_events[0].call_id

    async def test_arguments_are_checked(self, server):
        """Bad values raise ValueError naming the argument."""
        async with client_for(server.base_url) as parent:
            with pytest.raises(ValueError, match="timeout"):
                parent.with_options(timeout=0)
            with pytest.raises(ValueError, match="retry"):
                parent.with_options(retry={"max_attempts": 2})
            with pytest.raises(ValueError, match="event_hooks"):
                parent.with_options(event_hooks=print)

    async def test_closing_the_parent_closes_the_child(self, server):
        """After the parent closes, the child's calls fail: the client is closed."""
        parent = client_for(server.base_url)
        child = parent.with_options(timeout=5)
        async with parent:
            await child.generate_persona(**FIELDS)
        assert child.closed
        with pytest.raises(sp.SunoPersonaError, match="the client is closed"):
            await child.generate_persona(**FIELDS)
        with pytest.raises(sp.SunoPersonaError, match="the client is closed"):
            parent.with_options()

    async def test_closing_the_child_leaves_the_parent_open(self, server):
        """``async with`` on the child, and its close(), leave the parent working."""
        async with client_for(server.base_url) as parent:
            async with parent.with_options(timeout=5) as child:
                await child.generate_persona(**FIELDS)
            assert child.closed
            assert not parent.closed
            await child.close()
            persona = await parent.generate_persona(**FIELDS)
            with pytest.raises(sp.SunoPersonaError, match="the client is closed"):
                await child.generate_persona(**FIELDS)
        assert persona.attempts == 1

    async def test_child_before_the_parent_opened(self, server):
        """A child made before any call opens the parent's session on first use."""
        parent = client_for(server.base_url)
        child = parent.with_options(timeout=5)
        persona = await child.generate_persona(**FIELDS)
        assert parent._session is not None
        assert child._session is None
        await parent.close()
        assert persona.attempts == 1

    async def test_emulator_fail_next(self):
        """With the emulator: 429, 429, 200 through a child seen by its own hooks."""
        async with PersonaEmulator(api_keys=[KEY]) as emu:
            emu.fail_next(429, times=2, retry_after=0)
            seen: list[object] = []
            async with client_for(emu.base_url) as parent:
                child = parent.with_options(event_hooks=[seen.append])
                persona = await child.generate_persona(**FIELDS)
        assert persona.attempts == 3
        assert [e.attempt for e in seen if isinstance(e, ev.RetryScheduled)] == [1, 2]
