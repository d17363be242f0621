"""Before a restore writes anything, it decodes every repair tombstone document it verified and holds it
to its manifest entry and its stream's spec (ADR 0022): a document that does not is refused, naming
the file, with nothing written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from erp_sync.backup.errors import RestoreIntegrityError
from erp_sync.backup.restore import _VerifiedFile, read_tombstone_documents
from erp_sync.core.tombstone_document import TOMBSTONE_MODE, TombstoneDocument, encode_document
from erp_sync.core.tombstones import Evidence, GoneRecord

ASKED = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
DOCUMENT = TombstoneDocument(
    "stripe", "invoices", "ar_invoices", ("ar_invoice_lines",), 42, ASKED,
    (GoneRecord("in_1", Evidence.RESOURCE_MISSING, "No such invoice: 'in_1'"), GoneRecord("in_2", Evidence.DELETED_STUB)),
)  # fmt: skip


def _file(tmp_path: Path, data: bytes, batch_id: int = 7, page_no: int = 1, **entry: Any) -> _VerifiedFile:
    path = f"raw/stripe/invoices/2026/11/27/reconcile-1/b{batch_id:05d}-p{page_no:04d}.json.gz"
    local = tmp_path / f"{batch_id}-{page_no}.json"
    local.write_bytes(data)
    fields = {
        "path": path, "batch_id": batch_id, "page_no": page_no, "source_system": "stripe",
        "stream": "invoices", "record_count": 2, "page_meta": {"mode": TOMBSTONE_MODE},
    }  # fmt: skip
    return _VerifiedFile(fields | entry, local)


def test_documents_are_decoded_by_path_and_pages_left_alone(tmp_path: Path) -> None:
    page = _file(tmp_path, b'{"object": "list"}', batch_id=6, page_meta={"mode": "full"})
    document = _file(tmp_path, encode_document(DOCUMENT))

    found = read_tombstone_documents(None, [page, document])

    assert found == {document.entry["path"]: DOCUMENT}


def test_a_malformed_document_is_refused_naming_the_file(tmp_path: Path) -> None:
    content = json.loads(encode_document(DOCUMENT))
    content["gone"] = content["gone"][:1]  # one record dropped, the batch's digest kept
    item = _file(tmp_path, json.dumps(content).encode(), record_count=1)

    with pytest.raises(RestoreIntegrityError, match="does not match its gone ids") as refused:
        read_tombstone_documents(None, [item])

    assert str(refused.value).startswith(item.entry["path"]) and "nothing written" in str(refused.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"record_count": 3}, "holds 2 gone records of stripe/invoices, its manifest entry lists 3"),
        ({"stream": "customers"}, "its manifest entry lists 2 of stripe/customers"),
    ],
)
def test_a_document_must_be_the_batch_its_manifest_entry_names(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(RestoreIntegrityError, match=message):
        read_tombstone_documents(None, [_file(tmp_path, encode_document(DOCUMENT), **entry)])


def test_a_document_must_tombstone_the_tables_its_stream_stages(tmp_path: Path) -> None:
    wrong = TombstoneDocument(
        "stripe", "invoices", "ar_receipts", (), DOCUMENT.report_id, ASKED, DOCUMENT.gone
    )  # a document that decodes, over another stream's table

    with pytest.raises(
        RestoreIntegrityError, match=r"tombstones rows of \['ar_receipts'\], but stream invoices"
    ):
        read_tombstone_documents(None, [_file(tmp_path, encode_document(wrong))])


def test_one_document_per_batch(tmp_path: Path) -> None:
    data = encode_document(DOCUMENT)

    with pytest.raises(RestoreIntegrityError, match="batch 7 lists more than one tombstone document"):
        read_tombstone_documents(None, [_file(tmp_path, data), _file(tmp_path, data, page_no=2)])
