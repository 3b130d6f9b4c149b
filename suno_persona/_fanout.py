"""Running one coroutine function over many inputs, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Completions", "as_completed", "check_concurrency", "gather_in_order"]

T = TypeVar("T")
R = TypeVar("R")


def check_concurrency(concurrency: int) -> None:
    """Refuse a concurrency that is not a positive int."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")


async def gather_in_order(
    work: Callable[[T], Awaitable[R]], items: Sequence[T], concurrency: int
) -> list[R]:
    """Return ``[await work(item) for item in items]``, running ``concurrency`` at a time."""
    results = {index: result async for index, result in as_completed(work, items, concurrency)}
    return [results[i] for i in range(len(items))]


async def as_completed(
    work: Callable[[T], Awaitable[R]], items: Sequence[T], concurrency: int
) -> AsyncGenerator[tuple[int, R], None]:
    """Yield ``(index, await work(items[index]))`` as each finishes, every index once.

    ``concurrency`` workers take the indices in order from one shared iterator, so no
    more than that many calls run at once and no task is made per item. Leaving the loop
    early cancels the workers and waits for them. ``work`` must not raise for an item's
    own failure (it returns it instead); an exception it does raise cancels the rest and
    propagates.
    """
    check_concurrency(concurrency)
    finished: asyncio.Queue[tuple[int, R] | BaseException] = asyncio.Queue()
    indices = iter(range(len(items)))

    async def worker() -> None:
        try:
            for index in indices:
                finished.put_nowait((index, await work(items[index])))
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            finished.put_nowait(error)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(items)))]
    try:
        for _ in range(len(items)):
            outcome = await finished.get()
            if isinstance(outcome, BaseException):
                raise outcome
            yield outcome
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


class Completions(Generic[R]):
    """An async iterator of ``(index, result)`` that is also an async context manager.

    ``async with client.generate_as_completed(...) as results:`` stops the outstanding
    work as soon as the block is left, ``break`` included; :meth:`aclose` does the same.
    """

    __slots__ = ("_results",)

    def __init__(self, results: AsyncGenerator[tuple[int, R], None]) -> None:
        self._results = results

    def __aiter__(self) -> Completions[R]:
        return self

    async def __anext__(self) -> tuple[int, R]:
        return await self._results.__anext__()

    async def aclose(self) -> None:
        """Cancel the work still outstanding and wait until it has stopped."""
        await self._results.aclose()

    async def __aenter__(self) -> Completions[R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
