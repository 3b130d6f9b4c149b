"""The frameworks, for real: the docs' apps served by uvicorn, gunicorn, arq and Celery.

Each test writes one ``<!-- module: name -->`` block of the docs as ``name.py`` (its
``redis://localhost:6379`` pointed at the suite's redis-server), starts the framework's own
command on 127.0.0.1 in a subprocess with ``SUNO_API_KEY`` and ``SUNO_API_BASE_URL`` set to an
emulator, drives it, and checks what the emulator saw and that the framework's log holds no
traceback and no warning. The frameworks come with the ``integration`` extra; ``.ci/run``
installs it in a venv of its own and sets ``SUNO_REQUIRE_INTEGRATION=1``, which makes a
missing framework fail these tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from redis_fixtures import free_port
from test_docs import _environment, module_blocks
from threaded_emulator import ThreadedEmulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
SONG = {"suno_id": "suno_1", "name": "Neon Siren"}


def _installed(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def need(*modules: str) -> None:
    """Skip (or fail, with SUNO_REQUIRE_INTEGRATION=1) unless the frameworks are installed."""
    missing = [name for name in modules if not _installed(name)]
    if missing:
        message = f"not installed: {', '.join(missing)} (pip install -e '.[integration]')"
        if os.environ.get("SUNO_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"{message}, and SUNO_REQUIRE_INTEGRATION=1")
        pytest.skip(message)


def doc_module(name: str, directory: Path, redis_url: str) -> Path:
    """Write the docs' module block ``name`` as ``directory/name.py``, on the test's Redis."""
    server = redis_url.rsplit("/", 1)[0]
    code = module_blocks()[name].code.replace("redis://localhost:6379", server)
    path = directory / f"{name}.py"
    path.write_text(code, encoding="utf-8")
    return path


class Served:
    """A framework's command, run in ``directory`` against the emulator, logging to a file."""

    def __init__(self, argv: list[str], directory: Path, emu: ThreadedEmulator, **env: str):
        self.log = directory / "server.log"
        self.env = _environment(
            SUNO_API_KEY="sk-test",
            SUNO_API_BASE_URL=emu.base_url,
            PYTHONPATH=str(directory),
            PYTHONWARNINGS="default",
            **env,
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_port(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.text()
            try:
                with socket_to(port):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"nothing listens on {port}:\n{self.text()}")

    def stop(self) -> str:
        """Stop it as a process manager does (SIGTERM, then SIGKILL); its log."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.text()


def socket_to(port: int):
    import socket  # noqa: PLC0415 - only the port probe needs it

    return socket.create_connection(("127.0.0.1", port), timeout=0.2)


def assert_clean(log: str) -> None:
    """No traceback, nothing left unclosed, no warning of ours (the frameworks' own, such as
    Celery's SecurityWarning for a worker run as root, are theirs)."""
    assert "Traceback" not in log, log
    assert "ResourceWarning" not in log, log
    assert "nclosed" not in log, log
    warnings = [line for line in log.splitlines() if "Warning" in line]
    assert not [line for line in warnings if "suno_persona" in line], log


@pytest.fixture(name="emulators")
def _emulators() -> Iterator[list[ThreadedEmulator]]:
    made: list[ThreadedEmulator] = []
    yield made
    for emu in made:
        emu.stop()


def emulator(made: list[ThreadedEmulator], **options: object) -> ThreadedEmulator:
    emu = ThreadedEmulator(**options)
    made.append(emu)
    return emu


async def post_many(url: str, count: int, concurrency: int, prefix: str) -> list[int]:
    """POST ``count`` songs to ``url``, ``concurrency`` at a time; the status codes."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, n: int) -> int:
        async with gate, session.post(url, json={"task_id": f"{prefix}_{n}", **SONG}) as reply:
            await reply.read()
            return reply.status

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session, n) for n in range(count))))


async def post(url: str, task_id: str) -> tuple[int, dict[str, str], dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"task_id": task_id, **SONG}) as reply,
    ):
        return reply.status, dict(reply.headers), await reply.json()


def test_fastapi_under_gunicorn_and_uvicorn_workers(emulators, redis_url, tmp_path):
    """Two uvicorn workers under gunicorn, one client each in the lifespan, one store: 150
    requests 30 at a time all succeed, with few 429s."""
    need("fastapi", "uvicorn", "uvicorn_worker", "gunicorn")
    emu = emulator(emulators, rate_limit=100)
    doc_module("fastapi_app", tmp_path, redis_url)
    port = free_port()
    server = Served(
        [
            str(BIN / "gunicorn"),
            "fastapi_app:app",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
        ],
        tmp_path,
        emu,
    )
    url = f"http://127.0.0.1:{port}/personas"
    try:
        server.wait_for_port(port)
        codes = asyncio.run(post_many(url, 150, 30, "load"))
        assert codes == [201] * 150
        refused = emu.codes().count(429)
        assert refused <= 0.25 * 150, refused

    finally:
        log = server.stop()
    assert_clean(log)


def test_fastapi_under_uvicorn_answers_503_with_retry_after(emulators, redis_url, tmp_path):
    """`uvicorn fastapi_app:app`: an error with retry_after answers 503 + Retry-After, the
    deadline spent unsent (APITimeoutError, sent=False) included; a bad request 422."""
    need("fastapi", "uvicorn")
    emu = emulator(emulators)
    doc_module("fastapi_app", tmp_path, redis_url)
    port = free_port()
    server = Served(
        [str(BIN / "uvicorn"), "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        emu,
    )
    url = f"http://127.0.0.1:{port}/personas"
    try:
        server.wait_for_port(port)
        # A Retry-After beyond the 20 s deadline: the call that got it fails, and the next
        # one, held by the pause, gives up unsent (APITimeoutError, sent=False).
        emu.do(lambda: emu.emulator.fail_next(429, retry_after=25))
        first = asyncio.run(post(url, "limited_1"))
        time.sleep(0.1)  # the 429 reaches the store with the next script call, or 10 ms later
        second = asyncio.run(post(url, "limited_2"))
        # (With a store, the call that got the 429 gives up unsent too: the retry it would
        # send waits for the shared pause, past the deadline.)
        assert (first[0], first[1]["Retry-After"]) == (503, "25")
        assert first[2]["type"] in {"RateLimitError", "APITimeoutError"}
        assert (second[0], second[2]["type"]) == (503, "APITimeoutError")
        assert 20 <= int(second[1]["Retry-After"]) <= 25

        async def invalid() -> tuple[int, object]:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, json={"task_id": "t", "suno_id": "s", "name": ""}) as reply,
            ):
                return reply.status, (await reply.json())["field"]

        assert asyncio.run(invalid()) == (422, "name")

    finally:
        log = server.stop()
    assert_clean(log)


def test_flask_threads_on_one_persona_client(emulators, tmp_path):
    """Flask under gunicorn's threaded worker, the app loaded before the fork (--preload):
    200 requests 16 at a time go through one PersonaClient; all succeed, few 429s."""
    need("flask", "gunicorn")
    emu = emulator(emulators, rate_limit=100)
    doc_module("flask_app", tmp_path, "redis://unused:6379/0")
    port = free_port()
    server = Served(
        [
            str(BIN / "gunicorn"),
            "flask_app:app",
            "--preload",
            "--worker-class",
            "gthread",
            "--threads",
            "16",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
        ],
        tmp_path,
        emu,
    )
    try:
        server.wait_for_port(port)
        codes = asyncio.run(post_many(f"http://127.0.0.1:{port}/personas", 200, 16, "flask"))
        assert codes == [201] * 200
        sent = emu.codes()
        assert sent.count(200) == 200
        # v0.2's throttle kept this under 0.10 per request; the one re-founded in issue 19
        # measures 0.12-0.13 here (its first tests of the limit at start-up), a gap stated
        # in its notes. This line guards against worse.
        assert sent.count(429) <= 0.20 * 200, sent.count(429)
        status, _, body = asyncio.run(post(f"http://127.0.0.1:{port}/personas", ""))
        assert (status, body["field"]) == (422, "task_id")
    finally:
        log = server.stop()
    assert_clean(log)


def test_arq_worker_with_the_store(emulators, redis_url, tmp_path):
    """Jobs queued in Redis, run by `arq --burst` with the docs' WorkerSettings: one persona
    each, the client opened on startup and closed on shutdown."""
    need("arq")
    emu = emulator(emulators)
    doc_module("arq_app", tmp_path, redis_url)
    sys.path.insert(0, str(tmp_path))
    try:
        from arq import create_pool  # noqa: PLC0415 - the integration extra
        from arq_app import WorkerSettings  # noqa: PLC0415 - written by this test
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("arq_app", None)

    async def enqueue() -> list[str]:
        pool = await create_pool(WorkerSettings.redis_settings)
        try:
            jobs = [
                await pool.enqueue_job("make_persona", f"task_{n}", "suno_1", f"Singer {n}")
                for n in range(20)
            ]
            return [job.job_id for job in jobs if job is not None]
        finally:
            await pool.aclose()

    assert len(asyncio.run(enqueue())) == 20
    worker = Served([str(BIN / "arq"), "arq_app.WorkerSettings", "--burst"], tmp_path, emu)
    try:
        assert worker.process.wait(timeout=60) == 0, worker.text()
    finally:
        log = worker.stop()
    assert len(emu.do(lambda: dict(emu.emulator.personas))) == 20
    assert_clean(log)


CELERY_PRODUCER = """\
from celery_app import app, make_persona, personas

results = [make_persona.delay(f"task_{n}", "suno_1", f"Singer {n}") for n in range(20)]
print(*(result.get(timeout=60) for result in results))
personas.close()
app.close()
"""


@pytest.mark.parametrize("store", [True, False], ids=["with-store", "without-store"])
def test_celery_worker_with_a_redis_broker(emulators, redis_server, redis_url, tmp_path, store):
    """A prefork Celery worker (2 processes) on the docs' app: 20 tasks sent through Redis
    each return a persona id, with the shared store and without it."""
    need("celery", "kombu")
    emu = emulator(emulators)
    doc_module("celery_app", tmp_path, redis_url)
    env = {"SUNO_THROTTLE_STORE": redis_url} if store else {}
    worker = Served(
        [
            str(BIN / "celery"),
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        tmp_path,
        emu,
        **env,
    )
    # The producer, as an app would be: a process that sends the tasks and waits for them.
    producer = tmp_path / "producer.py"
    producer.write_text(CELERY_PRODUCER, encoding="utf-8")
    try:
        sent = subprocess.run(
            [sys.executable, str(producer)],
            cwd=tmp_path,
            env=worker.env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        log = worker.stop()
    assert sent.returncode == 0, sent.stdout + sent.stderr + log
    ids = sent.stdout.split()
    assert len(set(ids)) == 20
    assert all(persona_id.startswith("persona_") for persona_id in ids)
    shared = redis_server.command("KEYS", "suno_persona:*")
    assert (shared != b"*0\r\n") is store, shared
    assert_clean(log)


def test_the_commands_are_installed_where_the_tests_look():
    """The framework commands come from this interpreter's venv, not from PATH."""
    need("gunicorn", "arq", "celery")
    for command in ("gunicorn", "arq", "celery"):
        assert (BIN / command).exists(), shutil.which(command)
