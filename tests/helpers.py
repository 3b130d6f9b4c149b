"""What many test files share: a request's fields, keys, fast retries, a client on fake time.

Import it as the tests import ``conftest`` (pytest puts ``tests/`` on ``sys.path``)::

    from helpers import FIELDS, client_for, fast_retry

A file whose value differs on purpose keeps its own and passes it: a test that searches its
output for the key uses :data:`SECRET_KEY` (or a key of its own) as ``key=``; a file whose
retries must be faster, or fewer, builds them with :func:`fast_retry` and passes ``retry=``
(``functools.partial(client_for, retry=FAST)`` makes that the file's default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import suno_persona as sp

if TYPE_CHECKING:
    from conftest import FakeTime

__all__ = ["FAST", "FIELDS", "KEY", "SECRET_KEY", "client_for", "fast_retry", "on_fake_time"]

KEY = "sk-test"
"""The API key of a test that does not look for it anywhere (the emulator accepts any)."""

SECRET_KEY = "sk-SECRET-abc123"
"""A key distinctive enough to search for, in the tests that it appears in no output."""

FIELDS = {"task_id": "task_1", "suno_id": "suno_1", "name": "Neon Siren"}
"""The fields of a valid request (copy before changing: ``{**FIELDS, "name": ""}``)."""


def fast_retry(**overrides: Any) -> sp.RetryPolicy:
    """A :class:`RetryPolicy` backing off for milliseconds (1 ms first, 5 s at most, so a
    ``Retry-After`` of a few seconds is still honoured); ``overrides`` are its other fields,
    e.g. ``fast_retry(max_attempts=3)`` or ``fast_retry(max_delay=0.05)``."""
    return sp.RetryPolicy(**{"initial_delay": 0.001, "max_delay": 5, **overrides})


FAST = fast_retry()
"""``fast_retry()``: the retries of a test about anything but the retry policy's delays."""


def on_fake_time(client: sp.AsyncPersonaClient, fake_time: FakeTime) -> sp.AsyncPersonaClient:
    """Put ``client`` on the ``fake_time`` fixture's clock and sleep; returns the client.

    Its backoffs, throttle waits and task polls then take no time, and the clock moves
    only by what they slept (``fake_time.sleeps``).
    """
    client._clock, client._sleep = fake_time.clock, fake_time.sleep
    return client


def client_for(
    base_url: str, fake_time: FakeTime | None = None, key: str = KEY, **options: Any
) -> sp.AsyncPersonaClient:
    """An :class:`AsyncPersonaClient` of ``base_url`` with the key ``key``.

    ``options`` are the constructor's, and nothing else is changed (the retry policy is the
    library's default unless ``retry=`` is given); with ``fake_time`` the client is put
    :func:`on_fake_time`.
    """
    client = sp.AsyncPersonaClient(key, base_url=base_url, **options)
    return client if fake_time is None else on_fake_time(client, fake_time)
