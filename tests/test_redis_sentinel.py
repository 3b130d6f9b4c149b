"""The throttle shared through a Sentinel-managed master, across a failover."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis_fixtures import SentinelGroup, make_state, running

from suno_persona._throttle import Answer

redis = pytest.importorskip("redis")

from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.asyncio.sentinel import Sentinel  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402

from suno_persona.redis import RedisThrottleStore  # noqa: E402


@pytest.fixture(name="group", scope="module")
def _group(tmp_path_factory: pytest.TempPathFactory):
    yield from running(SentinelGroup(tmp_path_factory.mktemp("sentinel")))


async def switch_master(group: SentinelGroup) -> asyncio.Task[float]:
    """A task that ends at the Sentinels' ``+switch-master``, with its time."""
    client = Redis(port=group.sentinels[0].port)
    pubsub = client.pubsub()
    await pubsub.subscribe("+switch-master")

    async def watch() -> float:
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    return time.monotonic()
        finally:
            await pubsub.aclose()
            await client.aclose()
        raise AssertionError("the Sentinel hung up")  # pragma: no cover

    return asyncio.ensure_future(watch())


@pytest.mark.slow
async def test_sharing_resumes_within_a_second_of_a_promotion(group):
    """The master is killed mid-run: each process throttles alone, then shares again through
    the promoted replica within a second of the Sentinels announcing it (with a client of
    the user's from ``Sentinel.master_for`` and with a redis+sentinel:// URL)."""
    addresses = [("127.0.0.1", sentinel.port) for sentinel in group.sentinels]
    sentinel = Sentinel(addresses, socket_timeout=0.1)
    own = sentinel.master_for(
        group.NAME, socket_timeout=0.1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0)
    )
    url = "redis+sentinel://" + ",".join(f"{h}:{p}" for h, p in addresses) + f"/{group.NAME}"
    states = [make_state(RedisThrottleStore(own)), make_state(RedisThrottleStore(url))]
    now = time.monotonic()
    for state in states:
        assert (await state.admit(now, 10.0, None)).go
        assert state.local is None  # shared, before the failover
    switched = await switch_master(group)
    group.master.stop()  # SIGKILL
    fell = [False, False]
    resumed: list[float | None] = [None, None]
    deadline = time.monotonic() + 8
    while None in resumed and time.monotonic() < deadline:
        for index, state in enumerate(states):
            asked = time.monotonic()
            if fell[index] and state.local is None and resumed[index] is None:
                resumed[index] = asked  # this decision is the first one shared again
            await state.admit(asked, 10.0, None)
            state.report(Answer.ACCEPTED, None, now=time.monotonic(), sent_at=asked, probe=False)
            fell[index] = fell[index] or state.local is not None
        await asyncio.sleep(0.02)
    assert fell == [True, True]
    switched_at = await asyncio.wait_for(switched, 5)
    for at in resumed:
        assert at is not None
        assert at - switched_at < 1.0
    for state in states:
        await state.aclose()
    await own.aclose()
    for client in sentinel.sentinels:
        await client.aclose()


@pytest.mark.slow
async def test_a_script_flushed_from_the_master_is_loaded_again(group):
    """The registered script runs through the Sentinel-managed master client: after a
    ``SCRIPT FLUSH`` on the master, the next call loads it again and the state still shares."""
    addresses = [("127.0.0.1", sentinel.port) for sentinel in group.sentinels]
    url = "redis+sentinel://" + ",".join(f"{h}:{p}" for h, p in addresses) + f"/{group.NAME}"
    state = make_state(RedisThrottleStore(url, timeout=5.0))
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.local is None
    sentinel = Sentinel(addresses, socket_timeout=1.0)
    host, port = await sentinel.discover_master(group.NAME)
    master = Redis(host=host, port=port)
    await master.script_flush()
    calls = state.calls
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.local is None
    assert state.calls == calls + 1
    await master.aclose()
    for client in sentinel.sentinels:
        await client.aclose()
    await state.aclose()
