"""The throttle shared through a real redis-server (see ``redis_fixtures.py``)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_fixtures import cut_to, share_a_cut

import suno_persona as sp
from suno_persona._rate import AdaptiveRate
from suno_persona._throttle import Answer, Decision, ThrottlePolicy

redis = pytest.importorskip("redis")

from suno_persona._redis_script import SOURCE  # noqa: E402
from suno_persona._redis_state import RedisState, key_prefix  # noqa: E402
from suno_persona.redis import RedisThrottleStore  # noqa: E402

KEY = "sk-redis-test-0123456789"
BASE = "http://127.0.0.1:9"


# A loaded CI machine can take longer than the store's default 0.1 s to connect and load the
# script: the tests that are not about that timeout give the store a generous one.
STORE_TIMEOUT = 5.0


def make_state(
    url: str, policy: ThrottlePolicy | None = None, *, base_url: str = BASE, **options
) -> RedisState:
    events: list[object] = []
    options.setdefault("timeout", STORE_TIMEOUT)
    state = RedisState(
        RedisThrottleStore(url, **options),
        policy or ThrottlePolicy(probe_initial=0.0),
        base_url=base_url,
        api_key=KEY,
        max_pause=10.0,
        probe_lease=5.0,
        emit=events.append,
        owns_store=True,
    )
    state.events = events  # type: ignore[attr-defined]
    return state


async def flush(state: RedisState) -> None:
    await state._call("flush", time.monotonic(), 0.0, "")


def test_keys_are_hashed_and_grouped_in_one_slot():
    prefix = key_prefix(BASE, KEY)
    assert prefix.startswith("suno_persona:{")
    assert prefix.endswith("}")
    assert len(prefix) == len("suno_persona:{}") + 16
    assert KEY not in prefix


async def test_keys_never_hold_the_key_and_all_expire(redis_url):
    state = make_state(redis_url)
    now = time.monotonic()
    decision = await state.admit(now, 10.0, None)
    assert decision.go
    for _ in range(5):
        state.report(Answer.ACCEPTED, None, now=now, sent_at=now, probe=False)
    state.report(Answer.REFUSED, 1.0, now=now, sent_at=now, probe=False)
    state.report(Answer.MAINTENANCE, 1.0, now=now, sent_at=now, probe=False)
    await flush(state)
    await state.admit(time.monotonic(), 10.0, None)
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in client.keys("*")]
        assert len(keys) >= 4
        for key in keys:
            assert KEY not in key
            assert key.startswith(key_prefix(BASE, KEY) + ":")
            assert client.pttl(key) > 0, key
    finally:
        client.close()
    await state.aclose()


async def test_a_pause_seen_by_one_holds_the_others(redis_url):
    one, other = make_state(redis_url), make_state(redis_url)
    now = time.monotonic()
    assert (await one.admit(now, 10.0, None)).go
    one.report(Answer.REFUSED, 2.0, now=now, sent_at=now, probe=False)
    await flush(one)
    later = time.monotonic()
    decision = await other.admit(later, 10.0, None)
    assert not decision.go
    assert decision.reason == "the server's Retry-After"
    assert 1.5 < decision.at - later <= 2.0
    assert other.blocked_until() == pytest.approx(decision.at)
    assert any(isinstance(e, sp.events.PauseStarted) for e in one.events)  # type: ignore[attr-defined]
    await one.aclose()
    await other.aclose()


async def test_429s_to_requests_sent_before_the_pause_do_not_lengthen_it(redis_url):
    """The script, like the local state, takes a flight of 429s to requests sent before the
    pause began as that pause's news: one pause of 0.1 s, not one doubling per answer."""
    state = make_state(redis_url)
    await state.admit(time.monotonic(), 10.0, None)
    base = time.monotonic() - 0.05  # answers reported as if they came in over the last 50 ms
    state.report(Answer.ACCEPTED, None, now=base, sent_at=base, probe=False)
    for _ in range(20):
        state.report(Answer.REFUSED, 1.0, now=base + 0.002, sent_at=base + 0.001, probe=False)
    await flush(state)
    pauses = [e.seconds for e in state.events if isinstance(e, sp.events.PauseStarted)]  # type: ignore[attr-defined]
    assert pauses == [pytest.approx(0.1)]
    await state.aclose()


async def test_one_maintenance_probe_at_a_time_across_processes(redis_url):
    states = [make_state(redis_url) for _ in range(3)]
    now = time.monotonic()
    states[0].report(Answer.MAINTENANCE, None, now=now, sent_at=now, probe=False)
    await flush(states[0])
    decisions = [await s.admit(time.monotonic(), 10.0, None) for s in states]
    assert [d.probe for d in decisions].count(True) == 1
    waiting = [d for d in decisions if not d.probe]
    assert all(not d.go and d.wait_probe for d in waiting)
    prober = states[[d.probe for d in decisions].index(True)]
    assert prober.report(Answer.MAINTENANCE, None, now=time.monotonic(), sent_at=now, probe=True)
    await flush(prober)
    # the lease is free again once the probe's 455 is in: the next one due probes
    await asyncio.sleep(0.3)
    again = [await s.admit(time.monotonic(), 10.0, None) for s in states]
    assert [d.probe for d in again].count(True) == 1
    prober = states[[d.probe for d in again].index(True)]
    prober.report(Answer.ACCEPTED, None, now=time.monotonic(), sent_at=now, probe=True)
    await flush(prober)
    after = [await s.admit(time.monotonic(), 10.0, None) for s in states]
    assert all(d.go and not d.probe for d in after)
    kinds = {type(e).__name__ for s in states for e in s.events}  # type: ignore[attr-defined]
    assert {"BreakerOpened", "BreakerClosed"} <= kinds
    for s in states:
        await s.aclose()


async def test_a_probe_given_back_frees_the_lease(redis_url):
    one, other = make_state(redis_url), make_state(redis_url)
    now = time.monotonic()
    one.report(Answer.MAINTENANCE, None, now=now, sent_at=now, probe=False)
    await flush(one)
    decision = await one.admit(time.monotonic(), 10.0, None)
    assert decision.probe
    assert one.release(decision, time.monotonic())
    await flush(one)
    assert (await other.admit(time.monotonic(), 10.0, None)).probe
    await one.aclose()
    await other.aclose()


async def test_the_rate_cut_is_shared_and_slots_are_reserved_across_processes(redis_url):
    one, other = make_state(redis_url), make_state(redis_url)
    await one.admit(time.monotonic(), 10.0, None)
    await share_a_cut(one, other)  # slots alternate between the two
    assert any(isinstance(e, sp.events.RateChanged) for e in one.events)  # type: ignore[attr-defined]
    await one.aclose()
    await other.aclose()


async def test_a_cut_that_was_not_deep_enough_is_cut_again_in_the_script_too(redis_url):
    """The script's learner re-cuts a quarter of a window after a cut, as ``_rate.py`` does. The
    answers are reported as if they came in over the last 1.7 s (the script places each
    one by its age), so the test takes no time."""
    state = make_state(redis_url)
    await state.admit(time.monotonic(), 10.0, None)
    base = time.monotonic() - 1.7
    for i in range(50):
        state.report(
            Answer.ACCEPTED, None, now=base + i * 0.02, sent_at=base + i * 0.02, probe=False
        )
    for _ in range(3):
        state.report(Answer.REFUSED, None, now=base + 1.0, sent_at=base + 1.0, probe=False)
    await flush(state)
    first = state.rate(time.monotonic())
    assert first is not None
    now, sent = base + 1.0, 0
    while now < base + 1.6:
        now += 1 / first
        sent += 1
        answer = Answer.REFUSED if sent % 12 == 0 else Answer.ACCEPTED
        state.report(answer, None, now=now, sent_at=now, probe=False)
    await flush(state)
    cuts = [e for e in state.events if isinstance(e, sp.events.RateChanged)]  # type: ignore[attr-defined]
    assert len(cuts) == 2
    assert cuts[1].new == pytest.approx(0.85 * first * 11 / 12, rel=0.1)
    await state.aclose()


def probe_history(accepted_share: float, after: float) -> list[tuple[float, Answer]]:
    """Answers accepted at 50/s, 429s at 1 s (a cut from 50/s), then ``after`` s past the
    old peak (growth 2.0) answers accepted at ``accepted_share`` times that peak, then 429s.

    The script's buckets are aligned on the server's clock, not on these times: every
    answer is kept more than 0.1 s inside the window it is judged in, so that both count it,
    and the probe's answers stop 0.25 s before its 429s, so that the rate of the last two
    buckets (which depends on where they begin) is not the one cut from.
    """
    history = [(0.1 + i * 0.018, Answer.ACCEPTED) for i in range(50)]
    history += [(1.0, Answer.REFUSED)] * 3
    now = 1.0 + (50 * 0.15 / 2.0) ** (1 / 3) + after
    count = round(accepted_share * 50)
    history += [(now - 0.85 + i * 0.6 / count, Answer.ACCEPTED) for i in range(count)]
    return history + [(now, Answer.REFUSED)] * 10


@pytest.mark.parametrize(("share", "after"), [(1.3, 0.3), (2.0, 1.0)])
async def test_a_probe_is_cut_in_the_script_as_in_python(redis_url, share, after):
    """The script's learner cuts a probe as ``_rate.py`` does: a probe refused not far
    above the old peak counts half of what it measured above it; one well above, all."""
    history = probe_history(share, after)
    learner = AdaptiveRate(beta=0.85, window=1.0, min_rate=1.0, growth=2.0)
    expected = []
    for at, answer in history:
        if answer is Answer.ACCEPTED:
            learner.accepted(at, at)
        elif (change := learner.refused(at, at)) is not None:
            expected.append(change.new)
    state = make_state(redis_url, ThrottlePolicy(probe_initial=0.0, growth=2.0))
    await state.admit(time.monotonic(), 10.0, None)
    base = time.monotonic() - history[-1][0] - 0.01
    for at, answer in history:
        state.report(answer, None, now=base + at, sent_at=base + at, probe=False)
    await flush(state)
    cuts = [e.new for e in state.events if isinstance(e, sp.events.RateChanged)]  # type: ignore[attr-defined]
    assert len(expected) == 2
    assert cuts == pytest.approx(expected, rel=0.01)
    await state.aclose()


async def test_an_open_client_counts_as_a_live_process_before_it_sends(redis_url):
    """Processes started together split the start-up window by the live processes their
    first script call counts: an open client registers at once, before it sends anything."""
    store = RedisThrottleStore(redis_url, timeout=STORE_TIMEOUT)
    async with sp.AsyncPersonaClient(KEY, base_url=BASE, throttle_store=store) as client:
        other = make_state(redis_url, base_url=client.base_url)
        for _ in range(200):
            await other.admit(time.monotonic(), 10.0, None)
            if other.live == 2:
                break
            await asyncio.sleep(0.01)
        assert other.live == 2
        await other.aclose()
    await store.aclose()


async def test_a_reserved_slot_is_served_without_a_round_trip(redis_url):
    state = make_state(redis_url)
    now = time.monotonic()
    await state.admit(now, 10.0, None)
    cut_to(state, now)
    await flush(state)
    decision = Decision(0.0, go=False)
    while decision.reserved is None:
        decision = await state.admit(time.monotonic(), 10.0, None)
    calls = state.calls
    again = await state.admit(decision.at, 10.0, decision.reserved)
    assert again.go
    assert state.calls == calls
    assert not state.release(decision, time.monotonic())
    await state.aclose()


async def test_script_flush_mid_run_reloads_the_script(redis_url):
    state = make_state(redis_url)
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    client.close()
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.local is None
    await state.aclose()


async def test_client_wall_clock_instead_of_server_time(redis_url):
    state = make_state(redis_url, use_server_time=False)
    now = time.monotonic()
    state.report(Answer.REFUSED, 2.0, now=now, sent_at=now, probe=False)
    await flush(state)
    decision = await state.admit(time.monotonic(), 10.0, None)
    assert not decision.go
    assert decision.at - now == pytest.approx(2.0, abs=0.2)
    await state.aclose()


@pytest.fixture(name="curve_redis", scope="module")
def _curve_redis(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    sha = client.script_load(SOURCE)
    yield client, sha
    client.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    beta=st.floats(0.05, 1.0),
    window=st.floats(0.05, 10.0),
    min_rate=st.floats(0.01, 100.0),
    growth=st.floats(0.01, 100.0),
    rate=st.floats(0.01, 10_000.0),
    peak=st.floats(0.01, 10_000.0),
    since=st.floats(0.0, 200.0),
    frozen=st.one_of(st.none(), st.floats(0.0, 200.0)),
)
def test_the_lua_curve_is_the_python_curve(  # noqa: PLR0917 - one argument per strategy
    curve_redis, beta, window, min_rate, growth, rate, peak, since, frozen
):
    client, sha = curve_redis
    now = 5000.0
    cut_at = now - since
    frozen_at = None if frozen is None else cut_at + frozen
    k = (peak * (1 - beta) / growth) ** (1 / 3)
    span = (frozen_at if frozen_at is not None else now) - cut_at
    if (span - k) / window > 900:  # 2.0 ** that overflows a float in Python
        return
    python = AdaptiveRate(beta=beta, window=window, min_rate=min_rate, growth=growth)
    python._rate, python._rate_max, python._cut_at, python._frozen_at = (
        rate,
        peak,
        cut_at,
        frozen_at,
    )
    expected = python.rate(now)
    args = ["curve", repr(now), "0", repr(beta), repr(window), repr(min_rate), repr(growth)]
    args += [repr(rate), repr(peak), repr(cut_at), "" if frozen_at is None else repr(frozen_at)]
    got = float(client.evalsha(sha, 7, *[f"k{i}" for i in range(7)], *args))
    assert expected is not None
    assert got == pytest.approx(expected, rel=1e-9)


# --- the client, with Redis going away -------------------------------------------------------


def make_client(server, url_or_store, **options):
    return sp.AsyncPersonaClient(
        KEY,
        base_url=server.base_url,
        throttle_store=url_or_store,
        timeout=5,
        **options,
    )


REQUEST = {"task_id": "t", "suno_id": "s", "name": "n"}


async def test_the_client_uses_the_store_from_the_environment(server, redis_url, monkeypatch):
    monkeypatch.setenv("SUNO_THROTTLE_STORE", redis_url)
    async with make_client(server, None) as client:
        assert isinstance(client._throttle.state, RedisState)
        assert (await client.generate_persona(REQUEST)).persona_id


async def test_a_store_of_the_users_own_redis_client_is_not_closed(server, redis_url):
    own = redis.asyncio.Redis.from_url(redis_url)
    store = RedisThrottleStore(own)
    async with make_client(server, store) as client:
        await client.generate_persona(REQUEST)
    assert await own.ping()
    await own.aclose()
    assert "a client of yours" in repr(store)
    await store.aclose()


def test_bad_store_values_are_refused():
    with pytest.raises(ValueError, match="redis://"):
        sp.AsyncPersonaClient(KEY, throttle_store="http://localhost")
    with pytest.raises(ValueError, match="RedisThrottleStore"):
        sp.AsyncPersonaClient(KEY, throttle_store=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"redis\.asyncio\.Redis"):
        RedisThrottleStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        RedisThrottleStore("redis://localhost", timeout=0)
    store = RedisThrottleStore.from_url("redis://user:secret@localhost:6379/0")
    assert "secret" not in repr(store)
    client = sp.AsyncPersonaClient(KEY, throttle_store=store, throttle=None)
    assert client._throttle.state is None


async def test_redis_killed_mid_run_then_back(server, redis_server, redis_url, caplog):
    store = RedisThrottleStore(redis_url, timeout=STORE_TIMEOUT)
    async with make_client(server, store) as client:
        state = client._throttle.state
        assert isinstance(state, RedisState)
        await client.generate_many([REQUEST] * 20)
        assert state.local is None
        redis_server.stop()
        started = time.monotonic()
        results = await client.generate_many([REQUEST] * 20)
        assert all(isinstance(r, sp.Persona) for r in results)
        assert state.local is not None
        assert time.monotonic() - started < 2.0
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1
        redis_server.start()
        deadline = time.monotonic() + 10
        while state.local is not None and time.monotonic() < deadline:
            await client.generate_persona(REQUEST)
            await asyncio.sleep(0.1)
        assert state.local is None
        assert any("answers again" in r.getMessage() for r in caplog.records)
    await store.aclose()


async def test_a_hung_redis_falls_back_within_the_timeout(redis_server, redis_url):
    state = make_state(redis_url)  # connected and the script loaded with time to spare
    assert (await state.admit(time.monotonic(), 10.0, None)).go
    assert state.local is None
    state.store.timeout = 0.1  # the default, within which the fallback must engage
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        decision = await state.admit(time.monotonic(), 10.0, None)
        took = time.monotonic() - started
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert decision.go
    assert state.local is not None
    assert took < 0.1 + 0.08  # the store's timeout, plus the loop's own slack
    await state.aclose()


async def test_fallback_starts_from_the_shared_rate_divided_by_live_processes(
    redis_server, redis_url
):
    one, other = make_state(redis_url), make_state(redis_url)
    now = time.monotonic()
    await one.admit(now, 10.0, None)
    await other.admit(now, 10.0, None)
    cut_to(one, now)
    await flush(one)
    await one.admit(time.monotonic(), 10.0, None)
    shared = one.rate(now)
    assert shared is not None
    assert one.live == 2
    redis_server.stop()
    await one.admit(time.monotonic(), 10.0, None)
    assert one.local is not None
    assert one.rate(time.monotonic()) == pytest.approx(shared / 2, rel=0.05)
    # reports and releases go to the local state meanwhile
    one.report(Answer.ACCEPTED, None, now=time.monotonic(), sent_at=now, probe=False)
    one.release(Decision(0.0, go=True), time.monotonic())
    assert one.blocked_until() == -math.inf
    await one.aclose()
    await other.aclose()


def test_suno_persona_imports_without_redis():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import suno_persona as sp\n"
        "sp.AsyncPersonaClient('k')\n"
        "try:\n"
        "    sp.AsyncPersonaClient('k', throttle_store='redis://localhost')\n"
        "except sp.SunoPersonaError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNO_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert "suno-persona[redis]" in out.stdout


# --- the command line ------------------------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "suno_persona",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_batch_shares_the_throttle_through_the_store(redis_url, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"task_id": "t", "suno_id": "s", "name": "n"}\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNO_")}
    status, err = await run_cli(
        "batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--emulate",
        "--throttle-store", redis_url, env=env,
    )  # fmt: skip
    assert status == 0, err
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys("suno_persona:*")
    finally:
        client.close()
    status, err = await run_cli(
        "batch", str(source), "-o", str(tmp_path / "out2.jsonl"), "--emulate",
        env={**env, "SUNO_THROTTLE_STORE": "http://nope"},
    )  # fmt: skip
    assert status == 2
    assert "--throttle-store must be a redis://" in err
