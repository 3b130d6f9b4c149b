"""What the client does, as small frozen event objects for hooks, logs, metrics and traces.

Pass callables to ``AsyncPersonaClient(event_hooks=[...])``; each is called synchronously
with every event, in the task that caused it. A hook must be quick and must not block: it
runs on the event loop, inside the call. A hook that raises is logged once and otherwise
ignored. No event ever holds the API key.

Per call, in order:

```text
CallStarted
  AttemptFinished            one per request sent (or tried)
  RetryScheduled             after a failed attempt that will be retried
  AttemptFinished ...
  RetryBudgetExhausted       instead of RetryScheduled, when the budget refuses a retry
CallFinished                 once, with the persona or the error (neither: cancelled)
```

The events of one call share its ``call_id``, unique among the calls of the process, so a
hook can tell concurrent calls apart.

What the client's shared throttle decides, as it happens: :class:`RateChanged`,
:class:`PauseStarted`, :class:`BreakerOpened`, :class:`BreakerClosed` and
:class:`RetryBudgetExhausted`. These go to the hooks of the client that owns the
throttle (the one constructed, not one made by ``with_options``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import attrs

from suno_persona._models import Persona, PersonaRequest

if TYPE_CHECKING:
    from suno_persona._errors import SunoPersonaError

__all__ = [
    "AttemptFinished",
    "BreakerClosed",
    "BreakerOpened",
    "CallFinished",
    "CallStarted",
    "Event",
    "PauseStarted",
    "RateChanged",
    "RetryBudgetExhausted",
    "RetryScheduled",
]


@attrs.frozen(kw_only=True)
class CallStarted:
    """A call (``generate_persona``, or one item of a fan-out) began.

    Attributes:
        request: The validated request.
        url: The URL the call posts to (it never holds the key).
        call_id: The call's number, shared by all its events.
    """

    request: PersonaRequest
    url: str = ""
    call_id: int = 0


@attrs.frozen(kw_only=True)
class AttemptFinished:
    """One attempt of a call ended.

    Attributes:
        request: The request of the call.
        attempt: The attempt's number, from 1.
        elapsed: Seconds the attempt took, from passing the throttle to its outcome.
        http_status: The HTTP status of the reply, ``None`` when there was none.
        error: The attempt's error, ``None`` on success.
        call_id: The call's number, shared by all its events.
    """

    request: PersonaRequest
    attempt: int
    elapsed: float
    http_status: int | None
    error: SunoPersonaError | None
    call_id: int = 0


@attrs.frozen(kw_only=True)
class RetryScheduled:
    """A failed attempt will be tried again.

    Attributes:
        request: The request of the call.
        attempt: The attempt that failed.
        delay: Seconds until the next attempt is allowed to start.
        error: Why the attempt failed.
        call_id: The call's number, shared by all its events.
    """

    request: PersonaRequest
    attempt: int
    delay: float
    error: SunoPersonaError
    call_id: int = 0


@attrs.frozen(kw_only=True)
class CallFinished:
    """A call ended, with a persona or an error; with neither when it was cancelled.

    Attributes:
        request: The request of the call.
        attempts: Requests the call sent.
        elapsed: Seconds for the whole call.
        persona: The persona, on success.
        error: The error, on failure (``None`` too when the call was cancelled).
        call_id: The call's number, shared by all its events.
    """

    request: PersonaRequest
    attempts: int
    elapsed: float
    persona: Persona | None
    error: SunoPersonaError | None
    call_id: int = 0


@attrs.frozen(kw_only=True)
class RateChanged:
    """The throttle's learned send rate changed.

    Attributes:
        old: Requests per second before (``None``: not limited).
        new: Requests per second after.
        reason: Why, in words (``"429s"``).
    """

    old: float | None
    new: float | None
    reason: str


@attrs.frozen(kw_only=True)
class PauseStarted:
    """The server asked to wait (``Retry-After``) and every call of the client pauses.

    Attributes:
        seconds: How long the pause lasts.
        code: The code that carried it (429 or 455).
    """

    seconds: float
    code: int


@attrs.frozen(kw_only=True)
class BreakerOpened:
    """A 455 opened the maintenance breaker: one probe request at a time from now on.

    Attributes:
        next_probe_in: Seconds until the first probe.
    """

    next_probe_in: float


@attrs.frozen(kw_only=True)
class BreakerClosed:
    """An answer other than 455 closed the maintenance breaker.

    Attributes:
        open_for: Seconds the breaker was open.
    """

    open_for: float


@attrs.frozen(kw_only=True)
class RetryBudgetExhausted:
    """The retry budget refused a retry: the call ends with its last error.

    Attributes:
        request: The request of the call.
        attempt: The attempt that failed.
        error: Its error.
        call_id: The call's number, shared by all its events.
    """

    request: PersonaRequest
    attempt: int
    error: SunoPersonaError
    call_id: int = 0


Event = Union[  # noqa: UP007 - a runtime alias that must work on Python 3.10
    CallStarted,
    AttemptFinished,
    RetryScheduled,
    CallFinished,
    RateChanged,
    PauseStarted,
    BreakerOpened,
    BreakerClosed,
    RetryBudgetExhausted,
]
"""Any event the client emits."""
