"""Canonical row hashing: stable across processes, vectorised == per row, sensitive to every field."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from erp_sync.core.hashing import (
    combine_digests,
    frame_key_digest,
    frame_row_sha256,
    key_digest,
    row_sha256,
)

INCLUDE = Path(__file__).resolve().parents[3] / "include"

BASE_ROW: dict[str, Any] = {
    "customer_ref": "cus_123",
    "invoice_number": "INV-0001",
    "status": "open",
    "currency_code": "USD",
    "total_amount": Decimal("10.50"),
    "issued_at": datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
    "due_at": None,
    "line_number": 1,
    "description": "Ünïcode ✓ line\nwith newline",
}
# Pinned: if this changes, every ledger entry and stored row_sha256 changes -> a full rewrite.
BASE_ROW_SHA256 = "76e2a90764abab4dde43ac648c5c4061323ae0f2a5b72c1fcf707c25b6980fbc"

HASH_IN_CHILD = """
import json, sys
from datetime import datetime
from decimal import Decimal
from erp_sync.core.hashing import row_sha256
row = json.loads(sys.argv[1])
row["total_amount"] = Decimal(row["total_amount"])
row["issued_at"] = datetime.fromisoformat(row["issued_at"])
print(row_sha256(row))
"""


@pytest.mark.slow  # starts Python processes (pandas import)
def test_same_input_same_hash_in_another_process() -> None:
    payload = json.dumps({**BASE_ROW, "total_amount": "10.50", "issued_at": "2024-03-01T10:00:00+00:00"})
    hashes = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(INCLUDE)}
        out = subprocess.run(
            [sys.executable, "-c", HASH_IN_CHILD, payload],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        hashes.add(out.stdout.strip())
    assert hashes == {row_sha256(BASE_ROW)}


def test_hash_is_pinned_across_versions() -> None:
    assert row_sha256(BASE_ROW) == BASE_ROW_SHA256


def test_hash_is_sha256_of_the_documented_encoding() -> None:
    row = {
        "f": True,
        "a": "x✓",
        "b": Decimal("1.50"),
        "c": None,
        "d": -5,
        "e": datetime(2024, 3, 1, 10, tzinfo=UTC),
    }
    text = "rowhash/v1K1:aS2:x✓K1:bD1.50;K1:cNK1:dI-5;K1:eT2024-03-01T10:00:00.000000Z;K1:fB1"
    assert row_sha256(row) == hashlib.sha256(text.encode()).hexdigest()


def test_key_order_does_not_matter() -> None:
    reversed_row = dict(reversed(list(BASE_ROW.items())))
    assert row_sha256(reversed_row) == row_sha256(BASE_ROW)


def test_same_instant_in_any_offset_hashes_the_same() -> None:
    plus_two = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert row_sha256({**BASE_ROW, "issued_at": plus_two}) == row_sha256(BASE_ROW)
    as_timestamp = pd.Timestamp("2024-03-01T10:00:00Z")
    assert row_sha256({**BASE_ROW, "issued_at": as_timestamp}) == row_sha256(BASE_ROW)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customer_ref", "cus_124"),
        ("customer_ref", None),
        ("invoice_number", ""),
        ("status", "paid"),
        ("currency_code", "EUR"),
        ("total_amount", Decimal("10.51")),
        ("total_amount", Decimal("-10.50")),
        ("total_amount", Decimal("10.5")),  # a different exponent is a different canonical text
        ("total_amount", "10.50"),  # a string is not the Decimal
        ("issued_at", datetime(2024, 3, 1, 10, 0, 1, tzinfo=UTC)),
        ("issued_at", None),
        ("due_at", datetime(2024, 3, 31, tzinfo=UTC)),
        ("due_at", ""),
        ("line_number", 2),
        ("line_number", "1"),
        ("line_number", True),
        ("description", "Ünïcode ✓ line with newline"),
    ],
)
def test_any_business_field_change_changes_the_hash(field: str, value: Any) -> None:
    assert row_sha256({**BASE_ROW, field: value}) != row_sha256(BASE_ROW)


def test_adding_or_renaming_a_field_changes_the_hash() -> None:
    assert row_sha256({**BASE_ROW, "extra": None}) != row_sha256(BASE_ROW)
    renamed = {("status_code" if k == "status" else k): v for k, v in BASE_ROW.items()}
    assert row_sha256(renamed) != row_sha256(BASE_ROW)


def test_field_boundaries_are_unambiguous() -> None:
    assert row_sha256({"a": "bc", "d": ""}) != row_sha256({"a": "b", "d": "c"})
    assert row_sha256({"a": "x", "b": None}) != row_sha256({"a": "xN"})


def test_negative_zero_is_zero() -> None:
    assert row_sha256({"amount": Decimal("-0.00")}) == row_sha256({"amount": Decimal("0.00")})


def test_large_and_tiny_decimals_hash_in_fixed_point() -> None:
    # Would be scientific notation in str(); canonical text is fixed-point so both forms agree.
    assert row_sha256({"a": Decimal("1E+3")}) == row_sha256({"a": Decimal("1000")})
    assert row_sha256({"a": Decimal("1E-7")}) == row_sha256({"a": Decimal("0.0000001")})


@pytest.mark.parametrize("bad", [1.5, datetime(2024, 1, 1), Decimal("NaN"), object(), [1]])
def test_refuses_floats_naive_datetimes_and_unknown_types(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        row_sha256({"x": bad})


def _varied_rows() -> list[dict[str, Any]]:
    rows = []
    offsets = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    for n in range(300):
        rows.append(
            {
                "text": None if n % 7 == 0 else f"row {n} ✓ ,;:\n" * (n % 3),
                "money": None if n % 11 == 0 else Decimal(n * 37 - 5000).scaleb(-(n % 4)),
                "when": None
                if n % 13 == 0
                else datetime(2020, 1, 1, tzinfo=offsets[n % 3])
                + timedelta(seconds=n * 86_399, microseconds=n),
                "count": n - 150,
                "maybe_count": None if n % 5 == 0 else n,
                "flag": n % 2 == 0,
                "mixed": [None, "a", 3, Decimal("1.10")][n % 4],
            }
        )
    return rows


def test_vectorised_equals_per_row_on_object_columns() -> None:
    rows = _varied_rows()
    frame = pd.DataFrame({key: pd.Series([row[key] for row in rows], dtype=object) for key in rows[0]})
    assert frame_row_sha256(frame, frame.columns).tolist() == [row_sha256(row) for row in rows]


def test_vectorised_equals_per_row_on_typed_columns() -> None:
    rows = _varied_rows()
    frame = pd.DataFrame(
        {
            **_common_columns(rows),
            "maybe_count": pd.array([row["maybe_count"] for row in rows], dtype="Int64"),
            "flag": np.asarray([row["flag"] for row in rows], dtype=bool),
            "mixed": pd.Series([row["mixed"] for row in rows], dtype=object),
        }
    )
    frame.index = pd.RangeIndex(1000, 1300)
    hashes = frame_row_sha256(frame, frame.columns)
    assert list(hashes.index) == list(frame.index)
    assert hashes.tolist() == [row_sha256(row) for row in rows]


def test_vectorised_hashes_only_the_named_columns() -> None:
    rows = _varied_rows()[:20]
    frame = pd.DataFrame({key: pd.Series([row[key] for row in rows], dtype=object) for key in rows[0]})
    expected = [row_sha256({"text": row["text"], "count": row["count"]}) for row in rows]
    assert frame_row_sha256(frame, ["text", "count"]).tolist() == expected


def test_vectorised_refuses_naive_datetime_columns() -> None:
    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-01T00:00:00"])})
    with pytest.raises(TypeError, match="naive"):
        frame_row_sha256(frame, ["when"])


def test_key_digest_hides_the_id_and_is_deterministic() -> None:
    digest = key_digest("stripe", "cus_123")
    assert digest == hashlib.sha256(b"stripe|cus_123").hexdigest()[:32]
    assert len(digest) == 32 and "cus_123" not in digest
    assert key_digest("orders_api", "cus_123") != digest
    assert frame_key_digest("stripe", ["cus_123", "cus_124"]) == [digest, key_digest("stripe", "cus_124")]


def test_combine_digests_is_order_sensitive() -> None:
    a, b = row_sha256({"x": 1}), row_sha256({"x": 2})
    assert combine_digests([a, b]) != combine_digests([b, a])
    assert combine_digests([a]) != combine_digests([a, a])


def _complete_rows() -> list[dict[str, Any]]:
    """Rows with no missing value (each column one type: the vectorised paths without a None), with
    `%`, braces, a lone surrogate and a NUL in keys and values."""
    offsets = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    texts = ["", "plain", "Ünïcode ✓ \n", "100% {x} %s %d %%", "\ud800 lone surrogate", "\x00nul"]
    return [
        {
            "text": texts[n % len(texts)] * (n % 3 + 1),
            "money": Decimal(n * 37 - 5000).scaleb(-(n % 4)),
            "when": datetime(2020, 1, 1, tzinfo=offsets[n % 3])
            + timedelta(seconds=n * 86_399, microseconds=n),
            "count": n - 150,
            "100%s {k}": f"key with a % sign {n}",
        }
        for n in range(300)
    ]


def _common_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Text, Decimal money, tz-aware timestamps and int64 counts, typed as the mapping types them."""
    return {
        "text": pd.Series([row["text"] for row in rows], dtype=object),
        "money": pd.Series([row["money"] for row in rows], dtype=object),
        "when": pd.Series(pd.to_datetime([row["when"] for row in rows], utc=True)).astype(
            "datetime64[us, UTC]"
        ),
        "count": np.asarray([row["count"] for row in rows], dtype=np.int64),
    }


def _typed_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            **_common_columns(rows),
            "nullable_count": pd.array([row["count"] for row in rows], dtype="Int64"),
            "100%s {k}": pd.Series([row["100%s {k}"] for row in rows], dtype=object),
        }
    )


def test_vectorised_equals_per_row_on_columns_without_missing_values() -> None:
    rows = _complete_rows()
    frame = _typed_frame(rows)
    expected = [row_sha256({**row, "nullable_count": row["count"]}) for row in rows]
    assert frame_row_sha256(frame, frame.columns).tolist() == expected


@pytest.mark.parametrize(
    "value",
    [Decimal("-0.00"), Decimal("1E+3"), Decimal("1E-7"), Decimal("-0.5"), Decimal("-12.30")],
)
def test_vectorised_equals_per_row_on_decimals_str_would_not_write_canonically(value: Decimal) -> None:
    values = [Decimal("1.10"), value, Decimal("0")]
    frame = pd.DataFrame({"money": pd.Series(values, dtype=object)})
    assert frame_row_sha256(frame, ["money"]).tolist() == [row_sha256({"money": v}) for v in values]


def test_vectorised_on_no_rows_and_no_columns() -> None:
    frame = _typed_frame([])
    assert frame_row_sha256(frame, frame.columns).tolist() == []
    assert frame_row_sha256(_typed_frame(_complete_rows()[:2]), []).tolist() == [row_sha256({})] * 2


@pytest.mark.parametrize("column", ["text", "money", "when", "nullable_count"])
def test_vectorised_equals_per_row_with_one_missing_value(column: str) -> None:
    rows = _complete_rows()[:20]
    frame = _typed_frame(rows)
    frame.loc[7, column] = pd.NA if column == "nullable_count" else None
    expected = [
        row_sha256({**row, "nullable_count": row["count"], **({column: None} if n == 7 else {})})
        for n, row in enumerate(rows)
    ]
    assert frame_row_sha256(frame, frame.columns).tolist() == expected
