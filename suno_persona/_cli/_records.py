"""Batch records, pure: input lines into requests, outcomes into records, and resume.

Nothing here does I/O: every function takes lines (an iterable, of bytes or of text) and
yields or returns values, so the batch engine can feed it a file, standard input or a test's
list alike.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Literal

from suno_persona import APIError, Persona, PersonaRequest, RequestValidationError, SunoPersonaError

__all__ = [
    "Finished",
    "NotABatchFile",
    "Parsed",
    "Record",
    "count_lines",
    "dumps",
    "parse_csv",
    "parse_jsonl",
    "parse_line",
    "parse_record",
    "record",
    "scan_records",
]

Format = Literal["jsonl", "csv"]
Parsed = PersonaRequest | SunoPersonaError
Record = dict[str, Any]

_NUMBER_FIELDS: Final = frozenset({"vocal_start", "vocal_end"})
_JSON_TYPES: Final = {
    type(None): "null",
    bool: "true or false",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
}


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError("request", message)


def parse_jsonl(lines: Iterable[bytes]) -> Iterator[tuple[int, Parsed]]:
    """The non-blank lines, numbered from 1 as an editor does, each a request or its error."""
    for number, line in _numbered(lines):
        yield number, parse_line(line, first=number == 1)


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if line.strip():
            yield number, line


def parse_line(line: bytes, *, first: bool = False) -> Parsed:  # noqa: PLR0911 - one per fault
    """One JSON Lines line (without its newline) as a request, or what is wrong with it."""
    if line.startswith(codecs.BOM_UTF8) and not first:
        return _invalid(
            "starts with a byte order mark (U+FEFF), allowed only at the start of the file "
            "(were two files joined?)"
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return _invalid(f"is not UTF-8 text (byte {error.start + 1})")
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as error:
        return _invalid(f"is not valid JSON: {error.msg} (column {error.colno})")
    except (ValueError, RecursionError) as error:  # a number too long, nesting too deep
        return _invalid(f"is not valid JSON: {error}")
    if not isinstance(fields, dict):
        return _invalid(f"must be a JSON object of fields, not {_JSON_TYPES[type(fields)]}")
    try:
        return PersonaRequest.from_dict(fields)
    except RequestValidationError as error:
        return error


def parse_csv(lines: Iterable[str]) -> Iterator[tuple[int, Parsed]]:
    """The rows after the header row (the field names), numbered by the line they start on.

    Empty cells are left out; ``vocal_start`` and ``vocal_end`` are read as numbers.
    """
    rows = _rows(lines)
    header = next(rows, None)
    if header is None:
        return
    names = [name.strip() for name in header[1]]
    for number, cells in rows:
        yield number, _parse_row(names, cells)


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(lines, strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield start, [f"\0{error}"]
        else:
            if any(cell.strip() for cell in cells):
                yield start, cells
        start = reader.line_num + 1


def _parse_row(names: list[str], cells: list[str]) -> Parsed:
    if len(cells) == 1 and cells[0].startswith("\0"):
        return _invalid(f"is not valid CSV: {cells[0][1:]}")
    if len(cells) != len(names):
        return _invalid(f"has {len(cells)} cells, the header row has {len(names)}")
    fields: dict[str, object] = {}
    for name, cell in zip(names, cells, strict=True):
        if not cell:
            continue
        if name in _NUMBER_FIELDS:
            try:
                fields[name] = _number(cell)
            except ValueError:
                return RequestValidationError(name, f"is not a number: {cell!r}")
        else:
            fields[name] = cell
    try:
        return PersonaRequest.from_dict(fields)
    except RequestValidationError as error:
        return error


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def count_lines(lines: Iterable[bytes] | Iterable[str], form: Format) -> Iterator[int]:
    """The numbers of the lines :func:`parse_jsonl` or :func:`parse_csv` would yield, cheaply."""
    if form == "csv":
        rows = _rows(lines)  # type: ignore[arg-type]  # text when csv
        next(rows, None)
        return (number for number, _ in rows)
    return (number for number, _ in _numbered(lines))  # type: ignore[arg-type]  # bytes


def record(
    number: int, outcome: Persona | SunoPersonaError, redact: Callable[[str], str]
) -> Record:
    """The output record of line ``number``: its persona id, or its error."""
    if isinstance(outcome, Persona):
        return {"line": number, "persona_id": outcome.persona_id}
    code = outcome.code if isinstance(outcome, APIError) else None
    error = {"type": type(outcome).__name__, "code": code, "message": redact(outcome.message)}
    return {"line": number, "error": error}


def dumps(item: Record) -> str:
    """One record as a line of JSON, with its newline."""
    return json.dumps(item) + "\n"


def parse_record(raw: bytes) -> Record | None:
    """A line of an earlier run's output as a record, or ``None`` when it is not one."""
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(item, dict):
        return None
    number = item.get("line")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return None
    persona_id = item.get("persona_id")
    if isinstance(persona_id, str) and persona_id:
        return {"line": number, "persona_id": persona_id}
    error = item.get("error")
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        return {"line": number, "error": error}
    return None


class Finished:
    """The line numbers that have a persona, one bit each (10 million lines: 1.2 MiB)."""

    __slots__ = ("_bits", "count")

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, number: int) -> None:
        """Mark line ``number`` (>= 1) as finished."""
        byte, bit = divmod(number, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        byte, bit = divmod(number, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


class NotABatchFile(Exception):  # noqa: N818 - a condition, not a bug
    """A line of an existing output is not a record: the file is not ours to append to."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position


def scan_records(lines: Iterable[bytes]) -> tuple[Finished, int, int]:
    """Read an earlier run's output, once: the finished lines, its useful size, its size.

    The useful size ends after the last complete line: a last line without its newline is a
    write cut short, to be cut off before appending.

    Raises:
        NotABatchFile: A complete line is not a record.
    """
    finished = Finished()
    size = useful = 0
    for position, raw in enumerate(lines, start=1):
        size += len(raw)
        if not raw.endswith(b"\n"):
            break
        useful = size
        if not raw.strip():
            continue
        item = parse_record(raw)
        if item is None:
            raise NotABatchFile(position)
        if "persona_id" in item:
            finished.add(item["line"])
    return finished, useful, size
