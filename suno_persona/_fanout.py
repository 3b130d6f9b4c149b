"""Running one coroutine function over many inputs, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["as_completed", "gather_in_order"]

T = TypeVar("T")
R = TypeVar("R")


def _check(concurrency: int) -> None:
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
) -> AsyncIterator[tuple[int, R]]:
    """Yield ``(index, await work(items[index]))`` as each finishes, every index once.

    At most ``concurrency`` calls run at once: a new one starts only when one ends, so no
    more tasks exist than that. Leaving the loop early cancels and awaits those still
    running. ``work`` must not raise for an item's own failure (it returns it instead);
    an exception it does raise cancels the rest and propagates.
    """
    _check(concurrency)

    async def run(index: int) -> tuple[int, R]:
        return index, await work(items[index])

    pending: set[asyncio.Task[tuple[int, R]]] = set()
    upcoming = iter(range(len(items)))
    try:
        for index in upcoming:
            pending.add(asyncio.ensure_future(run(index)))
            if len(pending) >= concurrency:
                break
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index, result = task.result()
                next_index = next(upcoming, None)
                if next_index is not None:
                    pending.add(asyncio.ensure_future(run(next_index)))
                yield index, result
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
