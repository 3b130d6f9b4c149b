"""get_task, get_balance and wait_for_task, and generate_* with wait_for_task, against the
emulator on fake time (tasks that go pending -> running -> done as the fake clock moves)."""

from __future__ import annotations

import asyncio
import itertools
import random

import helpers
import pytest
from helpers import KEY

import suno_persona as sp
from suno_persona.testing import PersonaEmulator

TASK_PATH = "/api/v1/client/job/TaskInfo"
PERSONA_PATH = "/api/v1/client/job/suno-persona-generate"


@pytest.fixture(name="emu")
async def _emu(fake_time):
    emulator = PersonaEmulator(clock=fake_time.clock, check_tasks=True)
    async with emulator:
        yield emulator


def client_for(emu: PersonaEmulator, fake_time, **options) -> sp.AsyncPersonaClient:
    client = helpers.client_for(emu.base_url, fake_time, **options)
    client._rng = random.Random(7)
    return client


def polls(emu: PersonaEmulator) -> list[float]:
    """When each TaskInfo request arrived, on the fake clock."""
    return [r.timestamp for r in emu.requests if r.path == TASK_PATH]


def client_tasks() -> set[asyncio.Task]:
    """The tasks of this loop but the emulator's (aiohttp's handlers of its connections)."""
    return {t for t in asyncio.all_tasks() if "RequestHandler" not in t.get_coro().__qualname__}


def posts(emu: PersonaEmulator) -> int:
    return sum(r.path == PERSONA_PATH for r in emu.requests)


class TestGetTask:
    async def test_a_task_as_it_is_now(self, emu, fake_time):
        emu.add_task("t1", {"s1": 120.0}, pending=10)
        async with client_for(emu, fake_time) as client:
            task = await client.get_task("t1")
            assert task.status is sp.TaskStatus.PENDING
            fake_time.now += 10
            task = await client.get_task("t1")
        assert task.status is sp.TaskStatus.SUCCESS
        assert [song.suno_id for song in task.songs] == ["s1"]
        assert task.songs[0].duration == 120.0
        assert task.model_version == "sunov5"
        assert task.completed_at is not None

    async def test_an_unknown_task_is_not_found(self, emu, fake_time):
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.NotFoundError):
                await client.get_task("nope")

    async def test_a_bad_task_id_sends_nothing(self, emu, fake_time):
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.RequestValidationError):
                await client.get_task(" ")
        assert emu.requests == []


class TestBalance:
    async def test_the_balance_is_the_credits_left(self, fake_time):
        async with PersonaEmulator(credits=7, clock=fake_time.clock) as emu:
            client = client_for(emu, fake_time)
            async with client:
                assert await client.get_balance() == 7.0
                await client.generate_persona(task_id="t", suno_id="s", name="n")
                assert await client.get_balance() == 6.0

    async def test_an_exhausted_emulator_answers_402_and_a_zero_balance(self, fake_time):
        async with PersonaEmulator(credits=1, clock=fake_time.clock) as emu:
            client = client_for(emu, fake_time)
            async with client:
                await client.generate_persona(task_id="t", suno_id="s1", name="n")
                with pytest.raises(sp.InsufficientCreditsError) as caught:
                    await client.generate_persona(task_id="t", suno_id="s2", name="n")
                assert caught.value.code == 402
                assert await client.get_balance() == 0.0


class TestWaitForTask:
    async def test_it_returns_the_task_once_it_succeeded(self, emu, fake_time):
        """Polls at once, then every 15 s or a little more (jitter), until success."""
        emu.add_task("t1", {"s1": 60.0, "s2": 61.0}, pending=20, running=30)
        start = fake_time.now
        async with client_for(emu, fake_time) as client:
            task = await client.wait_for_task("t1", poll_interval=15)
        assert task.status is sp.TaskStatus.SUCCESS
        assert [s.suno_id for s in task.songs] == ["s1", "s2"]
        times = polls(emu)
        assert times[0] == start
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps
        assert all(15 <= gap <= 15 * 1.25 for gap in gaps), gaps
        assert len(set(gaps)) > 1  # jittered
        assert times[-1] >= start + 50 > times[-2]

    async def test_a_failed_task_raises_task_failed_error(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=20, error=(501, "lyrics rejected"))
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.TaskFailedError) as caught:
                await client.wait_for_task("t1", poll_interval=15)
        error = caught.value
        assert (error.task_id, error.code, error.message) == ("t1", 501, "lyrics rejected")
        assert isinstance(error, sp.SunoPersonaError)
        assert "t1" in str(error)

    async def test_a_task_not_done_by_the_timeout_raises_task_timeout_error(self, emu, fake_time):
        """The timeout holds to the second, between polls; nothing is left polling."""
        emu.add_task("t1", {"s1": 60.0}, running=1000)
        start = fake_time.now
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.TaskTimeoutError) as caught:
                await client.wait_for_task("t1", timeout=40, poll_interval=15)
            assert fake_time.now == pytest.approx(start + 40)
            assert client._task_polls == {}
            count = len(polls(emu))
            fake_time.now += 100
            await asyncio.sleep(0.05)
            assert len(polls(emu)) == count
        assert caught.value.task_id == "t1"
        assert caught.value.last_status is sp.TaskStatus.RUNNING
        assert isinstance(caught.value, sp.SunoPersonaError)

    async def test_timeout_none_waits_as_long_as_it_takes(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=5000)
        async with client_for(emu, fake_time) as client:
            task = await client.wait_for_task("t1", timeout=None, poll_interval=100)
        assert task.status is sp.TaskStatus.SUCCESS
        assert len(polls(emu)) > 40

    async def test_an_unknown_status_is_polled_again(self, fake_time, server):
        """A status the client does not know counts as not finished."""
        running = {"task_id": "t1", "status": "queued_for_review", "result": None}
        done = {"task_id": "t1", "status": "success", "result": {"suno_data": []}}
        server.script = [
            (200, {"code": 200, "message": "success", "data": running}),
            (200, {"code": 200, "message": "success", "data": done}),
        ]
        client = helpers.client_for(server.base_url, fake_time)
        async with client:
            task = await client.wait_for_task("t1", poll_interval=15)
        assert task.status is sp.TaskStatus.SUCCESS
        assert len(server.seen) == 2

    async def test_all_waits_for_one_task_share_one_poll_loop(self, emu, fake_time):
        """Ten waiters poll as one; the loop polls at the longest interval asked for."""
        emu.add_task("t1", {"s1": 60.0}, running=100)
        async with client_for(emu, fake_time) as client:
            tasks = await asyncio.gather(
                *(client.wait_for_task("t1", poll_interval=10 + i) for i in range(10))
            )
        assert all(task.status is sp.TaskStatus.SUCCESS for task in tasks)
        times = polls(emu)
        assert all(b - a >= 19 for a, b in itertools.pairwise(times))
        assert len(times) <= 100 // 19 + 2

    async def test_a_poll_failure_is_every_waiters_error(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=100)
        async with client_for(emu, fake_time, retry=None) as client:
            emu.fail_next(401, endpoint="task", times=1)
            results = await asyncio.gather(
                client.wait_for_task("t1"), client.wait_for_task("t1"), return_exceptions=True
            )
        assert [type(r) for r in results] == [sp.AuthenticationError] * 2
        assert len(polls(emu)) == 1


class TestCancellation:
    async def test_cancelling_one_waiter_leaves_the_others_loop_alone(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=60)
        async with client_for(emu, fake_time) as client:
            first = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            second = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            while not polls(emu):
                await asyncio.sleep(0)
            first.cancel()
            task = await second
        assert first.cancelled()
        assert task.status is sp.TaskStatus.SUCCESS

    async def test_cancelling_the_last_waiter_stops_the_loop(self, emu, fake_time):
        """Nothing is left behind: no task, no entry, no further poll."""
        emu.add_task("t1", {"s1": 60.0}, running=1000)
        async with client_for(emu, fake_time) as client:
            before = client_tasks()
            waiter = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            while len(polls(emu)) < 3:
                await asyncio.sleep(0)
            runner = client._task_polls["t1"].runner
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert client._task_polls == {}
            await asyncio.sleep(0)
            assert runner.done()
            assert client_tasks() == before
            count = len(polls(emu))
            await asyncio.sleep(0.05)
            assert len(polls(emu)) == count

    async def test_a_new_wait_after_a_cancelled_one_starts_afresh(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=30)
        async with client_for(emu, fake_time) as client:
            waiter = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            while not polls(emu):
                await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            task = await client.wait_for_task("t1", poll_interval=15)
        assert task.status is sp.TaskStatus.SUCCESS

    async def test_closing_the_client_ends_the_wait(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=1000)
        client = client_for(emu, fake_time)
        async with client:
            waiter = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            while not polls(emu):
                await asyncio.sleep(0)
        with pytest.raises(sp.SunoPersonaError, match="closed"):
            await asyncio.wait_for(waiter, 5)

    async def test_a_poll_loop_cancelled_from_outside_ends_its_waits(self, emu, fake_time):
        """A waiter never waits for ever: a loop stopped by someone else is an error."""
        emu.add_task("t1", {"s1": 60.0}, running=1000)
        async with client_for(emu, fake_time) as client:
            waiter = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            while not polls(emu):
                await asyncio.sleep(0)
            client._task_polls["t1"].runner.cancel()
            with pytest.raises(sp.SunoPersonaError, match="polling task t1 was cancelled"):
                await asyncio.wait_for(waiter, 5)

    async def test_with_options_clients_share_the_loop_and_closing_one_ends_no_wait(
        self, emu, fake_time
    ):
        emu.add_task("t1", {"s1": 60.0}, running=60)
        async with client_for(emu, fake_time) as client:
            child = client.with_options(timeout=5)
            first = asyncio.ensure_future(child.wait_for_task("t1", poll_interval=15))
            second = asyncio.ensure_future(client.wait_for_task("t1", poll_interval=15))
            while not polls(emu):
                await asyncio.sleep(0)
            assert list(child._task_polls) == list(client._task_polls) == ["t1"]
            await child.close()
            done = await asyncio.gather(first, second)
        assert [task.status for task in done] == [sp.TaskStatus.SUCCESS] * 2
        times = polls(emu)
        assert all(b - a >= 15 for a, b in itertools.pairwise(times))

    async def test_a_closed_client_refuses_to_wait(self, emu, fake_time):
        client = client_for(emu, fake_time)
        await client.close()
        with pytest.raises(sp.SunoPersonaError, match="closed"):
            await client.wait_for_task("t1")
        assert emu.requests == []

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"timeout": 0}, "timeout"),
            ({"timeout": float("nan")}, "timeout"),
            ({"poll_interval": 0}, "poll_interval"),
            ({"poll_interval": "15"}, "poll_interval"),
        ],
    )
    async def test_bad_arguments_are_refused(self, emu, fake_time, options, field):
        async with client_for(emu, fake_time) as client:
            with pytest.raises(ValueError, match=field):
                await client.wait_for_task("t1", **options)
        assert emu.requests == []


class TestGenerateWaitingForTheTask:
    async def test_fifty_calls_on_one_task_poll_as_one_waiter(self, emu, fake_time):
        """50 generate_persona(wait_for_task=True) on one task: one loop, whose polls are
        exactly those of a single waiter (same jitter), then 50 POSTs."""
        emu.add_task("t1", {f"s{i}": 60.0 for i in range(50)}, pending=20, running=30)
        async with client_for(emu, fake_time) as client:
            personas = await asyncio.gather(
                *(
                    client.generate_persona(
                        task_id="t1", suno_id=f"s{i}", name=f"n{i}", wait_for_task=True
                    )
                    for i in range(50)
                )
            )
        fifty = polls(emu)
        assert len({p.persona_id for p in personas}) == 50
        assert posts(emu) == 50

        fake_time.now = 1000.0
        async with PersonaEmulator(clock=fake_time.clock) as alone:
            alone.add_task("t1", {"s0": 60.0}, pending=20, running=30)
            async with client_for(alone, fake_time) as client:
                await client.wait_for_task("t1", poll_interval=15)
        assert len(fifty) == len(polls(alone)) >= 4

    async def test_a_suno_id_not_in_the_task_sends_no_post(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0, "s2": 60.0}, running=20)
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.RequestValidationError) as caught:
                await client.generate_persona(
                    task_id="t1", suno_id="s9", name="n", wait_for_task=True
                )
        assert caught.value.field == "suno_id"
        assert "'s1', 's2'" in str(caught.value)
        assert posts(emu) == 0
        assert polls(emu)

    async def test_a_window_past_the_song_end_sends_no_post(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0})
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.RequestValidationError) as caught:
                await client.generate_persona(
                    task_id="t1",
                    suno_id="s1",
                    name="n",
                    vocal_start=12.5,
                    vocal_end=64,
                    wait_for_task=True,
                )
        assert caught.value.field == "vocal_end"
        assert posts(emu) == 0

    async def test_a_number_is_the_waits_timeout(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, running=1000)
        start = fake_time.now
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.TaskTimeoutError):
                await client.generate_persona(
                    task_id="t1", suno_id="s1", name="n", wait_for_task=45
                )
        assert fake_time.now == pytest.approx(start + 45)
        assert posts(emu) == 0

    async def test_a_failed_task_fails_the_call(self, emu, fake_time):
        emu.add_task("t1", {"s1": 60.0}, error=(501, "failed"))
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.TaskFailedError):
                await client.generate_persona(
                    task_id="t1", suno_id="s1", name="n", wait_for_task=True
                )
        assert posts(emu) == 0

    async def test_without_the_option_nothing_is_polled(self, emu, fake_time):
        """The default sends at once: the emulator refuses the unfinished task (422)."""
        emu.add_task("t1", {"s1": 60.0}, running=100)
        async with client_for(emu, fake_time) as client:
            with pytest.raises(sp.UnprocessableEntityError):
                await client.generate_persona(task_id="t1", suno_id="s1", name="n")
        assert polls(emu) == []

    async def test_generate_many_checks_each_request_and_shares_the_loops(self, emu, fake_time):
        emu.add_task("t1", {"a": 60.0, "b": 60.0}, running=30)
        emu.add_task("t2", {"c": 30.0}, running=30)
        requests = [
            {"task_id": "t1", "suno_id": "a", "name": "1"},
            {"task_id": "t1", "suno_id": "x", "name": "2"},
            {"task_id": "t2", "suno_id": "c", "name": "3", "vocal_end": 31},
            {"task_id": "t1", "suno_id": "b", "name": "4"},
            {"task_id": "t2", "name": "5"},
        ]
        async with client_for(emu, fake_time) as client:
            outcomes = await client.generate_many(requests, wait_for_task=True)
        kinds = [type(o).__name__ for o in outcomes]
        assert kinds == [
            "Persona",
            "RequestValidationError",
            "RequestValidationError",
            "Persona",
            "RequestValidationError",
        ]
        assert [o.field for o in outcomes if isinstance(o, sp.RequestValidationError)] == [
            "suno_id",
            "vocal_end",
            "suno_id",
        ]
        assert posts(emu) == 2
        per_task = [r for r in emu.requests if r.path == TASK_PATH]
        assert len(per_task) <= 2 * (30 // 15 + 2)

    async def test_generate_as_completed_waits_too(self, emu, fake_time):
        emu.add_task("t1", {"a": 60.0, "b": 60.0}, running=30)
        requests = [{"task_id": "t1", "suno_id": s, "name": s} for s in ("a", "b", "z")]
        client = client_for(emu, fake_time)
        async with client, client.generate_as_completed(requests, wait_for_task=True) as results:
            seen = {index: outcome async for index, outcome in results}
        assert isinstance(seen[0], sp.Persona)
        assert isinstance(seen[1], sp.Persona)
        assert isinstance(seen[2], sp.RequestValidationError)

    async def test_with_options_sets_the_default_and_the_interval(self, emu, fake_time):
        emu.add_task("t1", {"a": 60.0}, running=100)
        async with client_for(emu, fake_time, task_poll_interval=40) as client:
            waiting = client.with_options(wait_for_task=True)
            persona = await waiting.generate_persona(task_id="t1", suno_id="a", name="n")
            times = polls(emu)
            assert all(b - a >= 40 for a, b in itertools.pairwise(times))
            faster = waiting.with_options(task_poll_interval=20)
            emu.add_task("t2", {"a": 60.0}, running=100)
            emu.reset()
            await faster.generate_persona(task_id="t2", suno_id="a", name="n")
            times = polls(emu)
            assert any(b - a < 40 for a, b in itertools.pairwise(times))
            assert all(b - a >= 20 for a, b in itertools.pairwise(times))
            emu.add_task("t3", {"a": 60.0}, running=100)
            with pytest.raises(sp.UnprocessableEntityError):
                await waiting.generate_persona(
                    task_id="t3", suno_id="a", name="n", wait_for_task=False
                )
        assert persona.persona_id.startswith("persona_")

    @pytest.mark.parametrize("value", ["yes", -1, 0, float("inf"), None])
    async def test_a_bad_wait_for_task_is_refused_before_any_request(self, emu, fake_time, value):
        async with client_for(emu, fake_time) as client:
            if value is None:
                with pytest.raises(ValueError, match="wait_for_task"):
                    client.with_options(wait_for_task=value)
                return
            with pytest.raises(ValueError, match="wait_for_task"):
                await client.generate_persona(
                    task_id="t1", suno_id="a", name="n", wait_for_task=value
                )
            with pytest.raises(ValueError, match="wait_for_task"):
                await client.generate_many([], wait_for_task=value)
            with pytest.raises(ValueError, match="wait_for_task"):
                client.with_options(wait_for_task=value)
        assert emu.requests == []

    def test_a_bad_task_poll_interval_is_refused(self):
        with pytest.raises(ValueError, match="task_poll_interval"):
            sp.AsyncPersonaClient(KEY, task_poll_interval=0)
