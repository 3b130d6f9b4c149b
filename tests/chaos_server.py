"""A raw HTTP/1.1 server on 127.0.0.1 that injects the network faults aiohttp.web cannot.

Each request is answered by the fault that ``plan(exchange)`` names, from :data:`FAULTS`:
well-formed replies (a success whose persona id is ``persona_<suno_id>``, error envelopes),
and broken ones (a reset, a half-sent header, a body that drips or never ends). Connections
are kept alive between well-formed replies, as a real server would.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

FLOOD_BYTES = 50 * 1024 * 1024
_CHUNK = 64 * 1024
_ENVELOPE_HEADERS = "Content-Type: application/json\r\n"


@attrs.frozen
class Exchange:
    """One request as the server read it.

    Attributes:
        number: 1-based order of arrival across the server.
        attempt: 1-based count of requests seen so far for this ``suno_id``.
        headers: The request headers, names lower-cased.
        body: The raw body.
        suno_id: The ``suno_id`` of the JSON body, ``""`` when there is none.
    """

    number: int
    attempt: int
    headers: dict[str, str]
    body: bytes
    suno_id: str


Fault = Callable[["FaultServer", Exchange, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one exchange; returns whether the connection may serve another request."""


def _reply(status: int, reason: str, body: bytes, headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode("latin-1") + body


def _envelope(code: int, message: str, data: object = None) -> bytes:
    return json.dumps({"code": code, "message": message, "data": data}).encode()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _ok(_server: FaultServer, exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
    body = _envelope(200, "success", {"persona_id": f"persona_{exchange.suno_id}"})
    await _send(writer, _reply(200, "OK", body, _ENVELOPE_HEADERS))
    return True


def _code(status: int, *, retry_after: bool = False) -> Fault:
    async def answer(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
        headers = _ENVELOPE_HEADERS + ("Retry-After: 0\r\n" if retry_after else "")
        await _send(w, _reply(status, "Scripted", _envelope(status, f"code {status}"), headers))
        return True

    return answer


async def _reset(_server: FaultServer, _exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
    """Close abruptly after reading the request: SO_LINGER 0 makes the close send RST."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


async def _half_headers(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    await _send(w, b"HTTP/1.1 200 OK\r\nContent-Type: appli")
    return False


async def _no_reply(_server: FaultServer, _exchange: Exchange, _w: asyncio.StreamWriter) -> bool:
    return False


async def _stall(_server: FaultServer, _exchange: Exchange, _w: asyncio.StreamWriter) -> bool:
    await asyncio.Event().wait()
    return False  # pragma: no cover - cancelled when the server stops


async def _drip(server: FaultServer, _exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
    """Complete headers, then one byte of body every ``drip_interval`` seconds, forever."""
    await _send(writer, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    await _send(writer, b"Transfer-Encoding: chunked\r\n\r\n")
    while True:
        await asyncio.sleep(server.drip_interval)
        await _send(writer, b"1\r\n \r\n")
        server.dripped += 1


async def _drip_headers(server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    """A status line, then one more header line every ``drip_interval`` seconds, forever."""
    await _send(w, b"HTTP/1.1 200 OK\r\n")
    while True:
        await asyncio.sleep(server.drip_interval)
        await _send(w, b"X-Drip: 1\r\n")
        server.dripped += 1


async def _truncated(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    body = _envelope(200, "success", {"persona_id": "persona_cut"})
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) + 100}\r\n\r\n"
    await _send(w, head.encode() + body[:10])
    return False


async def _non_utf8(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    await _send(w, _reply(200, "OK", b'\xff\xfe{"code": 200, \xc3\x28}', _ENVELOPE_HEADERS))
    return True


async def _html(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    await _send(w, _reply(502, "Bad Gateway", page, "Content-Type: text/html\r\n"))
    return True


async def _unknown_code(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    await _send(w, _reply(200, "OK", _envelope(418, "a teapot"), _ENVELOPE_HEADERS))
    return True


def _raw(data: bytes) -> Fault:
    """Send ``data`` as the whole reply, then close."""

    async def answer(_server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
        await _send(w, data)
        return False

    return answer


async def _redirect(server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    location = f"Location: {server.location}\r\n"
    await _send(w, _reply(server.redirect_status, "Moved", b"", location))
    return True


async def _stream(server: FaultServer, writer: asyncio.StreamWriter, head: bytes, *, chunked: bool):
    """Send ``head`` then up to FLOOD_BYTES of body; record how much went out before a close."""
    sent = 0
    chunk = b"x" * _CHUNK
    frame = f"{_CHUNK:x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    try:
        await _send(writer, head)
        while sent < FLOOD_BYTES:
            await _send(writer, frame)
            sent += _CHUNK
    except ConnectionError:
        pass
    finally:
        server.flood_sent.append(sent)
    return False


async def _flood(server: FaultServer, _exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return await _stream(server, writer, head, chunked=True)


async def _declared_huge(server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {FLOOD_BYTES}\r\n\r\n".encode()
    return await _stream(server, w, head, chunked=False)


@functools.cache
def gzip_bomb(size: int) -> bytes:
    """A gzip body that inflates to a success envelope padded to ``size`` bytes (cached)."""
    padding = b" " * size
    inflated = b'{"code": 200, "message": "success",' + padding + b'"data": {"persona_id": "p_1"}}'
    return gzip.compress(inflated, compresslevel=9)


async def _gzip_bomb(server: FaultServer, _exchange: Exchange, w: asyncio.StreamWriter) -> bool:
    """A small gzip body, honestly declared, that inflates to ``server.bomb_size`` bytes."""
    body = gzip_bomb(server.bomb_size)
    await _send(w, _reply(200, "OK", body, "Content-Encoding: gzip\r\n" + _ENVELOPE_HEADERS))
    return True


FAULTS: dict[str, Fault] = {
    "ok": _ok,
    "429": _code(429, retry_after=True),
    "455": _code(455, retry_after=True),
    "500": _code(500),
    "501": _code(501),
    "505": _code(505),
    "reset": _reset,
    "half_headers": _half_headers,
    "no_reply": _no_reply,
    "stall": _stall,
    "drip": _drip,
    "drip_headers": _drip_headers,
    "truncated": _truncated,
    "non_utf8": _non_utf8,
    "html": _html,
    "unknown_code": _unknown_code,
    "bad_status_line": _raw(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"),
    "bad_chunk": _raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"),
    "redirect": _redirect,
    "flood": _flood,
    "declared_huge": _declared_huge,
    "gzip_bomb": _gzip_bomb,
}


class FaultServer:
    """A raw asyncio server on 127.0.0.1 that answers each request with a planned fault.

    Use as ``async with FaultServer(plan) as server``; ``plan`` maps an :class:`Exchange`
    to a key of :data:`FAULTS` (or use :meth:`always`). Stopping it cancels every
    connection's handler and closes every socket.

    Attributes:
        exchanges: Every request read, in order of arrival.
        flood_sent: Body bytes each ``flood``/``declared_huge`` reply sent before the
            client closed the connection (or all of them).
        dripped: Bytes (or header lines) all ``drip`` replies have sent so far.
        location: Where ``redirect`` points.
        redirect_status: The status ``redirect`` answers with.
        drip_interval: Seconds between two bytes of a ``drip`` body.
        bomb_size: Inflated size of a ``gzip_bomb`` body.
    """

    def __init__(self, plan: Callable[[Exchange], str]) -> None:
        self.plan = plan
        self.exchanges: list[Exchange] = []
        self.flood_sent: list[int] = []
        self.dripped = 0
        self.location = "http://localhost:9/elsewhere"
        self.redirect_status = 307
        self.drip_interval = 0.1
        self.bomb_size = 50 * 1024 * 1024
        self._attempts: Counter[str] = Counter()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.base_url = ""

    @classmethod
    def always(cls, fault: str) -> FaultServer:
        """A server that answers every request with ``fault``."""
        if fault not in FAULTS:
            raise KeyError(fault)
        return cls(lambda _exchange: fault)

    async def __aenter__(self) -> FaultServer:  # noqa: PYI034 - no typing.Self in 3.10
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            keep_alive = True
            while keep_alive:
                exchange = await self._read(reader)
                if exchange is None:
                    break
                keep_alive = await FAULTS[self.plan(exchange)](self, exchange, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # A broken connection ends the exchange; so does stopping the server, and the
            # handler then returns normally (asyncio 3.11 logs a handler task that ends
            # cancelled as an unhandled exception).
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Exchange | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {}
        for line in lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        suno_id = _suno_id(body)
        self._attempts[suno_id] += 1
        exchange = Exchange(
            number=len(self.exchanges) + 1,
            attempt=self._attempts[suno_id],
            headers=headers,
            body=body,
            suno_id=suno_id,
        )
        self.exchanges.append(exchange)
        return exchange


def _suno_id(body: bytes) -> str:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return ""
    value = data.get("suno_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
