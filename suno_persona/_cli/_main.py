"""The parser, ``main``, and the ``generate`` and ``emulator`` commands.

``batch`` lives in :mod:`._batch`; records (pure) in :mod:`._records`; what is printed in
:mod:`._console`; options into a client, and signals, in :mod:`._connect`. The emulator is
imported only by ``--emulate`` and the ``emulator`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from suno_persona import Persona, PersonaRequest, SunoPersonaError, __version__
from suno_persona._cli._connect import (
    EMULATOR_KEY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    connection,
    open_client,
    until_signal,
)
from suno_persona._cli._console import Logs, Secrets, describe, print_error, write
from suno_persona._cli._tasks import add_batch_options, add_commands

__all__ = ["main"]

PROG: Final = "suno-persona"
_FAULT_CODES: Final = (429, 455, 500)

Command = Callable[[argparse.Namespace, Secrets, Logs], Coroutine[Any, Any, int]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    secrets = Secrets()
    logs = Logs(secrets, verbose=args.verbose)
    command: Command = args.run
    try:
        with logs:
            return asyncio.run(command(args, secrets, logs))
    except UsageError as error:
        print_error(secrets.redact(str(error)))
        return EXIT_USAGE
    except SunoPersonaError as error:
        print_error(secrets.redact(describe(error)))
        return EXIT_FAILED
    except OSError as error:
        print_error(secrets.redact(str(error)))
        return EXIT_FAILED
    except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C before the signal handlers are set
        print_error("interrupted")
        return 128 + signal.SIGINT


async def _run_batch(args: argparse.Namespace, secrets: Secrets, logs: Logs) -> int:
    from suno_persona._cli._batch import run_batch  # noqa: PLC0415 - only for batch

    return await run_batch(args, secrets, logs)


# --- the parser -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Create Suno personas through the crun.ai API, query their music tasks and the "
            "account's balance, or run a local emulator."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    shared = _connection_options()

    generate = commands.add_parser(
        "generate",
        parents=[shared],
        help='create one persona; print {"persona_id": ...}',
        description='Create one persona and print {"persona_id": "..."} on stdout.',
    )
    generate.add_argument("--task-id", required=True, help="id of the finished music task")
    generate.add_argument("--suno-id", required=True, help="Suno song id inside that task")
    generate.add_argument("--name", required=True, help="the persona's name (1-100 characters)")
    generate.add_argument("--description", help="at most 1000 characters")
    generate.add_argument(
        "--vocal-start", type=_number, metavar="SECONDS", help="start of the vocals (>= 0)"
    )
    generate.add_argument(
        "--vocal-end", type=_number, metavar="SECONDS", help="end of the vocals (> start)"
    )
    generate.add_argument("--style", help="at most 1000 characters, e.g. 'Western R&B, moody'")
    generate.set_defaults(run=_generate)

    batch = commands.add_parser(
        "batch",
        parents=[shared],
        help="create a persona per line of a JSON Lines or CSV file",
        description=(
            "Create a persona for each line of INPUT (a JSON object of request fields, or a "
            "CSV row under a header row of field names) and append one record per line to "
            "OUTPUT as each request finishes (in the order they finish; each record has its "
            "'line'). Running again with the same OUTPUT resumes: lines that already have a "
            "persona are not sent again. '-' is standard input or standard output."
        ),
    )
    batch.add_argument("input", metavar="INPUT", help="a .jsonl or .csv file, or - for stdin")
    batch.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="a .jsonl file, or - for stdout"
    )
    batch.add_argument(
        "--format",
        choices=("jsonl", "csv"),
        help="of INPUT (default: csv for a .csv file, else jsonl)",
    )
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests in flight at most (default: 8)",
    )
    add_batch_options(batch, _positive_float)
    batch.set_defaults(run=_run_batch)

    add_commands(commands, shared, poll_interval=_positive_float, wait_timeout=_positive_float)
    _emulator_parser(commands)
    return parser


def _connection_options() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    group = shared.add_argument_group("connection")
    group.add_argument("--api-key", help="the crun.ai API key (default: $SUNO_API_KEY)")
    group.add_argument(
        "--base-url", help="the API's base URL (default: $SUNO_API_BASE_URL, else the real API)"
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http base URL to a host that is not loopback (the key travels "
        "unencrypted)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds for one attempt (default: 30)",
    )
    group.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="attempts per request, the first included (default: 5)",
    )
    group.add_argument(
        "--emulate",
        action="store_true",
        help="send to an in-process emulator instead of the API (offline; it accepts the key "
        f"in use, else {EMULATOR_KEY!r})",
    )
    group.add_argument(
        "--throttle-store",
        metavar="URL",
        help="share one key's throttle with other processes through Redis: redis://, "
        "rediss://, unix://, redis+cluster:// or redis+sentinel:// (default: "
        "$SUNO_THROTTLE_STORE; needs suno-persona[redis])",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    return shared


def _emulator_parser(commands: Any) -> None:
    emulator = commands.add_parser(
        "emulator",
        help="serve the local emulator of the endpoint until interrupted",
        description=(
            "Serve an emulator of the endpoint on HTTP, print its base URL, and run until "
            "SIGINT or SIGTERM. The fault options let you rehearse failures from the shell."
        ),
    )
    emulator.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    emulator.add_argument("--port", type=_port, default=0, help="default: 0 (a free port)")
    emulator.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"a key to accept; repeatable (default: {EMULATOR_KEY})",
    )
    emulator.add_argument(
        "--rate-limit",
        type=_positive_float,
        metavar="PER_SECOND",
        help="requests per second per key (default: no limit)",
    )
    emulator.add_argument(
        "--burst", type=_positive_int, default=10, metavar="N", help="default: 10"
    )
    emulator.add_argument(
        "--credits",
        type=_non_negative_int,
        metavar="N",
        help="one per new persona (default: unlimited)",
    )
    emulator.add_argument(
        "--latency",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="wait before each answer (default: 0)",
    )
    faults = emulator.add_argument_group("faults")
    faults.add_argument(
        "--fail-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="answer this share of requests (0 to 1) with a random code of --fail-codes",
    )
    faults.add_argument(
        "--fail-codes",
        type=_codes,
        default=_FAULT_CODES,
        metavar="CODES",
        help="comma-separated error codes for --fail-rate (default: 429,455,500)",
    )
    faults.add_argument(
        "--seed", type=int, metavar="N", help="seed of --fail-rate's draws, for a repeatable run"
    )
    faults.add_argument(
        "--maintenance",
        type=_positive_float,
        metavar="SECONDS",
        help="answer 455 (under maintenance) to everything for this long",
    )
    faults.add_argument(
        "--maintenance-after",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="start --maintenance this long after the emulator starts (default: 0)",
    )
    emulator.add_argument("-v", "--verbose", action="store_true", help="log each request")
    emulator.set_defaults(run=_emulator)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return float(value)


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return float(value)


def _share(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return float(value)


def _codes(text: str) -> tuple[int, ...]:
    return tuple(_integer(part.strip(), 400, 599) for part in text.split(","))


def _integer(text: str, low: int, high: float = float("inf")) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not low <= value <= high:
        bound = f">= {low}" if high == float("inf") else f"from {low} to {high:.0f}"
        raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _integer(text, 1)


def _non_negative_int(text: str) -> int:
    return _integer(text, 0)


def _port(text: str) -> int:
    return _integer(text, 0, 65535)


# --- generate -------------------------------------------------------------------------------


async def _generate(args: argparse.Namespace, secrets: Secrets, _logs: Logs) -> int:
    reach = connection(args, secrets)
    fields = {
        "task_id": args.task_id,
        "suno_id": args.suno_id,
        "name": args.name,
        "description": args.description,
        "vocal_start": args.vocal_start,
        "vocal_end": args.vocal_end,
        "style": args.style,
    }
    request = PersonaRequest(**fields)
    made: list[Persona] = []

    async def create() -> None:
        async with open_client(reach) as client:
            made.append(await client.generate_persona(request))

    stopped_by = await until_signal(create())
    if stopped_by is not None:
        print_error("interrupted")
        return 128 + stopped_by
    write(sys.stdout, json.dumps({"persona_id": made[0].persona_id}))
    return EXIT_OK


# --- emulator -------------------------------------------------------------------------------


def usable_url(base_url: str) -> str:
    """The URL a client on this machine can use: a wildcard address becomes loopback."""
    return base_url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


async def _emulator(args: argparse.Namespace, secrets: Secrets, _logs: Logs) -> int:
    from suno_persona.testing import serve  # noqa: PLC0415 - only for this command

    keys: list[str] = args.api_keys or [EMULATOR_KEY]
    for key in keys:
        if not key:
            raise UsageError("--api-key must not be empty")
        secrets.add(key)

    def ready(base_url: str) -> None:
        write(sys.stdout, usable_url(base_url))

    async def serving() -> None:
        try:
            await serve(
                host=args.host,
                port=args.port,
                api_keys=keys,
                rate_limit=args.rate_limit,
                burst=args.burst,
                credits=args.credits,
                latency=args.latency,
                fail_rate=args.fail_rate,
                fail_codes=args.fail_codes,
                seed=args.seed,
                maintenance=(
                    None if args.maintenance is None else (args.maintenance_after, args.maintenance)
                ),
                ready=ready,
            )
        except OSError as error:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {error.strerror or error}"
            ) from None

    await until_signal(serving())
    return EXIT_OK
