"""The aiohttp edge: one HTTP exchange, its capped read, and its failures made ours.

This is the one place (besides the emulator) where aiohttp and asyncio exceptions become
:class:`SunoPersonaError`. Ours are raised with no ``__cause__`` and no ``__context__``:
a chained aiohttp traceback holds frames whose locals include the request's headers, and
with them the API key, which anything that renders locals (``traceback`` with
``capture_locals``, rich, Sentry) would show. The useful text of the original is kept in
our message instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs

from suno_persona._errors import (
    APIConnectionError,
    APITimeoutError,
    InvalidResponseError,
    SunoPersonaError,
)
from suno_persona._protocol import PreparedRequest

__all__ = ["MAX_BODY_BYTES", "attempt_timeout", "read_capped", "send", "translate"]

MAX_BODY_BYTES = 1024 * 1024
_CONNECT_SHARE = 0.9
_CHUNK = 64 * 1024


async def send(
    session: aiohttp.ClientSession,
    url: str,
    prepared: PreparedRequest,
    timeout: float | None,
) -> tuple[int, Mapping[str, str], bytes]:
    """One HTTP exchange; every failure comes out as one of our errors.

    ``timeout`` bounds the whole exchange, body included; ``None`` leaves the session's.
    """
    options: dict[str, Any] = {}
    if timeout is not None:
        options["timeout"] = attempt_timeout(session.timeout, timeout)
    try:
        async with session.request(
            prepared.method,
            url,
            data=prepared.body,
            headers=prepared.headers,
            allow_redirects=False,
            **options,
        ) as response:
            body = await read_capped(response)
            return response.status, response.headers, body
    except SunoPersonaError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes ours, below
        failure = translate(error, session_closed=session.closed)
    # Raised outside the handler, so that nothing chains the original and its frames.
    raise failure


def translate(  # noqa: PLR0911 - one return per kind, most specific first
    error: Exception, *, session_closed: bool = False
) -> SunoPersonaError:
    """The error of ours that stands for a foreign ``error`` of an exchange.

    Args:
        error: What aiohttp or asyncio raised.
        session_closed: Whether the session was closed by then (the client was closed
            while the call was in flight).
    """
    kind = type(error).__name__
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"timed out connecting: {kind}: {error}", sent=False)
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return APITimeoutError(f"no complete reply within the attempt's timeout ({kind})")
    if isinstance(error, aiohttp.ClientConnectorError):
        return APIConnectionError(f"could not connect: {error.strerror or error}", sent=False)
    if isinstance(error, aiohttp.ClientResponseError):
        return InvalidResponseError(
            f"malformed reply: {kind}: {error.message}", http_status=error.status
        )
    if isinstance(error, aiohttp.ClientError):
        return APIConnectionError(f"connection failed: {kind}: {error}")
    if session_closed:
        return SunoPersonaError("the client was closed while the call was in flight")
    return SunoPersonaError(f"the HTTP exchange failed unexpectedly: {kind}: {error}")


async def read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The reply's body, refused once it exceeds :data:`MAX_BODY_BYTES` (after inflating)."""
    declared = response.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise InvalidResponseError(
            f"reply body of {declared} bytes exceeds the {MAX_BODY_BYTES}-byte cap",
            http_status=response.status,
        )
    if declared is not None and "Content-Encoding" not in response.headers:
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(_CHUNK):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidResponseError(
                f"reply body exceeds the {MAX_BODY_BYTES}-byte cap", http_status=response.status
            )
        chunks.append(chunk)
    return b"".join(chunks)


def attempt_timeout(base: aiohttp.ClientTimeout, total: float) -> aiohttp.ClientTimeout:
    """``base`` bounded to ``total`` seconds, the connect phase to 90% of them.

    When connecting takes that long, aiohttp raises its connect timeout, which tells us
    nothing was sent (so the attempt may be retried); the total timeout could not tell.
    """
    connect = _CONNECT_SHARE * total
    if base.sock_connect is not None:
        connect = min(connect, base.sock_connect)
    return attrs.evolve(base, total=total, sock_connect=connect)
