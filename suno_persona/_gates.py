"""The client's gates: the persona endpoint's throttle, the GETs' gate beside it, the budget.

The one place that builds them, so that how the two resources share the client's places in
flight and maintenance breaker, while each learns its own rate, is decided here only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from suno_persona import _store
from suno_persona._policy import ThrottlePolicy, local_state
from suno_persona._retry import RetryBudget
from suno_persona._state import LocalState
from suno_persona._throttle import Throttle

if TYPE_CHECKING:
    from suno_persona.redis import RedisThrottleStore

__all__ = ["Gates", "build_gates", "resource_gate"]

Gates = tuple[Throttle, Throttle, RetryBudget | None]
"""The persona endpoint's throttle, the GETs' gate, and the retry budget."""


def build_gates(
    policy: ThrottlePolicy | None,
    store: str | RedisThrottleStore | None,
    *,
    max_concurrency: int | None,
    max_pause: float,
    probe_lease: float,
    base_url: str,
    api_key: str,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    emit: Callable[[object], None],
) -> Gates:
    """The gates of one client (see the module docstring)."""
    throttle = Throttle(
        policy,
        max_concurrency=max_concurrency,
        max_pause=max_pause,
        clock=clock,
        sleep=sleep,
        emit=emit,
        state=_store.build_state(
            store,
            policy,
            base_url=base_url,
            api_key=api_key,
            max_pause=max_pause,
            probe_lease=probe_lease,
            clock=clock,
            emit=emit,
        ),
    )
    gets = resource_gate(throttle, policy, max_pause=max_pause, clock=clock, sleep=sleep, emit=emit)
    budget = (
        RetryBudget(
            capacity=policy.retry_budget,
            cost=policy.retry_cost,
            timeout_cost=policy.timeout_retry_cost,
            refund=policy.success_refund,
        )
        if policy is not None and policy.retry_budget > 0
        else None
    )
    return throttle, gets, budget


def resource_gate(
    primary: Throttle,
    policy: ThrottlePolicy | None,
    *,
    max_pause: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    emit: Callable[[object], None],
) -> Throttle:
    """The gate of another resource of the API (the GETs), beside the ``primary`` one.

    It takes its places in flight from ``primary`` (one connection pool, one cap) and shares
    its maintenance breaker (a 455 means the whole service is down), but learns its own rate
    and honours its own ``Retry-After`` pauses: the API limits each resource on its own.
    With a shared store the primary's breaker lives there; this gate then keeps its own.
    """
    state = None
    if policy is not None:
        local = primary.state if isinstance(primary.state, LocalState) else None
        state = local_state(policy, max_pause=max_pause, emit=emit, breaker_of=local)
    return Throttle(
        policy,
        max_concurrency=None,
        max_pause=max_pause,
        clock=clock,
        sleep=sleep,
        emit=emit,
        state=state,
        in_flight_of=primary,
    )
