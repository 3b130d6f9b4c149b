"""No secret of a store URL is shown: not in a repr, a warning, a log record, an event or an error.

Against a real redis-server started with ``requirepass``, reached with a wrong password given
as the URL's userinfo, as ``?password=``, and with a user name either way: the call goes on in
this process alone, and the store's warning says why, without the secrets.
"""

from __future__ import annotations

import logging
import traceback
import warnings

import pytest
from helpers import FIELDS, KEY
from redis_fixtures import RedisServer, redis_program

import suno_persona as sp

redis = pytest.importorskip("redis")

from suno_persona.redis import RedisThrottleStore  # noqa: E402

RIGHT = "right-PASSWORD-0f1e"
WRONG = "wrong-PASSWORD-7c3a"
USER = "alice-USER-9b2d"
SECRETS = (RIGHT, WRONG, USER)


@pytest.fixture(name="locked_redis", scope="module")
def _locked_redis(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(
        redis_program(), tmp_path_factory.mktemp("locked-redis"), "--requirepass", RIGHT
    )
    server.start()
    yield server
    server.stop()


def store_urls(port: int) -> list[str]:
    where = f"127.0.0.1:{port}/0"
    return [
        f"redis://:{WRONG}@{where}",
        f"redis://{USER}:{WRONG}@{where}",
        f"redis://{where}?password={WRONG}",
        f"redis://{where}?username={USER}&password={WRONG}&socket_keepalive=true",
    ]


def chain_with_locals(error: BaseException) -> str:
    exc = traceback.TracebackException.from_exception(error, capture_locals=True)
    return "".join(exc.format())


def shown(record: logging.LogRecord) -> list[str]:
    """Everything a handler may print of a record: its message, its arguments, their chains."""
    texts = [logging.Formatter().format(record), repr(record.args), repr(record.msg)]
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        texts += [str(arg), repr(arg)]
        if isinstance(arg, BaseException):
            texts.append(chain_with_locals(arg))
    return texts


@pytest.mark.parametrize("index", range(4))
async def test_a_wrong_store_password_is_shown_nowhere(locked_redis, server, caplog, index):
    """A store refusing the password: the call goes on unshared, and neither the password nor
    the user name is in the store's repr, a log record (its arguments and their chains,
    rendered with locals), a warning or an event."""
    url = store_urls(locked_redis.port)[index]
    store = RedisThrottleStore(url, timeout=5.0)
    events: list[object] = []
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with sp.AsyncPersonaClient(
            KEY, base_url=server.base_url, throttle_store=store, event_hooks=[events.append]
        ) as client:
            persona = await client.generate_persona(**FIELDS)
            texts = [repr(store), str(store), repr(client)]
    assert persona.persona_id
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1
    assert "AuthenticationError: invalid username-password pair" in unavailable[0].getMessage()
    for record in caplog.records:
        texts += shown(record)
    texts += [str(w.message) for w in caught]
    texts += [repr(event) for event in events]
    assert f"127.0.0.1:{locked_redis.port}" in texts[0]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    await store.aclose()


def test_the_repr_masks_every_secret_a_url_can_carry():
    """The userinfo whole (a password holding @ / : ? too), the values of username= and of
    every *password= parameter; the host and the other parameters are kept."""
    urls = [
        f"redis://{USER}:{WRONG}@h:1/0",
        f"redis://:{WRONG}@h:1/0",
        f"redis://{USER}@h:1/0",
        f"redis://{USER}:a@b/c?d:{WRONG}@h:1/0",
        f"rediss://h:1/0?db=2&password={WRONG}&username={USER}&ssl_password={RIGHT}",
        f"unix:///run/redis.sock?db=0&password={WRONG}",
    ]
    for url in urls:
        text = repr(RedisThrottleStore(url))
        assert "h:1/0" in text or "/run/redis.sock" in text
        for secret in SECRETS:
            assert secret not in text
    kept = repr(RedisThrottleStore(f"rediss://h:1/0?db=2&password={WRONG}"))
    assert kept == "<RedisThrottleStore rediss://h:1/0?db=2&password=***>"


@pytest.mark.parametrize(
    "url",
    [f"{USER}:{WRONG}@127.0.0.1:6379/0", f"http://{USER}:{WRONG}@h:1/0?password={WRONG}"],
)
def test_a_refused_store_url_is_shown_masked(url):
    """A URL of no scheme or the wrong one is refused, by the store and by the client, with
    its secrets masked in the message (the whole URL used to be shown when it had no ://)."""
    for make in (RedisThrottleStore, lambda u: sp.AsyncPersonaClient(KEY, throttle_store=u)):
        with pytest.raises(ValueError, match="redis://") as info:
            make(url)
        for text in (str(info.value), repr(info.value)):
            assert "***@" in text
            for secret in SECRETS:
                assert secret not in text
