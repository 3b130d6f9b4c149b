"""The seam between the gate and the state it asks: the questions, and the answers' values.

:class:`ThrottleState` is what every send of one key asks, :meth:`~ThrottleState.admit` (for
a remote store, one round trip), and what every answer is told to,
:meth:`~ThrottleState.report` (which may be buffered). :class:`Answer` is how the API
answered, as far as the throttle cares, and :class:`Decision` what the state says to one
send. ``_state.LocalState`` keeps the state in this process; ``_redis_state.RedisState``
shares it among processes.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from suno_persona._quota import Quota

__all__ = ["GO", "Answer", "Decision", "ThrottleState"]


class Answer(enum.Enum):
    """How the API answered one request, as far as the throttle cares."""

    ACCEPTED = "accepted"
    """Processed: any answer but 429 and 455."""
    REFUSED = "refused"
    """429: rate limited, not processed."""
    MAINTENANCE = "maintenance"
    """455: under maintenance, not processed."""
    NO_ANSWER = "no answer"
    """No usable answer: the connection failed or broke, or the call was abandoned."""


@attrs.frozen
class Decision:
    """What the shared state says to one send.

    Attributes:
        at: When to send (or to ask again); ``<= now`` means at once.
        go: Send at ``at``; otherwise wait until then and ask again.
        probe: This send is a probe (of a maintenance, or of a spent window): report it.
        wait_probe: Also wake when a probe's answer arrives.
        reserved: The send slot at ``at`` is this caller's (the state's reservation token).
        reason: What the caller waits for, in words.
    """

    at: float
    go: bool
    probe: bool = False
    wait_probe: bool = False
    reserved: int | None = None
    reason: str = ""


GO = Decision(0.0, go=True)


class ThrottleState(Protocol):
    """The state all senders of one key share: breaker, pause, learned limit."""

    @property
    def live(self) -> int:
        """How many processes share this state, as last seen (1 for this process alone)."""

    def rate(self, now: float) -> float | None:
        """The send rate in force at ``now``, ``None`` while unlimited."""

    def register(self) -> None:
        """Count this process among the live ones now, without waiting (the client opened)."""

    def blocked_until(self) -> float:
        """Until when no send may go (a pause, the next probe), as known."""

    async def admit(self, now: float, max_wait: float, reserved: int | None) -> Decision:
        """Decide about one send at ``now`` by a caller that may wait ``max_wait`` seconds.

        ``reserved`` is the token of a send slot the caller already holds (from an earlier
        decision it waited for): such a caller is checked against the breaker and the pause
        only, unless the pace was lowered since.
        """

    def report(
        self,
        answer: Answer,
        retry_after: float | None,
        *,
        now: float,
        sent_at: float,
        probe: bool,
        in_flight: int = 1,
        seq: int = 0,
        quota: Quota | None = None,
    ) -> bool:
        """Note how the API answered a send; ``True`` when waiters should look again.

        ``in_flight`` counts the requests in flight when it was sent (itself included),
        ``seq`` is its number among the sends of this state.
        """

    def release(self, decision: Decision, now: float) -> bool:
        """A send that was decided will not happen; ``True`` when waiters should look again."""
