"""Spent windows: whether the answers say a window or quota is used up, and what it held.

Several refusals in a row and nothing accepted for a few send intervals: a window or quota
is used up (or the limiter counts its own denials, and more sends only keep it shut); a run
no longer than the 429s between acceptances make likely is chance, unless a ``Retry-After``
came with it. The state then holds every send, until the ``Retry-After`` when there is
one, else behind single probes (see ``_state``), and tells the model when the window resets
or reopens.
Either way the window's **quota** (what the API accepted since the last window was spent),
over the time it took to give it back, becomes the estimate: :meth:`Windows.until_reset`
and :meth:`Windows.reopened` read that rate; the model adopts it.

Synchronous and clock-free: every method takes ``now``.
"""

from __future__ import annotations

import math

import attrs

from suno_persona._tallies import CUT_MAX, MARGIN, Ring

__all__ = ["Quota", "Windows"]

_SPENT_IN_A_ROW = 4
_RARE = 1e-4
_BETWEEN_ANSWERS = 16  # answers between acceptances enough to read a share of 429s from
_SPENT_INTERVALS = 3  # nothing accepted for this many send intervals of the estimate


@attrs.frozen
class Quota:
    """What the API accepted since a window was last spent (or since the start).

    Attributes:
        accepted: How many requests it accepted.
        since: When the first of them was accepted (``inf``: none was).
    """

    accepted: int
    since: float


class Windows:
    """The answers since a window was last spent, and the refusals in a row.

    Args:
        interval: Seconds over which answers are judged.
        min_rate: Floor of the pace, in requests per second.
        ring: The model's answers per bucket, for the accepted rate while nothing is known.
    """

    def __init__(self, *, interval: float, min_rate: float, ring: Ring) -> None:
        self._interval = interval
        self._min_rate = min_rate
        self._ring = ring
        self._whole = True  # no burst at a reset was refused: the window may be a fixed one
        self._since_spent = 0
        self._refused_between = 0  # 429s since then that an acceptance followed
        self._open_from = math.inf  # the first accepted answer since a window was spent
        self._in_a_row = 0
        self._last_accepted = -math.inf
        self._last_refused = -math.inf

    def accepted(self, now: float) -> None:
        """The API accepted a request at ``now``."""
        self._since_spent += 1
        if self._open_from == math.inf:
            self._open_from = now
        self._refused_between += self._in_a_row
        self._in_a_row = 0
        self._last_accepted = now

    def refused(self, now: float) -> None:
        """The API refused a request (429) at ``now``."""
        self._in_a_row += 1
        self._last_refused = now

    def spent(
        self,
        now: float,
        *,
        estimate: float | None,
        noise: float,
        burst: int,
        told: bool = False,
    ) -> bool:
        """Whether a window is used up (refused in a row, nothing accepted for a while).

        ``estimate``, ``noise`` and ``burst`` are the model's: the refusals in a row must be
        more than the ``noise`` would give, and the quiet longer than a few send intervals
        of the ``estimate`` (of the accepted rate while there is none). ``told``: the latest
        429 came with a ``Retry-After``, which is taken at its word; without one, the runs
        must also be longer than the share of 429s between acceptances would give.
        """
        if self._in_a_row and now - self._last_accepted >= self._interval:
            return True  # nothing accepted for an interval: nothing says otherwise
        if burst and self._in_a_row and self._since_spent >= burst:
            return True  # a learned window's quota was taken: the refusal says it is spent
        between = self._refused_between + self._since_spent
        if not told and between >= _BETWEEN_ANSWERS:
            # With no Retry-After to go by, the 429s between acceptances say how often they
            # come whatever the window: a run no longer than that share gives is chance.
            noise = max(noise, self._refused_between / between)
        if self._in_a_row < _run_of_noise(noise):
            return False
        rate = estimate if estimate is not None else self._ring.accepted_rate(now)
        quiet = _SPENT_INTERVALS / rate if rate > 0 else 0.0
        return now - self._last_accepted >= min(quiet, self._interval)

    def take_quota(self) -> Quota:
        """The quota of the window just spent; the next one is counted afresh."""
        taken = Quota(self._since_spent, self._open_from)
        self._since_spent = 0
        self._refused_between = 0
        self._open_from = math.inf
        return taken

    def until_reset(
        self, quota: Quota, now: float, retry_after: float, *, burst: int
    ) -> tuple[float, int] | None:
        """The pace of a window spent at ``now`` that resets in ``retry_after`` seconds.

        It took from the first of the ``quota``'s acceptances to the reset to give it: the
        pace is the quota over that time (at least an interval). The quota is sent as a
        burst at the reset, then paced, when the window resets whole: after a long wait (a
        quota of minutes), or when the reset is at least as far off as the quota took to
        spend (a fixed window, or a log or denial counter that a burst filled). A window
        spent after a long spell of pacing is paced evenly, which is what sliding windows
        and limiters counting their denials need, and so is every window once a burst at a
        reset was refused (the model's ``burst`` was not taken: no window resets whole
        here). Returns the pace and the burst (0: none); ``None`` if nothing was accepted.
        """
        opened = now - quota.since if quota.since < now else 0.0
        window = max(opened + retry_after, self._interval)
        if quota.accepted <= 0:
            return None
        if burst and quota.accepted < burst / 2:
            self._whole = False  # a burst at the reset was refused: the window is no fixed one
        sudden = retry_after >= opened and self._whole
        taken = quota.accepted if retry_after >= 2 * self._interval or sudden else 0
        return max(self._min_rate, quota.accepted / window), taken

    def reopened(self, now: float, *, known: float | None) -> float | None:
        """The pace of a spent window with no ``Retry-After`` that took a request at ``now``.

        Its quota is what the API accepted from the first acceptance after the last spent
        window (or the start) until it was spent; the window is the time from that first
        acceptance to the reopening, taken halfway between the last refusal and now. A
        sliding log or a limiter counting its denials gives back its quota one window after
        it took it: knocking found when that was. A limit ``known`` before is lowered by
        half at most (a short opening says little), and never raised. ``None`` if nothing
        was accepted. The quota is taken: the next window is counted afresh.
        """
        quota = self.take_quota()
        window = (max(self._last_refused, quota.since) + now) / 2 - quota.since
        if quota.accepted <= 0 or not 0 < window < math.inf:
            return None
        rate = max(self._min_rate, quota.accepted / window)
        if known is not None:
            # No more than a halving of a limit found: a short opening says little.
            rate = min(max(rate, CUT_MAX * known), known)
        return rate


def _run_of_noise(noise: float) -> int:
    """Refusals in a row that the ``noise`` would give less than once in 10,000 sends."""
    if noise <= MARGIN:
        return _SPENT_IN_A_ROW
    return max(_SPENT_IN_A_ROW, math.ceil(math.log(_RARE) / math.log(noise)))
