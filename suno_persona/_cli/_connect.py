"""What every command needs to run: its options turned into a client, and signal handling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import Any, Final

import attrs

from suno_persona import AsyncPersonaClient, RetryPolicy, SunoPersonaError, _config
from suno_persona._cli._console import Secrets
from suno_persona.events import Event

__all__ = [
    "Connection",
    "UsageError",
    "connection",
    "from_environment",
    "open_client",
    "until_signal",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

# --emulate: the key the in-process emulator accepts when none is given, and a little
# latency and a rate limit, so that the progress bar moves and a retry or two shows up.
EMULATOR_KEY: Final = "sk-test"
EMULATE_LATENCY: Final = 0.05
EMULATE_RATE_LIMIT: Final = 10.0
EMULATE_BURST: Final = 5
# --emulate: the tasks it seeds are pending, then running, for this long each.
EMULATED_TASK: Final = 0.5


class UsageError(Exception):
    """The command cannot start as given: exit status 2."""


def from_environment(api_key: str | None, base_url: str | None) -> tuple[str | None, str | None]:
    """The key and base URL given as options, else from the environment.

    ``SUNO_API_KEY`` and ``SUNO_API_BASE_URL``; an empty value counts as none.
    """
    return (
        api_key or _config.env("SUNO_API_KEY"),
        base_url or _config.env("SUNO_API_BASE_URL"),
    )


@attrs.frozen
class Connection:
    """How to reach the API, from the options of ``generate`` and ``batch``."""

    api_key: str = attrs.field(repr=False)  # a secret: never in a repr or a traceback
    base_url: str | None
    timeout: float
    max_attempts: int | None
    emulate: bool
    allow_insecure_http: bool
    throttle_store: str | None = attrs.field(default=None, repr=False)  # may hold a password


def connection(args: argparse.Namespace, secrets: Secrets) -> Connection:
    """The connection the options ask for; the key is masked from then on."""
    if args.emulate and args.base_url:
        raise UsageError("--emulate and --base-url exclude each other")
    key, base_url = from_environment(args.api_key, args.base_url)
    if args.emulate:
        key, base_url = key or EMULATOR_KEY, None
    if key is None:
        raise UsageError("no API key: pass --api-key or set SUNO_API_KEY (or try --emulate)")
    secrets.add(key)
    return Connection(
        api_key=key,
        base_url=base_url,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        emulate=args.emulate,
        allow_insecure_http=args.allow_insecure_http,
        throttle_store=getattr(args, "throttle_store", None),
    )


@contextlib.asynccontextmanager
async def open_client(
    connection: Connection,
    *,
    event_hooks: Iterable[Callable[[Event], object]] = (),
    tasks: Mapping[str, Mapping[str, float | None]] | None = None,
    task_poll_interval: float = 15.0,
    check_tasks: bool = False,
) -> AsyncIterator[AsyncPersonaClient]:
    """The client, and with ``--emulate`` the in-process emulator it sends to.

    With ``--emulate`` the emulator holds ``tasks`` (task id -> its songs' durations), each
    pending then running for :data:`EMULATED_TASK` seconds, and with ``check_tasks`` checks
    each persona request against them.
    """
    async with contextlib.AsyncExitStack() as stack:
        base_url = connection.base_url
        if connection.emulate:
            from suno_persona.testing import PersonaEmulator  # noqa: PLC0415 - only for --emulate

            emulator = PersonaEmulator(
                api_keys=[connection.api_key],
                latency=EMULATE_LATENCY,
                rate_limit=EMULATE_RATE_LIMIT,
                burst=EMULATE_BURST,
                check_tasks=check_tasks,
            )
            for task_id, songs in (tasks or {}).items():
                emulator.add_task(task_id, songs, pending=EMULATED_TASK, running=EMULATED_TASK)
            await stack.enter_async_context(emulator)
            base_url = emulator.base_url
        retry = RetryPolicy(max_attempts=connection.max_attempts or RetryPolicy().max_attempts)
        try:
            client = AsyncPersonaClient(
                connection.api_key,
                base_url=base_url,
                timeout=connection.timeout,
                retry=retry,
                allow_insecure_http=connection.allow_insecure_http,
                throttle_store=connection.throttle_store,
                event_hooks=event_hooks,
                task_poll_interval=task_poll_interval,
            )
        except SunoPersonaError as error:
            raise UsageError(_insecure_hint(str(error))) from None
        except ValueError as error:  # a URL that urlsplit refuses, or a bad store
            if "throttle_store" in str(error):
                raise UsageError(str(error).replace("throttle_store", "--throttle-store")) from None
            raise UsageError(f"base URL {base_url!r} is not valid: {error}") from None
        yield await stack.enter_async_context(client)


def _insecure_hint(message: str) -> str:
    return message.replace("pass allow_insecure_http=True", "pass --allow-insecure-http")


async def until_signal(work: Coroutine[Any, Any, None]) -> int | None:
    """Run ``work``; SIGINT or SIGTERM cancels it. Return the signal that did, or ``None``."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, not main thread
            continue
        installed.append(signum)
    try:
        await task
    except asyncio.CancelledError:
        if not received:  # pragma: no cover - only stop() cancels the task
            raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return received[0] if received else None
