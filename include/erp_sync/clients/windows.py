"""Which window a stream run extracts, decided in one pure function the log can explain.

Windows are half-open, `[start, end)`, and start is inclusive (`created[gte]`), so a record stamped
exactly at the previous cursor is read again rather than dropped; the lookback re-reads a little
more to cover events the source published late. Re-reads are harmless: the load is idempotent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, NamedTuple

WindowMode = Literal["full", "incremental"]
DEFAULT_LOOKBACK = timedelta(minutes=10)


class Window(NamedTuple):
    mode: WindowMode
    start: datetime | None  # None: from the beginning of time (full refresh)
    end: datetime
    reason: str


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")


def compute_window(
    cursor: datetime | None,
    data_interval_end: datetime | None,
    params_start: datetime | None,
    params_end: datetime | None,
    now: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
    retention_days: int | None = 30,
) -> Window:
    """The run's window and why.

    - manual window (params): `[params_start, params_end or now)`; a missing start means cursor -
      lookback;
    - scheduled run: `[cursor - lookback, data_interval_end)`;
    - neither (Airflow 3 manual run without a logical date): `[cursor - lookback, now)`;
    - no cursor, or a start older than the source keeps events (`retention_days`): a full refresh
      by created window, with the reason spelled out for the task log.
    """
    for name, value in (
        ("cursor", cursor),
        ("data_interval_end", data_interval_end),
        ("params_start", params_start),
        ("params_end", params_end),
        ("now", now),
    ):
        _require_aware(name, value)
    if lookback < timedelta(0):
        raise ValueError("lookback must not be negative")

    end = params_end or data_interval_end or now
    if params_start is not None:
        start, origin = params_start, "manual window from params"
    elif cursor is not None:
        start, origin = cursor - lookback, f"cursor {cursor.isoformat()} - lookback {lookback}"
    else:
        return Window("full", None, end, "no cursor yet (first run): full refresh by created window")
    if params_start is not None and params_end is None and data_interval_end is None:
        origin += ", up to now"

    if retention_days is not None and start < now - timedelta(days=retention_days):
        reason = (
            f"window start {start.isoformat()} is older than the source's {retention_days}-day event "
            "retention: events may be gone, so full refresh by created window"
        )
        if params_start is not None:
            return Window("full", start, end, reason)
        return Window("full", None, end, reason)
    if start >= end:
        return Window(
            "incremental", end, end, f"{origin}: start is not before end {end.isoformat()}, empty window"
        )
    return Window("incremental", start, end, origin)
