"""The counts the model of the limit (``_learner``) keeps, all O(1) in requests.

* :class:`Tally`: the answers to the requests sent since a moment (a test, a probe);
* :class:`Ring`: answers per short bucket over the last interval, for accepted rates;
* :class:`Levels`: answers per level of requests in flight, for a cap on in flight;
* :func:`spread` and the thresholds the model's parts read their counts by.

Synchronous and clock-free: every method takes ``now``.
"""

from __future__ import annotations

import math

__all__ = ["CUT_MAX", "MARGIN", "MIN_REFUSED", "Levels", "Ring", "Tally", "spread"]

MIN_REFUSED = 3  # fewer refusals say nothing of a limit (or of a cap on in flight)
MARGIN = 0.05  # refused share above the noise floor that calls for a test
CUT_MAX = 0.5  # a reading of too few answers lowers a rate by at most this factor

_BUCKETS = 10
_FEW = 4  # accepted per bucket below which one bucket's count says little
_LEVELS = 512


def spread(share: float, answers: int) -> float:
    """The standard deviation of a refused share measured over ``answers``."""
    return math.sqrt(max(share * (1 - share), 0.01) / max(1, answers))


class Tally:
    """Answers to the requests sent since ``since``."""

    __slots__ = ("accepted", "refused", "sent", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.sent = 0
        self.accepted = 0
        self.refused = 0

    @property
    def answers(self) -> int:
        return self.accepted + self.refused

    def count(self, sent_at: float, *, refused: bool) -> None:
        """The answer to a request sent at ``sent_at``: counted if sent after ``since``."""
        if sent_at > self.since:
            if refused:
                self.refused += 1
            else:
                self.accepted += 1

    def share(self) -> float:
        """The refused share of the answers (0 with none)."""
        return self.refused / self.answers if self.answers else 0.0


class Ring:
    """Accepted and refused answers in a ring of ten buckets covering one ``interval``."""

    __slots__ = ("_accepted", "_interval", "_refused", "_span", "_stamps", "first")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._span = interval / _BUCKETS
        self._accepted = [0] * _BUCKETS
        self._refused = [0] * _BUCKETS
        self._stamps = [-1] * _BUCKETS
        self.first = math.inf
        """When the first answer came."""

    def count(self, now: float, *, refused: bool) -> None:
        """An answer came at ``now``."""
        if self.first == math.inf:
            self.first = now
        stamp = int(now // self._span)
        index = stamp % _BUCKETS
        if self._stamps[index] != stamp:
            self._stamps[index] = stamp
            self._accepted[index] = self._refused[index] = 0
        if refused:
            self._refused[index] += 1
        else:
            self._accepted[index] += 1

    def _live(self, now: float) -> list[int]:
        oldest = int(now // self._span) - _BUCKETS + 1
        return [i for i in range(_BUCKETS) if self._stamps[i] >= oldest]

    def accepted_rate(self, now: float) -> float:
        """Accepted per second over the last interval."""
        return sum(self._accepted[i] for i in self._live(now)) / self._interval

    def delivery_rate(self, now: float) -> float:
        """What the API accepted per second while it refused (else the accepted rate).

        The median over the buckets of the last interval that held a 429. Each bucket's
        count is divided by the part of it that answers could fall in (the first bucket
        starts with the first answer, the last one ends now), so a young interval is not
        taken for a slow API. When that median is under a few answers per bucket, what was
        accepted from the first bucket with a 429 to now is the rate instead.
        """
        span = self._span
        rates = []
        for i in self._live(now):
            if self._refused[i]:
                start = max(self._stamps[i] * span, self.first)
                covered = min(span, now - start)
                rates.append(self._accepted[i] / max(covered, span / 10))
        rates.sort()
        if rates and rates[len(rates) // 2] > 0:
            median = rates[len(rates) // 2]
            if median * span >= _FEW:
                return median
            # Few answers per bucket: a bucket holds a 429 because it took less than the
            # others, so the median is low; pool from the first bucket with a 429 instead.
            live = self._live(now)
            first = min(self._stamps[i] for i in live if self._refused[i])
            accepted = sum(self._accepted[i] for i in live if self._stamps[i] >= first)
            return accepted / max(now - max(first * span, self.first), span)
        return self.accepted_rate(now)


class Levels:
    """Accepted and refused answers per level of requests in flight when they were sent."""

    __slots__ = ("_accepted", "_refused")

    def __init__(self) -> None:
        self._accepted = [0] * _LEVELS
        self._refused = [0] * _LEVELS

    def count(self, in_flight: int, *, refused: bool) -> None:
        """A request sent with ``in_flight`` in flight (itself included) got its answer."""
        counts = self._refused if refused else self._accepted
        counts[min(in_flight, _LEVELS - 1)] += 1

    def forget(self) -> None:
        """Start counting afresh."""
        self._accepted = [0] * _LEVELS
        self._refused = [0] * _LEVELS

    def cap(self, least: int) -> int | None:
        """The cap, when the refusals fell above every level of in flight that was accepted.

        ``None`` unless at least ``least`` answers of each kind were counted, 90% of the
        refused ones above the level that 95% of the accepted ones stayed within. The cap
        lies between that level and the lowest refused one: the highest level below every
        refusal is taken (accepted answers of a slow API come back long after the refusals,
        so the levels they show are those of the start-up ramp). Too high, a refusal within
        it lowers it at once (see the model).
        """
        accepted = sum(self._accepted)
        refused = sum(self._refused)
        if accepted < least or refused < least:
            return None
        seen, top = 0, 0
        for level, count in enumerate(self._accepted):
            seen += count
            if seen >= 0.95 * accepted:
                top = level
                break
        if top < 1 or sum(self._refused[top + 1 :]) < 0.9 * refused:
            return None
        lowest = next(level for level in range(top + 1, _LEVELS) if self._refused[level])
        return lowest - 1
