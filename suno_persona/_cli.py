"""The ``suno-persona`` command: one persona, a JSON Lines batch, or a local emulator.

::

    suno-persona generate --task-id T --suno-id S --name N [...]    prints {"persona_id": ...}
    suno-persona batch INPUT.jsonl -o OUTPUT.jsonl [--concurrency N]  one record per line
    suno-persona emulator [--port P] [--api-key K ...]               serves until interrupted

Exit status: 0 when every request succeeded, 1 when one failed (the API's error, or a
request that broke the schema), 2 when the command could not start (a bad option, no API
key, an unreadable INPUT, an OUTPUT that is not a batch file), ``128 + signal`` when
``generate`` or ``batch`` is stopped by SIGINT or SIGTERM (130 for Ctrl-C). The emulator
exits 0 on SIGINT or SIGTERM.

The command uses the public API only; the API key never appears in anything it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import json
import logging
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import attrs

from suno_persona import (
    APIError,
    AsyncPersonaClient,
    Persona,
    PersonaRequest,
    RequestValidationError,
    RetryPolicy,
    SunoPersonaError,
    __version__,
    _config,
)
from suno_persona.testing import PersonaEmulator, serve

__all__ = ["main"]

PROG: Final = "suno-persona"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

# --emulate: the key the in-process emulator accepts when none is given, and a little
# latency and a rate limit, so that the progress bar moves and a retry or two shows up.
EMULATOR_KEY: Final = "sk-test"
EMULATE_LATENCY: Final = 0.05
EMULATE_RATE_LIMIT: Final = 10.0
EMULATE_BURST: Final = 5

_LOGGER: Final = "suno_persona"
_REFRESH: Final = 0.1


class UsageError(Exception):
    """The command cannot start as given: exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    secrets = _Secrets()
    logs = _Logs(secrets, verbose=args.verbose)
    command: Callable[[argparse.Namespace, _Secrets, _Logs], Coroutine[Any, Any, int]] = args.run
    try:
        with logs:
            return asyncio.run(command(args, secrets, logs))
    except UsageError as error:
        _print_error(secrets.redact(str(error)))
        return EXIT_USAGE
    except (SunoPersonaError, OSError) as error:
        _print_error(secrets.redact(str(error)))
        return EXIT_FAILED
    except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C before the signal handlers are set
        _print_error("interrupted")
        return 128 + signal.SIGINT


def _print_error(text: str) -> None:
    _write(sys.stderr, f"error: {text}")


def _write(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


# --- the parser -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Create Suno personas through the crun.ai API, or run a local emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    shared = argparse.ArgumentParser(add_help=False)
    group = shared.add_argument_group("connection")
    group.add_argument("--api-key", help="the crun.ai API key (default: $SUNO_API_KEY)")
    group.add_argument(
        "--base-url", help="the API's base URL (default: $SUNO_API_BASE_URL, else the real API)"
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
        help="send to an in-process emulator instead of the API (offline; key 'sk-test')",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")

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
        help="create a persona per line of a JSON Lines file",
        description=(
            "Create a persona for each line of INPUT (a JSON object of request fields) and "
            "write one record per line to OUTPUT. Running again with the same OUTPUT resumes: "
            "lines that already have a persona are not sent again."
        ),
    )
    batch.add_argument("input", type=Path, metavar="INPUT.jsonl")
    batch.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT.jsonl")
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests in flight at most (default: 8)",
    )
    batch.set_defaults(run=_batch)

    emulator = commands.add_parser(
        "emulator",
        help="serve the local emulator of the endpoint until interrupted",
        description=(
            "Serve an emulator of the endpoint on HTTP, print its base URL, and run until "
            "SIGINT or SIGTERM."
        ),
    )
    emulator.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    emulator.add_argument("--port", type=_port, default=0, help="default: 0 (a free port)")
    emulator.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="a key to accept; repeatable (default: sk-test)",
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
    emulator.add_argument("-v", "--verbose", action="store_true", help="log each request")
    emulator.set_defaults(run=_emulator)
    return parser


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


# --- secrets and logs -----------------------------------------------------------------------


class _Secrets:
    """The keys in use, to be masked in everything the command prints or writes."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def add(self, value: str) -> None:
        if value and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (rich's progress redirects it)."""

    def __init__(self, secrets: _Secrets) -> None:
        super().__init__(logging.DEBUG)
        self._secrets = secrets
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._secrets.redact(self.format(record))
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  # pragma: no cover - logging must never break the run
            self.handleError(record)


class _RetryCounter(logging.Handler):
    """Counts the library's "retrying after attempt N" records (there is no other signal)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("retrying"):
            self.count += 1


class _Logs:
    """The logging set-up of one run: the retry counter, and debug logs on stderr with ``-v``."""

    def __init__(self, secrets: _Secrets, *, verbose: bool) -> None:
        self.retries = _RetryCounter()
        level = logging.DEBUG if verbose else logging.INFO
        self._wiring: list[tuple[str, int, logging.Handler]] = [(_LOGGER, level, self.retries)]
        if verbose:
            to_stderr = _StderrHandler(secrets)
            self._wiring += [(_LOGGER, level, to_stderr), ("aiohttp.access", level, to_stderr)]
        self._saved: list[tuple[logging.Logger, int, logging.Handler]] = []

    def __enter__(self) -> _Logs:  # noqa: PYI034 - no typing.Self in 3.10
        for name, level, handler in self._wiring:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level, handler))
            logger.setLevel(level)
            logger.addHandler(handler)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for logger, level, handler in reversed(self._saved):
            logger.removeHandler(handler)
            logger.setLevel(level)
        self._saved.clear()


# --- connecting -----------------------------------------------------------------------------


@attrs.frozen
class _Connection:
    api_key: str
    base_url: str | None
    timeout: float
    max_attempts: int | None
    emulate: bool


def _connection(args: argparse.Namespace, secrets: _Secrets) -> _Connection:
    key = args.api_key or _config.env("SUNO_API_KEY")
    if args.emulate:
        if args.base_url:
            raise UsageError("--emulate and --base-url exclude each other")
        key = key or EMULATOR_KEY
    if key is None:
        raise UsageError("no API key: pass --api-key or set SUNO_API_KEY (or try --emulate)")
    secrets.add(key)
    return _Connection(
        api_key=key,
        base_url=None if args.emulate else args.base_url or _config.env("SUNO_API_BASE_URL"),
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        emulate=args.emulate,
    )


@contextlib.asynccontextmanager
async def _open_client(connection: _Connection) -> AsyncIterator[AsyncPersonaClient]:
    async with contextlib.AsyncExitStack() as stack:
        base_url = connection.base_url
        if connection.emulate:
            emulator = PersonaEmulator(
                api_keys=[connection.api_key],
                latency=EMULATE_LATENCY,
                rate_limit=EMULATE_RATE_LIMIT,
                burst=EMULATE_BURST,
            )
            await stack.enter_async_context(emulator)
            base_url = emulator.base_url
        retry = RetryPolicy(max_attempts=connection.max_attempts or RetryPolicy().max_attempts)
        try:
            client = AsyncPersonaClient(
                connection.api_key, base_url=base_url, timeout=connection.timeout, retry=retry
            )
        except SunoPersonaError as error:
            raise UsageError(str(error)) from None
        except ValueError as error:  # a URL that urlsplit refuses
            raise UsageError(f"base URL {base_url!r} is not valid: {error}") from None
        yield await stack.enter_async_context(client)


# --- generate -------------------------------------------------------------------------------


async def _generate(args: argparse.Namespace, secrets: _Secrets, _logs: _Logs) -> int:
    connection = _connection(args, secrets)
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
        async with _open_client(connection) as client:
            made.append(await client.generate_persona(request))

    stopped_by = await _until_signal(create())
    if stopped_by is not None:
        _print_error("interrupted")
        return 128 + stopped_by
    _write(sys.stdout, json.dumps({"persona_id": made[0].persona_id}))
    return EXIT_OK


# --- batch ----------------------------------------------------------------------------------

Record = dict[str, Any]


@attrs.define
class _Tally:
    """What a batch run has done so far."""

    lines: int
    earlier: int
    invalid: int
    to_send: int
    succeeded: int = 0
    failed: int = 0
    started: float = attrs.field(factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Lines sent that have an outcome."""
        return self.succeeded + self.failed

    @property
    def this_run(self) -> int:
        """Lines this run deals with: all but those done in an earlier run."""
        return self.invalid + self.to_send

    @property
    def done(self) -> int:
        """Lines of this run that have their record."""
        return self.invalid + self.finished

    @property
    def all_failed(self) -> int:
        """Lines that failed: invalid ones, and those the API refused."""
        return self.invalid + self.failed

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.finished / elapsed if elapsed > 0 else 0.0


async def _batch(args: argparse.Namespace, secrets: _Secrets, logs: _Logs) -> int:
    connection = _connection(args, secrets)
    source: Path = args.input
    sink: Path = args.output
    lines = _read_input(source)
    _check_distinct(source, sink)
    numbers = {number for number, _ in lines}
    records = {n: r for n, r in _read_records(sink).items() if n in numbers}
    earlier = {n for n, r in records.items() if "persona_id" in r}
    pending: list[tuple[int, PersonaRequest]] = []
    invalid = 0
    for number, parsed in lines:
        if number in earlier:
            continue
        if isinstance(parsed, PersonaRequest):
            pending.append((number, parsed))
        else:
            records[number] = _record(number, parsed, secrets)
            invalid += 1
    tally = _Tally(lines=len(lines), earlier=len(earlier), invalid=invalid, to_send=len(pending))

    async with _open_client(connection) as client:
        _rewrite(sink, records)
        with _progress(tally, logs.retries) as progress:
            stopped_by = await _until_signal(
                _send_all(
                    client, pending, args.concurrency, sink, records, tally, secrets, progress
                )
            )
    _rewrite(sink, records)
    summary = _summary(tally, logs.retries.count, sink, interrupted=stopped_by is not None)
    _write(sys.stderr, summary)
    if stopped_by is not None:
        return 128 + stopped_by
    return EXIT_OK if tally.all_failed == 0 else EXIT_FAILED


async def _send_all(  # noqa: PLR0917 - private, called from one place
    client: AsyncPersonaClient,
    pending: list[tuple[int, PersonaRequest]],
    concurrency: int,
    sink: Path,
    records: dict[int, Record],
    tally: _Tally,
    secrets: _Secrets,
    progress: _Progress,
) -> None:
    """Send every pending line; append each record to ``sink`` (flushed) as it comes."""
    requests = [request for _, request in pending]
    with sink.open("a", encoding="utf-8") as out:
        async for index, outcome in client.generate_as_completed(requests, concurrency=concurrency):
            number = pending[index][0]
            record = _record(number, outcome, secrets)
            records[number] = record
            out.write(json.dumps(record) + "\n")
            out.flush()
            if isinstance(outcome, Persona):
                tally.succeeded += 1
            else:
                tally.failed += 1
            progress.update()


def _summary(tally: _Tally, retries: int, sink: Path, *, interrupted: bool) -> str:
    succeeded = tally.succeeded + tally.earlier
    parts = [f"{tally.lines} lines", f"{succeeded} succeeded"]
    if tally.earlier:
        parts[-1] += f" ({tally.earlier} in an earlier run)"
    parts.append(f"{tally.all_failed} failed")
    not_run = tally.to_send - tally.finished
    if not_run:
        parts.append(f"{not_run} not run")
    elapsed = time.monotonic() - tally.started
    head = "interrupted" if interrupted else "done"
    return (
        f"{head}: {', '.join(parts)}; {retries} {'retry' if retries == 1 else 'retries'}; "
        f"{elapsed:.1f}s; records in {sink}"
    )


def _check_distinct(source: Path, sink: Path) -> None:
    with contextlib.suppress(OSError):
        if sink.samefile(source):
            raise UsageError("OUTPUT is the INPUT file: choose another -o")


def _read_input(path: Path) -> list[tuple[int, PersonaRequest | SunoPersonaError]]:
    """The non-blank lines of ``path``, numbered from 1, each parsed into a request or an error."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    parsed: list[tuple[int, PersonaRequest | SunoPersonaError]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.removesuffix(b"\r")
        if line.strip():
            parsed.append((number, _parse_line(line)))
    return parsed


def _parse_line(line: bytes) -> PersonaRequest | SunoPersonaError:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return RequestValidationError("request", f"is not UTF-8 text (byte {error.start + 1})")
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as error:
        return RequestValidationError(
            "request", f"is not valid JSON: {error.msg} (column {error.colno})"
        )
    except (ValueError, RecursionError) as error:  # a number too long, nesting too deep
        return RequestValidationError("request", f"is not valid JSON: {error}")
    try:
        return PersonaRequest.from_dict(fields)
    except RequestValidationError as error:
        return error


def _record(number: int, outcome: Persona | SunoPersonaError, secrets: _Secrets) -> Record:
    if isinstance(outcome, Persona):
        return {"line": number, "persona_id": outcome.persona_id}
    code = outcome.code if isinstance(outcome, APIError) else None
    error = {
        "type": type(outcome).__name__,
        "code": code,
        "message": secrets.redact(outcome.message),
    }
    return {"line": number, "error": error}


def _read_records(path: Path) -> dict[int, Record]:
    """The records of an earlier run, by line: a persona beats an error, a later error an earlier.

    A last line without its newline is a write cut short, and ignored; any other line that
    is not a record means ``path`` is not a batch file, which is not ours to overwrite.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    records: dict[int, Record] = {}
    rows = data.split(b"\n")
    for position, raw in enumerate(rows, start=1):
        if not raw.strip():
            continue
        record = _parse_record(raw)
        if record is None:
            if position == len(rows):
                continue
            raise UsageError(
                f"{path} line {position} is not a batch record; not overwriting it "
                "(choose another -o)"
            )
        number = record["line"]
        if "persona_id" not in records.get(number, {}):
            records[number] = record
    return records


def _parse_record(raw: bytes) -> Record | None:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    number = record.get("line")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return None
    persona_id = record.get("persona_id")
    if isinstance(persona_id, str) and persona_id:
        return {"line": number, "persona_id": persona_id}
    error = record.get("error")
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        return {"line": number, "error": error}
    return None


def _rewrite(path: Path, records: dict[int, Record]) -> None:
    """Replace ``path`` with ``records`` in line order, atomically (temp file + os.replace)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(records[number]) + "\n" for number in sorted(records))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)  # noqa: PTH101 - a str path from mkstemp
        os.replace(temp, path)  # noqa: PTH105 - same
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)  # noqa: PTH108 - same
        raise


async def _until_signal(work: Coroutine[Any, Any, None]) -> int | None:
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


# --- progress -------------------------------------------------------------------------------


class _Progress(Protocol):
    def update(self) -> None: ...


class _NoProgress:
    def update(self) -> None:
        pass


def _stats(tally: _Tally, retries: _RetryCounter) -> str:
    return (
        f"ok {tally.succeeded}  failed {tally.all_failed}  retries {retries.count}  "
        f"{tally.rate():.1f}/s"
    )


class _PlainProgress:
    """One line on a terminal, redrawn in place: for when rich is not installed."""

    def __init__(self, tally: _Tally, retries: _RetryCounter, stream: TextIO) -> None:
        self._tally = tally
        self._retries = retries
        self._stream = stream
        self._drawn = 0.0

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _REFRESH:
            return
        self._drawn = now
        tally = self._tally
        text = f"batch {tally.done}/{tally.this_run}  {_stats(tally, self._retries)}"
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()

    def close(self) -> None:
        self.update(force=True)
        self._stream.write("\n")
        self._stream.flush()


@contextlib.contextmanager
def _progress(tally: _Tally, retries: _RetryCounter) -> Iterator[_Progress]:
    """A progress display on stderr when it is a terminal: rich's when installed, else plain."""
    if not sys.stderr.isatty():
        yield _NoProgress()
        return
    try:
        from rich.console import Console  # noqa: PLC0415 - optional: the [cli] extra
        from rich.progress import (  # noqa: PLC0415 - same
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        plain = _PlainProgress(tally, retries, sys.stderr)
        try:
            plain.update(force=True)
            yield plain
        finally:
            plain.close()
        return

    bar = Progress(
        TextColumn("batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("batch", total=tally.this_run, stats=_stats(tally, retries))

    class _Rich:
        def update(self) -> None:
            bar.update(task, completed=tally.done, stats=_stats(tally, retries))

    with bar:
        try:
            yield _Rich()
        finally:
            _Rich().update()


# --- emulator -------------------------------------------------------------------------------


async def _emulator(args: argparse.Namespace, secrets: _Secrets, _logs: _Logs) -> int:
    keys: list[str] = args.api_keys or [EMULATOR_KEY]
    for key in keys:
        if not key:
            raise UsageError("--api-key must not be empty")
        secrets.add(key)

    def ready(base_url: str) -> None:
        _write(sys.stdout, base_url)

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
                ready=ready,
            )
        except OSError as error:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {error.strerror or error}"
            ) from None

    await _until_signal(serving())
    return EXIT_OK
