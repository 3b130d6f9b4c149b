"""``AsyncPersonaClient``: the facade over the parts of the client.

The parts, each in its own module:

* ``_session``: the aiohttp session and the event loop it is bound to;
* ``_pipeline``: one call's attempts through the gate, under the retry policy, with events,
  generic over the endpoint;
* ``_settings``: the settings that ``with_options`` varies;
* ``_protocol`` (the wire format, pure), ``_transport`` (the aiohttp edge, where foreign
  exceptions become ours), ``_retry``, ``_policy`` (the throttle's settings),
  ``_throttle`` (its gate) and ``_config`` (the checks of the configuration).
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from suno_persona import _config, _protocol, _transport
from suno_persona._deadline import Deadline
from suno_persona._errors import SunoPersonaError
from suno_persona._fanout import (
    Completions,
    as_completed,
    check_concurrency,
    check_source,
    gather_in_order,
)
from suno_persona._gates import build_gates
from suno_persona._models import Persona, PersonaRequest
from suno_persona._persona import Outcome, PersonaCalls, coerce
from suno_persona._policy import ThrottlePolicy
from suno_persona._retry import RetryPolicy
from suno_persona._session import SessionBinding, cap_to_pool
from suno_persona._settings import UNSET, EventHook, Maybe, derive, retry_policy, varied

if TYPE_CHECKING:
    from suno_persona.redis import RedisThrottleStore

__all__ = ["AsyncPersonaClient"]

DEFAULT_BASE_URL = _config.DEFAULT_BASE_URL
MAX_BODY_BYTES = _transport.MAX_BODY_BYTES
_DEFAULT_CONCURRENCY = 100
_UNBOUNDED = Deadline()

Requests = (
    Iterable[PersonaRequest | Mapping[str, Any]] | AsyncIterable[PersonaRequest | Mapping[str, Any]]
)
_WHAT = "PersonaRequest objects or field mappings"


class AsyncPersonaClient(PersonaCalls):
    """An asyncio client for the "Generate a Suno persona" endpoint.

    One client is meant to be shared by every task of an application: it holds one
    aiohttp session (created lazily inside the running loop), one throttle that all
    calls cooperate through, and one cap on requests in flight. It also queries the music
    task a persona comes from (:meth:`get_task`, :meth:`wait_for_task`) and the account's
    balance (:meth:`get_balance`).

    Args:
        api_key: The crun.ai API key; defaults to the ``SUNO_API_KEY`` environment variable.
        base_url: Defaults to ``SUNO_API_BASE_URL``, then ``https://api.crun.ai``. Must be
            https, except for loopback hosts, unless ``allow_insecure_http`` is set.
        timeout: Seconds for one attempt (connect, send and read the whole reply). Time
            spent waiting at the client's own gate is not part of it.
        retry: The :class:`RetryPolicy`; ``None`` turns retries off (one attempt per call).
        max_concurrency: Cap on requests in flight across all calls of this client; the
            connection pool has the same size, so a request never waits for a connection
            after its timeout started. ``None``: no cap (and an unlimited pool). With a
            ``session`` of your own, the cap is also held to its connector's limits.
        session: An aiohttp session to use; it is never closed by the client.
        throttle: The :class:`ThrottlePolicy` shared by all calls; ``None`` turns the
            shared throttle off (every call then only backs off on its own; the cap on
            requests in flight stays).
        allow_insecure_http: Permit plain http to a host that is not loopback.
        event_hooks: Callables called with every :mod:`suno_persona.events` event.
        throttle_store: Where the throttle's shared state lives: ``None`` (the default,
            then ``SUNO_THROTTLE_STORE``) keeps it in this client; a Redis URL
            (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
            ``redis+sentinel://``) or a
            :class:`suno_persona.redis.RedisThrottleStore` shares the learned rate, the
            ``Retry-After`` pause and the maintenance probe with every client of the same
            key and base URL using that Redis (needs ``suno-persona[redis]``). The cap on
            requests in flight, the slow start and the retry budget stay per client.
        task_poll_interval: Seconds between two polls of a task when a call waits for it
            (``wait_for_task=True``); polls are jittered and never more frequent.

    Raises:
        SunoPersonaError: No key was given and ``SUNO_API_KEY`` is unset, the key is empty
            or has control characters, or ``base_url`` is not acceptable (not http(s), a
            user name or password, a query or fragment, plain http to a remote host).
        ValueError: Another argument has the wrong type or value (a ``timeout`` that is
            not a finite number > 0, a ``retry`` that is not a ``RetryPolicy``, ...); the
            message names it.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen value
        max_concurrency: int | None = _DEFAULT_CONCURRENCY,
        session: aiohttp.ClientSession | None = None,
        throttle: ThrottlePolicy | None = ThrottlePolicy(),  # noqa: B008 - frozen value
        allow_insecure_http: bool = False,
        event_hooks: Iterable[EventHook] = (),
        throttle_store: str | RedisThrottleStore | None = None,
        task_poll_interval: float = 15.0,
    ) -> None:
        self._api_key = _config.resolve_api_key(api_key)
        self._base_url = _config.resolve_base_url(
            base_url,
            allow_insecure_http=_config.check_bool("allow_insecure_http", allow_insecure_http),
        )
        self._url = self._base_url + _protocol.ENDPOINT_PATH
        self._timeout = _config.check_timeout(timeout)
        self._retry = retry_policy(retry)
        self._task_poll_interval = _config.check_seconds("task_poll_interval", task_poll_interval)
        self._task_wait: float | None = None
        self._task_polls: dict[str, Any] = {}
        _config.check_instance("session", session, aiohttp.ClientSession)
        _config.check_instance("throttle", throttle, ThrottlePolicy)
        max_concurrency = _config.check_max_concurrency(max_concurrency)
        if session is not None:
            max_concurrency = cap_to_pool(max_concurrency, session.connector)
        self._max_concurrency = max_concurrency
        self._user_session = session
        self._session: aiohttp.ClientSession | None = session
        self._watcher: AsyncGenerator[None, None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._root: AsyncPersonaClient = self
        self._children: weakref.WeakSet[SessionBinding] = weakref.WeakSet()
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._hooks = _config.check_event_hooks(event_hooks)
        self._failed_hooks: set[int] = set()
        self._throttle, self._gets, self._budget = build_gates(
            throttle,
            throttle_store,
            max_concurrency=max_concurrency,
            max_pause=self._retry.max_delay,
            probe_lease=self._timeout,
            base_url=self._base_url,
            api_key=self._api_key,
            clock=self._now,
            sleep=self._pause,
            emit=self._emit,
        )

    def _now(self) -> float:
        return self._clock()

    async def _pause(self, seconds: float) -> None:
        await self._sleep(seconds)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncPersonaClient base_url={self._base_url!r} api_key='***' {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def with_options(
        self,
        *,
        timeout: float | Maybe = UNSET,
        retry: RetryPolicy | Maybe | None = UNSET,
        event_hooks: Iterable[EventHook] | Maybe = UNSET,
        wait_for_task: bool | float | Maybe = UNSET,
        task_poll_interval: float | Maybe = UNSET,
    ) -> AsyncPersonaClient:
        """A client that differs from this one only in the settings given.

        It shares this client's session, connection pool, cap on requests in flight,
        throttle and retry budget: a ``Retry-After`` seen through one is honoured by the
        other. An argument left out keeps this client's value. Closing this client closes
        the new one too (its calls then raise :class:`SunoPersonaError`); closing the new
        one, or leaving its ``async with``, does not close this one.

        ```python
        async with AsyncPersonaClient() as client:
            patient = client.with_options(timeout=120, retry=RetryPolicy(max_attempts=10))
            persona = await patient.generate_persona(task_id="t", suno_id="s", name="n")
        ```

        Args:
            timeout: Seconds for one attempt, as in the constructor.
            retry: The :class:`RetryPolicy`; ``None`` turns retries off.
            event_hooks: The hooks of the calls made through the new client, instead of
                this client's. The throttle's own events (``RateChanged``, ...) still go
                to the hooks of the client that was constructed.
            wait_for_task: The default of the ``wait_for_task`` option of the calls made
                through the new client (see :meth:`generate_persona`).
            task_poll_interval: Seconds between two polls of a task, as in the constructor.

        Raises:
            SunoPersonaError: This client is closed.
            ValueError: An argument has the wrong type or value; the message names it.
        """
        if self._closed:
            raise SunoPersonaError("the client is closed")
        changes = varied(
            timeout=timeout,
            retry=retry,
            event_hooks=event_hooks,
            wait_for_task=wait_for_task,
            task_poll_interval=task_poll_interval,
        )
        return derive(self, changes)

    async def __aenter__(self) -> AsyncPersonaClient:  # noqa: PYI034 - no typing.Self in 3.10
        await self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def generate_persona(
        self,
        request: PersonaRequest | Mapping[str, Any] | None = None,
        /,
        *,
        wait_for_task: bool | float | None = None,
        **fields: Any,
    ) -> Persona:
        """Turn a finished Suno song into a persona and return it.

        Pass a :class:`PersonaRequest`, a mapping of its fields (a dict read from JSON, as
        in ``generate_persona({"task_id": ..., "suno_id": ..., "name": ...})``), or its
        fields as keyword arguments. The request is validated before anything is sent; 429
        and 455 are retried under the client's :class:`RetryPolicy`.

        The persona carries ``attempts`` (requests sent) and ``elapsed`` (seconds for the
        whole call); an error raised carries them too.

        Args:
            request: The request, or a mapping of its fields.
            wait_for_task: ``True``, or a timeout in seconds, first waits for the request's
                task to succeed (:meth:`wait_for_task`, polling every
                ``task_poll_interval``; ``True`` waits up to 900 s), then checks the request
                against it; ``False`` sends at once. ``None`` (the default) is the client's
                setting: ``False`` unless :meth:`with_options` set it.
            **fields: The request's fields, instead of ``request``.

        Raises:
            RequestValidationError: The request breaks a rule of the schema, or (waiting
                for the task) its ``suno_id`` is not a song of the task or its vocal window
                runs past the song's end; nothing is sent.
            TaskFailedError: Waiting for the task: it failed.
            TaskTimeoutError: Waiting for the task: it did not finish in time.
            APIError: The API answered with an error code (see the subclasses).
            APIConnectionError: The API could not be reached, or the connection broke.
            InvalidResponseError: The reply was neither a success nor an error envelope.
        """
        if request is not None and fields:
            raise TypeError(
                "pass either a PersonaRequest (or a mapping of its fields) or keyword fields, "
                "not both"
            )
        wait = self._wait_of(wait_for_task)
        checked = coerce(request if request is not None else fields)
        if wait is not None:
            await self._check_task(checked, wait)
        return await self._generate(checked)

    async def generate_many(
        self,
        requests: Requests,
        *,
        concurrency: int = 8,
        wait_for_task: bool | float | None = None,
    ) -> list[Outcome]:
        """Create many personas, at most ``concurrency`` at a time.

        ``requests`` may be any iterable or async iterable (a list, a generator, a database
        cursor, an async generator); it is read lazily, at most ``2 * concurrency`` items
        ahead of the requests that have finished, so only the results are kept.
        ``wait_for_task`` is as in :meth:`generate_persona`, for every request: requests
        on one task share its one poll loop.

        Returns:
            One outcome per input, in input order: the :class:`Persona`, or the
                :class:`SunoPersonaError` for that request (returned, not raised). An
                input that fails validation gets its :class:`RequestValidationError` and
                is not sent. Cancellation still propagates.

        Raises:
            TypeError: ``requests`` is a mapping, a str or bytes, or not iterable.
            Exception: Whatever the input iterator raises, once the calls in flight are
                cancelled.
        """
        check_source(requests, "requests", _WHAT)
        work = self._outcomes(self._wait_of(wait_for_task))
        return await gather_in_order(work, requests, concurrency)

    def generate_as_completed(
        self,
        requests: Requests,
        *,
        concurrency: int = 8,
        wait_for_task: bool | float | None = None,
    ) -> Completions[Outcome]:
        """Create many personas and yield ``(index, outcome)`` as each one finishes.

        ``requests`` may be any iterable or async iterable, of any size: it is read lazily,
        at most ``2 * concurrency`` items ahead of the outcomes you have received, and
        nothing is kept per finished item, so memory depends on ``concurrency`` only. The
        index counts the items in input order from 0. ``wait_for_task`` is as in
        :meth:`generate_many`.

        Every index is yielded exactly once. Cancelling the consumer cancels the work
        still outstanding and leaves no task behind. An exception raised by the input
        iterator cancels the work in flight and is then raised by the loop. To stop the
        work the moment you leave the loop early, use the result as a context manager:

        ```python
        async with client.generate_as_completed(requests) as results:
            async for index, outcome in results:
                ...
        ```

        (A bare ``async for`` with ``break`` stops the work when the iterator is
        garbage-collected: right away, unless a reference to it is kept.)

        Raises:
            TypeError: ``requests`` is a mapping, a str or bytes, or not iterable.
            ValueError: ``concurrency`` is not an int >= 1.
        """
        check_source(requests, "requests", _WHAT)
        check_concurrency(concurrency)
        work = self._outcomes(self._wait_of(wait_for_task))
        return Completions(as_completed(work, requests, concurrency))
