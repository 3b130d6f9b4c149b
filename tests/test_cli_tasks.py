"""``suno-persona balance``, ``suno-persona task TASK_ID [--wait]`` and ``batch --wait-for-tasks
--check-balance --poll-interval``, run as real subprocesses against an emulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from test_cli import EXAMPLES, KEY, cli, environment, read_records, write_lines

from suno_persona.testing import PersonaEmulator

TASK_PATH = "/api/v1/client/job/TaskInfo"
PERSONA_PATH = "/api/v1/client/job/suno-persona-generate"


@pytest.fixture(name="emu")
async def _emu():
    async with PersonaEmulator(api_keys=[KEY], check_tasks=True) as emulator:
        yield emulator


@pytest.fixture(name="env")
def _env(emu):
    return environment(SUNO_API_KEY=KEY, SUNO_API_BASE_URL=emu.base_url)


class TestBalance:
    async def test_prints_the_balance_as_json(self, env, emu):
        emu.credits = 42
        run = await cli("balance", env=env)
        assert (run.status, json.loads(run.out)) == (0, {"balance": 42.0})

    async def test_emulate_needs_no_key(self):
        run = await cli("balance", "--emulate", env=environment())
        assert run.status == 0
        assert json.loads(run.out) == {"balance": 1000000.0}

    async def test_an_error_is_one_line_and_exit_1(self, env, emu):
        emu.fail_next(401, "key revoked", endpoint="balance")
        run = await cli("balance", env=env)
        assert run.status == 1
        assert run.err_lines == ["error: [401] key revoked"]


class TestTask:
    async def test_prints_the_task_as_it_is_now(self, env, emu):
        emu.add_task("t1", {"s1": 60.0}, running=600)
        run = await cli("task", "t1", env=env)
        assert run.status == 0
        task = json.loads(run.out)
        assert (task["task_id"], task["status"], task["songs"]) == ("t1", "running", [])

    async def test_wait_polls_until_it_succeeded(self, env, emu):
        """Running at the first poll; finished (replaced) once it was seen running."""
        emu.add_task("t1", {"s1": 60.0, "s2": 30.5}, running=600)
        command = asyncio.ensure_future(
            cli("task", "t1", "--wait", "--poll-interval", "0.2", env=env)
        )
        while not any(r.path == TASK_PATH for r in emu.requests):
            await asyncio.sleep(0.01)
        emu.add_task("t1", {"s1": 60.0, "s2": 30.5})
        run = await command
        assert run.status == 0, run.err
        task = json.loads(run.out)
        assert task["status"] == "success"
        assert [(s["suno_id"], s["duration"]) for s in task["songs"]] == [
            ("s1", 60.0),
            ("s2", 30.5),
        ]
        polled = [r.timestamp for r in emu.requests if r.path == TASK_PATH]
        assert len(polled) >= 2
        assert all(b - a >= 0.2 for a, b in itertools.pairwise(polled))

    async def test_wait_on_a_failed_task_exits_1(self, env, emu):
        emu.add_task("t1", {"s1": 60.0}, error=(501, "lyrics rejected"))
        run = await cli("task", "t1", "--wait", env=env)
        assert run.status == 1
        assert run.err_lines == ["error: task t1 failed [501]: lyrics rejected"]

    async def test_wait_that_times_out_exits_1(self, env, emu):
        emu.add_task("t1", {"s1": 60.0}, running=600)
        run = await cli(
            "task", "t1", "--wait", "--wait-timeout", "0.5", "--poll-interval", "0.2", env=env
        )
        assert run.status == 1
        assert "did not finish within 0.5 s (last status 'running')" in run.err

    async def test_an_unknown_task_exits_1(self, env):
        run = await cli("task", "nope", env=env)
        assert run.status == 1
        assert run.err_lines == ["error: [404] task nope not found"]

    async def test_emulate_seeds_the_task_asked_about(self):
        run = await cli(
            "task", "any_task", "--emulate", "--wait", "--poll-interval", "0.3", env=environment()
        )
        assert run.status == 0, run.err
        assert json.loads(run.out)["status"] == "success"

    @pytest.mark.parametrize(
        "args",
        [
            ("task",),
            ("task", "t1", "--poll-interval", "0"),
            ("task", "t1", "--wait-timeout", "-1"),
            ("batch", "x.jsonl", "-o", "y.jsonl", "--poll-interval", "nan"),
        ],
    )
    async def test_bad_command_lines_exit_2(self, args):
        run = await cli(*args, env=environment(SUNO_API_KEY=KEY))
        assert run.status == 2


class TestBatchWaitingForTasks:
    @pytest.mark.slow  # more than a second of wall time
    async def test_emulate_waits_for_the_tasks_of_the_example_file(self, tmp_path):
        """The README's demo of --wait-for-tasks: every line gets a persona, after a wait."""
        sink = tmp_path / "out.jsonl"
        run = await cli(
            "batch",
            str(EXAMPLES),
            "-o",
            str(sink),
            "--emulate",
            "--wait-for-tasks",
            "--poll-interval",
            "0.5",
            "--check-balance",
            env=environment(),
        )
        assert run.status == 0, run.err
        lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
        records = read_records(sink)
        assert sorted(r["line"] for r in records) == list(range(1, len(lines) + 1))
        assert all(r["persona_id"].startswith("persona_") for r in records)

    async def test_a_line_that_fails_its_tasks_check_is_not_sent(self, env, emu, tmp_path):
        emu.add_task("t1", {"s1": 60.0}, running=0.3)
        source = write_lines(
            tmp_path / "in.jsonl",
            [
                {"task_id": "t1", "suno_id": "s1", "name": "ok"},
                {"task_id": "t1", "suno_id": "s9", "name": "not a song of t1"},
                {"task_id": "t1", "suno_id": "s1", "name": "past", "vocal_end": 61},
            ],
        )
        sink = tmp_path / "out.jsonl"
        run = await cli(
            "batch",
            str(source),
            "-o",
            str(sink),
            "--wait-for-tasks",
            "--poll-interval",
            "0.2",
            env=env,
        )
        assert run.status == 1
        records = {r["line"]: r for r in read_records(sink)}
        assert records[1]["persona_id"].startswith("persona_")
        assert "suno_id" in records[2]["error"]["message"]
        assert "vocal_end" in records[3]["error"]["message"]
        assert sum(r.path == PERSONA_PATH for r in emu.requests) == 1

    async def test_check_balance_sends_nothing_when_the_balance_is_0(self, env, emu, tmp_path):
        emu.credits = 0
        source = write_lines(tmp_path / "in.jsonl", [{"task_id": "t", "suno_id": "s", "name": "n"}])
        sink = tmp_path / "out.jsonl"
        run = await cli("batch", str(source), "-o", str(sink), "--check-balance", env=env)
        assert run.status == 1
        assert "balance is 0" in run.err
        assert [r.path for r in emu.requests] == ["/api/v1/client/account/balance"]

    async def test_check_balance_goes_on_when_there_are_credits(self, env, emu, tmp_path):
        emu.credits = 5
        emu.add_task("t", {"s": 60.0})
        source = write_lines(tmp_path / "in.jsonl", [{"task_id": "t", "suno_id": "s", "name": "n"}])
        sink = tmp_path / "out.jsonl"
        run = await cli("batch", str(source), "-o", str(sink), "--check-balance", env=env)
        assert run.status == 0, run.err
        assert emu.credits == 4
