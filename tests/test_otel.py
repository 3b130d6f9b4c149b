"""The OpenTelemetry hook: spans and metrics, checked with the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from conftest import ENDPOINT, envelope
from helpers import FIELDS, fast_retry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import suno_persona as sp
from suno_persona import events as ev
from suno_persona.otel import OpenTelemetryHook

KEY = "sk-secret-key-for-otel"
FAST = fast_retry(max_attempts=3)
LIMITED = (429, envelope(429, "slow down"), {"Retry-After": "0"})


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.hook = OpenTelemetryHook(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self):
        return self.spans.get_finished_spans()

    def metrics(self) -> dict[str, list]:
        data = self.reader.get_metrics_data()
        found: dict[str, list] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = list(metric.data.data_points)
        return found


@pytest.fixture(name="otel")
def _otel() -> Telemetry:
    return Telemetry()


def client_for(base_url, otel, **options):
    options.setdefault("retry", FAST)
    return sp.AsyncPersonaClient(KEY, base_url=base_url, event_hooks=[otel.hook], **options)


async def test_spans_for_429_429_200(server, otel):
    """One call span; under it one CLIENT span named POST per attempt, with the semconv."""
    server.script = [LIMITED, LIMITED]
    async with client_for(server.base_url, otel) as client:
        persona = await client.generate_persona(**FIELDS)
    spans = otel.finished()
    attempts = [s for s in spans if s.name == "POST"]
    (call,) = [s for s in spans if s.name == "generate_persona"]
    assert len(attempts) == persona.attempts == 3
    url = urlsplit(server.base_url)
    for number, span in enumerate(attempts, 1):
        assert span.kind is SpanKind.CLIENT
        assert span.parent.span_id == call.context.span_id
        assert span.context.trace_id == call.context.trace_id
        assert span.start_time <= span.end_time
        attributes = dict(span.attributes)
        assert attributes.pop("http.request.resend_count", 0) == number - 1
        expected = {
            "http.request.method": "POST",
            "server.address": "127.0.0.1",
            "server.port": url.port,
            "url.full": server.base_url + ENDPOINT,
            "http.response.status_code": 429 if number < 3 else 200,
        }
        if number < 3:
            expected["error.type"] = "429"
            assert span.status.status_code is StatusCode.ERROR
        else:
            assert span.status.status_code is StatusCode.UNSET
        assert attributes == expected
    assert call.attributes["suno_persona.attempts"] == 3
    assert [e.name for e in call.events] == ["retry_scheduled", "retry_scheduled"]
    assert otel.hook._calls == {}


async def test_call_span_is_in_the_callers_trace(server, otel):
    """Started inside a span of the caller: the call span is its child."""
    tracer = otel.tracer_provider.get_tracer("app")
    async with client_for(server.base_url, otel) as client:
        with tracer.start_as_current_span("handler") as parent:
            await client.generate_persona(**FIELDS)
    (call,) = [s for s in otel.finished() if s.name == "generate_persona"]
    assert call.parent.span_id == parent.get_span_context().span_id


async def test_metrics(server, otel):
    """Duration per attempt, retries, and 429/455 answers counted."""
    server.script = [LIMITED, (455, envelope(455, "maintenance"), {"Retry-After": "0"})]
    async with client_for(server.base_url, otel, throttle=None) as client:
        await client.generate_persona(**FIELDS)
    found = otel.metrics()
    durations = found["http.client.request.duration"]
    assert sum(p.count for p in durations) == 3
    assert {p.attributes.get("http.response.status_code") for p in durations} == {429, 455, 200}
    assert all("url.full" not in p.attributes for p in durations)
    assert sum(p.value for p in found["suno_persona.client.retries"]) == 2
    throttled = {
        p.attributes["http.response.status_code"]: p.value
        for p in found["suno_persona.client.throttled_responses"]
    }
    assert throttled == {429: 1, 455: 1}


async def test_failed_call(server, otel):
    """A call that fails: both spans in error, error.type the status code then the class."""
    server.script = [(401, envelope(401, "bad key"))]
    async with client_for(server.base_url, otel) as client:
        with pytest.raises(sp.AuthenticationError):
            await client.generate_persona(**FIELDS)
    attempt, call = otel.finished()
    assert attempt.attributes["error.type"] == "401"
    assert call.attributes["error.type"] == "suno_persona.AuthenticationError"
    assert call.status.status_code is StatusCode.ERROR


async def test_error_without_a_reply(otel):
    """No reply: no status code, error.type the error's class."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}", otel, retry=sp.RetryPolicy(max_attempts=1))
    async with client:
        with pytest.raises(sp.APIConnectionError):
            await client.generate_persona(**FIELDS)
    attempt = next(s for s in otel.finished() if s.name == "POST")
    assert "http.response.status_code" not in attempt.attributes
    assert attempt.attributes["error.type"] == "suno_persona.APIConnectionError"


async def test_cancelled_call_ends_its_span(server, otel):
    """A cancelled call still ends its span, marked cancelled; nothing is left behind."""
    started, release = asyncio.Event(), asyncio.Event()

    async def stall(_request):
        started.set()
        await release.wait()
        return (200, envelope(200, "late", "persona_late"))

    server.script = [stall]
    async with client_for(server.base_url, otel) as client:
        task = asyncio.ensure_future(client.generate_persona(**FIELDS))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
    (call,) = otel.finished()
    assert call.attributes["error.type"] == "cancelled"
    assert otel.hook._calls == {}


async def test_throttle_events_land_on_the_current_span(server, otel):
    """A 455's breaker and pause show as events of the span current in the caller."""
    server.script = [(455, envelope(455, "maintenance"), {"Retry-After": "0"})]
    tracer = otel.tracer_provider.get_tracer("app")
    async with client_for(server.base_url, otel) as client:
        with tracer.start_as_current_span("handler"):
            await client.generate_persona(**FIELDS)
    (handler,) = [s for s in otel.finished() if s.name == "handler"]
    names = [e.name for e in handler.events]
    assert "suno_persona.breaker_opened" in names
    assert "suno_persona.pause_started" in names
    assert "suno_persona.breaker_closed" in names


def test_throttle_events_are_recorded_without_a_call(otel):
    """Every throttle event becomes a span event (the rate's None as -1)."""
    tracer = otel.tracer_provider.get_tracer("app")
    otel.hook(ev.RateChanged(old=None, new=5.0, reason="429s"))  # no span: ignored
    with tracer.start_as_current_span("handler"):
        otel.hook(ev.RateChanged(old=None, new=5.0, reason="429s"))
        otel.hook(ev.RateChanged(old=5.0, new=None, reason="grew"))
    (handler,) = otel.finished()
    assert [dict(e.attributes)["suno_persona.old"] for e in handler.events] == [-1.0, 5.0]


def test_events_of_unknown_calls_are_ignored(otel):
    """Events of a call whose start it never saw (a hook added late) change nothing."""
    request = sp.PersonaRequest(**FIELDS)
    error = sp.RateLimitError("x", code=429, http_status=429)
    otel.hook(
        ev.AttemptFinished(
            request=request, attempt=1, elapsed=0.1, http_status=200, error=None, call_id=-5
        )
    )
    otel.hook(ev.RetryScheduled(request=request, attempt=1, delay=1.0, error=error, call_id=-5))
    otel.hook(ev.RetryBudgetExhausted(request=request, attempt=1, error=error, call_id=-5))
    otel.hook(
        ev.CallFinished(
            request=request, attempts=1, elapsed=0.1, persona=None, error=error, call_id=-5
        )
    )
    assert otel.finished() == ()
    assert "OpenTelemetryHook" in repr(otel.hook)


async def test_budget_refusal_is_a_span_event(server, otel):
    """A refused retry shows on the call span."""
    server.script = [(500, envelope(500, "oops"))]
    policy = sp.RetryPolicy(initial_delay=0.001, retry_server_errors=True)
    throttle = sp.ThrottlePolicy(retry_budget=1, retry_cost=5)
    async with client_for(server.base_url, otel, retry=policy, throttle=throttle) as client:
        with pytest.raises(sp.ServerError):
            await client.generate_persona(**FIELDS)
    (call,) = [s for s in otel.finished() if s.name == "generate_persona"]
    assert [e.name for e in call.events] == ["retry_budget_exhausted"]


async def test_no_key_in_any_attribute(server, otel):
    """Neither span attributes, span events, statuses nor metric attributes hold the key."""
    server.script = [LIMITED, (500, envelope(500, f"echo {KEY}"))]
    policy = sp.RetryPolicy(initial_delay=0.001, retry_server_errors=True)
    async with client_for(server.base_url, otel, retry=policy) as client:
        await client.generate_persona(**FIELDS)
    for span in otel.finished():
        assert KEY not in span.to_json()
    assert KEY not in otel.reader.get_metrics_data().to_json()


def test_core_does_not_import_opentelemetry():
    """With opentelemetry unimportable, suno_persona and its events still import and work."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import suno_persona, suno_persona.events\n"
        "suno_persona.AsyncPersonaClient('k', event_hooks=[print])\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.')]\n"
        "try:\n    import suno_persona.otel\nexcept ImportError:\n    print('no otel')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "no otel", "")
