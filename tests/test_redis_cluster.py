"""The throttle shared through a real 3-master Redis Cluster (see ``redis_fixtures.py``)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis_fixtures import BASE, KEY, ClusterServers, make_state, running, share_a_cut

import suno_persona as sp

redis = pytest.importorskip("redis")

from redis.asyncio.cluster import RedisCluster  # noqa: E402

from suno_persona._redis_state import RedisState, key_prefix  # noqa: E402
from suno_persona.redis import RedisThrottleStore  # noqa: E402

pytestmark = pytest.mark.slow  # the Cluster takes 2 s to start: once per CI run, not per Python

STORE_TIMEOUT = 5.0  # a loaded CI machine: these tests are not about the timeout


@pytest.fixture(name="cluster", scope="module")
def _cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from running(ClusterServers(tmp_path_factory.mktemp("cluster")))


@pytest.fixture(name="seeds")
def _seeds(cluster: ClusterServers) -> str:
    """Two of the nodes, as a redis+cluster:// URL lists them; the Cluster emptied first."""
    for node in cluster.nodes:
        node.command("FLUSHALL")
    return ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes[:2])


async def opened(state: RedisState) -> RedisState:
    """``state`` registered (as a client that opens), once its background opening ended."""
    state.register()
    for _ in range(500):
        if state.local is None and state.store.discovered and state.calls:
            return state
        await asyncio.sleep(0.01)
    raise AssertionError("the store was not reached")


@pytest.mark.parametrize("form", ["RedisCluster", "redis+cluster://"])
async def test_pacing_is_shared_through_the_cluster(seeds, form, caplog):
    """A rate cut by one process paces the other, through a RedisCluster client of the
    user's or a redis+cluster:// URL, with no warning."""
    user = (
        RedisCluster.from_url(f"redis://{seeds.split(',')[0]}") if form == "RedisCluster" else None
    )
    stores = [
        RedisThrottleStore(user or f"redis+cluster://{seeds}", timeout=STORE_TIMEOUT)
        for _ in range(2)
    ]
    one, other = [await opened(make_state(store)) for store in stores]
    ats = await share_a_cut(one, other)
    assert ats[-1] > ats[0]  # paced: the four slots are not all at once
    assert one.local is None
    assert other.local is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await one.aclose()
    await other.aclose()
    if user is not None:
        await user.aclose()


async def test_the_cluster_is_discovered_in_the_background_at_open(seeds, caplog):
    """Discovery is not charged to a send's store timeout: right after the client opens,
    the state throttles in this process (no store call, no warning) until it is done."""
    store = RedisThrottleStore(f"redis+cluster://{seeds}")  # the default 0.1 s timeout
    state = make_state(store)
    state.register()
    assert state.local is not None
    decision = await state.admit(time.monotonic(), 10.0, None)
    assert decision.go
    assert state.calls == 0
    await opened(state)
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.calls >= 2
    assert state.local is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await state.aclose()


async def test_a_client_shares_through_a_cluster_url(server, seeds, cluster):
    """The client end to end: its keys land on the node that owns their slot."""
    url = f"redis+cluster://{seeds}"
    request = {"task_id": "t", "suno_id": "s", "name": "n"}
    async with sp.AsyncPersonaClient(KEY, base_url=server.base_url, throttle_store=url) as client:
        state = client._throttle.state
        assert isinstance(state, RedisState)
        for _ in range(100):  # alone until the discovery ends, then shared
            assert isinstance(await client.generate_persona(request), sp.Persona)
            if state.local is None:
                break
            await asyncio.sleep(0.02)
        assert state.local is None
        assert isinstance(await client.generate_persona(request), sp.Persona)
    prefix = key_prefix(server.base_url, KEY)
    owner = cluster.owner(f"{prefix}:procs")
    assert owner.command("EXISTS", f"{prefix}:procs").strip() == b":1"


async def test_a_script_flushed_from_the_cluster_is_loaded_again(seeds, cluster):
    """The registered script runs through a RedisCluster client: after a ``SCRIPT FLUSH`` on
    every node, the next call loads it again and the state still shares."""
    store = RedisThrottleStore(f"redis+cluster://{seeds}", timeout=STORE_TIMEOUT)
    state = await opened(make_state(store))
    for node in cluster.nodes:
        node.command("SCRIPT", "FLUSH")
    calls = state.calls
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.local is None
    assert state.calls == calls + 1
    await state.aclose()


async def test_a_node_that_does_not_own_the_slot_warns_cluster(seeds, cluster, caplog):
    """A plain redis:// URL of a Cluster node that does not hold the keys' slot: the
    warning says the server is a Cluster, shows the MOVED reply, and says what to do."""
    owner = cluster.owner(f"{key_prefix(BASE, KEY)}:rate")
    stranger = next(node for node in cluster.nodes if node is not owner)
    state = make_state(RedisThrottleStore(stranger.url, timeout=STORE_TIMEOUT))
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.local is not None
    [warning] = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert "Redis Cluster" in warning
    assert "MOVED" in warning
    assert f"127.0.0.1:{owner.port}" in warning
    assert "redis+cluster://" in warning
    await state.aclose()
