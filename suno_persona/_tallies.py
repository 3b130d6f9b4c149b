"""The counts the model of the limit (``_learner``) keeps, all O(1) in requests.

* :class:`Tally`: the answers to the requests sent since a moment (a test, a probe);
* :class:`Recent`: the same since a decision, over its last one to two intervals;
* :class:`Ring`: answers per short bucket over the last interval, for accepted rates;
* :class:`Levels`: answers per level of requests in flight, for a cap on in flight;
* :func:`spread` and the thresholds the model's parts read their counts by.

Synchronous and clock-free: every method takes ``now``.
"""

from __future__ import annotations

import math

__all__ = ["CUT_MAX", "MARGIN", "MIN_REFUSED", "Levels", "Recent", "Ring", "Tally", "spread"]

MIN_REFUSED = 3  # fewer refusals say nothing of a limit (or of a cap on in flight)
MARGIN = 0.05  # refused share above the noise floor that calls for a test
CUT_MAX = 0.5  # a reading of too few answers lowers a rate by at most this factor

_BUCKETS = 10
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


class Recent:
    """The answers to the requests sent since a decision, over the last one to two intervals.

    The answers of an interval go once another has passed, so 429s that begin long after
    the decision (a pace a little above a token bucket's rate drains its burst slowly) are
    not diluted by every clean answer since.
    """

    __slots__ = ("_earlier", "_interval", "_turned", "current")

    def __init__(self, since: float, interval: float) -> None:
        self._interval = interval
        self._turned = since
        self._earlier = (0, 0)  # accepted, refused in the interval before the current one
        self.current = Tally(since)
        """The answers since the last turn (its ``since`` is the decision's)."""

    @property
    def since(self) -> float:
        """When the decision was."""
        return self.current.since

    def count(self, now: float, sent_at: float, *, refused: bool) -> None:
        """The answer, at ``now``, to a request sent at ``sent_at``."""
        current = self.current
        if now - self._turned >= self._interval:
            self._turned = now
            self._earlier = (current.accepted, current.refused)
            current.accepted = current.refused = 0
        current.count(sent_at, refused=refused)

    def tally(self) -> Tally:
        """The answers counted, as one tally from the decision."""
        both = Tally(self.current.since)
        both.accepted = self.current.accepted + self._earlier[0]
        both.refused = self.current.refused + self._earlier[1]
        return both


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

    def delivery_rate(self, now: float, since: float = -math.inf) -> float:
        """What the API accepted per second while it refused (else the accepted rate).

        What was accepted from the first bucket of the last interval that held a 429 (and
        began at ``since`` or later, when there is one) to now, over that time; from the
        bucket's end when it holds many more than those after it. A burst a token bucket
        stored before its first 429 is left out so, and so is a slower pace before
        ``since``. Pooled rather than a median over the buckets with a 429, whose
        selection favours the fuller ones when answers come in clumps (a loaded machine).
        """
        span = self._span
        live = self._live(now)
        refused = [self._stamps[i] for i in live if self._refused[i]]
        if not refused:
            return self.accepted_rate(now)
        later = [stamp for stamp in refused if stamp * span >= since]
        first = min(later or refused)
        start = max(first * span, self.first)
        accepted = sum(self._accepted[i] for i in live if self._stamps[i] >= first)
        own = next(self._accepted[i] for i in live if self._stamps[i] == first)
        after = now - (first + 1) * span
        if after >= span and own > 2 * (accepted - own) * span / after + 1:
            # The first bucket with a 429 holds a burst before it: left out.
            accepted -= own
            start = (first + 1) * span
        return accepted / max(now - start, span)


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
