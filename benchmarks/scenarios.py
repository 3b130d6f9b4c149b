"""What the benchmark server does in each scenario, and how much work the contenders get.

Two groups: ``SCENARIOS``, the scenarios of the earlier issues (``python -m benchmarks.run``),
and ``SHAPES``, the limiter-shapes suite (``python -m benchmarks.run --suite shapes``): one
scenario per family of limiter that real APIs and gateways use, each with its own parameters,
served by the models of ``suno_persona.testing._limiters`` (``benchmarks/server.py`` builds the
model from ``shape`` and ``limit``, the query of its ``/_control/reset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MULTIPROCESS = "multiprocess"
UNTHROTTLED = "suno_persona (throttle=None)"
# The shapes suite always runs these three: its time target needs the two baselines.
SHAPE_CONTENDERS = ("suno_persona", UNTHROTTLED, "recipe")

# What a shape's 429s are judged against (see ``Scenario.kind``).
LIMIT = "limit"  # a real limit: <= 0.05 429s per request
WINDOW = "window"  # a window, quota or denial counter: the same, plus one per caller in flight
HEADERS = "headers"  # a limit announced in RateLimit headers: <= 0.02
RANDOM = "random"  # no real limit: time <= 1.10 x throttle=None, 429s not judged
NO_LIMIT = "none"  # nothing refuses (slow API)
MAINTENANCE = "maintenance"  # 455s, not 429s: <= concurrency + 10


@dataclass(frozen=True)
class Scenario:
    """One scenario.

    ``shape`` and ``limit`` (name, value pairs) are sent to the server's ``/_control/reset``;
    ``window`` starts a maintenance window through ``/_control/maintenance`` as the run begins.
    ``server`` describes the server for the report; ``kind`` says which targets a shape of the
    limiter-shapes suite is held to.
    """

    name: str
    title: str
    requests: int
    concurrency: int
    server: str
    shape: str = "none"
    limit: tuple[tuple[str, Any], ...] = ()
    window: float = 0.0
    warmup: int = 0
    repeat: int = 1
    blip_at: float = -1.0
    blip_times: int = 0
    report: str = "rate"
    kind: str = LIMIT
    contenders: tuple[str, ...] = ()  # default: the command line's

    def param(self, name: str, default: Any = 0) -> Any:
        return dict(self.limit).get(name, default)

    def reset_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"shape": self.shape, **dict(self.limit)}
        if self.blip_times:
            params["blip_at"], params["blip_times"] = self.blip_at, self.blip_times
        return params


def _limit(**params: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(params.items())


_BUCKET = "token bucket 50 requests/s, burst 10"
SCENARIOS = {
    "rate": Scenario(
        "rate", "Rate limit", 300, 32, f"{_BUCKET}, 429 without Retry-After",
        "token_bucket", _limit(rate=50, burst=10),
    ),
    "retry_after": Scenario(
        "retry_after", "Rate limit with Retry-After", 300, 32,
        f"{_BUCKET}, 429 with Retry-After (whole seconds)",
        "token_bucket", _limit(rate=50, burst=10, retry_after=1),
    ),
    "blip": Scenario(
        "blip", "Two 429s in a long run at the limit", 400, 32,
        f"{_BUCKET}, 429 with Retry-After (whole seconds), "
        "2 extra 429s with Retry-After: 1 at t = 2 s",
        "token_bucket", _limit(rate=50, burst=10, retry_after=1), blip_at=2.0, blip_times=2,
    ),
    "changing": Scenario(
        "changing", "A limit that changes", 650, 32,
        "a limit that changes: 50/s for 4 s -> 10/s for 4 s -> 100/s, burst 10, "
        "429 with Retry-After (whole seconds)",
        "changing", _limit(schedule="50:4,10:4,100:4", burst=10, retry_after=1),
    ),
    "slow": Scenario(
        "slow", "A slow API (0.2 s per answer)", 200, 100, "no limit, every answer after 0.2 s",
        "slow", _limit(latency=0.2), report="slow", contenders=("suno_persona", UNTHROTTLED),
    ),
    "maintenance": Scenario(
        "maintenance", "Maintenance window", 100, 50,
        "every request answered 455 (no Retry-After) for 2 s from the start, no rate limit",
        window=2.0, report="maintenance",
    ),
    "cpu": Scenario(
        "cpu", "Client CPU", 2000, 32, "accepts everything", warmup=200, repeat=15, report="cpu"
    ),
}  # fmt: skip


def _shape(name: str, server: str, shape: str, kind: str, requests: int = 300, **limit: Any):
    return Scenario(
        name, name, requests, 32, server, shape, _limit(**limit),
        report="shape", kind=kind, contenders=SHAPE_CONTENDERS,
    )  # fmt: skip


SHAPES = {
    s.name: s
    for s in (
        _shape("bucket_5", "token bucket 5/s, burst 10, no Retry-After", "token_bucket", LIMIT,
               requests=60, rate=5, burst=10),
        _shape("bucket_50", "token bucket 50/s, burst 10, no Retry-After", "token_bucket", LIMIT,
               rate=50, burst=10),
        _shape("bucket_400", "token bucket 400/s, burst 10, no Retry-After", "token_bucket",
               LIMIT, requests=2000, rate=400, burst=10),
        _shape("random_30", "30% of requests refused at random, no Retry-After, no limit",
               "random", RANDOM, share=0.3),
        _shape("random_30_retry_after", "30% refused at random with Retry-After: 1, no limit",
               "random", RANDOM, share=0.3, retry_after=1),
        _shape("sliding_log", "sliding log: 50 accepted in any trailing second, no Retry-After",
               "sliding_log", LIMIT, limit=50, window=1),
        _shape("fixed_window", "fixed window: 50 per wall-clock second, Retry-After to its end",
               "fixed_window", WINDOW, limit=50, window=1, retry_after=1),
        _shape("quota", "quota: 100 per 5 s (fixed window), Retry-After to its end",
               "fixed_window", WINDOW, limit=100, window=5, retry_after=1),
        _shape("denial_counting", "denial counting (HAProxy http_req_rate, deny 429): 50 "
               "requests, refused ones included, in any trailing second, no Retry-After",
               "denial_counting", WINDOW, limit=50, window=1),
        _shape("denial_counting_retry_after", "denial counting as above, with Retry-After: 1",
               "denial_counting", WINDOW, limit=50, window=1, retry_after=1),
        _shape("concurrency", "concurrency limit (nginx limit_conn): 8 in flight, 0.25 s each, "
               "429 at once without Retry-After", "concurrency", LIMIT, requests=200,
               limit=8, latency=0.25),
        _shape("changing", "token bucket 50/s for 2 s -> 10/s for 2 s -> 100/s, burst 10, "
               "Retry-After", "changing", LIMIT, schedule="50:2,10:2,100:2", burst=10,
               retry_after=1),
        _shape("slow", "no limit, every answer after 0.2 s", "slow", NO_LIMIT, latency=0.2),
        _shape("maintenance", "455 for every request for 2 s from the first one, no "
               "Retry-After, then no limit", "maintenance", MAINTENANCE, seconds=2),
        _shape("quota_headers", "quota 100 per 5 s (fixed window), Retry-After to its end, "
               "RateLimit-Policy and RateLimit on every answer", "fixed_window", HEADERS,
               limit=100, window=5, retry_after=1, headers=1),
        _shape("bucket_headers", "token bucket 50/s, burst 10, RateLimit-Policy and RateLimit "
               "on every answer, no Retry-After", "token_bucket", HEADERS, rate=50, burst=10,
               headers=1),
    )
}  # fmt: skip
