"""The model of the API's limit: what it demonstrably accepts, and what explains its 429s.

Synchronous and clock-free (every method takes ``now``), fed one answer at a time. Answers
are *accepted* (any answer but 429) or *refused* (429); each comes with when its request was
sent and how many requests were then in flight. The model keeps four explanations apart:

* **Noise.** A share of requests refused whatever the rate (a flaky gateway, random load
  shedding). Refusals lower the pace only when they *respond to the send rate*: when 429s
  show up, the pace drops for one short **test** to just below what the API was accepting;
  if the refused share then falls, there is a limit, else the share is noise, remembered as
  the floor later answers are judged against, and the pace goes back to what it was (the
  test is a :class:`~suno_persona._refusals.LimitTest`, created for it and dropped after).
* **A rate limit.** Its estimate is the **delivery rate**: what the API accepted per second
  while it was refusing (pooled from the first short bucket of the last interval that held
  a 429), so a start-up burst, refilled while the client was slow, is not mistaken for it.
  The refused share that calls for a test is judged over the last interval or two, so a
  pace a little above a token bucket's rate, whose burst drains for seconds, is found as
  soon as its 429s begin (a probe's 429s are left to the probe).
  Sends are paced at the estimate. Once every ``cycle`` phases (a quarter interval each) the
  pace **probes** 25% above it, then drains 20% below; a probe that the callers filled and
  the API accepted raises the estimate; one refused makes the next probe come half as often
  (the schedule is a :class:`~suno_persona._probes.ProbeSchedule`).
* **A cap on requests in flight.** When the 429s of the last interval fell on requests sent
  with more in flight than any accepted one had (nginx's ``limit_conn``), the model learns
  that cap instead of a rate, and tries one more in flight now and then.
* **A spent window.** Several refusals in a row and nothing accepted for a few send
  intervals: a window or quota is used up (or the limiter counts its own denials, and more
  sends only keep it shut). The state then holds every send: until the ``Retry-After`` when
  there is one, else behind single probes (see ``_state``). Either way the window's quota,
  over the time it took to give it back, becomes the estimate (the answers since a window
  was spent are a :class:`~suno_persona._windows.Windows`).

Memory is O(1) in requests: answers are counted in a ring of time buckets covering one
interval, and in running tallies of the current test or probe.
"""

from __future__ import annotations

import math

import attrs

from suno_persona._probes import ProbeSchedule
from suno_persona._refusals import TEST_ANSWERS, Limit, LimitTest, Retest, calls_for_test
from suno_persona._tallies import MIN_REFUSED, Levels, Recent, Ring, Tally
from suno_persona._windows import Windows

__all__ = ["LimitModel", "RateChange"]


@attrs.frozen
class RateChange:
    """The learned rate moved.

    Attributes:
        old: The rate before, in requests per second (``None``: unlimited).
        new: The rate after (``None``: unlimited).
        reason: Why, in words: ``"429s"`` (a limit found), ``"probe"`` (more was accepted),
            ``"random refusals"`` (the 429s did not respond to the rate), ``"headers"``.
    """

    old: float | None
    new: float | None
    reason: str


class LimitModel:
    """See the module docstring.

    Args:
        interval: Seconds over which answers are judged (``ThrottlePolicy.measure_interval``).
        min_rate: Floor of the pace, in requests per second.
    """

    def __init__(self, *, interval: float, min_rate: float) -> None:
        self._interval = interval
        self._min_rate = min_rate
        self._ring = Ring(interval)
        self.estimate: float | None = None
        """What the API demonstrably accepts, in requests per second (``None``: no limit)."""
        self.noise = 0.0
        """The share of requests refused whatever the rate."""
        self._noise_answers = 0  # ... read from this many answers
        self.cap: int | None = None
        """The learned cap on requests in flight (``None``: none)."""
        self.burst = 0
        """Sends a learned window lets go at once, at its reset (0: the usual pacing)."""
        self._accepted_total = 0
        self.changes = 0
        """How many times the pace was lowered: a slot reserved before is stale."""
        self._test: LimitTest | None = None
        self._judged = Tally(math.inf)  # answers since the last decision (or the first)
        self._recent = Recent(math.inf, interval)  # ... of its last intervals, probes' left out
        self._since_refusal = Tally(math.inf)  # ... from the first 429 among them
        self._probes = ProbeSchedule(interval)
        self._windows = Windows(interval=interval, min_rate=min_rate, ring=self._ring)
        self._levels = Levels()
        self._cap_trial_at = math.inf

    # --- what the gate asks -----------------------------------------------------------

    @property
    def testing_from(self) -> float | None:
        """When the test under way began its latest round (``None``: no test)."""
        return None if self._test is None else self._test.since

    @property
    def known(self) -> bool:
        """Whether sends are paced (a limit, or a test of one, is in force)."""
        return self.estimate is not None or self._test is not None

    def pace(self, now: float) -> float | None:
        """Sends per second at ``now`` (probe and drain phases included); ``None``: unpaced."""
        if self._test is not None:
            return self._test.pace
        estimate = self.estimate
        if estimate is None:
            return None
        return max(self._min_rate, estimate * self._probes.gain_at(now))

    def spent(self, now: float, *, told: bool = False) -> bool:
        """Whether the answers say a window is used up (refused in a row, nothing accepted).

        ``told``: the latest 429 came with a ``Retry-After``.
        """
        return self._windows.spent(
            now, estimate=self.estimate, noise=self.noise, burst=self.burst, told=told
        )

    def window_spent(self, now: float, retry_after: float) -> RateChange | None:
        """A window was used up and resets in ``retry_after`` seconds: pace to its quota.

        The quota is what the API accepted since the last window was spent, over the time
        from the first of those acceptances to the reset (see ``_windows``); a window that
        a probe spent is the probe's answer instead: the estimate holds.
        """
        old = self.pace(now)
        quota = self._windows.take_quota()
        self._test = None
        self._settle(now)
        if self.estimate is not None and self._probes.active(now):
            # A probe spent it: the estimate holds, and the next probe comes later.
            self._probes.spent_window(now, now + retry_after)
            return None
        paced = self._windows.until_reset(quota, now, retry_after, burst=self.burst)
        if paced is None:
            return None
        rate, burst = paced
        return self._adopt(now, old, rate, burst, now + retry_after)

    def window_reopened(self, now: float) -> RateChange | None:
        """A spent window with no ``Retry-After`` took a request again: pace to its quota.

        The quota is what the API accepted until the window was spent, over the time it
        took to give it back (see ``_windows``); a limit found before is lowered by half
        at most, and never raised.
        """
        rate = self._windows.reopened(now, known=self.estimate)
        if rate is None:
            return None
        # Paced evenly: with no Retry-After to time the next reset, a burst at each would
        # have to be found by knocking again (a sliding log took 1.55x ideal so, not 1.46x).
        return self._adopt(now, self.pace(now), rate, 0, now)

    def _adopt(
        self, now: float, old: float | None, rate: float, burst: int, resume: float
    ) -> RateChange:
        """Pace at a window's quota ``rate`` (``burst`` of it at once), probing from ``resume``."""
        self._test = None
        self._settle(now)
        self.estimate = rate
        self.burst = burst
        self.changes += 1
        self._probes.restart(resume)
        return RateChange(old, rate, "429s")

    def sent(self, now: float) -> None:
        """A request was let through at ``now``."""
        if self._test is not None:
            self._test.sent()
        self._probes.sent(now)

    def seed(self, rate: float, now: float) -> None:
        """Start from ``rate`` learned elsewhere (a shared store that stopped answering)."""
        self.estimate = max(self._min_rate, rate)
        self._test = None
        self._probes.restart(now)
        self.changes += 1

    # --- what the answers say -----------------------------------------------------------

    def accepted(self, now: float, sent_at: float, in_flight: int) -> RateChange | None:
        """The API processed a request sent at ``sent_at`` with ``in_flight`` in flight."""
        self._ring.count(now, refused=False)
        self._windows.accepted(now)
        self._accepted_total += 1
        self._levels.count(in_flight, refused=False)
        return self._tally(now, sent_at, refused=False)

    def refused(self, now: float, sent_at: float, in_flight: int) -> RateChange | None:
        """The API refused (429) a request sent at ``sent_at`` with ``in_flight`` in flight."""
        self._ring.count(now, refused=True)
        self._windows.refused(now)
        self._levels.count(in_flight, refused=True)
        if self.cap is not None and in_flight <= self.cap:
            self.cap = max(1, in_flight - 1)  # refused within the cap: the server's is lower
        return self._tally(now, sent_at, refused=True)

    def _tally(self, now: float, sent_at: float, *, refused: bool) -> RateChange | None:
        if self._judged.since == math.inf:
            self._judged = Tally(sent_at)
            self._recent = Recent(sent_at, self._interval)
        since = self._since_refusal
        if refused or since.answers:
            since.refused += refused
            since.accepted += not refused
        self._judged.count(sent_at, refused=refused)
        if not self._probes.sent_during(sent_at):  # a probe's answers are the probe's
            self._recent.count(now, sent_at, refused=refused)
        test = self._test
        if test is not None:
            test.count(sent_at, refused=refused)
        self._probes.count(sent_at, refused=refused)
        if test is not None:
            return self._judge_test(now, test)
        estimate = self.estimate
        if estimate is not None:
            higher = self._probes.judge(now, estimate, self.noise)
            if higher is not None:
                self.estimate = higher
                return RateChange(estimate, higher, "probe")
        self._trial_cap(now)
        if refused and any(
            calls_for_test(
                judged,
                self._since_refusal,
                noise=self.noise,
                now=now,
                interval=self._interval,
                noise_answers=self._noise_answers,
            )
            for judged in (self._judged, self._recent.tally())
        ):
            return self._start_test(now)
        return None

    # --- a test: do the refusals respond to the rate? ----------------------------------

    def _start_test(self, now: float) -> RateChange | None:
        candidate = self._ring.delivery_rate(now, self._judged.since)
        young = now - self._ring.first
        if young < self._interval:
            # The first refusals: what was accepted so far, over no less than a fifth of
            # an interval (a burst at the start says little of a rate). Too low a guess
            # is raised by the test itself, while its pace holds the callers back.
            candidate = self._accepted_total / max(young, self._interval / 5)
        if candidate <= 0:
            return None  # nothing accepted: a spent window, not a rate (see spent())
        cap = self._levels.cap(MIN_REFUSED)
        if cap is not None:
            self.cap = cap
            self._cap_trial_at = now + 4 * self._interval
            self._settle(now)
            return None
        old = self.estimate
        test = LimitTest(
            now,
            candidate if old is None else min(candidate, old),
            # A guess from the first refusals, or a rate too low for an interval's answers
            # to measure: a clean round that holds the callers back tries twice it.
            guessed=young < self._interval or candidate * self._interval < TEST_ANSWERS,
            back_to=old,
            ring=self._ring,
            interval=self._interval,
            min_rate=self._min_rate,
        )
        self._test = test
        self.changes += 1
        return RateChange(old, test.pace, "429s")

    def _judge_test(self, now: float, test: LimitTest) -> RateChange | None:
        """Act on what the test under way found (see ``_refusals``)."""
        old = test.pace
        verdict = test.judge(now, self.noise)
        if verdict is None:
            return None
        if isinstance(verdict, Retest):
            if verdict.cut:
                self.changes += 1
            return RateChange(old, test.pace, "429s")
        self._test = None
        self._settle(now)
        if isinstance(verdict, Limit):
            self.estimate = verdict.rate
            self._probes.reset(now)
            return RateChange(old, self.estimate, "429s")
        self.noise = verdict.share
        self._noise_answers = verdict.answers
        self.estimate = verdict.back_to
        if self.estimate is not None:
            self._probes.restart(now)
        return RateChange(old, self.estimate, "random refusals")

    def _settle(self, now: float) -> None:
        self._judged = Tally(now)
        self._recent = Recent(now, self._interval)
        self._since_refusal = Tally(now)
        self._levels.forget()

    # --- a cap on requests in flight -----------------------------------------------------

    def _trial_cap(self, now: float) -> None:
        """Now and then, one more in flight: kept unless a request within it is refused."""
        if self.cap is not None and now >= self._cap_trial_at:
            self.cap += 1
            self._cap_trial_at = now + 4 * self._interval
