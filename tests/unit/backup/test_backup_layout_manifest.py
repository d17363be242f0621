"""Pure parts of the backup: remote paths, manifest documents, restore parameters."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest

from erp_sync.backup import manifest as m
from erp_sync.backup.errors import ManifestError
from erp_sync.backup.layout import (
    manifest_path,
    path_part,
    raw_page_path,
    report_path,
    run_id_from_manifest_name,
)
from erp_sync.backup.restore import RestoreSelection, validate_restore_params
from erp_sync.store.outbox import OutboxRow

T = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)


def test_raw_page_path_follows_the_documented_layout() -> None:
    assert (
        raw_page_path("stripe", "invoices", T, "scheduled__2026-03-09T02:00:00+00:00", 42, 3)
        == "raw/stripe/invoices/2026/03/09/scheduled__2026-03-09T02:00:00+00:00/42-3.json.gz"
    )


def test_raw_page_day_is_the_utc_day() -> None:
    plus_two = T.astimezone(timezone(timedelta(hours=2)))  # 01:30 on the 10th locally
    assert "/2026/03/09/" in raw_page_path("stripe", "customers", plus_two, "r", 1, 1)


@pytest.mark.parametrize("run_id", ["a/b", "../../etc", ".tmp-x", "x%2Fy", "manual__2026 01"])
def test_path_parts_cannot_escape_or_collide(run_id: str) -> None:
    part = path_part(run_id)
    assert "/" not in part and not part.startswith(".") and unquote(part) == run_id
    assert run_id_from_manifest_name(manifest_path(run_id).split("/", 1)[1]) == run_id


def test_manifest_listing_ignores_temporary_uploads_and_strays() -> None:
    assert run_id_from_manifest_name(".tmp-r1.json-abc123") is None
    assert run_id_from_manifest_name("notes.txt") is None
    assert path_part("a/b") != path_part("a_b")
    with pytest.raises(ValueError):
        path_part("")


def test_report_path_is_by_month_and_refuses_directories() -> None:
    assert report_path("drift.json", T) == "reports/2026/03/drift.json"
    for bad in ("", "../x.json", "a/b.json", ".hidden", "a\\b"):
        with pytest.raises(ValueError):
            report_path(bad, T)


def _row(batch_id: int, page_no: int, created: datetime) -> OutboxRow:
    return OutboxRow(
        outbox_id=batch_id * 10 + page_no, batch_id=batch_id, run_id="r1", source_system="stripe",
        stream="customers", page_no=page_no, url=f"https://x/v1/customers?p={page_no}",
        page_meta={"mode": "full", "default_version": 1}, record_count=2, sha256="b" * 64, created_at=created,
        backed_up_at=None, remote_path=None, backup_sha256=None,
    )  # fmt: skip


def test_manifest_records_files_totals_and_stream_cursors() -> None:
    rows = [_row(1, 1, T), _row(1, 2, T), _row(2, 1, T + timedelta(minutes=5))]
    files = [m.file_entry(r, f"raw/{r.outbox_id}", r.page_no, "a" * 64, 100) for r in rows]
    batches = [
        {"batch_id": 2, "source_system": "stripe", "stream": "customers", "cursor_before": T,
         "cursor_after": T + timedelta(hours=1)},
        {"batch_id": 1, "source_system": "stripe", "stream": "customers", "cursor_before": T, "cursor_after": None},
    ]  # fmt: skip
    doc = m.build_manifest("r1", rows, files, batches, written_at=T)
    assert doc["batch_ids"] == [1, 2] and [b["batch_id"] for b in doc["batches"]] == [1, 2]
    assert doc["totals"] == {"files": 3, "bytes": 4, "raw_bytes": 300, "records": 6}
    assert doc["streams"] == {
        "stripe/customers": {
            "cursor_before": T.isoformat(),
            "cursor_after": (T + timedelta(hours=1)).isoformat(),
        }
    }
    assert (
        doc["first_page_at"] == T.isoformat()
        and doc["last_page_at"] == (T + timedelta(minutes=5)).isoformat()
    )
    assert m.loads(m.dumps(doc), "here") == json.loads(m.dumps(doc))
    assert m.dumps(doc) == m.dumps(json.loads(m.dumps(doc)))  # stable bytes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not a JSON manifest"),
        (b'{"format": "other"}', "not an erp-sync"),
        (json.dumps({"format": m.FORMAT, "files": "x"}).encode(), "no file list"),
        (json.dumps({"format": m.FORMAT, "files": [{"path": "p"}]}).encode(), "lacks"),
    ],
)
def test_bad_manifests_are_named(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        m.loads(data, "manifests/x.json")


def test_manifest_times_must_be_aware() -> None:
    assert m.parse_time("2026-03-09T23:30:00+00:00") == T
    assert m.parse_time(None) is None
    with pytest.raises(ManifestError):
        m.parse_time("2026-03-09T23:30:00")


def test_restore_params_pick_one_run_or_a_date_range() -> None:
    assert validate_restore_params(" r1 ") == RestoreSelection("r1")
    assert validate_restore_params(None, "2026-03-01", "") == RestoreSelection(None, date(2026, 3, 1), None)
    assert validate_restore_params("", date(2026, 3, 1), date(2026, 3, 1)).date_to == date(2026, 3, 1)
    with pytest.raises(ValueError, match="not both"):
        validate_restore_params("r1", date_to="2026-03-01")
    with pytest.raises(ValueError, match="after date_to"):
        validate_restore_params(date_from="2026-03-02", date_to="2026-03-01")
    with pytest.raises(ValueError, match="not a datetime"):
        validate_restore_params(date_from=T)


def test_a_date_range_selects_runs_whose_pages_overlap_it() -> None:
    doc = {
        "run_id": "r1",
        "first_page_at": "2026-03-09T23:30:00+00:00",
        "last_page_at": "2026-03-10T00:10:00+00:00",
    }
    assert RestoreSelection(None, date(2026, 3, 10), date(2026, 3, 12)).matches(doc)
    assert RestoreSelection(None, None, date(2026, 3, 9)).matches(doc)
    assert not RestoreSelection(None, date(2026, 3, 11), None).matches(doc)
    assert not RestoreSelection(None, None, date(2026, 3, 8)).matches(doc)
    assert RestoreSelection("r1").matches(doc) and not RestoreSelection("r2").matches(doc)
