"""The settings that ``with_options`` varies, and how a client with other settings is made.

A client made by ``with_options`` is a copy of its parent that shares everything but these
settings: the session, the connection pool, the cap on requests in flight, the throttle and
the retry budget. It is registered with the client that was constructed (its root), which
closes it when it closes.
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, TypeVar

from suno_persona import _config
from suno_persona._retry import RetryPolicy
from suno_persona.events import Event

__all__ = ["NO_RETRIES", "UNSET", "EventHook", "Unset", "derive", "retry_policy"]

EventHook = Callable[[Event], object]
NO_RETRIES = RetryPolicy(max_attempts=1)


class Unset(enum.Enum):
    """The default of a ``with_options`` argument: keep the parent's value."""

    UNSET = enum.auto()


UNSET: Final = Unset.UNSET
Maybe = Literal[Unset.UNSET]

C = TypeVar("C")


def retry_policy(retry: RetryPolicy | None) -> RetryPolicy:
    """The policy ``retry`` stands for, checked: ``None`` is one attempt per call."""
    _config.check_instance("retry", retry, RetryPolicy)
    return retry if retry is not None else NO_RETRIES


def varied(
    *,
    timeout: float | Maybe,
    retry: RetryPolicy | Maybe | None,
    event_hooks: Iterable[EventHook] | Maybe,
    wait_for_task: bool | float | Maybe,
    task_poll_interval: float | Maybe,
) -> dict[str, Any]:
    """The client attributes the given settings set, each checked; left-out ones are absent.

    Raises:
        ValueError: A setting has the wrong type or value; the message names it.
    """
    changes: dict[str, Any] = {}
    if timeout is not UNSET:
        changes["_timeout"] = _config.check_timeout(timeout)
    if retry is not UNSET:
        changes["_retry"] = retry_policy(retry)
    if event_hooks is not UNSET:
        changes["_hooks"] = _config.check_event_hooks(event_hooks)
    if wait_for_task is not UNSET:
        changes["_task_wait"] = _config.check_wait_for_task(wait_for_task)
    if task_poll_interval is not UNSET:
        changes["_task_poll_interval"] = _config.check_seconds(
            "task_poll_interval", task_poll_interval
        )
    return changes


def derive(parent: C, changes: dict[str, Any]) -> C:
    """A copy of ``parent`` with ``changes`` applied, sharing all else, owned by its root."""
    state = parent.__dict__
    root = state["_root"]
    child = object.__new__(type(parent))
    child.__dict__.update(state)
    child.__dict__.update(
        _session=None,
        _watcher=None,
        _user_session=root._user_session,  # noqa: SLF001 - the client's own part
        _children=weakref.WeakSet(),
        **changes,
    )
    root._children.add(child)  # noqa: SLF001 - the client's own part
    return child
