"""A user's tests: only the ``persona_emulator`` fixture the installed plugin provides."""

from __future__ import annotations

import aiohttp
import pytest

PATH = "/api/v1/client/job/suno-persona-generate"
BODY = {"task_id": "task_12345678", "suno_id": "suno_abc123", "name": "Neon Siren"}


@pytest.fixture(name="session")
async def _session():
    async with aiohttp.ClientSession(headers={"x-api-key": "sk-test"}) as session:
        yield session


async def test_fixture_serves_the_endpoint(persona_emulator, session):
    """The fixture is a running emulator accepting the key ``sk-test``."""
    async with session.post(persona_emulator.base_url + PATH, json=BODY) as resp:
        body = await resp.json()

    assert resp.status == 200
    assert body["data"]["persona_id"] in persona_emulator.personas


async def test_fixture_injects_faults(persona_emulator, session):
    """Faults injected on the fixture reach the client."""
    persona_emulator.fail_next(501)

    async with session.post(persona_emulator.base_url + PATH, json=BODY) as resp:
        body = await resp.json()

    assert resp.status == 501
    assert body == {"code": 501, "message": "generation failed", "data": None}


async def test_fixture_is_fresh_for_each_test(persona_emulator):
    """Each test gets its own emulator, with no records from other tests."""
    assert persona_emulator.requests == []
    assert persona_emulator.personas == {}
