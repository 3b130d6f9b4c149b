"""Property: whatever a server on 127.0.0.1 answers (status, Retry-After, Content-Length,
Content-Encoding, body), every call ends in a Persona or a SunoPersonaError within its
deadline, and no error, rendered with every frame's locals, shows the key."""

from __future__ import annotations

import asyncio
import json
import time
import traceback

from chaos_server import FAULTS, Exchange, FaultServer
from helpers import FIELDS, fast_retry
from helpers import SECRET_KEY as KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import suno_persona as sp

POLICY = fast_retry(max_delay=0.01, max_attempts=2, deadline=1.0)
BOUND = POLICY.deadline + 1.0  # the deadline, plus generous slack for a busy machine


async def _raw(server: FaultServer, _exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
    """Writes the reply the example drew, then closes the connection."""
    writer.write(server.raw_reply)  # type: ignore[attr-defined]
    await writer.drain()
    return False


FAULTS.setdefault("hypothesis_raw", _raw)

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=30,
)
retry_after = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.sampled_from(["0", "1_000", "+7", "1e3", "-1", "\u0663", "Wed, 21 Oct 2015 07:28:00 GMT"]),
    header_text,
)
content_length = st.one_of(st.integers(min_value=-5, max_value=10**9).map(str), header_text)
content_encoding = st.one_of(
    st.sampled_from(["gzip", "deflate", "br", "identity", "zstd", "gzip, gzip", "x-bogus"]),
    header_text,
)
envelopes = st.builds(
    lambda code, message, persona: json.dumps(
        {"code": code, "message": message, "data": {"persona_id": persona}}
    ).encode(),
    st.one_of(st.sampled_from([200, 401, 422, 429, 455, 500, 501]), st.integers()),
    st.one_of(st.just(f"bad key {KEY}"), st.text(max_size=20)),
    st.one_of(st.just("persona_1"), st.text(max_size=5), st.none()),
)
replies = st.fixed_dictionaries(
    {
        "status": st.one_of(st.sampled_from([200, 401, 429, 455, 500]), st.integers(100, 999)),
        "headers": st.fixed_dictionaries(
            {},
            optional={
                "Retry-After": retry_after,
                "Content-Length": content_length,
                "Content-Encoding": content_encoding,
                "Content-Type": st.just("application/json"),
            },
        ),
        "body": st.one_of(envelopes, st.binary(max_size=200)),
    }
)


def encode(reply: dict) -> bytes:
    head = f"HTTP/1.1 {reply['status']} Whatever\r\n"
    for name, value in reply["headers"].items():
        head += f"{name}: {value}\r\n"
    head += "Connection: close\r\n\r\n"
    return head.encode("utf-8") + reply["body"]


async def outcome(client: sp.AsyncPersonaClient) -> sp.Persona | sp.SunoPersonaError:
    """The call's result or its error (caught here, so its traceback ends in this frame)."""
    try:
        return await client.generate_persona(**FIELDS)
    except sp.SunoPersonaError as error:
        return error


def rendered_with_locals(error: BaseException) -> str:
    exc = traceback.TracebackException.from_exception(error, capture_locals=True)
    return "".join(exc.format())


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(first=replies, second=replies)
async def test_any_reply_ends_in_a_persona_or_our_error_in_time(first, second):
    """Two replies (a call may be retried once): the outcome is typed, timely and keyless."""
    raw = [encode(first), encode(second)]
    async with FaultServer.always("hypothesis_raw") as server:
        server.raw_reply = raw[0]

        def plan(exchange: Exchange) -> str:
            server.raw_reply = raw[min(exchange.number, 2) - 1]
            return "hypothesis_raw"

        server.plan = plan
        async with sp.AsyncPersonaClient(
            KEY, base_url=server.base_url, retry=POLICY, timeout=0.5
        ) as client:
            started = time.monotonic()
            result = await outcome(client)
            took = time.monotonic() - started
    assert took < BOUND
    if isinstance(result, sp.Persona):
        assert result.persona_id
        return
    for text in (str(result), repr(result), rendered_with_locals(result)):
        assert KEY not in text
