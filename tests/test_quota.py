"""RateLimit header fields read into a ``Quota`` (``_quota.parse_quota``), pure."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from suno_persona._quota import Quota, parse_quota

NOW = 1_767_000_000.0


def parse(**fields):
    return parse_quota(CIMultiDict({k.replace("_", "-"): v for k, v in fields.items()}), now=NOW)


def test_the_ietf_structured_fields():
    """RateLimit-Policy q/w and RateLimit r/t, first item of each list."""
    quota = parse(
        RateLimit_Policy='"default";q=100;w=60, "day";q=1000;w=86400',
        RateLimit='"default";r=50;t=30',
    )
    assert quota == Quota(limit=100, window=60.0, remaining=50, reset=30.0)


def test_the_earlier_drafts_fields():
    quota = parse(RateLimit_Limit="10", RateLimit_Remaining="3", RateLimit_Reset="7")
    assert quota == Quota(limit=10, remaining=3, reset=7.0)


@pytest.mark.parametrize(("reset", "seconds"), [("42", 42.0), (str(int(NOW) + 90), 90.0)])
def test_x_ratelimit_with_a_reset_in_seconds_or_epoch_seconds(reset, seconds):
    quota = parse(X_RateLimit_Limit="60", X_RateLimit_Remaining="0", X_RateLimit_Reset=reset)
    assert quota == Quota(limit=60, remaining=0, reset=seconds)


def test_an_epoch_reset_is_read_against_the_replys_date():
    """A reset given as a moment counts from the reply's Date, not from this host's clock."""
    quota = parse(
        X_RateLimit_Remaining="0",
        X_RateLimit_Reset=str(int(NOW) + 90),
        Date=formatdate(NOW + 30, usegmt=True),
    )
    assert quota == Quota(remaining=0, reset=60.0)


@pytest.mark.parametrize(
    "fields",
    [
        {"X_RateLimit_Remaining": "-1"},
        {"X_RateLimit_Remaining": "1.5"},
        {"X_RateLimit_Remaining": "lots"},
        {"X_RateLimit_Remaining": "١٢"},
        {"RateLimit": '"default";r=x;t=y'},
    ],
)
def test_malformed_values_are_ignored(fields):
    """As with Retry-After, a value that is not a non-negative integer says nothing."""
    quota = parse(**fields)
    assert quota is None or quota.remaining is None


def test_no_fields_no_quota():
    assert parse(Content_Type="application/json") is None
    assert parse(X_RateLimit_Limit="60") is None  # a limit alone says nothing of when
