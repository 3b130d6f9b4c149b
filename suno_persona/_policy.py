"""How the calls of one client cooperate: the throttle's settings.

:class:`ThrottlePolicy` is the value a user passes as ``throttle=``; :func:`local_state` builds
the in-process shared state (:class:`~suno_persona._state.LocalState`) that a policy describes.
The gate (``_throttle``) and a shared store (``_redis_state``) read the same policy.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from suno_persona import _validators as check
from suno_persona._state import LocalState

__all__ = ["ThrottlePolicy", "local_state"]


@attrs.frozen(kw_only=True)
class ThrottlePolicy:
    """How the calls of one client cooperate. ``throttle=None`` on the client turns it off.

    Attributes:
        adaptive_rate: Learn the API's limit from 429s (a pace, or a cap on requests in
            flight); ``False`` keeps the breaker, the pauses and announced quotas only.
        initial_window: Requests in flight at first, while the API's limit is unknown;
            ``None`` turns the start-up ramp off.
        max_window: The ramp ends when this many requests are in flight with no limit found.
        beta: A cut of the shared store's learned rate keeps this share of the accepted rate
            (the store's own learner; the process's model does not cut).
        measure_interval: Seconds over which answers are judged: a test of the 429s lasts
            at least a quarter of it, the pace probes above its estimate once per cycle of
            quarter intervals.
        min_rate: Floor of the learned pace, in requests per second.
        growth: How fast the shared store's learned rate grows back after a cut.
        probe_initial: Seconds from the first 455 to the first maintenance probe.
        probe_max: Longest interval between maintenance probes.
        retry_budget: Tokens in the retry budget; ``0`` turns the budget off.
        retry_cost: Tokens a retry after a 500 or an unsent connection failure spends
            (retries after 429 and 455 are paced by the gate and cost nothing).
        timeout_retry_cost: Tokens a retry after a timeout or broken connection spends.
        success_refund: Tokens a success earns back.
    """

    adaptive_rate: bool = attrs.field(default=True, validator=check.boolean)
    initial_window: int | None = attrs.field(default=4, validator=check.optional(check.count(1)))
    max_window: int = attrs.field(default=64, validator=check.count(1))
    beta: float = attrs.field(default=0.85, validator=check.fraction)
    measure_interval: float = attrs.field(default=1.0, validator=check.positive)
    min_rate: float = attrs.field(default=1.0, validator=check.positive)
    growth: float = attrs.field(default=0.4, validator=check.positive)
    probe_initial: float = attrs.field(default=0.25, validator=check.non_negative)
    probe_max: float = attrs.field(default=1.0, validator=check.non_negative)
    retry_budget: int = attrs.field(default=500, validator=check.count(0))
    retry_cost: int = attrs.field(default=5, validator=check.count(0))
    timeout_retry_cost: int = attrs.field(default=10, validator=check.count(0))
    success_refund: int = attrs.field(default=1, validator=check.count(0))

    def __attrs_post_init__(self) -> None:
        if self.initial_window is not None and self.initial_window > self.max_window:
            raise ValueError(
                f"initial_window ({self.initial_window}) must not exceed "
                f"max_window ({self.max_window})"
            )
        if self.probe_initial > self.probe_max:
            raise ValueError(
                f"probe_initial ({self.probe_initial}) must not exceed probe_max ({self.probe_max})"
            )


def local_state(
    policy: ThrottlePolicy,
    *,
    max_pause: float,
    emit: Callable[[object], None],
    breaker_of: LocalState | None = None,
) -> LocalState:
    """The in-process :class:`LocalState` that ``policy`` describes."""
    return LocalState(
        breaker_of=breaker_of,
        interval=policy.measure_interval,
        min_rate=policy.min_rate,
        adaptive=policy.adaptive_rate,
        probe_initial=policy.probe_initial,
        probe_max=policy.probe_max,
        max_pause=max_pause,
        emit=emit,
    )
