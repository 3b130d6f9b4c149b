"""The emulator's values: a recorded request, an answer, a fault, a rate limit's bucket.

And the provider's words for each code. Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

__all__ = [
    "MESSAGES",
    "REASONS",
    "RETRY_AFTER_CODES",
    "Bucket",
    "Fault",
    "RecordedRequest",
    "Reply",
]

# The provider's words for each documented code: the default message of an injected fault.
MESSAGES: Final[Mapping[int, str]] = {
    401: "key missing or invalid",
    402: "not enough credits",
    404: "resource or endpoint not found",
    422: "request failed validation",
    429: "rate limited",
    455: "service under maintenance",
    500: "unexpected server error",
    501: "generation failed",
    505: "feature disabled",
}

# The provider's names for its codes, used as the HTTP reason phrase (455 has no standard one).
REASONS: Final[Mapping[int, str]] = {
    401: "Unauthorized",
    402: "Insufficient Credits",
    404: "Not Found",
    422: "Validation Error",
    429: "Rate Limited",
    455: "Service Unavailable",
    500: "Server Error",
    501: "Generation Failed",
    505: "Feature Disabled",
}

RETRY_AFTER_CODES: Final = frozenset({429, 455})


@attrs.frozen
class Reply:
    """An answer: the envelope's code, message and data, and its ``Retry-After`` seconds."""

    code: int
    message: str
    data: dict[str, Any] | None = None
    retry_after: int | None = None
    quota: tuple[int, int] | None = None
    """RateLimit fields to announce, when the emulator does: (remaining, seconds to reset)."""


@attrs.define
class Fault:
    """An injected fault, and how many more requests it answers."""

    code: int
    message: str
    retry_after: int | None
    left: int


@attrs.define
class Bucket:
    """A token bucket of the rate limit."""

    tokens: float
    stamp: float

    def take(self, now: float, rate: float, capacity: int) -> float | None:
        """Take a token; return ``None`` on success, else the seconds until one is available."""
        self.tokens = min(float(capacity), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request the emulator received, as it was answered.

    API keys are never recorded: the values of ``x-api-key`` and ``Authorization`` are
    replaced by ``"<redacted>"``, and the query string is not kept.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request path, without the query string.
        headers: The request headers, secrets redacted.
        json: The parsed JSON body, or ``None`` when the body was empty or not JSON.
        code: The code the emulator answered with (the envelope's ``code``).
        timestamp: When the request arrived, on the emulator's clock (by default
            :func:`time.monotonic`).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    code: int
    timestamp: float
