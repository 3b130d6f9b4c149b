import pytest
from aioresponses import aioresponses

from suno_persona import AsyncPersonaClient, RetryPolicy

BASE_URL = "https://api.crun.ai"
ENDPOINT = BASE_URL + "/api/v1/client/job/suno-persona-generate"


@pytest.fixture(name="mocked")
def _mocked():
    with aioresponses() as mocked:
        yield mocked


async def test_a_rate_limit_then_a_persona(mocked):
    mocked.post(
        ENDPOINT,
        status=429,
        headers={"Retry-After": "0"},
        payload={"code": 429, "message": "rate limited", "data": None},
    )
    mocked.post(
        ENDPOINT,
        payload={"code": 200, "message": "success", "data": {"persona_id": "persona_1"}},
    )

    async with AsyncPersonaClient(
        api_key="sk-test", base_url=BASE_URL, retry=RetryPolicy(initial_delay=0.01)
    ) as client:
        persona = await client.generate_persona(
            task_id="task_1", suno_id="suno_1", name="Neon Siren"
        )

    assert persona.persona_id == "persona_1"
    assert persona.attempts == 2
    (calls,) = mocked.requests.values()
    assert [call.kwargs["headers"]["x-api-key"] for call in calls] == ["sk-test", "sk-test"]
