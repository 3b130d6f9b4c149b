"""The maintenance breaker: after a 455, one probe request at a time until the API is back.

Synchronous and clock-free (every method takes ``now``). While it is open, :meth:`admit`
lets one caller send a probe when the next probe is due and tells everyone else when to look
again; the probe's answer closes it (any answer from the API but 455) or pushes the next
probe further out (another 455, on a doubling interval up to ``probe_max``). A probe that
gets no answer at all says nothing about the maintenance: the next caller probes instead.
"""

from __future__ import annotations

import enum

__all__ = ["Admit", "MaintenanceBreaker"]


class Admit(enum.Enum):
    """What the breaker says to a caller that wants to send."""

    SEND = "send"
    """Closed: send as usual."""
    PROBE = "probe"
    """Open, and this caller holds the single probe: send it and report the answer."""
    WAIT_UNTIL = "wait until"
    """Open, the next probe is due at the time returned with it."""
    WAIT_PROBE = "wait for the probe"
    """Open, a probe is in flight: wait for its answer (or the time returned with it)."""


class MaintenanceBreaker:
    """See the module docstring.

    Args:
        probe_initial: Seconds from the first 455 to the first probe.
        probe_max: Longest interval between probes.
    """

    __slots__ = (
        "_interval",
        "_next_probe_at",
        "_opened_at",
        "_probe_initial",
        "_probe_max",
        "_probing",
    )

    def __init__(self, *, probe_initial: float, probe_max: float) -> None:
        self._probe_initial = probe_initial
        self._probe_max = probe_max
        self._opened_at: float | None = None
        self._probing = False
        self._next_probe_at = 0.0
        self._interval = probe_initial

    @property
    def is_open(self) -> bool:
        """Whether the API is taken to be in maintenance."""
        return self._opened_at is not None

    @property
    def next_probe_at(self) -> float:
        """When the next probe is due (meaningful while open)."""
        return self._next_probe_at

    def admit(self, now: float) -> tuple[Admit, float]:
        """Whether a caller may send at ``now``, and if not, until when to wait."""
        if self._opened_at is None:
            return Admit.SEND, now
        if self._probing:
            return Admit.WAIT_PROBE, max(now, self._next_probe_at)
        if now >= self._next_probe_at:
            self._probing = True
            return Admit.PROBE, now
        return Admit.WAIT_UNTIL, self._next_probe_at

    def maintenance(self, now: float, retry_after: float | None, *, probe: bool) -> bool:
        """A request got 455; ``retry_after`` is the server's wait, already capped.

        Returns:
            Whether the breaker opened just now.
        """
        opened = self._opened_at is None
        if opened:
            self._opened_at = now
            self._interval = self._probe_initial
        elif probe:
            self._interval = min(self._probe_max, self._interval * 2)
        if probe or opened or self._next_probe_at < now:
            self._next_probe_at = now + (self._interval if retry_after is None else retry_after)
        if probe:
            self._probing = False
        return opened

    def answered(self, now: float, *, probe: bool) -> float | None:
        """A request got an answer other than 455.

        Returns:
            How long the breaker was open, when this answer closed it; else ``None``.
        """
        if probe:
            self._probing = False
        if self._opened_at is None:
            return None
        opened_at, self._opened_at = self._opened_at, None
        self._probing = False
        return now - opened_at

    def no_answer(self, *, probe: bool) -> None:
        """A request got no answer (connection failed, timed out, abandoned)."""
        if probe:
            self._probing = False
