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

Here is the gate's door: what the client calls, closing, and asking a shared store. The
queue and what admits from it are in ``_admission``, the policy in ``_policy``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Awaitable, Callable

from suno_persona._admission import PROBE_HINT, AdmissionQueue, Pass, Places, Waiter
from suno_persona._deadline import Deadline
from suno_persona._policy import ThrottlePolicy, local_state
from suno_persona._quota import Quota
from suno_persona._seam import GO, Answer, Decision, ThrottleState
from suno_persona._startup import GRACE, GRACE_SHARED, Ramp
from suno_persona._state import LocalState

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


class GateClosed(Exception):  # noqa: N818 - a signal, turned into the client's error
    """The client was closed while a call waited at the gate."""


class Throttle(AdmissionQueue):
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
        places = Places(self._max_concurrency) if primary is None else primary.places
        self.places = places
        places.gates.append(self)
        self._open_queue()
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
        waiter = Waiter(asyncio.get_running_loop().create_future(), deadline)
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

    # --- waiting for a turn --------------------------------------------------------------

    async def _wait_turn(self, waiter: Waiter) -> Pass:
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._drop(waiter)
            raise

    def _drop(self, waiter: Waiter) -> None:
        """A waiter gave up: whatever it was handed goes back."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.leave(future.result())
            return
        future.cancel()
        if waiter.reserved is not None and self._local is not None:
            self._local.release(waiter.reserved, self.clock())
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
        timeout = min(max(hint, PROBE_HINT), deadline.remaining(self.clock()))
        await self.sleep(timeout)
