"""The pure parts of the tombstones that wait for their records (ADR 0026): the key of the batch that
stages them at last, the stored document read back, and what the restore reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from erp_sync.backup.restore import RestoreResult, _restore_batch_key
from erp_sync.core.tombstone_document import TombstoneDocument, encode_document
from erp_sync.core.tombstones import Evidence, GoneRecord
from erp_sync.store.deferred_tombstones import (
    BackedUpFile,
    RestoredDocument,
    _waiting_document,
    waiting_batch_key,
)

ASKED = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
PERIOD = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
DOCUMENT = TombstoneDocument(
    "stripe", "invoices", "ar_invoices", ("ar_invoice_lines",), 42, ASKED,
    (GoneRecord("in_1", Evidence.RESOURCE_MISSING, "No such invoice: 'in_1'"), GoneRecord("in_2", Evidence.DELETED_STUB)),
)  # fmt: skip
BACKUP = BackedUpFile("raw/stripe/invoices/2026/11/27/reconcile-1/b00007-p0001.json.gz", "a" * 64, "b" * 64)
RESTORED = RestoredDocument(DOCUMENT, *PERIOD, BACKUP)


def test_the_waiting_batch_has_the_original_window_and_never_the_documents_own_restored_key() -> None:
    key = waiting_batch_key("restore__2", RESTORED, ["in_1", "in_2"])
    own = _restore_batch_key(
        "restore__2", "stripe", "invoices",
        {"window_start": PERIOD[0].isoformat(), "window_end": PERIOD[1].isoformat()}, DOCUMENT.input_sha256,
    )  # fmt: skip

    assert (key.run_id, key.source_system, key.stream, key.window_start, key.window_end) == (
        own.run_id, own.source_system, own.stream, own.window_start, own.window_end,
    )  # fmt: skip
    assert key.input_sha256 != own.input_sha256


def test_the_waiting_batch_key_is_the_same_on_a_retry_and_differs_by_records_and_restore() -> None:
    key = waiting_batch_key("restore__2", RESTORED, ["in_2", "in_1"])

    assert key == waiting_batch_key("restore__2", RESTORED, ["in_1", "in_2"])
    assert key != waiting_batch_key("restore__2", RESTORED, ["in_1"])
    assert key != waiting_batch_key("restore__3", RESTORED, ["in_1", "in_2"])


def test_a_stored_document_reads_back_as_the_document_restored() -> None:
    row = (encode_document(DOCUMENT).decode(), *PERIOD, BACKUP.path, "a" * 64, "b" * 64, False, ["in_2"])

    waiting = _waiting_document(row)

    assert waiting.restored == RESTORED and waiting.waiting == ("in_2",) and not waiting.in_outbox


def test_the_restore_reports_the_tombstones_that_waited_and_those_still_waiting() -> None:
    result = RestoreResult(tombstoned=3, tombstoned_after_waiting=2, tombstones_waiting=5)

    reported = result.as_dict()

    assert (reported["tombstoned"], reported["tombstoned_after_waiting"], reported["tombstones_waiting"]) == (
        3,
        2,
        5,
    )
    assert json.loads(json.dumps(reported)) == reported  # small and JSON-safe, for XCom
