"""The gate every request of one client passes: one per client, shared by all its calls.

Calls are admitted **first come, first served**, from one queue per client. The call at its
head goes as soon as everything below allows it, and the others wait behind it:

* a place in flight: under ``max_concurrency`` (the connection pool has the same size, so no
  request ever waits for a connection inside aiohttp), under the start-up ramp's window
  (``_startup``) and under a cap on in flight that the model learned;
* the shared state's permission (``_state``): maintenance breaker, the pause of a spent
  window, the announced quota, the model's pace.

A call whose deadline would pass before its turn (its place in the queue times the pace,
plus any pause) fails at once, carrying the expected wait, instead of waiting its deadline
out. With a shared store (Redis) the queue orders the places in flight, and the head then
asks the store, one round trip per send.

The gate is fed plain :class:`Answer` values by the client, never its exceptions, and raises
only two signals of its own: :class:`~suno_persona._deadline.WouldPassDeadline` and
:class:`GateClosed`. Every wait ends at once when the client is closed.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable

from suno_persona._deadline import Deadline, WouldPassDeadline
from suno_persona._policy import ThrottlePolicy, local_state
from suno_persona._quota import Quota
from suno_persona._startup import GRACE, GRACE_SHARED, Ramp
from suno_persona._state import GO, Answer, Decision, LocalState, ThrottleState

__all__ = [
    "Answer",
    "Decision",
    "GateClosed",
    "LocalState",
    "Pass",
    "Throttle",
    "ThrottlePolicy",
    "ThrottleState",
    "local_state",
]

_PROBE_HINT = 0.05


class GateClosed(Exception):  # noqa: N818 - a signal, turned into the client's error
    """The client was closed while a call waited at the gate."""


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
        self, throttle: Throttle, decision: Decision, sent_at: float, in_flight: int, seq: int
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


class _Places:
    """Requests in flight, counted for every gate that takes from them (one cap for all)."""

    __slots__ = ("count", "gates", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.gates: list[Throttle] = []


class _Waiter:
    __slots__ = ("deadline", "future", "reserved")

    def __init__(self, future: asyncio.Future[Pass], deadline: Deadline) -> None:
        self.future = future
        self.deadline = deadline
        self.reserved: Decision | None = None


class Throttle:
    """The per-client gate. Lives in one event loop, like the client (see :meth:`rebind`).

    Args:
        policy: The policy, or ``None`` for no shared throttling (the in-flight cap stays).
        max_concurrency: Cap on requests in flight, or ``None``.
        max_pause: The longest wait a ``Retry-After`` may impose on the other calls.
        clock: Monotonic seconds.
        sleep: Awaited for every timed wait of a retry's backoff.
        emit: Called with each event of the shared state.
        state: The shared state; by default a :class:`LocalState`.
        in_flight_of: Another gate whose places in flight this one takes (another resource
            of the same client: one cap on requests in flight for both); it then ignores
            ``max_concurrency``, and is rebound after that gate.
    """

    def __init__(
        self,
        policy: ThrottlePolicy | None,
        *,
        max_concurrency: int | None,
        max_pause: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        emit: Callable[[object], None] = lambda _event: None,
        state: ThrottleState | None = None,
        in_flight_of: Throttle | None = None,
    ) -> None:
        self.places: _Places
        self.policy = policy
        self._in_flight_of = in_flight_of
        self.clock = clock
        self._sleep = sleep
        self._max_concurrency = max_concurrency
        self.state: ThrottleState | None = state
        if state is None and policy is not None:
            self.state = local_state(policy, max_pause=max_pause, emit=emit)
        self._local = self.state if isinstance(self.state, LocalState) else None
        self._closed = False
        self.rebind()

    def rebind(self) -> None:
        """Forget everything bound to an event loop: the next use binds to the running one."""
        policy = self.policy
        initial = None if policy is None else policy.initial_window
        self._ramp: Ramp | None = None
        if policy is not None and initial is not None:
            grace = GRACE if self._local is not None else GRACE_SHARED
            self._ramp = Ramp(initial, policy.max_window, grace=grace)
            if self._local is None:
                # With a shared store one request goes first: its answer says how many
                # processes share the key, and the start-up window is theirs to split.
                self._fleet_initial: int | None = initial
                self._ramp.window = 1
        if self._ramp is None or self._ramp.window is None:
            self._ramp = None
            self._fleet_initial = None
        primary = self._in_flight_of
        places = _Places(self._max_concurrency) if primary is None else primary.places
        self.places = places
        places.gates.append(self)
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        self._order = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = math.inf
        self._closing: asyncio.Future[None] | None = None

    # --- what the client reads -----------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The send rate in force, in requests per second; ``None`` while unlimited."""
        return None if self.state is None else self.state.rate(self.clock())

    @property
    def window(self) -> int | None:
        """Requests allowed in flight by the start-up ramp, ``None`` once it is over."""
        return None if self._ramp is None else self._ramp.window

    @property
    def in_flight(self) -> int:
        """Requests let through and not yet left (by every gate sharing the places)."""
        return self.places.count

    @property
    def waiting(self) -> int:
        """Calls queued at the gate."""
        return len(self._queue)

    def blocked_until(self) -> float:
        """Until when the shared state holds every send back (``-inf`` when it does not)."""
        return -math.inf if self.state is None else self.state.blocked_until()

    # --- the client's door ---------------------------------------------------------------

    def try_enter(self) -> Pass | None:
        """:meth:`enter` when it would not wait (the common case), else ``None``.

        Nobody is queued, a place in flight is free, the ramp is over, and this process's
        state holds nothing back (no pause, breaker, quota or pace). A shared store's
        state always goes through :meth:`enter`.
        """
        if self._closed or self._queue or self._ramp is not None:
            return None
        state = self.state
        now = self.clock()
        local = self._local
        if state is not None and (local is None or now < local.go_from):
            return None
        if not self._room():
            return None
        places = self.places
        places.count += 1
        seq = 0
        if local is not None:
            local.seq += 1
            seq = local.seq
        return Pass(self, GO, now, places.count, seq)

    async def enter(self, deadline: Deadline) -> Pass:
        """Wait for this call's turn (see the module docstring); :meth:`leave` ends it.

        Raises:
            WouldPassDeadline: The call's turn would come after ``deadline``.
            GateClosed: The client was closed.
        """
        if self._closed:
            raise GateClosed
        now = self.clock()
        self._check_turn(deadline, now, len(self._queue))
        waiter = _Waiter(asyncio.get_running_loop().create_future(), deadline)
        self._queue.append(waiter)
        if deadline.at is not None:
            heapq.heappush(self._deadlines, (deadline.at, next(self._order), waiter))
        self._pump()
        passage = await self._wait_turn(waiter)
        if self._local is not None or self.state is None:
            return passage
        try:
            passage.decision = await self._ask_store(deadline)
        except BaseException:
            self._give_place()
            raise
        passage.sent_at = self.clock()
        return passage

    def leave(self, passage: Pass) -> None:
        """The request is over: give its place back; a send that reported nothing is released."""
        try:
            state = self.state
            if (
                not passage.reported
                and state is not None
                and state.release(passage.decision, self.clock())
            ):
                self.notify()
        finally:
            self._give_place()

    def leave_accepted(self, passage: Pass, quota: Quota | None = None) -> None:
        """The API accepted the request: ``passage.report(Answer.ACCEPTED)``, then :meth:`leave`.

        The place is given back whatever happens.
        """
        try:
            passage.report(Answer.ACCEPTED, None, quota)
        finally:
            self.leave(passage)

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

    def register(self) -> None:
        """The client opened: a shared state counts this process as live from now on."""
        if self.state is not None:
            self.state.register()

    # --- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """End every wait at the gate: waiting calls raise :class:`GateClosed`."""
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(GateClosed())

    async def aclose(self) -> None:
        """:meth:`close`, then let the state close what it holds (a shared store's connections)."""
        self.close()
        closer = getattr(self.state, "aclose", None)
        if closer is not None:
            await closer()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise :class:`GateClosed` as soon as the client is closed."""
        if self._closed:
            raise GateClosed
        if seconds <= 0:
            return
        closing = self._closing_future()
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((sleeping, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
        if self._closed:
            raise GateClosed

    def _closing_future(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        return self._closing

    # --- the queue -----------------------------------------------------------------------

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

    async def _wait_turn(self, waiter: _Waiter) -> Pass:
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._drop(waiter)
            raise

    def _drop(self, waiter: _Waiter) -> None:
        """A waiter gave up: whatever it was handed goes back."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.leave(future.result())
            return
        future.cancel()
        if waiter.reserved is not None and self._local is not None:
            self._local.release(waiter.reserved, self.clock())
        self._pump()

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
                    hint = max(wait, _PROBE_HINT) if decision.wait_probe else wait
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

    # --- a shared store ------------------------------------------------------------------

    async def _ask_store(self, deadline: Deadline) -> Decision:
        """The store's permission for a send that has its place (one round trip per ask)."""
        state = self.state
        assert state is not None  # noqa: S101 - only called with a state
        reserved: int | None = None
        while True:
            now = self.clock()
            decision = await state.admit(now, deadline.remaining(now), reserved)
            if self._fleet_initial is not None and self._ramp is not None:
                self._ramp.share(state.live, self._fleet_initial)
                self._fleet_initial = None
                self._pump()
            if decision.go and decision.at <= now:
                if self._ramp is not None and state.rate(now) is not None:
                    self._ramp = None
                    self._pump()
                return decision
            wait = decision.at - now
            deadline.check(now, wait, f"waiting for {decision.reason}")
            if decision.go:
                reserved = decision.reserved
                try:
                    await self.sleep(wait)
                except BaseException:
                    if state.release(decision, self.clock()):
                        self.notify()
                    raise
            elif decision.wait_probe:
                await self._wait_probe(wait, deadline)
            else:
                await self.sleep(wait)

    async def _wait_probe(self, hint: float, deadline: Deadline) -> None:
        timeout = min(max(hint, _PROBE_HINT), deadline.remaining(self.clock()))
        await self.sleep(timeout)
