"""The adaptive send rate: what the API's limit seems to be, and when the next send may go.

Synchronous and clock-free (every method takes ``now``), so it is tested without a loop and
the same arithmetic can run in a shared store. It learns from answers only:

* **Measure.** Answers are counted in a ring of time buckets covering one ``window`` (memory
  is O(1) in requests): accepted (any answer but 429) and refused (429).
* **Cut.** When at least ``_MIN_REFUSED`` 429s make up ``_MIN_SHARE`` or more of the answers
  of the last window, the rate becomes ``beta`` times the rate the API accepted over that
  window (or times the current rate, if lower). At most one cut per window. A cut while
  probing past the old peak, from less than ``_PROBE_FOUND`` times it, is made from halfway
  between the two: what such a probe measured above the peak was mostly the server's burst.
* **Grow back.** Then the rate climbs along a CUBIC curve scaled to the rate it was cut
  from: concave back up to it, then convex past it, so it finds a limit that rose within a
  few windows. Growth pauses while the API is in maintenance (:meth:`freeze`).
* **Pace.** Sends are spaced by a generic cell rate algorithm (GCRA): each send reserves the
  next slot, ``1/rate`` after the previous one, with a burst of a tenth of a second's worth.

Nothing here remembers a 429 as "noise" for longer than a window: every window is judged
afresh, so the rate follows a limit that drops and rises any number of times.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["AdaptiveRate", "RateChange"]

_MIN_REFUSED = 2
_MIN_SHARE = 0.05
_BUCKETS = 10
_BURST_SECONDS = 0.1
_PROBE_FACTOR = 2.5
_PROBE_INTERVALS_MAX = 64.0  # 2.5 ** 64 is past any limit: the rate stops mattering there
_RECUT_AFTER = 0.25  # of a window: when a cut that was not deep enough is cut again
_PROBE_FOUND = 1.5  # a probe refused below this many times the old peak found no new limit


@attrs.frozen
class RateChange:
    """The learned rate moved.

    Attributes:
        old: The rate before, in requests per second (``None``: unlimited).
        new: The rate after.
        reason: Why, in words (``"429s"``).
    """

    old: float | None
    new: float | None
    reason: str


class AdaptiveRate:
    """A send rate learned from 429s; see the module docstring.

    Args:
        beta: Share of the accepted rate kept by a cut, in (0, 1].
        window: Measurement window in seconds; at most one cut per window.
        min_rate: Floor of the learned rate, in requests per second.
        growth: CUBIC's constant, as a share of the rate cut from per second cubed.
    """

    __slots__ = (
        "_accepted",
        "_after",
        "_beta",
        "_bucket_span",
        "_cut_at",
        "_cuts",
        "_first_at",
        "_frozen_at",
        "_growth",
        "_index",
        "_min_rate",
        "_rate",
        "_rate_max",
        "_refused",
        "_stamp",
        "_stamps",
        "_tat",
        "_window",
    )

    def __init__(self, *, beta: float, window: float, min_rate: float, growth: float) -> None:
        self._beta = beta
        self._window = window
        self._min_rate = min_rate
        self._growth = growth
        self._bucket_span = window / _BUCKETS
        self._accepted = [0] * _BUCKETS
        self._refused = [0] * _BUCKETS
        self._stamps = [-1] * _BUCKETS
        self._stamp = self._index = -1  # the bucket last counted in
        self._first_at: float | None = None
        self._rate: float | None = None
        self._rate_max = 0.0
        self._cut_at = -math.inf
        self._frozen_at: float | None = None
        self._tat = -math.inf
        self._after = [0, 0]
        self._cuts = 0

    @property
    def cuts(self) -> int:
        """How many times the rate was cut: a reservation made before a cut is stale."""
        return self._cuts

    @property
    def known(self) -> bool:
        """Whether a rate has been learned (before the first cut, sends are not paced)."""
        return self._rate is not None

    def rate(self, now: float) -> float | None:
        """The rate in requests per second at ``now``, ``None`` while nothing is known."""
        if self._rate is None:
            return None
        since = (self._frozen_at if self._frozen_at is not None else now) - self._cut_at
        peak = self._rate_max
        k = (peak * (1 - self._beta) / self._growth) ** (1 / 3)
        grown = peak + self._growth * (since - k) ** 3
        if since > k:
            # Past the old peak with no cut: the limit may have risen. Probe up exponentially
            # too (2.5-fold every window), so a limit ten times higher is found in seconds.
            intervals = min((since - k) / self._window, _PROBE_INTERVALS_MAX)
            grown = max(grown, peak * _PROBE_FACTOR**intervals)
        return float(max(self._min_rate, self._rate, grown))

    def seed(self, rate: float, now: float) -> None:
        """Start from ``rate`` learned elsewhere, as if just cut to it (no burst credit)."""
        self._rate = self._rate_max = max(self._min_rate, rate)
        self._cut_at = now
        self._cuts += 1
        self._tat = now

    def reserve(self, now: float, max_wait: float = math.inf) -> tuple[float, bool]:
        """Reserve the next send slot; return when it is (``>= now``) and whether it is yours.

        Slots are reserved only a short horizon ahead (one interval, at least 0.1 s), so
        that callers queued behind a low rate see it when it grows: a caller whose slot is
        further out, or more than ``max_wait`` seconds away, reserves nothing and asks again
        closer to the time.
        """
        rate = self.rate(now)
        if rate is None:
            return now, True
        interval = 1 / rate
        burst = max(interval, _BURST_SECONDS)
        send_at = max(now, self._tat - burst)
        if send_at - now > min(max_wait, burst):
            return send_at, False
        self._tat = max(self._tat, now) + interval
        return send_at, True

    def hold(self, until: float) -> None:
        """No send before ``until`` (a shared pause), and no burst right after it."""
        rate = self._rate
        if rate is not None:
            self._tat = max(self._tat, until + max(1 / rate, _BURST_SECONDS))

    def release(self, send_at: float, now: float) -> None:
        """Give back a slot reserved for ``send_at`` that will not be used, if it is the last."""
        rate = self.rate(now)
        if rate is not None and send_at > now:
            self._tat = max(now, self._tat - 1 / rate)

    def accepted(self, now: float, sent_at: float) -> None:
        """The API processed a request sent at ``sent_at`` (any answer but 429)."""
        stamp = int(now // self._bucket_span)
        self._accepted[self._index if stamp == self._stamp else self._bucket(now)] += 1
        if sent_at > self._cut_at:
            self._after[0] += 1

    def refused(self, now: float, sent_at: float) -> RateChange | None:
        """The API refused (429) a request sent at ``sent_at``; return the change on a cut."""
        self._refused[self._bucket(now)] += 1
        if sent_at > self._cut_at:
            self._after[1] += 1
        measured = self._too_fast(now)
        if measured is None:
            return None
        old = self.rate(now)
        base = measured if old is None else min(measured, old)
        if old is not None and old > self._rate_max and base < _PROBE_FOUND * self._rate_max:
            # A probe past the old peak was refused not far above it: much of what it
            # measured above the peak was the server's burst, refilled while the rate was
            # below the limit. Half of it is believed; a limit that really rose is found
            # over the next probes, or at once when it is well above the peak.
            base = max(self._rate_max, (base + self._rate_max) / 2)
        self._rate_max = max(self._min_rate, base)
        self._rate = max(self._min_rate, base * self._beta)
        self._cut_at = now
        self._cuts += 1
        self._after = [0, 0]
        # No burst credit after a cut: the next send goes one interval from now.
        self._tat = now + 1 / self._rate + max(1 / self._rate, _BURST_SECONDS)
        return RateChange(old, self._rate, "429s")

    def _too_fast(self, now: float) -> float | None:
        """The accepted rate to cut from, when the 429s say we send too fast; else ``None``.

        Normally judged over the last window, once per window. Sooner, a quarter of a window
        after the last cut, when requests sent after it are refused too (as many and as large
        a share as for a cut): that cut was not deep enough (a short window's accepted rate
        includes the server's burst), and what was accepted since it measures the limit.
        """
        since = now - self._cut_at
        ok, refused = self._after
        if (
            self._window * _RECUT_AFTER <= since < self._window
            and ok > 0
            and refused >= _MIN_REFUSED
            and refused >= _MIN_SHARE * (ok + refused)
        ):
            return ok / since
        if since < self._window:
            return None
        accepted, refused = self._totals(now)
        if accepted == 0 or refused < _MIN_REFUSED or refused < _MIN_SHARE * (accepted + refused):
            return None
        first = self._first_at if self._first_at is not None else now
        if now - first < self._window:
            # The first window: its start-up burst says nothing of the rate over time.
            return accepted / max(now - first, self._window / 5)
        # While the rate was still climbing, the window's average understates the limit;
        # what the API accepted over the last two buckets, as it started refusing, does not.
        span = self._bucket_span + now % self._bucket_span
        lately = self._totals(now, buckets=2)[0] / span
        return max(accepted / self._window, lately)

    def freeze(self, now: float) -> None:
        """Hold the rate where it is (the API is in maintenance: growth would mean nothing)."""
        if self._frozen_at is None:
            self._frozen_at = now

    def thaw(self, now: float) -> None:
        """Let the rate grow again from where :meth:`freeze` held it."""
        if self._frozen_at is not None:
            self._cut_at += now - self._frozen_at
            self._frozen_at = None

    def _bucket(self, now: float) -> int:
        """The bucket ``now`` falls in, started afresh if it last held an older slice of time."""
        if self._first_at is None:
            self._first_at = now
        stamp = int(now // self._bucket_span)
        index = stamp % _BUCKETS
        if self._stamps[index] != stamp:
            self._stamps[index] = stamp
            self._accepted[index] = 0
            self._refused[index] = 0
        self._stamp, self._index = stamp, index
        return index

    def _totals(self, now: float, buckets: int = _BUCKETS) -> tuple[int, int]:
        """Accepted and refused answers over the last ``buckets`` (the current one included)."""
        oldest = int(now // self._bucket_span) - buckets + 1
        accepted = refused = 0
        for index in range(_BUCKETS):
            if self._stamps[index] >= oldest:
                accepted += self._accepted[index]
                refused += self._refused[index]
        return accepted, refused
