"""No error of the client holds the key: not in its text, and not in any frame's locals that a
traceback renderer with ``capture_locals`` (traceback, rich, Sentry) would show."""

from __future__ import annotations

import io
import socket
import traceback

import pytest
from chaos_server import FaultServer
from helpers import FIELDS, fast_retry
from helpers import SECRET_KEY as KEY

import suno_persona as sp

FAST = fast_retry(max_delay=0.05, max_attempts=2)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rendered_with_locals(error: BaseException) -> str:
    """The whole chain, formatted as a locals-capturing renderer would."""
    exc = traceback.TracebackException.from_exception(error, capture_locals=True)
    return "".join(exc.format())


async def failure(base_url: str) -> sp.SunoPersonaError:
    async with sp.AsyncPersonaClient(KEY, base_url=base_url, retry=FAST, timeout=0.5) as client:
        with pytest.raises(sp.SunoPersonaError) as info:
            await client.generate_persona(**FIELDS)
    return info.value


@pytest.mark.parametrize(
    ("fault", "error_cls"),
    [
        ("reset", sp.APIConnectionError),
        ("truncated", sp.APIConnectionError),
        ("stall", sp.APITimeoutError),
        ("bad_status_line", sp.InvalidResponseError),
        ("bad_chunk", sp.SunoPersonaError),
        ("non_utf8", sp.InvalidResponseError),
        ("501", sp.GenerationFailedError),
    ],
)
async def test_no_key_in_the_locals_of_any_error(fault, error_cls):
    """Connection dropped, timeout, malformed reply, API error: rendered with every frame's
    locals, the error shows no key (aiohttp's _request frame held it in ``headers``)."""
    async with FaultServer.always(fault) as server:
        error = await failure(server.base_url)
    assert isinstance(error, error_cls)
    text = rendered_with_locals(error)
    assert "Traceback" in text
    assert KEY not in text


async def test_no_key_in_the_locals_of_a_refused_connection():
    """Connection refused, retried then given up: no key in the rendered locals."""
    error = await failure(f"http://127.0.0.1:{closed_port()}")
    assert isinstance(error, sp.APIConnectionError)
    assert error.sent is False
    assert KEY not in rendered_with_locals(error)


async def test_no_key_in_rich_show_locals():
    """rich's traceback with show_locals, as a CLI or a notebook would print it."""
    rich_console = pytest.importorskip("rich.console")
    rich_traceback = pytest.importorskip("rich.traceback")
    async with FaultServer.always("reset") as server:
        error = await failure(server.base_url)
    console = rich_console.Console(width=200, record=True, file=io.StringIO())
    tb = rich_traceback.Traceback.from_exception(
        type(error), error, error.__traceback__, show_locals=True
    )
    console.print(tb)
    assert KEY not in console.export_text()


async def test_a_reply_that_echoes_the_key_is_redacted(server):
    """A 401 whose message quotes the key keeps its text, with the key replaced by ***."""
    server.script.append((401, {"code": 401, "message": f"invalid key {KEY}!", "data": None}))
    async with sp.AsyncPersonaClient(KEY, base_url=server.base_url) as client:
        with pytest.raises(sp.AuthenticationError) as info:
            await client.generate_persona(**FIELDS)
    error = info.value
    assert error.message == "invalid key ***!"
    for text in (str(error), repr(error), repr(error.args), rendered_with_locals(error)):
        assert KEY not in text


async def test_a_reply_that_echoes_the_key_in_an_invalid_response_is_redacted(server):
    """The key is redacted from every message the client stores, whatever the error."""
    server.script.append((418, {"code": 418, "message": f"{KEY} / {KEY}", "data": None}))
    async with sp.AsyncPersonaClient(KEY, base_url=server.base_url) as client:
        with pytest.raises(sp.APIError) as info:
            await client.generate_persona(**FIELDS)
    assert info.value.message == "*** / ***"
