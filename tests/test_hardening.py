"""Hardening: every fault is one typed error, in bounded time, with nothing leaked or logged.

The faults aiohttp.web cannot produce (resets, half-sent headers, dripping or endless bodies)
come from the raw asyncio server in ``chaos_server.py``; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import random
import socket
import time
import traceback
import tracemalloc
import warnings
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import helpers
import pytest
from aiohttp import web
from chaos_server import FAULTS, FLOOD_BYTES, Exchange, FaultServer, gzip_bomb
from helpers import FIELDS, fast_retry, on_fake_time
from helpers import SECRET_KEY as KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import suno_persona as sp
from suno_persona import _protocol
from suno_persona._client import MAX_BODY_BYTES
from suno_persona._retry import build_retrying
from suno_persona.testing import PersonaEmulator

FAST = fast_retry(max_delay=0.05, max_attempts=3)
REQUEST = sp.PersonaRequest(**FIELDS)
NOW = 1_700_000_000.0


client_for = functools.partial(helpers.client_for, key=KEY, retry=FAST, timeout=0.5)


async def outcome(client: sp.AsyncPersonaClient, **fields) -> sp.Persona | Exception:
    """The call's result or whatever it raised, so a test can look at both alike."""
    try:
        return await client.generate_persona(**{**FIELDS, **fields})
    except Exception as error:  # the test decides what is acceptable
        return error


async def leftover_tasks() -> set[asyncio.Task]:
    """The tasks besides this one still alive after a few loop iterations (none, ideally)."""
    current = asyncio.current_task()
    others: set[asyncio.Task] = set()
    for _ in range(10):
        gc.collect()
        others = {task for task in asyncio.all_tasks() if task is not current}
        if not others:
            break
        await asyncio.sleep(0)
    return others


def drop(holder: list[object]) -> None:
    holder.clear()
    gc.collect()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def elapsed_since(started: float) -> float:
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------
# Network faults: one typed error each, never a foreign one, never a hang
# ---------------------------------------------------------------------------------------

FAULT_ERRORS: dict[str, type[sp.SunoPersonaError]] = {
    "reset": sp.APIConnectionError,
    "half_headers": sp.APIConnectionError,
    "no_reply": sp.APIConnectionError,
    "truncated": sp.APIConnectionError,
    "stall": sp.APITimeoutError,
    "drip": sp.APITimeoutError,
    "drip_headers": sp.APITimeoutError,
    "non_utf8": sp.InvalidResponseError,
    "html": sp.APIError,
    "unknown_code": sp.APIError,
    "redirect": sp.APIError,
    "flood": sp.InvalidResponseError,
    "declared_huge": sp.InvalidResponseError,
}


@pytest.mark.parametrize(("fault", "error_cls"), FAULT_ERRORS.items())
async def test_each_fault_is_one_typed_error(fault, error_cls):
    """Each fault ends the call with exactly its error class, after one attempt, in < 3 s."""
    async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
        started = time.monotonic()
        result = await outcome(client)
        took = elapsed_since(started)
    assert type(result) is error_cls, repr(result)
    assert (result.attempts, len(server.exchanges)) == (1, 1)
    assert took < 3


@pytest.mark.parametrize("fault", ["reset", "half_headers", "no_reply", "truncated", "stall"])
async def test_connection_faults_name_the_original_and_chain_nothing(fault):
    """A broken exchange says it may be sent and names the foreign exception in its
    message; it chains nothing, since aiohttp's frames hold the key in their locals."""
    async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
        error = await outcome(client)
    assert isinstance(error, sp.APIConnectionError)
    assert error.sent is True
    assert error.retryable is False
    assert (error.__cause__, error.__context__) == (None, None)
    assert "Error" in error.message


@pytest.mark.parametrize("fault", ["bad_status_line", "bad_chunk"])
async def test_malformed_http_is_a_typed_error(fault):
    """A reply that is not valid HTTP/1.1 is one of our errors, never aiohttp's."""
    async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
        error = await outcome(client)
    assert isinstance(error, (sp.APIConnectionError, sp.InvalidResponseError)), repr(error)
    assert len(server.exchanges) == 1


@pytest.mark.parametrize("fault", ["drip", "drip_headers"])
async def test_dripping_reply_is_bounded_by_the_whole_attempt(fault):
    """One byte every 0.1 s never resets the clock: timeout=0.5 ends the call near 0.5 s."""
    async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
        started = time.monotonic()
        error = await outcome(client)
        took = elapsed_since(started)
    assert isinstance(error, sp.APITimeoutError)
    assert server.dripped >= 2
    assert 0.4 <= took < 3


async def test_refused_connection_is_unsent_and_retried():
    """Nothing listening: every attempt is made (nothing was sent), then APIConnectionError."""
    async with client_for(f"http://127.0.0.1:{closed_port()}") as client:
        error = await outcome(client)
    assert type(error) is sp.APIConnectionError
    assert (error.sent, error.attempts) == (False, FAST.max_attempts)


@pytest.fixture(name="blackhole")
async def _blackhole():
    """A port whose accept queue is full, so a new connection never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.2)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout_is_unsent_and_retried(blackhole):
    """A connection that never opens times out as unsent, so it is retried like a refusal."""
    async with client_for(f"http://127.0.0.1:{blackhole}", timeout=0.2) as client:
        error = await outcome(client)
    assert isinstance(error, sp.APITimeoutError)
    assert error.sent is False
    assert error.attempts == FAST.max_attempts


async def test_connect_timeout_of_a_callers_session_is_unsent_and_retried(blackhole):
    """The caller's session keeps its own connect timeout, and such a timeout is reported
    as unsent, and retried."""
    timeout = aiohttp.ClientTimeout(total=1, sock_connect=0.1)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = client_for(f"http://127.0.0.1:{blackhole}", session=session, timeout=1)
        async with client:
            error = await outcome(client)
    assert isinstance(error, sp.APITimeoutError)
    assert (error.sent, error.attempts) == (False, FAST.max_attempts)
    assert "connecting" in str(error)


# ---------------------------------------------------------------------------------------
# Size cap: never more than 1 MiB buffered
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["flood", "declared_huge"])
async def test_endless_body_is_cut_off_early(fault):
    """A 50 MiB reply fails at once, and the server sees the connection closed long before
    it sent everything, while the client is still open."""
    async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
        started = time.monotonic()
        error = await outcome(client)
        assert isinstance(error, sp.InvalidResponseError)
        assert "cap" in str(error)
        assert elapsed_since(started) < 1
        while not server.flood_sent and elapsed_since(started) < 3:
            await asyncio.sleep(0.01)
        assert not client.closed
    assert server.flood_sent
    assert server.flood_sent[0] < FLOOD_BYTES // 2
    assert elapsed_since(started) < 3


def padded_success(size: int) -> bytes:
    """A success envelope of exactly ``size`` bytes."""
    head, tail = b'{"code": 200, "message": "', b'", "data": {"persona_id": "p_1"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize(
    ("size", "accepted"),
    [(MAX_BODY_BYTES, True), (MAX_BODY_BYTES + 1, False)],
    ids=["at-cap", "over-cap"],
)
async def test_cap_boundary(server, chunked, size, accepted):
    """A body of exactly 1 MiB is read; one byte more is refused, declared or streamed."""
    body = padded_success(size)

    async def reply(request):
        response = web.StreamResponse(status=200)
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 100_000):
            await response.write(body[start : start + 100_000])
        await response.write_eof()
        return response

    server.script.append(reply)
    async with client_for(server.base_url) as client:
        result = await outcome(client)
    if accepted:
        assert isinstance(result, sp.Persona), repr(result)
    else:
        assert isinstance(result, sp.InvalidResponseError)
        assert "cap" in str(result)


async def test_compressed_body_is_capped_after_inflating():
    """A small gzip reply that inflates to 50 MiB is refused by the cap, not buffered."""
    async with FaultServer.always("gzip_bomb") as server, client_for(server.base_url) as client:
        gzip_bomb(server.bomb_size)  # compressed before measuring: the server shares our heap
        tracemalloc.start()
        try:
            result = await outcome(client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(result, sp.InvalidResponseError), repr(result)
    assert peak < 16 * 1024 * 1024


# ---------------------------------------------------------------------------------------
# Redirects
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_another_host_never_carries_the_key(status, server):
    """A 3xx to another host is reported with its status; that host is never contacted."""

    async with FaultServer.always("redirect") as origin:
        origin.redirect_status = status
        origin.location = server.base_url.replace("127.0.0.1", "localhost") + "/steal"
        async with client_for(origin.base_url) as client:
            error = await outcome(client)
    assert type(error) is sp.APIError
    assert (error.code, error.http_status, error.attempts) == (status, status, 1)
    assert server.seen == []
    assert len(origin.exchanges) == 1
    assert origin.exchanges[0].headers["x-api-key"] == KEY


# ---------------------------------------------------------------------------------------
# Configuration refused before any I/O
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1.evil.test",
        "http://localhost.evil.test",
        "http://127.0.0.1.nip.io",
        "http://localhost-evil.test",
        "http://evillocalhost",
        "http://evil.test/127.0.0.1",
        "http://0.0.0.0:8080",
        "http://[::]:8080",
    ],
)
def test_plain_http_to_a_lookalike_host_is_refused(url):
    """A host that only looks like loopback gets no key in clear, unless opted in. (Look-alikes
    made with user info, a query or a fragment are refused outright: see test_config.)"""
    with pytest.raises(sp.SunoPersonaError, match="allow_insecure_http"):
        sp.AsyncPersonaClient(KEY, base_url=url)
    assert sp.AsyncPersonaClient(KEY, base_url=url, allow_insecure_http=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.localhost",
        "http://a.b.localhost:8080",
        "http://LOCALHOST:8080",
        "http://127.255.255.254",
        "http://[0:0:0:0:0:0:0:1]:8080",
    ],
)
def test_loopback_names_may_use_plain_http(url):
    """Loopback addresses and localhost names (RFC 6761 includes *.localhost) are accepted."""
    assert sp.AsyncPersonaClient(KEY, base_url=url).base_url == url


@pytest.mark.parametrize("url", ["http://[", "http://[::1", "http://[evil.test]"])
def test_unparsable_base_url_is_our_error(url):
    """A base URL urllib cannot parse is refused with SunoPersonaError, not ValueError."""
    with pytest.raises(sp.SunoPersonaError, match="base_url"):
        sp.AsyncPersonaClient(KEY, base_url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc"])
def test_bad_port_is_refused_at_construction(url):
    """A base URL with an impossible port is refused when the client is built."""
    with pytest.raises(sp.SunoPersonaError, match="base_url"):
        sp.AsyncPersonaClient(KEY, base_url=url)


@pytest.mark.parametrize("key", ["sk-\t", "sk-\r", "sk-\x1b[2J", "sk-\x7f", "\x00sk-"])
def test_control_characters_in_the_key_are_refused_without_echoing_it(key):
    """A key with ASCII control characters is refused, and the message does not echo it."""
    with pytest.raises(sp.SunoPersonaError, match="control characters") as info:
        sp.AsyncPersonaClient(key, base_url="http://127.0.0.1:1")
    assert "sk-" not in str(info.value)


@pytest.mark.parametrize("key", ["sk-\x85abc", "sk-\x9b31m", "sk-\ud800abc"])
def test_unsendable_keys_are_refused(key):
    """C1 control characters and lone surrogates cannot travel intact: refused up front."""
    with pytest.raises(sp.SunoPersonaError, match="API key"):
        sp.AsyncPersonaClient(key, base_url="http://127.0.0.1:1")


# ---------------------------------------------------------------------------------------
# Deadline: bounds the whole call, sleeps included (real time, generous bounds)
# ---------------------------------------------------------------------------------------

PATIENT = sp.RetryPolicy(deadline=1.0, max_attempts=1000, initial_delay=0.05, max_delay=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["429", "455"])
async def test_deadline_bounds_a_call_that_is_always_refused(fault):
    """Always 429 (or 455) with Retry-After: 0: many attempts, and over by deadline + 0.5 s."""
    async with (
        FaultServer.always(fault) as server,
        client_for(server.base_url, retry=PATIENT, timeout=30) as client,
    ):
        started = time.monotonic()
        error = await outcome(client)
        took = elapsed_since(started)
    assert isinstance(error, sp.SunoPersonaError), repr(error)
    assert len(server.exchanges) > 1
    assert 0.5 < took < PATIENT.deadline + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["stall", "drip"])
async def test_deadline_bounds_retried_timeouts(fault):
    """Timeouts retried by opt-in still stop at the deadline, the last attempt cut short."""
    policy = sp.RetryPolicy(
        deadline=1.0,
        max_attempts=1000,
        initial_delay=0.01,
        max_delay=0.05,
        retry_server_errors=True,
    )
    async with (
        FaultServer.always(fault) as server,
        client_for(server.base_url, retry=policy, timeout=0.3) as client,
    ):
        started = time.monotonic()
        error = await outcome(client)
        took = elapsed_since(started)
    assert isinstance(error, sp.APITimeoutError)
    assert len(server.exchanges) >= 2
    assert took < policy.deadline + 0.5


async def test_deadline_shorter_than_timeout_cuts_a_dripping_body():
    """deadline=0.4 with timeout=30 ends a dripping reply near 0.4 s."""
    async with FaultServer.always("drip") as server:
        policy = sp.RetryPolicy(deadline=0.4)
        async with client_for(server.base_url, retry=policy, timeout=30) as client:
            started = time.monotonic()
            error = await outcome(client)
            took = elapsed_since(started)
    assert isinstance(error, sp.APITimeoutError)
    assert took < 0.9


async def test_retry_after_beyond_the_deadline_fails_at_once(server):
    """A Retry-After that would end past the deadline is not slept: the 429 comes back now."""
    server.script.append((429, {"code": 429, "message": "wait"}, {"Retry-After": "5"}))
    policy = sp.RetryPolicy(deadline=1.0, max_delay=30)
    async with client_for(server.base_url, retry=policy) as client:
        started = time.monotonic()
        error = await outcome(client)
        took = elapsed_since(started)
    assert isinstance(error, sp.RateLimitError)
    assert (error.retry_after, error.attempts, len(server.seen)) == (5, 1, 1)
    assert took < 0.5


async def test_deadline_bounds_the_wait_for_a_place_in_flight():
    """With every place taken, a call whose deadline passes while it waits sends nothing."""
    async with FaultServer.always("stall") as server:
        client = client_for(server.base_url, max_concurrency=1, timeout=30)
        async with client:
            blocker = asyncio.ensure_future(client.generate_persona(**FIELDS))
            while not server.exchanges:
                await asyncio.sleep(0.01)
            client._retry = sp.RetryPolicy(deadline=0.3)
            started = time.monotonic()
            error = await outcome(client, suno_id="late")
            took = elapsed_since(started)
            blocker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocker
    assert isinstance(error, sp.APITimeoutError)
    assert error.sent is False
    assert [e.suno_id for e in server.exchanges] == [FIELDS["suno_id"]]
    assert 0.2 < took < 1


async def test_deadline_bounds_the_wait_for_the_learned_rate(server, fake_time):
    """Once the gate paces at a learned rate, a retry whose slot would come after the
    deadline fails at once as unsent instead of waiting."""
    policy = sp.RetryPolicy(deadline=0.1, initial_delay=0.001, max_delay=0.002)
    client = client_for(server.base_url, retry=policy)
    on_fake_time(client, fake_time)
    async with client:
        await client.generate_persona(**FIELDS)
        client._throttle.state.seed(2.0, fake_time.now)  # one send every 0.5 s
        server.script += [(429, {"code": 429, "message": "slow down"})] * 2
        error = await outcome(client)
    assert client._throttle.rate is not None
    assert isinstance(error, sp.APITimeoutError)
    assert error.sent is False
    assert error.attempts == 2
    assert error.retry_after is not None
    assert len(server.seen) == 3
    assert sum(fake_time.sleeps) < policy.deadline


async def test_attempt_after_the_deadline_sends_nothing(server):
    """When the deadline has passed by the time an attempt starts (a blocked event loop,
    say), the attempt sends nothing and the call ends with an unsent timeout."""
    ticks = iter(range(0, 1000, 10))
    client = client_for(server.base_url, retry=sp.RetryPolicy(deadline=5), throttle=None)
    client._clock = lambda: float(next(ticks))
    async with client:
        error = await outcome(client)
    assert isinstance(error, sp.APITimeoutError)
    assert (error.sent, error.attempts) == (False, 0)
    assert server.seen == []


async def test_a_success_on_a_retry_ends_the_driver():
    """The retry driver stops at the first success, without sleeping again."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    retrying = build_retrying(
        FAST, sleep=sleep, clock=time.monotonic, deadline_at=None, rng=random.Random(0)
    )
    attempts = 0
    async for attempt in retrying:
        with attempt:
            attempts += 1
            if attempts == 1:
                raise sp.RateLimitError("slow down", code=429, http_status=429)
    assert (attempts, len(sleeps)) == (2, 1)


# ---------------------------------------------------------------------------------------
# Lifecycle: no session, connector or task left behind
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(FAULT_ERRORS))
async def test_nothing_left_after_a_fault(fault):
    """After a fault and close(), no task remains and nothing is reported unclosed."""
    async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
        await outcome(client)
    assert await leftover_tasks() == set()


async def test_nothing_left_after_cancelling_generate_many():
    """Cancelling generate_many mid-flight propagates and leaves no worker nor request task."""
    async with FaultServer.always("stall") as server, client_for(server.base_url) as client:
        requests = [{**FIELDS, "suno_id": f"s{i}"} for i in range(20)]
        task = asyncio.ensure_future(client.generate_many(requests, concurrency=4))
        while len(server.exchanges) < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await leftover_tasks() == set()


async def test_cancelled_waiters_give_their_places_back():
    """Calls cancelled while waiting for a place in flight leave the cap intact: later
    calls still get through."""
    async with FaultServer.always("stall") as server:
        client = client_for(server.base_url, max_concurrency=2, timeout=30)
        async with client:
            calls = [asyncio.ensure_future(outcome(client, suno_id=f"s{i}")) for i in range(6)]
            while len(server.exchanges) < 2:
                await asyncio.sleep(0.01)
            for call in calls:
                call.cancel()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            server.plan = lambda _exchange: "ok"
            personas = await asyncio.wait_for(
                asyncio.gather(*(client.generate_persona(**FIELDS) for _ in range(4))), 5
            )
    assert len(personas) == 4
    assert await leftover_tasks() == set()


async def test_breaking_out_of_as_completed_leaves_nothing():
    """Leaving generate_as_completed early (with aclosing) stops the work at once."""
    async with FaultServer.always("ok") as server, client_for(server.base_url) as client:
        requests = [{**FIELDS, "suno_id": f"s{i}"} for i in range(50)]
        stream = client.generate_as_completed(requests, concurrency=4)
        async with contextlib.aclosing(stream):
            async for _index, _outcome in stream:
                break
        sent = len(server.exchanges)
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert len(server.exchanges) == sent < 50
    assert await leftover_tasks() == set()


async def test_close_during_backoff_ends_the_call_with_our_error(server):
    """close() while a call sleeps before a retry ends that call with SunoPersonaError."""
    server.script.append((429, {"code": 429, "message": "wait"}, {"Retry-After": "1"}))
    client = client_for(server.base_url, retry=sp.RetryPolicy(initial_delay=0.001, max_delay=1))
    call = asyncio.ensure_future(client.generate_persona(**FIELDS))
    await server.got_request.wait()
    await asyncio.sleep(0.2)
    assert not call.done()
    await client.close()
    with pytest.raises(sp.SunoPersonaError, match="closed"):
        await call


async def test_close_while_waiting_for_a_place_ends_the_call_with_our_error():
    """Calls queued for a place in flight when the client closes end with SunoPersonaError
    (or a connection error for the one in flight), never aiohttp's RuntimeError."""
    async with FaultServer.always("stall") as server:
        client = client_for(server.base_url, max_concurrency=1, timeout=30)
        calls = [asyncio.ensure_future(outcome(client, suno_id=f"s{i}")) for i in range(3)]
        while not server.exchanges:
            await asyncio.sleep(0.01)
        await client.close()
        results = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert all(isinstance(r, sp.SunoPersonaError) for r in results), results
    assert [r for r in results if "closed" in str(r)] == results[1:]
    assert len(server.exchanges) == 1
    assert await leftover_tasks() == set()


def test_garbage_collected_unclosed_client_warns_clearly():
    """A client dropped open, session and all, gives our ResourceWarning naming the fix."""

    async def leak():
        async with FaultServer.always("ok") as server:
            client = client_for(server.base_url)
            await client.generate_persona(**FIELDS)
            holder = [client]
            del client
            with pytest.warns(ResourceWarning) as caught:
                drop(holder)
            await asyncio.sleep(0)
        return [str(w.message) for w in caught]

    messages = asyncio.run(leak())
    assert any("Unclosed AsyncPersonaClient" in m and "client.close()" in m for m in messages)


@pytest.mark.parametrize("state", ["never used", "closed", "own session", "refused"])
def test_garbage_collected_client_is_silent_when_nothing_leaks(state):
    """A client that never opened a session, was closed, used the caller's session, or was
    never fully built warns about nothing when collected."""

    async def scenario():
        async with FaultServer.always("ok") as server:
            if state == "refused":
                with pytest.raises(sp.SunoPersonaError):
                    sp.AsyncPersonaClient("", base_url=server.base_url)
                return
            client = client_for(server.base_url)
            if state == "closed":
                await client.generate_persona(**FIELDS)
                await client.close()
            elif state == "own session":
                async with sp.AsyncPersonaClient(KEY, base_url=server.base_url) as owner:
                    await owner.generate_persona(**FIELDS)
                    client = client_for(server.base_url, session=owner._session)
                    await client.generate_persona(**FIELDS)
            del client
            gc.collect()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(scenario())
        gc.collect()
    assert [str(w.message) for w in caught] == []


# ---------------------------------------------------------------------------------------
# Chaos: hundreds of calls through every fault at once
# ---------------------------------------------------------------------------------------

CHAOS_WEIGHTS = {
    "ok": 40,
    "429": 8,
    "455": 4,
    "500": 3,
    "501": 3,
    "505": 3,
    "reset": 3,
    "half_headers": 3,
    "no_reply": 3,
    "drip": 2,
    "truncated": 3,
    "non_utf8": 3,
    "html": 3,
    "unknown_code": 3,
    "redirect": 3,
    "flood": 2,
    "declared_huge": 2,
    "bad_status_line": 2,
    "bad_chunk": 2,
}
FIRST_FAULT_OUTCOME: dict[str, type[sp.Persona | sp.SunoPersonaError]] = {
    **FAULT_ERRORS,
    "ok": sp.Persona,
    "500": sp.ServerError,
    "501": sp.GenerationFailedError,
    "505": sp.FeatureDisabledError,
    "bad_status_line": sp.SunoPersonaError,
    "bad_chunk": sp.SunoPersonaError,
}


# With the default policy: errors that are answers (501, 422, ...) count as accepted, so a
# mix with a few random 429s must not pace the client down to its floor.
CHAOS_THROTTLES = {
    "throttled": sp.ThrottlePolicy(),
    "unthrottled": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("throttle", CHAOS_THROTTLES.values(), ids=CHAOS_THROTTLES.keys())
async def test_chaos_every_input_gets_one_outcome_in_order(throttle):
    """400 calls, 32 at a time, against every fault at random (seeded): one outcome per
    input, in input order, each a Persona or one of our errors, the first attempt's fault
    deciding it when it is final; nothing left behind; all within a bounded time."""
    assert set(CHAOS_WEIGHTS) <= set(FAULTS)
    rng = random.Random(1234)
    names, weights = list(CHAOS_WEIGHTS), list(CHAOS_WEIGHTS.values())
    count = 400
    plan = {f"s{i}": rng.choices(names, weights, k=FAST.max_attempts) for i in range(count)}

    def by_plan(exchange: Exchange) -> str:
        return plan[exchange.suno_id][min(exchange.attempt, FAST.max_attempts) - 1]

    requests = [{**FIELDS, "suno_id": f"s{i}"} for i in range(count)]
    started = time.monotonic()
    async with FaultServer(by_plan) as server:
        client = client_for(server.base_url, timeout=1.0, throttle=throttle)
        async with client:
            outcomes = await asyncio.wait_for(client.generate_many(requests, concurrency=32), 60)
    took = elapsed_since(started)

    assert len(outcomes) == count
    for index, (request, result) in enumerate(zip(requests, outcomes, strict=True)):
        assert isinstance(result, (sp.Persona, sp.SunoPersonaError)), (index, repr(result))
        if isinstance(result, sp.Persona):
            assert result.persona_id == f"persona_{request['suno_id']}"
            assert result.request.suno_id == request["suno_id"]
        first = plan[request["suno_id"]][0]
        if first in FIRST_FAULT_OUTCOME:
            assert isinstance(result, FIRST_FAULT_OUTCOME[first]), (index, first, repr(result))
    attempts = {}
    for exchange in server.exchanges:
        attempts[exchange.suno_id] = exchange.attempt
    assert max(attempts.values()) <= FAST.max_attempts
    assert any(isinstance(r, sp.Persona) for r in outcomes)
    assert {type(r) for r in outcomes} >= {sp.RateLimitError, sp.APITimeoutError}
    assert await leftover_tasks() == set()
    assert took < 60


# ---------------------------------------------------------------------------------------
# Fuzzing the reply parser
# ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
codes = st.one_of(
    st.sampled_from([200, 200.0, True, False, "200", None, [200], {"code": 200}]),
    st.sampled_from([199, 201, 299, 300, 399, 400, 429, 455, 499, 500, 599, 600]),
    st.integers(),
    st.integers(min_value=2**63),
    st.floats(),
    json_values,
)
persona_ids = st.one_of(st.text(max_size=20), json_values)
envelopes = st.fixed_dictionaries(
    {"code": codes},
    optional={
        "message": json_values,
        "data": st.one_of(json_values, st.fixed_dictionaries({"persona_id": persona_ids})),
    },
)


def deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    return b'{"code": 200, "data": ' + opener * depth + closer * depth + b"}"


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
    st.builds(deep, st.integers(1, 200_000), st.sampled_from([b"["]), st.just(b"]")),
    st.builds(deep, st.integers(1, 200_000), st.just(b'{"a":'), st.just(b"}")),
    st.integers(4_000, 20_000).map(lambda n: b'{"code": ' + b"9" * n + b"}"),
    st.sampled_from(
        [
            b'{"code": 200, "data": {"persona_id": "p"}}',
            b'{"code": 200.0, "data": {"persona_id": "p"}}',
            b'{"code": true, "data": {"persona_id": "p"}}',
            b'{"code": 2e2, "data": {"persona_id": "p"}}',
            b'{"code": NaN}',
            b'{"code": 200, "code": 429}',
            b"\xef\xbb\xbf" + b'{"code": 200, "data": {"persona_id": "p"}}',
            b'{"code": 200, "data": {"persona_id": "\\ud800"}}',
        ]
    ),
)
http_dates = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001 - the zone comes from `timezones`
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-11)), timezone.max]),
).map(lambda when: format_datetime(when, usegmt=when.utcoffset() == timedelta(0)))
retry_after_values = st.one_of(
    st.text(max_size=40),
    http_dates,
    st.floats().map(str),
    st.integers().map(str),
    st.sampled_from(["", " ", "-0", "+5", "1e309", "1e-400", "0x10", "nan", "Inf", "١٢"]),
    st.sampled_from(["Mon, 99 Foo 2020 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 +9999"]),
)
header_maps = st.dictionaries(
    st.one_of(
        st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER", "Content-Type"]),
        st.text(max_size=10),
    ),
    retry_after_values,
    max_size=4,
)
statuses = st.one_of(
    st.sampled_from([200, 201, 204, 206, 299, 301, 302, 429, 455, 500, 502, 999]),
    st.integers(min_value=-(2**70), max_value=2**70),
)


def parse_or_error(status, headers, body) -> sp.Persona | sp.SunoPersonaError:
    """What the parser returns, or the library error it raised (anything else propagates)."""
    try:
        return _protocol.parse_response(status, headers, body, request=REQUEST, now=NOW)
    except sp.SunoPersonaError as error:
        return error


def is_exact_int(value: object, expected: int) -> bool:
    return type(value) is int and value == expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, headers=header_maps, body=bodies)
def test_parser_gives_only_a_persona_or_our_error(status, headers, body):
    """Whatever the status, headers and bytes, parsing yields a Persona or raises one of
    our errors, which prints; a success needs a 2xx status and an integer code 200, and a
    2xx is an APIError only when its envelope carries an error code."""
    result = parse_or_error(status, headers, body)
    if isinstance(result, sp.SunoPersonaError):
        assert str(result)
        assert repr(result)
        if isinstance(result, sp.APIError):
            assert type(result.code) is int
            assert result.code == status or 400 <= result.code < 600
            assert result.retry_after is None or (
                math.isfinite(result.retry_after) and result.retry_after >= 0
            )
            if 200 <= status < 300:
                assert 400 <= result.code < 600
        return
    assert isinstance(result, sp.Persona)
    assert 200 <= status < 300
    envelope = json.loads(body.decode("utf-8"))
    assert is_exact_int(envelope["code"], 200)
    assert result.persona_id == envelope["data"]["persona_id"]
    assert result.request is REQUEST


@settings(max_examples=300, deadline=None)
@given(value=retry_after_values)
def test_retry_after_is_none_or_finite_and_non_negative(value):
    """Any Retry-After text, dates included, parses to None or a finite delay >= 0."""
    seconds = _protocol.parse_retry_after(value, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(min_value=-(10**6), max_value=10**6))
def test_retry_after_date_counts_from_now(offset):
    """An HTTP date Retry-After means the seconds from now until then, 0 when past."""
    value = format_datetime(datetime.fromtimestamp(NOW + offset, tz=timezone.utc), usegmt=True)
    assert _protocol.parse_retry_after(value, now=NOW) == pytest.approx(max(0, offset))


@pytest.mark.parametrize("status", [201, 202, 204, 206, 299])
def test_other_2xx_without_an_envelope_is_an_invalid_response(status):
    """A 2xx that is not the success envelope is an InvalidResponseError, as for 200."""
    with pytest.raises(sp.InvalidResponseError):
        _protocol.parse_response(status, {}, b"", request=REQUEST, now=NOW)


# ---------------------------------------------------------------------------------------
# Secrets: the key is in no log record, repr, message, traceback or emulator record
# ---------------------------------------------------------------------------------------


@pytest.fixture(name="debug_logs")
def _debug_logs(caplog):
    for name in (None, "suno_persona", "aiohttp", "asyncio", "tenacity"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def texts_of(error: BaseException) -> list[str]:
    """str and repr of the error, its attributes, and the whole formatted chain."""
    texts = [str(error), repr(error), repr(vars(error))]
    texts.append("".join(traceback.format_exception(error)))
    cause = error.__cause__ or error.__context__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return texts


def logged_texts(caplog) -> list[str]:
    formatter = logging.Formatter()
    return [formatter.format(record) for record in caplog.records]


async def test_key_is_not_leaked_through_retries_and_errors(debug_logs):
    """429 retried then 401, a refused connection, a timeout and a malformed reply: at
    DEBUG, the key is in no log record, message, traceback, repr or emulator record."""
    asyncio.get_running_loop().set_debug(True)
    texts: list[str] = []
    async with PersonaEmulator(api_keys=(KEY,)) as emu:
        emu.fail_next(429, times=2, retry_after=0)
        emu.fail_next(401)
        async with client_for(emu.base_url) as client:
            error = await outcome(client)
            assert isinstance(error, sp.AuthenticationError)
            texts += texts_of(error)
            persona = await client.generate_persona(**FIELDS)
            texts += [repr(persona), str(persona), repr(client), str(client)]
        texts += [repr(emu.requests), repr(emu), *(repr(r.headers) for r in emu.requests)]
        assert len(emu.requests) == 4
    async with client_for(f"http://127.0.0.1:{closed_port()}") as client:
        error = await outcome(client)
        assert isinstance(error, sp.APIConnectionError)
        texts += texts_of(error)
    for fault in ("stall", "bad_status_line", "reset"):
        async with FaultServer.always(fault) as server, client_for(server.base_url) as client:
            error = await outcome(client)
            assert isinstance(error, sp.SunoPersonaError)
            texts += texts_of(error)
    texts += logged_texts(debug_logs)
    assert any("attempt 3" in text for text in texts)
    assert [text for text in texts if KEY in text] == []


async def test_key_is_not_in_the_repr_of_any_chained_exception():
    """repr() of every exception in the chain of a malformed-reply error is free of the key."""
    async with FaultServer.always("bad_status_line") as server, client_for(server.base_url) as c:
        error = await outcome(c)
    chain = []
    while error is not None:
        chain.append(repr(error))
        error = error.__cause__ or error.__context__
    assert [text for text in chain if KEY in text] == []
