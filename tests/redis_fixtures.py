"""A real redis-server for the tests of the shared throttle.

``redis_server`` starts Debian's ``redis-server`` on a free loopback port, without
persistence, once per session. Without the program the tests that use it skip, unless
``SUNO_REQUIRE_REDIS=1`` (set by ``.ci/run``), which makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

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
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.program,
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


def redis_program() -> str:
    """The ``redis-server`` program; the test skips without it (fails with SUNO_REQUIRE_REDIS=1)."""
    program = shutil.which("redis-server")
    if program is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("SUNO_REQUIRE_REDIS") == "1":
            pytest.fail(f"{message}, and SUNO_REQUIRE_REDIS=1")
        pytest.skip(message)
    pytest.importorskip("redis", reason="the redis package is not installed")
    return program


@pytest.fixture(name="redis_server", scope="session")
def _redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(redis_program(), tmp_path_factory.mktemp("redis"))
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
