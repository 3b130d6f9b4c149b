"""The pieces under the model, each on a made-up clock: the start-up ramp, the ring of
answers, and the send slots of the in-process state."""

from __future__ import annotations

import math

from suno_persona._refusals import Limit, LimitTest, Retest, calls_for_test
from suno_persona._startup import Ramp
from suno_persona._state import LocalState
from suno_persona._tallies import Ring, Tally
from suno_persona._windows import Windows


class TestRamp:
    def test_a_success_makes_room_for_two(self):
        ramp = Ramp(4, 64)
        for _ in range(4):
            ramp.answered(0.01, accepted=True)
        assert ramp.window == 8

    def test_a_429_gives_its_place_to_no_one(self):
        """Past a limit's burst, every answer is a 429: the ramp shrinks instead of sending
        a new request for each refused one (it sent a window's worth more into an empty
        token bucket before the model's first test)."""
        ramp = Ramp(4, 64)
        for _ in range(4):
            ramp.answered(0.01, accepted=True)
        for _ in range(3):
            ramp.answered(0.02, accepted=False)
        assert ramp.window == 5
        for _ in range(10):
            ramp.answered(0.03, accepted=False)
        assert ramp.window == 1  # never below one

    def test_random_refusals_slow_its_growth_but_do_not_stop_it(self):
        """30% refused: the window still grows by about 0.4 per answer."""
        ramp = Ramp(4, 1000)
        for i in range(100):
            ramp.answered(0.01, accepted=i % 10 >= 3)
        assert ramp.window == 4 + 70 - 30


class TestDeliveryRate:
    def test_few_answers_per_bucket_are_pooled(self):
        """20/s paced into a 20/s limit: two answers per tenth of a second, and a bucket
        holds a 429 because one of its two was refused. The median of those buckets says
        10/s; what the API took from the first 429 on says about 20."""
        ring = Ring(1.0)
        for i in range(20):
            now = 0.0125 + i * 0.05
            ring.count(now, refused=i % 6 == 5)
        assert ring.delivery_rate(1.0) >= 15

    def test_a_burst_before_the_first_429_is_left_out(self):
        """A burst in one bucket is not taken for the rate: 40 accepted in the first
        bucket, its first 429 in the same bucket, then 5 per bucket beside a 429 each."""
        ring = Ring(1.0)
        for i in range(40):
            ring.count(0.001 + i * 0.001, refused=False)
        ring.count(0.05, refused=True)
        for b in range(1, 10):
            for k in range(5):
                ring.count(b * 0.1 + 0.01 + k * 0.01, refused=False)
            ring.count(b * 0.1 + 0.08, refused=True)
        assert 45 <= ring.delivery_rate(1.0) <= 55

    def test_answers_in_clumps_are_pooled(self):
        """50/s, answered in clumps (a loaded machine): buckets of 8 with a 429 between
        buckets of 2 without. The buckets with a 429 are the full ones (their median says
        80/s); what was accepted from the first of them on says 50."""
        ring = Ring(1.0)
        for b in range(10):
            for k in range(8 if b % 2 == 0 else 2):
                ring.count(b * 0.1 + 0.01 + k * 0.005, refused=False)
            if b % 2 == 0:
                ring.count(b * 0.1 + 0.09, refused=True)
        assert 45 <= ring.delivery_rate(1.0) <= 55

    def test_a_slower_pace_before_since_is_left_out(self):
        """A round at 20/s, then one at 50/s from 0.5 s, both beside 429s: from 0.5 on, the
        rate is the second round's."""
        ring = Ring(1.0)
        for b in range(10):
            for k in range(2 if b < 5 else 5):
                ring.count(b * 0.1 + 0.01 + k * 0.015, refused=False)
            ring.count(b * 0.1 + 0.09, refused=True)
        assert ring.delivery_rate(1.0) < 40
        assert 45 <= ring.delivery_rate(1.0, 0.5) <= 55


class TestLimitTest:
    @staticmethod
    def clean_round(guessed: bool) -> object:
        """A round at the test's pace, every send held back by it, all accepted."""
        test = LimitTest(
            0.0, 50.0, guessed=guessed, back_to=None, ring=Ring(1.0), interval=1.0, min_rate=1.0
        )
        verdict = None
        for i in range(16):
            sent_at = (i + 1) / test.pace
            test.sent()
            test.count(sent_at, refused=False)
            verdict = test.judge(sent_at + 0.003, 0.0)
        return verdict

    def test_a_measured_candidate_is_the_limit_once_a_round_is_clean(self):
        """What the API took while it refused, then a clean round below it: the limit.
        Doubling it (as for a guess) cost three or four 429s more per test in real time."""
        assert self.clean_round(guessed=False) == Limit(50.0)

    def test_a_guessed_candidate_is_doubled_while_it_holds_the_callers_back(self):
        """A guess from the first refusals may be far too low: the next round tries twice it."""
        assert self.clean_round(guessed=True) == Retest(cut=False)

    @staticmethod
    def round_far_above(refused_every: int) -> tuple[LimitTest, float, object]:
        """A round at 45/s against a limit of 5/s (``refused_every=9``: one in nine accepted),
        or against refusals of every other request; judged at each answer until a verdict."""
        ring = Ring(1.0)
        test = LimitTest(0.0, 50.0, back_to=None, ring=ring, interval=1.0, min_rate=1.0)
        for i in range(45):
            sent_at = (i + 1) / test.pace
            refused = i % refused_every != refused_every - 1 if refused_every > 2 else i % 2 == 0
            test.sent()
            ring.count(sent_at + 0.003, refused=refused)
            test.count(sent_at, refused=refused)
            verdict = test.judge(sent_at + 0.003, 0.0)
            if verdict is not None:
                return test, sent_at, verdict
        return test, math.inf, None

    def test_most_refused_over_a_quarter_interval_cuts_at_once(self):
        """Eight in nine refused: the round ends after a quarter interval with the candidate
        halved, without waiting a second for five accepted answers at ten times the limit
        (a 5/s bucket took 57 429s in 60 requests so, now 43)."""
        test, at, verdict = self.round_far_above(9)
        assert verdict == Retest(cut=True)
        assert test.candidate == 25.0
        assert at < 0.3

    def test_half_refused_is_not_read_from_a_few_answers(self):
        """Every other request refused (as 30% noise often looks over eight answers): the
        round waits for its sixteen answers before it says anything."""
        _, at, _ = self.round_far_above(2)
        assert at >= 16 / 45 - 1e-9


class TestCallsForTest:
    @staticmethod
    def tally(accepted: int, refused: int) -> Tally:
        tally = Tally(0.0)
        tally.accepted, tally.refused = accepted, refused
        return tally

    def test_a_share_above_a_noise_read_from_few_answers_is_no_news(self):
        """23 of 35 refused against noise of 0.41 read from 60 answers: the difference is
        within three deviations of both readings (half refused at random took 7x the time
        of no throttle when only the new reading's deviation counted)."""
        judged = self.tally(12, 23)
        called = calls_for_test(
            judged, judged, noise=0.406, now=1.0, interval=1.0, noise_answers=60
        )
        assert not called

    def test_the_same_share_against_a_well_read_noise_is(self):
        judged = self.tally(12, 23)
        called = calls_for_test(
            judged, judged, noise=0.406, now=1.0, interval=1.0, noise_answers=10_000
        )
        assert called


class TestWindows:
    @staticmethod
    def windows_after(pattern: str, *, told: bool) -> bool:
        """Answers ``a`` (accepted) and ``r`` (429), 10 ms apart: is a window spent?"""
        windows = Windows(interval=1.0, min_rate=1.0, ring=Ring(1.0))
        now = 0.0
        for answer in pattern:
            now += 0.01
            if answer == "a":
                windows.accepted(now)
            else:
                windows.refused(now)
        return windows.spent(now + 0.3, estimate=20.0, noise=0.0, burst=0, told=told)

    def test_a_run_of_429s_after_few_between_acceptances_is_a_spent_window(self):
        assert self.windows_after("a" * 20 + "rrrrr", told=False)

    def test_a_run_as_long_as_the_429s_between_acceptances_give_is_chance(self):
        """Half refused between acceptances: five in a row is no spent window."""
        assert not self.windows_after("ar" * 10 + "rrrrr", told=False)

    def test_a_retry_after_is_taken_at_its_word(self):
        """With a Retry-After the server says when to come back: four in a row is enough."""
        assert self.windows_after("ar" * 10 + "rrrrr", told=True)


class TestSendSlots:
    def state(self):
        return LocalState(
            interval=1.0,
            min_rate=1.0,
            adaptive=True,
            probe_initial=0.25,
            probe_max=1.0,
            max_pause=10.0,
            emit=lambda _event: None,
        )

    def test_slots_reserved_at_a_slow_pace_end_sooner_when_it_rises(self):
        """Three slots reserved at 2/s reach 1.5 s ahead; when the pace rises to 6/s (a
        probe), the next slot is within three of the new spacing, not behind the old ones
        (a probe above 2/s once sent one request in its whole second)."""
        state = self.state()
        model = state._model
        model.seed(2.0, 0.0)
        for _ in range(3):
            state.decide(0.0, math.inf, None)
        model.estimate = 6.0
        decision = state.decide(0.01, math.inf, None)
        assert decision.at <= 0.01 + 3 / (6.0 * 0.98) + 1e-9

    def test_slots_reserved_at_a_fast_pace_stay_where_they_are_when_it_falls(self):
        """A lower pace (a drain after a probe, a test) leaves the slots ahead as they were
        reserved, by callers that wait for them: stretching them held a 400/s limit back by
        a third in real time."""
        state = self.state()
        model = state._model
        model.seed(6.0, 0.0)
        for _ in range(3):
            state.decide(0.0, math.inf, None)
        tat = state._tat
        model.estimate = 2.0
        state.decide(0.01, math.inf, None)
        assert state._tat == tat + 1 / (2.0 * 0.98)
