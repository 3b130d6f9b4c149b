"""PersonaRequest enforces the documented schema before any I/O; property tests included."""

from __future__ import annotations

import json
import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import suno_persona as sp
from suno_persona import _protocol

BASE = {"task_id": "task_12345678", "suno_id": "suno_abc123", "name": "Neon Siren"}


def make(**changes):
    return sp.PersonaRequest(**{**BASE, **changes})


def test_documented_example_renders_exactly():
    """The provider's example body round-trips field for field."""
    request = make(
        description="A smoky, late-night R&B vocalist.",
        vocal_start=12.5,
        vocal_end=64,
        style="Western R&B, moody, intimate",
    )
    assert request.to_dict() == {
        **BASE,
        "description": "A smoky, late-night R&B vocalist.",
        "vocal_start": 12.5,
        "vocal_end": 64,
        "style": "Western R&B, moody, intimate",
    }


def test_unset_optional_fields_are_left_out():
    """Optional fields not given are absent from the body, never null."""
    assert make().to_dict() == BASE


def test_frozen():
    """Requests are immutable values."""
    request = make()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.name = "other"  # type: ignore[misc]


def test_fields_are_keyword_only():
    """Positional construction is refused, so task_id and suno_id cannot be swapped by accident."""
    with pytest.raises(TypeError):
        sp.PersonaRequest("task", "suno", "name")  # type: ignore[misc]


def test_validation_error_is_also_a_value_error():
    """RequestValidationError is both a SunoPersonaError and a ValueError."""
    with pytest.raises(ValueError, match="name") as info:
        make(name="")
    assert isinstance(info.value, sp.SunoPersonaError)
    assert isinstance(info.value, sp.RequestValidationError)


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"task_id": ""}, "task_id", "must not be empty"),
        ({"suno_id": ""}, "suno_id", "must not be empty"),
        ({"name": ""}, "name", "must not be empty"),
        ({"task_id": 123}, "task_id", "must be a string, not int"),
        ({"name": b"bytes"}, "name", "must be a string, not bytes"),
        ({"name": "x" * 101}, "name", "at most 100 characters, got 101"),
        ({"description": "x" * 1001}, "description", "at most 1000 characters"),
        ({"style": "x" * 1001}, "style", "at most 1000 characters"),
        ({"style": 5}, "style", "must be a string"),
        ({"vocal_start": -0.1}, "vocal_start", "must be >= 0"),
        ({"vocal_end": -1}, "vocal_end", "must be >= 0"),
        ({"vocal_start": True}, "vocal_start", "not bool"),
        ({"vocal_end": False}, "vocal_end", "not bool"),
        ({"vocal_start": "12"}, "vocal_start", "not str"),
        ({"vocal_start": math.nan}, "vocal_start", "must be finite"),
        ({"vocal_end": math.inf}, "vocal_end", "must be finite"),
        ({"vocal_start": 10, "vocal_end": 10}, "vocal_end", "greater than vocal_start"),
        ({"vocal_start": 10, "vocal_end": 5.5}, "vocal_end", "greater than vocal_start"),
        ({"name": "bad \ud800 surrogate"}, "name", "valid Unicode"),
    ],
)
def test_each_rule_names_field_and_rule(changes, field, rule):
    """Every violation raises RequestValidationError naming the field and the rule."""
    with pytest.raises(sp.RequestValidationError) as info:
        make(**changes)
    assert info.value.field == field
    assert rule in info.value.rule
    assert str(info.value).startswith(f"{field}: ")


def test_boundaries_are_accepted():
    """Exactly 100/1000/1000 characters, zero seconds and non-ASCII text are fine."""
    request = make(name="é" * 100, description="d" * 1000, style="s" * 1000, vocal_start=0)
    assert len(request.to_dict()["name"]) == 100


def test_from_dict_requires_the_required_fields():
    """from_dict names a missing required field."""
    with pytest.raises(sp.RequestValidationError, match="suno_id: is required"):
        sp.PersonaRequest.from_dict({"task_id": "t", "name": "n"})


def test_from_dict_rejects_unknown_fields():
    """from_dict names an unknown field rather than dropping it silently."""
    with pytest.raises(sp.RequestValidationError, match="colour: is not a field"):
        sp.PersonaRequest.from_dict({**BASE, "colour": "blue"})


@pytest.mark.parametrize("data", [None, [], "task", 3])
def test_from_dict_rejects_non_objects(data):
    """from_dict refuses anything that is not a mapping."""
    with pytest.raises(sp.RequestValidationError, match="request: must be an object"):
        sp.PersonaRequest.from_dict(data)


def test_from_dict_builds_the_same_request():
    """from_dict of to_dict gives the same request back."""
    request = make(vocal_start=1, vocal_end=2.5, style="pop")
    assert sp.PersonaRequest.from_dict(request.to_dict()) == request


# -- properties ------------------------------------------------------------------------------

text_ok = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(str.strip)
seconds = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def valid_fields(draw):
    fields = {
        "task_id": draw(text_ok),
        "suno_id": draw(text_ok),
        "name": draw(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=100
            ).filter(str.strip)
        ),
    }
    if draw(st.booleans()):
        fields["description"] = draw(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=1000)
        )
    if draw(st.booleans()):
        fields["style"] = draw(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=1000)
        )
    start = draw(st.one_of(st.none(), seconds))
    end = draw(st.one_of(st.none(), seconds))
    if start is not None and end is not None and not end > start:
        end = start + 1
    if start is not None:
        fields["vocal_start"] = start
    if end is not None:
        fields["vocal_end"] = end
    return fields


@given(valid_fields())
def test_valid_requests_render_exactly_the_given_fields(fields):
    """Any valid combination renders exactly the fields given, with the values given."""
    body = sp.PersonaRequest(**fields).to_dict()
    assert body == fields
    assert all(value is not None for value in body.values())


@given(valid_fields())
def test_the_body_is_what_the_json_encoder_writes(fields):
    """The hand-written encoder of the body writes the very bytes of json's own encoder."""
    request = sp.PersonaRequest(**fields)
    expected = json.dumps(request.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert _protocol.build_request(request, api_key="k").body == expected.encode()


@given(valid_fields(), st.sampled_from(["name", "description", "style"]), st.data())
def test_overlong_text_is_rejected(fields, field, data):
    """Any text over its documented maximum is rejected, naming the field."""
    limit = 100 if field == "name" else 1000
    fields[field] = "x" * data.draw(st.integers(min_value=limit + 1, max_value=limit + 500))
    with pytest.raises(sp.RequestValidationError) as info:
        sp.PersonaRequest(**fields)
    assert info.value.field == field


@given(
    valid_fields(),
    st.sampled_from(["vocal_start", "vocal_end"]),
    st.one_of(
        st.floats(max_value=-1e-9, allow_nan=False),
        st.integers(max_value=-1),
        st.just(math.nan),
        st.just(math.inf),
        st.booleans(),
        st.text(max_size=3),
    ),
)
def test_bad_seconds_are_rejected(fields, field, value):
    """Negative, non-finite, boolean or non-numeric times are rejected, naming the field."""
    fields.pop("vocal_start", None)
    fields.pop("vocal_end", None)
    fields[field] = value
    with pytest.raises(sp.RequestValidationError) as info:
        sp.PersonaRequest(**fields)
    assert info.value.field == field


@given(valid_fields(), seconds, st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_end_not_after_start_is_rejected(fields, start, back):
    """vocal_end <= vocal_start is rejected as a vocal_end error."""
    fields["vocal_start"] = start
    fields["vocal_end"] = max(0, start - back)
    with pytest.raises(sp.RequestValidationError) as info:
        sp.PersonaRequest(**fields)
    assert info.value.field == "vocal_end"


@given(
    valid_fields(),
    st.sampled_from(["task_id", "suno_id", "name"]),
    st.one_of(st.just(""), st.none(), st.integers(), st.binary(min_size=1)),
)
def test_required_text_must_be_a_nonempty_string(fields, field, value):
    """Required fields reject empty strings and non-strings alike."""
    fields[field] = value
    with pytest.raises(sp.RequestValidationError) as info:
        sp.PersonaRequest(**fields)
    assert info.value.field == field


# -- issue 10: numbers JSON carries exactly, and blank required text ---------------------------


@pytest.mark.parametrize("field", ["vocal_start", "vocal_end"])
@pytest.mark.parametrize(
    "value",
    [2**53 + 1, 10**400, 10**5000, -(10**5000)],
    ids=["2**53+1", "1e400", "1e5000", "-1e5000"],
)
def test_ints_beyond_what_a_double_holds_exactly_are_refused(field, value):
    """10**5000 used to pass and make encoding raise ValueError; 10**400 went out as a number
    no double can hold. Ints are accepted up to 2**53, and the error names the rule."""
    with pytest.raises(sp.RequestValidationError, match=r"at most 2\*\*53") as info:
        make(**{field: value})
    assert info.value.field == field


def test_the_largest_exact_int_is_accepted_and_sent_exactly():
    """2**53 is the largest int every double represents exactly: accepted, encoded as is."""
    request = make(vocal_start=2**53 - 1, vocal_end=2**53)
    body = _protocol.build_request(request, api_key="k").body
    assert json.loads(body)["vocal_end"] == 2**53
    assert float(json.loads(body)["vocal_end"]) == 2**53


async def test_a_huge_int_fails_its_own_request_only_in_a_batch(persona_emulator):
    """In generate_many, 10**5000 is that request's RequestValidationError, not the batch's."""
    async with sp.AsyncPersonaClient("sk-test", base_url=persona_emulator.base_url) as client:
        outcomes = await client.generate_many([{**BASE, "vocal_start": 10**5000}, BASE])
    assert isinstance(outcomes[0], sp.RequestValidationError)
    assert outcomes[0].field == "vocal_start"
    assert isinstance(outcomes[1], sp.Persona)


@pytest.mark.parametrize("field", ["task_id", "suno_id", "name"])
@pytest.mark.parametrize("value", [" ", "\t\n", "\u3000", "\u00a0 \u2003"])
def test_blank_required_text_is_refused(field, value):
    """A required string of only whitespace is refused like an empty one."""
    with pytest.raises(sp.RequestValidationError, match="must not be blank") as info:
        make(**{field: value})
    assert info.value.field == field


def test_required_text_with_surrounding_spaces_is_kept_as_is():
    """Only blank text is refused; text with spaces around it is sent unchanged."""
    assert make(name=" Neon ").name == " Neon "
