"""One event loop in a daemon thread, and how another thread runs a coroutine on it.

A thread that waits for its coroutine and is interrupted (Ctrl-C raises ``KeyboardInterrupt``
in it) cancels the coroutine on the loop and waits until it has stopped before the
interruption goes on. Stopping the loop ends what still runs on it, so no caller waits for
ever. :class:`SharedLoop` holds one loop thread per process for a blocking client and the
copies ``with_options`` makes of it. :class:`suno_persona.PersonaClient` is built on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from suno_persona._client import AsyncPersonaClient
from suno_persona._errors import SunoPersonaError

__all__ = ["CLOSED", "LoopThread", "SharedLoop"]

T = TypeVar("T")
CLOSED = "the client is closed"
# The longest a waiting thread goes without checking for Ctrl-C (a lock's wait is not
# interrupted by a signal everywhere, e.g. on Windows or with _thread.interrupt_main).
_POLL = 0.25


class LoopThread:
    """An event loop in a daemon thread of the process that started it, and its client."""

    def __init__(self, client: AsyncPersonaClient) -> None:
        self.client = client
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="suno-persona-loop", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Calls still running when the loop stopped: end them, so no caller waits for ever.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for it.

        When the wait is interrupted (Ctrl-C raises ``KeyboardInterrupt`` in the waiting
        thread), the coroutine is cancelled, the wait goes on until it has stopped, and the
        interruption is raised.
        """
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise SunoPersonaError(
                "a PersonaClient was called from its own event loop thread (from an event "
                "hook?); use the AsyncPersonaClient there"
            )
        done = threading.Event()
        started: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self.loop.create_task(coroutine)
            task.add_done_callback(lambda _: done.set())
            started.append(task)

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed
            coroutine.close()
            raise SunoPersonaError(CLOSED) from None

        def cancel() -> None:
            if started:
                started[0].cancel()

        try:
            self._wait(done)
        except BaseException:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.call_soon_threadsafe(cancel)
            self._wait(done)
            if started and started[0].done() and not started[0].cancelled():
                started[0].exception()  # retrieved, so asyncio does not log it
            raise
        if not started or not started[0].done():  # the loop ended first
            raise SunoPersonaError(CLOSED)
        (task,) = started
        if task.cancelled():
            raise SunoPersonaError("the client was closed while the call was in flight")
        return task.result()

    def _wait(self, done: threading.Event) -> None:
        """Until ``done`` is set or the loop's thread has ended, interruptible all along."""
        while not done.wait(_POLL) and self.thread.is_alive():
            pass

    def stop(self) -> None:
        """Close the async client, stop the loop and join its thread (if not called from it)."""
        if not self.thread.is_alive():
            return
        if threading.current_thread() is self.thread:
            self.loop.create_task(self.client.close()).add_done_callback(lambda _: self.loop.stop())
            return
        with contextlib.suppress(Exception):
            self.run(self.client.close())
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


class SharedLoop:
    """The loop thread a blocking client and its ``with_options`` copies share, one per process.

    A child made by ``os.fork()`` finds its parent's loop thread missing: its first call starts
    one of its own and leaves the parent's alone.
    """

    def __init__(self, options: dict[str, Any], client: AsyncPersonaClient) -> None:
        self.options = options
        self.first: AsyncPersonaClient | None = client
        self.current: LoopThread | None = None
        self.closed = False
        self.lock = threading.Lock()
        _LIVE.add(self)

    def loop(self) -> LoopThread:
        """The loop of this process, started on the first call (and again after a fork)."""
        current = self.current
        if current is not None and current.pid == os.getpid():
            return current
        with self.lock:
            if self.closed:
                raise SunoPersonaError(CLOSED)
            current = self.current
            if current is None or current.pid != os.getpid():
                if current is not None:
                    _ABANDONED.append(current)
                first, self.first = self.first, None
                current = self.current = LoopThread(first or AsyncPersonaClient(**self.options))
            return current

    def close(self) -> None:
        """Stop this process's loop thread; every later call fails as closed."""
        with self.lock:
            self.closed = True
            current, self.current = self.current, None
        if current is not None and current.pid == os.getpid():
            current.stop()


# The loops a parent process had when it forked: never touched, never collected, in the child.
_ABANDONED: list[LoopThread] = []
_LIVE: weakref.WeakSet[SharedLoop] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for shared in list(_LIVE):
        shared.lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
