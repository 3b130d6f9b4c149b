"""A reply's moments are read on its sender's clock: a ``Retry-After`` date against its ``Date``.

The store's side of clock skew is in ``test_redis_clocks.py``.
"""

from __future__ import annotations

import math
import time
from email.utils import formatdate

from conftest import envelope
from helpers import FIELDS, client_for, fast_retry


def skewed_429(skew: float):
    """A 429 from a server whose clock is ``skew`` s off ours, asking for 1 s by its clock."""

    def reply(_request):
        server_now = math.floor(time.time() + skew)
        headers = {
            "Date": formatdate(server_now, usegmt=True),
            "Retry-After": formatdate(server_now + 1, usegmt=True),
        }
        return 429, envelope(429, "slow down"), headers

    return reply


async def test_a_retry_after_date_from_a_server_20s_ahead_waits_1s(server, fake_time):
    """Through real HTTP: the client waits the 1 s the server meant on its clock, not 21 s
    (which, past the policy's 5 s ``max_delay``, would fail the call at once)."""
    server.script.append(skewed_429(+20))
    async with client_for(server.base_url, fake_time, retry=fast_retry()) as client:
        persona = await client.generate_persona(**FIELDS)
    assert persona.persona_id
    assert len(server.seen) == 2
    assert 0.99 < sum(fake_time.sleeps) < 1.5


async def test_a_retry_after_date_from_a_server_20s_behind_still_waits(server, fake_time):
    """A server behind us names a moment in our past: read on its own clock it is still 1 s."""
    server.script.append(skewed_429(-20))
    async with client_for(server.base_url, fake_time, retry=fast_retry()) as client:
        await client.generate_persona(**FIELDS)
    assert 0.99 < sum(fake_time.sleeps) < 1.5
