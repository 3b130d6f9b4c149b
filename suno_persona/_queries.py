"""The wire format of the GET endpoints, as pure functions: the task query and the balance.

``task_query`` and ``balance_query`` say what to send; ``parse_task`` and ``parse_balance``
turn what came back, ``(status, headers, body)``, into a :class:`SunoTask` or a balance, or
raise the right error (through :func:`~suno_persona._protocol.envelope_data`, as for the
persona endpoint). Unknown fields are kept in ``raw``, never an error; an answer without
the fields the result needs is an :class:`InvalidResponseError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from suno_persona._errors import InvalidResponseError, RequestValidationError
from suno_persona._protocol import PreparedRequest, envelope_data, request_headers
from suno_persona._task import Song, SunoTask, TaskStatus

__all__ = [
    "BALANCE_PATH",
    "TASK_PATH",
    "balance_query",
    "check_task_id",
    "parse_balance",
    "parse_task",
    "task_query",
]

TASK_PATH = "/api/v1/client/job/TaskInfo"
BALANCE_PATH = "/api/v1/client/account/balance"
_STATUSES = {status.value: status for status in TaskStatus if status is not TaskStatus.UNKNOWN}


def check_task_id(task_id: object) -> str:
    """``task_id`` if it is a non-blank string, else :class:`RequestValidationError`."""
    if not isinstance(task_id, str):
        raise RequestValidationError("task_id", f"must be a string, not {type(task_id).__name__}")
    if not task_id.strip():
        raise RequestValidationError("task_id", "must not be empty or blank")
    return task_id


def task_query(task_id: str, *, api_key: str | None) -> PreparedRequest:
    """``GET TaskInfo?task_id=...`` (the id percent-encoded); headers as in ``build_request``."""
    headers = None if api_key is None else request_headers(api_key)
    path = f"{TASK_PATH}?task_id={quote(check_task_id(task_id), safe='')}"
    return PreparedRequest("GET", path, headers, None)


def balance_query(*, api_key: str | None) -> PreparedRequest:
    """``GET balance``; headers as in ``build_request``."""
    headers = None if api_key is None else request_headers(api_key)
    return PreparedRequest("GET", BALANCE_PATH, headers, None)


def parse_balance(status: int, headers: Mapping[str, str], body: bytes, *, now: float) -> float:
    """The account's credit balance (``data.balance``), or the error the reply stands for."""
    data = envelope_data(status, headers, body, now=now)
    balance = data.get("balance") if isinstance(data, dict) else None
    number = _number(balance)
    if number is None:
        raise InvalidResponseError(
            "success reply without a finite number data.balance", http_status=status
        )
    return number


def parse_task(status: int, headers: Mapping[str, str], body: bytes, *, now: float) -> SunoTask:
    """The task the reply describes, or the error it stands for.

    Raises:
        APIError: The API answered with an error code.
        InvalidResponseError: The success reply has no ``data`` object with a string
            ``task_id`` and ``status``, or a successful task's ``result.suno_data`` is not a
            list of songs, each with a string ``suno_id``.
    """
    data = envelope_data(status, headers, body, now=now)
    if not isinstance(data, dict):
        raise InvalidResponseError("success reply without a data object", http_status=status)
    task_id = data.get("task_id")
    said = data.get("status")
    if not isinstance(task_id, str) or not task_id or not isinstance(said, str):
        raise InvalidResponseError(
            "task reply without a string data.task_id and data.status", http_status=status
        )
    state = _STATUSES.get(said, TaskStatus.UNKNOWN)
    result = data.get("result")
    songs: tuple[Song, ...] = ()
    error_code = error_message = None
    if state is TaskStatus.SUCCESS:
        songs = _songs(result, status)
    elif state is TaskStatus.FAILED and isinstance(result, dict):
        error_code = _code(result.get("code"))
        error_message = _text(result.get("message"))
    return SunoTask(
        task_id=task_id,
        status=state,
        songs=songs,
        model_version=_text(data.get("model_version")),
        created_at=_number(data.get("create_at")),
        completed_at=_number(data.get("complete_at")),
        error_code=error_code,
        error_message=error_message,
        raw=data,
    )


def _songs(result: object, status: int) -> tuple[Song, ...]:
    items = result.get("suno_data") if isinstance(result, dict) else None
    if not isinstance(items, list):
        raise InvalidResponseError(
            "a successful task's reply without a list result.suno_data", http_status=status
        )
    songs = []
    for item in items:
        suno_id = item.get("suno_id") if isinstance(item, dict) else None
        if not isinstance(suno_id, str) or not suno_id:
            raise InvalidResponseError(
                "an item of result.suno_data without a string suno_id", http_status=status
            )
        songs.append(_song(suno_id, item))
    return tuple(songs)


def _song(suno_id: str, item: dict[str, Any]) -> Song:
    duration = _number(item.get("duration"))
    return Song(
        suno_id=suno_id,
        title=_text(item.get("title")),
        duration=duration if duration is not None and duration >= 0 else None,
        audio_url=_text(item.get("suno_audio_url", item.get("audio_url"))),
        image_url=_text(item.get("suno_image_url", item.get("image_url"))),
        model_name=_text(item.get("model_name")),
        raw=item,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
