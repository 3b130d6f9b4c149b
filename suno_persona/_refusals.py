"""What the 429s say: whether they call for a test of the limit, and that test.

Refusals lower the pace only when they *respond to the send rate*. When enough 429s show
up (:func:`calls_for_test`), the model starts a :class:`LimitTest`: the pace drops to just
below what the API was accepting, in rounds, until the answers tell a limit from noise.

* Clean at the lower pace (no more refused than the noise): the limit is found.
* Still refused: the pace was above the limit, or the refusals are noise. A limit accepts
  as much as before whatever is sent, so the refused share it predicts is ``1 - accepted
  before / sent now``; noise refuses the same share as before. The nearer prediction wins:
  a limit means another round just below what this one accepted, noise ends the test
  (its share pooled over the rounds, and the number of answers it was read from kept, so
  that a later share is judged against the noise's own error as well as its own).
* Most refused over a quarter interval (three in four of eight answers or more): the pace
  is far above the limit, and the round ends with it halved, without waiting for the five
  accepted answers a measurement needs (a 5/s limit takes a second to give them).
* Nothing refused while the pace held the callers back, when the candidate was a guess
  (the first refusals, or too few answers to measure a rate): the limit may be higher
  still, and the next round tries twice the candidate. A candidate measured while the API
  refused is the limit once a round below it is clean.

The test owns its state and is dropped when it ends; it tells the model what it found
(:class:`Limit`, :class:`Noise`, or :class:`Retest` for another round) and the model acts
on that. Synchronous and clock-free: every method takes ``now``.
"""

from __future__ import annotations

import math

import attrs

from suno_persona._tallies import CUT_MAX, MARGIN, MIN_REFUSED, Ring, Tally, spread

__all__ = ["TEST_ANSWERS", "Limit", "LimitTest", "Noise", "Retest", "calls_for_test"]

_TEST_GAIN = 0.9
TEST_ANSWERS = 16
_TEST_ACCEPTED = 5
_HELD = 0.9  # a test sent at least this share of its pace: the pace held the callers back
_CLEAR = 0.5  # a refused share this high is a limit's (noise that heavy is an outage)
_MOST = 0.75  # ... and this high, read from a few answers, is not chance either


def calls_for_test(
    judged: Tally,
    since_refusal: Tally,
    *,
    noise: float,
    now: float,
    interval: float,
    noise_answers: int = 0,
) -> bool:
    """Whether the answers ``judged`` since the last decision call for a test, at a 429.

    They do when at least a few were refused, clearly more than the ``noise``, over a
    quarter ``interval``, or at once when many were and most of what came back since the
    first of them (``since_refusal``) was refused.
    """
    if judged.refused < MIN_REFUSED:
        return False
    share = judged.share()
    # Many refused, most of what came back since the first of them (a burst
    # accepted before them does not dilute it): a test at once.
    overwhelming = judged.refused >= TEST_ANSWERS / 2 and since_refusal.share() >= _CLEAR
    # With noise learned, only a share clearly above it is news: three deviations of the
    # difference, the noise's own (from the ``noise_answers`` it was read from) included.
    deviation = (
        3 * math.hypot(spread(share, judged.answers), spread(noise, noise_answers))
        if noise
        else 0.0
    )
    above = share - noise > max(MARGIN, deviation)
    return above and (overwhelming or now - judged.since >= interval / 4)


@attrs.frozen
class Limit:
    """The refusals respond to the rate: the limit is ``rate``, in requests per second."""

    rate: float


@attrs.frozen
class Noise:
    """The refusals do not respond to the rate.

    Attributes:
        share: The share of requests refused whatever the rate.
        back_to: The estimate before the test, to pace at again (``None``: unpaced).
        answers: How many answers the share was read from.
    """

    share: float
    back_to: float | None
    answers: int = 0


@attrs.frozen
class Retest:
    """Another round of the test, at its new pace; ``cut``: the pace was lowered."""

    cut: bool


class LimitTest:
    """One test of the limit, from the 429s that called for it to its verdict.

    Args:
        now: When the test starts.
        candidate: The rate the API seemed to accept: the test paces just below it.
        guessed: The candidate is a guess from the first refusals, not what the API was
            seen to accept while it refused: a clean round that held the callers back
            tries twice the candidate (a measured one is the limit once a round is clean).
        back_to: The estimate to go back to if the refusals are noise.
        ring: The model's answers per bucket, for what the API accepted while it refused.
        interval: Seconds over which answers are judged.
        min_rate: Floor of the pace, in requests per second.

    Attributes:
        candidate: The rate the round under way tests.
        back_to: The estimate to go back to if the refusals are noise.
        tally: The answers to the requests sent in the round under way.
    """

    def __init__(
        self,
        now: float,
        candidate: float,
        *,
        guessed: bool = False,
        back_to: float | None,
        ring: Ring,
        interval: float,
        min_rate: float,
    ) -> None:
        self._ring = ring
        self._interval = interval
        self._min_rate = min_rate
        self.candidate = candidate
        self.back_to = back_to
        self.tally = Tally(now)
        self._share: float | None = None  # the refused share of the last round that cut
        self._accepted_rate = 0.0  # ... what the API accepted per second in it
        self._sent_rate = 0.0  # ... and what was sent per second
        self._guessed = guessed
        self._pooled = (0, 0)  # answers of the rounds before the one under way: refused, all
        self._raised = False  # the round under way doubled a clean candidate
        self._ceiling = False  # a doubling ran into 429s: no more of them in this test

    @property
    def since(self) -> float:
        """When the round under way began."""
        return self.tally.since

    def sent(self) -> None:
        """A request was let through in the round under way."""
        self.tally.sent += 1

    def count(self, sent_at: float, *, refused: bool) -> None:
        """The answer to a request sent at ``sent_at``: the round's if sent during it."""
        self.tally.count(sent_at, refused=refused)

    @property
    def pace(self) -> float:
        """Sends per second during the round under way: just below its candidate."""
        return max(self._min_rate, self.candidate * _TEST_GAIN)

    def judge(self, now: float, noise: float) -> Limit | Noise | Retest | None:
        """What the answers of the round under way say, given the ``noise`` learned.

        ``None`` while they are too few to tell. See the module docstring.
        """
        test = self.tally
        elapsed = now - test.since
        old = self.pace
        if self._raised and test.refused >= MIN_REFUSED:
            # A doubled candidate ran into 429s: the limit lies between it and its half
            # (which was clean), nearer to what the API took when that can be told.
            self._raised = False
            self._ceiling = True
            took = 0.0
            if test.accepted >= _TEST_ACCEPTED:
                took = test.accepted / max(elapsed, 1e-9)
                took = min(took, self._ring.delivery_rate(now, test.since))
            self.candidate = max(self.candidate / 2, min(self.candidate, took))
            self.tally = Tally(now)
            return Retest(cut=True)
        share = test.share()
        # Most refused: half the answers are enough (a pace far above a slow limit).
        enough = TEST_ANSWERS // 2 if share >= _MOST else TEST_ANSWERS
        if test.accepted == 0 or (test.answers < enough and elapsed < 2 * self._interval):
            return None  # too few answers yet (or nothing accepted: a window is spent)
        sent_rate = test.sent / max(elapsed, 1e-9)
        held_back = (
            self._guessed
            and self._share is None
            and not self._ceiling
            and sent_rate >= _HELD * old
            and test.refused == 0
        )
        if share < _CLEAR and elapsed < self._interval / 4 and not held_back:
            return None
        # What the API took: pooled from the round's first bucket with a 429, which leaves
        # out a burst a token bucket stored while a test before was below its rate.
        accepted_rate = min(test.accepted / elapsed, self._ring.delivery_rate(now, test.since))
        few = test.accepted < _TEST_ACCEPTED
        if few and elapsed < 2 * self._interval and (share < _MOST or elapsed < self._interval / 4):
            # Too few accepted to measure what the API takes; but most refused over a
            # quarter interval is enough to cut (by half at most, below), not to wait for
            # a slow limit's answers at a pace ten times too high.
            return None
        if held_back:
            # Nothing refused, and the callers wanted more: the limit may be higher still.
            self.candidate *= 2
            self._raised = True
            self.tally = Tally(now)
            return Retest(cut=False)
        if share <= noise + MARGIN:
            return Limit(self.candidate)
        before = self._share
        if before is not None and not few:
            # A limit takes as much as before at a lower pace; noise takes less, in step
            # with what was sent. Nearer to the second: noise.
            ratio = sent_rate / max(self._sent_rate, 1e-9)
            if accepted_rate < self._accepted_rate * (1 + ratio) / 2 and share > before / 2:
                # The share noise refuses: pooled over the rounds, as every one of them
                # measured it (a mean of two rounds' shares read 0.4 for 0.5).
                refused, answers = self._pooled
                pooled = (refused + test.refused) / (answers + test.answers)
                return Noise(min(0.9, pooled), self.back_to, answers + test.answers)
        self._share = share
        self._accepted_rate = accepted_rate
        self._sent_rate = sent_rate
        # A test that took too few to measure halves its candidate at most: a limiter that
        # counts its denials accepts next to nothing while it is fed above its limit,
        # which says nothing of the limit.
        floor = CUT_MAX * self.candidate if test.accepted < _TEST_ACCEPTED else 0.0
        self.candidate = max(self._min_rate, floor, min(self.candidate, accepted_rate))
        self._pooled = (self._pooled[0] + test.refused, self._pooled[1] + test.answers)
        self.tally = Tally(now)
        self._raised = False
        return Retest(cut=True)
