"""Time: everything is a tz-aware UTC `datetime`; naive datetimes are refused, never guessed."""

from __future__ import annotations

from datetime import UTC, datetime


class NaiveDatetimeError(ValueError):
    """A timestamp without a UTC offset: its instant is unknowable, so it is refused."""


def from_unix(seconds: int) -> datetime:
    """Unix seconds (Stripe's `created`) -> tz-aware UTC datetime. Floats and bools are refused."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"unix seconds must be an int, got {type(seconds).__name__}")
    return datetime.fromtimestamp(seconds, tz=UTC)


def to_unix(moment: datetime) -> int:
    """Tz-aware datetime -> whole unix seconds (sub-second part truncated toward the past)."""
    return int(ensure_utc(moment).timestamp() // 1)


def ensure_utc(moment: datetime) -> datetime:
    """Return `moment` converted to UTC; raise `NaiveDatetimeError` if it has no offset."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise NaiveDatetimeError(f"datetime {moment.isoformat()} has no UTC offset")
    return moment.astimezone(UTC)


def parse_iso8601(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that carries an offset (`Z` or `+hh:mm`); return it in UTC.

    `"2024-03-01T10:00:00+02:00"` -> `2024-03-01 08:00:00+00:00`. A date-only or offset-less
    string raises `NaiveDatetimeError`; anything unparseable raises `ValueError`.
    """
    if not isinstance(text, str):
        raise TypeError(f"ISO-8601 timestamp must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if len(stripped) < 11 or stripped[10] not in "Tt ":
        raise NaiveDatetimeError(f"{text!r} is not a date-time with a UTC offset")
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO-8601 timestamp") from exc
    return ensure_utc(parsed)


def utc_iso(moment: datetime) -> str:
    """Canonical text of an instant: `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC (always microseconds).

    Used by row hashing, so it must not depend on how the datetime was built.
    """
    return ensure_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
