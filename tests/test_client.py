"""Integration tests: the client against real aiohttp.web servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import socket

import aiohttp
import helpers
import pytest
from aiohttp import web
from helpers import FAST, FIELDS, KEY

import suno_persona as sp
from suno_persona.testing import PersonaEmulator

CODES = {
    401: sp.AuthenticationError,
    402: sp.InsufficientCreditsError,
    404: sp.NotFoundError,
    422: sp.UnprocessableEntityError,
    429: sp.RateLimitError,
    455: sp.ServiceUnavailableError,
    500: sp.ServerError,
    501: sp.GenerationFailedError,
    505: sp.FeatureDisabledError,
}


@pytest.fixture(name="error_mode", params=["http-status", "body-code"])
def _error_mode(request):
    return request.param == "http-status"


@pytest.fixture(name="emu")
async def _emu(error_mode):
    async with PersonaEmulator(errors_in_http_status=error_mode) as emulator:
        yield emulator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop(holder: list[object]) -> None:
    holder.clear()
    gc.collect()


client_for = functools.partial(helpers.client_for, retry=FAST)


class TestAgainstTheEmulator:
    async def test_creates_a_persona(self, emu):
        """A valid request creates a persona the emulator knows, in both error modes."""
        async with client_for(emu.base_url) as client:
            persona = await client.generate_persona(**FIELDS, vocal_start=1, vocal_end=2.5)
        assert persona.persona_id in emu.personas
        assert emu.personas[persona.persona_id] == persona.request
        assert emu.requests[0].json == {**FIELDS, "vocal_start": 1, "vocal_end": 2.5}

    @pytest.mark.parametrize(("code", "error_cls"), CODES.items())
    async def test_each_error_code_maps_to_its_class(self, emu, error_mode, code, error_cls):
        """Each code maps to its class whether it arrives as the status or only in the body."""
        emu.fail_next(code, "the API's own words", times=10, retry_after=0)
        async with client_for(emu.base_url, retry=sp.RetryPolicy(max_attempts=1)) as client:
            with pytest.raises(error_cls) as info:
                await client.generate_persona(**FIELDS)
        error = info.value
        assert (error.code, error.message, error.attempts) == (code, "the API's own words", 1)
        assert error.http_status == (code if error_mode else 200)

    async def test_rate_limit_is_retried_to_success(self, emu):
        """Two 429s then success: three requests, one persona."""
        emu.fail_next(429, times=2, retry_after=0)
        async with client_for(emu.base_url) as client:
            persona = await client.generate_persona(**FIELDS)
        assert [r.code for r in emu.requests] == [429, 429, 200]
        assert persona.persona_id in emu.personas

    async def test_maintenance_is_retried_to_success(self, emu):
        """A 455 then success."""
        emu.fail_next(455, retry_after=0)
        async with client_for(emu.base_url) as client:
            await client.generate_persona(**FIELDS)
        assert [r.code for r in emu.requests] == [455, 200]

    @pytest.mark.parametrize("code", [500, 501, 505])
    async def test_server_failures_are_not_retried_by_default(self, emu, code):
        """500, 501 and 505 cost one request and fail."""
        emu.fail_next(code)
        async with client_for(emu.base_url) as client:
            with pytest.raises(sp.APIError):
                await client.generate_persona(**FIELDS)
        assert len(emu.requests) == 1

    async def test_500_is_retried_when_opted_in(self, emu):
        """retry_server_errors=True retries a 500."""
        emu.fail_next(500)
        policy = sp.RetryPolicy(initial_delay=0.001, retry_server_errors=True)
        async with client_for(emu.base_url, retry=policy) as client:
            await client.generate_persona(**FIELDS)
        assert [r.code for r in emu.requests] == [500, 200]

    async def test_retry_after_above_max_delay_fails_at_once(self, emu):
        """A Retry-After longer than max_delay fails at once with the hint set."""
        emu.fail_next(429, retry_after=60)
        async with client_for(emu.base_url, retry=sp.RetryPolicy(max_delay=30)) as client:
            with pytest.raises(sp.RateLimitError) as info:
                await client.generate_persona(**FIELDS)
        assert info.value.retry_after == 60
        assert info.value.attempts == 1
        assert len(emu.requests) == 1

    async def test_wrong_key_is_an_authentication_error(self, emu):
        """An unknown key gets 401, never retried."""
        async with sp.AsyncPersonaClient("sk-wrong", base_url=emu.base_url) as client:
            with pytest.raises(sp.AuthenticationError):
                await client.generate_persona(**FIELDS)
        assert len(emu.requests) == 1

    async def test_key_never_recorded_nor_logged(self, emu, caplog):
        """At DEBUG, through retries and errors, the key is in no log record nor record."""
        caplog.set_level(logging.DEBUG)
        emu.fail_next(429, times=2, retry_after=0)
        emu.fail_next(501)
        async with client_for(emu.base_url) as client:
            with pytest.raises(sp.GenerationFailedError) as info:
                await client.generate_persona(**FIELDS)
        texts = [r.getMessage() for r in caplog.records] + [repr(emu.requests)]
        texts += [str(info.value), repr(info.value), repr(client)]
        assert not [t for t in texts if KEY in t]
        assert any("attempt 3" in r.getMessage() for r in caplog.records)

    async def test_credits_run_out(self, emu):
        """An account without credits gets InsufficientCreditsError."""
        emu.credits = 0
        async with client_for(emu.base_url) as client:
            with pytest.raises(sp.InsufficientCreditsError):
                await client.generate_persona(**FIELDS)

    async def test_many_tasks_share_one_client(self, emu):
        """Fifty concurrent tasks on one client all succeed, with distinct personas."""
        async with client_for(emu.base_url) as client:
            personas = await asyncio.gather(
                *(client.generate_persona(**{**FIELDS, "suno_id": f"s{i}"}) for i in range(50))
            )
        assert len({p.persona_id for p in personas}) == 50


class TestLifecycle:
    def test_built_outside_a_loop(self):
        """A client can be built with no running loop and used inside one later."""
        port = free_port()
        client = sp.AsyncPersonaClient(KEY, base_url=f"http://127.0.0.1:{port}")

        async def use():
            async with PersonaEmulator(port=port), client:
                return await client.generate_persona(**FIELDS)

        assert asyncio.run(use()).persona_id.startswith("persona_")

    async def test_session_is_created_once_and_reused(self, server):
        """Every call uses the same lazily created session."""
        client = client_for(server.base_url)
        assert client._session is None
        await client.generate_persona(**FIELDS)
        session = client._session
        await client.generate_persona(**FIELDS)
        assert client._session is session
        await client.close()
        assert session.closed

    async def test_close_twice_and_use_after_close(self, server):
        """close() is idempotent, and a closed client refuses work clearly."""
        client = client_for(server.base_url)
        await client.generate_persona(**FIELDS)
        await client.close()
        await client.close()
        assert client.closed
        with pytest.raises(sp.SunoPersonaError, match="closed"):
            await client.generate_persona(**FIELDS)

    @pytest.mark.parametrize("own_session", [True, False], ids=["own session", "your session"])
    async def test_every_request_carries_the_headers(self, own_session):
        """The client's own session sends the headers with every request itself; a session
        of yours is left as it was, and they go with each request instead."""
        wanted = {
            "x-api-key": "<redacted>",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"suno-persona/{sp.__version__}",
        }
        async with PersonaEmulator() as emu, aiohttp.ClientSession() as session:
            options = {} if own_session else {"session": session}
            async with client_for(emu.base_url, **options) as client:
                await client.generate_many([{**FIELDS, "task_id": f"t{i}"} for i in range(3)])
                with_options = client.with_options(timeout=5)
                await with_options.generate_persona(**FIELDS)
            assert "x-api-key" not in session.headers
        assert len(emu.requests) == 4
        for request in emu.requests:
            assert {name: request.headers.get(name) for name in wanted} == wanted
            assert request.code == 200

    async def test_user_session_is_never_closed(self, server):
        """A session passed in stays open after the client closes."""
        async with aiohttp.ClientSession() as session:
            async with client_for(server.base_url, session=session) as client:
                await client.generate_persona(**FIELDS)
            assert not session.closed

    def test_unclosed_client_warns(self):
        """A client dropped with its session open gives a ResourceWarning, not silence."""

        async def leak():
            async with PersonaEmulator() as emu:
                client = client_for(emu.base_url)
                await client.generate_persona(**FIELDS)
                session = client._session
                holder = [client]
                del client
                with pytest.warns(ResourceWarning, match="Unclosed AsyncPersonaClient"):
                    drop(holder)
                await session.close()

        asyncio.run(leak())


class TestConfiguration:
    def test_no_key_names_the_variable(self, monkeypatch):
        """Without a key anywhere, the error names SUNO_API_KEY."""
        monkeypatch.delenv("SUNO_API_KEY", raising=False)
        with pytest.raises(sp.SunoPersonaError, match="SUNO_API_KEY"):
            sp.AsyncPersonaClient()

    def test_key_and_base_url_from_the_environment(self, monkeypatch):
        """SUNO_API_KEY and SUNO_API_BASE_URL are the fallbacks."""
        monkeypatch.setenv("SUNO_API_KEY", "sk-env")
        monkeypatch.setenv("SUNO_API_BASE_URL", "http://127.0.0.1:9/")
        client = sp.AsyncPersonaClient()
        assert client._api_key == "sk-env"
        assert client.base_url == "http://127.0.0.1:9"

    def test_default_base_url(self, monkeypatch):
        """Without SUNO_API_BASE_URL the provider's URL is used."""
        monkeypatch.delenv("SUNO_API_BASE_URL", raising=False)
        assert sp.AsyncPersonaClient("k").base_url == "https://api.crun.ai"

    @pytest.mark.parametrize("key", ["", "   ", "sk-\n-evil", "sk-\x00"])
    def test_bad_keys_are_refused(self, key):
        """Empty keys and keys with control characters are refused before any I/O."""
        with pytest.raises(sp.SunoPersonaError, match="API key"):
            sp.AsyncPersonaClient(key)

    @pytest.mark.parametrize(
        "url", ["http://api.crun.ai", "http://10.0.0.5:8080", "http://example.test/x"]
    )
    def test_plain_http_to_a_remote_host_is_refused(self, url):
        """Plain http off loopback would send the key in clear: refused unless opted in."""
        with pytest.raises(sp.SunoPersonaError, match="allow_insecure_http"):
            sp.AsyncPersonaClient("k", base_url=url)
        assert sp.AsyncPersonaClient("k", base_url=url, allow_insecure_http=True)

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:1", "http://127.8.9.10", "http://[::1]:80", "http://localhost"]
    )
    def test_plain_http_to_loopback_is_fine(self, url):
        """Loopback hosts may use plain http."""
        assert sp.AsyncPersonaClient("k", base_url=url).base_url == url

    @pytest.mark.parametrize("url", ["ftp://host", "api.crun.ai", "https://"])
    def test_nonsense_base_urls_are_refused(self, url):
        """A base URL must be http(s) with a host."""
        with pytest.raises(sp.SunoPersonaError, match="base_url"):
            sp.AsyncPersonaClient("k", base_url=url)

    @pytest.mark.parametrize(
        "options",
        [{"timeout": 0}, {"timeout": -1}, {"max_concurrency": 0}, {"max_concurrency": 2.5}],
    )
    def test_bad_options_are_refused(self, options):
        """Nonsense options fail at construction."""
        with pytest.raises(ValueError):
            sp.AsyncPersonaClient("k", **options)

    def test_repr_hides_the_key(self):
        """repr(client) never shows the key."""
        assert "sk-very-secret" not in repr(sp.AsyncPersonaClient("sk-very-secret"))


class TestFaults:
    async def test_attempt_timeout(self, server):
        """An attempt that takes longer than timeout is an APITimeoutError."""

        async def slow(_request):
            await asyncio.sleep(5)

        server.script.append(slow)
        async with client_for(server.base_url, timeout=0.2) as client:
            with pytest.raises(sp.APITimeoutError) as info:
                await client.generate_persona(**FIELDS)
        assert info.value.attempts == 1

    async def test_deadline_shrinks_the_attempt_timeout(self, server):
        """With a deadline shorter than timeout, the attempt is cut at the deadline."""

        async def slow(_request):
            await asyncio.sleep(5)

        server.script.append(slow)
        policy = sp.RetryPolicy(deadline=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with client_for(server.base_url, timeout=30, retry=policy) as client:
            with pytest.raises(sp.APITimeoutError):
                await client.generate_persona(**FIELDS)
        assert loop.time() - started < 3

    async def test_connection_refused_is_retried_then_reported(self):
        """Nothing listening: retried (nothing was sent), then APIConnectionError(sent=False)."""
        probe = web.AppRunner(web.Application())
        await probe.setup()
        site = web.TCPSite(probe, "127.0.0.1", 0)
        await site.start()
        port = probe.addresses[0][1]
        await probe.cleanup()
        async with client_for(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(sp.APIConnectionError) as info:
                await client.generate_persona(**FIELDS)
        assert info.value.sent is False
        assert info.value.attempts == FAST.max_attempts

    async def test_redirect_is_not_followed(self, server):
        """A 3xx is reported with its status and its target is never contacted."""
        other = []

        async def elsewhere(request):
            other.append(request.headers.get("x-api-key"))
            return web.json_response({})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", elsewhere)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        target = f"http://127.0.0.1:{runner.addresses[0][1]}/steal"
        server.script.append((302, b"", {"Location": target}))
        try:
            async with client_for(server.base_url) as client:
                with pytest.raises(sp.APIError) as info:
                    await client.generate_persona(**FIELDS)
        finally:
            await runner.cleanup()
        assert info.value.code == 302
        assert other == []

    @pytest.mark.parametrize("chunked", [False, True])
    async def test_oversized_body_is_refused(self, server, chunked):
        """A reply over 1 MiB is an InvalidResponseError, declared or streamed."""

        async def huge(request):
            response = web.StreamResponse(status=200)
            if chunked:
                response.enable_chunked_encoding()
            else:
                response.content_length = 4 * 1024 * 1024
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"x" * 65536)
            return response

        server.script.append(huge)
        async with client_for(server.base_url) as client:
            with pytest.raises(sp.InvalidResponseError, match="cap"):
                await client.generate_persona(**FIELDS)

    async def test_cancel_during_backoff_returns_promptly(self, server):
        """Cancelling a call that sleeps on a Retry-After ends it at once, not retried."""
        server.script.append((429, {"code": 429, "message": "wait"}, {"Retry-After": "20"}))
        async with client_for(server.base_url, retry=sp.RetryPolicy(max_delay=30)) as client:
            task = asyncio.ensure_future(client.generate_persona(**FIELDS))
            await server.got_request.wait()
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.time() - started < 2
        assert len(server.seen) == 1

    async def test_cancel_during_request_propagates(self, server):
        """Cancelling a call in flight raises CancelledError, not a library error."""

        async def slow(_request):
            await asyncio.sleep(5)

        server.script.append(slow)
        async with client_for(server.base_url) as client:
            task = asyncio.ensure_future(client.generate_persona(**FIELDS))
            await server.got_request.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
