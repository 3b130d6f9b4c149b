"""The client's configuration, checked once, up front: the key, the base URL, the rest.

Shared by :class:`AsyncPersonaClient` and the command line, so both read the same
environment variables the same way. A key or base URL that cannot be used raises
:class:`SunoPersonaError`; any other constructor argument of the wrong type or value
raises :class:`ValueError` naming it. No message ever shows the key or a password.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import unquote_plus, urlsplit

from suno_persona._errors import SunoPersonaError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TASK_TIMEOUT",
    "check_bool",
    "check_event_hooks",
    "check_instance",
    "check_max_concurrency",
    "check_seconds",
    "check_timeout",
    "check_wait_for_task",
    "env",
    "masked_url",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://api.crun.ai"


def env(name: str) -> str | None:
    """The environment variable ``name``, or ``None`` when it is unset or empty."""
    return os.environ.get(name) or None


def resolve_api_key(value: str | None) -> str:
    """``value``, else ``SUNO_API_KEY``, checked to be a key that can be sent as is.

    Raises:
        SunoPersonaError: There is no key, or it is not a string, is blank, or holds
            control or unprintable characters. The message never shows the key.
    """
    key = value if value is not None else env("SUNO_API_KEY")
    if key is None:
        raise SunoPersonaError(
            "no API key: pass api_key=... or set the SUNO_API_KEY environment variable"
        )
    if not isinstance(key, str):
        raise SunoPersonaError(f"the API key must be a string, not {type(key).__name__}")
    if not key.strip():
        raise SunoPersonaError("the API key is empty (api_key or SUNO_API_KEY)")
    if not key.isprintable():
        raise SunoPersonaError(
            "the API key contains control characters or unprintable ones (api_key or SUNO_API_KEY)"
        )
    return key


def masked_url(url: str) -> str:
    """``url`` as it may be shown: every secret it carries is ``***``.

    The one function through which the library shows a URL (a base URL or a throttle store
    in a repr, a warning or an error). The secrets are the userinfo
    (``redis://user:password@host``: everything up to the last ``@``,
    so that a password holding ``@``, ``:``, ``/`` or ``?`` is hidden whole) and the values of
    the query parameters redis-py also reads as secrets: ``username=`` and any whose name
    holds ``password`` (``password=``, ``ssl_password=``). Host, port, database and the other
    parameters are kept, to say which server is meant.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    where, mark, query = rest.partition("?")
    if mark:
        query = "&".join(_masked_parameter(pair) for pair in query.split("&"))
    return f"{scheme}{sep}{where}{mark}{query}"


def _masked_parameter(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    key = unquote_plus(name).strip().lower()
    if equals and (key == "username" or "password" in key):
        return f"{name}=***"
    return pair


def resolve_base_url(value: str | None, *, allow_insecure_http: bool) -> str:
    """``value``, else ``SUNO_API_BASE_URL``, else the real API, checked; no trailing slash.

    The URL must be http(s) with a host, no user name or password, no query and no
    fragment; plain http only to a loopback host unless ``allow_insecure_http``.

    Raises:
        SunoPersonaError: The URL is not acceptable. The message never shows a password.
    """
    if value is not None and not isinstance(value, str):
        raise SunoPersonaError(f"base_url must be a string or None, not {type(value).__name__}")
    url = value or env("SUNO_API_BASE_URL") or DEFAULT_BASE_URL
    shown = masked_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as error:
        reason = masked_url(str(error))
        raise SunoPersonaError(f"base_url {shown!r} is not a valid URL: {reason}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SunoPersonaError(f"base_url must be an http(s) URL with a host, got {shown!r}")
    if "@" in parts.netloc:
        raise SunoPersonaError(
            f"base_url {shown!r} holds a user name or password, which would be sent to the "
            "server and shown in logs; the API key is the only credential, remove them"
        )
    if "?" in url or "#" in url:
        raise SunoPersonaError(
            f"base_url {shown!r} has a query or a fragment; the client appends the endpoint's "
            "path to base_url, so give only the scheme, host and an optional path prefix"
        )
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise SunoPersonaError(
            f"base_url {shown!r} uses plain http to a host that is not loopback, which would send "
            "the API key unencrypted; use https, or pass allow_insecure_http=True"
        )
    return url.rstrip("/")


def check_timeout(value: object) -> float:
    """A finite number of seconds > 0, as a float.

    Raises:
        ValueError: ``value`` is not an int or float (a bool is not), or not finite and > 0.
    """
    return check_seconds("timeout", value)


def check_seconds(name: str, value: object) -> float:
    """A finite number of seconds > 0, as a float; ``name`` is the argument's, for the message.

    Raises:
        ValueError: ``value`` is not an int or float (a bool is not), or not finite and > 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(  # noqa: TRY004 - the constructor refuses with ValueError only
            f"{name} must be a number of seconds, not {type(value).__name__}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return seconds


DEFAULT_TASK_TIMEOUT = 900.0


def check_wait_for_task(value: object) -> float | None:
    """``wait_for_task`` as the wait's timeout: ``None`` for no wait (``False``).

    ``True`` is :data:`DEFAULT_TASK_TIMEOUT`; a number is the timeout itself.

    Raises:
        ValueError: ``value`` is neither a bool nor a finite number of seconds > 0.
    """
    if value is True:
        return DEFAULT_TASK_TIMEOUT
    if value is False:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_seconds("wait_for_task", value)
    raise ValueError(
        f"wait_for_task must be True, False or a number of seconds > 0, not {type(value).__name__}"
    )


def check_max_concurrency(value: object) -> int | None:
    """``None``, or an int >= 1 (not a bool).

    Raises:
        ValueError: Anything else.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_concurrency must be an int >= 1 or None, got {value!r}")
    return value


def check_instance(name: str, value: object, cls: type, *, optional: bool = True) -> None:
    """Refuse ``value`` unless it is a ``cls`` (or ``None`` when ``optional``).

    Raises:
        ValueError: The message names the argument, the expected type and the one given.
    """
    if (value is None and optional) or isinstance(value, cls):
        return
    expected = f"a {cls.__name__} or None" if optional else f"a {cls.__name__}"
    raise ValueError(f"{name} must be {expected}, not {type(value).__name__}")


def check_bool(name: str, value: object) -> bool:
    """Refuse anything but ``True`` or ``False``.

    Raises:
        ValueError: The message names the argument.
    """
    if not isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 - the constructor refuses with ValueError only
            f"{name} must be True or False, not {type(value).__name__}"
        )
    return value


def check_event_hooks(value: object) -> tuple[Callable[[object], object], ...]:
    """An iterable of callables (not a str, bytes or mapping), as a tuple.

    Raises:
        ValueError: ``value`` is not iterable, is a str, bytes or mapping, or holds
            something that is not callable; the message names ``event_hooks``.
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(  # noqa: TRY004 - the constructor refuses with ValueError only
            "event_hooks must be an iterable of callables such as a list, not "
            f"{type(value).__name__}"
        )
    hooks: list[Callable[[object], object]] = []
    for hook in value:
        if not callable(hook):
            raise ValueError(  # noqa: TRY004 - the constructor refuses with ValueError only
                f"event_hooks must hold callables only, got a {type(hook).__name__}"
            )
        hooks.append(hook)
    return tuple(hooks)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
