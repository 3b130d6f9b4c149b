"""The gate, entered by the client's door: ``try_enter() or await enter(deadline)``, then
``leave`` (or ``leave_accepted``) after reporting the answer on the passage.

The model's own behaviour is in ``test_learner``; every limiter family against the whole
client, on virtual time, in ``test_simulator``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest
from aiohttp import web

import suno_persona as sp
from suno_persona._breaker import Admit, MaintenanceBreaker
from suno_persona._deadline import Deadline, WouldPassDeadline
from suno_persona._quota import Quota
from suno_persona._throttle import Answer, Decision, GateClosed, Throttle
from suno_persona.events import BreakerClosed, BreakerOpened, PauseStarted, RateChanged
from suno_persona.testing import PersonaEmulator

FIELDS = {"task_id": "t", "suno_id": "s", "name": "n"}
UNBOUNDED = Deadline()


def make_gate(
    fake_time, events=None, *, max_pause=30.0, max_concurrency=None, state=None, **policy
):
    return Throttle(
        sp.ThrottlePolicy(**policy),
        max_concurrency=max_concurrency,
        max_pause=max_pause,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        emit=(events.append if events is not None else lambda _e: None),
        state=state,
    )


async def enter(gate, deadline=UNBOUNDED):
    """Through the door the client uses."""
    return gate.try_enter() or await gate.enter(deadline)


async def send(gate, answer=Answer.ACCEPTED, retry_after=None, deadline=UNBOUNDED, quota=None):
    """One request through the gate, answered ``answer``; returns its passage."""
    passage = await enter(gate, deadline)
    try:
        passage.report(answer, retry_after, quota)
    finally:
        gate.leave(passage)
    return passage


def seeded(fake_time, rate, **options):
    """A gate pacing at ``rate`` from now, as after a learned limit (no ramp)."""
    gate = make_gate(fake_time, initial_window=None, **options)
    gate.state.seed(rate, fake_time.now)
    return gate


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


class SharedStub:
    """A shared state (not the process's own) that lets everything through."""

    def __init__(self, live=1):
        self.live = live
        self.registered = 0

    def register(self):
        self.registered += 1

    def rate(self, _now):
        return None

    def blocked_until(self):
        return -math.inf

    async def admit(self, now, _max_wait, _reserved):
        return Decision(now, go=True)

    def report(self, *_args, **_kwargs):
        return False

    def release(self, _decision, _now):
        return False


class TestTheDoor:
    async def test_unthrottled_sends_never_sleep(self, fake_time):
        """Before any 429 the gate does not wait."""
        gate = make_gate(fake_time)
        for _ in range(50):
            await send(gate)
        assert fake_time.sleeps == []

    async def test_the_fast_path_passes_only_what_enter_would_not_hold(self, fake_time):
        """try_enter lets a send through only when the ramp is over and nothing holds it."""
        gate = make_gate(fake_time, initial_window=None)
        first = gate.try_enter()
        assert first is not None
        first.report(Answer.MAINTENANCE)
        gate.leave(first)
        assert gate.try_enter() is None  # the breaker is open
        ramping = make_gate(fake_time)
        assert ramping.try_enter() is None  # the start-up ramp decides every send
        paced = seeded(fake_time, 10.0)
        assert paced.try_enter() is None  # a pace: a slot to reserve

    async def test_leave_accepted_is_report_then_leave(self, fake_time):
        """leave_accepted reports the success and gives the place back, even when the
        shared state raises in report."""
        gate = make_gate(fake_time, max_concurrency=1)
        passage = await enter(gate)
        gate.leave_accepted(passage)
        assert passage.reported
        assert gate.in_flight == 0

        class Broken(SharedStub):
            def report(self, *_args, **_kwargs):
                raise RuntimeError("boom")

        broken = make_gate(fake_time, max_concurrency=1, state=Broken())
        passage = await enter(broken)
        with pytest.raises(RuntimeError):
            broken.leave_accepted(passage)
        assert broken.in_flight == 0

    async def test_close_ends_every_wait(self, fake_time):
        """Calls queued at the gate raise GateClosed when it closes."""
        gate = make_gate(fake_time, max_concurrency=1)
        holder = await enter(gate)
        waiting = [asyncio.ensure_future(enter(gate)) for _ in range(3)]
        await settle()
        gate.close()
        for task in waiting:
            with pytest.raises(GateClosed):
                await task
        gate.leave(holder)
        with pytest.raises(GateClosed):
            await gate.enter(UNBOUNDED)


class TestTheQueue:
    async def test_calls_are_admitted_in_arrival_order(self, fake_time):
        """One queue, first come first served: at a pace, the n-th caller goes n-th."""
        gate = seeded(fake_time, 20.0)
        order = []

        async def call(n):
            passage = await enter(gate)
            order.append(n)
            gate.leave_accepted(passage)

        tasks = []
        for n in range(30):
            tasks.append(asyncio.ensure_future(call(n)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == list(range(30))

    async def test_a_turn_past_the_deadline_fails_at_once_with_the_expected_wait(self, fake_time):
        """A call that joins behind 20 others at 10/s with 1 s to spare fails at once, its
        retry_after the wait it would have had; it costs the queue nothing."""
        gate = seeded(fake_time, 10.0, max_concurrency=1)
        holder = await enter(gate)
        waiting = [asyncio.ensure_future(enter(gate)) for _ in range(20)]
        await settle()
        started = fake_time.now
        with pytest.raises(WouldPassDeadline) as info:
            await gate.enter(Deadline(fake_time.now + 1.0))
        assert fake_time.now == started
        assert info.value.wait == pytest.approx(2.0, abs=0.3)
        assert gate.waiting == 20
        gate.leave_accepted(holder)
        for task in waiting:
            gate.leave_accepted(await task)

    async def test_a_waiter_whose_deadline_comes_in_the_queue_fails_then(self, fake_time):
        """A queued call whose deadline passes while a pause holds the queue fails at its
        deadline, not after the pause."""
        gate = make_gate(fake_time, initial_window=None)
        await send(gate)
        for _ in range(4):
            await send(gate, Answer.REFUSED, retry_after=None)
        fake_time.now += 1.0  # nothing accepted for an interval
        await send(gate, Answer.REFUSED, retry_after=8.0)
        assert gate.blocked_until() >= fake_time.now + 7.9
        with pytest.raises(WouldPassDeadline) as info:
            await gate.enter(Deadline(fake_time.now + 2.0))
        assert info.value.wait >= 7.9

    async def test_a_cancelled_waiter_passes_its_place_on(self, fake_time):
        """A waiter cancelled as its turn comes loses nothing for the others."""
        gate = make_gate(fake_time, max_concurrency=1, initial_window=None)
        holder = await enter(gate)
        first = asyncio.ensure_future(enter(gate))
        second = asyncio.ensure_future(enter(gate))
        await settle()
        gate.leave_accepted(holder)  # first is handed the place...
        first.cancel()  # ...and cancelled before it runs
        passage = await second
        assert gate.in_flight == 1
        gate.leave_accepted(passage)
        assert gate.in_flight == 0

    async def test_a_reserved_send_wakes_to_an_open_breaker(self, fake_time):
        """A call waiting for its send slot is checked against the breaker when it wakes:
        a 455 seen meanwhile makes it wait for the probe instead of sending."""
        gate = seeded(fake_time, 2.0, max_concurrency=1)
        first = await enter(gate)
        waiting = asyncio.ensure_future(enter(gate))
        await settle()
        first.report(Answer.MAINTENANCE)
        gate.leave(first)
        passage = await waiting
        assert passage.decision.probe
        gate.leave_accepted(passage)


class TestTheRamp:
    async def test_the_start_up_window_limits_requests_in_flight(self, fake_time):
        """Four in flight at first; one more per success."""
        gate = make_gate(fake_time, initial_window=4)
        held = [await enter(gate) for _ in range(4)]
        assert gate.window == 4
        with pytest.raises(WouldPassDeadline):
            await gate.enter(Deadline(fake_time.now))
        held[0].report(Answer.ACCEPTED)
        gate.leave(held[0])
        assert gate.window == 5
        fifth = await gate.enter(Deadline(fake_time.now))
        for passage in [*held[1:], fifth]:
            gate.leave_accepted(passage)

    async def test_the_window_doubles_while_no_answer_comes(self, fake_time):
        """A slow API is not throttled by its latency alone: the window doubles every 15 ms
        without an answer, after a short grace."""
        gate = make_gate(fake_time, initial_window=4)
        held = [await enter(gate) for _ in range(4)]
        more = [asyncio.ensure_future(enter(gate)) for _ in range(12)]
        for _ in range(40):
            await asyncio.sleep(0)
        assert gate.window is None or gate.window >= 8
        assert sum(t.done() for t in more) >= 4
        for task in more:
            task.cancel()
        for passage in held:
            gate.leave_accepted(passage)

    async def test_processes_sharing_a_store_split_the_start_up_window(self, fake_time):
        """With a shared store of 4 live processes, each starts from a quarter of the window."""
        gate = make_gate(fake_time, initial_window=8, state=SharedStub(live=4))
        first = await enter(gate)
        assert gate.window == 2
        gate.leave_accepted(first)

    async def test_opening_registers_with_the_shared_state(self, fake_time):
        """register() counts the process among the live ones."""
        stub = SharedStub()
        gate = make_gate(fake_time, state=stub)
        gate.register()
        assert stub.registered == 1


class TestPauses:
    async def test_a_long_retry_after_is_not_adopted(self, fake_time):
        """A Retry-After above max_pause holds nobody back: that call fails on its own."""
        gate = make_gate(fake_time, max_pause=10.0, initial_window=None)
        for _ in range(6):
            await send(gate, Answer.REFUSED, retry_after=3600.0)
        assert gate.blocked_until() < fake_time.now + 10.0

    async def test_a_spent_window_pauses_every_sender_once(self, fake_time):
        """Nothing accepted, a 429 with Retry-After: every send waits it out, and the 429s
        of requests sent before the pause began do not lengthen it."""
        events = []
        gate = make_gate(fake_time, events, initial_window=None)
        sent_before = [await enter(gate) for _ in range(3)]
        await send(gate, Answer.REFUSED, retry_after=2.0)
        assert gate.blocked_until() == pytest.approx(fake_time.now + 2.0)
        until = gate.blocked_until()
        fake_time.now += 1.0
        for passage in sent_before:
            passage.report(Answer.REFUSED, 2.0)
            gate.leave(passage)
        assert gate.blocked_until() == until
        assert [e.seconds for e in events if isinstance(e, PauseStarted)] == [2.0]
        started = fake_time.now
        await send(gate)
        assert fake_time.now >= until - 1e-9
        assert fake_time.now - started == pytest.approx(until - started)

    async def test_retry_after_is_a_ceiling_while_the_api_accepts_others(self, fake_time):
        """A lone 429 with Retry-After among successes is no pause for the others."""
        gate = make_gate(fake_time, initial_window=None)
        for n in range(40):
            fake_time.now += 0.01
            await send(gate, Answer.REFUSED if n == 20 else Answer.ACCEPTED, retry_after=5.0)
        assert gate.blocked_until() < fake_time.now

    async def test_one_probe_at_a_time_and_its_success_releases_all(self, fake_time):
        """After a 455 one probe goes; its success lets everyone through."""
        events = []
        gate = make_gate(fake_time, events, initial_window=None, probe_initial=0.25)
        await send(gate, Answer.MAINTENANCE)
        waiting = [asyncio.ensure_future(enter(gate)) for _ in range(5)]
        await settle()
        probes = []
        while not any(t.done() for t in waiting):
            await asyncio.sleep(0)
        done = [t for t in waiting if t.done()]
        assert len(done) == 1
        probes.append(done[0].result())
        assert probes[0].decision.probe
        gate.leave_accepted(probes[0])
        rest = await asyncio.gather(*[t for t in waiting if t not in done])
        assert not any(p.decision.probe for p in rest)
        for passage in rest:
            gate.leave_accepted(passage)
        assert any(isinstance(e, BreakerOpened) for e in events)
        assert any(isinstance(e, BreakerClosed) for e in events)

    async def test_an_abandoned_probe_hands_over(self, fake_time):
        """A probe that is left without an answer lets the next caller probe."""
        gate = make_gate(fake_time, initial_window=None, probe_initial=0.0)
        await send(gate, Answer.MAINTENANCE)
        probe = await enter(gate)
        assert probe.decision.probe
        gate.leave(probe)  # nothing reported
        again = await enter(gate)
        assert again.decision.probe
        gate.leave_accepted(again)


class TestAnnouncedQuota:
    async def test_no_send_goes_into_a_window_with_nothing_left(self, fake_time):
        """A reply saying 0 left and 3 s to the reset holds the next send for 3 s."""
        events = []
        gate = make_gate(fake_time, events, initial_window=None)
        quota = Quota(limit=10, window=5.0, remaining=0, reset=3.0)
        await send(gate, quota=quota)
        assert gate.try_enter() is None
        started = fake_time.now
        passage = await enter(gate)
        assert fake_time.now - started == pytest.approx(3.0)
        gate.leave_accepted(passage)
        assert [e.reason for e in events if isinstance(e, RateChanged)] == ["headers"]
        assert gate.rate == pytest.approx(2.0)

    async def test_what_is_left_is_spent_then_the_reset_is_waited_for(self, fake_time):
        """Two left: two more go at once, the third waits for the reset."""
        gate = make_gate(fake_time, initial_window=None)
        await send(gate, quota=Quota(limit=5, window=10.0, remaining=2, reset=4.0))
        started = fake_time.now
        for _ in range(2):
            await send(gate)
        assert fake_time.now == started
        await send(gate)
        assert fake_time.now - started == pytest.approx(4.0)


class TestBreaker:
    def test_one_probe_at_a_time(self):
        """After a 455, one caller probes when due; the others wait for its answer."""
        breaker = MaintenanceBreaker(probe_initial=0.25, probe_max=1.0)
        assert breaker.admit(0.0) == (Admit.SEND, 0.0)
        assert breaker.maintenance(0.0, None, probe=False)
        assert breaker.admit(0.1) == (Admit.WAIT_UNTIL, 0.25)
        assert breaker.admit(0.25)[0] is Admit.PROBE
        assert breaker.admit(0.3)[0] is Admit.WAIT_PROBE
        assert breaker.answered(0.4, probe=True) == pytest.approx(0.4)
        assert breaker.admit(0.4)[0] is Admit.SEND

    def test_failed_probes_back_off_to_probe_max(self):
        """Each probe that gets 455 pushes the next one further out, up to probe_max."""
        breaker = MaintenanceBreaker(probe_initial=0.25, probe_max=1.0)
        breaker.maintenance(0.0, None, probe=False)
        now, times = 0.0, []
        for _ in range(5):
            _, at = breaker.admit(now)
            now = at
            assert breaker.admit(now)[0] is Admit.PROBE
            times.append(now)
            breaker.maintenance(now, None, probe=True)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert gaps == [0.5, 1.0, 1.0, 1.0]

    def test_a_probe_without_an_answer_hands_over(self):
        """A probe that got no answer says nothing: the next caller probes."""
        breaker = MaintenanceBreaker(probe_initial=0.0, probe_max=1.0)
        breaker.maintenance(0.0, None, probe=False)
        assert breaker.admit(0.0)[0] is Admit.PROBE
        breaker.no_answer(probe=True)
        assert breaker.is_open
        assert breaker.admit(0.0)[0] is Admit.PROBE


async def slow_server(latency):
    async def handle(request):
        await request.read()
        await asyncio.sleep(latency)
        return web.json_response({"code": 200, "message": "ok", "data": {"persona_id": "p"}})

    app = web.Application()
    app.router.add_post("/api/v1/client/job/suno-persona-generate", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


class TestAgainstAServer:
    @pytest.mark.slow  # more than a second of wall time
    async def test_waiting_for_a_connection_is_not_a_sent_timeout(self):
        """Regression: 10,000 calls on a default client ended in APITimeoutError(sent=True)
        while the server saw few: they timed out waiting for a pooled connection. Here the
        last calls wait 2.5 s for a place in flight (2,500 calls, 100 at a time, 0.1 s
        each), past their 2 s timeout, which only runs once they are sent. (With 1 s and
        0.05 s, a loaded CI machine kept a sent call past its second.)"""
        runner, url = await slow_server(0.1)
        try:
            async with sp.AsyncPersonaClient("k", base_url=url, timeout=2.0) as client:
                requests = [
                    sp.PersonaRequest(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(2500)
                ]
                results = await client.generate_many(requests, concurrency=2500)
        finally:
            await runner.cleanup()
        assert all(isinstance(r, sp.Persona) for r in results), next(
            r for r in results if not isinstance(r, sp.Persona)
        )

    async def test_close_ends_calls_waiting_out_a_pause(self):
        """Regression: a call waiting out a 20 s pause was still pending after close()."""
        async with PersonaEmulator() as emu:
            emu.fail_next(429, retry_after=20)
            client = sp.AsyncPersonaClient("sk-test", base_url=emu.base_url)
            first = asyncio.ensure_future(client.generate_persona(**FIELDS))
            while not emu.requests:
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(client.generate_persona(**{**FIELDS, "suno_id": "2"}))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await client.close()
            done, _ = await asyncio.wait([first, second], timeout=2)
        assert time.monotonic() - started < 2
        assert len(done) == 2
        assert all(isinstance(t.exception(), sp.SunoPersonaError) for t in done)

    async def test_close_during_fan_out_ends_every_call_with_an_outcome(self):
        """Regression: close() with 130 calls in flight leaked CancelledError and hung."""
        runner, url = await slow_server(0.5)
        try:
            client = sp.AsyncPersonaClient("k", base_url=url, throttle=None)
            requests = [sp.PersonaRequest(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(130)]
            batch = asyncio.ensure_future(client.generate_many(requests, concurrency=130))
            single = asyncio.ensure_future(client.generate_persona(**FIELDS))
            await asyncio.sleep(0.2)
            await client.close()
            done, _ = await asyncio.wait([batch, single], timeout=5)
        finally:
            await runner.cleanup()
        assert len(done) == 2
        assert isinstance(single.exception(), sp.SunoPersonaError)
        assert len(batch.result()) == 130
        assert all(isinstance(r, sp.SunoPersonaError) for r in batch.result())

    @pytest.mark.slow  # more than a second of wall time
    async def test_a_blip_of_two_429s_loses_nothing(self):
        """Regression: two 429s with Retry-After in a long run at the limit dropped 364 of
        800 calls (the retry budget drained)."""
        async with PersonaEmulator(rate_limit=100, burst=10) as emu:
            policy = sp.RetryPolicy(max_attempts=50, max_delay=10, initial_delay=0.05)
            async with sp.AsyncPersonaClient(
                "sk-test", base_url=emu.base_url, retry=policy
            ) as client:
                requests = [sp.PersonaRequest(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(150)]

                async def blip():
                    await asyncio.sleep(0.5)
                    emu.fail_next(429, times=2, retry_after=1)

                blipper = asyncio.ensure_future(blip())
                results = await client.generate_many(requests, concurrency=32)
                await blipper
        assert all(isinstance(r, sp.Persona) for r in results)

    @pytest.mark.slow
    async def test_rate_learning_cuts_429s(self):
        """With the shared gate, far fewer 429s than tasks backing off on their own."""

        async def run(throttle):
            async with PersonaEmulator(rate_limit=20, burst=5, retry_after=False) as emu:
                policy = sp.RetryPolicy(max_attempts=100, initial_delay=0.01, max_delay=0.2)
                async with sp.AsyncPersonaClient(
                    "sk-test", base_url=emu.base_url, retry=policy, throttle=throttle
                ) as client:
                    requests = [
                        sp.PersonaRequest(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(45)
                    ]
                    results = await client.generate_many(requests, concurrency=16)
            assert all(isinstance(r, sp.Persona) for r in results)
            return sum(1 for r in emu.requests if r.code == 429)

        alone = await run(None)
        together = await run(sp.ThrottlePolicy())
        assert together < alone / 2


@pytest.mark.parametrize(
    "options",
    [
        {"beta": 0},
        {"beta": 1.5},
        {"measure_interval": 0},
        {"min_rate": 0},
        {"growth": 0},
        {"growth": math.inf},
        {"initial_window": 0},
        {"initial_window": True},
        {"max_window": 0},
        {"probe_initial": -1},
        {"retry_budget": -1},
        {"adaptive_rate": "no"},
        {"initial_window": 100},
        {"probe_initial": 5},
    ],
)
def test_nonsense_policies_are_refused(options):
    """A ThrottlePolicy that could not work is refused when built, naming the field."""
    with pytest.raises(ValueError, match=next(iter(options))):
        sp.ThrottlePolicy(**options)


@pytest.mark.parametrize(
    "options",
    [{"initial_delay": 5, "max_delay": 1}, {"max_delay": math.inf}, {"deadline": True}],
)
def test_nonsense_retry_policies_are_refused(options):
    """A RetryPolicy that could not work is refused when built."""
    with pytest.raises(ValueError, match=r"delay|deadline"):
        sp.RetryPolicy(**options)


class TestOnFakeTime:
    """The emulator and the client on one fake clock: throttling tests in milliseconds."""

    @staticmethod
    def on_fake_time(fake_time, **emulator):
        return PersonaEmulator(clock=fake_time.clock, sleep=fake_time.sleep, **emulator)

    @staticmethod
    def client(fake_time, base_url, **options):
        client = sp.AsyncPersonaClient("sk-test", base_url=base_url, **options)
        client._clock, client._sleep = fake_time.clock, fake_time.sleep
        return client

    async def test_a_long_maintenance_costs_few_requests_and_no_wall_time(self, fake_time):
        """A 60 s maintenance window on fake time: one probe at a time, then all succeed."""
        async with self.on_fake_time(fake_time, retry_after=False) as emu:
            emu.maintenance(60)
            policy = sp.RetryPolicy(max_attempts=1000, max_delay=5)
            started = time.monotonic()
            async with self.client(fake_time, emu.base_url, retry=policy) as client:
                requests = [sp.PersonaRequest(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(40)]
                results = await client.generate_many(requests, concurrency=20)
        assert all(isinstance(r, sp.Persona) for r in results), [
            r for r in results if not isinstance(r, sp.Persona)
        ][:2]
        assert fake_time.now - 1000 >= 60
        assert time.monotonic() - started < 10
        refused = [r for r in emu.requests if r.code == 455]
        assert len(refused) <= 20 + 60  # the first wave, then about one probe a second
        probes = sorted(r.timestamp for r in refused)[20:]
        assert all(b - a >= 0.2 for a, b in itertools.pairwise(probes))

    async def test_a_retry_after_pause_holds_every_task_on_fake_time(self, fake_time):
        """A 429 with Retry-After: 5 (nothing accepted yet) holds every task for 5 s."""
        async with self.on_fake_time(fake_time) as emu:
            emu.fail_next(429, retry_after=5)
            async with self.client(fake_time, emu.base_url) as client:
                first = await client.generate_persona(**FIELDS)
                others = await client.generate_many(
                    [sp.PersonaRequest(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(5)]
                )
        assert isinstance(first, sp.Persona)
        assert all(isinstance(r, sp.Persona) for r in others)
        refused_at = emu.requests[0].timestamp
        assert min(r.timestamp for r in emu.requests[1:]) - refused_at >= 5


@pytest.mark.slow  # more than a second of wall time
async def test_the_emulator_announces_its_limit_and_the_client_reads_it():
    """With rate_limit_headers, the emulator sends RateLimit-Policy and RateLimit; the
    client's events say the rate came from headers, and no send goes into an empty bucket."""
    events = []
    async with PersonaEmulator(rate_limit=20, burst=5, rate_limit_headers=True) as emu:
        client = sp.AsyncPersonaClient(
            "sk-test", base_url=emu.base_url, event_hooks=[events.append]
        )
        async with client:
            results = await client.generate_many(
                [{**FIELDS, "suno_id": f"s{i}"} for i in range(20)], concurrency=8
            )
    assert all(isinstance(r, sp.Persona) for r in results)
    assert any(isinstance(e, RateChanged) and e.reason == "headers" for e in events)
    refused = sum(r.code == 429 for r in emu.requests)
    assert refused <= 0.1 * 20
