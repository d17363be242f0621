"""The column-at-a-time COPY CSV writes every value exactly as `_csv_field` does, row by row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from erp_sync.store.loader import _csv_field, _csv_lines


def _row_by_row(df: pd.DataFrame) -> bytes:
    """The reference: each value through `_csv_field`, as the loader used to build the payload."""
    return b"".join(
        (",".join(_csv_field(v) for v in row) + "\n").encode("utf-8")
        for row in df.itertuples(index=False, name=None)
    )


def _fast(df: pd.DataFrame, rows_per_chunk: int = 10_000) -> bytes:
    return b"".join(_csv_lines(df, list(df.columns), rows_per_chunk=rows_per_chunk))


MONEY = [
    Decimal("0.001"),
    Decimal("1E+3"),
    None,
    Decimal("-12345678901234567.125"),
    Decimal("0"),
    Decimal("99999999999999999.999"),
    Decimal("1500"),
    Decimal("3.125"),
    Decimal("-0.000"),
    Decimal("0.000001"),
]
TRICKY_TEXT = [
    'say "hi", then\nleave',
    "",
    None,
    "back\\slash",
    "ünïcødé ✓ 日本",
    ",",
    '"',
    "\r\n",
    "NULL",
    "\\N",
]


def test_mixed_frame_matches_the_row_by_row_reference():
    n = len(TRICKY_TEXT)
    df = pd.DataFrame(
        {
            "text_str_dtype": pd.Series(TRICKY_TEXT, dtype="str"),
            "text_object": pd.Series(TRICKY_TEXT, dtype=object),
            "money": MONEY,
            "count": np.arange(n, dtype="int64") - 3,
            "nullable_count": pd.array([1, None] * (n // 2), dtype="Int64"),
            "at_utc": pd.Series(
                [datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), None]
                + [datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(microseconds=i) for i in range(n - 2)]
            ),
            "at_tokyo": pd.Series([datetime(2026, 1, 2, 3, tzinfo=timezone(timedelta(hours=9)))] * n),
            "flag": [True, False] * (n // 2),
            "whole_float": [2.0, float("nan")] * (n // 2),
            "all_null": [None] * n,
            "mixed_object": ["a", Decimal("1.5"), 7, None, {"k": "v"}, [1], True, "z", Decimal("2"), ""],
        }
    )
    assert _fast(df) == _row_by_row(df)
    assert _fast(df, rows_per_chunk=3) == _row_by_row(df)


def test_empty_string_and_null_stay_distinct():
    df = pd.DataFrame({"a": pd.Series(["", None], dtype="str"), "b": pd.Series(["", None], dtype=object)})
    assert _fast(df) == b'"",""\n,\n'


def test_sub_microsecond_and_non_utc_timestamps_keep_their_exact_text():
    df = pd.DataFrame(
        {
            "ns": pd.Series(
                pd.to_datetime(["2026-01-01T00:00:00.000000001Z", "2026-01-01T00:00:00.000000000Z"])
            ),
            "tokyo": pd.Series(pd.to_datetime(["2026-01-01T09:00:00+09:00"] * 2)).dt.tz_convert("Asia/Tokyo"),
        }
    )
    assert _fast(df) == _row_by_row(df)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([Decimal("1"), Decimal("NaN")], dtype=object),
        pd.Series([Decimal("Infinity")], dtype=object),
        pd.Series([0.1, 1.0]),
        pd.Series([datetime(2026, 1, 1)], dtype=object),
    ],
)
def test_refuses_what_the_row_by_row_writer_refuses(column):
    with pytest.raises((TypeError, ValueError)):
        _fast(pd.DataFrame({"c": column}))


def test_whole_second_utc_timestamps_with_nulls_match_the_reference():
    seconds = pd.Series(pd.to_datetime([1_700_000_000, None, 1_600_000_000], unit="s", utc=True))
    df = pd.DataFrame({"at": seconds, "n": [1, 2, 3]})
    assert (
        _fast(df)
        == _row_by_row(df)
        == b'"2023-11-14T22:13:20+00:00","1"\n,"2"\n"2020-09-13T12:26:40+00:00","3"\n'
    )


@pytest.mark.parametrize("text", ["\x00", "a\x00b", '"\x00"'])
def test_refuses_text_holding_nul_instead_of_reading_it_as_null(text):
    df = pd.DataFrame({"c": pd.Series([text, None], dtype=object)})
    with pytest.raises(ValueError, match="NUL"):
        _fast(df)


def test_non_finite_decimal_is_named_in_the_error():
    df = pd.DataFrame({"money": pd.Series([Decimal("1.00"), None, Decimal("-Infinity")], dtype=object)})
    with pytest.raises(ValueError, match="-Infinity"):
        _fast(df)
