"""The persona emulator, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from suno_persona import PersonaRequest
from suno_persona.testing import PersonaEmulator, RecordedRequest, serve

pytest_plugins = ("pytester",)

KEY = "sk-test"
BODY = {"task_id": "task_12345678", "suno_id": "suno_abc123", "name": "Neon Siren"}


@pytest.fixture(name="emu")
async def _emu():
    async with PersonaEmulator() as emu:
        yield emu


@pytest.fixture(name="session")
async def _session():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(session, url, body=BODY, *, key=KEY, data=None):
    """POST ``body`` as JSON (or raw ``data``) and return (response, parsed envelope)."""
    headers = {} if key is None else {"x-api-key": key}
    kwargs = {"data": data} if data is not None else {"json": body}
    async with session.post(url, headers=headers, **kwargs) as resp:
        return resp, await resp.json()


def pair(n):
    return {**BODY, "task_id": f"task_{n}"}


async def test_success_envelope(emu, session):
    """A valid request gets HTTP 200 and the success envelope with a persona id."""
    resp, body = await post(session, emu.endpoint_url)

    assert resp.status == 200
    assert body["code"] == 200
    assert body["message"] == "success"
    assert body["data"]["persona_id"].startswith("persona_")
    assert set(body) == {"code", "message", "data"}


async def test_success_records_persona(emu, session):
    """The persona made is kept in ``personas`` with the request that made it."""
    _, body = await post(session, emu.endpoint_url, {**BODY, "vocal_start": 12.5})

    assert emu.personas == {
        body["data"]["persona_id"]: PersonaRequest.from_dict({**BODY, "vocal_start": 12.5})
    }


async def test_distinct_pairs_get_distinct_ids(emu, session):
    """Each new (task_id, suno_id) pair gets its own persona id."""
    bodies = [pair(1), pair(2), {**pair(1), "suno_id": "suno_other"}]

    ids = [(await post(session, emu.endpoint_url, b))[1]["data"]["persona_id"] for b in bodies]

    assert len(set(ids)) == 3


async def test_repeat_pair_returns_same_id_without_credit(session):
    """A repeated pair answers 200 with the first persona id and costs no credit."""
    async with PersonaEmulator(credits=1) as emu:
        _, first = await post(session, emu.endpoint_url)
        resp, again = await post(session, emu.endpoint_url, {**BODY, "name": "Other"})

    assert resp.status == 200
    assert again["data"] == first["data"]
    assert emu.credits == 0
    assert list(emu.personas.values()) == [PersonaRequest.from_dict(BODY)]


@pytest.mark.parametrize("key", [None, "", "sk-unknown"])
async def test_missing_or_unknown_key_is_401(emu, session, key):
    """A request without a known x-api-key gets 401, before its body is looked at."""
    resp, body = await post(session, emu.endpoint_url, {"junk": True}, key=key)

    assert resp.status == 401
    assert body["code"] == 401
    assert body["data"] is None
    assert "API key" in body["message"]


async def test_any_listed_key_is_accepted(session):
    """Every key in ``api_keys`` is accepted."""
    async with PersonaEmulator(api_keys=["sk-a", "sk-b"]) as emu:
        codes = [(await post(session, emu.endpoint_url, key=k))[0].status for k in emu.api_keys]

    assert codes == [200, 200]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**BODY, "name": "x" * 101}, "name: must be at most 100 characters, got 101"),
        ({"suno_id": "s", "name": "n"}, "task_id: is required"),
        ({**BODY, "suno_id": ""}, "suno_id: must not be empty"),
        ({**BODY, "description": "d" * 1001}, "description: must be at most 1000"),
        ({**BODY, "vocal_start": -1}, "vocal_start: must be >= 0"),
        ({**BODY, "vocal_start": True}, "vocal_start: must be a number"),
        ({**BODY, "vocal_start": 10, "vocal_end": 10}, "vocal_end: must be greater"),
        ({**BODY, "style": 7}, "style: must be a string"),
        ({**BODY, "persona": "x"}, "persona: is not a field"),
    ],
)
async def test_invalid_field_is_422_naming_it(emu, session, body, message):
    """A body breaking a rule gets 422 whose message names the field and the rule."""
    resp, answer = await post(session, emu.endpoint_url, body)

    assert resp.status == 422
    assert answer["code"] == 422
    assert answer["message"].startswith(message)
    assert answer["data"] is None
    assert emu.personas == {}


@pytest.mark.parametrize("data", [b"", b"{not json", b"\xff\xfe", b"[" * 100_000])
async def test_body_not_json_is_422(emu, session, data):
    """A body that is not JSON gets 422."""
    resp, answer = await post(session, emu.endpoint_url, data=data)

    assert resp.status == 422
    assert answer["message"] == "request: body must be JSON"


@pytest.mark.parametrize("body", [[BODY], "task", None, 3])
async def test_body_not_object_is_422(emu, session, body):
    """A JSON body that is not an object gets 422 naming the request."""
    resp, answer = await post(session, emu.endpoint_url, data=aiohttp.JsonPayload(body))

    assert resp.status == 422
    assert answer["message"].startswith("request: must be an object")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/client/job/suno-persona-other"),
        ("POST", "/"),
        ("GET", "/api/v1/client/job/suno-persona-generate"),
        ("PUT", "/api/v1/client/job/suno-persona-generate"),
    ],
)
async def test_other_path_or_method_is_404(emu, session, method, path):
    """Any other path or method gets the 404 envelope, key or not."""
    async with session.request(method, emu.base_url + path, json=BODY) as resp:
        body = await resp.json()

    assert resp.status == 404
    assert body["code"] == 404
    assert body["data"] is None


async def test_rate_limit_answers_429_with_retry_after(session):
    """Past the burst, requests get 429 with a whole-seconds Retry-After of at least 1."""
    async with PersonaEmulator(rate_limit=0.001, burst=2) as emu:
        answers = [await post(session, emu.endpoint_url, pair(n)) for n in range(5)]

    assert [body["code"] for _, body in answers] == [200, 200, 429, 429, 429]
    for resp, _ in answers[2:]:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1


async def test_rate_limit_without_retry_after(session):
    """With ``retry_after=False`` a 429 carries no Retry-After header."""
    async with PersonaEmulator(rate_limit=0.001, burst=1, retry_after=False) as emu:
        await post(session, emu.endpoint_url)
        resp, body = await post(session, emu.endpoint_url)

    assert body["code"] == 429
    assert "Retry-After" not in resp.headers


async def test_rate_limit_is_per_key(session):
    """Each API key has its own bucket."""
    async with PersonaEmulator(api_keys=["sk-a", "sk-b"], rate_limit=0.001, burst=1) as emu:
        codes = [
            (await post(session, emu.endpoint_url, pair(n), key=k))[1]["code"]
            for n, k in enumerate(["sk-a", "sk-a", "sk-b"])
        ]

    assert codes == [200, 429, 200]


async def test_requests_refused_before_the_limiter_take_no_token(session):
    """Requests refused by auth, maintenance or a fault leave the bucket untouched."""
    async with PersonaEmulator(rate_limit=0.001, burst=1) as emu:
        emu.fail_next(500)
        await post(session, emu.endpoint_url, key="sk-unknown")
        await post(session, emu.endpoint_url)
        codes = [(await post(session, emu.endpoint_url, pair(n)))[1]["code"] for n in range(2)]

    assert codes == [200, 429]


async def test_no_credits_left_is_402(session):
    """A new persona with no credits left gets 402; the credits count down."""
    async with PersonaEmulator(credits=1) as emu:
        first, _ = await post(session, emu.endpoint_url, pair(1))
        resp, body = await post(session, emu.endpoint_url, pair(2))

    assert first.status == 200
    assert resp.status == 402
    assert body["code"] == 402
    assert emu.credits == 0
    assert len(emu.personas) == 1


async def test_concurrent_requests_spend_credits_exactly(session):
    """Concurrent requests never spend more credits than there are."""
    async with PersonaEmulator(credits=5) as emu:
        answers = await asyncio.gather(
            *(post(session, emu.endpoint_url, pair(n)) for n in range(12))
        )

    codes = sorted(body["code"] for _, body in answers)
    assert codes == [200] * 5 + [402] * 7
    assert len(emu.personas) == 5


async def test_maintenance_answers_455_with_retry_after(emu, session):
    """During maintenance requests get 455 with the seconds left, rounded up."""
    emu.maintenance(60)

    resp, body = await post(session, emu.endpoint_url)

    assert resp.status == 455
    assert body["code"] == 455
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


async def test_maintenance_zero_ends_it(emu, session):
    """``maintenance(0)`` ends the maintenance at once."""
    emu.maintenance(60)
    emu.maintenance(0)

    resp, _ = await post(session, emu.endpoint_url)

    assert resp.status == 200


async def test_maintenance_ends_by_itself(emu, session):
    """Once its time has passed, maintenance is over."""
    emu.maintenance(0.01)
    await asyncio.sleep(0.05)

    resp, _ = await post(session, emu.endpoint_url)

    assert resp.status == 200


@pytest.mark.parametrize(
    ("code", "reason"),
    [(500, "Server Error"), (501, "Generation Failed"), (505, "Feature Disabled")],
)
async def test_fail_next_answers_code_times(emu, session, code, reason):
    """``fail_next(code, times=2)`` answers that code twice, then normally again."""
    emu.fail_next(code, times=2)

    answers = [await post(session, emu.endpoint_url) for _ in range(3)]

    assert [resp.status for resp, _ in answers] == [code, code, 200]
    assert [body["code"] for _, body in answers] == [code, code, 200]
    assert answers[0][0].reason == reason
    assert answers[0][1]["data"] is None


async def test_fail_next_custom_message(emu, session):
    """An injected fault carries the message given."""
    emu.fail_next(422, "task_id not found")

    _, body = await post(session, emu.endpoint_url)

    assert body == {"code": 422, "message": "task_id not found", "data": None}


@pytest.mark.parametrize("code", [429, 455])
async def test_fail_next_retryable_codes_carry_retry_after(emu, session, code):
    """An injected 429 or 455 carries the Retry-After seconds given."""
    emu.fail_next(code, retry_after=0)

    resp, _ = await post(session, emu.endpoint_url)

    assert resp.status == code
    assert resp.headers["Retry-After"] == "0"


async def test_fail_next_queues_faults_in_order(emu, session):
    """Faults injected one after another are served in that order."""
    emu.fail_next(500)
    emu.fail_next(501)

    codes = [(await post(session, emu.endpoint_url))[1]["code"] for _ in range(3)]

    assert codes == [500, 501, 200]


@pytest.mark.parametrize("code", [200, 302, 600, True])
def test_fail_next_rejects_non_error_codes(code):
    """Only error codes (400 to 599) can be injected."""
    with pytest.raises(ValueError, match="error code"):
        PersonaEmulator().fail_next(code)


async def test_latency_delays_each_answer(session):
    """With ``latency`` set, answers take at least that long."""
    async with PersonaEmulator(latency=0.2) as emu:
        start = time.monotonic()
        await post(session, emu.endpoint_url)
        elapsed = time.monotonic() - start

    assert elapsed >= 0.15


async def test_latency_callable_is_called_per_request(session):
    """A callable ``latency`` is called once for each request."""
    calls = []

    def latency():
        calls.append(None)
        return 0.0

    async with PersonaEmulator(latency=latency) as emu:
        await post(session, emu.endpoint_url)
        await post(session, emu.base_url + "/nowhere")

    assert len(calls) == 2


@pytest.mark.parametrize("fault", [500, 455])
async def test_errors_in_body_only(session, fault):
    """With ``errors_in_http_status=False`` errors come as HTTP 200, the code in the body."""
    async with PersonaEmulator(errors_in_http_status=False) as emu:
        emu.fail_next(fault)
        resp, body = await post(session, emu.endpoint_url)

    assert resp.status == 200
    assert body["code"] == fault
    assert body["data"] is None


async def test_errors_in_body_only_includes_404(session):
    """With ``errors_in_http_status=False`` even an unknown path answers HTTP 200."""
    async with PersonaEmulator(errors_in_http_status=False) as emu:
        resp, body = await post(session, emu.base_url + "/nowhere")

    assert resp.status == 200
    assert body["code"] == 404


async def test_records_describe_requests(emu, session):
    """Every request is recorded with its method, path, body and the code answered."""
    await post(session, emu.endpoint_url)
    await post(session, emu.endpoint_url, data=b"nope")

    first, second = emu.requests
    assert isinstance(first, RecordedRequest)
    assert (first.method, first.path, first.json, first.code) == (
        "POST",
        "/api/v1/client/job/suno-persona-generate",
        BODY,
        200,
    )
    assert (second.json, second.code) == (None, 422)
    assert first.timestamp <= second.timestamp


async def test_records_never_hold_the_key(session):
    """Keys, valid or not, are redacted from the records."""
    async with PersonaEmulator(api_keys=["sk-secret-123"]) as emu:
        await post(session, emu.endpoint_url, key="sk-secret-123")
        await post(session, emu.endpoint_url, key="sk-wrong-456")
        async with session.post(
            emu.endpoint_url + "?key=sk-secret-123",
            headers={"Authorization": "Bearer sk-secret-123", "X-Api-Key": "sk-secret-123"},
        ):
            pass

    records = repr(emu.requests)
    assert "sk-secret-123" not in records
    assert "sk-wrong-456" not in records
    assert "sk-secret-123" not in repr(emu)
    assert emu.requests[0].headers["x-api-key"] == "<redacted>"


async def test_reset_clears_records_and_faults(emu, session):
    """``reset()`` forgets records, pending faults and maintenance."""
    await post(session, emu.endpoint_url)
    emu.fail_next(500, times=5)
    emu.maintenance(60)

    emu.reset()
    resp, _ = await post(session, emu.endpoint_url, pair(2))

    assert resp.status == 200
    assert len(emu.requests) == 1


async def test_stop_is_idempotent_and_closes_the_port(session):
    """``stop()`` may be called twice; afterwards nothing listens and no task is left."""
    emu = PersonaEmulator()
    await emu.start()
    url = emu.endpoint_url
    await post(session, url)

    await emu.stop()
    await emu.stop()

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, url)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.base_url
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_start_twice_is_an_error(emu):
    """Starting a running emulator raises."""
    with pytest.raises(RuntimeError, match="already running"):
        await emu.start()


def test_a_single_str_is_not_a_list_of_keys():
    """``api_keys="sk-x"`` is refused rather than read as keys "s", "k", ..."""
    with pytest.raises(TypeError, match="api_keys"):
        PersonaEmulator(api_keys="sk-x")


@pytest.mark.parametrize(
    "options",
    [
        {"api_keys": []},
        {"api_keys": ["sk-a", ""]},
        {"rate_limit": 0},
        {"rate_limit": float("inf")},
        {"burst": 0},
        {"credits": -1},
    ],
)
def test_bad_options_are_refused(options):
    """Options that make no sense raise ValueError when the emulator is built."""
    with pytest.raises(ValueError, match="must"):
        PersonaEmulator(**options)


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf")])
def test_maintenance_needs_finite_seconds(seconds):
    """``maintenance`` takes a finite number of seconds, at least 0."""
    with pytest.raises(ValueError, match="seconds"):
        PersonaEmulator().maintenance(seconds)


@pytest.mark.parametrize(("code", "reason"), [(418, "I'm a Teapot"), (499, "Error")])
async def test_unlisted_codes_get_a_reason_phrase(emu, session, code, reason):
    """A code the provider does not list gets the standard HTTP reason, else "Error"."""
    emu.fail_next(code)

    resp, body = await post(session, emu.endpoint_url)

    assert (resp.status, resp.reason) == (code, reason)
    assert body == {"code": code, "message": "error", "data": None}


async def test_start_on_a_taken_port_fails_cleanly(emu):
    """Starting on a port in use raises OSError and leaves the emulator stopped."""
    port = int(emu.base_url.rsplit(":", 1)[1])
    other = PersonaEmulator(port=port)

    with pytest.raises(OSError, match="address"):
        await other.start()

    with pytest.raises(RuntimeError, match="not running"):
        _ = other.base_url


async def test_serve_runs_until_cancelled(session):
    """``serve`` reports its URL through ``ready``, serves, and stops when cancelled."""
    ready = asyncio.Event()
    urls = []

    def on_ready(url):
        urls.append(url)
        ready.set()

    task = asyncio.create_task(serve(api_keys=["sk-cli"], credits=1, ready=on_ready))
    await ready.wait()
    resp, _ = await post(
        session, urls[0] + "/api/v1/client/job/suno-persona-generate", key="sk-cli"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert resp.status == 200
    assert urls[0].startswith("http://127.0.0.1:")
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, urls[0] + "/")


async def test_factory_fixture_makes_configured_emulators(persona_emulator_factory, session):
    """The ``persona_emulator_factory`` fixture starts emulators with the options given."""
    emu = await persona_emulator_factory(credits=0)

    resp, _ = await post(session, emu.endpoint_url)

    assert resp.status == 402


def test_plugin_works_without_pytest_asyncio(pytester):
    """Without pytest-asyncio, pytest still runs; the fixture fails saying what is needed."""
    pytester.makepyfile(hide_pytest_asyncio="import sys\nsys.modules['pytest_asyncio'] = None\n")
    pytester.makepyfile(
        test_user="""
        def test_unrelated():
            assert True

        def test_wants_emulator(persona_emulator):
            pass
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "hide_pytest_asyncio")

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*persona_emulator fixture*needs pytest-asyncio*"])


def test_plugin_fixture_in_strict_mode(pytester):
    """In pytest-asyncio strict mode the fixture serves a test marked asyncio."""
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile(
        test_user="""
        import aiohttp
        import pytest

        @pytest.mark.asyncio
        async def test_it(persona_emulator):
            async with aiohttp.ClientSession() as session:
                async with session.post(persona_emulator.base_url + "/") as resp:
                    assert resp.status == 404
        """
    )

    result = pytester.runpytest_subprocess()

    result.assert_outcomes(passed=1)
