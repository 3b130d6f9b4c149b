"""An emulator serving from an event loop in a thread of its own, for tests of sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from suno_persona.testing import PersonaEmulator


class ThreadedEmulator:
    """A :class:`PersonaEmulator` serving from its own loop thread; ``do`` runs code there."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator = PersonaEmulator(**options)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.do(self.emulator.start)

    def do(self, function: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = function()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    @property
    def base_url(self) -> str:
        return self.emulator.base_url

    def codes(self) -> list[int]:
        return self.do(lambda: [r.code for r in self.emulator.requests])

    def stop(self) -> None:
        self.do(self.emulator.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
