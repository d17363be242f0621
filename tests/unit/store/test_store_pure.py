"""Pure helpers of the store: exact CSV for COPY, record counting, migration discovery, lock keys."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from erp_sync.core.batch import MappedBatch, Rejection
from erp_sync.store.faults import CRASH_ENV
from erp_sync.store.loader import (
    _count,
    _csv_field,
    _csv_lines,
    _CsvStream,
    _headers_to_retire_under,
    _TableOutcome,
)
from erp_sync.store.locks import stream_lock_key
from erp_sync.store.migrations import MigrationError, discover


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (pd.NaT, ""),
        (pd.NA, ""),
        (float("nan"), ""),
        ("", '""'),
        ('say "hi", then\nleave', '"say ""hi"", then\nleave"'),
        (Decimal("1500"), '"1500"'),
        (Decimal("3.125"), '"3.125"'),
        (Decimal("1E+3"), '"1000"'),
        (Decimal("0.000001"), '"0.000001"'),
        (Decimal("-12345678901234567.125"), '"-12345678901234567.125"'),
        (True, '"true"'),
        (42, '"42"'),
        (2.0, '"2"'),
        (datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), '"2026-01-02T03:04:05.600000+00:00"'),
        (
            datetime(2026, 1, 2, 3, tzinfo=timezone(timedelta(hours=9))),
            '"2026-01-02T03:00:00+09:00"',
        ),
    ],
)
def test_csv_field_is_exact_and_keeps_null_apart_from_empty(value, text):
    assert _csv_field(value) == text


@pytest.mark.parametrize("value", [0.1, Decimal("NaN"), Decimal("Infinity"), datetime(2026, 1, 1)])
def test_csv_field_refuses_floats_non_finite_and_naive(value):
    with pytest.raises((TypeError, ValueError)):
        _csv_field(value)


def test_csv_stream_round_trips_through_a_csv_reader_in_small_chunks():
    df = pd.DataFrame({"a": ["x,y", None, 'q"q'], "b": [Decimal("1.10"), Decimal("2"), None]})
    stream = _CsvStream(_csv_lines(df, ["a", "b"]))
    chunks = []
    while chunk := stream.read(5):
        chunks.append(chunk)
    assert len(chunks) > 2
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert rows == [["x,y", "1.10"], ["", "2"], ['q"q', ""]]


def _mapped(ids: list[str], *, extracted: int, superseded: int = 0, rejections: int = 0) -> MappedBatch:
    head = pd.DataFrame({"source_system": "s", "source_id": ids, "source_version": 1, "row_sha256": "h"})
    rej = [Rejection("invoices", "BAD_JSON", "m", "{") for _ in range(rejections)]
    return MappedBatch(
        "s",
        "invoices",
        "ar_invoices",
        {"ar_invoices": head, "ar_invoice_lines": head.iloc[:0]},
        rej,
        extracted,
        superseded,
    )


def test_count_rolls_child_writes_up_to_their_record():
    mapped = _mapped(["a", "b", "c", "d"], extracted=7, superseded=2, rejections=1)
    outcomes = {
        "ar_invoices": _TableOutcome(written=2, inserted_ids={"a"}, updated_ids={"b"}),
        "ar_invoice_lines": _TableOutcome(
            written=3, inserted_ids={"a:1", "c:1"}, updated_ids={"b:1"}, touched_parents={"a", "b", "c"}
        ),
    }
    result = _count(mapped, 9, outcomes)
    assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged, result.rejected) == (
        1,
        2,
        3,
        1,
    )
    assert result.rows_by_table == {"ar_invoices": 2, "ar_invoice_lines": 3}
    result.check_conservation()


def test_count_of_an_empty_batch():
    result = _count(_mapped([], extracted=0), 1, {})
    assert (result.extracted, result.loaded_new, result.skipped_unchanged) == (0, 0, 0)
    result.check_conservation()


def test_discover_orders_and_rejects_bad_names(tmp_path: Path):
    (tmp_path / "V010__b.sql").write_text("SELECT 1;")
    (tmp_path / "V002__a.sql").write_text("SELECT 2;")
    (tmp_path / "README.md").write_text("not a migration")
    assert [m.version for m in discover(tmp_path)] == [2, 10]
    (tmp_path / "V002__dup.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="share version 2"):
        discover(tmp_path)
    (tmp_path / "V002__dup.sql").unlink()
    (tmp_path / "V3__short.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="badly named"):
        discover(tmp_path)


def test_stream_lock_keys_are_stable_signed_and_distinct():
    key = stream_lock_key("stripe", "invoices")
    assert key == stream_lock_key("stripe", "invoices")
    assert -(2**63) <= key < 2**63
    assert len({stream_lock_key("stripe", s) for s in ("invoices", "charges", "customers")}) == 3


def test_crash_point_kills_only_at_its_name():
    code = (
        "from erp_sync.store.faults import crash_point; crash_point('before_copy');"
        "print('alive', flush=True); crash_point('before_commit'); print('not reached')"
    )
    include = str(Path(__file__).resolve().parents[3] / "include")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={CRASH_ENV: "before_commit", "PYTHONPATH": include},
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == "alive\n"


# --- which headers the retire of removed lines looks under (ADR 0027) ---------------------------


def _primary(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"source_id": list(ids), "source_version": [2] * len(ids)})


def _batch_deleting(deleted: frozenset[str] = frozenset()) -> MappedBatch:
    return MappedBatch("stripe", "invoices", "ar_invoices", {}, [], 0, 0, deleted_ids=deleted)


def test_with_a_digest_only_headers_whose_children_changed_and_tombstones_are_looked_under() -> None:
    head = _TableOutcome(
        inserted_ids={"in_new"}, updated_ids={"in_paid", "in_cut"}, children_changed={"in_cut"}
    )
    chosen = _headers_to_retire_under(
        _primary("in_new", "in_paid", "in_cut", "in_gone", "in_skipped"),
        _batch_deleting(frozenset({"in_gone"})),
        head,
    )
    assert chosen["source_id"].tolist() == ["in_cut", "in_gone"]


def test_without_a_digest_every_header_but_the_inserted_is_looked_under() -> None:
    head = _TableOutcome(inserted_ids={"in_new"}, updated_ids={"in_paid"})
    chosen = _headers_to_retire_under(_primary("in_new", "in_paid", "in_skipped"), _batch_deleting(), head)
    assert chosen["source_id"].tolist() == ["in_paid", "in_skipped"]
    untouched = _headers_to_retire_under(_primary("in_a", "in_b"), _batch_deleting(), _TableOutcome())
    assert untouched["source_id"].tolist() == ["in_a", "in_b"]
