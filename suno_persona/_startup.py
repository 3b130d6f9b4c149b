"""The start-up ramp: how many requests may be in flight while nothing is known of the limit.

It starts at ``initial`` and grows by one per success, which doubles it every round trip,
and shrinks by one per 429 (down to one), so that past a limit's burst a refused request
frees no place. So that a slow API is not throttled by its latency alone, it also doubles
every 15 ms in which no answer came back (from a short grace after the first send, which
waits for the connections to open too). It ends, for good, when a limit is found or when it reaches
``maximum``. With a shared store, the processes of one key split it: each starts from
``initial`` divided by the live processes and grows by one per that many successes.
"""

from __future__ import annotations

import math

__all__ = ["Ramp"]

DOUBLING = 0.015
GRACE = 0.03
GRACE_SHARED = 0.1


class Ramp:
    """See the module docstring.

    Args:
        initial: Requests in flight at first.
        maximum: The ramp ends at this many.
        grace: Seconds after the first send before the window doubles with time.
    """

    __slots__ = (
        "_answered_at",
        "_doubled_at",
        "_grace",
        "_maximum",
        "_share",
        "_successes",
        "window",
    )

    def __init__(self, initial: int, maximum: int, *, grace: float = GRACE) -> None:
        self.window: int | None = initial if initial < maximum else None
        """Requests allowed in flight, ``None`` once the ramp is over."""
        self._maximum = maximum
        self._grace = grace
        self._share = 1
        self._successes = 0
        self._answered_at = -math.inf
        self._doubled_at: float | None = None

    def share(self, processes: int, initial: int) -> None:
        """``processes`` share the key: start from their share of ``initial``."""
        self._share = max(1, processes)
        if self.window is not None:
            self.window = max(1, initial // self._share)

    def end(self) -> None:
        """A limit was found: the ramp is over."""
        self.window = None

    def started(self, now: float) -> None:
        """A send went: the clock of the time-based doubling starts with the first."""
        if self._doubled_at is None:
            self._doubled_at = now + self._grace - DOUBLING

    def answered(self, now: float, *, accepted: bool) -> None:
        """An answer: one more in flight per success (per ``share`` of them), one fewer per 429."""
        self._answered_at = now
        if self.window is None:
            return
        if not accepted:
            self.window = max(1, self.window - 1)  # a 429 gives its place back to no one
            return
        self._successes += 1
        if self._successes >= self._share:
            self._successes = 0
            self._grow(self.window + 1)

    def next_doubling(self) -> float:
        """When the window doubles if no answer comes back first (``inf``: not started)."""
        if self.window is None or self._doubled_at is None:
            return math.inf
        return max(self._answered_at, self._doubled_at) + DOUBLING

    def tick(self, now: float) -> None:
        """Double the window if 15 ms passed without an answer."""
        if self.window is not None and now >= self.next_doubling() - 1e-9:
            self._doubled_at = now
            self._grow(self.window * 2)

    def _grow(self, size: int) -> None:
        self.window = None if size >= self._maximum else size
