"""RateLimit header fields: what a reply announces of the limit, read without I/O.

Three spellings are understood, the first found wins:

* the IETF draft's structured fields, ``RateLimit-Policy: "default";q=100;w=60`` (quota ``q``
  per window of ``w`` seconds) and ``RateLimit: "default";r=50;t=30`` (``r`` left, ``t``
  seconds to the reset); the first item of each list is read;
* the earlier drafts' ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset``;
* the common ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset``, whose
  reset is seconds or, when it is a large number, epoch seconds (GitHub's form), read against
  the reply's own ``Date`` when it has one (see :func:`~suno_persona._protocol.reply_clock`).

The separate fields are read only when ``-Remaining`` is there: a limit alone says nothing
about when to send.

A value that is not a non-negative integer is ignored, as a malformed ``Retry-After`` is.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from suno_persona._protocol import reply_clock

__all__ = ["Quota", "parse_quota"]

_EPOCH = 1_000_000_000  # a reset this large is a moment, not a number of seconds
_MAX = 10**12


@attrs.frozen
class Quota:
    """What one reply announced; each field ``None`` when it did not say.

    Attributes:
        limit: Requests allowed per window.
        window: The window's length in seconds.
        remaining: Requests left in the current window.
        reset: Seconds until the current window resets.
    """

    limit: int | None = None
    window: float | None = None
    remaining: int | None = None
    reset: float | None = None


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > len(str(_MAX)):
        return None
    value = int(text)
    return value if value <= _MAX else None


def _parameters(field: str | None) -> dict[str, str]:
    """The parameters of the first item of a structured-field list: ``q``, ``w``, ``r``..."""
    if not field:
        return {}
    first = field.split(",", 1)[0]
    params: dict[str, str] = {}
    for part in first.split(";")[1:]:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value
    return params


def _reset(value: int | None, headers: Mapping[str, str], now: float) -> float | None:
    if value is None:
        return None
    if value >= _EPOCH:
        return max(0.0, value - reply_clock(headers.get("Date"), now))
    return float(value)


def parse_quota(headers: Mapping[str, str], *, now: float) -> Quota | None:
    """The quota ``headers`` announce, or ``None`` when they announce none.

    Args:
        headers: The reply's headers, looked up case-insensitively (aiohttp's are).
        now: Seconds since the epoch, to read a reset given as a moment when the reply has
            no ``Date`` header to read it against.
    """
    current = headers.get("RateLimit")
    if current is not None and "=" in current:
        params = _parameters(headers.get("RateLimit-Policy"))
        state = _parameters(current)
        window = _integer(params.get("w"))
        quota = Quota(
            limit=_integer(params.get("q")),
            window=float(window) if window else None,
            remaining=_integer(state.get("r")),
            reset=_reset(_integer(state.get("t")), headers, now),
        )
        return quota if quota != Quota() else None
    for prefix in ("RateLimit-", "X-RateLimit-"):
        remaining = headers.get(prefix + "Remaining")
        if remaining is None:
            continue
        return Quota(
            limit=_integer(headers.get(prefix + "Limit")),
            remaining=_integer(remaining),
            reset=_reset(_integer(headers.get(prefix + "Reset")), headers, now),
        )
    return None
