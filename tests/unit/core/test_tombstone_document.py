"""The outbox document of a repair's tombstone batch (ADR 0022), pure: it encodes to stable bytes,
decodes to what was encoded, and a document that does not hold together is refused with a message
that names the file and what is wrong."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from erp_sync.core.batch import BatchKey
from erp_sync.core.tombstone_document import (
    FORMAT,
    TombstoneDocument,
    TombstoneDocumentError,
    decode_document,
    encode_document,
)
from erp_sync.core.tombstones import Evidence, GoneRecord, tombstone_input_sha256
from erp_sync.store.tombstones import TombstoneRequest

WHERE = "raw/stripe/invoices/2026/11/27/reconcile-1/b00042-p0001.json.gz"
ASKED = datetime(2026, 11, 27, 9, 30, 15, 123456, tzinfo=UTC)
GONE = (
    GoneRecord("in_2", Evidence.RESOURCE_MISSING, "No such invoice: 'in_2'"),
    GoneRecord("in_1", Evidence.DELETED_STUB, None),
)


def _document(**changes: Any) -> TombstoneDocument:
    fields: dict[str, Any] = {
        "source_system": "stripe",
        "stream": "invoices",
        "primary_table": "ar_invoices",
        "child_tables": ("ar_invoice_lines",),
        "report_id": 42,
        "looked_up_at": ASKED,
        "gone": GONE,
    }
    return TombstoneDocument(**(fields | changes))


def _content(**changes: Any) -> dict[str, Any]:
    return json.loads(encode_document(_document())) | changes


def _bytes(content: dict[str, Any]) -> bytes:
    return json.dumps(content).encode()


def test_a_document_decodes_to_what_was_encoded() -> None:
    decoded = decode_document(encode_document(_document()), WHERE)

    assert decoded == _document(gone=(GONE[1], GONE[0]))  # the records, sorted by id
    assert decoded.version == int(ASKED.timestamp()) and decoded.looked_up_at == ASKED
    assert decoded.input_sha256 == tombstone_input_sha256(
        "stripe", "invoices", "ar_invoices", ["in_1", "in_2"]
    )


def test_the_bytes_depend_only_on_what_was_asked_and_answered() -> None:
    shuffled = _document(
        gone=(GONE[1], GONE[0], GONE[1]), looked_up_at=ASKED.astimezone(timezone(timedelta(hours=5)))
    )

    assert encode_document(shuffled) == encode_document(_document())
    content = json.loads(encode_document(_document()))
    assert content["format"] == FORMAT and content["report_id"] == 42
    assert content["looked_up_at"] == "2026-11-27T09:30:15.123456+00:00"
    assert content["gone"] == [
        {"source_id": "in_1", "evidence": "deleted_stub", "api_message": None},
        {"source_id": "in_2", "evidence": "resource_missing", "api_message": "No such invoice: 'in_2'"},
    ]


def test_a_request_and_its_document_carry_the_same_batch() -> None:
    key = BatchKey("reconcile-1", "stripe", "invoices", None, None, "digest")
    request = TombstoneRequest(key, "ar_invoices", ("ar_invoice_lines",), GONE, 42, ASKED)

    document = request.document()
    again = TombstoneRequest.from_document(key, decode_document(encode_document(document), WHERE))

    assert document == _document()
    assert (again.version, again.report_id, again.looked_up_at) == (request.version, 42, ASKED)
    assert sorted(again.gone, key=lambda g: g.source_id) == sorted(GONE, key=lambda g: g.source_id)
    assert again.document().input_sha256 == document.input_sha256
    with pytest.raises(ValueError, match="customers"):
        TombstoneRequest.from_document(replace(key, stream="customers"), document)


def test_encoding_refuses_a_naive_time() -> None:
    with pytest.raises(TombstoneDocumentError, match="timezone-aware"):
        encode_document(_document(looked_up_at=ASKED.replace(tzinfo=None)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x1f\x8b\x08", "not a JSON tombstone document"),
        (b"[1, 2]", "a JSON object, not list"),
        (
            _bytes(_content(format="erp-sync-backup-manifest/1")),
            "not an erp-sync-repair-tombstones/1 document",
        ),
        (_bytes({k: v for k, v in _content().items() if k != "report_id"}), r"lacks \['report_id'\]"),
        (_bytes(_content(stream="")), "stream must be a non-empty string"),
        (_bytes(_content(child_tables="ar_invoice_lines")), "child_tables must be a list of table names"),
        (_bytes(_content(report_id=True)), "report_id must be an integer"),
        (_bytes(_content(looked_up_at="2026-11-27T09:30:15")), "looked_up_at must be a timezone-aware"),
        (_bytes(_content(looked_up_at="yesterday")), "looked_up_at must be a timezone-aware"),
        (_bytes(_content(gone=[])), "gone must be a non-empty list"),
        (
            _bytes(_content(gone=[{"source_id": "in_1", "evidence": "resource_missing"}])),
            "a gone record has exactly",
        ),
        (
            _bytes(_content(gone=[{"source_id": "in_1", "evidence": "timeout", "api_message": None}])),
            "gone record in_1: evidence 'timeout' is none of",
        ),
        (
            _bytes(_content(gone=[{"source_id": "in_1", "evidence": "deleted_stub", "api_message": 404}])),
            "api_message must be a string or null",
        ),
        (_bytes(_content(gone=_content()["gone"] * 2)), r"gone lists \['in_1', 'in_2'\] more than once"),
        (_bytes(_content(version=int(ASKED.timestamp()) + 1)), "version 1795771816 is not looked_up_at"),
        (
            _bytes(_content(gone=_content()["gone"][:1])),  # a record removed, its digest kept
            "input_sha256 .* does not match its gone ids",
        ),
        (_bytes(_content(table="ar_receipts")), "input_sha256 .* does not match"),
    ],
)
def test_a_document_that_does_not_hold_together_is_refused_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(TombstoneDocumentError, match=message) as refused:
        decode_document(data, WHERE)

    assert str(refused.value).startswith(f"{WHERE}: ")
