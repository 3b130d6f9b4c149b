"""The shared gate: rate learning, Retry-After pauses, the maintenance breaker, the budget."""

from __future__ import annotations

import asyncio
import itertools

import pytest

import suno_persona as sp
from suno_persona._throttle import Throttle
from suno_persona.testing import PersonaEmulator


def rate_limited(retry_after: float | None = None) -> sp.RateLimitError:
    return sp.RateLimitError("slow", code=429, http_status=429, retry_after=retry_after)


def maintenance(retry_after: float | None = None) -> sp.ServiceUnavailableError:
    return sp.ServiceUnavailableError("maint", code=455, http_status=455, retry_after=retry_after)


@pytest.fixture(name="gate")
def _gate(fake_time):
    return Throttle(
        sp.ThrottlePolicy(), max_concurrency=None, clock=fake_time.clock, sleep=fake_time.sleep
    )


def make_gate(fake_time, **policy):
    return Throttle(
        sp.ThrottlePolicy(**policy),
        max_concurrency=None,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )


async def send(gate, outcome=None, deadline_at=None):
    """One request through the gate, ending with ``outcome`` (None: success)."""
    async with gate.slot(deadline_at) as ticket:
        if outcome is None:
            ticket.succeeded()
        else:
            ticket.failed(outcome)
        return ticket._probe


async def settle():
    for _ in range(10):
        await asyncio.sleep(0)


class TestAdaptiveRate:
    async def test_unlimited_until_told_otherwise(self, gate, fake_time):
        """Before any 429 the gate does not limit the rate."""
        for _ in range(100):
            await send(gate)
        assert gate.rate is None
        assert fake_time.sleeps == []

    async def test_a_burst_of_429s_sets_a_rate_from_what_was_accepted(self, fake_time):
        """After 429s the rate becomes beta times the accepted rate over the window."""
        gate = make_gate(fake_time, initial_window=None)
        for _ in range(50):
            await send(gate)
            fake_time.now += 0.02
        for _ in range(3):
            await send(gate, rate_limited())
        assert gate.rate == pytest.approx(0.85 * 50, rel=0.05)

    async def test_learned_rate_paces_sends(self, fake_time):
        """Once a rate is learned, sends are spaced at that rate."""
        gate = make_gate(fake_time, initial_window=None)
        for _ in range(10):
            await send(gate)
            fake_time.now += 0.1
        await send(gate, rate_limited())
        await send(gate, rate_limited())
        start = fake_time.now
        for _ in range(20):
            await send(gate)
        rate = gate.rate
        assert rate is not None
        assert fake_time.now - start == pytest.approx(20 / rate, rel=0.15)

    async def test_isolated_429s_do_not_cut(self, fake_time):
        """A lone 429, or a few among many successes, leaves the rate alone."""
        gate = make_gate(fake_time, initial_window=None)
        for _ in range(200):
            await send(gate)
            fake_time.now += 0.004
        await send(gate, rate_limited())
        assert gate.rate is None
        await send(gate, rate_limited())
        await send(gate, rate_limited())
        assert gate.rate is None

    async def test_429s_without_any_success_teach_nothing(self, fake_time):
        """With nothing accepted there is nothing to learn: no rate, no collapse to the floor."""
        gate = make_gate(fake_time, initial_window=None)
        for _ in range(10):
            await send(gate, rate_limited())
        assert gate.rate is None

    async def test_cut_at_most_once_per_window_and_never_below_the_floor(self, fake_time):
        """A storm of 429s cuts once per window, and the rate keeps its floor."""
        gate = make_gate(fake_time, initial_window=None, min_rate=2.0)
        await send(gate)
        fake_time.now += 0.5
        await send(gate, rate_limited())
        await send(gate, rate_limited())
        first = gate._rate
        for _ in range(20):
            gate._on_error(rate_limited(), probe=False)
        assert gate._rate == first
        for _ in range(30):
            fake_time.now += 1.1
            gate._on_error(rate_limited(), probe=False)
            gate._on_error(rate_limited(), probe=False)
            gate._on_success(probe=False)
        assert gate._rate == 2.0

    async def test_rate_grows_back_along_a_cubic(self, fake_time):
        """After a cut the rate climbs back to the level it was cut from, then past it."""
        gate = make_gate(fake_time, initial_window=None)
        for _ in range(40):
            gate._on_success(probe=False)
            fake_time.now += 0.025
        for _ in range(5):
            gate._on_error(rate_limited(), probe=False)
        peak = gate._rate_max
        cut = gate.rate
        policy = gate.policy
        k = (peak * (1 - policy.beta) / policy.growth) ** (1 / 3)
        fake_time.now += k / 2
        assert cut < gate.rate < peak
        fake_time.now += k / 2
        assert gate.rate == pytest.approx(peak)
        fake_time.now += 2
        assert gate.rate > peak

    @staticmethod
    async def cut_after_a_burst(gate, fake_time):
        for _ in range(50):
            await send(gate)
            fake_time.now += 0.02
        for _ in range(3):
            await send(gate, rate_limited())
        assert gate._rate is not None
        return gate._rate

    async def test_429s_that_go_on_after_a_cut_undo_it(self, fake_time):
        """Refusals as frequent after a cut as before are noise: the cut is undone."""
        gate = make_gate(fake_time, initial_window=None)
        cut = await self.cut_after_a_burst(gate, fake_time)
        for _ in range(4):
            await send(gate)
            await send(gate, rate_limited())
        assert gate._rate > cut
        assert gate._rate == gate._rate_max
        assert gate._noise > 0.3

    async def test_a_cut_that_stops_the_429s_stays(self, fake_time):
        """When requests sent after a cut are accepted, the cut was right and stays."""
        gate = make_gate(fake_time, initial_window=None)
        cut = await self.cut_after_a_burst(gate, fake_time)
        for _ in range(20):
            await send(gate)
        gate._on_error(rate_limited(), probe=False)
        gate._on_error(rate_limited(), probe=False)
        assert gate._rate == cut
        assert gate._noise == 0.0

    async def test_adaptive_rate_can_be_turned_off(self, fake_time):
        """adaptive_rate=False never learns a rate."""
        gate = make_gate(fake_time, initial_window=None, adaptive_rate=False)
        for _ in range(10):
            await send(gate)
        for _ in range(10):
            await send(gate, rate_limited())
        assert gate.rate is None


class TestSlowStart:
    async def test_start_up_window_limits_requests_in_flight(self, fake_time):
        """While nothing is known, only initial_window requests are in flight."""
        gate = make_gate(fake_time, initial_window=2)
        first, second = gate.slot(None), gate.slot(None)
        await first.__aenter__()
        await second.__aenter__()
        third = asyncio.ensure_future(send(gate))
        await settle()
        assert not third.done()
        first.succeeded()
        await first.__aexit__(None, None, None)
        await settle()
        assert third.done()
        second.succeeded()
        await second.__aexit__(None, None, None)

    async def test_window_grows_with_successes_and_ends(self, fake_time):
        """Each success widens the window; at max_window the slow start ends."""
        gate = make_gate(fake_time, initial_window=2, max_window=5)
        await send(gate)
        assert gate._window == 3
        await send(gate)
        await send(gate)
        assert gate._window is None

    async def test_window_ends_when_a_rate_is_learned(self, fake_time):
        """The first cut replaces the window by the learned rate."""
        gate = make_gate(fake_time, initial_window=4)
        await send(gate)
        fake_time.now += 0.3
        await send(gate, rate_limited())
        await send(gate, rate_limited())
        assert gate.rate is not None
        assert gate._window is None


class TestRetryAfter:
    async def test_retry_after_pauses_every_sender(self, gate, fake_time):
        """A Retry-After received by one task holds back the next send of any task."""
        await send(gate, rate_limited(retry_after=5))
        start = fake_time.now
        await send(gate)
        assert fake_time.now - start >= 5

    async def test_retry_after_pauses_all_tasks_at_the_server(self):
        """Against the emulator: after a 429 with Retry-After: 1, no task sends for ~1 s."""
        async with PersonaEmulator() as emu:
            emu.fail_next(429, retry_after=1)
            policy = sp.RetryPolicy(initial_delay=0.001, max_delay=5)
            async with sp.AsyncPersonaClient("sk-test", base_url=emu.base_url, retry=policy) as c:
                first = asyncio.ensure_future(
                    c.generate_persona(task_id="t", suno_id="0", name="n")
                )
                while not emu.requests:
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.05)
                others = [
                    sp.PersonaRequest(task_id="t", suno_id=f"s{i}", name="n") for i in range(5)
                ]
                results = [await first, *await c.generate_many(others)]
        assert all(isinstance(r, sp.Persona) for r in results)
        rejected_at = emu.requests[0].timestamp
        assert emu.requests[0].code == 429
        assert len(emu.requests) == 7
        assert min(r.timestamp for r in emu.requests[1:]) - rejected_at >= 0.9


class TestBreaker:
    async def test_one_probe_at_a_time_during_maintenance(self, fake_time):
        """After a 455, senders wait; one probe goes out, and its success releases all."""
        gate = make_gate(fake_time, initial_window=None)
        await send(gate, maintenance())
        probe = gate.slot(None)
        await probe.__aenter__()
        assert probe._probe
        waiting = [asyncio.ensure_future(send(gate)) for _ in range(5)]
        await settle()
        assert not any(t.done() for t in waiting)
        probe.succeeded()
        await probe.__aexit__(None, None, None)
        await settle()
        assert all(t.done() for t in waiting)
        assert [t.result() for t in waiting] == [False] * 5

    async def test_failed_probe_schedules_the_next_on_a_backoff(self, fake_time):
        """Each probe that gets 455 pushes the next one further out, up to probe_max."""
        gate = make_gate(fake_time, initial_window=None, probe_initial=0.25, probe_max=1.0)
        await send(gate, maintenance())
        times = []
        for _ in range(5):
            assert await send(gate, maintenance())
            times.append(fake_time.now)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert gaps == [0.5, 1.0, 1.0, 1.0]

    async def test_retry_after_on_455_sets_the_probe_time(self, fake_time):
        """A Retry-After on a 455 holds the probe at least that long."""
        gate = make_gate(fake_time, initial_window=None)
        await send(gate, maintenance(retry_after=7))
        start = fake_time.now
        assert await send(gate)
        assert fake_time.now - start >= 7

    async def test_a_probe_that_cannot_connect_keeps_the_breaker_open(self, fake_time):
        """A probe without an API answer says nothing about the maintenance."""
        gate = make_gate(fake_time, initial_window=None)
        await send(gate, maintenance())
        assert await send(gate, sp.APIConnectionError("reset", sent=True))
        assert gate._breaker_open

    async def test_an_abandoned_probe_hands_over(self, fake_time):
        """A probe cancelled before it reports lets another task probe."""
        gate = make_gate(fake_time, initial_window=None)
        await send(gate, maintenance())
        probe = gate.slot(None)
        await probe.__aenter__()
        waiter = asyncio.ensure_future(send(gate))
        await settle()
        await probe.__aexit__(None, None, None)
        await settle()
        assert waiter.done()
        assert waiter.result() is True

    async def test_deadline_while_waiting_on_the_breaker(self, fake_time):
        """A call whose deadline passes while the API is in maintenance fails clearly."""
        gate = make_gate(fake_time, initial_window=None, probe_initial=10)
        await send(gate, maintenance())
        with pytest.raises(sp.APITimeoutError, match="maintenance"):
            await send(gate, deadline_at=fake_time.now + 1)

    async def test_maintenance_against_the_emulator(self):
        """During a 1 s maintenance window 40 calls send few requests, then all succeed."""
        async with PersonaEmulator() as emu:
            emu.maintenance(1.0)
            policy = sp.RetryPolicy(max_attempts=20, initial_delay=0.05, max_delay=1)
            async with sp.AsyncPersonaClient("sk-test", base_url=emu.base_url, retry=policy) as c:
                requests = [
                    sp.PersonaRequest(task_id="t", suno_id=f"s{i}", name="n") for i in range(40)
                ]
                results = await c.generate_many(requests, concurrency=20)
        assert all(isinstance(r, sp.Persona) for r in results)
        rejected = [r for r in emu.requests if r.code == 455]
        assert 1 <= len(rejected) <= 4 + 8


class TestBudget:
    def test_budget_spends_and_refunds(self, fake_time):
        """Retries spend the budget, timeouts cost more, successes earn some back."""
        gate = make_gate(fake_time, retry_budget=20, retry_cost=5, timeout_retry_cost=10)
        assert gate.spend_retry(rate_limited())
        assert gate.spend_retry(sp.APITimeoutError("slow", sent=True))
        assert gate.spend_retry(rate_limited())
        assert not gate.spend_retry(rate_limited())
        for _ in range(5):
            gate._on_success(probe=False)
        assert gate.spend_retry(rate_limited())

    def test_budget_off(self, fake_time):
        """retry_budget=0 turns the budget off."""
        gate = make_gate(fake_time, retry_budget=0)
        assert all(gate.spend_retry(rate_limited()) for _ in range(1000))

    async def test_an_outage_makes_calls_fail_fast(self):
        """Once the budget is spent, calls fail after one attempt instead of retrying."""
        async with PersonaEmulator() as emu:
            emu.fail_next(500, times=1000)
            policy = sp.RetryPolicy(
                max_attempts=10, initial_delay=0.001, max_delay=0.001, retry_server_errors=True
            )
            throttle = sp.ThrottlePolicy(retry_budget=10, retry_cost=5)
            async with sp.AsyncPersonaClient(
                "sk-test", base_url=emu.base_url, retry=policy, throttle=throttle
            ) as client:
                results = [
                    await client.generate_many(
                        [sp.PersonaRequest(task_id="t", suno_id=f"s{i}", name="n")]
                    )
                    for i in range(3)
                ]
        attempts = [r[0].attempts for r in results]
        assert attempts == [3, 1, 1]
        assert len(emu.requests) == 5


class TestAgainstARateLimit:
    @staticmethod
    async def run(throttle):
        async with PersonaEmulator(rate_limit=20, burst=5, retry_after=False) as emu:
            policy = sp.RetryPolicy(max_attempts=100, initial_delay=0.01, max_delay=0.2)
            async with sp.AsyncPersonaClient(
                "sk-test", base_url=emu.base_url, retry=policy, throttle=throttle
            ) as client:
                requests = [
                    sp.PersonaRequest(task_id="t", suno_id=f"s{i}", name="n") for i in range(45)
                ]
                results = await client.generate_many(requests, concurrency=16)
        assert all(isinstance(r, sp.Persona) for r in results)
        return sum(1 for r in emu.requests if r.code == 429)

    async def test_rate_learning_cuts_429s(self):
        """With the shared gate, far fewer 429s than tasks backing off on their own."""
        alone = await self.run(None)
        together = await self.run(sp.ThrottlePolicy())
        print(f"429s: {alone} backing off alone, {together} with the shared gate")
        assert together < alone / 2


@pytest.mark.parametrize(
    "options",
    [
        {"beta": 0},
        {"beta": 1.5},
        {"window": 0},
        {"min_rate": 0},
        {"growth": 0},
        {"initial_window": 0},
        {"initial_window": True},
        {"max_window": 0},
        {"probe_initial": -1},
    ],
)
def test_nonsense_policies_are_refused(options):
    """A ThrottlePolicy that could not work is refused when built."""
    with pytest.raises(ValueError, match=next(iter(options))):
        sp.ThrottlePolicy(**options)
