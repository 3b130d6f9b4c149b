"""Reaching the store, without a server: the retry schedule, the eviction advice, the URLs."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from redis_fixtures import free_port, make_state

redis = pytest.importorskip("redis")

from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402
from redis.exceptions import AskError, AuthenticationError, MovedError, ResponseError  # noqa: E402

from suno_persona._redis_reach import (  # noqa: E402
    RETRY_MAX,
    _risk,
    bounded,
    describe,
    retry_delay,
)
from suno_persona._redis_urls import _split, client_from_url  # noqa: E402
from suno_persona.redis import RedisThrottleStore  # noqa: E402


def test_retries_start_soon_and_stay_below_a_second_apart():
    """0.05-0.1 s after the failure, then doubling, capped at 0.8 s; never under half of it."""
    assert retry_delay(0, lambda: 0.0) == pytest.approx(0.05)
    assert retry_delay(0, lambda: 0.999) == pytest.approx(0.1, rel=0.01)
    assert retry_delay(1, lambda: 0.0) == pytest.approx(0.1)
    assert retry_delay(3, lambda: 0.999) == pytest.approx(0.8, rel=0.01)
    for failures in (4, 10, 1000):
        assert RETRY_MAX / 2 <= retry_delay(failures) <= RETRY_MAX


def test_retries_are_jittered():
    assert len({round(retry_delay(5), 6) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("config", "warned"),
    [
        ({"maxmemory": "4194304", "maxmemory-policy": "allkeys-lru"}, "evicts any key"),
        ({"maxmemory": "4194304", "maxmemory-policy": "allkeys-random"}, "evicts any key"),
        ({"maxmemory": "4194304", "maxmemory-policy": "volatile-lfu"}, "keys with a TTL"),
        ({"maxmemory": "4194304", "maxmemory-policy": "noeviction"}, None),
        ({"maxmemory": "0", "maxmemory-policy": "allkeys-lru"}, None),  # no limit: no eviction
        ({"maxmemory": "4194304", "maxmemory-policy": "a-future-one"}, None),
        ({}, None),
    ],
)
def test_which_policies_can_evict_the_keys(config, warned):
    risk = _risk(config)
    if warned is None:
        assert risk is None
    else:
        assert risk is not None
        assert warned in risk


def test_a_moved_or_ask_reply_says_cluster():
    moved = describe(MovedError("3999 127.0.0.1:7001"))
    assert "Redis Cluster" in moved
    assert "MOVED 3999 127.0.0.1:7001" in moved
    assert "ASK 12 10.0.0.2:7002" in describe(AskError("12 10.0.0.2:7002"))
    assert "Redis Cluster" in describe(ResponseError("MOVED 3999 127.0.0.1:7001"))  # redis-py 5
    assert describe(ConnectionError()) == "ConnectionError"


def test_multi_host_urls_are_taken_apart():
    assert _split("redis+cluster://u:p@h1:7000,[::1]:7001,h3/0?ssl_cert_reqs=none", 6379) == (
        "u:p@",
        [("h1", 7000), ("::1", 7001), ("h3", 6379)],
        "/0",
        "?ssl_cert_reqs=none",
    )
    assert _split("redis+sentinel://s1,s2:26380/main", 26379)[1:3] == (
        [("s1", 26379), ("s2", 26380)],
        "/main",
    )


def test_bad_sentinel_and_cluster_urls_are_refused_at_once():
    with pytest.raises(ValueError, match="master's name"):
        RedisThrottleStore("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="database 0"):
        RedisThrottleStore("rediss+cluster://127.0.0.1:7000/2")
    with pytest.raises(ValueError, match=r"the port of '127\.0\.0\.1' must be a number"):
        RedisThrottleStore("redis+cluster://127.0.0.1:7000,127.0.0.1:x")
    with pytest.raises(ValueError, match="redis\\+cluster://"):
        RedisThrottleStore("cluster://127.0.0.1:7000")


async def test_the_clients_of_the_url_forms():
    """Each URL form makes its kind of client, with the store's timeout and no retries."""
    cluster, closing = client_from_url("rediss+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001", 0.1)
    assert isinstance(cluster, RedisCluster)
    assert {node.port for node in cluster.nodes_manager.startup_nodes.values()} == {7000, 7001}
    assert closing == [cluster]
    master, closing = client_from_url("rediss+sentinel://u:pw@127.0.0.1:1,127.0.0.1:2/main/3", 0.1)
    assert isinstance(master, Redis)
    pool = master.connection_pool
    assert pool.service_name == "main"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_timeout"] == 0.1
    assert "SSL" in pool.connection_class.__name__
    assert len(closing) == 3  # the master's client and one for each Sentinel
    for client in closing:
        await client.aclose()


async def test_a_cluster_that_cannot_be_discovered_warns_once_and_is_tried_again(caplog):
    """No node answers: the state throttles alone from the first admit, warns once when the
    discovery fails, and tries again soon."""
    state = make_state(RedisThrottleStore(f"redis+cluster://127.0.0.1:{free_port()}"))
    assert (await state.admit(time.monotonic(), 10.0, None)).go  # starts the discovery
    assert state.local is not None
    state.register()  # the client opens: the discovery is already under way
    for _ in range(200):
        if caplog.records:
            break
        await asyncio.sleep(0.01)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "unavailable" in warning
    assert "Redis Cluster cannot be connected" in warning
    assert state._retry_at < time.monotonic() + 0.1
    await state.aclose()


async def test_an_error_the_call_ends_with_as_its_caller_is_cancelled_is_retrieved():
    """The script call failed (a wrong password) just as the send that waited for it was
    cancelled: nobody reads the error, and asyncio must not log it as never retrieved when
    the task is collected (it once did, inside another test's run, under CI's load)."""
    loop = asyncio.get_running_loop()
    logged: list[str] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: logged.append(context["message"]))
    try:

        async def refused() -> None:
            raise AuthenticationError("invalid username-password pair")

        caller = asyncio.ensure_future(bounded(refused(), 1.0))
        await asyncio.sleep(0)  # the caller waits for the call
        await asyncio.sleep(0)  # the call fails; the caller is not back yet
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        del caller
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(handler)
    assert logged == []
