"""The script's call as typed values (``_redis_script.py``): its ``ARGV``, its reply.

The layout is written out again here, as ``_throttle.lua`` reads its ``ARGV`` and builds its
reply, so that the codec is checked against the script's side rather than against itself;
one test runs the real script on a real redis-server through the codec.
"""

from __future__ import annotations

import logging
import math
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suno_persona._throttle import Answer, ThrottlePolicy
from suno_persona.events import BreakerClosed, BreakerOpened, PauseStarted, RateChanged

pytest.importorskip("redis")

from redis_fixtures import make_state

from suno_persona._redis_script import (
    PARTS,
    SOURCE,
    Params,
    Reply,
    Report,
    Request,
    keys,
)
from suno_persona.redis import RedisThrottleStore

MAX_PAUSE = 10.0
CODES = {"a": Answer.ACCEPTED, "r": Answer.REFUSED, "m": Answer.MAINTENANCE, "n": Answer.NO_ANSWER}
# what Lua's tonumber reads as the number Python wrote (no "inf", no "nan")
LUA_NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")

moments = st.floats(-1e6, 1e6)
seconds = st.floats(0.0, 1e4)
reports = st.builds(
    Report,
    answer=st.sampled_from(list(Answer)),
    at=moments,
    sent_at=moments,
    retry_after=st.none() | seconds,
    probe=st.booleans(),
    token=st.text("0123456789abcdef:", max_size=20),
)
params = st.builds(
    Params,
    beta=st.floats(0.05, 1.0),
    window=st.floats(0.01, 100.0),
    min_rate=st.floats(0.001, 1000.0),
    growth=st.floats(0.001, 1000.0),
    probe_initial=seconds,
    probe_max=seconds,
    max_pause=seconds,
    lease_ms=st.integers(1, 10**7),
)
requests = st.builds(
    Request,
    mode=st.sampled_from(["admit", "flush"]),
    now=moments,
    wall=st.none() | st.floats(0.0, 4e9),
    max_wait=st.floats(0.0, math.inf),
    params=params,
    process=st.text("0123456789abcdef", min_size=1, max_size=16),
    token=st.text("0123456789abcdef:", max_size=20),
    adaptive=st.booleans(),
    given_back=st.integers(0, 10**6),
    last_rate=st.none() | st.floats(0.001, 1e5),
    reports=st.lists(reports, max_size=8).map(tuple),
)


def number(text: str) -> float:
    assert LUA_NUMBER.fullmatch(text), text
    return float(text)


def optional(text: str) -> float | None:
    return None if text == "" else number(text)


def read_argv(argv: list[str]) -> dict[str, object]:
    """``ARGV`` read as the script reads it (1-based there, 0-based here)."""
    count = int(argv[16])
    assert len(argv) == 17 + 6 * count
    read = [
        (
            CODES[argv[b]],
            number(argv[b + 1]),
            number(argv[b + 2]),
            optional(argv[b + 3]),
            {"1": True, "0": False}[argv[b + 4]],
            argv[b + 5],
        )
        for b in range(17, len(argv), 6)
    ]
    return {
        "mode": argv[0],
        "wall": optional(argv[1]),
        "max_wait": number(argv[2]),
        "policy": [number(value) for value in argv[3:10]],
        "lease_ms": int(argv[10]),
        "process": argv[11],
        "token": argv[12],
        "adaptive": {"1": True, "0": False}[argv[13]],
        "given_back": int(argv[14]),
        "last_rate": optional(argv[15]),
        "reports": read,
    }


@given(request=requests)
def test_a_request_encodes_to_the_argv_the_script_reads(request: Request):
    """Every field lands where the script reads it, as a string Lua reads back exactly;
    the reports' moments go as seconds before the call, never negative."""
    argv = request.encode()
    assert all(isinstance(value, str) for value in argv)
    p = request.params
    assert read_argv(argv) == {
        "mode": request.mode,
        "wall": request.wall,
        "max_wait": min(request.max_wait, 1e9),
        "policy": [
            p.beta,
            p.window,
            p.min_rate,
            p.growth,
            p.probe_initial,
            p.probe_max,
            p.max_pause,
        ],
        "lease_ms": p.lease_ms,
        "process": request.process,
        "token": request.token,
        "adaptive": request.adaptive,
        "given_back": request.given_back,
        "last_rate": request.last_rate,
        "reports": [
            (
                r.answer,
                max(0.0, request.now - r.at),
                max(0.0, request.now - r.sent_at),
                r.retry_after,
                r.probe,
                r.token,
            )
            for r in request.reports
        ],
    }


def test_the_params_of_a_policy_are_bounded_by_max_pause():
    policy = ThrottlePolicy(probe_initial=30.0, probe_max=600.0)
    got = Params.of(policy, max_pause=20.0, probe_lease=0.0001)
    assert (got.probe_initial, got.probe_max, got.max_pause, got.lease_ms) == (20.0, 20.0, 20.0, 1)
    assert (got.beta, got.window) == (policy.beta, policy.measure_interval)


def test_the_keys_are_the_scripts_seven_parts_in_order():
    assert keys("p") == [f"p:{part}" for part in PARTS]
    assert PARTS == ("rate", "gcra", "pause", "stats", "maint", "probe", "procs")


def fmt(value: float) -> str:
    """The script's ``fmt``: ``%.17g``."""
    return f"{value:.17g}"


def script_side(reply: Reply) -> list[bytes]:
    """``reply`` as the script returns it, and redis-py hands it over (bytes)."""
    items = [
        reply.verdict,
        fmt(reply.delay),
        str(reply.cuts),
        "" if reply.rate is None else fmt(reply.rate),
        fmt(reply.pause),
        "1" if reply.breaker_open else "0",
        fmt(reply.next_probe),
        str(reply.live),
    ]
    for event in reply.events:
        if isinstance(event, RateChanged):
            items += ["rate", "" if event.old is None else fmt(event.old), fmt(event.new)]
        elif isinstance(event, PauseStarted):
            items += ["pause", fmt(event.seconds), str(event.code)]
        elif isinstance(event, BreakerOpened):
            items += ["open", fmt(event.next_probe_in), ""]
        else:
            items += ["closed", fmt(event.open_for), ""]
    return [item.encode() for item in items]


bounded = st.floats(0.0, MAX_PAUSE)
events = st.one_of(
    st.builds(RateChanged, old=st.none() | seconds, new=seconds, reason=st.just("429s")),
    st.builds(PauseStarted, seconds=bounded, code=st.sampled_from([429, 455])),
    st.builds(BreakerOpened, next_probe_in=bounded),
    st.builds(BreakerClosed, open_for=seconds),
)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    verdict = draw(st.sampled_from(["go", "slot", "later", "probe", "pause", "wait", "wait_probe"]))
    slot = verdict in {"go", "slot", "later"}
    return Reply(
        verdict=verdict,
        delay=draw(st.floats(0.0, 1e6) if slot else bounded),
        cuts=draw(st.integers(0, 10**9)),
        rate=draw(st.none() | st.floats(0.001, 1e5)),
        pause=draw(bounded),
        breaker_open=draw(st.booleans()),
        next_probe=draw(bounded),
        live=draw(st.integers(1, 10**4)),
        events=tuple(draw(st.lists(events, max_size=5))),
    )


@given(reply=replies())
def test_a_reply_decodes_to_what_the_script_encoded(reply: Reply):
    assert Reply.decode(script_side(reply), max_pause=MAX_PAUSE) == reply
    as_text = [item.decode() for item in script_side(reply)]
    assert Reply.decode(as_text, max_pause=MAX_PAUSE) == reply


HEAD = ["pause", "5", "3", "", "5", "0", "5", "2"]


@pytest.mark.parametrize(
    ("index", "sent", "field", "read"),
    [
        (1, "1e9", "delay", MAX_PAUSE),  # a pause's delay
        (1, "-3", "delay", 0.0),
        (1, "nan", "delay", 0.0),
        (4, "inf", "pause", MAX_PAUSE),
        (4, "-1", "pause", 0.0),
        (6, "1e12", "next_probe", MAX_PAUSE),
        (6, "nan", "next_probe", 0.0),
        (7, "0", "live", 1),
    ],
)
def test_a_reply_is_read_within_its_bounds(index, sent, field, read):
    """A delay is read as 0 at least, a pause or a probe wait as ``max_pause`` at most, and
    the live processes as 1 at least: whatever other hosts' clocks wrote."""
    items = list(HEAD)
    items[index] = sent
    assert getattr(Reply.decode(items, max_pause=MAX_PAUSE), field) == read


@pytest.mark.parametrize("verdict", ["wait", "wait_probe"])
def test_the_breakers_waits_are_bounded_too(verdict):
    assert Reply.decode([verdict, "inf", *HEAD[2:]], max_pause=MAX_PAUSE).delay == MAX_PAUSE


@pytest.mark.parametrize("verdict", ["go", "slot", "later"])
def test_a_send_slots_delay_is_not_bounded_by_max_pause(verdict):
    """A slot far ahead is a long wait for a slot, not a pause."""
    assert Reply.decode([verdict, "1e6", *HEAD[2:]], max_pause=MAX_PAUSE).delay == 1e6


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (HEAD[:7], "fewer than 8 items"),
        (b"go", "fewer than 8 items"),
        (["stop", *HEAD[1:]], "verdict 'stop'"),
        (["go", "soon", *HEAD[2:]], "could not convert"),
    ],
)
def test_a_reply_of_another_layout_is_refused(items, message):
    with pytest.raises(ValueError, match=message):
        Reply.decode(items, max_pause=MAX_PAUSE)


async def test_a_malformed_reply_makes_the_store_unavailable(caplog):
    """The state does not crash on a reply of another layout: it throttles alone, and says
    why (no server: the reply is fed)."""
    state = make_state(RedisThrottleStore("redis://127.0.0.1:9/0", timeout=5.0))

    async def answer(_argv: list[str]) -> list[str]:
        return ["go", "0"]

    state._run_script = answer
    with caplog.at_level(logging.WARNING, logger="suno_persona"):
        decision = await state.admit(time.monotonic(), 10.0, None)
    assert decision.go
    assert state.local is not None
    assert "the script answered the script's reply has fewer than 8 items" in caplog.text
    await state.aclose()


async def test_a_malformed_reply_is_raised_chaining_nothing():
    """As every store error (redis-py's frames hold the password): no cause, no context."""
    from suno_persona._redis_reach import StoreUnavailable  # noqa: PLC0415 - beside the state

    state = make_state(RedisThrottleStore("redis://127.0.0.1:9/0", timeout=5.0))

    async def answer(_argv: list[str]) -> list[str]:
        return ["stop", *HEAD[1:]]

    state._run_script = answer
    with pytest.raises(StoreUnavailable, match="verdict 'stop'") as raised:
        await state._call("flush", time.monotonic(), 0.0, "")
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None
    await state.aclose()


async def test_the_real_script_reads_the_request_and_answers_the_reply(redis_url):
    """Through the codec, on a real redis-server: a 429 with a Retry-After of 2 s starts a
    2 s pause that the next admission is told about; a rate the store lost is put back."""
    from redis.asyncio import Redis  # noqa: PLC0415 - the extra is checked above

    client = Redis.from_url(redis_url)
    script = client.register_script(SOURCE)
    params = Params.of(ThrottlePolicy(), max_pause=MAX_PAUSE, probe_lease=5.0)
    argv_keys = keys("suno_persona:{test-codec}")

    async def call(request: Request) -> Reply:
        answer = await script(argv_keys, request.encode())
        return Reply.decode(answer, max_pause=MAX_PAUSE)

    now = 100.0
    refused = Report(Answer.REFUSED, at=now, sent_at=now - 0.1, retry_after=2.0)
    flushed = await call(Request("flush", now, None, 0.0, params, "p1", reports=(refused,)))
    assert flushed.verdict == "go"
    assert flushed.events == (PauseStarted(seconds=2.0, code=429),)
    assert 1.5 < flushed.pause <= 2.0
    admitted = await call(Request("admit", now, None, 30.0, params, "p2", token="p2:1"))
    assert admitted.verdict == "pause"
    assert 1.5 < admitted.delay <= 2.0
    assert admitted.live == 2  # p1 and p2
    assert admitted.rate is None

    await client.delete(argv_keys[0])
    restored = await call(Request("flush", now, None, 0.0, params, "p1", last_rate=20.0))
    assert restored.rate == pytest.approx(20.0)
    assert restored.cuts == 1
    await client.aclose()
