"""The GETs' gate beside the persona endpoint's: one cap in flight and one maintenance breaker,
but a rate and a Retry-After pause of its own (the API limits each resource on its own).

These drive the gates directly on fake time; tests/test_tasks_client.py shows the same three
sharing points through the client and a real server.
"""

from __future__ import annotations

import asyncio

import pytest

from suno_persona._deadline import Deadline, WouldPassDeadline
from suno_persona._gates import build_gates
from suno_persona._throttle import Answer, GateClosed, Throttle, ThrottlePolicy

POLICY = ThrottlePolicy(initial_window=None)


def gates_on(fake_time, *, max_concurrency: int | None = 4, policy=POLICY):
    throttle, gets, _budget = build_gates(
        policy,
        None,
        max_concurrency=max_concurrency,
        max_pause=30.0,
        probe_lease=30.0,
        base_url="http://127.0.0.1:1",
        api_key="sk-test",
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        emit=lambda _event: None,
    )
    return throttle, gets


async def enter(gate: Throttle, within: float | None = None):
    deadline = Deadline() if within is None else Deadline(gate.clock() + within)
    return gate.try_enter() or await gate.enter(deadline)


async def test_the_gets_take_their_places_from_the_same_cap(fake_time):
    """With two places in flight held by persona requests, a GET waits for one of them."""
    throttle, gets = gates_on(fake_time, max_concurrency=2)
    held = [await enter(throttle), await enter(throttle)]
    waiting = asyncio.ensure_future(enter(gets))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    throttle.leave_accepted(held.pop())
    passage = await asyncio.wait_for(waiting, 5)
    assert await_nothing(throttle) is None  # the cap is full again: the GET holds a place
    gets.leave_accepted(passage)
    throttle.leave_accepted(held.pop())


def await_nothing(gate: Throttle):
    return gate.try_enter()


async def test_a_get_in_flight_holds_back_a_persona_request(fake_time):
    """The cap counts GETs: one place, held by a GET, keeps a persona request out."""
    throttle, gets = gates_on(fake_time, max_concurrency=1)
    passage = await enter(gets)
    assert throttle.try_enter() is None
    with pytest.raises(WouldPassDeadline):
        await throttle.enter(Deadline(fake_time.now))
    gets.leave_accepted(passage)
    assert throttle.try_enter() is not None


async def test_a_455_on_the_persona_endpoint_holds_back_the_gets(fake_time):
    """Maintenance seen by a persona request opens the one breaker: the next GET waits for
    the probe time, not a moment less."""
    throttle, gets = gates_on(fake_time)
    passage = await enter(throttle)
    passage.report(Answer.MAINTENANCE, 10.0)
    throttle.leave(passage)
    assert gets.blocked_until() == pytest.approx(fake_time.now + 10.0)
    assert gets.try_enter() is None
    with pytest.raises(WouldPassDeadline):
        await gets.enter(Deadline(fake_time.now + 5.0))
    before = fake_time.now
    probe = await enter(gets)
    assert fake_time.now - before >= 10.0
    assert probe.decision.probe


async def test_a_455_on_a_get_holds_back_the_persona_endpoint(fake_time):
    """The other way round: the persona requests' own fast path sees the open breaker."""
    throttle, gets = gates_on(fake_time)
    assert throttle.try_enter() is not None  # the fast path, before
    passage = await enter(gets)
    passage.report(Answer.MAINTENANCE, 10.0)
    gets.leave(passage)
    assert throttle.try_enter() is None
    assert throttle.blocked_until() == pytest.approx(fake_time.now + 10.0)


async def test_a_get_probe_that_is_answered_reopens_the_persona_fast_path(fake_time):
    """A probe answered through the GETs' gate closes the breaker for both gates."""
    throttle, gets = gates_on(fake_time)
    passage = await enter(throttle)
    passage.report(Answer.MAINTENANCE, 1.0)
    throttle.leave(passage)
    probe = await enter(gets)
    assert probe.decision.probe
    gets.leave_accepted(probe)
    assert throttle.try_enter() is not None


async def test_429s_on_the_gets_leave_the_persona_rate_and_pause_alone(fake_time):
    """Refusals of GETs cut the GETs' rate and pause the GETs; the persona endpoint keeps
    its fast path, no learned rate, and no pause."""
    throttle, gets = gates_on(fake_time)
    for answer in [Answer.ACCEPTED] * 20 + [Answer.REFUSED] * 5:
        passage = await enter(gets)
        passage.report(answer, 2.0 if answer is Answer.REFUSED else None)
        gets.leave(passage)
        fake_time.now += 0.05
    assert gets.rate is not None
    assert gets.blocked_until() > fake_time.now
    assert throttle.rate is None
    assert throttle.blocked_until() == float("-inf")
    assert throttle.try_enter() is not None


async def test_closing_the_persona_gate_ends_a_get_waiting_for_a_place(fake_time):
    """The client closes both gates; a GET waiting for a shared place then stops."""
    throttle, gets = gates_on(fake_time, max_concurrency=1)
    held = await enter(throttle)
    waiting = asyncio.ensure_future(enter(gets))
    await asyncio.sleep(0)
    gets.close()
    throttle.close()
    with pytest.raises(GateClosed):
        await asyncio.wait_for(waiting, 5)
    throttle.leave(held)


async def test_rebinding_shares_the_new_places(fake_time):
    """After a rebind (a new event loop) the GETs' gate takes its places from the new set."""
    throttle, gets = gates_on(fake_time, max_concurrency=1)
    throttle.rebind()
    gets.rebind()
    passage = await enter(gets)
    assert throttle.try_enter() is None
    gets.leave_accepted(passage)
    assert throttle.try_enter() is not None


async def test_without_a_policy_only_the_cap_is_shared(fake_time):
    """throttle=None: neither gate has a state; the GETs still count against the cap."""
    throttle, gets = gates_on(fake_time, max_concurrency=1, policy=None)
    assert throttle.state is None
    assert gets.state is None
    passage = await enter(gets)
    assert throttle.try_enter() is None
    gets.leave(passage)
