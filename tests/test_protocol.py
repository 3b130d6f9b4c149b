"""The pure wire layer: building requests and deciphering replies, with no loop and no network."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import suno_persona as sp
from suno_persona import _protocol
from suno_persona._errors import error_for_code

NOW = 1_800_000_000.0
REQUEST = sp.PersonaRequest(task_id="task_1", suno_id="suno_1", name="Neon Siren")

ERROR_CODES = {
    401: sp.AuthenticationError,
    402: sp.InsufficientCreditsError,
    404: sp.NotFoundError,
    422: sp.UnprocessableEntityError,
    429: sp.RateLimitError,
    455: sp.ServiceUnavailableError,
    500: sp.ServerError,
    501: sp.GenerationFailedError,
    505: sp.FeatureDisabledError,
}


def envelope(code: int, message: str = "msg", data: object = None) -> bytes:
    return json.dumps({"code": code, "message": message, "data": data}).encode()


def success(persona_id: object = "persona_123456") -> bytes:
    return envelope(200, "success", {"persona_id": persona_id})


def parse(status: int, body: bytes, headers: dict[str, str] | None = None) -> sp.Persona:
    return _protocol.parse_response(status, headers or {}, body, request=REQUEST, now=NOW)


class TestBuildRequest:
    def test_wire_format(self):
        """POST to the documented path, the key in x-api-key only, a JSON body, our User-Agent."""
        prepared = _protocol.build_request(REQUEST, api_key="sk-secret")
        assert prepared.method == "POST"
        assert prepared.path == "/api/v1/client/job/suno-persona-generate"
        assert prepared.headers["x-api-key"] == "sk-secret"
        assert "Authorization" not in prepared.headers
        assert prepared.headers["Content-Type"] == "application/json"
        assert prepared.headers["User-Agent"] == f"suno-persona/{sp.__version__}"
        assert json.loads(prepared.body) == {
            "task_id": "task_1",
            "suno_id": "suno_1",
            "name": "Neon Siren",
        }

    def test_repr_hides_the_key(self):
        """The prepared request's repr never shows the key."""
        prepared = _protocol.build_request(REQUEST, api_key="sk-secret")
        assert "sk-secret" not in repr(prepared)
        assert "sk-secret" not in str(prepared)

    def test_non_ascii_is_sent_as_utf8(self):
        """Non-ASCII names are encoded as UTF-8 JSON, not lost."""
        request = sp.PersonaRequest(task_id="t", suno_id="s", name="Sirène 夜")
        body = _protocol.build_request(request, api_key="k").body
        assert json.loads(body.decode("utf-8"))["name"] == "Sirène 夜"


class TestSuccess:
    def test_success_envelope_gives_persona(self):
        """A 200 with the success envelope gives the persona id and keeps the request."""
        persona = parse(200, success())
        assert persona == sp.Persona(persona_id="persona_123456", request=REQUEST)

    @pytest.mark.parametrize(
        "body",
        [
            success(""),
            success(None),
            success(123),
            envelope(200, "success", None),
            envelope(200, "success", ["persona_id"]),
            envelope(200, "success", {}),
            b"",
            b"<html>ok</html>",
            b'{"message": "success"}',
            b'{"code": "200", "data": {"persona_id": "p"}}',
            b'{"code": true, "data": {"persona_id": "p"}}',
            b"[1, 2]",
            b"\xff\xfe\x00garbage",
            b"[" * 100_000,
        ],
    )
    def test_2xx_without_valid_persona_id_is_invalid(self, body):
        """A 2xx reply without a non-empty string persona_id is never a success."""
        with pytest.raises(sp.InvalidResponseError) as info:
            parse(200, body)
        assert info.value.http_status == 200

    def test_2xx_envelope_with_a_non_error_code_is_invalid(self):
        """An envelope under 2xx whose code is neither 200 nor an error code is invalid."""
        with pytest.raises(sp.InvalidResponseError, match="code 302"):
            parse(200, envelope(302))


class TestErrors:
    @pytest.mark.parametrize(("code", "error_cls"), ERROR_CODES.items())
    def test_code_as_http_status(self, code, error_cls):
        """Each documented code arriving as the HTTP status (in its envelope) maps to its class."""
        with pytest.raises(error_cls) as info:
            parse(code, envelope(code, "the API's own words"))
        error = info.value
        assert type(error) is error_cls
        assert (error.code, error.http_status, error.message) == (code, code, "the API's own words")

    @pytest.mark.parametrize(("code", "error_cls"), ERROR_CODES.items())
    def test_code_in_body_under_http_200(self, code, error_cls):
        """Each documented code arriving only as the body's code under HTTP 200 maps the same."""
        with pytest.raises(error_cls) as info:
            parse(200, envelope(code, "task_id not found"))
        assert (info.value.code, info.value.http_status) == (code, 200)
        assert info.value.message == "task_id not found"

    @pytest.mark.parametrize(("code", "error_cls"), ERROR_CODES.items())
    def test_code_as_status_of_a_non_envelope_page(self, code, error_cls):
        """A gateway's HTML page decides by its HTTP status."""
        with pytest.raises(error_cls) as info:
            parse(code, b"<html><body>Too Many Requests</body></html>")
        assert info.value.code == code
        assert "not the JSON envelope" in info.value.message

    def test_envelope_saying_200_under_an_error_status_is_that_status(self):
        """An envelope that says 200 under HTTP 429 is a 429."""
        with pytest.raises(sp.RateLimitError) as info:
            parse(429, success())
        assert info.value.code == 429

    def test_body_code_wins_over_a_different_error_status(self):
        """When both carry an error code, the envelope's code decides."""
        with pytest.raises(sp.GenerationFailedError):
            parse(500, envelope(501, "generation failed"))

    def test_unknown_code_raises_api_error_itself(self):
        """A code the docs do not list is an APIError, not a subclass."""
        with pytest.raises(sp.APIError) as info:
            parse(200, envelope(418, "teapot"))
        assert type(info.value) is sp.APIError
        assert info.value.code == 418

    def test_redirect_is_an_error_with_its_status(self):
        """A 3xx (never followed) is reported as an error carrying its status."""
        with pytest.raises(sp.APIError) as info:
            parse(302, b"")
        assert (info.value.code, info.value.http_status) == (302, 302)
        assert "302 Found" in info.value.message

    def test_missing_message_falls_back_to_the_reason(self):
        """An envelope without a message still gives a readable one."""
        with pytest.raises(sp.ServerError, match="HTTP 500 Internal Server Error"):
            parse(500, b'{"code": 500}')

    def test_retry_after_seconds_is_carried(self):
        """A Retry-After in seconds is carried on the error, whatever the header's case."""
        with pytest.raises(sp.RateLimitError) as info:
            parse(429, envelope(429), {"retry-after": "3"})
        assert info.value.retry_after == 3.0

    def test_error_classes_by_code(self):
        """The code table matches the documented tree, unknown codes fall back to APIError."""
        for code, error_cls in ERROR_CODES.items():
            assert error_for_code(code) is error_cls
            assert issubclass(error_cls, sp.APIError)
        assert error_for_code(999) is sp.APIError

    def test_only_429_and_455_are_retryable_by_class(self):
        """Only the rate limit and maintenance errors are retryable by default."""
        retryable = {code for code, cls in ERROR_CODES.items() if cls.retryable}
        assert retryable == {429, 455}


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("0", 0.0), ("12", 12.0), (" 7 ", 7.0), (None, None), ("", None)],
    )
    def test_seconds(self, value, expected):
        """Delay-seconds are read as seconds; absent or empty is None."""
        assert _protocol.parse_retry_after(value, now=NOW) == expected

    @pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon", "Mon, 99 Foo 2020"])
    def test_invalid_values_are_ignored(self, value):
        """A value that is neither non-negative seconds nor an HTTP date is ignored."""
        assert _protocol.parse_retry_after(value, now=NOW) is None

    def test_http_date_in_the_future(self):
        """An HTTP date counts from now."""
        when = datetime.fromtimestamp(NOW + 30, tz=timezone.utc)
        value = format_datetime(when, usegmt=True)
        assert _protocol.parse_retry_after(value, now=NOW) == pytest.approx(30.0)

    def test_http_date_in_the_past_means_now(self):
        """A date already past means no wait."""
        when = datetime.fromtimestamp(NOW - 30, tz=timezone.utc)
        value = format_datetime(when, usegmt=True)
        assert _protocol.parse_retry_after(value, now=NOW) == 0.0

    def test_http_date_is_read_against_the_replys_date(self):
        """A server 20 s ahead of this host names a moment 1 s past its own Date: 1 s, not 21."""
        server_now = NOW + 20
        value = format_datetime(
            datetime.fromtimestamp(server_now + 1, tz=timezone.utc), usegmt=True
        )
        date = format_datetime(datetime.fromtimestamp(server_now, tz=timezone.utc), usegmt=True)
        assert _protocol.parse_retry_after(value, now=NOW, date=date) == 1.0
        assert _protocol.parse_retry_after(value, now=NOW) == pytest.approx(21.0)

    @pytest.mark.parametrize("date", [None, "", "yesterday", "Fri, 27 Nov 2026 10:00:00 -0000"])
    def test_without_a_usable_date_the_local_clock_is_used(self, date):
        """No Date header, or one that is not an HTTP date with a zone: the local clock."""
        value = format_datetime(datetime.fromtimestamp(NOW + 30, tz=timezone.utc), usegmt=True)
        assert _protocol.parse_retry_after(value, now=NOW, date=date) == pytest.approx(30.0)

    def test_a_date_before_the_replys_date_means_now(self):
        """A Retry-After date before the reply's own Date is no wait, never a negative one."""
        value = format_datetime(datetime.fromtimestamp(NOW + 5, tz=timezone.utc), usegmt=True)
        date = format_datetime(datetime.fromtimestamp(NOW + 20, tz=timezone.utc), usegmt=True)
        assert _protocol.parse_retry_after(value, now=NOW, date=date) == 0.0

    def test_the_parser_reads_retry_after_against_the_date_header(self):
        """A 429 whose Date is 20 s off the local clock carries the 1 s the server meant."""
        server_now = NOW - 20
        headers = {
            "date": format_datetime(
                datetime.fromtimestamp(server_now, tz=timezone.utc), usegmt=True
            ),
            "Retry-After": format_datetime(
                datetime.fromtimestamp(server_now + 1, tz=timezone.utc), usegmt=True
            ),
        }
        with pytest.raises(sp.RateLimitError) as info:
            parse(429, envelope(429), headers)
        assert info.value.retry_after == 1.0

    def test_date_without_zone_is_ignored(self):
        """A date with no time zone cannot be placed, so it is ignored."""
        assert _protocol.parse_retry_after("Fri, 27 Nov 2026 10:00:00 -0000", now=NOW) is None


@given(
    status=st.integers(min_value=100, max_value=599),
    headers=st.dictionaries(st.sampled_from(["Retry-After", "retry-after", "X"]), st.text()),
    body=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda c, m, d: json.dumps({"code": c, "message": m, "data": d}).encode(),
            st.one_of(st.integers(), st.sampled_from([200, 429, 455])),
            st.one_of(st.text(), st.none(), st.integers()),
            st.one_of(
                st.none(),
                st.dictionaries(st.just("persona_id"), st.one_of(st.text(), st.integers())),
            ),
        ),
    ),
)
def test_parser_yields_only_a_persona_or_a_library_error(status, headers, body):
    """Whatever comes back, the parser gives a Persona or raises a SunoPersonaError."""
    try:
        result = parse(status, body, headers)
    except sp.SunoPersonaError:
        return
    assert isinstance(result, sp.Persona)
    assert result.persona_id


@pytest.mark.parametrize(
    "value",
    ["1_000", "+7", "1e3", "1.5", "0x10", "\u0663", "\uff15", "1\u0663", "\u0661\u0662", "7 7"],
)
def test_retry_after_takes_ascii_digits_only(value):
    """RFC 9110 delay-seconds is 1*DIGIT: what float() also takes (underscores, a sign, an
    exponent, a fraction, other scripts' digits) is ignored."""
    assert _protocol.parse_retry_after(value, now=NOW) is None


def test_retry_after_date_with_non_ascii_digits_is_ignored():
    """The HTTP-date form is ASCII too."""
    value = "Fri, \uff12\uff17 Nov 2026 10:00:00 GMT"
    assert _protocol.parse_retry_after(value, now=NOW) is None


def test_retry_after_of_many_digits_is_ignored_not_an_error():
    """A delay too large for a float is not a delay."""
    assert _protocol.parse_retry_after("9" * 5000, now=NOW) is None
    assert _protocol.parse_retry_after("0" * 5000 + "3", now=NOW) == 3.0
