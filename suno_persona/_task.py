"""Value objects of the task query: the music task a persona comes from, and its songs.

:func:`check_request` is the check a persona request passes against its task before it is
sent (``wait_for_task``): pure, like the request's own validators.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from suno_persona._errors import RequestValidationError
from suno_persona._models import PersonaRequest

__all__ = ["Song", "SunoTask", "TaskStatus", "check_request"]


class TaskStatus(enum.Enum):
    """Where a music task is: the provider's status enum, and ``UNKNOWN`` for any other text.

    An unknown status keeps its text in :attr:`SunoTask.raw` and counts as not finished.
    """

    PENDING = "pending"
    """Queued: keep polling."""
    RUNNING = "running"
    """Generating: keep polling."""
    SUCCESS = "success"
    """Finished: its songs are in :attr:`SunoTask.songs`."""
    FAILED = "failed"
    """Failed: :attr:`SunoTask.error_code` and :attr:`SunoTask.error_message` say why."""
    UNKNOWN = "unknown"
    """A status this version does not know; treated as not finished."""

    @property
    def finished(self) -> bool:
        """Whether the task is over (it succeeded or failed)."""
        return self is TaskStatus.SUCCESS or self is TaskStatus.FAILED


@attrs.frozen(kw_only=True)
class Song:
    """One song of a finished music task (an item of ``result.suno_data``).

    Attributes:
        suno_id: The song's id: the ``suno_id`` to make a persona from.
        title: The song's title.
        duration: Its length in seconds.
        audio_url: Where its audio is.
        image_url: Where its cover image is.
        model_name: The Suno model that made it, e.g. ``"chirp-crow"``.
        raw: The item as received, unknown fields included.
    """

    suno_id: str
    title: str | None = None
    duration: float | None = None
    audio_url: str | None = None
    image_url: str | None = None
    model_name: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class SunoTask:
    """A music task, as the task query answered.

    Attributes:
        task_id: The task's id.
        status: Where the task is (:class:`TaskStatus`).
        songs: Its songs (from ``result.suno_data``); empty unless it succeeded.
        model_version: The model version, e.g. ``"sunov5"``.
        created_at: When it was created, in seconds since the epoch.
        completed_at: When it finished, in seconds since the epoch.
        error_code: The code of a failed task's result.
        error_message: The message of a failed task's result.
        raw: The ``data`` object as received (an unknown status keeps its text here).
    """

    task_id: str
    status: TaskStatus
    songs: tuple[Song, ...] = ()
    model_version: str | None = None
    created_at: float | None = None
    completed_at: float | None = None
    error_code: int | None = None
    error_message: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def song(self, suno_id: str) -> Song | None:
        """The song ``suno_id`` of this task, or ``None`` when it has none of that id."""
        for song in self.songs:
            if song.suno_id == suno_id:
                return song
        return None


def check_request(task: SunoTask, request: PersonaRequest) -> None:
    """Refuse ``request`` when its task (which succeeded) cannot make that persona.

    Raises:
        RequestValidationError: Naming ``suno_id`` when it is not one of the task's songs;
            naming ``vocal_end`` (or ``vocal_start`` when no end is given) when the vocal
            window runs past the song's duration, where that duration is known.
    """
    song = task.song(request.suno_id)
    if song is None:
        ids = ", ".join(repr(s.suno_id) for s in task.songs) or "none"
        raise RequestValidationError(
            "suno_id", f"must be a song of task {task.task_id!r} (its songs: {ids})"
        )
    duration = song.duration
    if duration is None:
        return
    if request.vocal_end is not None and request.vocal_end > duration:
        raise RequestValidationError(
            "vocal_end",
            f"must be at most the song's duration ({duration:g} s), got {request.vocal_end!r}",
        )
    if request.vocal_start is not None and request.vocal_start >= duration:
        raise RequestValidationError(
            "vocal_start",
            f"must be less than the song's duration ({duration:g} s), got {request.vocal_start!r}",
        )
