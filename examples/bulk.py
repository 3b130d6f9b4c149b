"""Create personas in bulk from a CSV or JSON Lines file, printing each result as it finishes.

A ``.csv`` file has a header row of field names (``task_id,suno_id,name,...``; an empty cell
leaves the field out); any other file is read as JSON Lines, one object of fields per line.
:meth:`AsyncPersonaClient.generate_as_completed` runs the requests, at most ``--concurrency``
at a time, and yields each outcome as soon as it is ready; a request that breaks the schema
comes back as its ``RequestValidationError`` without being sent.

Run it (the key and the API's URL come from ``SUNO_API_KEY`` and ``SUNO_API_BASE_URL``)::

    python examples/bulk.py examples/mixed.jsonl --concurrency 4

For a resumable job with records in a file, use ``suno-persona batch`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import suno_persona as sp

NUMBERS = ("vocal_start", "vocal_end")


def load(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """``(line number, fields)`` per row, or ``(line number, what is wrong)``."""
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            rows.append((number, f"not JSON: {error.msg}"))
    return rows


def _load_csv(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    rows: list[tuple[int, dict[str, Any] | str]] = []
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        for row in reader:
            fields: dict[str, Any] = {k: v for k, v in row.items() if k and v not in ("", None)}
            try:
                for key in NUMBERS:
                    if key in fields:
                        fields[key] = float(fields[key])
            except ValueError:
                rows.append((reader.line_num, f"{key}: not a number: {fields[key]!r}"))
            else:
                rows.append((reader.line_num, fields))
    return rows


async def run(
    client: sp.AsyncPersonaClient,
    path: Path,
    *,
    concurrency: int = 8,
    out: Callable[[str], object] = print,
) -> tuple[int, int]:
    """Create a persona per row of ``path``, calling ``out`` with a line per result.

    Returns:
        How many succeeded, and how many failed.
    """
    rows = load(path)
    failed = 0
    sendable: list[tuple[int, dict[str, Any]]] = []
    for number, row in rows:
        if isinstance(row, str):
            out(f"line {number}: error: {row}")
            failed += 1
        else:
            sendable.append((number, row))
    succeeded = 0
    requests = [fields for _, fields in sendable]
    async for index, outcome in client.generate_as_completed(requests, concurrency=concurrency):
        number = sendable[index][0]
        if isinstance(outcome, sp.Persona):
            out(f"line {number}: {outcome.persona_id}")
            succeeded += 1
        else:
            out(f"line {number}: error: {type(outcome).__name__}: {outcome}")
            failed += 1
    return succeeded, failed


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create personas from a CSV or JSONL file.")
    parser.add_argument("input", type=Path, help="a .csv file with a header row, or JSON Lines")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    async with sp.AsyncPersonaClient() as client:
        succeeded, failed = await run(client, args.input, concurrency=args.concurrency)
    print(f"{succeeded} succeeded, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
