"""The throttle script's call, as typed values: what goes into ``ARGV``, what comes back.

The script (``_throttle.lua``) takes its keys and a flat list of strings, and answers a flat
list of strings; this module is the one place that knows their layout. It performs no I/O:

* :class:`Request` is one call (a send's admission, or a flush of the queued answers) and
  :meth:`Request.encode` is its ``ARGV``, in the order the script reads it.
* :meth:`Reply.decode` reads the script's answer into a :class:`Reply`, bounding every delay
  in it (at least 0; a pause or a wait for the maintenance probe at most ``max_pause``): the
  script already bounds what other hosts' clocks wrote (see "Clocks" in docs/scaling.md),
  and a reply is not trusted to do so.

======  ===================================================================================
KEYS    ``<prefix>:`` + each of :data:`PARTS`, in that order
ARGV    mode, wall time (``""``: the server's ``TIME``), max_wait, beta, window, min_rate,
        growth, probe_initial, probe_max, max_pause, probe lease (ms), process id, probe
        token, adaptive (``"1"``/``"0"``), slots given back, the rate last seen (``""``:
        none), the number of reports, then 6 per report: kind (``a``/``r``/``m``/``n``),
        seconds ago, seconds since sent, Retry-After (``""``: none), probe, probe token
reply   verdict, delay, cuts, rate (``""``: none), pause left, breaker open, next probe in,
        live processes, then 3 per event: ``rate`` old new, ``pause`` seconds code,
        ``open`` next-probe-in ``""``, ``closed`` open-for ``""``
======  ===================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Literal, cast, get_args

import attrs

from suno_persona._policy import ThrottlePolicy
from suno_persona._seam import Answer
from suno_persona.events import BreakerClosed, BreakerOpened, PauseStarted, RateChanged

__all__ = [
    "PARTS",
    "SOURCE",
    "Event",
    "Mode",
    "Params",
    "Reply",
    "Report",
    "Request",
    "Verdict",
    "keys",
]

SOURCE = resources.files("suno_persona").joinpath("_throttle.lua").read_text(encoding="utf-8")
PARTS = ("rate", "gcra", "pause", "stats", "maint", "probe", "procs")

Mode = Literal["admit", "flush"]
Verdict = Literal["go", "slot", "later", "probe", "pause", "wait", "wait_probe"]
Event = RateChanged | PauseStarted | BreakerOpened | BreakerClosed

_VERDICTS: frozenset[str] = frozenset(get_args(Verdict))
_SLOTS = frozenset({"go", "slot", "later"})  # delays of a send slot: not bounded by max_pause
_CODES = {Answer.ACCEPTED: "a", Answer.REFUSED: "r", Answer.MAINTENANCE: "m", Answer.NO_ANSWER: "n"}
_MAX_WAIT = 1e9  # a finite number for the script (Lua reads "inf" as nil)
_HEAD = 8  # the reply's fields before its events


def keys(prefix: str) -> list[str]:
    """The script's ``KEYS`` for the key prefix of one (base URL, API key)."""
    return [f"{prefix}:{part}" for part in PARTS]


@attrs.frozen
class Params:
    """The policy's numbers, as the script reads them (the same for every call of a state).

    Attributes:
        beta: The rate's cut factor.
        window: The measurement interval, in seconds.
        min_rate: The lowest rate, per second.
        growth: The rate curve's growth.
        probe_initial: Seconds before the first maintenance probe (at most ``max_pause``).
        probe_max: The longest probe interval (at most ``max_pause``).
        max_pause: The longest pause or probe wait a ``Retry-After`` may set.
        lease_ms: Milliseconds a probe holds the fleet's lease at most (at least 1).
    """

    beta: float
    window: float
    min_rate: float
    growth: float
    probe_initial: float
    probe_max: float
    max_pause: float
    lease_ms: int

    @classmethod
    def of(cls, policy: ThrottlePolicy, *, max_pause: float, probe_lease: float) -> Params:
        """The parameters of ``policy``, with ``max_pause`` and a lease of ``probe_lease`` s."""
        return cls(
            beta=policy.beta,
            window=policy.measure_interval,
            min_rate=policy.min_rate,
            growth=policy.growth,
            probe_initial=min(policy.probe_initial, max_pause),
            probe_max=min(policy.probe_max, max_pause),
            max_pause=max_pause,
            lease_ms=max(1, math.ceil(probe_lease * 1000)),
        )

    def encode(self) -> list[str]:
        """``ARGV[4]`` to ``ARGV[11]``."""
        numbers = (self.beta, self.window, self.min_rate, self.growth)
        pauses = (self.probe_initial, self.probe_max, self.max_pause)
        return [*map(repr, numbers), *map(repr, pauses), str(self.lease_ms)]


@attrs.frozen
class Report:
    """One answer queued for the next script call, its moments on the caller's clock.

    Attributes:
        answer: What the server answered.
        at: When the answer came.
        sent_at: When its request was sent.
        retry_after: The answer's ``Retry-After`` in seconds, if it had one.
        probe: Whether the request was the maintenance probe.
        token: The probe's lease token (``""`` for any other request).
    """

    answer: Answer
    at: float
    sent_at: float
    retry_after: float | None = None
    probe: bool = False
    token: str = ""

    def encode(self, now: float) -> list[str]:
        """The report's 6 strings, its moments as seconds before ``now`` (0 at least)."""
        return [
            _CODES[self.answer],
            repr(max(0.0, now - self.at)),
            repr(max(0.0, now - self.sent_at)),
            "" if self.retry_after is None else repr(self.retry_after),
            _flag(self.probe),
            self.token,
        ]


@attrs.frozen
class Request:
    """One call of the script.

    Attributes:
        mode: ``"admit"`` (decide on a send) or ``"flush"`` (only apply the reports).
        now: The caller's clock at the call: the reports' moments are sent relative to it.
        wall: The caller's wall clock, sent as the script's "now"; ``None`` for the server's
            ``TIME``.
        max_wait: The longest the caller may wait for a send slot.
        params: The policy's numbers.
        process: This process's id, counted among the live ones.
        token: The probe lease token this admission would take (``""`` for a flush).
        adaptive: Whether the rate is learned.
        given_back: Reserved slots given back unused since the last call.
        last_rate: The rate the last call returned, put back if the store lost it.
        reports: The answers queued since the last call, oldest first.
    """

    mode: Mode
    now: float
    wall: float | None
    max_wait: float
    params: Params
    process: str
    token: str = ""
    adaptive: bool = True
    given_back: int = 0
    last_rate: float | None = None
    reports: tuple[Report, ...] = ()

    def encode(self) -> list[str]:
        """The ``ARGV`` of the call."""
        argv = [
            self.mode,
            "" if self.wall is None else repr(self.wall),
            repr(min(self.max_wait, _MAX_WAIT)),
            *self.params.encode(),
            self.process,
            self.token,
            _flag(self.adaptive),
            str(self.given_back),
            "" if self.last_rate is None else repr(self.last_rate),
            str(len(self.reports)),
        ]
        for report in self.reports:
            argv += report.encode(self.now)
        return argv


@attrs.frozen
class Reply:
    """The script's answer, its delays bounded (seconds from the call).

    Attributes:
        verdict: ``"go"``, ``"slot"`` (send after ``delay``), ``"later"`` (ask again), ``"probe"``
            (send the maintenance probe), ``"pause"`` (a ``Retry-After``), ``"wait"`` or
            ``"wait_probe"`` (the maintenance breaker).
        delay: Seconds before the verdict's moment: 0 at least, and for a pause or a wait of
            the breaker ``max_pause`` at most.
        cuts: How many times the shared rate has been cut (a reserved slot's version).
        rate: The shared rate, per second; ``None`` when none is learned.
        pause: Seconds left of the shared pause (0 to ``max_pause``).
        breaker_open: Whether the maintenance breaker is open.
        next_probe: Seconds before the next maintenance probe (0 to ``max_pause``).
        live: The processes that called lately (1 at least).
        events: What this call's reports caused.
    """

    verdict: Verdict
    delay: float
    cuts: int
    rate: float | None
    pause: float
    breaker_open: bool
    next_probe: float
    live: int
    events: tuple[Event, ...] = ()

    @classmethod
    def decode(cls, items: Sequence[object], *, max_pause: float) -> Reply:
        """The reply of the script, from what redis-py returned (``bytes`` or ``str`` items).

        Raises:
            ValueError: The reply is not of the script's layout.
        """
        if isinstance(items, (str, bytes)) or len(items) < _HEAD:
            raise ValueError(f"the script's reply has fewer than {_HEAD} items: {items!r}")
        text = [item.decode() if isinstance(item, bytes) else str(item) for item in items]
        verdict = text[0]
        if verdict not in _VERDICTS:
            raise ValueError(f"the script's verdict {verdict!r} is not one of {sorted(_VERDICTS)}")
        return cls(
            verdict=cast("Verdict", verdict),
            delay=_seconds(text[1], math.inf if verdict in _SLOTS else max_pause),
            cuts=int(text[2]),
            rate=float(text[3]) if text[3] else None,
            pause=_seconds(text[4], max_pause),
            breaker_open=text[5] == "1",
            next_probe=_seconds(text[6], max_pause),
            live=max(1, int(text[7])),
            events=tuple(_events(text[_HEAD:])),
        )


def _events(flat: list[str]) -> list[Event]:
    events: list[Event] = []
    for index in range(0, len(flat) - 2, 3):
        kind, first, second = flat[index : index + 3]
        if kind == "rate":
            old = float(first) if first else None
            events.append(RateChanged(old=old, new=float(second), reason="429s"))
        elif kind == "pause":
            events.append(PauseStarted(seconds=float(first), code=int(second)))
        elif kind == "open":
            events.append(BreakerOpened(next_probe_in=float(first)))
        else:
            events.append(BreakerClosed(open_for=float(first)))
    return events


def _seconds(text: str, most: float) -> float:
    """A delay of the script's reply, read as a number of seconds from 0 to ``most``."""
    seconds = float(text)
    return min(seconds, most) if seconds > 0 else 0.0


def _flag(value: bool) -> str:
    return "1" if value else "0"
