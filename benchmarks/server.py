"""A cheap local stand-in for the persona endpoint, used by the benchmark harness.

It runs in its own process so that its CPU time is never charged to the client under test::

    python benchmarks/server.py --port 0            # prints "PORT <n>" once it listens

``POST /api/v1/client/job/suno-persona-generate`` answers like the real API: a unique persona id
in the success envelope, 401 without an ``x-api-key``, 422 for a body that is not a JSON object
with ``task_id``, ``suno_id`` and ``name``. What it refuses, and when, is decided by one of the
limiter models of ``suno_persona.testing._limiters`` (the algorithms are written once, there):
the verdict's status (429, 455) is sent with the JSON error envelope, its ``Retry-After`` in
whole seconds (``retry_after_header``), its RateLimit header fields as they are, and the
answer after the verdict's latency (a concurrency limit keeps the place for that long).

Control endpoints (the harness drives them between runs):

* ``POST /_control/reset?shape=NAME&...`` picks the limiter, ends any maintenance window and
  zeroes the counters. The model is built when the first request arrives (its clock, the wall
  clock, starts there). Shapes and their options (see the models for their meaning):

  - ``token_bucket``: ``rate``, ``burst`` (default 10), ``retry_after``, ``headers``;
  - ``changing``: ``schedule=50:4,10:4,100:4`` (rate:seconds, the last lasting for ever),
    ``burst``, ``retry_after``;
  - ``fixed_window``: ``limit``, ``window`` (default 1), ``retry_after`` (default on),
    ``headers``;
  - ``sliding_log``: ``limit``, ``window``, ``retry_after``;
  - ``denial_counting``: ``limit``, ``window``, ``retry_after`` (seconds sent);
  - ``concurrency``: ``limit``, ``latency`` (default 0.25), ``retry_after`` (seconds sent);
  - ``random``: ``share``, ``retry_after`` (seconds sent), ``seed``;
  - ``slow``: ``latency``; ``none``: accepts everything;
  - ``maintenance``: ``seconds`` of 455 from the first request, ``retry_after``.

  ``latency`` adds to every answer of the models that take it; ``retry_after=1`` turns the
  ``Retry-After`` on (or sends 1 s, for the models that send a fixed value); ``headers=1``
  announces ``RateLimit-Policy``/``RateLimit``. Without ``shape`` the old form still works:
  ``rate=50&burst=10`` is a token bucket (``rate=0``: no limit), ``schedule=...`` a changing
  limit. ``blip_at=2&blip_times=2`` answers the ``blip_times`` requests that arrive after
  ``blip_at`` seconds with 429 and ``Retry-After: 1``, whatever the limiter;
* ``POST /_control/maintenance?seconds=2`` starts a maintenance window now (455 for every
  request, no ``Retry-After``, before the limiter is asked);
* ``GET /_control/stats?requests=N`` returns the counts per status, the times of the 455s
  (seconds after the window started), the server's own CPU time and, with ``requests``, the
  model's ideal time for N requests from the first arrival (``null`` before any).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from aiohttp import web

from suno_persona.testing import _limiters as limiters

ENDPOINT = "/api/v1/client/job/suno-persona-generate"
REQUIRED_FIELDS = ("task_id", "suno_id", "name")
_BLIP = limiters.Verdict(429, retry_after=1.0)
_BAD = {401: limiters.Verdict(401), 422: limiters.Verdict(422)}


def _envelope(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "data": None}).encode()


_REFUSALS = {
    401: ("Unauthorized", _envelope(401, "missing or invalid x-api-key")),
    422: ("Unprocessable Entity", _envelope(422, "request failed validation")),
    429: ("Too Many Requests", _envelope(429, "rate limit exceeded")),
    455: ("Service Under Maintenance", _envelope(455, "service under maintenance")),
}
_SUCCESS = b'{"code":200,"message":"success","data":{"persona_id":"persona_%d"}}'


def _seconds(query: Mapping[str, str]) -> float | None:
    """``retry_after`` for the models that send a fixed number of seconds (absent, 0: none)."""
    value = float(query.get("retry_after", 0))
    return value or None


def _flag(query: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    return query.get(name, "1" if default else "0") not in ("0", "")


def _number(query: Mapping[str, str], name: str, default: float) -> float:
    return float(query.get(name, default))


def _schedule(text: str) -> list[tuple[float, float]]:
    return [
        (float(rate), float(seconds))
        for rate, seconds in (p.split(":") for p in text.split(",") if p)
    ]


Factory = Callable[[Mapping[str, str], float], limiters.Limiter]

# shape -> (query, start) -> model. ``start`` is the first request's arrival.
SHAPES: dict[str, Factory] = {
    "token_bucket": lambda q, _start: limiters.TokenBucket(
        _number(q, "rate", 50), int(_number(q, "burst", 10)), retry_after=_flag(q, "retry_after"),
        headers=_flag(q, "headers"), latency=_number(q, "latency", 0),
    ),
    "changing": lambda q, start: limiters.ChangingLimit(
        _schedule(q["schedule"]), int(_number(q, "burst", 10)), start=start,
        retry_after=_flag(q, "retry_after"),
    ),
    "fixed_window": lambda q, _start: limiters.FixedWindow(
        int(_number(q, "limit", 50)), _number(q, "window", 1), retry_after=_flag(q, "retry_after", default=True),
        headers=_flag(q, "headers"), latency=_number(q, "latency", 0),
    ),
    "sliding_log": lambda q, _start: limiters.SlidingLog(
        int(_number(q, "limit", 50)), _number(q, "window", 1), retry_after=_flag(q, "retry_after"),
        latency=_number(q, "latency", 0),
    ),
    "denial_counting": lambda q, _start: limiters.DenialCounting(
        int(_number(q, "limit", 50)), _number(q, "window", 1), retry_after=_seconds(q),
        latency=_number(q, "latency", 0),
    ),
    "concurrency": lambda q, _start: limiters.ConcurrencyLimit(
        int(_number(q, "limit", 8)), _number(q, "latency", 0.25), retry_after=_seconds(q)
    ),
    "random": lambda q, _start: limiters.RandomRefusals(
        _number(q, "share", 0.3), retry_after=_seconds(q), seed=int(_number(q, "seed", 0)),
        latency=_number(q, "latency", 0),
    ),
    "slow": lambda q, _start: limiters.Slow(_number(q, "latency", 0.2)),
    "none": lambda q, _start: limiters.Slow(_number(q, "latency", 0)),
    "maintenance": lambda q, start: limiters.Maintenance(
        start, _number(q, "seconds", 2), retry_after=_flag(q, "retry_after"),
        latency=_number(q, "latency", 0),
    ),
}  # fmt: skip


def shape_of(query: Mapping[str, str]) -> str:
    """The shape a reset asks for, the old form (``rate``, ``schedule``) included."""
    if "shape" in query:
        return query["shape"]
    if query.get("schedule"):
        return "changing"
    return "token_bucket" if float(query.get("rate", 0)) > 0 else "none"


class ServerState:
    """The limiter model, the maintenance window, the blip and the counters."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, query: Mapping[str, str]) -> None:
        shape = shape_of(query)
        if shape not in SHAPES:
            raise web.HTTPBadRequest(text=f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        self.factory = SHAPES[shape]
        self.query = dict(query)
        self.limiter: limiters.Limiter | None = None
        self.first: float | None = None
        self.blip_at = float(query.get("blip_at", -1))
        self.blip_left = int(query.get("blip_times", 0))
        self.maintenance: limiters.Maintenance | None = None
        self.started = time.time()
        self.counts: Counter[int] = Counter()
        self.times_455: list[float] = []
        self.ids = itertools.count(1)

    def model(self, now: float) -> limiters.Limiter:
        if self.limiter is None:
            self.first = now
            self.limiter = self.factory(self.query, now)
        return self.limiter

    def start_maintenance(self, seconds: float) -> None:
        self.maintenance = limiters.Maintenance(time.time(), seconds)

    def decide(self, api_key: str | None, body: bytes) -> limiters.Verdict:
        now = time.time()
        if not api_key:
            return _BAD[401]
        maintenance = self.maintenance
        if maintenance is not None and now < maintenance.end:
            verdict = maintenance.arrive(now)
        elif not _valid_body(body):
            return _BAD[422]
        elif self.blip_left and now - self.started >= self.blip_at >= 0:
            self.blip_left -= 1
            verdict = _BLIP
        else:
            verdict = self.model(now).arrive(now)
        if verdict.status == 455:
            begin = maintenance.begin if maintenance is not None else (self.first or now)
            self.times_455.append(now - begin)
        return verdict

    def leave(self, verdict: limiters.Verdict) -> None:
        if self.limiter is not None:
            self.limiter.leave(time.time(), verdict)

    def ideal(self, requests: int) -> float | None:
        if self.limiter is None or self.first is None:
            return None
        return self.limiter.ideal(requests, self.first)


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
    verdict = state.decide(request.headers.get("x-api-key"), body)
    state.counts[verdict.status] += 1
    try:
        if verdict.latency:
            await asyncio.sleep(verdict.latency)
    finally:
        state.leave(verdict)
    headers = dict(verdict.headers)
    if verdict.retry_after is not None:
        headers["Retry-After"] = limiters.retry_after_header(verdict.retry_after)
    if verdict.accepted:
        return web.Response(
            body=_SUCCESS % next(state.ids), content_type="application/json", headers=headers
        )
    reason, payload = _REFUSALS[verdict.status]
    return web.Response(
        body=payload,
        status=verdict.status,
        reason=reason,
        content_type="application/json",
        headers=headers,
    )


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset(request.query)
    return web.json_response({"ok": True, "shape": shape_of(request.query)})


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
            "ideal": state.ideal(int(request.query["requests"]))
            if "requests" in request.query
            else None,
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
