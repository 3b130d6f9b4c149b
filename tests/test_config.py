"""The constructor's checks (``_config``): every argument of the wrong type or value is refused
up front with a message naming it, never later and raw; no message shows a secret."""

from __future__ import annotations

import math

import aiohttp
import pytest

import suno_persona as sp
from suno_persona import _cli, _config

KEY = "sk-SECRET-abc123"
LOCAL = "http://127.0.0.1:1"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("SUNO_API_KEY", raising=False)
    monkeypatch.delenv("SUNO_API_BASE_URL", raising=False)


# -- timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout", [math.inf, -math.inf, math.nan, 10**400, 0, -1, 0.0, True, False]
)
def test_timeout_that_is_not_finite_and_positive_is_refused(timeout):
    """inf (which made every call raise OverflowError), nan, huge ints, <= 0 and bools."""
    with pytest.raises(ValueError, match="timeout") as info:
        sp.AsyncPersonaClient(KEY, base_url=LOCAL, timeout=timeout)
    assert not isinstance(info.value, sp.SunoPersonaError)


@pytest.mark.parametrize("timeout", ["30", None, [30], b"30"])
def test_timeout_of_the_wrong_type_is_refused_naming_it(timeout):
    """timeout="30" used to pass and fail on the first call with a TypeError."""
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds, not \w+"):
        sp.AsyncPersonaClient(KEY, base_url=LOCAL, timeout=timeout)


@pytest.mark.parametrize("timeout", [1, 0.001, 30.0, 86_400])
def test_finite_positive_timeouts_are_accepted(timeout):
    """Ints and floats > 0 are fine, stored as a float."""
    assert _config.check_timeout(timeout) == float(timeout)
    assert sp.AsyncPersonaClient(KEY, base_url=LOCAL, timeout=timeout)


# -- the other arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("retry", {"max_attempts": 3}, r"retry must be a RetryPolicy or None, not dict"),
        ("retry", sp.ThrottlePolicy(), r"retry must be a RetryPolicy or None, not ThrottlePolicy"),
        ("throttle", {"retry_budget": 3}, r"throttle must be a ThrottlePolicy or None, not dict"),
        ("throttle", sp.RetryPolicy(), r"throttle must be a ThrottlePolicy or None"),
        ("session", object(), r"session must be a ClientSession or None, not object"),
        ("allow_insecure_http", "yes", r"allow_insecure_http must be True or False, not str"),
        ("allow_insecure_http", None, r"allow_insecure_http must be True or False"),
        ("max_concurrency", "8", r"max_concurrency must be an int >= 1 or None"),
        ("max_concurrency", 2.0, r"max_concurrency must be an int >= 1 or None"),
        ("max_concurrency", True, r"max_concurrency must be an int >= 1 or None"),
        ("max_concurrency", 0, r"max_concurrency must be an int >= 1 or None"),
    ],
)
def test_argument_of_the_wrong_type_is_refused_naming_it(argument, value, expected):
    """retry={"max_attempts": 3} used to fail on the first call with an AttributeError."""
    with pytest.raises(ValueError, match=expected):
        sp.AsyncPersonaClient(KEY, base_url=LOCAL, **{argument: value})


@pytest.mark.parametrize("base_url", [5, b"http://127.0.0.1", ["http://127.0.0.1"]])
def test_base_url_of_the_wrong_type_is_refused_naming_it(base_url):
    """base_url=5 used to fail with an AttributeError."""
    with pytest.raises(sp.SunoPersonaError, match="base_url must be a string or None"):
        sp.AsyncPersonaClient(KEY, base_url=base_url)


@pytest.mark.parametrize("key", [5, b"sk-abc", ["sk-abc"]])
def test_key_of_the_wrong_type_is_refused(key):
    """A key that is not a string is refused, naming its type."""
    with pytest.raises(sp.SunoPersonaError, match="must be a string"):
        sp.AsyncPersonaClient(key, base_url=LOCAL)


# -- base_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2-pw@api.crun.ai",
        "http://user:hunter2-pw@127.0.0.1:8080",
        "https://:hunter2-pw@api.crun.ai/prefix",
        "https://hunter2-pw@api.crun.ai",
        "http://127.0.0.1@evil.test",
        "http://localhost:80@evil.test",
    ],
)
@pytest.mark.parametrize("insecure", [False, True])
def test_user_info_in_base_url_is_refused_without_showing_it(url, insecure):
    """A user name or password would be sent as Basic auth and shown in repr and logs."""
    with pytest.raises(sp.SunoPersonaError, match="user name or password") as info:
        sp.AsyncPersonaClient(KEY, base_url=url, allow_insecure_http=insecure)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value)


def test_a_password_in_the_query_of_base_url_is_not_shown():
    """A base URL refused for its query shows the query with ``password=`` masked."""
    with pytest.raises(sp.SunoPersonaError, match="query") as info:
        sp.AsyncPersonaClient(KEY, base_url="https://api.crun.ai/?password=hunter2-pw&x=1")
    assert "hunter2" not in str(info.value)
    assert "password=***&x=1" in str(info.value)


def test_user_info_in_the_environment_is_refused_too(monkeypatch):
    """SUNO_API_BASE_URL gets the same checks as base_url."""
    monkeypatch.setenv("SUNO_API_BASE_URL", "https://u:hunter2-pw@api.crun.ai")
    with pytest.raises(sp.SunoPersonaError, match="user name or password") as info:
        sp.AsyncPersonaClient(KEY)
    assert "hunter2" not in str(info.value)


def test_unparsable_url_with_user_info_does_not_show_it():
    """Even a URL urllib cannot parse is shown with its user info masked."""
    with pytest.raises(sp.SunoPersonaError, match="not a valid URL") as info:
        sp.AsyncPersonaClient(KEY, base_url="http://u:hunter2-pw@[::1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.crun.ai/?tenant=a",
        "https://api.crun.ai?x",
        "https://api.crun.ai/?",
        "https://api.crun.ai/#frag",
        "https://api.crun.ai#",
        "http://evil.test#@127.0.0.1",
        "http://evil.test?@localhost",
    ],
)
@pytest.mark.parametrize("insecure", [False, True])
def test_query_or_fragment_in_base_url_is_refused(url, insecure):
    """The key would be POSTed to "/" with the query, not to the endpoint."""
    with pytest.raises(sp.SunoPersonaError, match="query or a fragment"):
        sp.AsyncPersonaClient(KEY, base_url=url, allow_insecure_http=insecure)


# -- the environment, one reading for the client and the command line -----------------------


def test_resolve_api_key_falls_back_to_the_environment(monkeypatch):
    """An explicit key wins; otherwise SUNO_API_KEY; an empty variable counts as unset."""
    monkeypatch.setenv("SUNO_API_KEY", "sk-env")
    assert _config.resolve_api_key("sk-arg") == "sk-arg"
    assert _config.resolve_api_key(None) == "sk-env"
    monkeypatch.setenv("SUNO_API_KEY", "")
    with pytest.raises(sp.SunoPersonaError, match="no API key"):
        _config.resolve_api_key(None)


def test_resolve_base_url_falls_back_to_the_environment_then_the_api(monkeypatch):
    """An explicit URL wins; otherwise SUNO_API_BASE_URL; otherwise the real API."""
    assert _config.resolve_base_url(None, allow_insecure_http=False) == "https://api.crun.ai"
    monkeypatch.setenv("SUNO_API_BASE_URL", "http://127.0.0.1:9/p/")
    assert _config.resolve_base_url(None, allow_insecure_http=False) == "http://127.0.0.1:9/p"
    assert _config.resolve_base_url("https://x.test", allow_insecure_http=False) == (
        "https://x.test"
    )


def test_the_command_line_reads_the_environment_through_config(monkeypatch, capsys):
    """The CLI's fallbacks go through the same function as the client's, and its refusal of
    the URL is the client's (user info refused, password not shown)."""
    seen = []
    values = {"SUNO_API_KEY": "sk-env", "SUNO_API_BASE_URL": "https://u:hunter2-pw@x.test"}

    def env(name):
        seen.append(name)
        return values.get(name)

    monkeypatch.setattr(_config, "env", env)
    status = _cli.main(["generate", "--task-id", "t", "--suno-id", "s", "--name", "n"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "user name or password" in err
    assert "hunter2" not in err
    assert seen[:2] == ["SUNO_API_KEY", "SUNO_API_BASE_URL"]


def test_a_session_of_the_right_type_is_accepted():
    """An aiohttp.ClientSession passes the type check (used later, never at construction)."""
    _config.check_instance("session", None, aiohttp.ClientSession)
    with pytest.raises(ValueError, match="session must be a ClientSession, not int"):
        _config.check_instance("session", 1, aiohttp.ClientSession, optional=False)
