"""``serve``: a :class:`PersonaEmulator` run until cancelled (the ``emulator`` command)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from suno_persona.testing._emulator import PersonaEmulator

__all__ = ["serve"]


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_keys: Iterable[str] = ("sk-test",),
    rate_limit: float | None = None,
    burst: int = 10,
    credits: int | None = None,  # noqa: A002  (the option's documented name)
    latency: float | Callable[[], float] = 0.0,
    retry_after: bool = True,
    errors_in_http_status: bool = True,
    fail_rate: float = 0.0,
    fail_codes: Iterable[int] = (429, 455, 500),
    seed: int | None = None,
    maintenance: tuple[float, float] | None = None,
    ready: Callable[[str], object] | None = None,
) -> None:
    """Run a :class:`PersonaEmulator` until cancelled, then stop it cleanly.

    Made for the ``suno-persona emulator`` command: it prints nothing and handles no
    signals; cancel the task to stop it.

    Args:
        host: The address to listen on.
        port: The port to listen on; ``0`` picks a free one.
        api_keys: The keys the emulator accepts.
        rate_limit: Requests per second allowed per API key, or ``None`` for no limit.
        burst: Capacity of each key's token bucket.
        credits: Credits available, or ``None`` for unlimited.
        latency: Seconds to wait before each answer, or a callable returning them.
        retry_after: Whether 429 and 455 answers carry ``Retry-After``.
        errors_in_http_status: Whether errors use their code as the HTTP status.
        fail_rate: The share of requests answered at random with one of ``fail_codes``.
        fail_codes: The codes of those random answers.
        seed: Seeds the draws of ``fail_rate``.
        maintenance: ``(after, seconds)``: answer 455 for ``seconds``, starting ``after``
            seconds after the emulator starts listening.
        ready: Called with the emulator's base URL once it is listening.
    """
    emulator = PersonaEmulator(
        api_keys=api_keys,
        rate_limit=rate_limit,
        burst=burst,
        credits=credits,
        latency=latency,
        retry_after=retry_after,
        errors_in_http_status=errors_in_http_status,
        host=host,
        port=port,
        fail_rate=fail_rate,
        fail_codes=fail_codes,
        seed=seed,
    )
    async with emulator:
        if maintenance is not None:
            after, seconds = maintenance
            asyncio.get_running_loop().call_later(after, emulator.maintenance, seconds)
        if ready is not None:
            ready(emulator.base_url)
        await asyncio.Event().wait()
