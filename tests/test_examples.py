"""The scripts in examples/, imported from their files and run as scripts, against the emulator."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

import suno_persona as sp
from suno_persona.testing import PersonaEmulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PERSONAS = EXAMPLES / "personas.jsonl"
MIXED = EXAMPLES / "mixed.jsonl"  # two lines invalid on purpose
KEY = "sk-test"
TIMEOUT = 30
ONE_ATTEMPT = sp.RetryPolicy(max_attempts=1)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


web_app = load_example("web_app")
worker_pool = load_example("worker_pool")
bulk = load_example("bulk")


def fields(n: int, **extra) -> dict:
    return {"task_id": f"task_{n}", "suno_id": f"suno_{n}", "name": f"Singer {n}", **extra}


def environment(emu: PersonaEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNO_API_")}
    return {**env, "SUNO_API_KEY": KEY, "SUNO_API_BASE_URL": emu.base_url}


async def start_script(name: str, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / f"{name}.py"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(name="emu")
async def _emu():
    async with PersonaEmulator(api_keys=[KEY]) as emulator:
        yield emulator


class TestWebApp:
    @pytest.fixture(name="app")
    def _app(self, emu):
        return web_app.make_app(api_key=KEY, base_url=emu.base_url, retry=ONE_ATTEMPT)

    @pytest.fixture(name="http")
    async def _http(self, app):
        async with TestClient(TestServer(app)) as client:
            yield client

    async def test_post_creates_a_persona(self, emu, http):
        reply = await http.post("/personas", json=fields(1))
        assert reply.status == 201
        body = await reply.json()
        assert body == {"persona_id": body["persona_id"]}
        assert emu.personas[body["persona_id"]].name == "Singer 1"

    async def test_one_client_lives_as_long_as_the_app(self, app):
        async with TestClient(TestServer(app)) as http:
            for n in range(3):
                assert (await http.post("/personas", json=fields(n))).status == 201
            client = app[web_app.CLIENT]
            assert not client.closed
        assert client.closed

    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            (b"{not json", 400, "the body must be a JSON object of fields"),
            (b"[1, 2]", 400, "the body must be a JSON object of fields"),
            (json.dumps(fields(1, name="")).encode(), 422, "name: must not be empty"),
        ],
    )
    async def test_a_bad_body_is_refused_without_a_call(self, emu, http, body, status, message):
        reply = await http.post("/personas", data=body)
        assert reply.status == status
        assert (await reply.json())["error"]["message"] == message
        assert emu.requests == []

    async def test_rate_limited_is_503_with_retry_after(self, emu, http):
        emu.fail_next(429, retry_after=3)
        reply = await http.post("/personas", json=fields(1))
        assert (reply.status, reply.headers["Retry-After"]) == (503, "3")
        assert (await reply.json())["error"] == {
            "type": "RateLimitError",
            "code": 429,
            "message": "rate limited",
        }

    async def test_a_deadline_spent_unsent_is_503_with_retry_after(self, emu):
        """The pause of a Retry-After past the deadline: the next call gives up unsent."""
        emu.fail_next(429, retry_after=30)
        policy = sp.RetryPolicy(deadline=10)
        app = web_app.make_app(api_key=KEY, base_url=emu.base_url, retry=policy)
        async with TestClient(TestServer(app)) as http:
            await http.post("/personas", json=fields(1))
            reply = await http.post("/personas", json=fields(2))
            assert reply.status == 503
            assert 29 <= int(reply.headers["Retry-After"]) <= 30
            assert (await reply.json())["error"]["type"] == "APITimeoutError"

    async def test_an_unknown_task_is_422(self, emu, http):
        emu.fail_next(422, "task_id not found")
        reply = await http.post("/personas", json=fields(1))
        assert reply.status == 422
        assert (await reply.json())["error"]["code"] == 422

    async def test_our_account_problems_are_502_without_details(self, emu, http):
        emu.fail_next(402, "account acme-corp has 0 credits")
        reply = await http.post("/personas", json=fields(1))
        assert reply.status == 502
        error = (await reply.json())["error"]
        assert error["type"] == "InsufficientCreditsError"
        assert "acme" not in error["message"]

    async def test_a_timeout_is_504(self):
        async with PersonaEmulator(api_keys=[KEY], latency=2.0) as slow:
            app = web_app.make_app(api_key=KEY, base_url=slow.base_url, timeout=0.2)
            async with TestClient(TestServer(app)) as http:
                reply = await http.post("/personas", json=fields(1))
        assert reply.status == 504

    async def test_runs_as_a_script(self, emu):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = await start_script("web_app", env={**environment(emu), "PORT": str(port)})
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    try:
                        reply = await session.post(
                            f"http://127.0.0.1:{port}/personas", json=fields(1)
                        )
                        break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
                else:
                    pytest.fail("the web app did not start listening")
                assert reply.status == 201
                reply.release()
        finally:
            proc.send_signal(signal.SIGINT)
        status, _, _ = await finish(proc)
        assert status == 0
        assert len(emu.personas) == 1


class TestWorkerPool:
    async def test_drains_the_queue(self, emu):
        queue = asyncio.Queue()
        for n in range(6):
            queue.put_nowait(fields(n))
        queue.put_nowait(fields(99, name=""))
        seen = []
        async with sp.AsyncPersonaClient(KEY, base_url=emu.base_url) as client:
            report = await worker_pool.run_pool(
                client, queue, workers=3, on_result=lambda request, _: seen.append(request)
            )
        assert len(report.outcomes) == len(seen) == 7
        assert report.unfinished == []
        failed = [o for _, o in report.outcomes if not isinstance(o, sp.Persona)]
        assert [type(o) for o in failed] == [sp.RequestValidationError]
        assert len(emu.personas) == 6
        assert queue.empty()

    async def test_stop_lets_requests_in_flight_finish(self):
        """After stop, no new request is taken; the ones in flight finish within the grace."""
        async with PersonaEmulator(api_keys=[KEY], latency=0.3) as emu:
            queue = asyncio.Queue()
            requests = [fields(n) for n in range(10)]
            for request in requests:
                queue.put_nowait(request)
            stop = asyncio.Event()
            async with sp.AsyncPersonaClient(KEY, base_url=emu.base_url) as client:
                report = await worker_pool.run_pool(
                    client, queue, workers=2, stop=stop, on_result=lambda *_: stop.set()
                )
        finished = [r for r, _ in report.outcomes]
        assert finished == requests[: len(finished)]
        assert len(finished) == 2
        assert report.unfinished == requests[2:]
        assert len(emu.requests) == 2

    async def test_stop_cancels_what_outlives_the_grace(self):
        async with PersonaEmulator(api_keys=[KEY], latency=5.0) as emu:
            queue = asyncio.Queue()
            requests = [fields(n) for n in range(5)]
            for request in requests:
                queue.put_nowait(request)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.3, stop.set)
            async with sp.AsyncPersonaClient(KEY, base_url=emu.base_url) as client:
                report = await worker_pool.run_pool(client, queue, workers=2, stop=stop, grace=0.1)
        assert report.outcomes == []
        assert sorted(r["task_id"] for r in report.unfinished) == [r["task_id"] for r in requests]
        assert len(emu.requests) == 2

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    async def test_a_signal_stops_the_script_cleanly(self, signum):
        async with PersonaEmulator(api_keys=[KEY], latency=0.2) as emu:
            proc = await start_script(
                "worker_pool", str(PERSONAS), "--workers=2", env=environment(emu)
            )
            assert proc.stdout is not None
            first = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            assert first == b"2 workers, 12 requests\n"
            result = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            assert result.startswith((b"ok ", b"error "))
            proc.send_signal(signum)
            status, out, err = await finish(proc)
        assert (status, err) == (0, "")
        last = out.splitlines()[-1]
        assert last.startswith("stopped: ")
        finished, unfinished = (int(word) for word in last.split() if word.isdigit())
        assert finished + unfinished == 12
        assert unfinished > 0


class TestBulk:
    async def test_jsonl_with_mixed_outcomes(self, emu):
        lines = []
        async with sp.AsyncPersonaClient(KEY, base_url=emu.base_url) as client:
            succeeded, failed = await bulk.run(client, MIXED, concurrency=4, out=lines.append)
        assert (succeeded, failed) == (10, 2)
        assert len(lines) == 12
        assert (
            "line 10: error: not JSON: Expecting property name enclosed in double quotes" in lines
        )
        assert any(
            line.startswith("line 8: error: RequestValidationError: name:") for line in lines
        )
        assert len(emu.personas) == 10

    async def test_csv_cells_become_fields(self, emu, tmp_path):
        source = tmp_path / "personas.csv"
        source.write_text(
            "task_id,suno_id,name,vocal_start,vocal_end,style\n"
            'task_1,suno_1,Neon Siren,12.5,64,"Western R&B, moody"\n'
            "task_2,suno_2,Kira Lumen,,,\n"
            "task_3,suno_3,Bad Numbers,soon,64,\n",
            encoding="utf-8",
        )
        lines = []
        async with sp.AsyncPersonaClient(KEY, base_url=emu.base_url) as client:
            assert await bulk.run(client, source, out=lines.append) == (2, 1)
        bodies = sorted((r.json for r in emu.requests), key=lambda body: body["task_id"])
        assert bodies == [
            {**fields(1, name="Neon Siren"), "vocal_start": 12.5, "vocal_end": 64.0,
             "style": "Western R&B, moody"},
            fields(2, name="Kira Lumen"),
        ]  # fmt: skip
        assert "line 4: error: vocal_start: not a number: 'soon'" in lines

    async def test_runs_as_a_script(self, emu):
        proc = await start_script("bulk", str(MIXED), "--concurrency=3", env=environment(emu))
        status, out, err = await finish(proc)
        assert (status, err) == (1, "")
        assert out.splitlines()[-1] == "10 succeeded, 2 failed"
