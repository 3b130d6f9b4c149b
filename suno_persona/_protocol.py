"""The wire format, as pure functions: no I/O, no event loop, no clock of its own.

``build_request`` turns a :class:`PersonaRequest` into what to send; ``parse_response`` turns
what came back, ``(status, headers, body)``, into a :class:`Persona` or the right error.
``envelope_data`` is the step every endpoint shares: the success envelope's ``data``, or the
error the reply stands for. The task query and the balance are in ``_queries``.
"""

from __future__ import annotations

import http
import json
import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

from suno_persona._errors import APIError, InvalidResponseError, error_for_code
from suno_persona._models import Persona, PersonaRequest
from suno_persona._version import __version__

__all__ = [
    "ENDPOINT_PATH",
    "USER_AGENT",
    "PreparedRequest",
    "build_request",
    "envelope_data",
    "parse_persona_id",
    "parse_response",
    "parse_retry_after",
    "reply_clock",
    "request_headers",
]

ENDPOINT_PATH = "/api/v1/client/job/suno-persona-generate"
USER_AGENT = f"suno-persona/{__version__}"


@attrs.frozen
class PreparedRequest:
    """What to send: method, path, headers and the encoded JSON body.

    ``headers`` is ``None`` when the session sends :func:`request_headers` with every request.
    """

    method: str
    path: str
    headers: Mapping[str, str] | None = attrs.field(repr=False)
    body: bytes | None

    def __repr__(self) -> str:
        return f"PreparedRequest(method={self.method!r}, path={self.path!r}, body={self.body!r})"


# Built once: json.dumps with arguments builds an encoder per call, and json.loads matches
# whitespace around the document with a regular expression; both cost more than the work.
_OK = 200
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()
_JSON_WHITESPACE = " \t\n\r"
# A str as a JSON string, non-ASCII kept (ensure_ascii=False); the C function when present.
_QUOTE = json.encoder.encode_basestring


def request_headers(api_key: str) -> dict[str, str]:
    """The headers of every request: the key in ``x-api-key`` only, JSON, our User-Agent."""
    return {
        "x-api-key": api_key,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def build_request(request: PersonaRequest, *, api_key: str | None) -> PreparedRequest:
    """Encode ``request`` as the endpoint expects it, with :func:`request_headers` for ``api_key``.

    ``api_key=None`` leaves the headers out, for a session that sends them with every
    request (the client's own session does: aiohttp then merges no headers per request).
    """
    headers = None if api_key is None else request_headers(api_key)
    return PreparedRequest("POST", ENDPOINT_PATH, headers, _encode_body(request))


def _encode_body(request: PersonaRequest) -> bytes:
    """``request.to_dict()`` as compact JSON in UTF-8: the bytes ``_ENCODER`` writes.

    At half its cost: the values are str, int or finite float (the validators saw to it),
    written as the encoder writes them; any other number (a subclass) goes to ``_ENCODER``.
    """
    fields = ",".join(
        [
            f'"{key}":{_QUOTE(value) if type(value) is str else _json_value(value)}'
            for key, value in request.to_dict().items()
        ]
    )
    return f"{{{fields}}}".encode()


def _json_value(value: object) -> str:
    if isinstance(value, str):
        return _QUOTE(value)  # a subclass of str
    kind = type(value)
    if kind is int or kind is float:
        return repr(value)  # as the encoder writes them: int.__repr__, float.__repr__
    return _ENCODER.encode(value)


def parse_retry_after(value: str | None, *, now: float, date: str | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` value asks for, or ``None`` when absent or invalid.

    Accepts the two forms of RFC 9110: delay-seconds (ASCII digits only: no sign, fraction,
    exponent, underscore or other script's digits) and an HTTP date, which is measured
    against the reply's own ``date`` (its ``Date`` header) when that is valid, else against
    ``now`` (this host's clock, seconds since the epoch): see :func:`reply_clock`. A date in
    the past means 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isascii():
        return None
    if text.isdigit():
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    when = _http_date(text)
    return None if when is None else max(0.0, when - reply_clock(date, now))


def reply_clock(date: str | None, now: float) -> float:
    """The moment a reply was written, on its sender's clock: its ``Date`` header, else ``now``.

    A moment the reply names (a ``Retry-After`` date, a reset in epoch seconds) is measured
    against this, so that a host whose clock is off still reads the wait the server meant.
    ``now`` (this host's clock, seconds since the epoch) stands in when the reply has no
    ``Date``, or one that is not an HTTP date with a time zone.
    """
    when = None if date is None or not date.isascii() else _http_date(date.strip())
    return now if when is None else when


def _http_date(text: str) -> float | None:
    """Seconds since the epoch of an HTTP date; ``None`` when it is not one or has no zone."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


def _decode_envelope(body: bytes) -> dict[str, Any] | None:
    """Return the JSON envelope in ``body``, or ``None`` when the body is not one."""
    try:
        text = body.decode("utf-8").strip(_JSON_WHITESPACE)
        parsed, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if end != len(text):
        return None
    if not isinstance(parsed, dict):
        return None
    code = parsed.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    return parsed


def _is_error_code(code: int) -> bool:
    return 400 <= code < 600  # noqa: PLR2004


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "unknown status"


def parse_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request: PersonaRequest,
    now: float,
) -> Persona:
    """Decipher a reply into the :class:`Persona` it carries, or raise the matching error.

    The envelope's integer ``code`` decides when the body is the envelope; otherwise the
    HTTP status does. An envelope that says 200 under a non-2xx status counts as that status.

    Args:
        status: The HTTP status.
        headers: The reply's headers (looked up case-insensitively for ``Retry-After``).
        body: The raw reply body.
        request: The request that was sent, kept on the :class:`Persona`.
        now: Seconds since the epoch, to measure a ``Retry-After`` HTTP date against when
            the reply has no ``Date`` header of its own.

    Raises:
        APIError: The API answered with an error code (a subclass for documented codes).
        InvalidResponseError: A 2xx reply that is not a valid success envelope.
    """
    return Persona(persona_id=parse_persona_id(status, headers, body, now=now), request=request)


def parse_persona_id(status: int, headers: Mapping[str, str], body: bytes, *, now: float) -> str:
    """:func:`parse_response` without building the :class:`Persona`: the id alone."""
    data = envelope_data(status, headers, body, now=now)
    persona_id = data.get("persona_id") if isinstance(data, dict) else None
    if not isinstance(persona_id, str) or not persona_id:
        raise InvalidResponseError(
            "success reply without a non-empty string data.persona_id", http_status=status
        )
    return persona_id


def envelope_data(status: int, headers: Mapping[str, str], body: bytes, *, now: float) -> object:
    """The ``data`` of a success envelope, or raise the error the reply stands for.

    The envelope's integer ``code`` decides when the body is the envelope; otherwise the
    HTTP status does. An envelope that says 200 under a non-2xx status counts as that status.

    Raises:
        APIError: The API answered with an error code (a subclass for documented codes).
        InvalidResponseError: A 2xx reply that is not a success envelope.
    """
    envelope = _decode_envelope(body)
    is_2xx = 200 <= status < 300  # noqa: PLR2004
    if envelope is None:
        if is_2xx:
            raise InvalidResponseError(
                f"HTTP {status} reply is not the JSON envelope", http_status=status
            )
        code = status
    else:
        said = envelope["code"]
        if said == _OK:
            code = said if is_2xx else status
        elif _is_error_code(said):
            code = said
        elif is_2xx:
            raise InvalidResponseError(
                f"reply envelope has code {said}, neither success nor an error",
                http_status=status,
            )
        else:
            code = status

    if code == _OK and envelope is not None:
        return envelope.get("data")

    message = envelope.get("message") if envelope is not None else None
    if not isinstance(message, str) or not message:
        message = f"HTTP {status} {_reason(status)}"
        if envelope is None:
            message += " (reply is not the JSON envelope)"
    retry_after = parse_retry_after(
        _header(headers, "Retry-After"), now=now, date=_header(headers, "Date")
    )
    error_cls: type[APIError] = error_for_code(code)
    raise error_cls(message, code=code, http_status=status, retry_after=retry_after)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None
