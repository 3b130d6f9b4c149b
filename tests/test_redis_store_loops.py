"""The Redis store closes what it opens, when a loop per call is the pattern (Celery tasks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("redis")

# One module-level client, ``asyncio.run`` per call: what a Celery task does. The emulator
# serves from a thread of its own, so only the client's loops come and go.
SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys, threading
    from suno_persona import AsyncPersonaClient
    from suno_persona.testing import PersonaEmulator

    loop = asyncio.new_event_loop()
    emulator = PersonaEmulator()
    loop.run_until_complete(emulator.start())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    client = AsyncPersonaClient(
        api_key="sk-test", base_url=emulator.base_url, throttle_store=sys.argv[1]
    )

    async def call(n):
        persona = await client.generate_persona(task_id=f"task_{n}", suno_id="s", name="n")
        return persona.persona_id

    ids = [asyncio.run(call(n)) for n in range(50)]
    gc.collect()
    print(len(set(ids)), "personas")
    """
)


def test_asyncio_run_per_call_with_a_store_leaves_no_resource_warning(redis_url, tmp_path):
    """50 loops, one after the other: each loop's Redis client is closed as the loop ends."""
    script = tmp_path / "celery_pattern.py"
    script.write_text(SCRIPT, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script), redis_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "50 personas"
    assert result.stderr == ""
