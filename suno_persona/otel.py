"""OpenTelemetry traces and metrics from the client's events (the ``otel`` extra).

```python
from suno_persona import AsyncPersonaClient
from suno_persona.otel import OpenTelemetryHook

client = AsyncPersonaClient(event_hooks=[OpenTelemetryHook()])
```

It follows the HTTP client semantic conventions: one span per call (``generate_persona``,
kind INTERNAL) in the caller's current trace, and under it one span per attempt, named
``POST``, kind CLIENT, with ``http.request.method``, ``server.address``, ``server.port``,
``url.full``, ``http.response.status_code`` (when there was a reply), ``error.type`` (on
failure) and ``http.request.resend_count`` (from the second attempt on).

Metrics: the histogram ``http.client.request.duration`` (seconds, one value per attempt),
and the counters ``suno_persona.client.retries`` (retries scheduled) and
``suno_persona.client.throttled_responses`` (429 and 455 answers, by
``http.response.status_code``). The throttle's decisions (a pause, the breaker, a new
rate) are added as span events to the span current when they happen.

No attribute ever holds the API key: the URL is the client's base URL and path, which
cannot carry credentials, and error messages are redacted by the client.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from suno_persona._errors import APIError
from suno_persona._version import __version__
from suno_persona.events import (
    AttemptFinished,
    BreakerClosed,
    BreakerOpened,
    CallFinished,
    CallStarted,
    PauseStarted,
    RateChanged,
    RetryBudgetExhausted,
    RetryScheduled,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.util.types import AttributeValue

    from suno_persona._errors import SunoPersonaError

__all__ = ["OpenTelemetryHook"]

_SCOPE = "suno_persona"
_THROTTLED = frozenset({429, 455})
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class _Call:
    __slots__ = ("attributes", "context", "span")

    def __init__(self, span: trace.Span, attributes: dict[str, AttributeValue]) -> None:
        self.span = span
        self.context: Context = trace.set_span_in_context(span)
        self.attributes = attributes


class OpenTelemetryHook:
    """An event hook that records spans and metrics with OpenTelemetry.

    Pass it in ``event_hooks``; one hook may serve many clients.

    Args:
        tracer_provider: Where spans go; the global one by default.
        meter_provider: Where metrics go; the global one by default.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
        self._retries = meter.create_counter(
            "suno_persona.client.retries", unit="{retry}", description="Retries scheduled."
        )
        self._throttled = meter.create_counter(
            "suno_persona.client.throttled_responses",
            unit="{response}",
            description="Answers 429 (rate limited) and 455 (maintenance).",
        )
        self._calls: dict[int, _Call] = {}

    def __repr__(self) -> str:
        return f"<OpenTelemetryHook calls_in_flight={len(self._calls)}>"

    def __call__(self, event: object) -> None:
        """Record ``event``."""
        if isinstance(event, AttemptFinished):
            self._attempt(event)
        elif isinstance(event, CallStarted):
            self._start(event)
        elif isinstance(event, CallFinished):
            self._finish(event)
        elif isinstance(event, RetryScheduled):
            self._retry(event)
        elif isinstance(event, RetryBudgetExhausted):
            self._refused(event)
        else:
            self._throttle(event)

    def _start(self, event: CallStarted) -> None:
        parts = urlsplit(event.url)
        attributes: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        }
        span = self._tracer.start_span(
            "generate_persona", kind=SpanKind.INTERNAL, attributes=attributes
        )
        attributes = {**attributes, "url.full": event.url}
        self._calls[event.call_id] = _Call(span, attributes)

    def _attempt(self, event: AttemptFinished) -> None:
        call = self._calls.get(event.call_id)
        if call is None:
            return
        end = time.time_ns()
        attributes = dict(call.attributes)
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        if event.http_status is not None:
            attributes["http.response.status_code"] = event.http_status
        error = event.error
        if error is not None:
            attributes["error.type"] = _error_type(error, event.http_status)
        span = self._tracer.start_span(
            "POST",
            context=call.context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(event.elapsed * 1e9),
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end(end_time=end)
        metric = {
            k: v
            for k, v in attributes.items()
            if k not in ("url.full", "http.request.resend_count")
        }
        self._duration.record(event.elapsed, metric)
        code = error.code if isinstance(error, APIError) else None
        if code in _THROTTLED:
            self._throttled.add(
                1, {"http.response.status_code": code, "server.address": metric["server.address"]}
            )

    def _retry(self, event: RetryScheduled) -> None:
        call = self._calls.get(event.call_id)
        if call is None:
            return
        self._retries.add(1, {"server.address": call.attributes["server.address"]})
        call.span.add_event(
            "retry_scheduled",
            {"suno_persona.attempt": event.attempt, "suno_persona.delay": event.delay},
        )

    def _refused(self, event: RetryBudgetExhausted) -> None:
        call = self._calls.get(event.call_id)
        if call is not None:
            call.span.add_event("retry_budget_exhausted", {"suno_persona.attempt": event.attempt})

    def _finish(self, event: CallFinished) -> None:
        call = self._calls.pop(event.call_id, None)
        if call is None:
            return
        span = call.span
        span.set_attribute("suno_persona.attempts", event.attempts)
        if event.error is not None:
            span.set_attribute("error.type", _error_type(event.error, None))
            span.set_status(Status(StatusCode.ERROR, str(event.error)))
        elif event.persona is None:
            span.set_attribute("error.type", "cancelled")
        span.end()

    def _throttle(self, event: object) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        if isinstance(event, PauseStarted):
            span.add_event(
                "suno_persona.pause_started",
                {"suno_persona.seconds": event.seconds, "suno_persona.code": event.code},
            )
        elif isinstance(event, RateChanged):
            span.add_event(
                "suno_persona.rate_changed",
                {
                    "suno_persona.old": -1.0 if event.old is None else event.old,
                    "suno_persona.new": -1.0 if event.new is None else event.new,
                    "suno_persona.reason": event.reason,
                },
            )
        elif isinstance(event, BreakerOpened):
            span.add_event(
                "suno_persona.breaker_opened",
                {"suno_persona.next_probe_in": event.next_probe_in},
            )
        elif isinstance(event, BreakerClosed):
            span.add_event("suno_persona.breaker_closed", {"suno_persona.open_for": event.open_for})


def _error_type(error: SunoPersonaError, http_status: int | None) -> str:
    """The status code when the reply's HTTP status says error, else the error's class."""
    if http_status is not None and http_status >= 400:  # noqa: PLR2004 - HTTP error statuses
        return str(http_status)
    return f"suno_persona.{type(error).__name__}"
