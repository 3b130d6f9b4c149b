"""Running one coroutine function over many inputs, a bounded number at a time.

The inputs are pulled lazily, from any iterable or async iterable, by ``concurrency``
workers: a worker takes the next item only when it is free and fewer than
``2 * concurrency`` items are taken and not yet received by the consumer. So memory depends
on the concurrency, not on the size of the input, and nothing is kept per finished item.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from types import TracebackType
from typing import Final, Generic, TypeVar

__all__ = ["Completions", "as_completed", "check_concurrency", "check_source", "gather_in_order"]

T = TypeVar("T")
R = TypeVar("R")

Source = Iterable[T] | AsyncIterable[T]


class _End:
    """The end of the input; also what the last worker queues when it stops."""


_END: Final = _End()


def check_concurrency(concurrency: int) -> None:
    """Refuse a concurrency that is not a positive int."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")


def check_source(items: object, name: str, what: str) -> None:
    """Refuse what is not an iterable or async iterable of items, naming the parameter.

    A mapping, a str and bytes are iterable, but of keys and characters: always a mistake.
    """
    if isinstance(items, Mapping | str | bytes | bytearray):
        raise TypeError(
            f"{name} must be an iterable of {what}, not a {type(items).__name__} "
            f"(for a single one, pass [{name[:-1]}])"
        )
    if not isinstance(items, Iterable | AsyncIterable):
        raise TypeError(
            f"{name} must be an iterable or async iterable of {what}, not {type(items).__name__}"
        )


async def gather_in_order(
    work: Callable[[T], Awaitable[R]], items: Source[T], concurrency: int
) -> list[R]:
    """Return ``[await work(item) for item in items]``, running ``concurrency`` at a time.

    Every result is kept for the list, so there is nothing to hold back: the workers take
    items as fast as they are free and put each result in its place themselves, with no
    consumer in between. ``work`` must not raise for an item's own failure; an exception
    it does raise, or one raised by the input iterator, cancels the work in flight and is
    then raised here.
    """
    check_concurrency(concurrency)
    source = _Source(items)
    results: list[R | None] = [None] * len(items) if isinstance(items, Sized) else []

    async def worker() -> None:
        pull_now = source.pull_now  # a plain iterable needs no await per item
        try:
            while (taken := pull_now() if pull_now else await source.next()) is not None:
                index, item = taken
                result = await work(item)
                if index >= len(results):
                    results.extend([None] * (index + 1 - len(results)))
                results[index] = result
        except BaseException:
            source.ended = True
            raise

    workers = [asyncio.ensure_future(worker()) for _ in range(_workers(items, concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    del results[source.taken :]
    return results  # type: ignore[return-value]  # every index taken was filled once


def _workers(items: Source[T], concurrency: int) -> int:
    """How many workers ``items`` needs: ``concurrency``, or fewer for a short sized input."""
    return min(concurrency, len(items)) if isinstance(items, Sized) else concurrency


class _Source(Generic[T]):
    """The shared input of the workers: the next item, until the end or a failure.

    Pulls never overlap on an async iterator (an async generator refuses that), and once
    the input has ended or failed it is not pulled again.
    """

    def __init__(self, items: Source[T]) -> None:
        self.ended = False
        self.taken = 0
        self._lock = asyncio.Lock()
        self._async: AsyncIterator[T] | None = None
        self._sync: Iterator[T] | None = None
        self.pull_now: Callable[[], tuple[int, T] | None] | None = None
        """:meth:`next` without awaiting, for a plain iterable; ``None`` for an async one."""
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = iter(items)
            self.pull_now = self._pull_now

    def _pull_now(self) -> tuple[int, T] | None:
        assert self._sync is not None  # noqa: S101 - set with pull_now
        return self._take(next(self._sync, _END))

    async def next(self) -> tuple[int, T] | None:
        """The next ``(index, item)``, or ``None`` when there is none (any more)."""
        if self._sync is not None:
            return self._pull_now()
        async with self._lock:
            if self.ended:
                return None
            assert self._async is not None  # noqa: S101 - one of the two is set
            return self._take(await anext(self._async, _END))

    def _take(self, item: T | _End) -> tuple[int, T] | None:
        if self.ended or isinstance(item, _End):
            self.ended = True
            return None
        index = self.taken
        self.taken += 1
        return index, item


class _Pool(Generic[T, R]):
    """The workers' shared state: the input, the finished results, the room left ahead."""

    def __init__(
        self, work: Callable[[T], Awaitable[R]], items: Source[T], concurrency: int
    ) -> None:
        self.work = work
        self.source = _Source(items)
        self.finished: asyncio.Queue[tuple[int, R] | BaseException | _End] = asyncio.Queue()
        self.room = asyncio.Semaphore(2 * concurrency)
        self.left = _workers(items, concurrency)

    async def worker(self) -> None:
        """Take items while there are some and room ahead; queue each result, or a failure."""
        try:
            while True:
                await self.room.acquire()
                taken = await self.source.next()
                if taken is None:
                    break
                index, item = taken
                self.finished.put_nowait((index, await self.work(item)))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            self.source.ended = True
            self.finished.put_nowait(error)
            return
        self.left -= 1
        if self.left == 0:
            self.finished.put_nowait(_END)


async def as_completed(
    work: Callable[[T], Awaitable[R]], items: Source[T], concurrency: int
) -> AsyncGenerator[tuple[int, R], None]:
    """Yield ``(index, await work(item))`` as each finishes, every index once.

    ``items`` may be any iterable or async iterable; it is pulled lazily, never more than
    ``2 * concurrency`` items ahead of what has been yielded. ``concurrency`` workers share
    it, so no more than that many calls run at once and no task is made per item. Leaving
    the loop early cancels the workers and waits for them. ``work`` must not raise for an
    item's own failure (it returns it instead); an exception it does raise, or one raised
    by the input iterator, cancels the work in flight and is then raised here.
    """
    check_concurrency(concurrency)
    pool = _Pool(work, items, concurrency)
    if pool.left == 0:
        return
    workers = [asyncio.ensure_future(pool.worker()) for _ in range(pool.left)]
    try:
        while True:
            outcome = await pool.finished.get()
            pool.room.release()
            if isinstance(outcome, _End):
                return
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
