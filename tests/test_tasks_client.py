"""The GETs (task query, balance) on the wire, against a scripted server on 127.0.0.1: what they
send, what they retry (429, 455, 5xx, timeouts, broken and refused connections) where the
persona POST does not, and what they share with the persona endpoint (the cap in flight, the
maintenance breaker) and what they do not (the rate and the Retry-After pause)."""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import aiohttp
import helpers
import pytest
from aiohttp import web
from conftest import envelope

import suno_persona as sp

KEY = "sk-test-key"
TASK = {"task_id": "t1", "status": "running", "result": None, "create_at": 1768900378}
DONE = {
    "task_id": "t1",
    "status": "success",
    "result": {"suno_data": [{"suno_id": "s1", "duration": 60}]},
}


def ok(data: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"code": 200, "message": "success", "data": data}


client_for = functools.partial(helpers.client_for, key=KEY)


def at(fake_time, reply: Any, times: list[float]):
    """A scripted reply that first notes the fake time it arrived at."""

    def answer(_request: web.Request) -> Any:
        times.append(fake_time.now)
        return reply

    return answer


async def test_get_task_sends_the_documented_get(server, fake_time):
    seen: list[tuple[str, str, str | None]] = []

    def record(request: web.Request) -> Any:
        seen.append((request.method, request.path_qs, request.headers.get("x-api-key")))
        return ok(TASK)

    server.script = [record]
    async with client_for(server.base_url, fake_time) as client:
        task = await client.get_task("t 1")
    assert seen == [("GET", "/api/v1/client/job/TaskInfo?task_id=t%201", KEY)]
    assert task.status is sp.TaskStatus.RUNNING
    assert task.created_at == 1768900378.0


async def test_a_session_of_the_users_gets_the_key_with_each_get(server, fake_time):
    keys: list[str | None] = []

    def record(request: web.Request) -> Any:
        keys.append(request.headers.get("x-api-key"))
        return ok({"balance": 3})

    server.script = [record]
    async with aiohttp.ClientSession() as session:
        client = client_for(server.base_url, fake_time, session=session)
        async with client:
            assert await client.get_balance() == 3.0
    assert keys == [KEY]


@pytest.mark.parametrize(
    "failure",
    [
        (429, envelope(429, "slow down"), {"Retry-After": "1"}),
        (455, envelope(455, "maintenance"), {"Retry-After": "1"}),
        (500, envelope(500, "oops")),
        (502, b"<html>bad gateway</html>"),
        (503, b""),
        (200, envelope(504, "gateway timeout")),
    ],
    ids=["429", "455", "500", "502-html", "503-empty", "504-in-body"],
)
async def test_a_get_retries_what_is_safe_to_repeat(server, fake_time, failure):
    """429, 455 and any 5xx are retried for a GET (two attempts, then the answer)."""
    server.script = [failure, ok(TASK)]
    async with client_for(server.base_url, fake_time) as client:
        task = await client.get_task("t1")
    assert task.task_id == "t1"
    assert len(server.seen) == 2


async def test_a_500_is_retried_for_the_balance_but_not_for_a_persona(server, fake_time):
    """The persona POST keeps its own rules: a 500 may have created the persona."""
    server.script = [(500, envelope(500, "oops")), ok({"balance": 10})]
    async with client_for(server.base_url, fake_time) as client:
        assert await client.get_balance() == 10.0
        server.script = [(500, envelope(500, "oops"))]
        with pytest.raises(sp.ServerError) as caught:
            await client.generate_persona(task_id="t", suno_id="s", name="n")
    assert caught.value.attempts == 1


async def test_a_connection_broken_after_sending_is_retried_for_a_get(server, fake_time):
    """A reply that never comes (the server drops the connection): a GET tries again, a
    POST (which may have been processed) does not."""

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    server.script = [drop, ok(TASK)]
    async with client_for(server.base_url, fake_time) as client:
        assert (await client.get_task("t1")).task_id == "t1"
        server.script = [drop]
        with pytest.raises(sp.APIConnectionError) as caught:
            await client.generate_persona(task_id="t", suno_id="s", name="n")
    assert caught.value.sent
    assert caught.value.attempts == 1


async def test_a_timed_out_get_is_retried(server, fake_time):
    async def slow(_request: web.Request) -> Any:
        await asyncio.sleep(1.0)
        return ok(TASK)

    server.script = [slow, ok(DONE)]
    async with client_for(server.base_url, fake_time, timeout=0.2) as client:
        task = await client.get_task("t1")
    assert task.status is sp.TaskStatus.SUCCESS


async def test_a_refused_connection_is_retried_until_the_attempts_run_out(fake_time):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    retry = sp.RetryPolicy(max_attempts=3)
    async with client_for(f"http://127.0.0.1:{port}", fake_time, retry=retry) as client:
        with pytest.raises(sp.APIConnectionError) as caught:
            await client.get_balance()
    assert caught.value.attempts == 3


async def test_a_404_is_not_retried(server, fake_time):
    server.script = [(404, envelope(404, "task not found"))]
    async with client_for(server.base_url, fake_time) as client:
        with pytest.raises(sp.NotFoundError) as caught:
            await client.get_task("t1")
    assert caught.value.attempts == 1


async def test_a_get_error_never_shows_the_key(server, fake_time):
    server.script = [(401, envelope(401, f"bad key {KEY}"))]
    async with client_for(server.base_url, fake_time) as client:
        with pytest.raises(sp.AuthenticationError) as caught:
            await client.get_task("t1")
    assert KEY not in str(caught.value)


class TestWhatTheGetsShare:
    async def test_a_455_on_the_persona_endpoint_holds_back_a_task_poll(self, server, fake_time):
        """The maintenance breaker is the client's: after a 455 with Retry-After 5 on a POST,
        the next TaskInfo request waits those 5 s (and goes as the probe)."""
        times: list[float] = []
        server.script = [
            (455, envelope(455, "maintenance"), {"Retry-After": "5"}),
            at(fake_time, ok(TASK), times),
        ]
        async with client_for(server.base_url, fake_time, retry=None) as client:
            with pytest.raises(sp.ServiceUnavailableError):
                await client.generate_persona(task_id="t1", suno_id="s", name="n")
            failed_at = fake_time.now
            await client.get_task("t1")
        assert times[0] >= failed_at + 5

    async def test_a_455_on_a_task_poll_holds_back_the_persona_endpoint(self, server, fake_time):
        times: list[float] = []
        server.script = [
            (455, envelope(455, "maintenance"), {"Retry-After": "5"}),
            at(fake_time, (200, envelope(200, "success", "persona_1")), times),
        ]
        async with client_for(server.base_url, fake_time, retry=None) as client:
            with pytest.raises(sp.ServiceUnavailableError):
                await client.get_task("t1")
            failed_at = fake_time.now
            await client.generate_persona(task_id="t1", suno_id="s", name="n")
        assert times[0] >= failed_at + 5

    async def test_gets_count_against_max_concurrency(self, server, fake_time):
        """With max_concurrency=1, a persona request waits while a GET is in flight."""
        release = asyncio.Event()

        async def held(_request: web.Request) -> Any:
            await release.wait()
            return ok(TASK)

        server.script = [held]
        async with client_for(server.base_url, fake_time, max_concurrency=1) as client:
            polling = asyncio.ensure_future(client.get_task("t1"))
            await asyncio.wait_for(server.got_request.wait(), 5)
            creating = asyncio.ensure_future(
                client.generate_persona(task_id="t1", suno_id="s", name="n")
            )
            await asyncio.sleep(0.1)
            assert len(server.seen) == 1
            release.set()
            await asyncio.wait_for(asyncio.gather(polling, creating), 5)
        assert server.peak_in_flight == 1
        assert len(server.seen) == 2

    async def test_429s_on_task_polls_do_not_slow_the_persona_endpoint(self, server, fake_time):
        """The GETs learn their own rate: their 429s leave the persona endpoint's rate
        unlearned, no pause on it, and its next POST goes without waiting."""
        limited = (429, envelope(429, "slow down"), {"Retry-After": "2"})
        server.script = [ok(TASK)] * 10 + [limited] * 3 + [ok(TASK)]
        async with client_for(server.base_url, fake_time) as client:
            for _ in range(11):
                await client.get_task("t1")
            assert client._throttle.rate is None
            assert client._throttle.blocked_until() == float("-inf")
            sleeps = len(fake_time.sleeps)
            persona = await client.generate_persona(task_id="t1", suno_id="s", name="n")
            assert len(fake_time.sleeps) == sleeps
        assert persona.attempts == 1
        assert len(server.seen) == 15
