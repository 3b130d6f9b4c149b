"""The probe schedule: when the pace goes above the estimate, and what a probe found.

Once every ``cycle`` phases (a quarter interval each) the pace **probes** a whole interval
at ``gain`` times the estimate (25% above it at first), then **drains** a quarter interval
20% below it, then cruises just below it until the next probe. A probe the callers filled
and the API took whole is followed at once by a bolder one (the gain doubles its step); a
probe refused makes the next one come half as often (a bold one refused steps back soon
instead). What the API accepted during a probe may raise the estimate: the model asks
:meth:`ProbeSchedule.judge` and keeps the estimate itself.

Synchronous and clock-free: every method takes ``now``.
"""

from __future__ import annotations

import math

from suno_persona._tallies import MARGIN, Tally

__all__ = ["ProbeSchedule"]

_PROBE_GAIN = 1.25
_DRAIN_GAIN = 0.8
_CRUISE_GAIN = 0.98
_GAIN_MAX = 5.0
_PROBE_FOUND = 1.5
_CYCLE_MIN = 8
_CYCLE_MAX = 32
_PROBE_FILLED = 1.12  # the callers sent at least this much above the pace during a probe


class ProbeSchedule:
    """When the next probe runs, how far above the estimate, and the answers to it.

    Args:
        interval: Seconds over which answers are judged (a probe lasts one).

    Attributes:
        cycle: Quarter intervals from a restart of the schedule to the next probe.
        gain: The next probe's pace, as a multiple of the estimate.
        tally: The answers to the requests sent during the probe (from its start).
        end: When the probe ends (or ended, when its first 429s cut it short).
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self.cycle = _CYCLE_MIN
        self.gain = _PROBE_GAIN
        self.tally = Tally(math.inf)
        self.end = math.inf

    def active(self, now: float) -> bool:
        """Whether a probe is under way at ``now``."""
        return self.tally.since <= now < self.end

    def sent_during(self, sent_at: float) -> bool:
        """Whether a request sent at ``sent_at`` was sent during the latest probe."""
        return self.tally.since <= sent_at < self.end

    def gain_at(self, now: float) -> float:
        """The pace at ``now`` as a multiple of the estimate: probing, draining or cruising."""
        if self.active(now):
            return self.gain
        if self.end <= now < self.end + self._interval / 4:
            return _DRAIN_GAIN
        return _CRUISE_GAIN

    def sent(self, now: float) -> None:
        """A request was let through at ``now``."""
        if self.active(now):
            self.tally.sent += 1

    def count(self, sent_at: float, *, refused: bool) -> None:
        """The answer to a request sent at ``sent_at``: the probe's if sent during it."""
        if sent_at < self.end:
            self.tally.count(sent_at, refused=refused)

    def restart(self, now: float, quarters: int | None = None) -> None:
        """The next probe starts ``quarters`` (the cycle) quarter intervals from ``now``."""
        begin = now + (self.cycle if quarters is None else quarters) * self._interval / 4
        self.tally = Tally(begin)
        self.end = begin + self._interval

    def reset(self, now: float) -> None:
        """A limit found afresh: the probes' back-off was the old one's; the shortest cycle."""
        self.cycle = _CYCLE_MIN
        self.restart(now)

    def spent_window(self, now: float, resume: float) -> None:
        """The probe under way spent a window: it ends, and the next comes later.

        The schedule restarts at ``resume`` (the window's reset) on a doubled cycle.
        """
        self.end = now
        self.gain = _PROBE_GAIN
        self.cycle = min(_CYCLE_MAX, self.cycle * 2)
        self.restart(resume)

    def judge(self, now: float, estimate: float, noise: float) -> float | None:
        """Judge the probe: a whole interval above the estimate, ended by its first 429s.

        It lasts long enough to use up the burst a token bucket stored while the pace was
        below its rate, so what it finds is the rate. What the API accepted during it is a
        delivery rate: returned, for the estimate to rise to, when higher than it (else
        ``None``). The schedule moves on once the probe is judged.
        """
        probe = self.tally
        if now < probe.since:
            return None
        refused = probe.refused > 1 + noise * probe.answers
        if not refused and now < self.end + self._interval / 4:
            return None
        took = probe.accepted / max(min(now, self.end) - probe.since, self._interval / 4)
        higher = None
        # A probe refused at its end took the burst a token bucket stored while the pace
        # was below its rate: only much more than the estimate is news then.
        found = _PROBE_FOUND if refused else 1 + MARGIN
        if took > estimate * found:
            higher = took
        if refused:
            self.end = min(self.end, now)
            if self.gain > _PROBE_GAIN:
                # A bolder probe went past the limit: a smaller step soon, no backing off.
                self.gain = max(_PROBE_GAIN, 1 + (self.gain - 1) / 2)
                self.restart(self.end + self._interval / 4, quarters=1)
                return higher
            self.gain = _PROBE_GAIN
            if higher is None:
                self.cycle = min(_CYCLE_MAX, self.cycle * 2)
            self.restart(self.end + self._interval / 4)
        elif probe.sent + 1 >= _PROBE_FILLED * estimate * self._interval:  # (a slot's slack)
            self.cycle = _CYCLE_MIN
            self.gain = min(_GAIN_MAX, 1 + 2 * (self.gain - 1))
            self.restart(now, quarters=1)
        else:
            self.restart(now)
        return higher
