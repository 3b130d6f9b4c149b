"""``PersonaClient``: the blocking client, for sync code and threads (Flask, Django, Celery).

It wraps an :class:`AsyncPersonaClient` through its public API, and runs it on one event
loop in a daemon thread of its own. Every thread that calls the client hands its call to
that loop and waits for the answer, so all of them share one connection pool, one throttle
and one cap on requests in flight.

The loop thread starts with the first call, and stops on :meth:`PersonaClient.close`, when
the client is garbage-collected, or at interpreter exit. In a child process made by
``os.fork()`` the parent's loop thread does not exist: the child's first call starts a loop
thread of its own, with a new connection pool, and leaves the parent's connections alone.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from suno_persona._client import AsyncPersonaClient
from suno_persona._errors import SunoPersonaError
from suno_persona._fanout import Completions
from suno_persona._loop_thread import CLOSED as _CLOSED
from suno_persona._loop_thread import LoopThread, SharedLoop
from suno_persona._models import Persona, PersonaRequest
from suno_persona._persona import Outcome
from suno_persona._policy import ThrottlePolicy
from suno_persona._retry import RetryPolicy
from suno_persona._settings import EventHook
from suno_persona._task import SunoTask

if TYPE_CHECKING:
    from suno_persona.redis import RedisThrottleStore

__all__ = ["PersonaClient"]

T = TypeVar("T")
Call = Callable[[AsyncPersonaClient], Coroutine[Any, Any, T]]
_RequestLike = PersonaRequest | Mapping[str, Any]
_UNSET: Final[Any] = object()


class PersonaClient:
    """A blocking client for the "Generate a Suno persona" endpoint, safe to share by threads.

    It takes the options of :class:`AsyncPersonaClient` (except ``session``: an aiohttp
    session belongs to the loop it was made in) and has its methods, without ``await``.
    Make one per application, at import time if you like, and share it: every thread that
    calls it goes through one event loop in a background thread, so they share one
    connection pool, one throttle and one cap on requests in flight.

    ```python
    with PersonaClient() as client:
        persona = client.generate_persona(task_id="t", suno_id="s", name="n")
    ```

    Errors are those of :class:`AsyncPersonaClient`. A call interrupted by Ctrl-C
    (``KeyboardInterrupt`` in the calling thread) cancels its request, and returns once the
    request has stopped. The client is closed by :meth:`close`, by leaving its ``with``
    block, when it is garbage-collected, and at interpreter exit. In a child process
    made by ``os.fork()`` (gunicorn, Celery, multiprocessing) the child's first call starts
    its own event loop and connection pool. Event hooks are called in the loop's thread.

    Args:
        api_key: As for :class:`AsyncPersonaClient`.
        base_url: As for :class:`AsyncPersonaClient`.
        timeout: As for :class:`AsyncPersonaClient`.
        retry: As for :class:`AsyncPersonaClient`.
        max_concurrency: As for :class:`AsyncPersonaClient`.
        throttle: As for :class:`AsyncPersonaClient`.
        allow_insecure_http: As for :class:`AsyncPersonaClient`.
        event_hooks: As for :class:`AsyncPersonaClient`; called in the loop's thread.
        throttle_store: As for :class:`AsyncPersonaClient`.
        task_poll_interval: As for :class:`AsyncPersonaClient`.

    Raises:
        SunoPersonaError: As for :class:`AsyncPersonaClient`.
        ValueError: As for :class:`AsyncPersonaClient`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen value
        max_concurrency: int | None = 100,
        throttle: ThrottlePolicy | None = ThrottlePolicy(),  # noqa: B008 - frozen value
        allow_insecure_http: bool = False,
        event_hooks: Iterable[EventHook] = (),
        throttle_store: str | RedisThrottleStore | None = None,
        task_poll_interval: float = 15.0,
    ) -> None:
        options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "timeout": timeout,
            "retry": retry,
            "max_concurrency": max_concurrency,
            "throttle": throttle,
            "allow_insecure_http": allow_insecure_http,
            "event_hooks": tuple(event_hooks),
            "throttle_store": throttle_store,
            "task_poll_interval": task_poll_interval,
        }
        client = AsyncPersonaClient(**options)
        self._shared = SharedLoop(options, client)
        self._base_url = client.base_url
        self._overrides: dict[str, Any] | None = None
        self._derived: tuple[LoopThread, AsyncPersonaClient] | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, self._shared.close)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<PersonaClient base_url={self._base_url!r} api_key='***' {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (on this client, or the one it came from)."""
        return self._closed or self._shared.closed

    def with_options(
        self,
        *,
        timeout: float = _UNSET,
        retry: RetryPolicy | None = _UNSET,
        event_hooks: Iterable[EventHook] = _UNSET,
        wait_for_task: bool | float = _UNSET,
        task_poll_interval: float = _UNSET,
    ) -> PersonaClient:
        """A client that differs from this one only in the settings given.

        As :meth:`AsyncPersonaClient.with_options`: it shares this client's loop, pool,
        throttle and retry budget; closing this client closes the new one too, and closing
        the new one does not close this one. ``wait_for_task`` and ``task_poll_interval``
        are as there too.

        Raises:
            SunoPersonaError: This client is closed.
            ValueError: An argument has the wrong type or value; the message names it.
        """
        if self.closed:
            raise SunoPersonaError(_CLOSED)
        given = {
            "timeout": timeout,
            "retry": retry,
            "event_hooks": event_hooks,
            "wait_for_task": wait_for_task,
            "task_poll_interval": task_poll_interval,
        }
        overrides = {**(self._overrides or {})}
        overrides.update({name: value for name, value in given.items() if value is not _UNSET})
        if "event_hooks" in overrides:
            overrides["event_hooks"] = tuple(overrides["event_hooks"])
        loop = self._shared.loop()
        derived = loop.run(_derive(loop.client, overrides))
        child = object.__new__(PersonaClient)
        child._shared = self._shared
        child._base_url = self._base_url
        child._overrides = overrides
        child._derived = (loop, derived)
        child._closed = False
        child._finalizer = weakref.finalize(child, _nothing)
        return child

    def _run(self, call: Call[T]) -> T:
        """Run ``call(async_client)`` on the loop thread and wait for its result.

        Each method of the async client is one line here: ``self._run(lambda c: c.method())``.
        """
        if self._closed:
            raise SunoPersonaError(_CLOSED)
        loop = self._shared.loop()
        client = loop.client
        if self._overrides is not None:
            derived = self._derived
            if derived is None or derived[0] is not loop:
                derived = self._derived = (loop, loop.run(_derive(client, self._overrides)))
            client = derived[1]
        return loop.run(call(client))

    def generate_persona(
        self,
        request: _RequestLike | None = None,
        /,
        *,
        wait_for_task: bool | float | None = None,
        **fields: Any,
    ) -> Persona:
        """Turn a finished Suno song into a persona and return it.

        As :meth:`AsyncPersonaClient.generate_persona` (``wait_for_task`` too), blocking
        until the call is done.
        """
        return self._run(
            lambda client: client.generate_persona(request, wait_for_task=wait_for_task, **fields)
        )

    def generate_many(
        self,
        requests: Iterable[_RequestLike],
        *,
        concurrency: int = 8,
        wait_for_task: bool | float | None = None,
    ) -> list[Outcome]:
        """Create many personas, at most ``concurrency`` at a time; one outcome per input.

        As :meth:`AsyncPersonaClient.generate_many` (``wait_for_task`` too). ``requests``
        is read in the loop's thread, lazily.
        """
        return self._run(
            lambda client: client.generate_many(
                requests, concurrency=concurrency, wait_for_task=wait_for_task
            )
        )

    def generate_as_completed(
        self,
        requests: Iterable[_RequestLike],
        *,
        concurrency: int = 8,
        wait_for_task: bool | float | None = None,
    ) -> CompletionsIterator:
        """Create many personas and yield ``(index, outcome)`` as each one finishes.

        As :meth:`AsyncPersonaClient.generate_as_completed` (``wait_for_task`` too), as a
        plain iterator. Closing
        it (leaving its ``with`` block, ``close()``, or dropping the last reference to it)
        cancels the work still outstanding and waits until it has stopped.

        ```python
        with client.generate_as_completed(requests) as results:
            for index, outcome in results:
                ...
        ```

        Raises:
            TypeError: ``requests`` is a mapping, a str or bytes, or not iterable.
            ValueError: ``concurrency`` is not an int >= 1.
        """
        return CompletionsIterator(
            self,
            self._run(
                lambda client: _completions(client, requests, concurrency, wait_for_task),
            ),
        )

    def get_task(self, task_id: str) -> SunoTask:
        """The music task ``task_id`` as the task query answers now.

        As :meth:`AsyncPersonaClient.get_task`, blocking until the answer is in.
        """
        return self._run(lambda client: client.get_task(task_id))

    def wait_for_task(
        self, task_id: str, *, timeout: float | None = 900.0, poll_interval: float = 15.0
    ) -> SunoTask:
        """Wait until the music task ``task_id`` has succeeded, and return it.

        As :meth:`AsyncPersonaClient.wait_for_task`: the waits of all threads for one
        ``task_id`` share one poll loop, and Ctrl-C cancels the wait.
        """
        return self._run(
            lambda client: client.wait_for_task(
                task_id, timeout=timeout, poll_interval=poll_interval
            )
        )

    def get_balance(self) -> float:
        """The account's credit balance, as :meth:`AsyncPersonaClient.get_balance`."""
        return self._run(lambda client: client.get_balance())

    def close(self) -> None:
        """Close the connections, stop the loop and join its thread. Safe to call twice.

        Closing a client also closes every client :meth:`with_options` made from it;
        closing one of those closes only itself.
        """
        self._closed = True
        if self._overrides is None:
            self._finalizer()

    def __enter__(self) -> PersonaClient:  # noqa: PYI034 - no typing.Self in 3.10
        if self.closed:
            raise SunoPersonaError(_CLOSED)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _nothing() -> None:
    """A client made by ``with_options`` owns nothing to close."""


async def _derive(client: AsyncPersonaClient, overrides: dict[str, Any]) -> AsyncPersonaClient:
    return client.with_options(**overrides)


async def _completions(
    client: AsyncPersonaClient,
    requests: Iterable[_RequestLike],
    concurrency: int,
    wait_for_task: bool | float | None,
) -> Completions[Outcome]:
    return client.generate_as_completed(
        requests, concurrency=concurrency, wait_for_task=wait_for_task
    )


class CompletionsIterator(Iterator[tuple[int, Outcome]]):
    """The iterator :meth:`PersonaClient.generate_as_completed` returns; a context manager.

    Closing it cancels the work still outstanding and waits until it has stopped; so does
    dropping the last reference to it.
    """

    def __init__(self, client: PersonaClient, results: Completions[Outcome]) -> None:
        self._client = client
        self._results: Completions[Outcome] | None = results

    def __iter__(self) -> CompletionsIterator:
        return self

    def __next__(self) -> tuple[int, Outcome]:
        results = self._results
        if results is None:
            raise StopIteration
        try:
            return self._client._run(lambda _: results.__anext__())  # noqa: SLF001 - ours
        except StopAsyncIteration:
            self._results = None
            raise StopIteration from None
        except BaseException:
            self._results = None
            raise

    def close(self) -> None:
        """Cancel the work still outstanding and wait until it has stopped."""
        results, self._results = self._results, None
        if results is not None and not self._client._shared.closed:  # noqa: SLF001 - ours
            with contextlib.suppress(SunoPersonaError):
                self._client._run(lambda _: results.aclose())  # noqa: SLF001 - ours

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> CompletionsIterator:  # noqa: PYI034 - no typing.Self in 3.10
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
