"""The :class:`~suno_persona._seam.ThrottleState` shared through Redis.

One script call (``_throttle.lua`` through redis-py's ``register_script``: ``EVALSHA``, loaded
again after a ``NOSCRIPT``) per :meth:`RedisState.admit` is the only round trip on the send
path; ``_redis_script.py`` encodes its arguments and decodes its reply. It applies the answers
reported since the last call, then decides: the maintenance breaker (one probe lease for the
whole fleet, ``SET NX PX``), the ``Retry-After`` pause, and a GCRA reservation of the next send
slot on the learned rate. It returns delays, which are put back on the caller's clock.

* **Reports are batched.** :meth:`report` only queues the answer; the queue rides along with
  the next admit, or is flushed by a background call 50 ms later (at once for a 429, a 455
  or a probe's answer, which others may be waiting for).
* **A reserved slot costs no second round trip.** When the gate comes back after waiting for
  its slot, the answer comes from what the last script call said (pause, breaker, cuts).
* **Redis is never in the way.** Each call is bounded by the store's ``timeout``. On any
  failure the state logs one warning and throttles in this process alone (a
  :class:`~suno_persona._state.LocalState` seeded with the last shared rate divided by the
  live processes, which the script counts in a sorted set of recent callers); it tries the
  store again in the background, soon and then at most 0.8 s apart (``_redis_reach.py``).
* **Opening is in the background:** a Cluster's discovery (within 5 s, not the store's
  timeout: this process throttles alone meanwhile, without a warning), this process counted
  in, and a warning if the server's eviction policy may evict the keys (a rate evicted is put
  back by the script from this process's last view of it).
* **No host's clock holds the others.** The moments in the store were written on other
  clocks (other clients' with ``use_server_time=False``, or a former master's): the script
  honours none later than the caller could have written it (a start at most now, a pause or
  the next probe at most its own length from now, the reserved slots at most a booked
  horizon ahead) and writes back what it pulled in; the reply's delays are read as 0 at
  least and, for a pause or a probe wait, ``max_pause`` at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from redis.commands.core import AsyncScript

from suno_persona._policy import ThrottlePolicy, local_state
from suno_persona._quota import Quota
from suno_persona._redis_reach import StoreUnavailable, bounded, retry_delay, warn_of_eviction
from suno_persona._redis_script import SOURCE, Mode, Params, Reply, Report, Request, keys
from suno_persona._seam import Answer, Decision
from suno_persona._state import LocalState
from suno_persona.redis import RedisThrottleStore

__all__ = ["RedisState", "key_prefix"]

logger = logging.getLogger("suno_persona")

_ASK_AHEAD = 0.1
_FLUSH_AFTER = 0.01
_DISCOVERY_TIMEOUT = 5.0
_MAX_QUEUED = 1000
_GO = Decision(0.0, go=True)


def key_prefix(base_url: str, api_key: str) -> str:
    """``suno_persona:{<16 hex digits>}``: the braces keep a key's parts in one Cluster slot."""
    digest = hashlib.sha256((base_url + api_key).encode()).hexdigest()[:16]
    return f"suno_persona:{{{digest}}}"


class RedisState:
    """The state of one (base URL, API key) in a :class:`RedisThrottleStore`.

    Args:
        store: The store.
        policy: The throttle policy.
        base_url: The API's base URL (part of the keys' hash).
        api_key: The API key (part of the keys' hash, never of a key).
        max_pause: The longest pause or probe wait a ``Retry-After`` may set.
        probe_lease: Seconds a maintenance probe holds the fleet's single lease at most.
        emit: Called with each event this process's answers caused.
        clock: The caller's monotonic clock (the ``now`` of every call is on it).
        owns_store: Close the store's connections in :meth:`aclose` (it was made from a URL
            for this client alone).
    """

    def __init__(
        self,
        store: RedisThrottleStore,
        policy: ThrottlePolicy,
        *,
        base_url: str,
        api_key: str,
        max_pause: float,
        probe_lease: float,
        emit: Callable[[object], None],
        clock: Callable[[], float] = time.monotonic,
        owns_store: bool = False,
    ) -> None:
        self._owns_store = owns_store
        self.store = store
        self._clock = clock
        self._wall = time.time  # sent as the script's "now" without use_server_time (a seam)
        self._policy = policy
        self._max_pause = max_pause
        self._emit = emit
        self.keys = keys(key_prefix(base_url, api_key))
        self._params = Params.of(policy, max_pause=max_pause, probe_lease=probe_lease)
        self._script: AsyncScript | None = None
        self._process = secrets.token_hex(8)
        self._tokens = 0
        self._probe_token = ""
        self._queue: list[Report] = []
        self._given_back = 0
        self._flushing: asyncio.Task[None] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # the view the last script call returned, on this process's clock
        self._cuts = 0
        self._rate: float | None = None
        self._paused_until = -math.inf
        self._breaker_open = False
        self._next_probe_at = -math.inf
        self.live = 1
        self._registered = False
        # while the store is unreachable
        self.local: LocalState | None = None
        self._discovering = False
        self._failures = 0
        self._retry_at = math.inf
        self._checked_eviction = False
        self.calls = 0  # script calls (round trips) that were answered

    # --- ThrottleState ------------------------------------------------------------------

    def rate(self, now: float) -> float | None:
        if self.local is not None:
            return self.local.rate(now)
        return self._rate

    def blocked_until(self) -> float:
        if self.local is not None:
            return self.local.blocked_until()
        if self._breaker_open:
            return max(self._paused_until, self._next_probe_at)
        return self._paused_until

    async def admit(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        if self.local is None and not self.store.discovered:
            self._open(now)
        if self.local is not None:
            self._maybe_retry(now)
            return await self.local.admit(now, max_wait, reserved)
        if reserved is not None and reserved == self._cuts and not self._breaker_open:
            if now < self._paused_until:
                return Decision(self._paused_until, go=False, reason="the server's Retry-After")
            return _GO
        self._tokens += 1
        token = f"{self._process}:{self._tokens}"
        try:
            reply = await self._call("admit", now, max_wait, token)
        except StoreUnavailable as error:
            self._fall_back(now, error)
            assert self.local is not None  # noqa: S101 - set by _fall_back
            return await self.local.admit(now, max_wait, reserved)
        verdict, delay = reply.verdict, reply.delay
        at = now + delay
        if verdict == "go":
            return _GO
        if verdict == "slot":
            if delay <= 0:
                return _GO
            return Decision(at, go=True, reserved=self._cuts, reason="a send slot")
        if verdict == "later":
            ask_at = at if delay > max_wait else max(now, at - _ASK_AHEAD)
            return Decision(ask_at, go=False, reason="a send slot")
        if verdict == "probe":
            self._probe_token = token
            return Decision(now, go=True, probe=True)
        if verdict == "pause":
            return Decision(at, go=False, reason="the server's Retry-After")
        return Decision(at, go=False, wait_probe=verdict == "wait_probe", reason="the maintenance")

    def register(self) -> None:
        if not self._registered:
            self._registered = True
            self._open(self._clock())

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
        if self.local is not None:
            return self.local.report(
                answer,
                retry_after,
                now=now,
                sent_at=sent_at,
                probe=probe,
                in_flight=in_flight,
                seq=seq,
                quota=quota,
            )
        token = self._probe_token if probe else ""
        if len(self._queue) >= _MAX_QUEUED:
            del self._queue[0]
        self._queue.append(Report(answer, now, sent_at, retry_after, probe, token))
        urgent = probe or answer in {Answer.REFUSED, Answer.MAINTENANCE}
        self._schedule_flush(0.0 if urgent else _FLUSH_AFTER)
        return probe

    def release(self, decision: Decision, now: float) -> bool:
        if self.local is not None:
            return self.local.release(decision, now)
        if decision.probe:
            return self.report(Answer.NO_ANSWER, None, now=now, sent_at=now, probe=True)
        if decision.reserved is not None and decision.at > now:
            self._given_back += 1
        return False

    async def aclose(self) -> None:
        """Send what is queued (if the store answers at once) and close the store's connections."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for task in list(self._tasks):
            task.cancel()
        if self.local is None and (self._queue or self._given_back):
            with contextlib.suppress(StoreUnavailable):
                await self._call("flush", self._clock(), 0.0, "")
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._owns_store:
            await self.store.aclose()

    # --- the script call ------------------------------------------------------------------

    async def _call(self, mode: Mode, now: float, max_wait: float, token: str) -> Reply:
        """One script call (the queued reports ride along), bounded by the store's timeout.

        Returns the reply, whose delays :meth:`Reply.decode` bounded; the rest of it is kept
        as this process's view, on its clock.

        Raises:
            StoreUnavailable: The store did not answer in time, failed, or answered a reply
                that is not of the script's layout.
        """
        queue, self._queue = self._queue, []
        given_back, self._given_back = self._given_back, 0
        request = Request(
            mode=mode,
            now=now,
            wall=None if self.store.use_server_time else self._wall(),
            max_wait=max_wait,
            params=self._params,
            process=self._process,
            token=token,
            adaptive=self._policy.adaptive_rate,
            given_back=given_back,
            last_rate=self._rate,
            reports=tuple(queue),
        )
        answer = await bounded(self._run_script(request.encode()), self.store.timeout)
        self.calls += 1
        try:
            reply: Reply | None = Reply.decode(answer, max_pause=self._max_pause)
        except ValueError as error:
            reply, reason = None, str(error)
        if reply is None:  # raised outside the handler, chaining nothing (as in bounded)
            raise StoreUnavailable(f"the script answered {reason}")
        self._cuts = reply.cuts
        self._rate = reply.rate
        self._paused_until = now + reply.pause
        self._breaker_open = reply.breaker_open
        self._next_probe_at = now + reply.next_probe
        self.live = reply.live
        for event in reply.events:
            self._emit(event)
        return reply

    async def _run_script(self, argv: list[str]) -> Any:
        """The script's raw reply to ``argv`` (redis-py loads the script after a NOSCRIPT)."""
        client = self.store.client()
        if self._script is None or self._script.registered_client is not client:
            self._script = client.register_script(SOURCE)
        return await self._script(self.keys, argv, client=client)

    # --- batching of reports --------------------------------------------------------------

    def _schedule_flush(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if self._flush_timer is not None:
            if delay > 0:
                return
            self._flush_timer.cancel()
        self._flush_timer = loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        if self._flushing is not None and not self._flushing.done():
            self._schedule_flush(_FLUSH_AFTER)
            return
        if not self._queue and not self._given_back:
            return
        self._flushing = self._spawn(self._flush())

    async def _flush(self) -> None:
        if self.local is not None:
            return
        now = self._clock()
        try:
            await self._call("flush", now, 0.0, "")
        except StoreUnavailable as error:
            self._fall_back(now, error)

    def _spawn(self, work: Any) -> asyncio.Task[None] | None:
        if self.store.ending():
            work.close()  # the loop is shutting down: it would be destroyed pending
            return None
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- opening, falling back and coming back -------------------------------------------

    def _open(self, now: float) -> None:
        """Reach the store in the background (a Cluster discovered first, throttling alone)."""
        if self._discovering or self.local is not None:
            return  # a discovery, or the retries after a failure, will reach it
        if not self.store.discovered:
            self._discovering = True
            self._go_local(now)
        self._spawn(self._reach())

    def _go_local(self, now: float) -> None:
        local = local_state(self._policy, max_pause=self._max_pause, emit=self._emit)
        if self._rate is not None:
            local.seed(self._rate / self.live, now)
        self.local = local
        self._queue.clear()
        self._given_back = 0

    def _fall_back(self, now: float, error: BaseException) -> None:
        if self.local is not None and not self._discovering:
            return
        logger.warning(
            "the throttle store %r is unavailable (%s): throttling in this process only, "
            "until it answers again",
            self.store,
            error,
        )
        if self.local is None:
            self._go_local(now)
        self._discovering = False
        self._failures = 0
        self._retry_at = now + retry_delay(0)

    def _maybe_retry(self, now: float) -> None:
        if now < self._retry_at:
            return
        self._retry_at = math.inf
        self._spawn(self._reach())

    async def _reach(self) -> None:
        try:
            await bounded(self.store.discover(), _DISCOVERY_TIMEOUT)
            await self._call("flush", self._clock(), 0.0, "")
        except StoreUnavailable as error:
            if self.local is None or self._discovering:
                self._fall_back(self._clock(), error)
            else:
                self._failures += 1
                self._retry_at = self._clock() + retry_delay(self._failures)
            return
        if self.local is not None:
            self.local = None
            if not self._discovering:
                logger.warning(
                    "the throttle store %r answers again: sharing the throttle", self.store
                )
            self._discovering = False
        if not self._checked_eviction:
            self._checked_eviction = True
            await warn_of_eviction(self.store, self.keys[0], _DISCOVERY_TIMEOUT)
