"""The ``suno-persona`` command, run as a real subprocess against an emulator on 127.0.0.1.

The emulator lives in the test's event loop, so every subprocess is started and awaited
with ``asyncio.create_subprocess_exec``: the loop stays free to answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pty
import shutil
import signal
import sys
import sysconfig
from pathlib import Path

import attrs
import pytest

import suno_persona as sp
from suno_persona import events
from suno_persona._cli import _connect, _console, _main, _records
from suno_persona.testing import PersonaEmulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "personas.jsonl"
MIXED = ROOT / "examples" / "mixed.jsonl"
KEY = "sk-cli-7f3a9c2e-secret"
MODULE = (sys.executable, "-m", "suno_persona")
LONG_NAME = "x" * 101
TIMEOUT = 30
# the command with rich hidden, as when the [cli] extra is not installed
NO_RICH = (
    "import sys; sys.modules['rich'] = None; from suno_persona._cli import main; sys.exit(main())"
)


@attrs.frozen
class Run:
    status: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNO_API_")}
    env.update(extra)
    return env


async def cli(
    *args: str, env: dict[str, str] | None = None, command=MODULE, stdin: bytes | None = None
) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *command,
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else environment(),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def script() -> str:
    """The ``suno-persona`` console script of this environment."""
    venv_bin = sysconfig.get_path("scripts")
    found = shutil.which("suno-persona", path=os.pathsep.join([venv_bin, os.environ["PATH"]]))
    assert found, "the suno-persona console script is not installed"
    return found


def fields(n: int, **extra) -> dict:
    return {"task_id": f"task_{n}", "suno_id": f"suno_{n}", "name": f"Singer {n}", **extra}


def write_lines(path: Path, lines: list[object]) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_line(records: list[dict]) -> list[dict]:
    """The records in line order (they come in the order requests finish)."""
    return sorted(records, key=lambda r: r["line"])


def latest(records: list[dict]) -> dict[int, dict]:
    """The record that counts for each line: its persona, else its last error."""
    kept: dict[int, dict] = {}
    for r in records:
        if "persona_id" not in kept.get(r["line"], {}):
            kept[r["line"]] = r
    return kept


def sent_task_ids(emulator: PersonaEmulator) -> list[str]:
    return [r.json["task_id"] for r in emulator.requests]


@pytest.fixture(name="emu")
async def _emu():
    async with PersonaEmulator(api_keys=[KEY]) as emulator:
        yield emulator


@pytest.fixture(name="env")
def _env(emu):
    return environment(SUNO_API_KEY=KEY, SUNO_API_BASE_URL=emu.base_url)


class TestGenerate:
    async def test_prints_the_persona_id_as_json(self, emu, env):
        """Exit 0, and stdout is exactly {"persona_id": ...} for a persona the API made."""
        run = await cli(
            "generate",
            "--task-id=task_1",
            "--suno-id=suno_1",
            "--name=Neon Siren",
            "--description=smoky",
            "--vocal-start=12.5",
            "--vocal-end=64",
            "--style=Western R&B",
            "--timeout=5",
            env=env,
        )
        assert (run.status, run.err) == (0, "")
        persona_id = json.loads(run.out)["persona_id"]
        assert json.loads(run.out) == {"persona_id": persona_id}
        assert emu.requests[0].json == {
            **fields(1, name="Neon Siren"),
            "description": "smoky",
            "vocal_start": 12.5,
            "vocal_end": 64,
            "style": "Western R&B",
        }
        assert persona_id in emu.personas

    async def test_console_script_takes_key_and_url_as_options(self, emu):
        """The installed suno-persona script works the same as python -m suno_persona."""
        run = await cli(
            "generate",
            *("--api-key", KEY, "--base-url", emu.base_url),
            *("--task-id", "t", "--suno-id", "s", "--name", "n"),
            command=(script(),),
        )
        assert run.status == 0
        assert json.loads(run.out)["persona_id"] in emu.personas

    async def test_validation_error_is_one_line_and_nothing_is_sent(self, emu, env):
        """A request that breaks the schema: exit 1, one line naming the rule, no request."""
        run = await cli("generate", "--task-id=t", "--suno-id=s", f"--name={LONG_NAME}", env=env)
        assert run.status == 1
        assert run.out == ""
        assert run.err == "error: name: must be at most 100 characters, got 101\n"
        assert emu.requests == []

    @pytest.mark.parametrize(
        ("code", "args", "expected"),
        [
            (501, (), "error: [501] generation failed"),
            (429, ("--max-attempts=1",), "error: [429] rate limited (retry after 1s)"),
        ],
    )
    async def test_api_error_is_one_line(self, emu, env, code, args, expected):
        """The API's error: exit 1, its code and message on one line, no traceback."""
        emu.fail_next(code, times=5)
        run = await cli("generate", "--task-id=t", "--suno-id=s", "--name=n", *args, env=env)
        assert (run.status, run.out) == (1, "")
        assert run.err_lines == [expected]
        assert len(emu.requests) == 1

    async def test_emulate_needs_no_key_and_no_server(self):
        """--emulate answers from an in-process emulator with its own key."""
        run = await cli("generate", "--emulate", "--task-id=t", "--suno-id=s", "--name=n")
        assert run.status == 0
        assert json.loads(run.out)["persona_id"].startswith("persona_")

    @pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    async def test_a_signal_stops_it_without_a_traceback(self, signum, status):
        async with PersonaEmulator(api_keys=[KEY], latency=30) as emu:
            env = environment(SUNO_API_KEY=KEY, SUNO_API_BASE_URL=emu.base_url)
            proc = await asyncio.create_subprocess_exec(
                *MODULE, "generate", "--task-id=t", "--suno-id=s", "--name=n",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not emu.requests:
                assert asyncio.get_running_loop().time() < deadline, "no request came"
                await asyncio.sleep(0.05)
            proc.send_signal(signum)
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert (proc.returncode, out, err) == (status, b"", b"error: interrupted\n")

    async def test_verbose_logs_each_attempt_on_stderr(self, env):
        """-v writes the library's debug log to stderr; stdout stays the JSON."""
        run = await cli("generate", "-v", "--task-id=t", "--suno-id=s", "--name=n", env=env)
        assert run.status == 0
        assert "DEBUG suno_persona: attempt 1: POST http://127.0.0.1" in run.err
        assert json.loads(run.out)


class TestUsage:
    @pytest.mark.parametrize(
        "args",
        [
            (),
            ("frobnicate",),
            ("generate", "--task-id=t", "--suno-id=s"),
            ("generate", "--task-id=t", "--suno-id=s", "--name=n", "--vocal-start=soon"),
            ("generate", "--task-id=t", "--suno-id=s", "--name=n", "--timeout=0"),
            ("batch", "in.jsonl"),
            ("batch", "in.jsonl", "-o", "out.jsonl", "--concurrency=0"),
            ("emulator", "--port=70000"),
        ],
    )
    async def test_bad_command_lines_exit_2(self, env, args):
        """argparse's usage errors exit 2, with the usage on stderr."""
        run = await cli(*args, env=env)
        assert run.status == 2
        assert "usage: suno-persona" in run.err
        assert "Traceback" not in run.err

    async def test_help_exits_0(self):
        run = await cli("batch", "--help")
        assert run.status == 0
        assert "--concurrency" in run.out

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ("generate", "--task-id=t", "--suno-id=s", "--name=n"),
                "error: no API key: pass --api-key or set SUNO_API_KEY (or try --emulate)",
            ),
            (
                ("batch", "missing.jsonl", "-o", "out.jsonl", "--emulate"),
                "error: cannot read missing.jsonl: No such file or directory",
            ),
            (
                ("generate", "--task-id=t", "--suno-id=s", "--name=n", "--emulate", "--base-url=x"),
                "error: --emulate and --base-url exclude each other",
            ),
        ],
    )
    async def test_a_command_that_cannot_start_exits_2(self, args, message):
        """No key, an unreadable INPUT, conflicting options: one line, exit 2."""
        run = await cli(*args, env=environment())
        assert (run.status, run.err_lines) == (2, [message])

    async def test_an_unreadable_file_exits_2(self, tmp_path):
        source = write_lines(tmp_path / "in.jsonl", [fields(1)])
        run = await cli("batch", str(tmp_path), "-o", "out.jsonl", "--emulate")
        assert (run.status, run.err_lines) == (
            2,
            [f"error: cannot read {tmp_path}: Is a directory"],
        )
        run = await cli("batch", str(source), "-o", str(tmp_path), "--emulate")
        assert (run.status, run.err_lines) == (
            2,
            [f"error: cannot write {tmp_path}: Is a directory"],
        )

    async def test_an_empty_emulator_key_exits_2(self):
        run = await cli("emulator", "--api-key=")
        assert (run.status, run.err_lines) == (2, ["error: --api-key must not be empty"])

    async def test_a_url_that_does_not_parse_exits_2(self):
        env = environment(SUNO_API_KEY=KEY, SUNO_API_BASE_URL="http://[::1")
        run = await cli("generate", "--task-id=t", "--suno-id=s", "--name=n", env=env)
        assert run.status == 2
        [line] = run.err_lines  # the library may word it; the command keeps it to one line
        assert line.startswith("error: ")

    async def test_a_base_url_the_client_refuses_exits_2(self):
        run = await cli(
            "generate",
            "--task-id=t",
            "--suno-id=s",
            "--name=n",
            "--base-url=ftp://x",
            env=environment(SUNO_API_KEY=KEY),
        )
        assert run.status == 2
        assert run.err_lines == [
            "error: base_url must be an http(s) URL with a host, got 'ftp://x'"
        ]


class TestBatch:
    async def test_mixed_outcomes_give_one_record_per_line(self, emu, env, tmp_path):
        """Each non-blank line gets exactly one record; bad lines are never sent."""
        source = write_lines(
            tmp_path / "in.jsonl",
            [
                fields(1),
                fields(2),
                fields(3, name=LONG_NAME),
                "this is not JSON",
                "   ",
                [1, 2],
                fields(7, colour="red"),
                fields(8, vocal_start=3, vocal_end=1.5),
                fields(9),
            ],
        )
        sink = tmp_path / "out.jsonl"
        emu.fail_next(505, "disabled for you")
        run = await cli("batch", str(source), "-o", str(sink), "--concurrency=1", env=env)
        assert run.status == 1
        records = by_line(read_records(sink))
        ids = {r["line"]: r.get("persona_id") for r in records}

        def invalid(message):
            return {"type": "RequestValidationError", "code": None, "message": message}

        disabled = {"type": "FeatureDisabledError", "code": 505, "message": "disabled for you"}
        assert records == [
            {"line": 1, "error": disabled},
            {"line": 2, "persona_id": ids[2]},
            {"line": 3, "error": invalid("name: must be at most 100 characters, got 101")},
            {"line": 4, "error": invalid("request: is not valid JSON: Expecting value (column 1)")},
            {"line": 6, "error": invalid("request: must be a JSON object of fields, not an array")},
            {"line": 7, "error": invalid("colour: is not a field of the request")},
            {
                "line": 8,
                "error": invalid("vocal_end: must be greater than vocal_start (3), got 1.5"),
            },
            {"line": 9, "persona_id": ids[9]},
        ]
        assert sent_task_ids(emu) == ["task_1", "task_2", "task_9"]
        assert set(emu.personas) == {ids[2], ids[9]}
        assert run.out == ""
        assert len(run.err_lines) == 1
        assert run.err.startswith("done: 8 lines, 2 succeeded, 6 failed; 0 retries; ")

    async def test_all_succeeded_exits_0_and_counts_retries(self, emu, env, tmp_path):
        """Exit 0 when every line has a persona; a retried 429 shows in the summary."""
        source = write_lines(tmp_path / "in.jsonl", [fields(n) for n in range(1, 6)])
        sink = tmp_path / "out.jsonl"
        emu.fail_next(429, retry_after=0)
        run = await cli("batch", str(source), "-o", str(sink), env=env)
        assert run.status == 0
        assert sorted(r["line"] for r in read_records(sink)) == [1, 2, 3, 4, 5]
        assert all(r["persona_id"] in emu.personas for r in read_records(sink))
        assert "5 lines, 5 succeeded, 0 failed; 1 retry;" in run.err

    async def test_empty_input_exits_0(self, env, tmp_path):
        source = write_lines(tmp_path / "in.jsonl", ["", "  "])
        sink = tmp_path / "out.jsonl"
        run = await cli("batch", str(source), "-o", str(sink), env=env)
        assert run.status == 0
        assert sink.read_text() == ""

    @pytest.mark.slow  # more than a second of wall time
    async def test_resume_sends_only_what_has_no_persona(self, emu, env, tmp_path):
        """A second run retries the failed lines only, and ends with one record per line."""
        source = write_lines(tmp_path / "in.jsonl", [fields(n) for n in range(1, 5)])
        sink = tmp_path / "out.jsonl"
        emu.credits = 2
        first = await cli("batch", str(source), "-o", str(sink), "--concurrency=1", env=env)
        assert first.status == 1
        before = read_records(sink)
        assert [("persona_id" in r) for r in by_line(before)] == [True, True, False, False]
        assert by_line(before)[2]["error"] == {
            "type": "InsufficientCreditsError",
            "code": 402,
            "message": "not enough credits",
        }

        emu.credits = None
        emu.requests.clear()
        second = await cli("batch", str(source), "-o", str(sink), env=env)
        assert second.status == 0
        after = read_records(sink)
        assert after[: len(before)] == before  # appended to, never rewritten
        assert sorted(r["line"] for r in after[len(before) :]) == [3, 4]
        assert all("persona_id" in r for r in latest(after).values())
        assert sorted(sent_task_ids(emu)) == ["task_3", "task_4"]
        assert "4 succeeded (2 in an earlier run), 0 failed" in second.err

        emu.requests.clear()
        third = await cli("batch", str(source), "-o", str(sink), env=env)
        assert (third.status, emu.requests, read_records(sink)) == (0, [], after)

    async def test_resume_reads_appended_records_and_a_torn_last_line(self, emu, env, tmp_path):
        """An OUTPUT left by a crash (duplicates, a half-written line) resumes cleanly."""
        source = write_lines(tmp_path / "in.jsonl", [fields(n) for n in range(1, 5)])
        sink = tmp_path / "out.jsonl"
        failed = {"type": "RateLimitError", "code": 429, "message": "rate limited"}
        sink.write_text(
            json.dumps({"line": 1, "error": failed})
            + "\n"
            + json.dumps({"line": 2, "persona_id": "persona_kept"})
            + "\n"
            + json.dumps({"line": 1, "persona_id": "persona_first"})
            + "\n"
            + json.dumps({"line": 3, "error": failed})
            + "\n"
            + json.dumps({"line": 99, "persona_id": "persona_not_in_input"})
            + '\n{"line": 4, "pers',
            encoding="utf-8",
        )
        run = await cli("batch", str(source), "-o", str(sink), env=env)
        assert run.status == 0
        records = read_records(sink)
        assert len(records) == 7  # the five complete ones, then lines 3 and 4; the torn one is cut
        kept = latest(records)
        assert kept[1]["persona_id"] == "persona_first"
        assert kept[2]["persona_id"] == "persona_kept"
        assert all("persona_id" in kept[n] for n in (3, 4))
        assert sorted(sent_task_ids(emu)) == ["task_3", "task_4"]

    async def test_an_output_that_is_not_a_batch_file_is_left_alone(self, emu, env, tmp_path):
        source = write_lines(tmp_path / "in.jsonl", [fields(1)])
        sink = tmp_path / "notes.txt"
        sink.write_text("my notes\nmore notes\n")
        run = await cli("batch", str(source), "-o", str(sink), env=env)
        assert run.status == 2
        assert run.err_lines == [
            f"error: {sink} line 1 is not a batch record; not appending to it (choose another -o)"
        ]
        assert sink.read_text() == "my notes\nmore notes\n"
        assert emu.requests == []

    async def test_output_may_not_be_the_input(self, env, tmp_path):
        source = write_lines(tmp_path / "in.jsonl", [fields(1)])
        run = await cli("batch", str(source), "-o", str(source), env=env)
        assert (run.status, run.err_lines) == (
            2,
            ["error: OUTPUT is the INPUT file: choose another -o"],
        )

    @pytest.mark.slow  # more than a second of wall time
    async def test_ctrl_c_keeps_finished_records_and_exits_130(self, tmp_path):
        """SIGINT cancels the requests in flight; finished records stay; a rerun resumes."""
        async with PersonaEmulator(api_keys=[KEY], latency=0.3) as emu:
            env = environment(SUNO_API_KEY=KEY, SUNO_API_BASE_URL=emu.base_url)
            source = write_lines(tmp_path / "in.jsonl", [fields(n) for n in range(1, 31)])
            sink = tmp_path / "out.jsonl"
            proc = await asyncio.create_subprocess_exec(
                *MODULE, "batch", str(source), "-o", str(sink), "--concurrency=2",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not sink.exists() or sink.read_text().count("\n") < 2:
                assert asyncio.get_running_loop().time() < deadline, "no records came"
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            assert proc.returncode == 130
            assert "Traceback" not in err.decode()
            assert err.decode().startswith("interrupted: ")
            assert " lines read, " in err.decode()
            records = read_records(sink)
            lines = [r["line"] for r in records]
            assert 2 <= len(records) < 30
            assert len(lines) == len(set(lines))
            assert all(r["persona_id"] in emu.personas for r in records)
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

            emu.requests.clear()
            rerun = await cli("batch", str(source), "-o", str(sink), "--concurrency=16", env=env)
            assert rerun.status == 0
            assert sorted(r["line"] for r in read_records(sink)) == list(range(1, 31))
            assert read_records(sink)[: len(records)] == records
            assert len(emu.requests) == 30 - len(records)

    async def test_emulate_runs_the_example_file_and_exits_0(self, tmp_path):
        """The README's main job: every line of examples/personas.jsonl gets a persona."""
        sink = tmp_path / "out.jsonl"
        run = await cli("batch", str(EXAMPLES), "-o", str(sink), "--emulate", env=environment())
        assert run.status == 0
        records = read_records(sink)
        lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
        assert sorted(r["line"] for r in records) == list(range(1, len(lines) + 1))
        assert all(r["persona_id"].startswith("persona_") for r in records)
        assert run.err.startswith(f"done: {len(lines)} lines, {len(lines)} succeeded, 0 failed")

    async def test_emulate_runs_the_mixed_file_with_mixed_outcomes(self, tmp_path):
        """docs/cli.md's demo: the two bad lines of examples/mixed.jsonl fail, exit 1."""
        sink = tmp_path / "out.jsonl"
        run = await cli("batch", str(MIXED), "-o", str(sink), "--emulate", env=environment())
        assert run.status == 1
        records = by_line(read_records(sink))
        lines = MIXED.read_text(encoding="utf-8").splitlines()
        assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
        failed = [r for r in records if "error" in r]
        assert [r["error"]["type"] for r in failed] == ["RequestValidationError"] * 2
        assert len(records) - len(failed) >= 10
        assert run.err.startswith(f"done: {len(lines)} lines, {len(lines) - 2} succeeded, 2 failed")


class TestSecrets:
    @pytest.mark.slow  # more than a second of wall time
    async def test_the_key_never_appears_in_any_output(self, emu, env, tmp_path):
        """Not in stdout, stderr, -v logs or records, even when the API echoes it back."""
        echo = f"key {KEY} is not allowed here"
        source = write_lines(tmp_path / "in.jsonl", [fields(1), fields(2)])
        sink = tmp_path / "out.jsonl"
        emu.fail_next(501, echo, times=2)
        generate = await cli("generate", "-v", "--task-id=t", "--suno-id=s", "--name=n", env=env)
        assert generate.err_lines[-1] == "error: [501] key *** is not allowed here"
        no_env = environment(SUNO_API_BASE_URL=emu.base_url)
        batch = await cli("batch", "-v", "--api-key", KEY, str(source), "-o", str(sink), env=no_env)
        emu.fail_next(429, echo, times=1, retry_after=0)
        retried = await cli("generate", "-v", "--task-id=t2", "--suno-id=s", "--name=n", env=env)
        assert (generate.status, batch.status, retried.status) == (1, 1, 0)
        assert "retrying after attempt 1" in retried.err
        outputs = [generate.out, generate.err, batch.out, batch.err, retried.out, retried.err]
        outputs.append(sink.read_text())
        assert all(KEY not in text for text in outputs)
        assert "***" in sink.read_text()


class TestEmulatorCommand:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    async def test_serves_until_a_signal_then_exits_0(self, signum):
        """Prints its base URL, serves the API with the keys given, exits 0 on the signal."""
        proc = await asyncio.create_subprocess_exec(
            *MODULE, "emulator", "--api-key=k1", "--api-key=k2", "--credits=1", "--latency=0.01",
            "--rate-limit=100", "--burst=2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment(),
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            base_url = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().strip()
            assert base_url.startswith("http://127.0.0.1:")
            async with sp.AsyncPersonaClient("k2", base_url=base_url) as client:
                persona = await client.generate_persona(fields(1))
                assert persona.persona_id.startswith("persona_")
                with pytest.raises(sp.InsufficientCreditsError):
                    await client.generate_persona(fields(2))
            async with sp.AsyncPersonaClient("k3", base_url=base_url) as client:
                with pytest.raises(sp.AuthenticationError):
                    await client.generate_persona(fields(1))
            proc.send_signal(signum)
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0
        assert (out, err) == (b"", b"")

    async def test_a_port_in_use_exits_2(self, emu):
        port = emu.base_url.rsplit(":", 1)[1]
        run = await cli("emulator", f"--port={port}")
        assert run.status == 2
        assert run.err_lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")


class TestProgress:
    @staticmethod
    async def on_a_terminal(*args: str, command=MODULE) -> tuple[int, str]:
        """Run with stderr on a pseudo-terminal; return the status and what it showed."""
        leader, follower = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            *command, *args, stdout=asyncio.subprocess.DEVNULL, stderr=follower, env=environment()
        )
        os.close(follower)

        def read_all() -> bytes:
            chunks = []
            with contextlib.suppress(OSError):  # EIO once the process has closed its end
                while chunk := os.read(leader, 4096):
                    chunks.append(chunk)
            return b"".join(chunks)

        try:
            shown = await asyncio.wait_for(asyncio.to_thread(read_all), TIMEOUT)
            status = await asyncio.wait_for(proc.wait(), TIMEOUT)
        finally:
            os.close(leader)
        return status, shown.decode(errors="replace")

    async def test_rich_progress_bar_on_a_terminal(self, tmp_path):
        """With rich and a terminal: a bar with done/failed/retries and a rate, then the summary."""
        source = write_lines(tmp_path / "in.jsonl", [fields(1), fields(2), "oops"])
        status, shown = await self.on_a_terminal(
            "batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--emulate"
        )
        assert status == 1
        assert "3/3" in shown
        assert "ok 2  failed 1  retries 0" in shown
        assert "/s" in shown
        assert "done: 3 lines, 2 succeeded, 1 failed" in shown

    async def test_plain_progress_without_rich(self, tmp_path):
        """Without rich installed, a one-line counter is redrawn in place instead."""
        source = write_lines(tmp_path / "in.jsonl", [fields(1), fields(2), "oops"])
        no_rich = (sys.executable, "-c", NO_RICH)
        status, shown = await self.on_a_terminal(
            "batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--emulate", command=no_rich
        )
        assert status == 1
        assert "\r\x1b[Kbatch 3/3  ok 2  failed 1  retries 0" in shown
        assert "done: 3 lines, 2 succeeded, 1 failed" in shown


class TestInProcess:
    """The helpers behind the command, called directly for the cases that are hard to reach."""

    @pytest.mark.parametrize(
        "args",
        [
            ["emulator", "--latency=-1"],
            ["emulator", "--latency=inf"],
            ["emulator", "--burst=many"],
            ["emulator", "--rate-limit=0"],
            ["emulator", "--credits=-1"],
        ],
    )
    def test_option_values_are_checked(self, capsys, args):
        assert _main.main(args) == 2
        assert "error: argument" in capsys.readouterr().err

    def test_version(self, capsys):
        assert _main.main(["--version"]) == 0
        assert capsys.readouterr().out == f"suno-persona {sp.__version__}\n"

    def test_main_module_runs_only_as_main(self):
        import suno_persona.__main__  # noqa: F401, PLC0415 - importing must not run the command

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (b'{"name": "\xff"}', "request: is not UTF-8 text (byte 11)"),
            (b'{"vocal_start": ' + b"1" * 5000 + b"}", "request: is not valid JSON: Exceeds"),
            (b"nope", "request: is not valid JSON: Expecting value (column 1)"),
            (b"null", "request: must be a JSON object of fields, not null"),
            (b'"x"', "request: must be a JSON object of fields, not a string"),
            (b"1.5", "request: must be a JSON object of fields, not a number"),
            (b"true", "request: must be a JSON object of fields, not true or false"),
            (b'\xef\xbb\xbf{"name": "n"}', "request: starts with a byte order mark (U+FEFF)"),
        ],
    )
    def test_a_line_that_is_not_a_json_object_is_an_error(self, line, message):
        """Said in the terms of the file, never Python's (no NoneType, no utf-8-sig)."""
        error = _records.parse_line(line)
        assert isinstance(error, sp.RequestValidationError)
        assert str(error).startswith(message)

    @pytest.mark.parametrize(
        "raw",
        [b"[1]", b'{"line": 0, "persona_id": "p"}', b'{"line": true, "persona_id": "p"}',
         b'{"line": 1}', b'{"line": 1, "persona_id": ""}', b'{"line": 1, "error": "x"}',
         b"\xff"],
    )  # fmt: skip
    def test_what_is_not_a_record(self, raw):
        assert _records.parse_record(raw) is None

    def test_resume_marks_the_lines_with_a_persona_and_finds_a_torn_end(self):
        error = {"type": "X", "code": None, "message": "m"}
        lines = [
            b'{"line": 1, "persona_id": "first"}\n',
            b"\n",
            b'{"line": 2, "error": {"type": "X"}}\n',
            b'{"line": 1, "persona_id": "second"}\n',
            b'{"line": 9000000, "persona_id": "far"}\n',
            b'{"line": 3, "pers',
        ]
        finished, useful, size = _records.scan_records(lines)
        assert (1 in finished, 2 in finished, 3 in finished, 9_000_000 in finished) == (
            True, False, False, True,
        )  # fmt: skip
        assert ("x" in finished, finished.count) == (False, 2)
        assert (useful, size) == (sum(map(len, lines[:-1])), sum(map(len, lines)))
        assert error

    def test_a_line_that_is_not_a_record_is_found(self):
        with pytest.raises(_records.NotABatchFile) as caught:
            _records.scan_records([b'{"line": 1, "persona_id": "p"}\n', b"notes\n"])
        assert caught.value.position == 2

    def test_csv_rows_are_numbered_by_the_line_they_start_on(self):
        text = [
            "task_id,suno_id,name,vocal_start,vocal_end\n",
            "t1,s1,Neon,12.5,64\n",
            "\n",
            't2,s2,"Two\n',
            'lines",,\n',
            "t3,s3,Bad,soon,\n",
            "t4,s4\n",
            't5,s5,"open\n',
        ]
        rows = list(_records.parse_csv(text))
        assert [n for n, _ in rows] == [2, 4, 6, 7, 8]
        assert rows[0][1] == sp.PersonaRequest(
            task_id="t1", suno_id="s1", name="Neon", vocal_start=12.5, vocal_end=64
        )
        assert rows[1][1].name == "Two\nlines"
        assert str(rows[2][1]) == "vocal_start: is not a number: 'soon'"
        assert str(rows[3][1]) == "request: has 2 cells, the header row has 5"
        assert str(rows[4][1]).startswith("request: is not valid CSV: ")
        assert list(_records.parse_csv([])) == []
        assert list(_records.count_lines(text, "csv")) == [2, 4, 6, 7, 8]

    def test_connection_errors_show_their_attempts(self):
        error = sp.APIConnectionError("cannot connect to 127.0.0.1:9", attempts=3)
        assert _console.describe(error) == "cannot connect to 127.0.0.1:9 after 3 attempts"
        assert _console.describe(sp.APIConnectionError("x", attempts=1)) == "x"

    def test_retry_counter_counts_retry_events_not_log_text(self, caplog):
        """Only RetryScheduled events count; a log record that reads like one does not."""
        counter = _console.RetryCounter()
        redraws = []
        counter.changed = lambda: redraws.append(counter.count)
        request = sp.PersonaRequest(task_id="t", suno_id="s", name="n")
        error = sp.RateLimitError("slow", code=429, http_status=429)
        counter(events.RetryScheduled(request=request, attempt=1, delay=0.5, error=error))
        counter(events.CallStarted(request=request))
        with caplog.at_level(logging.INFO, logger="suno_persona"):
            logging.getLogger("suno_persona").info("retrying after attempt %d: code 429", 1)
        counter(events.RetryScheduled(request=request, attempt=2, delay=0.5, error=error))
        assert (counter.count, redraws) == (2, [1, 2])

    def test_a_wildcard_address_prints_as_loopback(self):
        assert _main.usable_url("http://0.0.0.0:8000") == "http://127.0.0.1:8000"
        assert _main.usable_url("http://[::]:8000") == "http://[::1]:8000"
        assert _main.usable_url("http://10.1.2.3:8000") == "http://10.1.2.3:8000"

    async def test_allow_insecure_http_reaches_the_client(self):
        """--allow-insecure-http lets a plain http URL to another host through (nothing sent)."""
        connection = _connect.Connection(
            api_key=KEY, base_url="http://192.0.2.1:8000", timeout=1.0, max_attempts=None,
            emulate=False, allow_insecure_http=True,
        )  # fmt: skip
        async with _connect.open_client(connection) as client:
            assert not client.closed
        refused = attrs.evolve(connection, allow_insecure_http=False)
        with pytest.raises(_connect.UsageError, match="--allow-insecure-http"):
            async with _connect.open_client(refused):
                pass  # pragma: no cover

    def test_a_connection_shows_neither_its_key_nor_its_store(self):
        """The options' value object has the key and the store URL (which may hold a
        password) out of its repr, so a traceback with locals shows neither."""
        connection = _connect.Connection(
            api_key=KEY, base_url=None, timeout=1.0, max_attempts=None, emulate=True,
            allow_insecure_http=False, throttle_store="redis://:s3cret@127.0.0.1:6379/0",
        )  # fmt: skip
        assert KEY not in repr(connection)
        assert "s3cret" not in repr(connection)

    def test_secrets_are_masked_longest_first(self):
        secrets = _console.Secrets()
        for value in ("sk-a", "", "sk-abc", "sk-a"):
            secrets.add(value)
        assert secrets.redact("sk-abc and sk-a") == "*** and ***"


class TestStreaming:
    async def test_stdin_to_stdout(self, emu, env):
        """'-' reads INPUT from stdin and writes records to stdout; the summary stays on stderr."""
        data = "".join(json.dumps(fields(n)) + "\n" for n in range(1, 6)).encode()
        run = await cli("batch", "-", "-o", "-", env=env, stdin=data)
        assert run.status == 0
        records = [json.loads(line) for line in run.out.splitlines()]
        assert sorted(r["line"] for r in records) == [1, 2, 3, 4, 5]
        assert all(r["persona_id"] in emu.personas for r in records)
        assert run.err_lines[-1].startswith("done: 5 lines, 5 succeeded, 0 failed; ")
        assert run.err_lines[-1].endswith("records on stdout")

    async def test_a_slow_producer_does_not_hold_records_back(self, emu, env):
        """`slow-export | batch -`: each line is sent and its record written while stdin waits.

        A blocking read of stdin on the event loop held back the request of every line read
        so far (their answers, their records, their timeouts) until the next line came.
        """
        proc = await asyncio.create_subprocess_exec(
            *MODULE, "batch", "-", "-o", "-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            for n in (1, 2):
                proc.stdin.write(json.dumps(fields(n)).encode() + b"\n")
                await proc.stdin.drain()
                # stdin stays open: the record must come before any more input does
                record = json.loads(await asyncio.wait_for(proc.stdout.readline(), TIMEOUT))
                assert record["line"] == n
                assert record["persona_id"] in emu.personas
            proc.stdin.close()
            rest, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert (proc.returncode, rest) == (0, b"")
        assert err.decode().splitlines()[-1].startswith("done: 2 lines, 2 succeeded, 0 failed; ")

    async def test_csv_input_by_suffix_or_by_format(self, emu, env, tmp_path):
        """A .csv INPUT (or --format csv) is read as CSV under a header row of field names."""
        text = (
            "task_id,suno_id,name,vocal_start,vocal_end,style\n"
            'task_1,suno_1,Neon Siren,12.5,64,"Western R&B, moody"\n'
            "task_2,suno_2,Kira Lumen,,,\n"
            "task_3,suno_3,Bad Numbers,soon,64,\n"
        )
        source = tmp_path / "in.csv"
        source.write_text(text, encoding="utf-8")
        sink = tmp_path / "out.jsonl"
        run = await cli("batch", str(source), "-o", str(sink), env=env)
        assert run.status == 1
        records = by_line(read_records(sink))
        assert [r["line"] for r in records] == [2, 3, 4]
        assert records[2]["error"]["message"] == "vocal_start: is not a number: 'soon'"
        assert emu.requests[0].json["vocal_start"] == 12.5 or emu.requests[1].json
        piped = await cli("batch", "-", "-o", "-", "--format=csv", env=env, stdin=text.encode())
        assert piped.status == 1
        assert sorted(json.loads(line)["line"] for line in piped.out.splitlines()) == [2, 3, 4]

    async def test_a_csv_batch_leaves_no_file_unclosed(self, env, tmp_path):
        """Under -X dev, a CSV INPUT's text wrapper gave a ResourceWarning at the end."""
        source = tmp_path / "in.csv"
        source.write_text("task_id,suno_id,name\ntask_1,suno_1,Singer 1\n", encoding="utf-8")
        dev = (sys.executable, "-X", "dev", "-W", "always::ResourceWarning", "-m", "suno_persona")
        run = await cli("batch", str(source), "-o", "-", env=env, command=dev)
        assert run.status == 0
        assert "ResourceWarning" not in run.err

    async def test_an_output_that_cannot_be_created_could_not_start(self, emu, env, tmp_path):
        """A missing directory: exit 2, the path as given, nothing sent."""
        source = write_lines(tmp_path / "in.jsonl", [fields(1)])
        run = await cli("batch", str(source), "-o", "/nonexistent/dir/out.jsonl", env=env)
        assert (run.status, run.err_lines) == (
            2,
            ["error: cannot write /nonexistent/dir/out.jsonl: No such file or directory"],
        )
        assert emu.requests == []

    @pytest.mark.parametrize("output", ["-", "/dev/stdout"])
    async def test_a_closed_pipe_stops_the_batch_cleanly(self, env, tmp_path, output):
        """`batch big.jsonl -o - | head -2` ends at once, quietly, with 141, as grep does."""
        source = write_lines(tmp_path / "in.jsonl", [fields(n) for n in range(1, 5001)])
        command = (
            f"{sys.executable} -m suno_persona batch {source} -o {output} | head -2; "
            'echo "status ${PIPESTATUS[0]}" >&2'
        )
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert len(out.decode().splitlines()) == 2
        assert err.decode() == "status 141\n"

    async def test_a_null_line_is_said_in_json_terms(self, env, tmp_path):
        source = write_lines(tmp_path / "in.jsonl", ["null"])
        run = await cli("batch", str(source), "-o", "-", env=env)
        assert run.status == 1
        assert json.loads(run.out)["error"]["message"] == (
            "request: must be a JSON object of fields, not null"
        )

    async def test_connection_errors_count_their_attempts(self, emu):
        """A server that is not there: the error line says how many attempts were made."""
        port = emu.base_url.rsplit(":", 1)[1]
        await emu.stop()
        env = environment(SUNO_API_KEY=KEY, SUNO_API_BASE_URL=f"http://127.0.0.1:{port}")
        run = await cli(
            "generate", "--task-id=t", "--suno-id=s", "--name=n", "--max-attempts=2", env=env
        )
        assert run.status == 1
        [line] = run.err_lines
        assert line.startswith("error: ")
        assert line.endswith(" after 2 attempts")

    async def test_plain_http_elsewhere_points_to_the_option(self):
        env = environment(SUNO_API_KEY=KEY)
        run = await cli(
            "generate", "--task-id=t", "--suno-id=s", "--name=n",
            "--base-url=http://192.0.2.1:8000", env=env,
        )  # fmt: skip
        assert run.status == 2
        assert "--allow-insecure-http" in run.err
        assert "allow_insecure_http=True" not in run.err

    async def test_the_emulator_is_imported_only_when_used(self):
        code = (
            "import sys; from suno_persona._cli import main; main(['generate', '--help']); "
            "print('suno_persona.testing' in sys.modules, 'aiohttp.web' in sys.modules)"
        )
        run = await cli(command=(sys.executable, "-c", code))
        assert run.out.splitlines()[-1] == "False False"


class TestEmulatorFaults:
    async def serving(self, *args: str):
        proc = await asyncio.create_subprocess_exec(
            *MODULE, "emulator", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment(),
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        return proc, line.decode().strip()

    async def stop(self, proc) -> None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0

    async def test_a_share_of_random_faults_with_a_seed(self):
        """--fail-rate 1 --fail-codes 500: every answer is a 500 (500 is never retried)."""
        proc, base_url = await self.serving("--fail-rate=1", "--fail-codes=500", "--seed=7")
        try:
            async with sp.AsyncPersonaClient("sk-test", base_url=base_url) as client:
                with pytest.raises(sp.ServerError):
                    await client.generate_persona(fields(1))
        finally:
            await self.stop(proc)

    async def test_a_maintenance_window(self):
        proc, base_url = await self.serving("--maintenance=60")
        policy = sp.RetryPolicy(max_attempts=1)
        try:
            async with sp.AsyncPersonaClient("sk-test", base_url=base_url, retry=policy) as client:
                with pytest.raises(sp.ServiceUnavailableError):
                    await client.generate_persona(fields(1))
        finally:
            await self.stop(proc)

    async def test_a_wildcard_host_prints_a_usable_url(self):
        proc, base_url = await self.serving("--host=0.0.0.0")
        try:
            assert base_url.startswith("http://127.0.0.1:")
            async with sp.AsyncPersonaClient("sk-test", base_url=base_url) as client:
                assert (await client.generate_persona(fields(1))).persona_id
        finally:
            await self.stop(proc)

    @pytest.mark.parametrize(
        "args", [["--fail-rate=2"], ["--fail-codes=200"], ["--fail-codes=x"], ["--maintenance=0"]]
    )
    def test_fault_options_are_checked(self, capsys, args):
        assert _main.main(["emulator", *args]) == 2
        assert "error: argument" in capsys.readouterr().err

    async def test_random_faults_repeat_with_the_seed(self):
        """The same seed gives the same faults; the share is roughly the one asked for."""
        codes = []
        for _ in range(2):
            async with PersonaEmulator(fail_rate=0.3, seed=11) as emu:
                policy = sp.RetryPolicy(max_attempts=1)
                async with sp.AsyncPersonaClient(
                    "sk-test", base_url=emu.base_url, retry=policy, throttle=None
                ) as client:
                    await client.generate_many([fields(n) for n in range(60)], concurrency=1)
                codes.append([r.code for r in emu.requests])
        assert codes[0] == codes[1]
        assert set(codes[0]) <= {200, 429, 455, 500}
        assert 5 <= sum(c != 200 for c in codes[0]) <= 35
        with pytest.raises(ValueError, match="fail_rate"):
            PersonaEmulator(fail_rate=1.5)
        with pytest.raises(ValueError, match="fail_codes"):
            PersonaEmulator(fail_codes=[200])
