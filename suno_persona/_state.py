"""The gate's state kept in this process: what each send of one key asks, each answer tells.

:class:`LocalState` is the default :class:`~suno_persona._seam.ThrottleState` (the seam,
with the values it passes, is in ``_seam``; ``_redis_state.RedisState`` shares the state
among processes). The gate asks it one question per send and tells it each answer.

:class:`LocalState` holds, in the order a send is checked against them:

* the **maintenance breaker** (``_breaker``): after a 455, one probe at a time;
* the **pause** of a spent window: when the model says a window is used up and the 429
  carries a ``Retry-After`` (at most ``max_pause``), no send goes until it has passed, once
  for the whole client; without one, the same breaker mechanism sends single probes until
  one is accepted, so a limiter that counts its denials is not fed more;
* the **announced quota** (``_quota``): no send into a window whose remaining is 0;
* the **pace** of the model (``_learner``): a reservation of the next send slot (GCRA,
  with a burst of a tenth of a second's worth).

A ``Retry-After`` on a 429 while the API accepts other requests is not a pause: the pace
does the waiting (a gateway's whole-second value on a token bucket would cut throughput to
a fraction of the limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from suno_persona._breaker import Admit, MaintenanceBreaker
from suno_persona._learner import LimitModel, RateChange
from suno_persona._quota import Quota
from suno_persona._seam import GO, Answer, Decision, ThrottleState
from suno_persona.events import BreakerClosed, BreakerOpened, PauseStarted, RateChanged

__all__ = ["GO", "Answer", "Decision", "LocalState", "ThrottleState"]

_BURST_SECONDS = 0.1
_KNOCK_FIRST = 0.1


class LocalState:
    """The :class:`ThrottleState` of one process; see the module docstring.

    Args:
        interval: Seconds over which answers are judged.
        min_rate: Floor of the learned pace.
        adaptive: Learn from 429s (``False``: pauses, breaker and quotas only).
        probe_initial: Seconds from the first 455 to the first maintenance probe.
        probe_max: Longest interval between maintenance probes.
        max_pause: The longest pause or probe wait a ``Retry-After`` may set.
        emit: Called with each event (rate changed, pause started, breaker opened/closed).
        breaker_of: Another state whose maintenance breaker this one shares (another
            resource of the same API: a 455 means the whole service is down), keeping its
            own model and pause. Every send through this state is then decided.
    """

    def __init__(
        self,
        *,
        interval: float,
        min_rate: float,
        adaptive: bool,
        probe_initial: float,
        probe_max: float,
        max_pause: float,
        emit: Callable[[object], None],
        breaker_of: LocalState | None = None,
    ) -> None:
        self._emit = emit
        self._max_pause = max_pause
        self._model = LimitModel(interval=interval, min_rate=min_rate) if adaptive else None
        self._breaker = MaintenanceBreaker(
            probe_initial=min(probe_initial, max_pause), probe_max=min(probe_max, max_pause)
        )
        self._knocks = MaintenanceBreaker(probe_initial=_KNOCK_FIRST, probe_max=interval)
        self._paused_until = -math.inf
        self._paused_at = -math.inf
        self._tat = -math.inf
        self._spacing = math.inf  # the send interval the slots up to _tat were spaced at
        self._tested: float | None = None
        self.seq = 0
        """Sends let through so far."""
        self._left: int | None = None  # announced: sends left before _reset_at
        self._answered = 0
        self._window_seq = 0
        self._reset_at = math.inf
        self._quota: Quota | None = None
        self._announced: float | None = None
        self.go_from = -math.inf
        """From when a send may go without :meth:`decide`: nothing holds sends back and
        there is no pace to reserve a slot from. ``inf`` while every send must be decided."""
        self._sharers: list[LocalState] = []
        self._borrowed = breaker_of is not None
        if breaker_of is not None:
            self._breaker = breaker_of._breaker  # noqa: SLF001 - same class
            self._sharers.append(breaker_of)
            breaker_of._sharers.append(self)  # noqa: SLF001 - same class
            self.go_from = math.inf

    # --- what the gate reads ------------------------------------------------------------

    @property
    def breaker_open(self) -> bool:
        """Whether the maintenance breaker is open."""
        return self._breaker.is_open

    @property
    def live(self) -> int:
        return 1

    @property
    def cap(self) -> int | None:
        """The learned cap on requests in flight, ``None`` when there is none."""
        return None if self._model is None else self._model.cap

    @property
    def limited(self) -> bool:
        """Whether a limit is known (a pace, a cap, a quota): the slow start is over."""
        model = self._model
        return self._quota is not None or (
            model is not None and (model.known or model.cap is not None)
        )

    def rate(self, now: float) -> float | None:
        if self._announced is not None:
            return self._announced
        return None if self._model is None else self._model.pace(now)

    def register(self) -> None:
        pass

    def seed(self, rate: float, now: float) -> None:
        """Start from a rate learned elsewhere (a shared store that stopped answering)."""
        if self._model is not None:
            self._model.seed(rate, now)
            self._tat = now
        self._refresh()

    def blocked_until(self) -> float:
        until = self._paused_until
        for breaker in (self._breaker, self._knocks):
            if breaker.is_open:
                until = max(until, breaker.next_probe_at)
        if self._left is not None and self._left <= 0:
            until = max(until, self._reset_at)
        return until

    # --- one send -------------------------------------------------------------------------

    async def admit(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        return self.decide(now, max_wait, reserved)

    def decide(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        """:meth:`admit`, synchronously: this state needs no round trip."""
        for breaker, reason in ((self._breaker, "the maintenance"), (self._knocks, "the limit")):
            verdict, at = breaker.admit(now)
            if verdict is Admit.PROBE:
                return self._sent(now, Decision(now, go=True, probe=True))
            if verdict is not Admit.SEND:
                return Decision(at, go=False, wait_probe=verdict is Admit.WAIT_PROBE, reason=reason)
        if now < self._paused_until:
            return Decision(self._paused_until, go=False, reason="the server's Retry-After")
        if self._left is not None:
            if now >= self._reset_at:
                self._next_window()
            elif self._left - (self.seq - self._answered) <= 0:
                return Decision(self._reset_at, go=False, reason="the announced quota")
        model = self._model
        rate = None if model is None else model.pace(now)
        if rate is None or (reserved is not None and reserved == model.changes):  # type: ignore[union-attr]
            return self._sent(now, GO)
        interval = 1 / rate
        if self._tat > now and interval < self._spacing:
            # The slots ahead were spaced at a slower pace: at this one they end sooner (a
            # probe above a slow pace is not held back by the slow pace's backlog). A lower
            # pace leaves them as they are: stretching them held a 400/s limit back by a
            # third in real time, where the slots ahead are reserved by waiting callers.
            self._tat = now + (self._tat - now) * interval / self._spacing
        self._spacing = interval
        burst = max(interval, _BURST_SECONDS, model.burst * interval)  # type: ignore[union-attr]
        if model.testing_from is not None and model.testing_from != self._tested:  # type: ignore[union-attr]
            # A test of the limit began: no burst credit, the next send goes one interval on.
            self._tested = model.testing_from  # type: ignore[union-attr]
            self._tat = max(self._tat, now + interval + burst)
        send_at = max(now, self._tat - burst)
        if send_at - now > min(max_wait, burst):
            return Decision(send_at, go=False, reason="a send slot")
        self._tat = max(self._tat, now) + interval
        if send_at <= now:
            return self._sent(now, GO)
        return Decision(send_at, go=True, reserved=model.changes, reason="a send slot")  # type: ignore[union-attr]

    def _sent(self, now: float, decision: Decision) -> Decision:
        self.seq += 1
        if self._model is not None:
            self._model.sent(now)
        return decision

    def release(self, decision: Decision, now: float) -> bool:
        if decision.probe:
            self._breaker.no_answer(probe=True)
            self._knocks.no_answer(probe=True)
            return True
        if decision.reserved is not None and decision.at > now and self._model is not None:
            rate = self._model.pace(now)
            if rate is not None:
                self._tat = max(now, self._tat - 1 / rate)
        return False

    # --- one answer -----------------------------------------------------------------------

    def report(
        self,
        answer: Answer,
        retry_after: float | None,
        *,
        now: float,
        sent_at: float,
        probe: bool,
        in_flight: int = 1,
        seq: int = 0,
        quota: Quota | None = None,
    ) -> bool:
        model = self._model
        self._answered += 1
        if quota is not None:
            self._announce(quota, now, seq)
        elif self._left is not None and answer is Answer.ACCEPTED:
            self._left -= 1  # a reply that announced nothing still took from what was left
        if (
            answer is Answer.ACCEPTED
            and not probe
            and not self._breaker.is_open
            and not self._knocks.is_open
        ):
            if model is not None:  # the common case, kept short: a plain success
                self._change(model.accepted(now, sent_at, in_flight))
            return False
        changed = self._report(answer, retry_after, now, sent_at, probe, in_flight)
        self._refresh()
        for sharer in self._sharers:
            sharer._refresh()  # noqa: SLF001 - same class
        return changed

    def _report(  # noqa: PLR0917 - the answer's facts, in the order report() has them
        self,
        answer: Answer,
        retry_after: float | None,
        now: float,
        sent_at: float,
        probe: bool,
        in_flight: int,
    ) -> bool:
        adopted = (
            retry_after if retry_after is not None and retry_after <= self._max_pause else None
        )
        if answer is Answer.MAINTENANCE:
            if self._breaker.maintenance(now, adopted, probe=probe):
                self._emit(BreakerOpened(next_probe_in=self._breaker.next_probe_at - now))
            if adopted is not None:
                self._emit(PauseStarted(seconds=adopted, code=455))
            return probe
        if answer is Answer.NO_ANSWER:
            self._breaker.no_answer(probe=probe)
            self._knocks.no_answer(probe=probe)
            return probe
        open_for = self._breaker.answered(now, probe=probe)
        if open_for is not None:
            self._emit(BreakerClosed(open_for=open_for))
        model = self._model
        if answer is Answer.ACCEPTED:
            reopened = self._knocks.answered(now, probe=probe) is not None
            if model is not None:
                if reopened:
                    self._change(model.window_reopened(now))
                self._change(model.accepted(now, sent_at, in_flight))
            return True
        if model is not None:
            self._change(model.refused(now, sent_at, in_flight))
        if model is None or model.spent(now, told=adopted is not None):
            self._spent(now, adopted, sent_at, probe=probe)
        return probe or open_for is not None

    def _spent(self, now: float, adopted: float | None, sent_at: float, *, probe: bool) -> None:
        """A window is used up: wait out its Retry-After once, or knock with single probes."""
        if adopted is None:
            if self._model is not None:
                self._knocks.maintenance(now, None, probe=probe)
            return
        if sent_at > self._paused_at and now + adopted > self._paused_until:
            # (A 429 to a request sent before the pause began is that pause's news.)
            self._paused_until = now + adopted
            self._paused_at = now
            self._knocks.answered(now, probe=False)
            if self._model is not None:
                self._change(self._model.window_spent(now, adopted))
            rate = self.rate(now)
            self._tat = self._paused_until + (1 / rate if rate else 0.0)
            self._emit(PauseStarted(seconds=adopted, code=429))

    def _announce(self, quota: Quota, now: float, seq: int) -> None:
        """A reply announced its quota: no send into a window with nothing left.

        Replies come back in any order; the least remaining of the replies in one window
        is the latest count, and every request still in flight may take from it (so at
        most that many minus those in flight may go). A reply to a request sent before the
        current window began is old news.
        """
        if quota.remaining is not None and seq > self._window_seq:
            reset_at = now + quota.reset if quota.reset is not None else math.inf
            if self._left is None or quota.remaining < self._left:
                self._left = quota.remaining
            self._reset_at = min(reset_at, self._reset_at) if self._reset_at > now else reset_at
        if quota.limit is not None and (self._quota is None or quota.limit != self._quota.limit):
            old = self.rate(now)
            self._announced = quota.limit / quota.window if quota.window else None
            self._emit(RateChanged(old=old, new=self._announced, reason="headers"))
        if quota.limit is not None or quota.window is not None:
            self._quota = quota
        self._refresh()

    def _next_window(self) -> None:
        """The announced window reset: its quota is there again (when it was announced)."""
        quota = self._quota
        self._window_seq = self.seq
        if quota is None or quota.limit is None:
            self._left = None
            self._reset_at = math.inf
            return
        self._left = quota.limit
        self._reset_at = self._reset_at + quota.window if quota.window else math.inf

    def _change(self, change: RateChange | None) -> None:
        if change is not None:
            self._emit(RateChanged(old=change.old, new=change.new, reason=change.reason))
            self._refresh()

    def _refresh(self) -> None:
        """Recompute :attr:`go_from` after anything but a plain success."""
        model = self._model
        free = (
            not self._breaker.is_open
            and not self._knocks.is_open
            and self._left is None
            and (model is None or not model.known)
        )
        self.go_from = self._paused_until if free and not self._borrowed else math.inf
