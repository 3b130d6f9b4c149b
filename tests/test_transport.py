"""Unit tests of the client's transport with aioresponses: what goes out, what comes back."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses
from helpers import FIELDS, client_for
from multidict import CIMultiDict, CIMultiDictProxy

import suno_persona as sp
from suno_persona import _transport

BASE = "https://api.example.test"
URL = BASE + "/api/v1/client/job/suno-persona-generate"
OK = {"code": 200, "message": "success", "data": {"persona_id": "persona_1"}}


@pytest.fixture(name="mocked")
def _mocked():
    """aioresponses as docs/testing.md says to use it ("Mocking the HTTP layer")."""
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture(name="client")
async def _client(fake_time):
    client = client_for(BASE, fake_time, key="sk-secret-key")
    yield client
    await client.close()


async def test_sends_the_documented_request(mocked, client):
    """One POST with the key in x-api-key, JSON body, User-Agent, redirects not followed."""
    mocked.post(URL, payload=OK)
    persona = await client.generate_persona(**FIELDS)
    assert persona.persona_id == "persona_1"
    ((method, url), calls) = next(iter(mocked.requests.items()))
    assert (method, str(url)) == ("POST", URL)
    kwargs = calls[0].kwargs
    assert kwargs["headers"]["x-api-key"] == "sk-secret-key"
    assert "Authorization" not in kwargs["headers"]
    assert kwargs["headers"]["User-Agent"].startswith("suno-persona/")
    assert kwargs["allow_redirects"] is False
    assert json.loads(kwargs["data"]) == FIELDS


async def test_request_object_and_keywords_are_equivalent(mocked, client):
    """A PersonaRequest and keyword fields send the same body."""
    mocked.post(URL, payload=OK, repeat=True)
    a = await client.generate_persona(sp.PersonaRequest(**FIELDS))
    b = await client.generate_persona(**FIELDS)
    assert a == b


async def test_both_request_and_fields_is_a_type_error(client):
    """Passing a request and fields together is a programming error."""
    with pytest.raises(TypeError):
        await client.generate_persona(sp.PersonaRequest(**FIELDS), name="x")


async def test_invalid_request_costs_no_request(mocked, client):
    """Validation fails before any I/O."""
    with pytest.raises(sp.RequestValidationError, match="name: must be at most 100"):
        await client.generate_persona(**{**FIELDS, "name": "n" * 101})
    assert mocked.requests == {}


async def test_429_then_success_counts_attempts(mocked, client, fake_time):
    """A 429 is retried after a backoff on the injected clock."""
    mocked.post(URL, status=429, payload={"code": 429, "message": "slow", "data": None})
    mocked.post(URL, payload=OK)
    persona = await client.generate_persona(**FIELDS)
    assert persona.persona_id == "persona_1"
    assert sum(len(calls) for calls in mocked.requests.values()) == 2
    # The retry's backoff is jittered; the gate may add the rest of its own pacing
    # interval as a second, shorter sleep. Both are on the injected clock.
    assert 1 <= len(fake_time.sleeps) <= 2
    assert fake_time.sleeps[0] > 0


async def test_exhausted_retries_report_attempts(mocked, client):
    """The last error carries how many attempts were made."""
    mocked.post(
        URL, status=200, payload={"code": 455, "message": "maint", "data": None}, repeat=True
    )
    with pytest.raises(sp.ServiceUnavailableError) as info:
        await client.generate_persona(**FIELDS)
    assert info.value.attempts == 5
    assert info.value.retryable is True
    assert info.value.message == "maint"


async def test_non_retryable_error_reports_one_attempt(mocked, client):
    """A 501 fails after one attempt, marked not retryable."""
    mocked.post(URL, status=501, payload={"code": 501, "message": "generation failed"})
    with pytest.raises(sp.GenerationFailedError) as info:
        await client.generate_persona(**FIELDS)
    assert (info.value.attempts, info.value.retryable) == (1, False)


async def test_connection_refused_is_retried_as_unsent(mocked, client):
    """A connection that could not be opened is retried, since nothing was sent."""
    key = aiohttp.client_reqrep.ConnectionKey("api.example.test", 443, True, None, None, None, None)
    refused = aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))
    mocked.post(URL, exception=refused)
    mocked.post(URL, payload=OK)
    persona = await client.generate_persona(**FIELDS)
    assert persona.persona_id == "persona_1"


async def test_connection_broken_after_sending_is_not_retried(mocked, client):
    """A connection that broke mid-exchange may have created the persona: not retried."""
    mocked.post(URL, exception=aiohttp.ServerDisconnectedError())
    mocked.post(URL, payload=OK)
    with pytest.raises(sp.APIConnectionError) as info:
        await client.generate_persona(**FIELDS)
    assert info.value.sent is True
    assert info.value.attempts == 1
    assert "ServerDisconnectedError" in info.value.message
    assert info.value.__cause__ is None


async def test_timeout_is_an_api_timeout_error(mocked, client):
    """A timeout becomes APITimeoutError naming the original, not retried by default."""
    mocked.post(URL, exception=asyncio.TimeoutError())
    mocked.post(URL, payload=OK)
    with pytest.raises(sp.APITimeoutError) as info:
        await client.generate_persona(**FIELDS)
    assert info.value.attempts == 1
    assert "TimeoutError" in info.value.message
    assert info.value.__cause__ is None


async def test_timeout_is_retried_when_opted_in(mocked, fake_time):
    """retry_server_errors=True retries a timeout."""
    mocked.post(URL, exception=asyncio.TimeoutError())
    mocked.post(URL, payload=OK)
    policy = sp.RetryPolicy(retry_server_errors=True)
    async with sp.AsyncPersonaClient("k", base_url=BASE, retry=policy) as client:
        client._sleep = fake_time.sleep
        assert (await client.generate_persona(**FIELDS)).persona_id == "persona_1"


async def test_html_gateway_page_is_decided_by_status(mocked, client):
    """A non-JSON 429 page is a rate limit and is retried."""
    mocked.post(URL, status=429, body="<html>rate limited</html>", content_type="text/html")
    mocked.post(URL, payload=OK)
    assert (await client.generate_persona(**FIELDS)).persona_id == "persona_1"


async def test_retry_after_header_reaches_the_sleep(mocked, client, fake_time):
    """A Retry-After header sets the delay."""
    mocked.post(
        URL, status=429, payload={"code": 429, "message": "x"}, headers={"Retry-After": "3"}
    )
    mocked.post(URL, payload=OK)
    await client.generate_persona(**FIELDS)
    assert sum(fake_time.sleeps) == pytest.approx(3.0)


async def test_undecodable_body_is_invalid_response(mocked, client):
    """Bytes that are not UTF-8 never escape as a UnicodeDecodeError."""
    mocked.post(URL, status=200, body=b"\xff\xfe\xfd")
    with pytest.raises(sp.InvalidResponseError):
        await client.generate_persona(**FIELDS)


async def test_no_key_in_any_error_text(mocked, client):
    """Neither str nor repr of an error mentions the key."""
    mocked.post(URL, status=401, payload={"code": 401, "message": "bad key"})
    with pytest.raises(sp.AuthenticationError) as info:
        await client.generate_persona(**FIELDS)
    for text in (str(info.value), repr(info.value), repr(client)):
        assert "sk-secret-key" not in text


async def test_uses_a_session_passed_in_and_leaves_it_open(mocked):
    """A user's session is used and never closed by the client."""
    mocked.post(URL, payload=OK)
    async with aiohttp.ClientSession() as session:
        async with sp.AsyncPersonaClient("k", base_url=BASE, session=session) as client:
            await client.generate_persona(**FIELDS)
        assert not session.closed
    assert len(mocked.requests) == 1


async def test_base_url_path_prefix_is_kept(mocked):
    """A base URL with a path (a proxy) keeps its prefix; a trailing slash is dropped."""
    mocked.post(re.compile(r"https://proxy\.test/suno/api/v1/client/job/.*"), payload=OK)
    async with sp.AsyncPersonaClient("k", base_url="https://proxy.test/suno/") as client:
        assert client.base_url == "https://proxy.test/suno"
        await client.generate_persona(**FIELDS)


# -- issue 10: the one place where foreign exceptions become ours ----------------------------


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return sorted(set(found), key=lambda c: (c.__module__, c.__qualname__))


def _instance(cls: type[aiohttp.ClientError]) -> aiohttp.ClientError:
    """An instance of any aiohttp.ClientError subclass, whatever its constructor wants."""
    key = aiohttp.client_reqrep.ConnectionKey("api.example.test", 443, True, None, None, None, None)
    info = aiohttp.RequestInfo(
        yarl.URL(URL), "POST", CIMultiDictProxy(CIMultiDict({"x-api-key": "sk-secret-key"}))
    )
    attempts = [
        (),
        ("reason",),
        (key, OSError(111, "refused")),
        (key, OSError(111, "refused"), "fingerprint"),
        ("/run/api.sock", key, OSError(111, "refused")),
        (info, ()),
        (yarl.URL(URL),),
        (b"expected", b"got", "host", 443),
        (info, (), "", {}),
    ]
    for args in attempts:
        try:
            error = cls(*args)
            str(error)
        except Exception:  # noqa: S112 - trying the next constructor
            continue
        return error
    raise AssertionError(f"no recipe to build {cls!r}: add one above")


CLIENT_ERRORS = [aiohttp.ClientError, *_subclasses(aiohttp.ClientError)]


@pytest.mark.parametrize("cls", CLIENT_ERRORS, ids=lambda c: c.__qualname__)
def test_every_aiohttp_client_error_becomes_one_of_ours(cls):
    """Each aiohttp.ClientError subclass (walked, not listed) maps to a SunoPersonaError that
    names it, holds no key, and chains nothing."""
    error = _instance(cls)
    ours = _transport.translate(error)
    assert isinstance(ours, sp.SunoPersonaError)
    assert type(ours) is not sp.SunoPersonaError, "a client error is a connection or reply fault"
    assert "sk-secret-key" not in f"{ours!s} {ours!r}"
    assert (ours.__cause__, ours.__context__) == (None, None)


def test_known_client_errors_map_to_their_kind():
    """Connect failures are unsent; timeouts are timeouts; a malformed reply is invalid."""
    key = aiohttp.client_reqrep.ConnectionKey("api.example.test", 443, True, None, None, None, None)
    refused = _transport.translate(aiohttp.ClientConnectorError(key, OSError(111, "refused")))
    assert type(refused) is sp.APIConnectionError
    assert refused.sent is False
    connect_timeout = _transport.translate(aiohttp.ConnectionTimeoutError("slow"))
    assert type(connect_timeout) is sp.APITimeoutError
    assert connect_timeout.sent is False
    assert type(_transport.translate(asyncio.TimeoutError())) is sp.APITimeoutError
    assert type(_transport.translate(aiohttp.SocketTimeoutError())) is sp.APITimeoutError
    assert type(_transport.translate(aiohttp.ServerDisconnectedError())) is sp.APIConnectionError
    info = aiohttp.RequestInfo(yarl.URL(URL), "POST", CIMultiDictProxy(CIMultiDict()))
    bad = _transport.translate(aiohttp.ClientResponseError(info, (), status=0, message="bad"))
    assert type(bad) is sp.InvalidResponseError


def test_a_foreign_non_client_error_is_ours_too():
    """Anything else the exchange raises is still a SunoPersonaError, naming the original."""
    ours = _transport.translate(RuntimeError("boom"))
    assert type(ours) is sp.SunoPersonaError
    assert "RuntimeError: boom" in ours.message
    closed = _transport.translate(RuntimeError("Session is closed"), session_closed=True)
    assert "closed while the call was in flight" in closed.message


async def test_a_mapping_with_keyword_fields_names_both_forms(client):
    """The refusal names the mapping form too, not only PersonaRequest."""
    with pytest.raises(TypeError, match="a mapping of its fields"):
        await client.generate_persona(FIELDS, name="x")
