"""The gate every request of one client passes: one per client, shared by all its calls.

Per process, in :class:`Throttle`:

* a cap on requests in flight (``max_concurrency``; the connection pool has the same size,
  so no request ever waits for a connection inside aiohttp);
* a slow start while nothing is known of the API's limit: ``initial_window`` requests in
  flight at first, one more per success, and twice as many after every 15 ms without an
  answer, until the first cut of the rate or ``max_window`` requests in flight. With a
  shared store, the processes of one key split it: the window is ``initial_window`` divided
  by the live processes, and grows by one per that many successes.

Shared through a :class:`ThrottleState` (in this process by default; the seam is where a
store shared by many processes plugs in), consulted once per send:

* the maintenance breaker (``_breaker``): after a 455, one probe at a time;
* the shared pause on ``Retry-After``;
* the adaptive send rate (``_rate``): a reservation of the next send slot.

The gate is fed plain :class:`Answer` values by the client, never its exceptions, and raises
only two signals of its own: :class:`~suno_persona._deadline.WouldPassDeadline` and
:class:`GateClosed`. Every wait ends at once when the client is closed.

**Retry-After is a ceiling.** A value above ``max_pause`` (the client's
``RetryPolicy.max_delay``) is not adopted at all: that call fails on its own and the others
carry on. A 429's value within it pauses every send of the client: for that long when the API
accepted nothing in the last measurement interval (it refuses everything: honour it), but
when it is accepting other requests (a rate limit, often a token bucket whose wait a gateway
rounds up to whole seconds) the pause starts at one interval of the learned rate (0.1 s
before one is learned) and doubles with each further 429 until an answer is accepted, never
longer than the value itself, and the learned rate does the pacing. Sends after a pause are
paced from its end, without a burst. A 455's value sets when the breaker probes next.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs

from suno_persona._breaker import Admit, MaintenanceBreaker
from suno_persona._deadline import Deadline, WouldPassDeadline, wait_signal
from suno_persona._rate import AdaptiveRate
from suno_persona.events import BreakerClosed, BreakerOpened, PauseStarted, RateChanged

__all__ = [
    "Answer",
    "Decision",
    "GateClosed",
    "LocalState",
    "Pass",
    "Slot",
    "Throttle",
    "ThrottlePolicy",
    "ThrottleState",
]

_PAUSE_FIRST = 0.1
_ASK_AHEAD = 0.1
_START_DOUBLING = 0.015
# The window starts doubling with time only this long after the first send: the first
# answers wait for the connections to open too, and doubling meanwhile sent a burst past the
# API's (10-14 429s instead of about 10 against a burst of 10). Longer with a shared store:
# processes started together wait out their connections' set-up at once, and each one's
# doubling alone would send the fleet several times the API's burst.
_START_GRACE = 0.03
_START_GRACE_SHARED = 0.1


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _non_negative(_inst, attribute, value)
    if not value:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _fraction(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _non_negative(_inst, attribute, value)
    if not 0 < value <= 1:  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _count(minimum: int) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{attribute.name} must be an int >= {minimum}, got {value!r}")

    return validate


def _optional_count(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _count(1)(_inst, attribute, value)


def _boolean(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, got {value!r}")  # noqa: TRY004 - the constructor raises ValueError


@attrs.frozen(kw_only=True)
class ThrottlePolicy:
    """How the calls of one client cooperate. ``throttle=None`` on the client turns it off.

    Attributes:
        adaptive_rate: Learn a send rate from 429s.
        initial_window: Requests in flight at first, while the API's limit is unknown;
            ``None`` turns the slow start off.
        max_window: The slow start ends when this many requests are in flight without
            the rate being cut.
        beta: A cut sets the rate to ``beta`` times the rate the API accepted.
        measure_interval: Seconds over which answers are counted; the rate is cut at most
            once per interval (sooner only when requests sent after a cut are refused too).
        min_rate: Floor of the learned rate, in requests per second.
        growth: How fast the rate grows back after a cut (CUBIC's constant, requests per
            second per second cubed); past the old peak it also grows 2.5-fold every interval.
        probe_initial: Seconds from the first 455 to the first maintenance probe.
        probe_max: Longest interval between maintenance probes.
        retry_budget: Tokens in the retry budget; ``0`` turns the budget off.
        retry_cost: Tokens a retry after a 500 or an unsent connection failure spends
            (retries after 429 and 455 are paced by the gate and cost nothing).
        timeout_retry_cost: Tokens a retry after a timeout or broken connection spends.
        success_refund: Tokens a success earns back.
    """

    adaptive_rate: bool = attrs.field(default=True, validator=_boolean)
    initial_window: int | None = attrs.field(default=4, validator=_optional_count)
    max_window: int = attrs.field(default=64, validator=_count(1))
    beta: float = attrs.field(default=0.85, validator=_fraction)
    measure_interval: float = attrs.field(default=1.0, validator=_positive)
    min_rate: float = attrs.field(default=1.0, validator=_positive)
    growth: float = attrs.field(default=0.4, validator=_positive)
    probe_initial: float = attrs.field(default=0.25, validator=_non_negative)
    probe_max: float = attrs.field(default=1.0, validator=_non_negative)
    retry_budget: int = attrs.field(default=500, validator=_count(0))
    retry_cost: int = attrs.field(default=5, validator=_count(0))
    timeout_retry_cost: int = attrs.field(default=10, validator=_count(0))
    success_refund: int = attrs.field(default=1, validator=_count(0))

    def __attrs_post_init__(self) -> None:
        if self.initial_window is not None and self.initial_window > self.max_window:
            raise ValueError(
                f"initial_window ({self.initial_window}) must not exceed "
                f"max_window ({self.max_window})"
            )
        if self.probe_initial > self.probe_max:
            raise ValueError(
                f"probe_initial ({self.probe_initial}) must not exceed probe_max ({self.probe_max})"
            )


class Answer(enum.Enum):
    """How the API answered one request, as far as the throttle cares."""

    ACCEPTED = "accepted"
    """Processed: any answer but 429 and 455."""
    REFUSED = "refused"
    """429: rate limited, not processed."""
    MAINTENANCE = "maintenance"
    """455: under maintenance, not processed."""
    NO_ANSWER = "no answer"
    """No usable answer: the connection failed or broke, or the call was abandoned."""


class GateClosed(Exception):  # noqa: N818 - a signal, turned into the client's error
    """The client was closed while a call waited at the gate."""


@attrs.frozen
class Decision:
    """What the shared state says to one send.

    Attributes:
        at: When to send (or to ask again); ``<= now`` means at once.
        go: Send at ``at``; otherwise wait until then and ask again.
        probe: This send is the maintenance probe: report its answer.
        wait_probe: Also wake when a probe's answer arrives.
        reserved: The rate slot at ``at`` is this caller's (the state's reservation token).
        reason: What the caller waits for, in words.
    """

    at: float
    go: bool
    probe: bool = False
    wait_probe: bool = False
    reserved: int | None = None
    reason: str = ""


class ThrottleState(Protocol):
    """The state all senders of one key share: breaker, pause, learned rate.

    One :meth:`admit` per send is the only call on the send path (for a remote store, one
    round trip); :meth:`report` may be buffered.
    """

    @property
    def live(self) -> int:
        """How many processes share this state, as last seen (1 for this process alone)."""

    def rate(self, now: float) -> float | None:
        """The learned rate at ``now``, ``None`` while unlimited."""

    def register(self) -> None:
        """Count this process among the live ones now, without waiting (the client opened)."""

    def blocked_until(self) -> float:
        """Until when no send may go (a shared pause, the next maintenance probe), as known."""

    async def admit(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        """Decide about one send at ``now`` by a caller that may wait ``max_wait`` seconds.

        ``reserved`` is the token of a rate slot the caller already holds (from an earlier
        decision it waited for): such a caller is checked against the breaker and the pause
        only, unless the rate was cut since.
        """

    def report(
        self, answer: Answer, retry_after: float | None, *, now: float, sent_at: float, probe: bool
    ) -> bool:
        """Note how the API answered a send; ``True`` when waiters should look again."""

    def release(self, decision: Decision, now: float) -> bool:
        """A send that was decided will not happen; ``True`` when waiters should look again."""


_GO = Decision(0.0, go=True)


class LocalState:
    """The :class:`ThrottleState` of one process: what today's single client shares.

    Args:
        policy: The throttle policy.
        max_pause: The longest pause or probe wait a ``Retry-After`` may set.
        emit: Called with each event (rate changed, pause started, breaker opened/closed).
        breaker_of: Another state whose maintenance breaker this one shares (another
            resource of the same API: a 455 means the whole service is down), keeping its
            own rate and pause. Every send through this state is then decided.
    """

    def __init__(
        self,
        policy: ThrottlePolicy,
        *,
        max_pause: float,
        emit: Callable[[object], None],
        breaker_of: LocalState | None = None,
    ) -> None:
        self._emit = emit
        self._max_pause = max_pause
        self._rate = (
            AdaptiveRate(
                beta=policy.beta,
                window=policy.measure_interval,
                min_rate=policy.min_rate,
                growth=policy.growth,
            )
            if policy.adaptive_rate
            else None
        )
        self._breaker = MaintenanceBreaker(
            probe_initial=min(policy.probe_initial, max_pause),
            probe_max=min(policy.probe_max, max_pause),
        )
        self._paused_until = -math.inf
        self._paused_at = -math.inf
        self._pause_level = 0
        self._accepted_at = -math.inf
        self._interval = policy.measure_interval
        self.go_from = -math.inf
        """From when a send may go without :meth:`decide`: no maintenance, no learned rate
        to pace by, and the pause (if any) over. ``inf`` while every send must be decided."""
        self._sharers: list[LocalState] = []
        # A borrowed breaker may open through the other state: no send goes undecided.
        self._borrowed = breaker_of is not None
        if breaker_of is not None:
            self._breaker = breaker_of._breaker  # noqa: SLF001 - same class
            self._sharers.append(breaker_of)
            breaker_of._sharers.append(self)  # noqa: SLF001 - same class
            self.go_from = math.inf

    @property
    def breaker_open(self) -> bool:
        """Whether the maintenance breaker is open."""
        return self._breaker.is_open

    @property
    def live(self) -> int:
        return 1

    def rate(self, now: float) -> float | None:
        return None if self._rate is None else self._rate.rate(now)

    def register(self) -> None:
        pass

    def seed(self, rate: float, now: float) -> None:
        """Start from a rate learned elsewhere (a shared store that stopped answering)."""
        if self._rate is not None:
            self._rate.seed(rate, now)
        self._refresh()

    def blocked_until(self) -> float:
        if self._breaker.is_open:
            return max(self._paused_until, self._breaker.next_probe_at)
        return self._paused_until

    async def admit(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        return self.decide(now, max_wait, reserved)

    def decide(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        """:meth:`admit`, synchronously: this state needs no round trip."""
        verdict, at = self._breaker.admit(now)
        if verdict is Admit.PROBE:
            return Decision(now, go=True, probe=True)
        if verdict is not Admit.SEND:
            return Decision(
                at, go=False, wait_probe=verdict is Admit.WAIT_PROBE, reason="the maintenance"
            )
        if now < self._paused_until:
            return Decision(self._paused_until, go=False, reason="the server's Retry-After")
        rate = self._rate
        if rate is None or not rate.known or reserved == rate.cuts:
            return _GO
        send_at, reserved = rate.reserve(now, max_wait)
        if not reserved:
            ask_at = send_at if send_at - now > max_wait else max(now, send_at - _ASK_AHEAD)
            return Decision(ask_at, go=False, reason="a send slot")
        if send_at <= now:
            return _GO
        return Decision(send_at, go=True, reserved=rate.cuts, reason="a send slot")

    def report(
        self, answer: Answer, retry_after: float | None, *, now: float, sent_at: float, probe: bool
    ) -> bool:
        if answer is Answer.ACCEPTED and not probe and not self._breaker.is_open:
            # The common case, kept short: a plain success.
            self._pause_level = 0
            self._accepted_at = now
            if self._rate is not None:
                self._rate.accepted(now, sent_at)
            return False
        changed = self._report(answer, retry_after, now=now, sent_at=sent_at, probe=probe)
        self._refresh()
        for sharer in self._sharers:
            sharer._refresh()  # noqa: SLF001 - same class
        return changed

    def _refresh(self) -> None:
        """Recompute :attr:`go_from` after anything but a plain success."""
        rate = self._rate
        plain = not self._breaker.is_open and (rate is None or not rate.known)
        self.go_from = self._paused_until if plain and not self._borrowed else math.inf

    def _rates(self) -> list[AdaptiveRate]:
        """The rates the breaker holds while open: this state's and its sharers'."""
        states = [self, *self._sharers]
        return [state._rate for state in states if state._rate is not None]  # noqa: SLF001

    def _report(
        self, answer: Answer, retry_after: float | None, *, now: float, sent_at: float, probe: bool
    ) -> bool:
        cap = self._max_pause
        adopted = retry_after if retry_after is not None and retry_after <= cap else None
        if answer is Answer.MAINTENANCE:
            if self._breaker.maintenance(now, adopted, probe=probe):
                for rate in self._rates():
                    rate.freeze(now)
                self._emit(BreakerOpened(next_probe_in=self._breaker.next_probe_at - now))
            if adopted is not None:
                self._emit(PauseStarted(seconds=adopted, code=455))
            return probe
        if answer is Answer.NO_ANSWER:
            self._breaker.no_answer(probe=probe)
            return probe
        open_for = self._breaker.answered(now, probe=probe)
        if open_for is not None:
            for rate in self._rates():
                rate.thaw(now)
            self._emit(BreakerClosed(open_for=open_for))
        if answer is Answer.ACCEPTED:
            self._pause_level = 0
            self._accepted_at = now
            if self._rate is not None:
                self._rate.accepted(now, sent_at)
            return probe or open_for is not None
        if self._rate is not None:
            change = self._rate.refused(now, sent_at)
            if change is not None:
                self._emit(RateChanged(old=change.old, new=change.new, reason=change.reason))
        if adopted is not None and sent_at >= self._paused_at:
            # (A 429 to a request sent before the last pause began is that pause's news.)
            pause = adopted
            if now - self._accepted_at < self._interval:
                learned = None if self._rate is None else self._rate.rate(now)
                first = _PAUSE_FIRST if learned is None else min(_PAUSE_FIRST, 1 / learned)
                pause = min(adopted, first * 2 ** min(self._pause_level, 30))
                self._pause_level += 1
            if now + pause > self._paused_until:
                self._paused_until = now + pause
                self._paused_at = now
                if self._rate is not None:
                    self._rate.hold(self._paused_until)
                self._emit(PauseStarted(seconds=pause, code=429))
        return probe or open_for is not None

    def release(self, decision: Decision, now: float) -> bool:
        if decision.probe:
            self._breaker.no_answer(probe=True)
            return True
        if decision.reserved is not None and self._rate is not None:
            self._rate.release(decision.at, now)
        return False


class _Slots:
    """A counted set of places with a first-come, first-served queue of waiters.

    A freed place is handed to the first waiter, so ten thousand waiters cost one wake-up
    per freed place. Waiting acquires nothing by itself: a waiter that is cancelled or gives
    up after being handed a place passes it on.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a place; ``False`` when none came."""
        if self.try_take():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await wait_signal(waiter, timeout)
        except BaseException:
            self._drop(waiter)
            raise
        if waiter.done() and not waiter.cancelled():
            return True
        waiter.cancel()
        return False

    def _drop(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.give(1)
        else:
            waiter.cancel()

    def give(self, count: int) -> None:
        """Free ``count`` places, handing each to the first live waiter."""
        while count and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1
        self._free += count

    def wake_all(self) -> None:
        """Wake every waiter without a place (they look again: the gate is closing)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()


class Pass:
    """One request's passage through the gate; report the API's answer on it.

    Attributes:
        decision: What the shared state decided for this send.
        sent_at: When it was let through.
        reported: Whether an answer was reported.
    """

    __slots__ = ("_throttle", "decision", "places", "reported", "sent_at")

    def __init__(
        self,
        throttle: Throttle,
        decision: Decision,
        sent_at: float,
        places: tuple[_Slots | None, _Slots | None] = (None, None),
    ) -> None:
        self._throttle = throttle
        self.decision = decision
        self.sent_at = sent_at
        self.reported = False
        self.places = places

    def report(self, answer: Answer, retry_after: float | None = None) -> None:
        """Tell the shared state how the API answered."""
        self.reported = True
        throttle = self._throttle
        state = throttle.state
        probe = self.decision.probe
        now = throttle.clock()
        if state is not None and state.report(
            answer, retry_after, now=now, sent_at=self.sent_at, probe=probe
        ):
            throttle.notify()
        throttle.answered(now, accepted=answer is Answer.ACCEPTED)


class Slot:
    """``async with throttle.slot(deadline) as passage``: one request's place at the gate."""

    __slots__ = ("_deadline", "_passage", "_throttle")

    def __init__(self, throttle: Throttle, deadline: Deadline) -> None:
        self._throttle = throttle
        self._deadline = deadline
        self._passage: Pass | None = None

    async def __aenter__(self) -> Pass:
        throttle = self._throttle
        self._passage = throttle.try_enter() or await throttle.enter(self._deadline)
        return self._passage

    async def __aexit__(self, *exc_info: object) -> None:
        if self._passage is not None:
            self._throttle.leave(self._passage)


class Throttle:
    """The per-client gate. Lives in one event loop, like the client (see :meth:`rebind`).

    Args:
        policy: The policy, or ``None`` for no shared throttling (the in-flight cap stays).
        max_concurrency: Cap on requests in flight, or ``None``.
        max_pause: The longest wait a ``Retry-After`` may impose on the other calls.
        clock: Monotonic seconds.
        sleep: Awaited for every timed wait.
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
        self._in_flight: _Slots | None = None
        self._linked: list[Throttle] = []
        if in_flight_of is not None:
            in_flight_of._linked.append(self)  # noqa: SLF001 - same class
        self.clock = clock
        self._sleep = sleep
        self._max_concurrency = max_concurrency
        self.state: ThrottleState | None = state
        if state is None and policy is not None:
            self.state = LocalState(policy, max_pause=max_pause, emit=emit)
        self._local = self.state if isinstance(self.state, LocalState) else None
        self._start_grace = _START_GRACE if self._local is not None else _START_GRACE_SHARED
        self._closed = False
        self._window: int | None = None
        self._started_at: float | None = None
        self.rebind()

    def rebind(self) -> None:
        """Forget everything bound to an event loop: the next use binds to the running one."""
        if self._in_flight_of is not None:
            self._in_flight = self._in_flight_of._in_flight  # noqa: SLF001 - same class
        else:
            self._in_flight = _Slots(self._max_concurrency) if self._max_concurrency else None
        policy = self.policy
        self._window = policy.initial_window if policy is not None else None
        # With a shared store, one request goes first: its script call says how many
        # processes share the key, and the start-up window is theirs to split.
        self._fleet_window = self._window if self._local is None else None
        if self._fleet_window is not None:
            self._window = 1
        # Successes per place the window grows by: the processes sharing the key, so that
        # together they grow as one would (twice as many in flight per round trip).
        self._share = 1
        self._successes = 0
        self._windowed = _Slots(self._window) if self._window is not None else None
        self._started_at = None
        self._answered_at = self._doubled_at = -math.inf
        self._changed: asyncio.Future[None] | None = None
        self._closing: asyncio.Future[None] | None = None

    @property
    def rate(self) -> float | None:
        """The learned send rate in requests per second, ``None`` while unlimited."""
        return None if self.state is None else self.state.rate(self.clock())

    def blocked_until(self) -> float:
        """Until when the shared state holds every send back (``-inf`` when it does not)."""
        return -math.inf if self.state is None else self.state.blocked_until()

    @property
    def window(self) -> int | None:
        """Requests allowed in flight by the slow start, ``None`` once it is over."""
        return self._window

    def close(self) -> None:
        """End every wait at the gate: waiting calls raise :class:`GateClosed`."""
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        for slots in (self._in_flight, self._windowed):
            if slots is not None:
                slots.wake_all()
        self.notify()

    async def aclose(self) -> None:
        """:meth:`close`, then let the state close what it holds (a shared store's connections)."""
        self.close()
        closer = getattr(self.state, "aclose", None)
        if closer is not None:
            await closer()

    def register(self) -> None:
        """The client opened: a shared state counts this process as live from now on."""
        if self.state is not None:
            self.state.register()

    def notify(self) -> None:
        """Wake the calls waiting for a probe's answer, so each looks at the state again.

        Those of a linked gate too (see ``in_flight_of``): they may share a breaker.
        """
        gates = (self, *self._linked, *filter(None, (self._in_flight_of,)))
        for gate in gates:
            changed, gate._changed = gate._changed, None  # noqa: SLF001 - same class
            if changed is not None and not changed.done():
                changed.set_result(None)

    def answered(self, now: float, *, accepted: bool) -> None:
        """An answer came back: the slow start grows with answers (one more per success)."""
        self._answered_at = now
        if accepted and self._window is not None:
            self._successes += 1
            if self._successes >= self._share:
                self._successes = 0
                self._set_window(self._window + 1)

    def _set_window(self, size: int | None) -> None:
        policy = self.policy
        slots = self._windowed
        if slots is None or policy is None or self._window is None:
            return
        if size is not None and size >= policy.max_window:
            size = None
        if size is None:
            self._window = None
            slots.give(1 << 30)
            self._windowed = None
            return
        if size > self._window:
            slots.give(size - self._window)
            self._window = size

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

    def slot(self, deadline: Deadline) -> Slot:
        """A place to send one request: ``async with throttle.slot(deadline) as passage``.

        Entering waits, in this order, for a place in flight, a place in the start-up
        window, and the shared state's permission (breaker, pause, send slot), so no
        request passes a check made before it waited. Leaving gives the places back.

        Raises:
            WouldPassDeadline: Waiting would take the call past ``deadline``.
            GateClosed: The client was closed.
        """
        return Slot(self, deadline)

    def try_enter(self) -> Pass | None:
        """:meth:`enter` when it would not wait (the common case), else ``None``.

        A place in flight is free, the slow start is over, and the shared state holds
        nothing back: no maintenance, no pause, no learned rate (so nothing to reserve).
        This process's state answers at once; a shared store's always goes through
        :meth:`enter`.
        """
        if self._closed or self._windowed is not None:
            return None
        now = self.clock()
        if self.state is not None and (self._local is None or now < self._local.go_from):
            return None
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.try_take():
            return None
        return Pass(self, _GO, now, (in_flight, None))

    async def enter(self, deadline: Deadline) -> Pass:
        """Wait for permission to send (see :meth:`slot`); :meth:`leave` gives it back."""
        if self._closed:
            raise GateClosed
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.try_take():
            await self._take(in_flight, deadline, "a place in flight")
        windowed = self._windowed
        try:
            if windowed is not None:
                windowed = await self._enter_window(windowed, deadline)
            try:
                passage = await self._admit(deadline)
            except BaseException:
                self._give_window(windowed)
                raise
        except BaseException:
            if in_flight is not None:
                in_flight.give(1)
            raise
        passage.places = (in_flight, windowed)
        return passage

    def leave(self, passage: Pass) -> None:
        """Give back what :meth:`enter` took; a send that reported nothing is released."""
        in_flight, windowed = passage.places
        try:
            if not passage.reported and self.state is not None:
                self._release(passage.decision)
        finally:
            self._give_window(windowed)
            if in_flight is not None:
                in_flight.give(1)

    def leave_accepted(self, passage: Pass) -> None:
        """The API accepted the request: ``passage.report(Answer.ACCEPTED)``, then :meth:`leave`.

        The places are given back whatever happens.
        """
        try:
            passage.report(Answer.ACCEPTED)
        finally:
            self.leave(passage)

    def _give_window(self, windowed: _Slots | None) -> None:
        if windowed is not None and windowed is self._windowed:
            windowed.give(1)

    def _release(self, decision: Decision) -> None:
        assert self.state is not None  # noqa: S101 - only called with a state
        if self.state.release(decision, self.clock()):
            self.notify()

    async def _take(self, slots: _Slots, deadline: Deadline, what: str) -> None:
        if not await slots.take(deadline.remaining(self.clock())):
            if self._closed:
                raise GateClosed
            raise WouldPassDeadline(f"waiting for {what}", math.inf)
        if self._closed:
            slots.give(1)
            raise GateClosed

    async def _enter_window(self, slots: _Slots, deadline: Deadline) -> _Slots | None:
        """Take a place in the start-up window; ``None`` when the slow start ended meanwhile."""
        now = self.clock()
        if self._started_at is None:
            self._started_at = now
            self._doubled_at = now + self._start_grace - _START_DOUBLING
        self._grow_with_time(now)
        while not slots.try_take():
            if slots is not self._windowed:
                return None
            remaining = deadline.remaining(now)
            if await slots.take(min(remaining, _START_DOUBLING)):
                break
            if self._closed:
                raise GateClosed
            now = self.clock()
            if remaining <= _START_DOUBLING:
                raise WouldPassDeadline("waiting for a place in the start-up window", math.inf)
            self._grow_with_time(now)
        if self._closed:
            slots.give(1)
            raise GateClosed
        return slots if slots is self._windowed else None

    def _grow_with_time(self, now: float) -> None:
        """The start-up window also doubles every 15 ms in which no answer came back.

        With a fast API the answers drive the growth; a slow one is not throttled by its
        latency alone.
        """
        if self._window is None or self._started_at is None:
            return
        if now - max(self._answered_at, self._doubled_at) >= _START_DOUBLING:
            self._doubled_at = now
            self._set_window(self._window * 2)

    async def _admit(self, deadline: Deadline) -> Pass:
        state = self.state
        if state is None:
            return Pass(self, _GO, self.clock())
        local = self._local  # this process's own state needs no await (the common case)
        reserved: int | None = None
        while True:
            now = self.clock()
            remaining = deadline.remaining(now)
            if local is not None:
                decision = local.decide(now, remaining, reserved)
            else:
                decision = await state.admit(now, remaining, reserved)
                if self._fleet_window is not None:
                    self._share = state.live
                    self._set_window(max(1, self._fleet_window // self._share))
                    self._fleet_window = None
            if decision.go and decision.at <= now:
                if self._window is not None and state.rate(now) is not None:
                    self._set_window(None)
                return Pass(self, decision, now)
            wait = decision.at - now
            if deadline.at is not None and now + wait > deadline.at:
                raise WouldPassDeadline(f"waiting for {decision.reason}", wait)
            if decision.go:
                reserved = decision.reserved
                try:
                    await self.sleep(wait)
                except BaseException:
                    self._release(decision)
                    raise
            elif decision.wait_probe:
                await self._wait_probe(wait, deadline)
            else:
                await self.sleep(wait)

    async def _wait_probe(self, hint: float, deadline: Deadline) -> None:
        if self._closed:
            raise GateClosed
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        changed = self._changed
        closing = self._closing_future()
        timeout = min(max(hint, 0.05), deadline.remaining(self.clock()))
        await asyncio.wait((changed, closing), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._closed:
            raise GateClosed
