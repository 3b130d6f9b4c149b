"""A cheap local stand-in for the persona endpoint, used by the benchmark harness.

It runs in its own process so that its CPU time is never charged to the client under test::

    python benchmarks/server.py --port 0            # prints "PORT <n>" once it listens

``POST /api/v1/client/job/suno-persona-generate`` answers like the real API: a unique persona id
in the success envelope, 401 without an ``x-api-key``, 422 for a body that is not a JSON object
with ``task_id``, ``suno_id`` and ``name``. Two kinds of refusal can be switched on, both sent
with the JSON error envelope, the HTTP status equal to the code, and never a ``Retry-After``:

* 429 from a token bucket (``rate`` tokens per second, ``burst`` capacity, full after a reset);
* 455 for every request during a maintenance window (the rate limit is not consulted then).

Control endpoints (the harness drives them between runs):

* ``POST /_control/reset?rate=50&burst=10`` sets the limit (``rate=0``: unlimited), refills the
  bucket, ends any maintenance window and zeroes the counters. More options of the same call:
  ``retry_after=1`` sends ``Retry-After`` with each 429 (the wait for a token, rounded up to
  whole seconds, at least 1, as gateways do); ``latency=0.2`` delays every answer;
  ``schedule=50:4,10:4,100:4`` makes the limit change over time (rate:seconds, the last one
  lasting for ever, counted from the reset); ``blip_at=2&blip_times=2`` answers the
  ``blip_times`` requests that arrive after ``blip_at`` seconds with 429 and ``Retry-After: 1``;
* ``POST /_control/maintenance?seconds=2`` starts a maintenance window now;
* ``GET /_control/stats`` returns the counts per status, the times of the 455s (seconds after the
  window started) and the server's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import socket
import sys
import threading
import time
from collections import Counter

from aiohttp import web

ENDPOINT = "/api/v1/client/job/suno-persona-generate"
REQUIRED_FIELDS = ("task_id", "suno_id", "name")


def _envelope(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "data": None}).encode()


_REFUSALS = {
    401: ("Unauthorized", _envelope(401, "missing or invalid x-api-key")),
    422: ("Unprocessable Entity", _envelope(422, "request failed validation")),
    429: ("Too Many Requests", _envelope(429, "rate limit exceeded")),
    455: ("Service Under Maintenance", _envelope(455, "service under maintenance")),
}
_SUCCESS = b'{"code":200,"message":"success","data":{"persona_id":"persona_%d"}}'


class ServerState:
    """The token bucket, the maintenance window and the counters."""

    def __init__(self) -> None:
        self.reset(rate=0.0, burst=1)

    def reset(
        self,
        *,
        rate: float,
        burst: int,
        retry_after: bool = False,
        latency: float = 0.0,
        schedule: list[tuple[float, float]] | None = None,
        blip_at: float = -1.0,
        blip_times: int = 0,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.retry_after = retry_after
        self.latency = latency
        self.schedule = schedule or []
        self.blip_at = blip_at
        self.blip_left = blip_times
        self.started = time.monotonic()
        self.tokens = float(self.burst)
        self.refilled_at = time.monotonic()
        self.window_start = 0.0
        self.window_end = 0.0
        self.counts: Counter[int] = Counter()
        self.times_455: list[float] = []
        self.ids = itertools.count(1)

    def start_maintenance(self, seconds: float) -> None:
        self.window_start = time.monotonic()
        self.window_end = self.window_start + seconds

    def current_rate(self, now: float) -> float:
        elapsed = now - self.started
        for seconds, rate in self.schedule:
            if elapsed < seconds:
                return rate
            elapsed -= seconds
        return self.schedule[-1][1] if self.schedule else self.rate

    def take_token(self, now: float) -> bool:
        if self.schedule:
            self.rate = self.current_rate(now)
        if self.rate <= 0:
            return True
        elapsed = now - self.refilled_at
        self.refilled_at = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def decide(self, api_key: str | None, body: bytes) -> int:
        now = time.monotonic()
        if not api_key:
            return 401
        if now < self.window_end:
            self.times_455.append(now - self.window_start)
            return 455
        if not _valid_body(body):
            return 422
        if self.blip_left and now - self.started >= self.blip_at >= 0:
            self.blip_left -= 1
            return 429
        if not self.take_token(now):
            return 429
        return 200

    def wait_for_token(self) -> int:
        """The whole seconds until the bucket has a token again, at least 1."""
        missing = max(0.0, 1.0 - self.tokens)
        return max(1, math.ceil(missing / self.rate)) if self.rate > 0 else 1


def _valid_body(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and all(
        isinstance(payload.get(name), str) and payload[name] for name in REQUIRED_FIELDS
    )


STATE = web.AppKey("state", ServerState)


async def generate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.read()
    status = state.decide(request.headers.get("x-api-key"), body)
    state.counts[status] += 1
    if state.latency:
        await asyncio.sleep(state.latency)
    if status == 200:
        return web.Response(body=_SUCCESS % next(state.ids), content_type="application/json")
    reason, payload = _REFUSALS[status]
    headers = {}
    if status == 429 and (state.retry_after or state.blip_at >= 0):
        headers["Retry-After"] = str(state.wait_for_token())
    return web.Response(
        body=payload, status=status, reason=reason, content_type="application/json", headers=headers
    )


async def control_reset(request: web.Request) -> web.Response:
    query = request.query
    schedule = [
        (float(seconds), float(rate))
        for rate, seconds in (
            part.split(":") for part in query.get("schedule", "").split(",") if part
        )
    ]
    request.app[STATE].reset(
        rate=float(query.get("rate", 0)),
        burst=int(query.get("burst", 1)),
        retry_after=query.get("retry_after", "0") == "1",
        latency=float(query.get("latency", 0)),
        schedule=schedule,
        blip_at=float(query.get("blip_at", -1)),
        blip_times=int(query.get("blip_times", 0)),
    )
    return web.json_response({"ok": True})


async def control_maintenance(request: web.Request) -> web.Response:
    seconds = float(request.query.get("seconds", 2))
    request.app[STATE].start_maintenance(seconds)
    return web.json_response({"ok": True, "seconds": seconds})


async def control_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "counts": {str(code): n for code, n in sorted(state.counts.items())},
            "total": sum(state.counts.values()),
            "times_455": state.times_455,
            "server_cpu": time.process_time(),
        }
    )


def make_app() -> web.Application:
    app = web.Application()
    app[STATE] = ServerState()
    app.router.add_post(ENDPOINT, generate)
    app.router.add_post("/_control/reset", control_reset)
    app.router.add_post("/_control/maintenance", control_maintenance)
    app.router.add_get("/_control/stats", control_stats)
    return app


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop the server when stdin closes, so it never outlives the harness that started it."""
    with contextlib.suppress(Exception):
        sys.stdin.buffer.read()
    loop.call_soon_threadsafe(stop.set)


async def serve(host: str, port: int, *, watch_stdin: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    if watch_stdin:
        loop = asyncio.get_running_loop()
        threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin closes (used by the harness)"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, watch_stdin=args.watch_stdin))


if __name__ == "__main__":
    main()
