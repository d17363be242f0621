"""compute_window: every rule the DAG relies on to decide what a run extracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from erp_sync.clients.windows import compute_window

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
DIE = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
CURSOR = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
TEN = timedelta(minutes=10)


def test_scheduled_run_reads_from_cursor_minus_lookback_to_interval_end() -> None:
    w = compute_window(CURSOR, DIE, None, None, NOW)
    assert (w.mode, w.start, w.end) == ("incremental", CURSOR - TEN, DIE)


def test_lookback_is_configurable() -> None:
    w = compute_window(CURSOR, DIE, None, None, NOW, lookback=timedelta(hours=1))
    assert w.start == CURSOR - timedelta(hours=1)


def test_manual_window_from_params() -> None:
    start, end = datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC)
    w = compute_window(CURSOR, None, start, end, NOW)
    assert (w.mode, w.start, w.end) == ("incremental", start, end)
    assert "manual" in w.reason


def test_manual_start_only_runs_up_to_now() -> None:
    start = datetime(2026, 11, 10, tzinfo=UTC)
    assert compute_window(CURSOR, None, start, None, NOW)[1:3] == (start, NOW)


def test_no_logical_date_reads_cursor_minus_lookback_to_now() -> None:
    w = compute_window(CURSOR, None, None, None, NOW)
    assert (w.mode, w.start, w.end) == ("incremental", CURSOR - TEN, NOW)


def test_no_cursor_means_full_refresh_with_a_reason() -> None:
    w = compute_window(None, DIE, None, None, NOW)
    assert (w.mode, w.start, w.end) == ("full", None, DIE)
    assert "no cursor" in w.reason


def test_cursor_older_than_event_retention_falls_back_to_full_refresh() -> None:
    old = NOW - timedelta(days=31)
    w = compute_window(old, DIE, None, None, NOW, retention_days=30)
    assert (w.mode, w.start, w.end) == ("full", None, DIE)
    assert "30-day event retention" in w.reason


def test_cursor_just_inside_retention_stays_incremental() -> None:
    recent = NOW - timedelta(days=29)
    assert compute_window(recent, DIE, None, None, NOW, retention_days=30).mode == "incremental"


def test_no_retention_limit_never_falls_back() -> None:
    ancient = NOW - timedelta(days=400)
    assert compute_window(ancient, DIE, None, None, NOW, retention_days=None).mode == "incremental"


def test_a_record_stamped_exactly_at_the_cursor_is_inside_the_next_window() -> None:
    """The window is [start, end) with start <= cursor: a same-second tie is read again, never dropped."""
    w = compute_window(CURSOR, DIE, None, None, NOW, lookback=timedelta(0))
    assert w.start is not None and w.start <= CURSOR < w.end


def test_cursor_past_the_interval_gives_an_empty_window() -> None:
    w = compute_window(DIE + timedelta(hours=1), DIE, None, None, NOW)
    assert w.start == w.end == DIE and "empty" in w.reason


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_window(datetime(2026, 11, 25), DIE, None, None, NOW)


def test_result_unpacks_as_a_tuple() -> None:
    mode, start, end, reason = compute_window(CURSOR, DIE, None, None, NOW)
    assert (mode, start, end) == ("incremental", CURSOR - TEN, DIE) and isinstance(reason, str)


def _slicer(slices: int):
    from erp_sync.clients import BearerSecretKey, SaaSClient

    return SaaSClient("https://api.example.invalid", BearerSecretKey("sk_test_x"), window_slices=slices)


def test_a_window_is_cut_into_equal_whole_second_slices_newest_first() -> None:
    from erp_sync.streams import get_stream

    start = datetime(2026, 11, 26, 0, 0, 0, 250_000, tzinfo=UTC)
    end = datetime(2026, 11, 27, 0, 0, 0, 750_000, tzinfo=UTC)
    slices = _slicer(4).slices_of(get_stream("invoices"), "incremental", start, end)
    assert len(slices) == 4
    assert slices[0][1] == end and slices[-1][0] == start  # the outer bounds are the window's own
    for newer, older in pairwise(slices):
        assert older[1] == newer[0]  # no gap, no overlap
    inner = [s[0] for s in slices[:-1]]
    assert all(b.microsecond == 0 for b in inner)
    assert [s[1] - s[0] for s in slices[1:-1]] == [timedelta(hours=6)] * 2


@pytest.mark.parametrize(
    ("stream", "mode", "start", "slices"),
    [
        ("orders", "incremental", NOW - timedelta(days=1), 1),  # updated_since: not listed by created
        ("invoices", "full", None, 1),  # a window without a start is not cut
        ("invoices", "incremental", NOW - timedelta(seconds=2), 2),  # no slice shorter than a second
        ("invoices", "full", NOW - timedelta(days=1), 4),
    ],
)
def test_only_windows_listed_by_created_with_a_start_are_cut(stream, mode, start, slices) -> None:
    from erp_sync.streams import get_stream

    assert len(_slicer(4).slices_of(get_stream(stream), mode, start, NOW)) == slices


def test_window_slices_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window_slices"):
            _slicer(bad)  # type: ignore[arg-type]
