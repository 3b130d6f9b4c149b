"""The store on a Redis that may evict its keys: a warning at open, and no rate lost."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis_fixtures import RedisServer, cut_to, make_state, redis_program

redis = pytest.importorskip("redis")

from suno_persona._redis_state import RedisState  # noqa: E402
from suno_persona.redis import RedisThrottleStore  # noqa: E402

STORE_TIMEOUT = 5.0  # a loaded CI machine: these tests are not about the timeout


@pytest.fixture(name="cache", scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory):
    """A redis-server used as a cache: 4 MB at most, least recently used keys evicted."""
    server = RedisServer(
        redis_program(),
        tmp_path_factory.mktemp("cache"),
        "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru",
    )  # fmt: skip
    server.start()
    server.command("ACL", "SETUSER", "limited", "on", ">secret", "~*", "&*", "+@all", "-config")
    yield server
    server.stop()


@pytest.fixture(name="cache_url")
def _cache_url(cache: RedisServer) -> str:
    cache.command("FLUSHALL")
    cache.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    return cache.url


def store_state(url: str) -> RedisState:
    return make_state(RedisThrottleStore(url, timeout=STORE_TIMEOUT))


async def opened(state: RedisState) -> RedisState:
    """``state`` registered (as a client that opens), once its background opening ended."""
    state.register()
    for _ in range(500):
        if state._checked_eviction and not state._tasks:
            return state
        await asyncio.sleep(0.01)
    raise AssertionError("the store was not reached")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_a_policy_that_can_evict_the_keys_warns_once_at_open(
    cache, cache_url, policy, caplog
):
    """allkeys-* evicts any key; volatile-* evicts keys with a TTL, as all the store's are."""
    cache.command("CONFIG", "SET", "maxmemory-policy", policy)
    state = await opened(store_state(cache_url))
    state.register()
    for _ in range(3):
        await state.admit(time.monotonic(), 10.0, None)
    [warning] = warnings_of(caplog)
    assert f"maxmemory-policy {policy}" in warning
    assert "noeviction" in warning
    assert state.local is None
    await state.aclose()


async def test_noeviction_says_nothing(cache, cache_url, caplog):
    cache.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    state = await opened(store_state(cache_url))
    assert state.local is None
    assert warnings_of(caplog) == []
    await state.aclose()


async def test_a_server_that_forbids_config_says_nothing(cache, cache_url, caplog):
    """A managed service that refuses CONFIG GET: no warning, and the store is shared."""
    state = await opened(store_state(f"redis://limited:secret@127.0.0.1:{cache.port}/0"))
    assert state.local is None
    assert warnings_of(caplog) == []
    await state.aclose()


async def test_the_learned_rate_survives_the_eviction_of_its_keys(cache, cache_url):
    """Cache keys fill the memory and the LRU policy evicts the store's keys: the next
    decisions still pace at the rate learned, put back from this process's view of it."""
    state = await opened(store_state(cache_url))
    cut_to(state, time.monotonic())
    await state.admit(time.monotonic(), 10.0, None)
    learned = state.rate(time.monotonic())
    assert learned is not None
    filler = redis.Redis.from_url(cache_url)
    try:
        value = b"x" * 10_000
        for batch in range(200):
            filler.mset({f"cache:{batch}:{i}": value for i in range(50)})
            if not filler.exists(state.keys[0]):
                break
        assert not filler.exists(state.keys[0]), "the learned rate was not evicted"
    finally:
        filler.close()
    now = time.monotonic()
    decisions = [await state.admit(now, 10.0, None) for _ in range(30)]
    took = time.monotonic() - now  # the script reads the server's clock, which moved on
    assert state.rate(now) == pytest.approx(learned, rel=0.05)
    paced = [d for d in decisions if not d.go or d.at > now]
    assert paced, "every send went at once: the rate was taken as unknown"
    # at most the burst of 0.1 s, and the slots that fell due while the 30 calls were made
    assert len(decisions) - len(paced) <= learned * (0.1 + took) + 2
    await state.aclose()
