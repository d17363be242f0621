"""Tricky values survive the loader's COPY payload into real Postgres exactly (text, NULL, Decimal)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from erp_sync.store.loader import COPY_CHUNK_BYTES, _csv_lines, _CsvStream

pytestmark = pytest.mark.integration

TEXTS = [
    'say "hi", then\nleave',
    "",
    None,
    "back\\slash \\N",
    "ünïcødé ✓ 日本",
    "a,b,,c",
    '"',
    "\r\n",
    "NULL",
]
AMOUNTS = [
    Decimal("0.001"),
    Decimal("99999999999999999.999"),
    None,
    Decimal("-12345678901234567.125"),
    Decimal("0"),
    Decimal("1E+3"),
    Decimal("3.125"),
    Decimal("1500"),
    Decimal("-0.001"),
]


def test_tricky_values_round_trip_through_copy(conn):
    n = len(TEXTS)
    df = pd.DataFrame(
        {
            "t_str": pd.Series(TEXTS, dtype="str"),
            "t_obj": pd.Series(TEXTS, dtype=object),
            "amount": pd.Series(AMOUNTS, dtype=object),
            "n": range(n),
            "at": pd.Series([datetime(2026, 11, 1, 12, 0, 0, i * 100_001, tzinfo=UTC) for i in range(n)]),
        }
    )
    columns = list(df.columns)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE roundtrip (t_str text, t_obj text, amount numeric(20,3), n bigint,"
            " at timestamptz)"
        )
        cur.copy_expert(
            f"COPY roundtrip ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)",
            _CsvStream(_csv_lines(df, columns, rows_per_chunk=4)),
            size=COPY_CHUNK_BYTES,
        )
        cur.execute("SELECT t_str, t_obj, amount, n, at FROM roundtrip ORDER BY n")
        rows = cur.fetchall()
    conn.rollback()

    assert [r[0] for r in rows] == TEXTS  # '' stays '', None stays NULL, quotes/newlines/unicode exact
    assert [r[1] for r in rows] == TEXTS
    assert [r[2] for r in rows] == AMOUNTS
    assert all(isinstance(r[2], Decimal) for r in rows if r[2] is not None)
    assert str(rows[0][2]) == "0.001"
    assert [r[3] for r in rows] == list(range(n))
    assert [r[4] for r in rows] == list(df["at"])
