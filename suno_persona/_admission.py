"""The gate's queue: which waiting call goes next, and when to look again.

:class:`AdmissionQueue` is the half of :class:`~suno_persona._throttle.Throttle` that admits:
its head goes as soon as a place in flight (:class:`Places`, one count for every gate of a
client), the start-up ramp's window and the process's state (its pace, a pause, the breaker,
a learned cap) allow it; otherwise one timer, on the gate's own clock and sleep, looks again
when that may change. A queued call (:class:`Waiter`) whose deadline comes before its turn
fails at that moment. An admitted call is handed a :class:`Pass`, on which the client
reports the API's answer.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable

from suno_persona._deadline import Deadline, WouldPassDeadline
from suno_persona._quota import Quota
from suno_persona._seam import GO, Answer, Decision, ThrottleState
from suno_persona._startup import Ramp
from suno_persona._state import LocalState

__all__ = ["PROBE_HINT", "AdmissionQueue", "Pass", "Places", "Waiter"]

PROBE_HINT = 0.05
"""The shortest wait, in seconds, for a maintenance probe's answer before looking again."""


class Pass:
    """One request's passage through the gate; report the API's answer on it.

    Attributes:
        decision: What the shared state decided for this send.
        sent_at: When it was let through.
        in_flight: Requests in flight when it went, itself included.
        seq: Its number among the sends of the shared state.
        reported: Whether an answer was reported.
    """

    __slots__ = ("_throttle", "decision", "in_flight", "reported", "sent_at", "seq")

    def __init__(
        self, throttle: AdmissionQueue, decision: Decision, sent_at: float, in_flight: int, seq: int
    ) -> None:
        self._throttle = throttle
        self.decision = decision
        self.sent_at = sent_at
        self.in_flight = in_flight
        self.seq = seq
        self.reported = False

    def report(
        self, answer: Answer, retry_after: float | None = None, quota: Quota | None = None
    ) -> None:
        """Tell the shared state how the API answered (and what quota its reply announced)."""
        self.reported = True
        throttle = self._throttle
        state = throttle.state
        now = throttle.clock()
        if state is not None and state.report(
            answer,
            retry_after,
            now=now,
            sent_at=self.sent_at,
            probe=self.decision.probe,
            in_flight=self.in_flight,
            seq=self.seq,
            quota=quota,
        ):
            throttle.notify()
        throttle.answered(now, accepted=answer is Answer.ACCEPTED)


class Places:
    """Requests in flight, counted for every gate that takes from them (one cap for all)."""

    __slots__ = ("count", "gates", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.gates: list[AdmissionQueue] = []


class Waiter:
    """A call queued at the gate: the future its turn settles, its deadline, a slot held for it."""

    __slots__ = ("deadline", "future", "reserved")

    def __init__(self, future: asyncio.Future[Pass], deadline: Deadline) -> None:
        self.future = future
        self.deadline = deadline
        self.reserved: Decision | None = None


class AdmissionQueue:
    """The queue of one gate, first come, first served, and what admits from it.

    The gate (:class:`~suno_persona._throttle.Throttle`) sets the attributes annotated here,
    and opens the queue itself with :meth:`_open_queue` whenever it is bound to a new loop.
    """

    places: Places
    state: ThrottleState | None
    clock: Callable[[], float]
    _sleep: Callable[[float], Awaitable[None]]
    _local: LocalState | None
    _ramp: Ramp | None
    _closed: bool

    def _open_queue(self) -> None:
        """An empty queue, no deadline and no timer, bound to no event loop yet."""
        self._queue: collections.deque[Waiter] = collections.deque()
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = math.inf

    def answered(self, now: float, *, accepted: bool) -> None:
        """An answer came back: the ramp grows with answers, or ends once a limit is known."""
        ramp = self._ramp
        if ramp is None:
            return
        ramp.answered(now, accepted=accepted)
        local = self._local
        if ramp.window is None or (local is not None and local.limited):
            self._ramp = None
        self._pump()

    def notify(self) -> None:
        """The shared state changed (a probe's answer, a pause ended): look at the queues again.

        Those of every gate sharing the places too: they may share a breaker.
        """
        for gate in self.places.gates:
            gate._pump()  # noqa: SLF001 - same class

    def _room(self) -> bool:
        """Whether one more request may be in flight."""
        places = self.places
        limit = places.limit
        ramp = self._ramp
        if ramp is not None and ramp.window is not None:
            limit = ramp.window if limit is None else min(limit, ramp.window)
        local = self._local
        cap = None if local is None else local.cap
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        return limit is None or places.count < limit

    def _check_turn(self, deadline: Deadline, now: float, ahead: int) -> None:
        """Fail at once when the turn of a call with ``ahead`` calls before it is too late."""
        if deadline.at is None or self.state is None:
            return
        wait = self._expected_wait(now, ahead)
        if now + wait > deadline.at:
            raise WouldPassDeadline("waiting for its turn at the gate", wait)

    def _expected_wait(self, now: float, ahead: int) -> float:
        """How long a call with ``ahead`` calls before it can expect to wait for its turn."""
        if self.state is None:
            return 0.0
        wait = max(0.0, self.state.blocked_until() - now)
        rate = self.state.rate(now)
        if rate:
            wait += ahead / rate
        return wait

    def _give_place(self) -> None:
        places = self.places
        places.count -= 1
        for gate in places.gates:
            gate._pump()  # noqa: SLF001 - same class

    def _pump(self) -> None:
        """Admit from the head of the queue while everything allows it; else set a timer."""
        queue = self._queue
        if not queue or self._closed:
            self._deadlines.clear()
            return
        local = self._local
        clock = self.clock
        while queue:
            waiter = queue[0]
            if waiter.future.done():
                queue.popleft()
                continue
            now = clock()
            ramp = self._ramp
            if ramp is not None:
                ramp.tick(now)
                if ramp.window is None:
                    self._ramp = None
            if not self._room():
                if self._ramp is not None:
                    self._wake_at(self._ramp.next_doubling())
                if self._blocked(now):
                    continue
                return
            decision = GO
            if local is not None:
                held = waiter.reserved
                if held is not None and now < held.at:
                    self._wake_at(held.at)
                    if self._blocked(now):
                        continue
                    return
                token = None if held is None else held.reserved
                decision = local.decide(now, waiter.deadline.remaining(now), token)
                if not (decision.go and decision.at <= now):
                    wait = decision.at - now
                    at = waiter.deadline.at
                    if at is not None and now + wait > at:
                        queue.popleft()
                        if decision.go:
                            local.release(decision, now)
                        waiter.future.set_exception(
                            WouldPassDeadline(f"waiting for {decision.reason}", wait)
                        )
                        continue
                    if decision.go:
                        waiter.reserved = decision
                    hint = max(wait, PROBE_HINT) if decision.wait_probe else wait
                    self._wake_at(now + hint)
                    if self._blocked(now):
                        continue
                    return
                if local.limited and self._ramp is not None:
                    self._ramp = None
            queue.popleft()
            places = self.places
            places.count += 1
            if self._ramp is not None:
                self._ramp.started(now)
            seq = 0 if local is None else local.seq
            waiter.future.set_result(Pass(self, decision, now, places.count, seq))
        self._deadlines.clear()

    def _expire(self, now: float) -> None:
        """Fail the waiters whose deadline has come: their turn would come too late."""
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].future.done()):
            _, _, waiter = heapq.heappop(deadlines)
            if waiter.future.done():
                continue
            ahead = 0
            for other in self._queue:
                if other is waiter:
                    break
                ahead += not other.future.done()
            wait = self._expected_wait(now, ahead)
            waiter.future.set_exception(WouldPassDeadline("waiting for its turn at the gate", wait))
            if waiter.reserved is not None and self._local is not None:
                self._local.release(waiter.reserved, now)

    def _blocked(self, now: float) -> bool:
        """The head must wait: fail the waiters whose deadline came, then wake at the next.

        Returns ``True`` when the head itself was failed (the next one is looked at).
        """
        head = self._queue[0]
        self._expire(now)
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].future.done():
            heapq.heappop(deadlines)
        if deadlines:
            self._wake_at(deadlines[0][0])
        return head.future.done()

    def _wake_at(self, when: float) -> None:
        """Look at the queue again at ``when`` (on the gate's own clock and sleep)."""
        if when == math.inf:
            return
        if self._timer is not None and not self._timer.done():
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.ensure_future(self._fire(max(0.0, when - self.clock())))

    async def _fire(self, delay: float) -> None:
        await self._sleep(delay)
        self._timer = None
        self._timer_at = math.inf
        self._pump()
