"""A client belongs to the loop it is used in: it follows a script's sequential
``asyncio.run`` calls, and refuses, with our error, a loop other than its live one."""

from __future__ import annotations

import asyncio
import gc
import http.server
import json
import threading
import warnings

import aiohttp
import pytest
from helpers import FIELDS
from helpers import SECRET_KEY as KEY

import suno_persona as sp


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every POST with a success; keeps the connection alive (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    keep_alive = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"code": 200, "message": "success", "data": {"persona_id": "p_1"}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if not self.keep_alive:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: object) -> None:
        pass


class _Closing(_Handler):
    keep_alive = False


def _serve(handler: type[_Handler]):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(name="base_url")
def _base_url():
    server, thread = _serve(_Handler)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(name="closing_base_url")
def _closing_base_url():
    server, thread = _serve(_Closing)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


async def _burst(client: sp.AsyncPersonaClient, count: int = 4) -> list[str]:
    personas = await asyncio.gather(*(client.generate_persona(**FIELDS) for _ in range(count)))
    return [persona.persona_id for persona in personas]


def test_a_client_built_at_import_time_serves_two_asyncio_runs(base_url):
    """The second asyncio.run used to raise RuntimeError('Event loop is closed'). Now the
    client rebinds: a fresh session, fresh throttle primitives (max_concurrency=1 makes
    calls wait on them), and nothing of the first loop left open or warned about."""
    client = sp.AsyncPersonaClient(KEY, base_url=base_url, max_concurrency=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(_burst(client)) == ["p_1"] * 4
        assert asyncio.run(_burst(client)) == ["p_1"] * 4
        asyncio.run(client.close())
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert client.closed


def test_a_loop_closed_without_asyncio_run_is_left_behind_quietly(closing_base_url):
    """A loop closed by hand (no shutdown_asyncgens): the next loop still gets a working
    client, and the rebinding raises nothing."""
    client = sp.AsyncPersonaClient(KEY, base_url=closing_base_url)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(_burst(client, 1)) == ["p_1"]
    finally:
        loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(_burst(client, 2)) == ["p_1"] * 2
        asyncio.run(client.close())
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_a_client_in_use_by_another_running_loop_is_refused(base_url):
    """One client used from two threads' loops used to raise RuntimeError ('bound to a
    different event loop'); now a SunoPersonaError saying one client per event loop."""
    client = sp.AsyncPersonaClient(KEY, base_url=base_url)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        done = asyncio.run_coroutine_threadsafe(_burst(client, 1), other)
        assert done.result(timeout=10) == ["p_1"]
        with pytest.raises(sp.SunoPersonaError, match="one client per event loop"):
            asyncio.run(client.generate_persona(**FIELDS))
        asyncio.run_coroutine_threadsafe(client.close(), other).result(timeout=10)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()


def test_a_session_of_another_loop_is_refused(base_url):
    """A session passed in belongs to its loop: using the client elsewhere says so."""

    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = asyncio.run(make_session())
    client = sp.AsyncPersonaClient(KEY, base_url=base_url, session=session)
    with pytest.raises(sp.SunoPersonaError, match="session passed to the client belongs"):
        asyncio.run(client.generate_persona(**FIELDS))
    asyncio.run(client.close())
    asyncio.run(session.close())
    assert session.closed


async def test_the_session_is_closed_when_its_loop_shuts_down(base_url):
    """Closing the client closes its session and the shutdown watcher, in its own loop."""
    client = sp.AsyncPersonaClient(KEY, base_url=base_url)
    await client.generate_persona(**FIELDS)
    session = client._session
    assert session is not None
    await client.close()
    assert session.closed
    assert client._watcher is None


def test_a_with_options_client_follows_its_parent_to_a_new_loop(base_url):
    """A client made by with_options uses its parent's current session: after the parent
    rebinds to the next asyncio.run, the child sends through the new session, and closing
    the parent in the last loop leaves nothing open or warned about."""
    parent = sp.AsyncPersonaClient(KEY, base_url=base_url)
    child = parent.with_options(timeout=5)
    sessions = []

    async def through_child() -> list[str]:
        ids = await _burst(child, 2)
        sessions.append(parent._session)
        assert await child._ensure_open() is parent._session
        return ids

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(through_child()) == ["p_1"] * 2
        assert asyncio.run(through_child()) == ["p_1"] * 2
        asyncio.run(parent.close())
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert sessions[0] is not sessions[1]
    assert child.closed
