"""Value objects: the request we send and the persona we get back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from suno_persona._errors import RequestValidationError

__all__ = ["Persona", "PersonaRequest"]

NAME_MAX = 100
DESCRIPTION_MAX = 1000
STYLE_MAX = 1000
SECONDS_INT_MAX = 2**53
"""The largest int accepted as seconds: every int up to it is exactly a JSON double."""


def _check_text(field: str, value: object, *, max_len: int | None, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise RequestValidationError(field, f"must be a string, not {type(value).__name__}")
    if required and not value:
        raise RequestValidationError(field, "must not be empty")
    if required and not value.strip():
        raise RequestValidationError(field, "must not be blank (only whitespace)")
    if max_len is not None and len(value) > max_len:
        raise RequestValidationError(
            field, f"must be at most {max_len} characters, got {len(value)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestValidationError(field, "must be valid Unicode text (lone surrogate)") from None


def _required_text(max_len: int | None = None) -> Any:
    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        _check_text(attribute.name, value, max_len=max_len, required=True)

    return validate


def _optional_text(max_len: int) -> Any:
    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        _check_text(attribute.name, value, max_len=max_len, required=False)

    return validate


def _check_seconds(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    field = attribute.name
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestValidationError(
            field, f"must be a number of seconds (int or float), not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestValidationError(field, f"must be finite, got {value!r}")
    if isinstance(value, int) and abs(value) > SECONDS_INT_MAX:
        raise RequestValidationError(
            field, f"an int must be >= 0 and at most 2**53 ({SECONDS_INT_MAX}), exact in JSON"
        )
    if value < 0:
        raise RequestValidationError(field, f"must be >= 0, got {value!r}")


def _check_vocal_end(inst: PersonaRequest, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_seconds(inst, attribute, value)
    start = inst.vocal_start
    if value is not None and start is not None and not value > start:  # type: ignore[operator]
        raise RequestValidationError(
            "vocal_end", f"must be greater than vocal_start ({start!r}), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class PersonaRequest:
    """A validated request to turn a finished Suno song into a persona.

    Every rule of the endpoint's schema is checked when the object is built; a violation
    raises :class:`RequestValidationError` naming the field and the rule, so a request
    that exists is one the API's documented schema accepts.

    Attributes:
        task_id: Id of the finished music-generation task, e.g. ``"task_12345678"``.
        suno_id: Suno song id inside that task, e.g. ``"suno_abc123"``.
        name: The persona's name, 1 to 100 characters, not only whitespace.
        description: Optional description, at most 1000 characters.
        vocal_start: Optional start of the vocal section in seconds (``>= 0``; finite,
            and an int at most ``2**53``, so that JSON carries it exactly).
        vocal_end: Optional end of the vocal section in seconds (``>= 0``, and greater
            than ``vocal_start`` when both are given).
        style: Optional style, at most 1000 characters.
    """

    task_id: str = attrs.field(validator=_required_text())
    suno_id: str = attrs.field(validator=_required_text())
    name: str = attrs.field(validator=_required_text(NAME_MAX))
    description: str | None = attrs.field(default=None, validator=_optional_text(DESCRIPTION_MAX))
    vocal_start: float | None = attrs.field(default=None, validator=_check_seconds)
    vocal_end: float | None = attrs.field(default=None, validator=_check_vocal_end)
    style: str | None = attrs.field(default=None, validator=_optional_text(STYLE_MAX))

    @classmethod
    def from_dict(cls, data: object) -> PersonaRequest:
        """Build a request from a mapping of field names, as parsed from JSON.

        Raises:
            RequestValidationError: ``data`` is not a mapping, lacks a required field, has
                an unknown one, or breaks a rule.
        """
        if not isinstance(data, Mapping):
            raise RequestValidationError(
                "request", f"must be an object of fields, not {type(data).__name__}"
            )
        known = _FIELD_NAMES
        for key in data:
            if key not in known:
                raise RequestValidationError(str(key), "is not a field of the request")
        for key in _REQUIRED:
            if key not in data:
                raise RequestValidationError(key, "is required")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body as a dict: fields that were not given are left out."""
        body: dict[str, Any] = {"task_id": self.task_id, "suno_id": self.suno_id, "name": self.name}
        if self.description is not None:
            body["description"] = self.description
        if self.vocal_start is not None:
            body["vocal_start"] = self.vocal_start
        if self.vocal_end is not None:
            body["vocal_end"] = self.vocal_end
        if self.style is not None:
            body["style"] = self.style
        return body


_FIELD_NAMES = frozenset(a.name for a in attrs.fields(PersonaRequest))
_REQUIRED = ("task_id", "suno_id", "name")


@attrs.frozen(kw_only=True)
class Persona:
    """A persona the API created.

    Attributes:
        persona_id: The id to pass to Suno generation, extension and cover endpoints.
        request: The request that produced it.
        attempts: Requests the call sent to get it (1 unless it was retried).
        elapsed: Seconds the whole call took: waits at the throttle, attempts and backoff.
    """

    persona_id: str
    request: PersonaRequest
    attempts: int = 1
    elapsed: float = 0.0
