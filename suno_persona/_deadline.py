"""One value for "how long may this call still wait?", and the waits that respect it.

Every wait of a call (a place in flight, the start-up window, the maintenance breaker, the
shared pause, a rate reservation, a backoff) asks the same :class:`Deadline`. A wait that
would end past it does not start: it raises :class:`WouldPassDeadline`, a plain signal that
the client turns into its own error, carrying how long the wait would have been.

The waits here never use :func:`asyncio.wait_for`, which on Python 3.10 and 3.11 can swallow a
cancellation that lands in the same step as the inner wait finishing. :func:`wait_signal`
uses :func:`asyncio.wait`, which never cancels nor swallows anything, and acquires nothing:
the caller re-checks its condition after waking, so a cancellation can never leave a
resource taken.
"""

from __future__ import annotations

import asyncio
import math

import attrs

__all__ = ["Deadline", "WouldPassDeadline", "wait_signal"]


class WouldPassDeadline(Exception):  # noqa: N818 - a signal, not an error of the API
    """A wait would end after the call's deadline.

    Attributes:
        wait: Seconds the wait would have taken from now (``math.inf`` when unknown).
        reason: What the call was waiting for, in words.
    """

    def __init__(self, reason: str, wait: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


@attrs.frozen
class Deadline:
    """When a call must be over, on the client's monotonic clock; ``at=None`` is unbounded.

    Attributes:
        at: The moment the call must be over, or ``None``.
    """

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None, now: float) -> Deadline:
        """The deadline ``seconds`` from ``now`` (unbounded for ``None``)."""
        return cls(None if seconds is None else now + seconds)

    def remaining(self, now: float) -> float:
        """Seconds left at ``now`` (``math.inf`` when unbounded; never negative)."""
        return math.inf if self.at is None else max(0.0, self.at - now)

    def check(self, now: float, wait: float, reason: str) -> None:
        """Raise :class:`WouldPassDeadline` if ``wait`` seconds from ``now`` end too late."""
        if self.at is not None and now + wait > self.at:
            raise WouldPassDeadline(reason, wait)


async def wait_signal(signal: asyncio.Future[None], timeout: float) -> bool:
    """Wait until ``signal`` is done or ``timeout`` seconds pass; ``True`` when signalled.

    ``signal`` is never cancelled here, and a cancellation of the caller always propagates.
    """
    if signal.done():
        return True
    if timeout <= 0:
        return False
    done, _ = await asyncio.wait((signal,), timeout=None if timeout == math.inf else timeout)
    return bool(done)
