"""The ``throttle_store`` option: in this process, or shared through Redis.

Nothing here imports ``redis`` unless a store is asked for, so the core runs without the extra.
"""

from __future__ import annotations

from collections.abc import Callable

from suno_persona import _config
from suno_persona._errors import SunoPersonaError
from suno_persona._policy import ThrottlePolicy
from suno_persona._seam import ThrottleState

__all__ = ["ENV", "SCHEMES", "build_state"]

ENV = "SUNO_THROTTLE_STORE"
SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)
"""The URL forms of a store (``suno_persona/_redis_urls.py`` says what each one means)."""


def build_state(
    store: object,
    policy: ThrottlePolicy | None,
    *,
    base_url: str,
    api_key: str,
    max_pause: float,
    probe_lease: float,
    clock: Callable[[], float],
    emit: Callable[[object], None],
) -> ThrottleState | None:
    """The shared state ``store`` asks for (``SUNO_THROTTLE_STORE`` when ``None``).

    ``None`` means the throttle's own in-process state. With no throttle policy there is
    nothing to share and the store is not used.

    Raises:
        SunoPersonaError: A store is asked for but the ``redis`` extra is not installed.
        ValueError: ``store`` is neither a URL of Redis nor a ``RedisThrottleStore``.
    """
    if store is None:
        store = _config.env(ENV)
    if store is None or policy is None:
        return None
    if isinstance(store, str) and not store.startswith(SCHEMES):
        raise ValueError(
            f"throttle_store must be a {', '.join(SCHEMES)} URL or a "
            f"RedisThrottleStore, got {_config.masked_url(store)!r}"
        )
    if not isinstance(store, str) and type(store).__name__ != "RedisThrottleStore":
        raise ValueError(
            f"throttle_store must be a {', '.join(SCHEMES)} URL or a "
            f"RedisThrottleStore, got {type(store).__name__}"
        )
    try:
        from suno_persona._redis_state import RedisState  # noqa: PLC0415 - the optional extra
        from suno_persona.redis import RedisThrottleStore  # noqa: PLC0415 - the optional extra
    except ImportError as error:
        raise SunoPersonaError(
            "a shared throttle store needs the redis package: pip install 'suno-persona[redis]'"
        ) from error
    owned = isinstance(store, str)
    if isinstance(store, str):
        store = RedisThrottleStore(store)
    if not isinstance(store, RedisThrottleStore):
        raise ValueError(  # noqa: TRY004 - the constructor raises ValueError
            f"throttle_store must be a RedisThrottleStore, got {type(store).__name__}"
        )
    return RedisState(
        store,
        policy,
        base_url=base_url,
        api_key=api_key,
        max_pause=max_pause,
        probe_lease=probe_lease,
        emit=emit,
        clock=clock,
        owns_store=owned,
    )
