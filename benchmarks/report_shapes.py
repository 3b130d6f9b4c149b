"""The limiter-shapes suite's report: every run of every shape, judged against issue 19's targets.

For each run (a round runs the client, ``throttle=None`` and the recipe back to back):

* nothing lost: every request succeeded;
* time <= max(1.10 x ideal, 1.05 x the faster of ``throttle=None`` and the recipe in the same
  round), ideal from the server's model; with random refusals (no real limit), time <= 1.10 x
  ``throttle=None`` instead;
* 429s per request <= 0.05 where a real limit exists; for a window, a quota or a denial
  counter, 0.05 plus one 429 per caller in flight (the requests then in flight may each meet
  the spent window once: 32 for 32 callers); <= 0.02 when the limit is announced in RateLimit
  headers (no such allowance: the headers say the window is spent before it is); not judged
  with random refusals or a slow API;
* maintenance: 455s <= callers + 10 (the existing maintenance target).

Every run is reported, none chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.harness import Measurement
from benchmarks.scenarios import (
    HEADERS,
    LIMIT,
    MAINTENANCE,
    RANDOM,
    UNTHROTTLED,
    WINDOW,
    Scenario,
)
from benchmarks.tables import fmt, table

TIME_OVER_IDEAL = 1.10
TIME_OVER_BASELINE = 1.05
RANDOM_OVER_UNTHROTTLED = 1.10
PER_REQUEST = {LIMIT: 0.05, WINDOW: 0.05, HEADERS: 0.02}
MAINTENANCE_SLACK = 10
CLIENT = "suno_persona"


@dataclass(frozen=True)
class Judged:
    """One run of the client, its targets, and what it missed."""

    client: Measurement
    unthrottled: Measurement | None
    recipe: Measurement | None
    time_target: float
    refusal_target: float  # 429s per request (455s in all, for maintenance)
    refusals: float
    missed: tuple[str, ...]


def _wall(m: Measurement | None) -> float:
    return m.wall if m is not None and m.status == "ok" else math.nan


def refusal_target(scenario: Scenario) -> float:
    if scenario.kind == MAINTENANCE:
        return scenario.concurrency + MAINTENANCE_SLACK
    target = PER_REQUEST.get(scenario.kind, math.nan)
    if scenario.kind == WINDOW:
        target += scenario.concurrency / scenario.requests
    return target


def judge(scenario: Scenario, client: Measurement, others: dict[str, Measurement]) -> Judged:
    unthrottled, recipe = others.get(UNTHROTTLED), others.get("recipe")
    if scenario.kind == RANDOM:
        time_target = RANDOM_OVER_UNTHROTTLED * _wall(unthrottled)
    else:
        faster = min(_wall(unthrottled), _wall(recipe))  # nan if both failed
        ideal = 0.0 if math.isnan(client.ideal) else client.ideal
        time_target = max(TIME_OVER_IDEAL * ideal, TIME_OVER_BASELINE * faster)
    if scenario.kind == MAINTENANCE:
        refusals = float(client.count(455))
    else:
        refusals = client.count(429) / scenario.requests
    target = refusal_target(scenario)
    missed = []
    if client.status != "ok":
        missed.append(client.status)
    elif client.outcome.ok < scenario.requests:
        missed.append("lost")
    if not client.wall <= time_target:  # a nan target (no baseline finished) is missed too
        missed.append("time")
    if refusals > target:
        missed.append("455s" if scenario.kind == MAINTENANCE else "429s")
    return Judged(client, unthrottled, recipe, time_target, target, refusals, tuple(missed))


def judged_runs(scenario: Scenario, groups: list[list[Measurement]]) -> list[Judged]:
    """The client's runs, each judged against the baselines of its round."""
    by_name = {runs[0].contender: runs for runs in groups if runs}
    rounds = []
    for client in by_name.get(CLIENT, []):
        others = {
            name: m for name, runs in by_name.items() for m in runs if m.repeat == client.repeat
        }
        rounds.append(judge(scenario, client, others))
    return rounds


def _verdict(j: Judged) -> str:
    return "✓" if not j.missed else "✗ " + ", ".join(j.missed)


def _targets(scenario: Scenario) -> str:
    if scenario.kind == RANDOM:
        time = f"time <= {RANDOM_OVER_UNTHROTTLED} x throttle=None"
    else:
        time = (
            f"time <= max({TIME_OVER_IDEAL} x ideal, {TIME_OVER_BASELINE} x the faster of "
            "throttle=None and the recipe)"
        )
    target = refusal_target(scenario)
    if scenario.kind == MAINTENANCE:
        return f"{time}; 455s <= {target:.0f}"
    if math.isnan(target):
        return f"{time}; 429s not judged (no real limit)"
    return f"{time}; 429s per request <= {target:.3f}"


def report_shape(scenario: Scenario, groups: list[list[Measurement]]) -> str:
    """Every run of every contender, and the client's verdict in its round."""
    verdicts = {(j.client.repeat): j for j in judged_runs(scenario, groups)}
    unit = "455s" if scenario.kind == MAINTENANCE else "429s per request"
    header = ["run", "contender", "succeeded", "time (s)", "time / ideal", unit, "HTTP requests"]
    header.append("verdict")
    rows = []
    for m in sorted((m for runs in groups for m in runs), key=lambda m: m.repeat):
        if m.status != "ok":
            rows.append([str(m.repeat + 1), m.contender, m.status] + ["n/a"] * 4 + [""])
            continue
        refused = m.count(455) if scenario.kind == MAINTENANCE else m.count(429) / scenario.requests
        j = verdicts.get(m.repeat)
        rows.append(
            [
                str(m.repeat + 1),
                m.contender,
                f"{m.outcome.ok}/{scenario.requests}",
                fmt(m.wall),
                fmt(m.wall / m.ideal) if m.ideal > 0 else "-",
                fmt(refused, ".0f" if scenario.kind == MAINTENANCE else ".3f"),
                str(m.total_http),
                _verdict(j) if m.contender == CLIENT and j is not None else "",
            ]
        )
    ideal = next((m.ideal for runs in groups for m in runs if not math.isnan(m.ideal)), math.nan)
    intro = (
        f"Server: {scenario.server}. Ideal (the model's, from the first request): "
        f"{fmt(ideal)} s. Targets for suno_persona: {_targets(scenario)}."
    )
    return f"{intro}\n\n{table(header, rows)}"


def summary(scenarios: list[Scenario], results: dict[str, list[list[Measurement]]]) -> str:
    """One line per run of each shape: the client against its targets (for docs/benchmarks.md)."""
    header = ["shape", "run", "succeeded", "time (s)", "ideal (s)", "time target (s)"]
    header += ["throttle=None (s)", "recipe (s)", "429s per request (target)", "verdict"]
    rows = []
    for scenario in scenarios:
        for j in judged_runs(scenario, results[scenario.name]):
            m = j.client
            spec = ".0f" if scenario.kind == MAINTENANCE else ".3f"
            target = "not judged" if math.isnan(j.refusal_target) else fmt(j.refusal_target, spec)
            refused = f"{fmt(j.refusals, spec)} ({target})"
            if scenario.kind == MAINTENANCE:
                refused = f"{fmt(j.refusals, spec)} 455s ({target})"
            rows.append(
                [
                    f"`{scenario.name}`",
                    str(m.repeat + 1),
                    f"{m.outcome.ok}/{scenario.requests}",
                    fmt(m.wall),
                    fmt(m.ideal),
                    fmt(j.time_target),
                    fmt(_wall(j.unthrottled)),
                    fmt(_wall(j.recipe)),
                    refused,
                    _verdict(j),
                ]
            )
    passed = sum(row[-1] == "✓" for row in rows)
    return (
        f"{table(header, rows)}\n\nsuno_persona met every target in {passed} of {len(rows)} runs."
    )
