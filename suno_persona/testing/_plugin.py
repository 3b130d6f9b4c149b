"""pytest plugin: the ``persona_emulator`` and ``persona_emulator_factory`` fixtures.

Registered through the ``pytest11`` entry point, so it is loaded by every pytest run in an
environment where suno-persona is installed. The fixtures are async and run in the test's
event loop through pytest-asyncio; without pytest-asyncio the plugin still loads, and a test
that asks for one of the fixtures fails with a message saying what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from suno_persona.testing._emulator import PersonaEmulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["persona_emulator", "persona_emulator_factory"]

_NEEDS_PYTEST_ASYNCIO = (
    "the {name} fixture is async and needs pytest-asyncio: "
    "`pip install pytest-asyncio`, and mark the test with @pytest.mark.asyncio "
    "or set asyncio_mode = 'auto'"
)

try:
    import pytest_asyncio
except ImportError:
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True


if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture(name="persona_emulator")
    async def persona_emulator() -> AsyncIterator[PersonaEmulator]:
        """A running :class:`~suno_persona.testing.PersonaEmulator` with default options.

        It accepts the key ``"sk-test"``, has no rate limit and unlimited credits, and is
        stopped when the test ends. Pass ``persona_emulator.base_url`` to the client.
        """
        async with PersonaEmulator() as emulator:
            yield emulator

    @pytest_asyncio.fixture(name="persona_emulator_factory")
    async def persona_emulator_factory() -> AsyncIterator[
        Callable[..., Awaitable[PersonaEmulator]]
    ]:
        """An async callable that starts an emulator with the options given.

        ``await persona_emulator_factory(credits=1, rate_limit=2.0)`` takes the keyword
        arguments of :class:`~suno_persona.testing.PersonaEmulator` and returns it
        running; every emulator made is stopped when the test ends.
        """
        made: list[PersonaEmulator] = []

        async def make(**options: Any) -> PersonaEmulator:
            emulator = PersonaEmulator(**options)
            await emulator.start()
            made.append(emulator)
            return emulator

        try:
            yield make
        finally:
            for emulator in reversed(made):
                await emulator.stop()

else:

    @pytest.fixture(name="persona_emulator")
    def persona_emulator() -> NoReturn:
        """Unavailable: this fixture needs pytest-asyncio."""
        pytest.fail(_NEEDS_PYTEST_ASYNCIO.format(name="persona_emulator"), pytrace=False)

    @pytest.fixture(name="persona_emulator_factory")
    def persona_emulator_factory() -> NoReturn:
        """Unavailable: this fixture needs pytest-asyncio."""
        pytest.fail(_NEEDS_PYTEST_ASYNCIO.format(name="persona_emulator_factory"), pytrace=False)
