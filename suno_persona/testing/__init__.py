"""Testing kit: a local emulator of the persona endpoint, and pytest fixtures for it.

Installing suno-persona registers a pytest plugin providing the ``persona_emulator`` and
``persona_emulator_factory`` fixtures (they need pytest-asyncio). Outside pytest, use
:class:`PersonaEmulator` as an async context manager, or :func:`serve` to run one until
cancelled.
"""

from __future__ import annotations

from suno_persona.testing._answers import RecordedRequest
from suno_persona.testing._emulator import PersonaEmulator
from suno_persona.testing._serve import serve

__all__ = ["PersonaEmulator", "RecordedRequest", "serve"]
