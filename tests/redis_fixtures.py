"""Real redis-servers for the tests of the shared throttle.

``redis_server`` starts Debian's ``redis-server`` on a free loopback port, without
persistence, once per session. Without the program the tests that use it skip, unless
``SUNO_REQUIRE_REDIS=1`` (set by ``.ci/run``), which makes them fail instead
(:func:`redis_program`). :class:`ClusterServers` and :class:`SentinelGroup` are the
deployments of ``test_redis_cluster.py`` and ``test_redis_sentinel.py``, started by their
module's fixture. :func:`make_state`, :func:`cut_to` and :func:`share_a_cut` are shared by
the tests of the store on those deployments.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; it can be killed and started again on the same port.

    ``options`` are added to its command line (``"--requirepass", "..."``).
    """

    def __init__(self, program: str, workdir: Path, *options: str) -> None:
        self.program = program
        self.workdir = workdir
        self.options = options
        self.program_args: tuple[str, ...] = ()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.program,
                *self.program_args,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:  # noqa: PERF203 - polling until the server listens
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def command(self, *words: str) -> bytes:
        """Send one command (inline form) and return the first line of the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall((" ".join(words) + "\r\n").encode())
            return sock.recv(65536)


def redis_program(name: str = "redis-server") -> str:
    """The path of ``name`` (of Debian's redis-server package); skip or fail without it."""
    program = shutil.which(name)
    if program is None:
        message = f"{name} is not installed (apt-get install redis-server)"
        if os.environ.get("SUNO_REQUIRE_REDIS") == "1":
            pytest.fail(f"{message}, and SUNO_REQUIRE_REDIS=1")
        pytest.skip(message)
    pytest.importorskip("redis", reason="the redis package is not installed")
    return program


def wait_until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.02)


class ClusterServers:
    """Three masters without replicas on free ports, made one Cluster by ``redis-cli``."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        program = redis_program()
        self.cli = redis_program("redis-cli")
        self.nodes = [RedisServer(program, workdir) for _ in range(masters)]
        for node in self.nodes:
            # the bus port is given: the default, port + 10000, may be out of range or taken
            node.options = ("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                            "--cluster-config-file", f"nodes-{node.port}.conf")  # fmt: skip

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [self.cli, "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        for node in self.nodes:
            wait_until(lambda node=node: b"cluster_state:ok" in node.command("CLUSTER", "INFO"),
                       "the Cluster's state to be ok")  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def owner(self, key: str) -> RedisServer:
        """The node that holds ``key``'s slot (the others answer ``MOVED``)."""
        for node in self.nodes:
            if not node.command("EXISTS", key).startswith(b"-MOVED"):
                return node
        raise AssertionError(f"no node holds {key}")  # pragma: no cover


class SentinelGroup:
    """A master, one replica, and three Sentinels that promote the replica about 2 s after
    the master dies."""

    NAME = "suno"

    def __init__(self, workdir: Path) -> None:
        program = redis_program()
        self.master = RedisServer(program, workdir)
        self.replica = RedisServer(program, workdir, "--replicaof", "127.0.0.1", "0")
        self.sentinels = [RedisServer(program, workdir) for _ in range(3)]
        self.workdir = workdir

    def start(self) -> None:
        self.master.start()
        self.replica.options = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        # A Sentinel reconnects to an instance once a second: a shorter down-after flags the
        # promoted replica down before it has reconnected, and redis-py refuses such a master.
        for sentinel in self.sentinels:
            config = self.workdir / f"sentinel-{sentinel.port}.conf"
            config.write_text(
                f"sentinel monitor {self.NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} 1000\n"
                f"sentinel failover-timeout {self.NAME} 1000\n"
            )
            sentinel.options = ("--sentinel",)
            sentinel.program_args = (str(config),)
            sentinel.start()
        for sentinel in self.sentinels:
            wait_until(lambda sentinel=sentinel: self._ready(sentinel), "the Sentinels to meet")

    def _ready(self, sentinel: RedisServer) -> bool:
        reply = sentinel.command("SENTINEL", "MASTER", self.NAME).decode(errors="replace")
        fields = reply.split("\r\n")
        values = dict(zip(fields[2::4], fields[4::4], strict=False))
        return values.get("num-slaves") == "1" and values.get("num-other-sentinels") == "2"

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.stop()


KEY = "sk-redis-deployment-0123456789"
BASE = "http://127.0.0.1:9"


def make_state(store: Any) -> Any:
    """A :class:`RedisState` on ``store`` (which it closes), as a client of ``BASE`` makes."""
    from suno_persona._redis_state import RedisState  # noqa: PLC0415 - needs the redis extra
    from suno_persona._throttle import ThrottlePolicy  # noqa: PLC0415 - beside it

    return RedisState(
        store,
        ThrottlePolicy(probe_initial=0.0),
        base_url=BASE,
        api_key=KEY,
        max_pause=10.0,
        probe_lease=5.0,
        emit=lambda _: None,
        owns_store=True,
    )


def cut_to(state: Any, now: float) -> None:
    """Report enough 429s among answers that the state cuts its rate at its next call."""
    from suno_persona._throttle import Answer  # noqa: PLC0415 - a helper of the Redis tests

    for _ in range(20):
        state.report(Answer.ACCEPTED, None, now=now, sent_at=now - 1, probe=False)
    for _ in range(5):
        state.report(Answer.REFUSED, None, now=now, sent_at=now - 1, probe=False)


async def share_a_cut(one: Any, other: Any) -> list[float]:
    """``one`` cuts the rate, ``other`` sees the cut, and the two reserve slots in turn.

    Returns when each of the four may send: each further out than the last (a slot that is
    already due, on a loaded machine, is a "go" at the time of asking).
    """
    now = time.monotonic()
    cut_to(one, now)
    await one._call("flush", now, 0.0, "")
    rate = one.rate(now)
    assert rate is not None
    await other.admit(time.monotonic(), 10.0, None)
    assert other.rate(now) == pytest.approx(rate, rel=0.2)
    ats = []
    for state in (one, other, one, other):
        asked = time.monotonic()
        decision = await state.admit(asked, 10.0, None)
        ats.append(max(decision.at, asked))
    assert ats == sorted(ats)
    return ats


def running(deployment: Any) -> Any:
    """A module fixture's body: ``deployment`` started, then stopped after the module."""
    deployment.start()
    yield deployment
    deployment.stop()


@pytest.fixture(name="redis_server", scope="session")
def _redis_server(tmp_path_factory: pytest.TempPathFactory):
    program = redis_program()
    server = RedisServer(program, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(name="redis_url")
def _redis_url(redis_server: RedisServer) -> str:
    """The server's URL, emptied before the test (and started again if a test killed it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.command("FLUSHALL")
    return redis_server.url
