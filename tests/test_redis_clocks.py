"""Hosts whose clocks disagree, sharing a real redis-server with ``use_server_time=False``.

Each state stands for a process of its own, sending the script its wall clock through the
``_wall`` seam, off by an injected offset. A moment another host wrote into the store is
never honoured later than this host could have written it itself: one host 20 s ahead holds
no other back by 20 s. The tests assert on the decided waits, so they take no time.
"""

from __future__ import annotations

import time

import pytest

redis = pytest.importorskip("redis")

from test_redis_throttle import cut_to, flush, make_state  # noqa: E402

from suno_persona._redis_state import RedisState  # noqa: E402
from suno_persona._throttle import Answer  # noqa: E402

AHEAD = 20.0


def skewed(url: str, offset: float) -> RedisState:
    """A state of its own process, sending the script its wall clock ``offset`` s off ours."""
    state = make_state(url, use_server_time=False)
    state._wall = lambda: time.time() + offset
    return state


async def close(*states: RedisState) -> None:
    for state in states:
        await state.aclose()


@pytest.mark.parametrize(("writer", "reader"), [(AHEAD, 0.0), (0.0, -AHEAD)])
async def test_a_pause_written_on_a_clock_20s_ahead_holds_1s_not_21(redis_url, writer, reader):
    """A 429 asking for 1 s, seen by a host whose clock is 20 s ahead of another's: the other
    is paused for that 1 s, not 21 s (nor its ``max_pause``), whichever of the two is off."""
    one, other = skewed(redis_url, writer), skewed(redis_url, reader)
    now = time.monotonic()
    one.report(Answer.REFUSED, 1.0, now=now, sent_at=now, probe=False)
    await flush(one)
    for _ in range(2):  # the second ask reads what the first wrote back
        asked = time.monotonic()
        decision = await other.admit(asked, 30.0, None)
        assert not decision.go
        assert decision.reason == "the server's Retry-After"
        assert 0.5 < decision.at - asked <= 1.0 + 1e-6
    await close(one, other)


async def test_slots_reserved_on_a_clock_20s_ahead_do_not_stall_the_others(redis_url):
    """A host 20 s ahead cuts the rate and reserves slots, as of its clock: three hosts on
    the right time still get a slot within a horizon of sends, never 20 s out."""
    ahead = skewed(redis_url, AHEAD)
    others = [skewed(redis_url, 0.0) for _ in range(3)]
    now = time.monotonic()
    await ahead.admit(now, 30.0, None)
    cut_to(ahead, now)
    await flush(ahead)
    rate = ahead.rate(now)
    assert rate is not None
    for _ in range(3):
        await ahead.admit(time.monotonic(), 30.0, None)
    waits = []
    for _ in range(4):
        for state in others:
            asked = time.monotonic()
            decision = await state.admit(asked, 30.0, None)
            waits.append(decision.at - asked)
        await ahead.admit(time.monotonic(), 30.0, None)
    assert max(waits) <= 0.5 + 4 / rate
    await close(ahead, *others)


async def test_a_maintenance_probe_set_on_a_clock_20s_ahead_is_not_put_off(redis_url):
    """The breaker opened by a host 20 s ahead, next probe due at once by its clock: a host
    on the right time may send that probe now, not 20 s later."""
    ahead, other = skewed(redis_url, AHEAD), skewed(redis_url, 0.0)
    now = time.monotonic()
    ahead.report(Answer.MAINTENANCE, None, now=now, sent_at=now, probe=False)
    await flush(ahead)
    decision = await other.admit(time.monotonic(), 30.0, None)
    assert decision.probe
    await close(ahead, other)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (["pause", "1e9", "0", "", "1e9", "0", "0", "1"], "the server's Retry-After"),
        (["wait", "inf", "0", "", "0", "1", "1e12", "1"], "the maintenance"),
    ],
)
async def test_a_reply_is_read_within_max_pause(reply, verdict):
    """Whatever the script answers, a pause or a probe wait is read as at most ``max_pause``
    (10 s here) from now, and a negative or NaN delay as none (no server: the reply is fed)."""
    state = make_state("redis://127.0.0.1:9/0")
    replies = [reply, [*reply[:4], "-3", reply[5], "nan", "1"]]

    async def answer(_args: list[str]) -> list[str]:
        return replies.pop(0)

    state._run_script = answer
    now = time.monotonic()
    decision = await state.admit(now, 30.0, None)
    assert decision.reason == verdict
    assert decision.at == pytest.approx(now + 10.0)
    assert state.blocked_until() == pytest.approx(now + 10.0)
    await state._call("flush", now, 0.0, "")
    assert state.blocked_until() == now
    await state.aclose()
