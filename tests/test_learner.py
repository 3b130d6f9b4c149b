"""The model of the limit (``_learner.LimitModel``), fed answers by hand on a made-up clock."""

from __future__ import annotations

import math
import tracemalloc

import pytest

from suno_persona._learner import LimitModel
from suno_persona.testing._limiters import TokenBucket


def model() -> LimitModel:
    return LimitModel(interval=1.0, min_rate=1.0)


def feed(lm, accept, *, until, pace_of=None, start=0.0, latency=0.003):
    """Sends paced by the model (or at ``pace_of`` when unpaced), each answered by
    ``accept(now)``; returns the changes the model made."""
    now, changes = start, []
    while now < until:
        rate = lm.pace(now) or pace_of
        lm.sent(now)
        if accept(now):
            change = lm.accepted(now + latency, now, 1)
        else:
            change = lm.refused(now + latency, now, 1)
        if change is not None:
            changes.append(change)
        now += 1 / rate
    return changes


def bucket(rate, burst=10):
    """``accept(now)`` of a token bucket: the limiter model the simulator uses."""
    limiter = TokenBucket(rate, burst)
    return lambda now: limiter.arrive(now).accepted


class TestWhatRefusalsMean:
    def test_no_429_no_limit(self):
        """Answers all accepted: nothing is learned, nothing paced."""
        lm = model()
        assert feed(lm, lambda _n: True, until=3, pace_of=200) == []
        assert lm.pace(3) is None
        assert not lm.known

    def test_a_rate_limit_is_found_from_what_was_accepted(self):
        """A 50/s bucket hit at 200/s: the estimate lands near 50, not on the start-up burst."""
        lm = model()
        changes = feed(lm, bucket(50), until=4, pace_of=200)
        assert changes[0].reason == "429s"
        assert lm.estimate == pytest.approx(50, rel=0.15)

    def test_a_burst_accepted_first_does_not_delay_the_first_test(self):
        """20 accepted from a full bucket, then 9 of the next 10 refused, all within 30 ms:
        the refusals since the first 429 are what count, so a test starts at once."""
        lm = model()
        for i in range(20):
            lm.accepted(i * 0.001, i * 0.001, 8)
        for i in range(10):
            at = 0.02 + i * 0.001
            (lm.accepted if i == 4 else lm.refused)(at, at, 8)
        assert lm.testing_from is not None

    def test_random_refusals_are_noise(self):
        """30% refused whatever the rate: a test shows it, nothing stays paced."""
        lm = model()
        flips = iter([False, True, True, False, True, True, True, False, True, True] * 1000)
        changes = feed(lm, lambda _n: next(flips), until=5, pace_of=200)
        assert changes[-1].reason == "random refusals"
        assert lm.estimate is None
        assert lm.noise == pytest.approx(0.3, abs=0.1)

    def test_a_concurrency_limit_is_a_cap(self):
        """Refusals only of requests sent with more than 8 in flight: a cap of about 8."""
        lm = model()
        now = 0.0
        for _ in range(400):
            for in_flight in range(1, 13):
                if in_flight <= 8:
                    lm.accepted(now + 0.25, now, in_flight)
                else:
                    lm.refused(now + 0.001, now, in_flight)
            now += 0.01
        assert lm.cap is not None
        assert 7 <= lm.cap <= 9

    def test_a_cap_is_read_below_the_refusals_not_at_the_ramp(self):
        """Four answers back from a slow API (levels 1-4: the start-up ramp), refusals at 9
        and above: the cap is 8, not 4."""
        lm = model()
        for in_flight in range(9, 17):
            lm.refused(0.01, 0.0, in_flight)
        for in_flight in range(1, 5):
            lm.accepted(0.25, 0.0, in_flight)
        for in_flight in range(9, 13):
            lm.refused(0.26, 0.26, in_flight)
        assert lm.cap == 8

    def test_a_spent_window_is_refusals_in_a_row_and_nothing_accepted(self):
        """Four 429s in a row and no accept for a while: spent; an accept ends it."""
        lm = model()
        feed(lm, lambda _n: True, until=1, pace_of=50)
        for i in range(4):
            lm.refused(1.0 + i * 0.02, 1.0 + i * 0.02, 1)
        assert lm.spent(1.2)
        lm.accepted(1.21, 1.2, 1)
        assert not lm.spent(1.21)

    def test_noise_needs_a_longer_run_to_look_spent(self):
        """With 30% noise learned, four 429s in a row are the noise's, not a spent window."""
        lm = model()
        lm.noise = 0.3
        lm.accepted(0.99, 0.99, 1)
        for i in range(4):
            lm.refused(1.0 + i * 0.001, 1.0, 1)
        assert not lm.spent(1.01)

    def test_a_spent_window_teaches_its_quota(self):
        """100 accepted from 0 s, then at 0.2 s the window is spent with 4 s to go: it
        gives 100 per 4.2 s."""
        lm = model()
        for i in range(100):
            lm.accepted(i * 0.001, i * 0.001, 1)
        change = lm.window_spent(0.2, 4.0)
        assert change is not None
        assert lm.estimate == pytest.approx(100 / 4.2)
        assert lm.burst == 100

    def test_a_window_spent_after_seconds_of_pacing_is_not_taken_for_one_windows_quota(self):
        """Paced at 49/s for 3.5 s, then a probe spends a one-second window (Retry-After: 1):
        the 170 accepted took 4.5 s to give, not one."""
        lm = model()
        lm.seed(49.0, 0.0)
        for i in range(170):
            at = 1.0 + i / 49
            lm.accepted(at, at, 1)
        lm.window_spent(4.5, 1.0)
        assert lm.estimate == pytest.approx(170 / (3.5 + 1.0), rel=0.02)
        assert lm.burst == 0  # a one-second wait: not a long window, no burst at its reset

    def test_a_window_spent_at_once_lets_its_quota_go_at_its_reset(self):
        """50 accepted in 50 ms, then refused with a second to go: a window that resets
        whole (a fixed window, or a log the burst filled). Its quota goes at once at the
        reset, as sending without a throttle does, rather than paced over the window."""
        lm = model()
        for i in range(50):
            lm.accepted(i * 0.001, i * 0.001, 1)
        lm.window_spent(0.05, 1.0)
        assert lm.burst == 50

    def test_a_learned_windows_quota_taken_one_refusal_says_it_is_spent(self):
        """Once a window's quota is known, a 429 after the quota was taken again is the
        window's end: no run of four refusals (each a request wasted) is waited for."""
        lm = model()
        for i in range(50):
            lm.accepted(i * 0.001, i * 0.001, 1)
        lm.window_spent(0.05, 1.0)
        for i in range(50):
            lm.accepted(1.05 + i * 0.001, 1.05 + i * 0.001, 1)
        lm.refused(1.11, 1.11, 1)
        assert lm.spent(1.11)

    def test_a_burst_refused_at_the_reset_ends_the_bursts(self):
        """A token bucket with a large burst looks like a window once; at the reset it
        takes a tenth of the burst: no window resets whole here, and no burst is sent again."""
        lm = model()
        for i in range(100):
            lm.accepted(i * 0.001, i * 0.001, 1)
        lm.window_spent(0.1, 1.0)
        assert lm.burst == 100
        for i in range(10):
            lm.accepted(1.1 + i * 0.001, 1.1 + i * 0.001, 1)
        lm.window_spent(1.12, 1.0)
        assert lm.burst == 0
        for i in range(10):
            lm.accepted(2.12 + i * 0.001, 2.12 + i * 0.001, 1)
        lm.window_spent(2.14, 1.0)
        assert lm.burst == 0

    def test_a_window_spent_by_a_probe_keeps_the_estimate(self):
        """The probe above a 50/s estimate spent a window: that is the probe's answer, not
        a new quota; the estimate holds and the next probe comes later."""
        lm = model()
        lm.seed(50.0, 0.0)
        cycle = lm._probes.cycle
        for i in range(100):
            at = i / 50
            lm.accepted(at, at, 1)
        assert lm.pace(2.5) > 50  # probing
        assert lm.window_spent(2.5, 1.0) is None
        assert lm.estimate == 50.0
        assert lm._probes.cycle == 2 * cycle

    def test_a_window_that_reopens_without_retry_after_teaches_its_quota(self):
        """60 accepted at once; knocks refused until 1.9 s, one accepted at 2.1 s (a sliding
        log, or a limiter that counts its denials): it reopened at about 2 s, so the pace is
        60 per 2 s, evenly."""
        lm = model()
        for i in range(60):
            lm.accepted(i * 0.001, i * 0.001, 1)
        for at in (0.06, 0.2, 0.5, 0.9, 1.9):
            lm.refused(at, at, 1)
        change = lm.window_reopened(2.1)
        assert change is not None
        assert lm.estimate == pytest.approx(30)
        assert lm.burst == 0

    def test_a_short_reopening_lowers_the_pace_by_half_at_most(self):
        """Two accepted in 0.8 s after a pace of 40/s says little: the pace halves."""
        lm = model()
        lm.seed(40.0, 0.0)
        lm.accepted(10.0, 10.0, 1)
        lm.accepted(10.1, 10.1, 1)
        lm.window_reopened(10.8)
        assert 0.45 * 40 <= lm.estimate <= 40

    def test_a_test_that_takes_next_to_nothing_halves_its_candidate_at_most(self):
        """A limiter counting its denials, fed above its limit, accepts nothing: the test
        that measured that halves its candidate instead of taking the floor."""
        lm = model()
        lm.seed(40.0, 0.0)
        lm.accepted(5.0, 5.0, 1)
        for i in range(20):  # 429s enough for a test
            lm.refused(5.01 + i * 0.02, 5.01 + i * 0.02, 1)
        assert lm.testing_from is not None
        candidate = lm.pace(5.5)
        for i in range(40):  # the test: one accepted, the rest refused, for 2 intervals
            at = 5.5 + i * 0.06
            lm.sent(at)
            (lm.accepted if i == 0 else lm.refused)(at + 0.003, at, 1)
        assert lm.pace(8.0) >= 0.45 * candidate


class TestAnEstimateAboveTheLimit:
    def test_429s_long_after_the_decision_start_a_test_at_once(self):
        """An estimate 10% above a 50/s bucket: the bucket's burst drains for seconds, then
        a 429 comes every dozen sends. The share is judged over the last interval or two,
        not since the decision, so a test starts within five 429s (since the decision, the
        clean seconds before kept the share under the margin for twenty)."""
        lm = model()
        lm.seed(55.0, 0.0)
        lm._probes.restart(0.0, quarters=400)  # no probe in the way
        limiter, now, refused = TokenBucket(50, 10), 0.0, 0
        while lm.testing_from is None and now < 20:
            lm.sent(now)
            if limiter.arrive(now).accepted:
                lm.accepted(now + 0.003, now, 1)
            else:
                refused += 1
                lm.refused(now + 0.003, now, 1)
            now += 1 / lm.pace(now)
        assert lm.testing_from is not None
        assert refused <= 5

    def test_a_probes_429s_are_left_to_the_probe(self):
        """A probe's three 429s (a sliding log a little under the pace) fall in the last
        interval with thirty answers: the probe judges them, no test of the limit starts
        (one did, and a 20/s log was then paced at 11/s). Answers take 0.2 s, so the three
        were all sent before the first came back."""
        lm = model()
        lm.seed(20.0, 0.0)
        lm._probes.restart(0.0, quarters=16)  # the probe runs from 4 s
        now, probe_sent, pending = 0.0, 0, []
        while now < 6:
            while pending and pending[0][0] <= now:
                at, sent_at, refuse = pending.pop(0)
                (lm.refused if refuse else lm.accepted)(at, sent_at, 1)
            lm.sent(now)
            if lm._probes.sent_during(now):
                probe_sent += 1
            pending.append((now + 0.2, now, probe_sent in (10, 11, 12)))
            now += 1 / lm.pace(now)
        assert probe_sent >= 12
        assert lm._probes.cycle == 16  # the probe was judged refused
        assert lm.testing_from is None
        assert lm.estimate == 20.0


class TestProbing:
    def test_a_probe_that_finds_more_lifts_the_estimate(self):
        """The limit rose from 20/s to 100/s: probes above the estimate find it."""
        lm = model()
        lm.seed(20.0, 0.0)
        feed(lm, bucket(100), until=15, start=0.0)
        assert lm.estimate > 40

    def test_a_probe_refused_keeps_the_estimate_and_comes_less_often(self):
        """At the limit, a probe is refused: the estimate stays, the cycle doubles."""
        lm = model()
        lm.seed(50.0, 0.0)
        feed(lm, bucket(50, burst=2), until=8, start=0.0)
        assert lm.estimate == pytest.approx(50, rel=0.1)
        assert lm._probes.cycle > 8

    def test_a_bold_probe_refused_takes_a_smaller_step_soon(self):
        """A probe at three times the estimate (after clean ones doubled the step) ran into
        the limit: the next probe comes after the drain with half the step, and the cycle
        does not back off (it once waited 4 s, and a risen limit took 5 s more to find)."""
        lm = model()
        lm.seed(20.0, 0.0)
        lm._probes.gain = 3.0
        start = lm._probes.tally.since
        for i in range(5):
            lm.accepted(start + 0.01 + i * 0.01, start + i * 0.01, 1)
        for i in range(3):
            lm.refused(start + 0.06 + i * 0.01, start + 0.05 + i * 0.01, 1)
        assert lm._probes.gain == 2.0
        assert lm._probes.cycle == 8
        assert lm._probes.tally.since <= start + 0.08 + 0.5 + 1e-9

    def test_a_limit_found_afresh_restarts_the_probe_schedule(self):
        """Probes refused at an old limit had backed the cycle off to 8 s; a test that finds
        a new limit probes it on the shortest cycle again."""
        lm = model()
        lm._probes.cycle = 32
        feed(lm, bucket(50), until=1.5, pace_of=200)
        assert lm.estimate == pytest.approx(50, rel=0.15)
        assert lm._probes.cycle == 8


def test_memory_is_constant_in_requests():
    """A long run of answers grows nothing: the model counts in a fixed ring."""
    lm = model()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(1000, 101_000):
            lm.accepted(i * 0.001, i * 0.001, 1 + i % 7)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert sum(s.size_diff for s in after.compare_to(before, "filename")) < 16 * 1024
    assert math.isinf(lm._judged.since) or lm._judged.since >= 0
