"""Four processes share one key's rate limit through Redis (the issue's main measurement)."""

from __future__ import annotations

import pytest
from redis_worker import run_fleet

from suno_persona.testing import PersonaEmulator

pytest.importorskip("redis")

KEY = "sk-multiprocess"
PROCESSES = 4
PER_PROCESS = 100
RATE = 50.0
BURST = 10


@pytest.mark.slow
async def test_four_processes_share_one_rate_limit(redis_url):
    async with PersonaEmulator(api_keys=[KEY], rate_limit=RATE, burst=BURST) as emulator:
        results = await run_fleet(emulator.base_url, KEY, redis_url, PROCESSES, PER_PROCESS)
        accepted = sorted(r.timestamp for r in emulator.requests if r.code == 200)
    total = PROCESSES * PER_PROCESS
    took = max(r["end"] for r in results) - min(r["start"] for r in results)
    ideal = (total - BURST) / RATE
    refused = sum(r["refused"] for r in results)
    steady = (accepted[-20] - accepted[20]) and (len(accepted) - 41) / (
        accepted[-20] - accepted[20]
    )
    print(
        f"\n4x100 shared: {took:.2f} s = {took / ideal:.3f}x ideal, "
        f"{refused / total:.3f} 429s per request, steady {steady:.2f}/s"
    )
    assert sum(r["ok"] for r in results) == total
    assert not any(r["fell_back"] for r in results)
    # Measured on these machines: 1.01-1.10x the ideal (target 1.15x: met), 0.06-0.09 429s per
    # request (target 0.05: not met), a steady 47.5-49.4/s (target 50/s +- 2%: mostly); without
    # the store, 1.03-1.33x and 0.22-0.25. docs/benchmarks.md says so. The test runs beside the
    # rest of the suite on a shared machine, so these bounds only catch a regression of the
    # sharing itself.
    assert took <= 1.6 * ideal
    assert refused / total <= 0.25
