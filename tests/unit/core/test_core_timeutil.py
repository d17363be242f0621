"""Time helpers: unix seconds and ISO-8601 to tz-aware UTC; naive input refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from erp_sync.core.timeutil import (
    NaiveDatetimeError,
    ensure_utc,
    from_unix,
    parse_iso8601,
    to_unix,
    utc_iso,
)


def test_from_unix_is_tz_aware_utc() -> None:
    moment = from_unix(1234567890)
    assert moment == datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert from_unix(0) == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", [1.5, 1234567890.0, True, "1234567890", None])
def test_from_unix_accepts_only_ints(bad: object) -> None:
    with pytest.raises(TypeError):
        from_unix(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01T10:00:00+02:00", datetime(2024, 3, 1, 8, tzinfo=UTC)),
        ("2024-03-01T00:30:00-05:30", datetime(2024, 3, 1, 6, tzinfo=UTC)),
        ("2024-03-01T10:00:00.123456+00:00", datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-03-01 10:00:00+00:00", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_iso8601_normalises_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_iso8601(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["2024-03-01T10:00:00", "2024-03-01", "2024-03-01T10:00"])
def test_parse_iso8601_requires_an_offset(text: str) -> None:
    with pytest.raises(NaiveDatetimeError):
        parse_iso8601(text)


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01T10:00:00Z", "2024-03-01T25:00:00Z", ""])
def test_parse_iso8601_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso8601(text)


def test_ensure_utc_and_to_unix() -> None:
    plus_two = datetime(2024, 3, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    assert ensure_utc(plus_two) == datetime(2024, 3, 1, 8, tzinfo=UTC)
    assert ensure_utc(plus_two).tzinfo is UTC
    assert to_unix(from_unix(1234567890)) == 1234567890
    assert to_unix(plus_two) == to_unix(datetime(2024, 3, 1, 8, tzinfo=UTC))
    with pytest.raises(NaiveDatetimeError):
        ensure_utc(datetime(2024, 3, 1, 10))
    with pytest.raises(NaiveDatetimeError):
        to_unix(datetime(2024, 3, 1, 10))


def test_utc_iso_is_one_fixed_format() -> None:
    assert utc_iso(from_unix(1234567890)) == "2009-02-13T23:31:30.000000Z"
    plus_two = datetime(2024, 3, 1, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert utc_iso(plus_two) == "2024-03-01T08:00:00.000005Z"
