"""Shared fixtures: a fake clock, and a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from redis_fixtures import _redis_server, _redis_url  # noqa: F401 - fixtures of the Redis tests

ENDPOINT = "/api/v1/client/job/suno-persona-generate"

# A user's project with tests of its own, run by test_user_project.py in a subprocess.
collect_ignore = ["user_project"]


class FakeTime:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(name="fake_time")
def _fake_time() -> FakeTime:
    return FakeTime()


def envelope(code: int, message: str = "msg", persona_id: str | None = None) -> dict[str, Any]:
    data = {"persona_id": persona_id} if persona_id is not None else None
    return {"code": code, "message": message, "data": data}


Reply = web.StreamResponse | tuple[int, Any] | tuple[int, Any, dict[str, str]]


class ScriptedServer:
    """A real aiohttp.web server on 127.0.0.1 that answers from a script.

    ``script`` is a list of replies consumed one per request; when it runs out, every
    request succeeds. A reply is ``(status, body)`` or ``(status, body, headers)``
    (a dict body is sent as JSON, bytes as they are), or a callable taking the request.
    """

    def __init__(self) -> None:
        self.script: list[Reply | Callable[[web.Request], Any]] = []
        self.seen: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.counter = 0
        self.got_request = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            raw = await request.read()
            self.seen.append({"headers": dict(request.headers), "body": raw, "path": request.path})
            self.got_request.set()
            if self.script:
                reply = self.script.pop(0)
                if callable(reply):
                    result = reply(request)
                    if asyncio.iscoroutine(result):
                        result = await result
                    reply = result
                if isinstance(reply, web.StreamResponse):
                    return reply
                status, body, *rest = reply
                headers = rest[0] if rest else {}
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                return web.Response(status=status, body=data, headers=headers, reason="Scripted")
            self.counter += 1
            return web.json_response(envelope(200, "success", f"persona_{self.counter}"))
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(name="server")
async def _server():
    server = ScriptedServer()
    await server.start()
    yield server
    await server.stop()
