"""What a limiter model answers one request, and the parts every model shares.

:class:`Verdict` is the answer; :class:`Limiter` is the protocol the models of
``suno_persona.testing._limiters`` implement; :func:`retry_after_header` is how servers write
``Retry-After``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import attrs

__all__ = ["EMPTY", "Base", "Limiter", "Verdict", "policy_headers", "retry_after_header"]

EMPTY: Mapping[str, str] = {}


@attrs.frozen
class Verdict:
    """What the server answers one request.

    Attributes:
        status: 200 (accepted), 429 (rate limited) or 455 (maintenance).
        retry_after: The ``Retry-After`` the server sends, in seconds, or ``None``.
        headers: RateLimit header fields the server announces (may be empty).
        latency: Seconds until the answer is sent.
    """

    status: int
    retry_after: float | None = None
    headers: Mapping[str, str] = EMPTY
    latency: float = 0.0

    @property
    def accepted(self) -> bool:
        """Whether the request was processed."""
        return self.status == 200  # noqa: PLR2004 - the HTTP status


class Limiter(Protocol):
    """A model of one limiter: see the module docstring."""

    def arrive(self, now: float) -> Verdict:
        """The answer to a request arriving at ``now``."""

    def leave(self, now: float, verdict: Verdict) -> None:
        """The answer ``verdict`` left the server at ``now`` (a concurrency limit frees a place)."""

    def ideal(self, requests: int, start: float) -> float:
        """Seconds from ``start`` a perfect client needs to have ``requests`` accepted."""


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` as servers send it: whole seconds, rounded up (RFC 9110 delay-seconds)."""
    return str(max(0, math.ceil(seconds - 1e-9)))


def policy_headers(quota: float, window: float, remaining: float, reset: float) -> dict[str, str]:
    """The IETF draft's fields: ``RateLimit-Policy`` (quota per window), ``RateLimit``."""
    return {
        "RateLimit-Policy": f'"default";q={int(quota)};w={max(1, math.ceil(window))}',
        "RateLimit": f'"default";r={max(0, int(remaining))};t={max(0, math.ceil(reset - 1e-9))}',
    }


class Base:
    """No limit, no latency: what every model does unless it says otherwise."""

    latency = 0.0

    def leave(self, now: float, verdict: Verdict) -> None:
        """Nothing to free."""

    def _ok(self, headers: Mapping[str, str] = EMPTY) -> Verdict:
        return Verdict(200, headers=headers, latency=self.latency)

    def _refuse(self, retry_after: float | None, headers: Mapping[str, str] = EMPTY) -> Verdict:
        return Verdict(429, retry_after=retry_after, headers=headers, latency=self.latency)
