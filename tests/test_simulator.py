"""Every limiter family against the whole client, on virtual time (``tests/simulator.py``).

Each run is the issue's measurement in miniature: the default client, 32 callers,
``RetryPolicy(max_attempts=50, max_delay=10)``, against ``throttle=None`` and the usual recipe
(aiohttp-style calls under tenacity's backoff and a semaphore), on the same server model.
Runs are deterministic, so a bound here is a regression line, not a statistic; the real-time
numbers, over repeated runs, are the benchmarks' (``python -m benchmarks.run --suite shapes``).

The bounds are the issue's targets where the model meets them. Where it does not yet (a
one-second sliding log with no ``Retry-After``, a changing limit, 429s at the start-up of a
rate limit),
the bound is what it does today, written down so that no change makes it worse, and the
gap is stated in docs/benchmarks.md.
"""

from __future__ import annotations

import statistics

import pytest
from simulator import run

from suno_persona.testing import _limiters as shapes

START = 0.37  # a phase inside a one-second window, as a real run has


def ideal(factory, requests):
    return factory(START).ideal(requests, START)


def contenders(factory, requests=300, **options):
    client = run(factory, "client", requests=requests, start=START, **options)
    unthrottled = run(factory, "none", requests=requests, start=START)
    recipe = run(factory, "recipe", requests=requests, start=START)
    for result in (client, unthrottled, recipe):
        assert result.succeeded == requests, result.errors  # nothing lost, by anyone
    return client, unthrottled, recipe


def time_target(factory, requests, unthrottled, recipe):
    """The issue's: <= max(1.10 x ideal, 1.05 x the faster of throttle=None and the recipe)."""
    return max(1.10 * ideal(factory, requests), 1.05 * min(unthrottled.seconds, recipe.seconds))


@pytest.mark.parametrize(
    ("factory", "requests", "refusals"),
    [
        pytest.param(lambda _s: shapes.TokenBucket(50, 10), 300, 0.15, id="bucket-50"),
        pytest.param(
            lambda _s: shapes.TokenBucket(50, 10, retry_after=True), 300, 0.15, id="bucket-50-ra"
        ),
        pytest.param(lambda _s: shapes.TokenBucket(400, 10), 2000, 0.05, id="bucket-400"),
        pytest.param(lambda _s: shapes.FixedWindow(100, 5.0), 300, 0.15, id="quota"),  # see below
        pytest.param(lambda _s: shapes.DenialCounting(50, 1.0), 300, 0.2, id="denial-counting"),
        pytest.param(lambda _s: shapes.ConcurrencyLimit(8, 0.25), 300, 0.1, id="concurrency"),
        # whole-second Retry-After: each window's quota goes at its reset, as at once as
        # sending without a throttle does it (paced evenly, they took 1.37x and 1.69x)
        pytest.param(lambda _s: shapes.FixedWindow(50, 1.0), 300, 0.15, id="fixed-window"),
        # 32 callers on a quota of 20: most of its 429s are the start-up's (see below)
        pytest.param(lambda _s: shapes.FixedWindow(20, 1.0), 150, 0.3, id="fixed-window-20"),
        pytest.param(
            lambda _s: shapes.DenialCounting(50, 1.0, retry_after=1.0),
            300,
            0.15,
            id="denial-counting-ra",
        ),
        pytest.param(
            lambda _s: shapes.SlidingLog(50, 1.0, retry_after=True), 300, 0.15, id="sliding-log-ra"
        ),
    ],
)
def test_a_real_limit_is_met_in_time_with_few_429s(factory, requests, refusals):
    """Within the time target, and fewer 429s than sending without a throttle (for a quota,
    whose spent windows cost the requests then in flight, about as few)."""
    client, unthrottled, recipe = contenders(factory, requests)
    assert client.seconds <= time_target(factory, requests, unthrottled, recipe)
    assert client.refusals_per_request <= refusals
    assert client.refusals_per_request < unthrottled.refusals_per_request


@pytest.mark.parametrize("retry_after", [None, 1.0], ids=["no-retry-after", "retry-after-1"])
def test_random_refusals_cost_no_throughput(retry_after):
    """30% refused at random, no real limit: the refusals do not respond to the rate, so
    they lower nothing, and the client is no slower than sending without a throttle (the
    issue's bound is 1.10 x). v0.2 took ~100 s for these 300 calls."""
    factory = lambda _s: shapes.RandomRefusals(0.3, retry_after=retry_after, seed=3)  # noqa: E731
    client, unthrottled, _ = contenders(factory)
    assert client.seconds <= 1.10 * unthrottled.seconds


@pytest.mark.parametrize(
    ("share", "latency", "seed"),
    [(0.4, 0.02, 2), (0.5, 0.0, 1), (0.5, 0.05, 7), (0.5, 0.1, 2)],
)
def test_heavy_random_refusals_cost_no_throughput(share, latency, seed):
    """Half the requests refused at random: a test of the limit finds noise, and a later
    share a little above the noise read before is not taken for a limit (the noise's own
    error counts). Runs of 429s as long as such noise gives are no spent window. Before,
    three of these four took 7-14x the time of sending without a throttle, the pace cut
    to 1/s by tests that found a limit in chance."""
    factory = lambda _s: shapes.RandomRefusals(share, seed=seed, latency=latency)  # noqa: E731
    client = run(factory, "client", requests=300, start=START)
    unthrottled = run(factory, "none", requests=300, start=START)
    assert client.succeeded == unthrottled.succeeded == 300
    assert client.seconds <= 1.10 * unthrottled.seconds


def test_an_announced_quota_is_spent_then_waited_for_without_429s():
    """A quota announced in RateLimit headers: each window's quota at once, no 429."""
    factory = lambda _s: shapes.FixedWindow(100, 5.0, headers=True)  # noqa: E731
    client, unthrottled, recipe = contenders(factory)
    assert client.seconds <= time_target(factory, 300, unthrottled, recipe)
    assert client.refusals_per_request <= 0.02


def test_a_concurrency_limit_is_learned_as_a_cap():
    """nginx limit_conn 8: the 429s fell on requests sent with more than 8 in flight."""
    factory = lambda _s: shapes.ConcurrencyLimit(8, 0.25)  # noqa: E731
    client, unthrottled, _ = contenders(factory)
    assert client.seconds <= 1.10 * ideal(factory, 300)  # 8 in flight, not 5 (it once was)
    assert client.refusals_per_request < unthrottled.refusals_per_request / 4


@pytest.mark.parametrize(
    ("factory", "requests", "slowest"),
    [
        pytest.param(lambda _s: shapes.SlidingLog(50, 1.0), 300, 1.6, id="sliding-log"),
        pytest.param(
            lambda s: shapes.ChangingLimit([(50, 4), (10, 4), (100, 4)], start=s, retry_after=True),
            650,
            1.55,
            id="changing",
        ),
    ],
)
def test_the_shapes_still_short_of_the_target_do_not_regress(factory, requests, slowest):
    """A sliding log knocked on without a Retry-After, and a limit that changes: no 429
    storm, and no slower than today (see the module docstring)."""
    client, unthrottled, _ = contenders(factory, requests)
    assert client.seconds <= slowest * ideal(factory, requests)
    assert client.refusals_per_request <= 0.25
    assert client.refusals_per_request < unthrottled.refusals_per_request / 2


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda _s: shapes.DenialCounting(60, 2.0), id="denial-counting-2s"),
        pytest.param(lambda _s: shapes.SlidingLog(40, 2.0), id="sliding-log-2s"),
    ],
)
def test_a_window_found_spent_without_retry_after_is_learned_from_its_reopening(factory):
    """No Retry-After: knocking finds when the limiter takes requests again, and the quota
    it took before, over that time, is the pace. Better than sending without a throttle by
    far (a denial counter over 2 s once took this client 14x ideal, against throttle=None's
    3.1x, when its one accepted knock was followed by a test that collapsed the pace)."""
    client, unthrottled, _ = contenders(factory, 200)
    assert client.seconds <= 0.9 * unthrottled.seconds
    assert client.seconds <= 1.7 * ideal(factory, 200)
    assert client.refusals_per_request < unthrottled.refusals_per_request / 3


def test_a_slow_api_is_not_throttled_by_its_latency():
    """No limit, 0.2 s per answer: as fast as sending without a throttle (within 5%)."""
    factory = lambda _s: shapes.Slow(0.2)  # noqa: E731
    client, unthrottled, _ = contenders(factory, 200)
    assert client.seconds <= 1.05 * unthrottled.seconds


def test_a_maintenance_window_costs_few_requests():
    """455 for 2 s: one probe at a time, done soon after the window."""
    factory = lambda s: shapes.Maintenance(s, 2.0)  # noqa: E731
    client = run(factory, "client", requests=100, callers=50, start=START)
    assert client.succeeded == 100
    assert client.answers[455] <= 60
    assert client.seconds <= 2.0 + 1.5


def test_four_processes_without_a_shared_store():
    """Four clients on one key, no store, a 50/s bucket: each learns the limit alone. The
    issue's target is 0.10 429s per request; today's is a regression line (see the module
    docstring), and sending without a throttle does several times worse. Four models
    learning from each other's 429s are chaotic (one seed's run can differ from the next
    by 3x, and runs fall in two modes: 1.4x and 1.7-2.1x the ideal time), so the line is on
    the median of nine seeds."""
    factory = lambda _s: shapes.TokenBucket(50, 10)  # noqa: E731
    fleets = [
        run(factory, "client", requests=400, start=START, processes=4, seed=s) for s in range(9)
    ]
    unthrottled = run(factory, "none", requests=400, start=START, processes=4)
    assert all(fleet.succeeded == 400 for fleet in fleets)
    assert statistics.median(f.seconds for f in fleets) <= 1.8 * ideal(factory, 400)
    assert statistics.median(f.refusals_per_request for f in fleets) <= 0.35
    assert max(f.refusals_per_request for f in fleets) < unthrottled.refusals_per_request / 2


def test_sixty_four_callers_are_served_first_come_first_served():
    """A web app sharing one client across 64 connections against a 50/s limit: every
    request waits about as long as every other (p99 admission wait <= 1.5 x the mean)."""
    factory = lambda _s: shapes.TokenBucket(50, 10)  # noqa: E731
    result = run(factory, "client", requests=640, callers=64, start=START)
    assert result.succeeded == 640
    waits = sorted(result.admission_waits[64:])  # past the first wave
    mean = sum(waits) / len(waits)
    p99 = waits[int(0.99 * (len(waits) - 1))]
    assert p99 <= 1.5 * mean


def test_a_run_repeats_exactly():
    """The same seed gives the same run: the simulator is a regression instrument."""
    factory = lambda _s: shapes.TokenBucket(50, 10)  # noqa: E731
    first = run(factory, "client", requests=100, seed=5)
    second = run(factory, "client", requests=100, seed=5)
    assert (first.seconds, first.answers) == (second.seconds, second.answers)
