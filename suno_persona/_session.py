"""The client's aiohttp session and the event loop it is bound to.

A client belongs to the event loop it is used in. When that loop has ended (a script that
calls ``asyncio.run`` twice), the next call rebinds the client to the loop it runs in; a
client whose loop is still running elsewhere refuses to be used from another one. A client
made by ``with_options`` uses the session of the client it was made from (its root).
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable

import aiohttp

from suno_persona import _protocol, _transport
from suno_persona._errors import SunoPersonaError
from suno_persona._throttle import Throttle

__all__ = ["SessionBinding", "cap_to_pool"]


class SessionBinding:
    """Opens, rebinds and closes the session (a part of :class:`AsyncPersonaClient`).

    Closing the client closes its gates, its session, and the clients made from it.
    """

    _api_key: str
    _timeout: float
    _max_concurrency: int | None
    _closed: bool
    _root: SessionBinding
    _user_session: aiohttp.ClientSession | None
    _session: aiohttp.ClientSession | None
    _watcher: AsyncGenerator[None, None] | None
    _loop: asyncio.AbstractEventLoop | None
    _throttle: Throttle
    _gets: Throttle
    _children: weakref.WeakSet[SessionBinding]

    async def close(self) -> None:
        """Close the client's own session (never one passed in). Safe to call twice.

        Closing a client also closes every client :meth:`with_options` made from it;
        closing one of those closes only itself.
        """
        if self._closed:
            return
        self._closed = True
        if self._root is not self:
            return
        for child in list(self._children):
            child._closed = True  # noqa: SLF001 - same class
        self._gets.close()
        await self._throttle.aclose()
        await self._close_session()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        session = getattr(self, "_session", None)
        if session is not None and session is not self._user_session and not session.closed:
            _warn(
                f"Unclosed {type(self).__name__}; use 'async with' or 'await client.close()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    def _open_session(self) -> aiohttp.ClientSession | None:
        """The session, when it is ready for this loop (the common case); else ``None``."""
        root = self._root
        session = root._session  # noqa: SLF001 - same class
        if (
            self._closed
            or session is None
            or session.closed
            or root._loop is not asyncio.get_running_loop()  # noqa: SLF001 - same class
        ):
            return None
        return session

    async def _ensure_open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SunoPersonaError("the client is closed")
        if self._root is not self:
            return await self._root._ensure_open()  # noqa: SLF001 - same class
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._bind(loop)
        session = self._session
        if session is None or (session.closed and session is not self._user_session):
            limit = self._max_concurrency or 0
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit),
                timeout=_transport.attempt_timeout(aiohttp.ClientTimeout(), self._timeout),
                headers=_protocol.request_headers(self._api_key),
            )
            # Closes the session when its loop shuts down (asyncio.run does that), so a
            # client outliving its loop leaves no connection of that loop open.
            self._watcher = _close_at_shutdown(session)
            await anext(self._watcher)
            self._throttle.register()
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
            self._gets.rebind()
        if stale is not None and stale is not user:
            # The session belonged to the ended loop: close what can still be closed.
            with contextlib.suppress(Exception):
                await stale.close()
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.aclose()

    async def _close_session(self) -> None:
        """Close the session the client made (never the user's) and its shutdown watcher."""
        session, self._session = self._session, None
        watcher, self._watcher = self._watcher, None
        if session is not None and session is not self._user_session:
            await session.close()
        if watcher is not None:
            await watcher.aclose()


async def _close_at_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Suspends until closed; the loop's ``shutdown_asyncgens`` then closes ``session``."""
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


def cap_to_pool(cap: int | None, connector: aiohttp.BaseConnector | None) -> int | None:
    """The in-flight cap held to a user's connector's limits, so no call waits in its pool."""
    limits = [cap] if cap is not None else []
    if connector is not None:
        limits += [n for n in (connector.limit, connector.limit_per_host) if n]
    return min(limits) if limits else None
