"""Reaching the store: bounded calls, failures put in words, retries, the eviction check.

The deployment layer under :class:`~suno_persona._redis_state.RedisState`, apart from what
its script decides:

* :func:`bounded` runs one call to Redis within a time limit and turns every failure into
  :class:`StoreUnavailable` (the one place where redis-py's errors are translated).
* :func:`describe` says what a failure means; a ``MOVED`` or ``ASK`` reply says that the
  server is a Redis Cluster node, and how to connect to the Cluster instead.
* :func:`retry_delay` spaces the tries of a store that stopped answering: short at first
  (a Sentinel promotes a replica in about a second), jittered so that a fleet does not try
  in step, and capped below a second, so that sharing resumes within a second of the store
  coming back, at no more than one connection per second and process to a dead one.
* :func:`warn_of_eviction` reads the server's ``maxmemory`` and ``maxmemory-policy`` (where
  ``CONFIG`` is allowed) and warns when the server may evict the store's keys: under every
  policy but ``noeviction``, since all of them carry a TTL (they expire when unused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

if TYPE_CHECKING:
    from suno_persona.redis import RedisThrottleStore

__all__ = ["StoreUnavailable", "bounded", "describe", "retry_delay", "warn_of_eviction"]

logger = logging.getLogger("suno_persona")

T = TypeVar("T")

RETRY_FIRST = 0.1
RETRY_MAX = 0.8


class StoreUnavailable(Exception):  # noqa: N818 - a signal inside the package
    """The store did not answer in time, or answered with an error."""


async def bounded(work: Awaitable[T], timeout: float) -> T:
    """The result of ``work``, cancelled past ``timeout`` seconds.

    Raises:
        StoreUnavailable: No result within the time, or an error of Redis or of the network.
    """
    task = asyncio.ensure_future(work)
    # An error the call ends with after this caller left (timed out, or cancelled itself as
    # the call ended) is nobody's news: retrieved, or asyncio logs it when it is collected.
    task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise StoreUnavailable(f"no answer within {timeout} s")
    try:
        return task.result()
    except (RedisError, RedisClusterException, OSError) as error:
        reason = describe(error)
    # raised outside the handler, chaining nothing: redis-py's frames hold the password
    raise StoreUnavailable(reason)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def describe(error: BaseException) -> str:
    """What ``error`` of a store call means, for the warning that says the store is unavailable."""
    reply = str(error)
    if isinstance(error, AskError):  # redis-py 6 and later
        reply = f"{'MOVED' if isinstance(error, MovedError) else 'ASK'} {error.message}"
    elif not (isinstance(error, ResponseError) and reply.startswith(("MOVED ", "ASK "))):
        return f"{type(error).__name__}: {reply}" if reply else type(error).__name__
    return (
        f"the server is a node of a Redis Cluster, which answered {reply}: "
        "use a redis+cluster:// URL or RedisThrottleStore(RedisCluster(...))"
    )


def retry_delay(failures: int, draw: Callable[[], float] = random.random) -> float:
    """Seconds before the next try of a store after ``failures`` failed tries (0: the first).

    ``0.1 * 2**failures`` seconds capped at 0.8, of which a random half to all (``draw()``
    is in ``[0, 1)``).
    """
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** min(failures, 16)) * (0.5 + draw() / 2)


async def warn_of_eviction(store: RedisThrottleStore, key: str, timeout: float) -> None:
    """Log a warning if the server holding ``key`` may evict the store's keys.

    Nothing when the server refuses ``CONFIG GET`` (managed services often do), or does not
    answer within ``timeout``: the check is advice, never in the way.
    """
    with contextlib.suppress(StoreUnavailable):
        config = await bounded(_memory_config(store.client(), key), timeout)
        risk = _risk({_text(name): _text(value) for name, value in config.items()})
        if risk is not None:
            logger.warning("the throttle store %r may lose the learned rate: %s", store, risk)


async def _memory_config(client: Redis | RedisCluster, key: str) -> Mapping[Any, Any]:
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return await client.config_get("maxmemory*", target_nodes=node)
    return await client.config_get("maxmemory*")


def _risk(config: Mapping[str, str]) -> str | None:
    policy = config.get("maxmemory-policy", "noeviction")
    if policy == "noeviction" or config.get("maxmemory", "0") == "0":
        return None
    if not policy.startswith(("allkeys-", "volatile-")):
        return None
    which = "any key" if policy.startswith("allkeys-") else "keys with a TTL (all of its do)"
    return (
        f"its maxmemory-policy {policy} evicts {which} when memory is full: set "
        "maxmemory-policy noeviction, or give the throttle a Redis of its own (a process "
        "that finds the learned rate evicted puts back the rate it knew)"
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
