"""The emulator's music tasks: their lifecycle on its clock, their TaskInfo answer, the check.

Pure over plain values (``now`` is the emulator's clock, ``epoch`` what it maps to in
seconds since the epoch), so the emulator decides every answer synchronously.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from suno_persona import PersonaRequest

__all__ = ["EmulatedTask"]

_MODEL_VERSION = "sunov5"
_MODEL_NAME = "chirp-crow"


@attrs.frozen(kw_only=True)
class EmulatedTask:
    """A music task of the emulator: ``pending``, then ``running``, then done.

    Attributes:
        task_id: Its id.
        songs: Each song's ``suno_id`` and duration in seconds (``None``: not reported).
        added_at: When it was added, on the emulator's clock.
        epoch: ``added_at`` in seconds since the epoch (its ``create_at``).
        pending: Seconds it stays ``pending``.
        running: Seconds it then stays ``running``.
        error: ``(code, message)`` of its failure; ``None``: it succeeds.
    """

    task_id: str
    songs: Mapping[str, float | None]
    added_at: float
    epoch: float
    pending: float = 0.0
    running: float = 0.0
    error: tuple[int, str] | None = None

    def status(self, now: float) -> str:
        """``"pending"``, ``"running"``, ``"success"`` or ``"failed"`` at ``now``."""
        age = now - self.added_at
        if age < self.pending:
            return "pending"
        if age < self.pending + self.running:
            return "running"
        return "failed" if self.error is not None else "success"

    def info(self, now: float) -> dict[str, Any]:
        """The ``data`` of the TaskInfo answer at ``now``, shaped as the provider documents."""
        status = self.status(now)
        done = status in ("success", "failed")
        result: dict[str, Any] | None = None
        if status == "success":
            result = {
                "suno_data": [self._song(i, s, d) for i, (s, d) in enumerate(self.songs.items())]
            }
        elif status == "failed" and self.error is not None:
            result = {"code": self.error[0], "message": self.error[1]}
        return {
            "task_id": self.task_id,
            "provider": "Suno",
            "model_version": _MODEL_VERSION,
            "status": status,
            "param": {"model": "suno/music-generate", "callback_url": None},
            "create_at": math.floor(self.epoch),
            "result": result,
            "duration_s": self.pending + self.running if done else None,
            "complete_at": math.floor(self.epoch + self.pending + self.running) if done else None,
            "source": "api",
        }

    def _song(self, index: int, suno_id: str, duration: float | None) -> dict[str, Any]:
        song: dict[str, Any] = {
            "suno_id": suno_id,
            "title": f"Emulated song {index + 1}",
            "suno_audio_url": f"https://cdn.example/{suno_id}.mp3",
            "suno_image_url": f"https://cdn.example/{suno_id}.jpeg",
            "model_name": _MODEL_NAME,
        }
        if duration is not None:
            song["duration"] = duration
        return song

    def refusal(self, request: PersonaRequest, now: float) -> str | None:
        """Why a persona cannot be made from ``request`` at ``now`` (422), or ``None``."""
        status = self.status(now)
        if status != "success":
            return f"task_id: the task is {status}, not finished successfully"
        if request.suno_id not in self.songs:
            return "suno_id: not a song of the task"
        duration = self.songs[request.suno_id]
        end = request.vocal_end if request.vocal_end is not None else request.vocal_start
        if duration is not None and end is not None and end > duration:
            return f"vocal_end: past the end of the song ({duration:g} s)"
        return None
