"""One event loop in a daemon thread, and how another thread runs a coroutine on it.

A thread that waits for its coroutine and is interrupted (Ctrl-C raises ``KeyboardInterrupt``
in it) cancels the coroutine on the loop and waits until it has stopped before the
interruption goes on. Stopping the loop ends what still runs on it, so no caller waits for
ever. :class:`suno_persona.PersonaClient` is built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from suno_persona._client import AsyncPersonaClient
from suno_persona._errors import SunoPersonaError

__all__ = ["CLOSED", "LoopThread"]

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
