"""``AsyncPersonaClient``: configuration, the session's lifecycle, and the I/O edge.

Everything about the wire format lives in ``_protocol``; everything about when to try
again lives in ``_retry`` and ``_throttle``. Foreign exceptions (aiohttp, asyncio) are
translated into ours in ``_transport`` and nowhere else; the checks of the configuration
live in ``_config``.

A client belongs to the event loop it is used in. When that loop has ended (a script that
calls ``asyncio.run`` twice), the next call rebinds the client to the loop it runs in; a
client whose loop is still running elsewhere refuses to be used from another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from suno_persona import _config, _protocol, _transport
from suno_persona._errors import APITimeoutError, SunoPersonaError
from suno_persona._fanout import Completions, as_completed, check_concurrency, gather_in_order
from suno_persona._models import Persona, PersonaRequest
from suno_persona._retry import RetryPolicy, build_retrying
from suno_persona._throttle import Throttle, ThrottlePolicy

__all__ = ["AsyncPersonaClient"]

logger = logging.getLogger("suno_persona")

DEFAULT_BASE_URL = _config.DEFAULT_BASE_URL
MAX_BODY_BYTES = _transport.MAX_BODY_BYTES

Outcome = Persona | SunoPersonaError


class AsyncPersonaClient:
    """An asyncio client for the "Generate a Suno persona" endpoint.

    One client is meant to be shared by every task of an application: it holds one
    aiohttp session (created lazily inside the running loop), one throttle that all
    calls cooperate through, and one cap on requests in flight.

    Args:
        api_key: The crun.ai API key; defaults to the ``SUNO_API_KEY`` environment variable.
        base_url: Defaults to ``SUNO_API_BASE_URL``, then ``https://api.crun.ai``. Must be
            https, except for loopback hosts, unless ``allow_insecure_http`` is set.
        timeout: Seconds for one attempt (connect, send and read the whole reply).
        retry: The :class:`RetryPolicy`; defaults to ``RetryPolicy()``.
        max_concurrency: Cap on requests in flight across all calls of this client
            (``None``: no cap beyond the connection pool).
        session: An aiohttp session to use; it is never closed by the client.
        throttle: The :class:`ThrottlePolicy` shared by all calls; ``None`` turns
            throttling off (every task then only backs off on its own).
        allow_insecure_http: Permit plain http to a host that is not loopback.

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
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        session: aiohttp.ClientSession | None = None,
        throttle: ThrottlePolicy | None = ThrottlePolicy(),  # noqa: B008 - frozen value
        allow_insecure_http: bool = False,
    ) -> None:
        self._api_key = _config.resolve_api_key(api_key)
        self._base_url = _config.resolve_base_url(
            base_url,
            allow_insecure_http=_config.check_bool("allow_insecure_http", allow_insecure_http),
        )
        self._timeout = _config.check_timeout(timeout)
        _config.check_instance("retry", retry, RetryPolicy)
        _config.check_instance("session", session, aiohttp.ClientSession)
        _config.check_instance("throttle", throttle, ThrottlePolicy)
        max_concurrency = _config.check_max_concurrency(max_concurrency)
        self._retry = retry if retry is not None else RetryPolicy()
        self._max_concurrency = max_concurrency
        self._user_session = session
        self._session: aiohttp.ClientSession | None = session
        self._watcher: AsyncGenerator[None, None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._throttle = Throttle(
            throttle,
            max_concurrency=max_concurrency,
            clock=self._now,
            sleep=self._pause,
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

    async def close(self) -> None:
        """Close the client's own session (never one passed in). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        watcher, self._watcher = self._watcher, None
        if session is not None and session is not self._user_session:
            await session.close()
        if watcher is not None:
            await watcher.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        session = getattr(self, "_session", None)
        if session is not None and session is not self._user_session and not session.closed:
            _warn(
                f"Unclosed {type(self).__name__}; use 'async with' or 'await client.close()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    async def generate_persona(
        self, request: PersonaRequest | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Persona:
        """Turn a finished Suno song into a persona and return it.

        Pass a :class:`PersonaRequest`, or its fields as keyword arguments. The request is
        validated before anything is sent; 429 and 455 are retried under the client's
        :class:`RetryPolicy`.

        Raises:
            RequestValidationError: The request breaks a rule of the schema (nothing sent).
            APIError: The API answered with an error code (see the subclasses).
            APIConnectionError: The API could not be reached, or the connection broke.
            InvalidResponseError: The reply was neither a success nor an error envelope.
        """
        if request is not None and fields:
            raise TypeError(
                "pass either a PersonaRequest (or a mapping of its fields) or keyword fields, "
                "not both"
            )
        return await self._generate(_coerce(request if request is not None else fields))

    async def generate_many(
        self,
        requests: Iterable[PersonaRequest | Mapping[str, Any]],
        *,
        concurrency: int = 8,
    ) -> list[Outcome]:
        """Create many personas, at most ``concurrency`` at a time.

        Returns:
            One outcome per input, in input order: the :class:`Persona`, or the
                :class:`SunoPersonaError` for that request (returned, not raised). An
                input that fails validation gets its :class:`RequestValidationError` and
                is not sent. Cancellation still propagates.
        """
        return await gather_in_order(self._generate_outcome, list(requests), concurrency)

    def generate_as_completed(
        self,
        requests: Iterable[PersonaRequest | Mapping[str, Any]],
        *,
        concurrency: int = 8,
    ) -> Completions[Outcome]:
        """Create many personas and yield ``(index, outcome)`` as each one finishes.

        Every index is yielded exactly once. Cancelling the consumer cancels the work
        still outstanding and leaves no task behind. To stop it the moment you leave the
        loop early, use the result as a context manager::

            async with client.generate_as_completed(requests) as results:
                async for index, outcome in results:
                    ...

        (A bare ``async for`` with ``break`` stops the work when the iterator is
        garbage-collected: right away, unless a reference to it is kept.)
        """
        check_concurrency(concurrency)
        return Completions(as_completed(self._generate_outcome, list(requests), concurrency))

    async def _generate_outcome(self, request: PersonaRequest | Mapping[str, Any]) -> Outcome:
        try:
            return await self._generate(_coerce(request))
        except SunoPersonaError as error:
            return error

    async def _generate(self, request: PersonaRequest) -> Persona:
        try:
            return await self._call(request)
        except SunoPersonaError as error:
            # On Python 3.10 a coroutine may still see, as the exception being handled, a
            # foreign one its task was woken with; our errors must not chain it.
            _detach(error)
            raise

    async def _call(self, request: PersonaRequest) -> Persona:
        session = await self._ensure_open()
        policy = self._retry
        deadline_at = None if policy.deadline is None else self._clock() + policy.deadline
        prepared = _protocol.build_request(request, api_key=self._api_key)
        url = self._base_url + prepared.path

        async def attempt(number: int) -> Persona:
            try:
                return await self._attempt(session, url, prepared, request, deadline_at, number)
            except SunoPersonaError as error:
                error.attempts = number
                error.retryable = policy.is_retryable(error)
                raise

        # Most first attempts succeed: the tenacity driver is built only once one has
        # failed, and that failure is handed to it as the outcome of attempt 1.
        try:
            return await attempt(1)
        except SunoPersonaError as error:
            if not error.retryable or policy.max_attempts == 1:
                raise
            first_failure = error
        retrying = build_retrying(
            policy,
            sleep=self._sleep,
            clock=self._clock,
            deadline_at=deadline_at,
            rng=self._rng,
            spend=self._throttle.spend_retry,
        )
        async for try_ in retrying:
            with try_:
                number = try_.retry_state.attempt_number
                if number == 1:
                    raise first_failure
                return await attempt(number)
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(  # noqa: PLR0917 - private, called from one place
        self,
        session: aiohttp.ClientSession,
        url: str,
        prepared: _protocol.PreparedRequest,
        request: PersonaRequest,
        deadline_at: float | None,
        number: int,
    ) -> Persona:
        if self._closed:
            raise SunoPersonaError("the client was closed while the call was retrying")
        async with self._throttle.slot(deadline_at) as ticket:
            timeout = self._timeout
            if deadline_at is not None:
                timeout = min(timeout, deadline_at - self._clock())
                if timeout <= 0:
                    raise APITimeoutError(
                        "the call's deadline passed before this attempt", sent=False, deadline=True
                    )
            logger.debug("attempt %d: %s %s", number, prepared.method, url)
            # Our own session already applies self._timeout; only a shorter one, or a
            # session of the user's, needs a timeout of its own on the request.
            own_timeout = timeout == self._timeout and session is not self._user_session
            try:
                persona = await _exchange(
                    session, url, prepared, request, None if own_timeout else timeout
                )
            except SunoPersonaError as error:
                _redact(error, self._api_key)
                _detach(error)
                ticket.failed(error)
                # Without the frames below this one: their locals hold the reply, which
                # may echo the key, and that is what a traceback with locals would show.
                raise error.with_traceback(None)  # noqa: B904 - the same error, fewer frames
            ticket.succeeded()
            return persona

    async def _ensure_open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SunoPersonaError("the client is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._bind(loop)
        session = self._session
        if session is None or (session.closed and session is not self._user_session):
            limit = self._max_concurrency or 100
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit),
                timeout=_transport.attempt_timeout(aiohttp.ClientTimeout(), self._timeout),
            )
            # Closes the session when its loop shuts down (asyncio.run does that), so a
            # client outliving its loop leaves no connection of that loop open.
            self._watcher = _close_at_shutdown(session)
            await anext(self._watcher)
        return session

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` the client's loop, unless the loop it is bound to still runs."""
        previous = self._loop
        if previous is not None and previous.is_running():
            raise SunoPersonaError(
                "this client is bound to another event loop that is still running (in "
                "another thread?); use one client per event loop"
            )
        user = self._user_session
        if user is not None and getattr(user, "_loop", loop) is not loop:
            raise SunoPersonaError(
                "the session passed to the client belongs to another event loop; create the "
                "aiohttp session in the loop that uses the client (or let the client make one)"
            )
        stale, self._session = self._session, user
        watcher, self._watcher = self._watcher, None
        self._loop = loop
        if previous is not None:
            self._throttle.rebind()
        if stale is not None and stale is not user:
            # The session belonged to the ended loop: close what can still be closed.
            with contextlib.suppress(Exception):
                await stale.close()
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.aclose()


async def _exchange(
    session: aiohttp.ClientSession,
    url: str,
    prepared: _protocol.PreparedRequest,
    request: PersonaRequest,
    timeout: float | None,
) -> Persona:
    status, headers, body = await _transport.send(session, url, prepared, timeout)
    return _protocol.parse_response(status, headers, body, request=request, now=time.time())


async def _close_at_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Suspends until closed; the loop's ``shutdown_asyncgens`` then closes ``session``."""
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


def _detach(error: SunoPersonaError) -> None:
    """Chain nothing: a foreign exception's frames may hold the key in their locals."""
    error.__cause__ = None
    error.__context__ = None


def _redact(error: SunoPersonaError, secret: str) -> None:
    """Replace ``secret`` (the API key) in the error's message, where a reply may echo it."""
    if secret in error.message:
        error.message = error.message.replace(secret, "***")
        error.args = (error.message,)


def _coerce(request: PersonaRequest | Mapping[str, Any]) -> PersonaRequest:
    if isinstance(request, PersonaRequest):
        return request
    return PersonaRequest.from_dict(request)
