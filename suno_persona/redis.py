"""Share one key's throttle among processes through Redis (``pip install 'suno-persona[redis]'``).

Pass a :class:`RedisThrottleStore`, or just its URL, as the client's ``throttle_store``::

    client = AsyncPersonaClient(throttle_store="redis://localhost:6379/0")

Every client of the same (base URL, API key) that uses the same Redis then shares the learned
send rate (a GCRA reservation of each send slot), the cuts of that rate, the ``Retry-After``
pause and the maintenance breaker's single probe. See the "Scaling out" page of the docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from suno_persona._config import masked_url
from suno_persona._redis_urls import check, client_from_url
from suno_persona._store import SCHEMES

__all__ = ["RedisThrottleStore"]


class RedisThrottleStore:
    """Where the shared throttle state lives: a Redis server (or Sentinel, or Cluster).

    Args:
        redis: A URL, or a client of your own: a ``redis.asyncio.Redis`` (TLS, a Sentinel's
            ``master_for(...)``) or a ``redis.asyncio.cluster.RedisCluster``, configured by
            you (the store never closes it). URLs: ``redis://``, ``rediss://`` (TLS) and
            ``unix://`` for one server; ``redis+cluster://host:port[,host:port...]`` (or
            ``rediss+cluster://``) for a Redis Cluster, discovered from those nodes;
            ``redis+sentinel://host:port[,host:port...]/<master name>[/<db>]`` (or
            ``rediss+sentinel://``) for the master those Sentinels name. The deployment is
            in the scheme, so that a ``redis://`` URL always means one server and a Cluster
            node's URL is never taken for the Cluster. A client built from a URL has short
            socket timeouts and no retries of its own, and is created anew in each event
            loop (so after a fork, too).
        timeout: Seconds one script call may take (connecting included); past it, or on any
            error of the store, the client throttles in its own process until the store
            answers again.
        use_server_time: Take the time from the Redis server (``TIME`` inside the script), so
            hosts with skewed clocks agree. ``False`` sends each client's wall clock instead,
            for managed services that forbid ``TIME`` in scripts; their clocks should then be
            synchronised (NTP) to well under the spacing of sends. Either way the script
            honours no moment later than the host reading it could have written it itself
            (a start at most now, a pause or probe at most its own length from now, the
            reserved slots at most a horizon ahead), so one host whose clock is ahead cannot
            stall the others ("Clocks" in the "Scaling out" page of the docs).

    The repr, and every warning that names the store, show the URL with its secrets as
    ``***``: the userinfo, and the ``username=`` and ``password=`` query parameters.

    Raises:
        ValueError: The URL is not of a scheme above or is malformed (a port that is not a
            number, a Cluster URL with a database, a Sentinel URL without the master's name),
            or the timeout is not a finite number > 0.
    """

    def __init__(
        self,
        redis: str | Redis | RedisCluster,
        *,
        timeout: float = 0.1,
        use_server_time: bool = True,
    ) -> None:
        if isinstance(redis, str):
            if not redis.startswith(SCHEMES):
                raise ValueError(
                    f"throttle_store must be a {', '.join(SCHEMES)} URL, got {masked_url(redis)!r}"
                )
        elif not isinstance(redis, (Redis, RedisCluster)):
            raise ValueError(  # noqa: TRY004 - the constructor raises ValueError
                "throttle_store must be a URL, a redis.asyncio.Redis or a "
                f"redis.asyncio.cluster.RedisCluster, got {type(redis).__name__}"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout must be a finite number > 0, got {timeout!r}")
        if isinstance(redis, str):
            check(redis)
        self._url = redis if isinstance(redis, str) else None
        self._user = None if isinstance(redis, str) else redis
        self.timeout = float(timeout)
        self.use_server_time = bool(use_server_time)
        self._own: Redis | RedisCluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._ending: asyncio.AbstractEventLoop | None = None
        self._discovered: Redis | RedisCluster | None = None

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 0.1, use_server_time: bool = True
    ) -> RedisThrottleStore:
        """The store at ``url`` (see the class for the URL forms)."""
        return cls(url, timeout=timeout, use_server_time=use_server_time)

    def __repr__(self) -> str:
        where = "a client of yours" if self._url is None else masked_url(self._url)
        return f"<RedisThrottleStore {where}>"

    @property
    def discovered(self) -> bool:
        """Whether the client of the running loop is ready: not a Cluster, or one discovered."""
        client = self.client()
        return not isinstance(client, RedisCluster) or client is self._discovered

    async def discover(self) -> None:
        """Learn a Cluster's nodes and slots (``CLUSTER SLOTS``); nothing for one server.

        The client calls it in the background when it opens, so that the discovery is not
        charged to a send's ``timeout``; it is bounded by 5 s instead.

        Raises:
            redis.exceptions.RedisClusterException: No node could be reached.
            redis.exceptions.RedisError: The Cluster could not be discovered.
            OSError: The network failed.
        """
        client = self.client()
        if isinstance(client, RedisCluster):
            await client.initialize()  # again after a failure that made the client forget
            self._discovered = client

    def client(self) -> Redis | RedisCluster:
        """The Redis client to use in the running event loop.

        A client the store makes is closed when its event loop shuts down (``asyncio.run``
        does that), so a loop per call (a Celery task) leaves no connection open behind.
        """
        if self._user is not None:
            return self._user
        loop = asyncio.get_running_loop()
        if self._own is None or self._loop is not loop:
            assert self._url is not None  # noqa: S101 - set when there is no user client
            self._own, closing = client_from_url(self._url, self.timeout)
            self._loop = loop
            self._ending = None
            self._closer = _close_at_shutdown(closing, lambda: setattr(self, "_ending", loop))
        return self._own

    def ending(self) -> bool:
        """Whether the running loop is shutting down the client the store made for it.

        No new work may start in it then: a task started now would be destroyed pending.
        """
        try:
            return self._ending is asyncio.get_running_loop()
        except RuntimeError:
            return True

    async def aclose(self) -> None:
        """Close the connections the store opened itself (never those of a client of yours)."""
        own, self._own = self._own, None
        closer, self._closer = self._closer, None
        if own is not None and self._loop is asyncio.get_running_loop():
            if closer is not None:
                await closer.aclose()  # closes own
            else:  # pragma: no cover - every client the store makes has its closer
                await own.aclose()


def _close_at_shutdown(
    clients: list[Any], ending: Callable[[], None]
) -> AsyncGenerator[None, None]:
    """An async generator the running loop closes at shutdown, closing ``clients``; keep it.

    The loop tracks the async generators started in it and closes them in
    ``shutdown_asyncgens``; this one is started here, up to its ``yield``, without awaiting.
    ``ending`` is called first, as the shutdown begins.
    """

    async def closer() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            ending()
            for client in clients:
                await client.aclose()

    generator = closer()
    with contextlib.suppress(StopIteration):  # the first step stops at the yield
        generator.asend(None).send(None)
    return generator
