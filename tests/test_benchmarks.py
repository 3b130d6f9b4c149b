"""The benchmark harness runs every scenario the issues ask for and reports each one.

Its numbers are not judged here (timing goals belong to the benchmarks, run by hand); what
is checked is that ``python -m benchmarks.run`` still runs them all, with the client
succeeding in each, and prints a table per scenario, the one of processes sharing Redis
included; that the limiter-shapes suite runs every shape and reports every run; and that the
benchmark server answers as the limiter models of ``suno_persona.testing._limiters`` decide.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 40
TITLES = (
    "Rate limit",
    "Rate limit with Retry-After",
    "Two 429s in a long run at the limit",
    "A limit that changes",
    "A slow API (0.2 s per answer)",
    "Maintenance window",
    "Client CPU",
)


@pytest.mark.slow
def test_every_scenario_runs_and_is_reported():
    if shutil.which("redis-server") is None and os.environ.get("SUNO_REQUIRE_REDIS") != "1":
        pytest.skip("redis-server is not installed (the multi-process scenario needs it)")
    # Without coverage: the harness is timed, and traced it would be several times slower.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE")}
    command = [sys.executable, "-m", "benchmarks.run", "--scenario", "all"]
    command += ["--contender", "suno_persona", "--requests", str(REQUESTS), "--timeout", "60"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = done.stdout
    for title in TITLES:
        assert f"### {title}: {REQUESTS} requests" in report, title
    rows = re.findall(r"^\| suno_persona \| (\d+)/(\d+) \|", report, re.MULTILINE)
    assert len(rows) == len(TITLES)
    assert all(ok == total == str(REQUESTS) for ok, total in rows), rows
    # The CPU table shows how much the rounds spread, beside the median ratio.
    assert re.search(r"^\| suno_persona \|.* \| \d+\.\d\d-\d+\.\d\d \|$", report, re.MULTILINE)
    assert "### Processes sharing one key through Redis" in report
    shared = r"^\| 4 \| shared through Redis \| 1 \| \d+/\d+ \| [\d.]+x \| "
    shared += r"[\d.]+/s [✓✗] \| [\d.]+ [✓✗] \|"
    assert re.search(shared, report, re.MULTILINE), report[-1500:]


def test_the_multiprocess_benchmark_takes_a_list_of_process_counts():
    from benchmarks.multiprocess import parse_processes  # noqa: PLC0415

    assert parse_processes("4,16") == (4, 16)
    assert parse_processes("4") == (4,)
    for bad in ("", "4,", "0,16", "four"):
        with pytest.raises(argparse.ArgumentTypeError, match="counts >= 1"):
            parse_processes(bad)


def test_the_multiprocess_benchmark_scales_a_run_to_about_ten_seconds():
    from benchmarks.multiprocess import per_process  # noqa: PLC0415

    assert (per_process(4), per_process(16)) == (125, 31)


@pytest.mark.parametrize(
    ("rate", "refused", "marks"),
    [(47.6, 0.05, ("✓", "✓")), (52.4, 0.0, ("✓", "✓")), (47.4, 0.051, ("✗", "✗"))],
)
def test_a_multiprocess_run_is_marked_against_issue_20s_targets(rate, refused, marks):
    """Within 5 % of 50/s, at most 0.05 429s per request."""
    from benchmarks.multiprocess import row  # noqa: PLC0415

    measured = {"each": 125, "ok": 500, "ratio": 1.0, "rate": rate, "refused": refused}
    measured |= {"unavailable": 2, "alone": 0, "calls": 1.5, "p50": 1.0, "p99": 9.0}
    line = row(4, "shared through Redis", 1, measured)
    assert line.startswith("| 4 | shared through Redis | 1 | 500/500 | 1.00x |")
    assert f"| {rate:.1f}/s {marks[0]} | {refused:.3f} {marks[1]} | 2 | 0 | 1.50 |" in line


SHAPE_REQUESTS = 20


@pytest.mark.slow
def test_the_limiter_shapes_suite_runs_every_shape_and_reports_every_run():
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE")}
    command = [sys.executable, "-m", "benchmarks.run", "--suite", "shapes"]
    command += ["--requests", str(SHAPE_REQUESTS), "--timeout", "60"]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = done.stdout
    shapes = _server_module().SHAPES  # every family the server can serve
    from benchmarks.scenarios import SHAPE_CONTENDERS, SHAPES  # noqa: PLC0415

    assert {scenario.shape for scenario in SHAPES.values()} == set(shapes) - {"none"}
    for name in SHAPES:
        assert f"#### Shape `{name}`: {SHAPE_REQUESTS} requests" in report, name
        # the summary: one row per run, the client's count of successes, a verdict
        row = re.search(
            rf"^\| `{name}` \| 1 \| (\d+)/(\d+) \|.*\| (✓|✗[^|]*) \|$", report, re.MULTILINE
        )
        assert row, name
        assert row.group(1) == row.group(2) == str(SHAPE_REQUESTS), row.group(0)
    for contender in SHAPE_CONTENDERS:
        rows = re.findall(rf"^\| 1 \| {re.escape(contender)} \| (\d+)/\d+ \|", report, re.MULTILINE)
        assert len(rows) == len(SHAPES), contender
    assert "### Four processes on one key with no shared store (50/s)" in report
    assert re.search(r"^\| 1 \| \d+/\d+ \| [\d.]+x \| [\d.]+ [✓✗] \|$", report, re.MULTILINE)


def _server_module():
    spec = importlib.util.spec_from_file_location("bench_server", ROOT / "benchmarks" / "server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(name="bench_server")
async def _bench_server():
    runner = web.AppRunner(_server_module().make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        yield session
    await runner.cleanup()


BODY = {"task_id": "t", "suno_id": "s", "name": "n"}
ENDPOINT = "/api/v1/client/job/suno-persona-generate"


async def _send(session, count=1):
    async def one():
        async with session.post(ENDPOINT, json=BODY, headers={"x-api-key": "k"}) as response:
            return response.status, dict(response.headers)

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_the_server_refuses_as_its_model_does_with_retry_after_in_whole_seconds(
    bench_server,
):
    """A fixed window of 2 per minute: two accepted, then 429 with the seconds to its end."""
    query = {"shape": "fixed_window", "limit": 2, "window": 60, "retry_after": 1}
    async with bench_server.post("/_control/reset", params=query) as response:
        assert response.status == 200
    answers = [await _send(bench_server) for _ in range(3)]
    assert [a[0][0] for a in answers] == [200, 200, 429]
    retry_after = answers[2][0][1]["Retry-After"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    async with bench_server.get("/_control/stats", params={"requests": 5}) as response:
        stats = await response.json()
    assert stats["counts"] == {"200": 2, "429": 1}
    assert 0 < stats["ideal"] <= 120  # two windows' ends from the first request


async def test_the_server_sends_the_models_ratelimit_headers(bench_server):
    query = {"shape": "token_bucket", "rate": 1, "burst": 1, "headers": 1}
    async with bench_server.post("/_control/reset", params=query):
        pass
    [(status, headers)] = await _send(bench_server)
    assert status == 200
    assert headers["RateLimit-Policy"] == '"default";q=1;w=1'
    assert headers["RateLimit"].startswith('"default";r=0;')
    [(status, headers)] = await _send(bench_server)
    assert status == 429
    assert "Retry-After" not in headers


async def test_a_concurrency_limit_holds_the_place_for_the_latency_then_frees_it(bench_server):
    query = {"shape": "concurrency", "limit": 1, "latency": 0.3}
    async with bench_server.post("/_control/reset", params=query):
        pass
    statuses = sorted(status for status, _ in await _send(bench_server, 2))
    assert statuses == [200, 429]
    [(status, _)] = await _send(bench_server)
    assert status == 200  # the first request's place was given back when it answered


async def test_an_unknown_shape_is_refused(bench_server):
    async with bench_server.post("/_control/reset", params={"shape": "leaky"}) as response:
        assert response.status == 400
        assert "token_bucket" in await response.text()
