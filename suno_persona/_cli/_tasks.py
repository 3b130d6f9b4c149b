"""The ``balance`` and ``task`` commands, and what ``--emulate`` seeds for the task query.

Both print one JSON object on stdout. ``--emulate`` seeds the emulator with the tasks the
command needs: the task asked about (``task``), or the tasks of the batch's INPUT file, each
with the songs its lines name, so that ``batch --emulate --wait-for-tasks`` shows the wait.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from suno_persona import PersonaRequest, SunoTask
from suno_persona._cli import _records
from suno_persona._cli._connect import EXIT_OK, connection, open_client, until_signal
from suno_persona._cli._console import Logs, Secrets, print_error, write
from suno_persona._cli._records import Format

__all__ = [
    "add_batch_options",
    "add_commands",
    "add_poll_interval",
    "seed_from_file",
    "task_record",
]

_SONG_PAST_THE_WINDOW: Final = 60.0
_DEMO_SONGS: Final = (("suno_a", 120.0), ("suno_b", 95.0))


def add_commands(
    commands: Any,
    shared: argparse.ArgumentParser,
    *,
    poll_interval: Callable[[str], float],
    wait_timeout: Callable[[str], float],
) -> None:
    """Add ``balance`` and ``task`` to the parser's ``commands``."""
    balance = commands.add_parser(
        "balance",
        parents=[shared],
        help='print the account\'s credit balance: {"balance": ...}',
        description='Print the account\'s credit balance as {"balance": N} on stdout.',
    )
    balance.set_defaults(run=_balance)
    task = commands.add_parser(
        "task",
        parents=[shared],
        help="print a music task as JSON (with --wait: once it has succeeded)",
        description=(
            "Print the music task TASK_ID (its status and songs) as one JSON object. With "
            "--wait, poll it until it has succeeded (exit 1 if it failed or did not finish "
            "in time)."
        ),
    )
    task.add_argument("task_id", metavar="TASK_ID", help="the music task's id")
    task.add_argument("--wait", action="store_true", help="wait until the task has succeeded")
    add_poll_interval(task, poll_interval)
    task.add_argument(
        "--wait-timeout",
        type=wait_timeout,
        default=900.0,
        metavar="SECONDS",
        help="with --wait: give up after this long (default: 900)",
    )
    task.set_defaults(run=_task)


def add_batch_options(
    batch: argparse.ArgumentParser, poll_interval: Callable[[str], float]
) -> None:
    """``batch --wait-for-tasks``, ``--check-balance`` and ``--poll-interval``."""
    batch.add_argument(
        "--wait-for-tasks",
        action="store_true",
        help="wait for each line's music task to succeed, and check the line against it "
        "(its suno_id, its vocal window), before sending it",
    )
    batch.add_argument(
        "--check-balance",
        action="store_true",
        help="ask for the account's balance first, and send nothing when it is 0",
    )
    add_poll_interval(batch, poll_interval)


def add_poll_interval(parser: argparse.ArgumentParser, kind: Callable[[str], float]) -> None:
    """The ``--poll-interval`` option of ``task --wait`` and ``batch --wait-for-tasks``."""
    parser.add_argument(
        "--poll-interval",
        type=kind,
        default=15.0,
        metavar="SECONDS",
        help="seconds between two polls of a task (default: 15; jittered, never more often)",
    )


async def _balance(args: argparse.Namespace, secrets: Secrets, _logs: Logs) -> int:
    reach = connection(args, secrets)
    found: list[float] = []

    async def ask() -> None:
        async with open_client(reach) as client:
            found.append(await client.get_balance())

    return _print_when_done(await until_signal(ask()), lambda: {"balance": found[0]})


async def _task(args: argparse.Namespace, secrets: Secrets, _logs: Logs) -> int:
    reach = connection(args, secrets)
    songs: dict[str, dict[str, float | None]] = (
        {args.task_id: dict(_DEMO_SONGS)} if reach.emulate else {}
    )
    found: list[SunoTask] = []

    async def ask() -> None:
        async with open_client(reach, tasks=songs, task_poll_interval=args.poll_interval) as client:
            if args.wait:
                task = await client.wait_for_task(
                    args.task_id, timeout=args.wait_timeout, poll_interval=args.poll_interval
                )
            else:
                task = await client.get_task(args.task_id)
            found.append(task)

    return _print_when_done(await until_signal(ask()), lambda: task_record(found[0]))


def _print_when_done(stopped_by: int | None, record: Callable[[], dict[str, Any]]) -> int:
    if stopped_by is not None:
        print_error("interrupted")
        return 128 + stopped_by
    write(sys.stdout, json.dumps(record()))
    return EXIT_OK


def task_record(task: SunoTask) -> dict[str, Any]:
    """The task as the ``task`` command prints it (``raw`` left out)."""
    return {
        "task_id": task.task_id,
        "status": task.raw.get("status", task.status.value),
        "songs": [
            {
                "suno_id": song.suno_id,
                "title": song.title,
                "duration": song.duration,
                "audio_url": song.audio_url,
                "image_url": song.image_url,
                "model_name": song.model_name,
            }
            for song in task.songs
        ],
        "model_version": task.model_version,
        "created_at": task.created_at,
        "completed_at": task.completed_at,
        "error_code": task.error_code,
        "error_message": task.error_message,
    }


def seed_from_file(path: str, form: Format) -> dict[str, dict[str, float | None]]:
    """The tasks the valid lines of the file name, each with its songs (``--emulate``).

    Each song lasts a minute past the end of the widest vocal window asked of it.
    """
    tasks: dict[str, dict[str, float | None]] = {}
    for request in _valid_requests(Path(path), form):
        songs = tasks.setdefault(request.task_id, {})
        end = request.vocal_end if request.vocal_end is not None else request.vocal_start
        needed = (end or 0.0) + _SONG_PAST_THE_WINDOW
        songs[request.suno_id] = max(needed, songs.get(request.suno_id) or 0.0)
    return tasks


def _valid_requests(path: Path, form: Format) -> Iterator[PersonaRequest]:
    with path.open("rb") as stream:
        if form == "csv":
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
            parsed = _records.parse_csv(text)
        else:
            parsed = _records.parse_jsonl(stream)
        for _number, request in parsed:
            if isinstance(request, PersonaRequest):
                yield request
