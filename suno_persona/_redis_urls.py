"""The Redis clients that store URLs describe: one server, a Cluster, or a Sentinel-managed master.

============================================================  ==============================
``redis://``, ``rediss://`` (TLS), ``unix://``                 one server (redis-py's forms)
``redis+cluster://[auth@]host:port[,host:port...]``            a Redis Cluster: the nodes to
                                                               discover it from (TLS:
                                                               ``rediss+cluster://``)
``redis+sentinel://[auth@]host:port[,host:port...]/name[/db]`` the master that the Sentinels
                                                               at those addresses call
                                                               ``name`` (TLS:
                                                               ``rediss+sentinel://``)
============================================================  ==============================

The deployment is in the scheme (the form of the ``limits`` library), not in a query
parameter: a ``redis://`` URL always means one server, so a Cluster node's URL is never
taken for the whole Cluster (or the other way round) by a parameter left out, and redis-py,
which passes every query parameter to its connections, is never given one of ours.

Every client made here has socket timeouts of the store's timeout and no retries of its own:
the store decides when to try again.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

__all__ = ["check", "client_from_url"]

_CLUSTER_PORT = 6379
_SENTINEL_PORT = 26379


def check(url: str) -> None:
    """Refuse a malformed Cluster or Sentinel URL at once, rather than at its first use.

    Raises:
        ValueError: A port that is not a number, a Cluster URL with a database other than 0,
            a Sentinel URL without the master's name.
    """
    if _kind(url):
        _parts(url)


def client_from_url(url: str, timeout: float) -> tuple[Redis | RedisCluster, list[Any]]:
    """The client of ``url`` (a URL :func:`check` accepts), and every object to ``aclose()``."""
    sockets: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    no_retries: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
    kind = _kind(url)
    if not kind:
        client = Redis.from_url(url, **sockets, **no_retries, retry_on_timeout=False)
        return client, [client]
    tls, userinfo, nodes, path, query = _parts(url)
    if kind == "cluster":
        (host, port), *others = nodes
        cluster = RedisCluster.from_url(
            f"{'rediss' if tls else 'redis'}://{userinfo}{_netloc(host, port)}{query}",
            startup_nodes=[ClusterNode(name, number) for name, number in others],
            **sockets,
            **no_retries,
        )
        return cluster, [cluster]
    name, _, db = path.partition("/")
    options: dict[str, Any] = dict(parse_url(f"redis://{userinfo}localhost/{db}{query}"))
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    ssl: dict[str, Any] = {"ssl": True} if tls else {}
    sentinel = Sentinel(nodes, sentinel_kwargs={**sockets, **ssl})  # type: ignore[no-untyped-call,unused-ignore]
    master = sentinel.master_for(
        name, **options, **sockets, **ssl, **no_retries, retry_on_timeout=False
    )
    return master, [master, *sentinel.sentinels]


def _kind(url: str) -> str:
    """``"cluster"``, ``"sentinel"``, or ``""`` for one server."""
    return url.partition("://")[0].partition("+")[2]


def _parts(url: str) -> tuple[bool, str, list[tuple[str, int]], str, str]:
    """A Cluster or Sentinel URL taken apart, and checked.

    Returns TLS or not, ``userinfo@`` (or ``""``), the hosts, the path (without the slashes
    around it) and ``?query`` (or ``""``).
    """
    kind = _kind(url)
    port = _CLUSTER_PORT if kind == "cluster" else _SENTINEL_PORT
    userinfo, nodes, path, query = _split(url, port)
    path = path.strip("/")
    if kind == "cluster" and path not in {"", "0"}:
        raise ValueError(f"a Redis Cluster has database 0 only, got the path {path!r}")
    if kind == "sentinel" and not path.partition("/")[0]:
        raise ValueError("a redis+sentinel:// URL needs the master's name: .../<name>[/<db>]")
    return url.startswith("rediss+"), userinfo, nodes, path, query


def _split(url: str, default_port: int) -> tuple[str, list[tuple[str, int]], str, str]:
    """``scheme://[userinfo@]host[:port][,host[:port]...][/path][?query]``, taken apart.

    Returns ``userinfo@`` (or ``""``), the hosts, the path and ``?query`` (or ``""``).
    """
    rest = url.partition("://")[2]
    rest, mark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    nodes = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon or "]" in port:
            name, port = host, str(default_port)
        if not port.isdigit():
            raise ValueError(f"the port of {name.strip('[]')!r} must be a number, got {port!r}")
        nodes.append((name.strip("[]") or "localhost", int(port)))
    return userinfo + at, nodes, slash + path, mark + query


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
