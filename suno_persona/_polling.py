"""The task query and the balance (two GETs), and waiting for a task to finish.

All waits for one ``task_id`` on a client (and the clients ``with_options`` made from it)
share one poll loop, however many callers wait: a :class:`_Poll` per task id, run by a task
the first waiter starts and the last one to leave stops. The loop polls at once, then no
more often than the longest ``poll_interval`` of its waiters, with jitter (1 to 1.25 times
it), and wakes every waiter after each poll and at each waiter's deadline. A waiter waits
on a future it never cancels (``asyncio.wait``), so cancelling it leaves the others' wait
untouched; time comes from the client's injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, TypeVar, cast

from suno_persona import _config, _queries
from suno_persona._deadline import Deadline
from suno_persona._errors import SunoPersonaError, TaskFailedError, TaskTimeoutError
from suno_persona._pipeline import Call, CallPipeline, Parse
from suno_persona._session import SessionBinding
from suno_persona._task import SunoTask, TaskStatus, check_request
from suno_persona._throttle import GateClosed

if TYPE_CHECKING:
    import random

    from suno_persona._models import PersonaRequest
    from suno_persona._protocol import PreparedRequest

__all__ = ["TaskQueries"]

T = TypeVar("T")
_JITTER = 0.25
_UNBOUNDED = Deadline()


class _Waiter:
    __slots__ = ("deadline", "interval")

    def __init__(self, deadline: float | None, interval: float) -> None:
        self.deadline = deadline
        self.interval = interval


class _Poll:
    """The one poll loop of a task id, and what its waiters wait for."""

    __slots__ = ("_changed", "last", "outcome", "polls", "runner", "task_id", "waiters")

    def __init__(self, task_id: str, polls: dict[str, _Poll]) -> None:
        self.task_id = task_id
        self.polls = polls
        self.waiters: list[_Waiter] = []
        self.last: SunoTask | None = None
        self.outcome: SunoTask | BaseException | None = None
        self.runner: asyncio.Future[None] | None = None
        self._changed: asyncio.Future[None] | None = None

    def interval(self) -> float:
        return max(waiter.interval for waiter in self.waiters)

    def next_deadline(self) -> float:
        deadlines = [w.deadline for w in self.waiters if w.deadline is not None]
        return min(deadlines, default=math.inf)

    async def changed(self, timeout: float | None) -> None:
        """Wait for :meth:`wake` (or ``timeout`` seconds), never cancelling the future."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._changed,), timeout=timeout)

    def wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def finish(self, outcome: SunoTask | BaseException) -> None:
        """The task finished, or polling it failed: every waiter gets ``outcome``."""
        if self.outcome is None:
            self.outcome = outcome
        if self.polls.get(self.task_id) is self:
            del self.polls[self.task_id]
        self.wake()

    def ended(self, runner: asyncio.Future[None]) -> None:
        """The loop's task ended: whatever ended it is the waiters' outcome."""
        if runner.cancelled():
            if self.waiters:
                self.finish(SunoPersonaError(f"polling task {self.task_id} was cancelled"))
            return
        error = runner.exception()
        if error is not None:
            self.finish(error)


class TaskQueries(SessionBinding, CallPipeline):
    """``get_task``, ``get_balance`` and ``wait_for_task`` (a part of the client)."""

    _base_url: str
    _task_wait: float | None
    _task_poll_interval: float
    _rng: random.Random
    _task_polls: dict[str, _Poll]

    async def get_task(self, task_id: str) -> SunoTask:
        """The music task ``task_id`` as the task query answers now.

        Sends ``GET /api/v1/client/job/TaskInfo?task_id=...``. It is safe to repeat, so
        429, 455, 5xx, timeouts and connection failures are retried under the client's
        :class:`RetryPolicy`. It shares the client's connection pool, cap on requests in
        flight and maintenance breaker, and learns a rate of its own. It emits no call
        or attempt events (those are about persona requests); the throttle's still come.

        Raises:
            RequestValidationError: ``task_id`` is not a non-blank string (nothing sent).
            APIError: The API answered with an error code (e.g. 404 for an unknown task).
            APIConnectionError: The API could not be reached, after the retries.
            InvalidResponseError: The reply is not a task (no ``data.task_id`` and
                ``data.status``, or a successful task without a list of songs).
        """
        prepared = _queries.task_query(task_id, api_key=self._header_key())
        return await self._query(prepared, _queries.parse_task)

    async def get_balance(self) -> float:
        """The account's credit balance (``data.balance``).

        Sends ``GET /api/v1/client/account/balance``; retried as :meth:`get_task` is.

        Raises:
            APIError: The API answered with an error code.
            APIConnectionError: The API could not be reached, after the retries.
            InvalidResponseError: The reply has no number ``data.balance``.
        """
        return await self._query(
            _queries.balance_query(api_key=self._header_key()), _queries.parse_balance
        )

    async def wait_for_task(
        self, task_id: str, *, timeout: float | None = 900.0, poll_interval: float = 15.0
    ) -> SunoTask:
        """Wait until the music task ``task_id`` has succeeded, and return it.

        It polls :meth:`get_task` at once, then no more often than ``poll_interval``
        seconds, with jitter (the provider recommends 15 to 30 s). All waits for one
        ``task_id`` on this client share one poll loop, however many callers wait; it
        polls at the longest interval any of them asked for, with the settings (timeout,
        retries) of the client that was constructed, shared by those ``with_options`` made.
        Cancelling a wait leaves nothing behind: the loop stops when its last waiter leaves.

        Args:
            task_id: The music task's id.
            timeout: Seconds to wait in all; ``None`` waits for as long as it takes.
            poll_interval: The shortest time between two polls, in seconds.

        Raises:
            TaskFailedError: The task failed.
            TaskTimeoutError: The task had not finished within ``timeout``.
            RequestValidationError: ``task_id`` is not a non-blank string (nothing sent).
            ValueError: ``timeout`` or ``poll_interval`` is not a finite number > 0.
            SunoPersonaError: Polling failed (the error of :meth:`get_task`).
        """
        _queries.check_task_id(task_id)
        limit = None if timeout is None else _config.check_seconds("timeout", timeout)
        interval = _config.check_seconds("poll_interval", poll_interval)
        if self._closed:
            raise SunoPersonaError("the client is closed")
        deadline = None if limit is None else self._clock() + limit
        polls = self._task_polls
        poll = polls.get(task_id)
        if poll is None:
            poll = polls[task_id] = _Poll(task_id, polls)
        waiter = _Waiter(deadline, interval)
        poll.waiters.append(waiter)
        try:
            if poll.runner is None:
                # The constructed client runs it: a with_options client closed on its own
                # must not end the waits of the others.
                owner = cast("TaskQueries", self._root)
                poll.runner = asyncio.ensure_future(owner._poll(poll))  # noqa: SLF001
                poll.runner.add_done_callback(poll.ended)
            while poll.outcome is None:
                now = self._clock()
                if deadline is not None and now >= deadline:
                    last = poll.last.status if poll.last is not None else None
                    raise TaskTimeoutError(task_id, last_status=last, timeout=limit or 0.0)
                await poll.changed(None if deadline is None else deadline - now)
            return _result(poll.outcome)
        finally:
            poll.waiters.remove(waiter)
            if not poll.waiters:
                if polls.get(task_id) is poll:
                    del polls[task_id]
                if poll.runner is not None and not poll.runner.done():
                    poll.runner.cancel()

    async def _poll(self, poll: _Poll) -> None:
        """The poll loop of one task id: until it finishes, or its last waiter leaves."""
        next_at = -math.inf
        while True:
            if self._clock() >= next_at:
                task = await self.get_task(poll.task_id)
                poll.last = task
                if task.status.finished:
                    poll.finish(task)
                    return
                spread = 1.0 + _JITTER * self._rng.random()
                next_at = self._clock() + poll.interval() * spread
            poll.wake()
            wake_at = min(next_at, poll.next_deadline())
            try:
                await self._gets.sleep(max(0.0, wake_at - self._clock()))
            except GateClosed:
                raise SunoPersonaError(
                    f"the client was closed while waiting for task {poll.task_id}"
                ) from None

    def _wait_of(self, wait_for_task: bool | float | None) -> float | None:
        """The timeout of the wait for the task a call asks for; ``None``: no wait."""
        if wait_for_task is None:
            return self._task_wait
        return _config.check_wait_for_task(wait_for_task)

    async def _check_task(self, request: PersonaRequest, timeout: float) -> None:
        """Wait for the request's task to succeed, then check the request against it."""
        task = await self.wait_for_task(
            request.task_id, timeout=timeout, poll_interval=self._task_poll_interval
        )
        check_request(task, request)

    def _header_key(self) -> str | None:
        """The key to send with each request: only a session of the user's needs it."""
        return self._api_key if self._user_session is not None else None

    async def _query(self, prepared: PreparedRequest, parse: Parse[T]) -> T:
        """One GET through the pipeline: its own gate, retried as a call safe to repeat."""
        session = self._open_session() or await self._ensure_open()
        now = self._clock()
        seconds = self._retry.deadline
        call = Call(
            None,
            prepared,
            self._base_url + prepared.path,
            now,
            _UNBOUNDED if seconds is None else Deadline(now + seconds),
            parse=parse,
            throttle=self._gets,
            idempotent=True,
        )
        try:
            return await self._run(session, call)
        except SunoPersonaError as error:
            self._failed(call, error)
            raise


def _result(outcome: SunoTask | BaseException) -> SunoTask:
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome.status is TaskStatus.FAILED:
        raise TaskFailedError(
            outcome.task_id, code=outcome.error_code, message=outcome.error_message
        )
    return outcome
