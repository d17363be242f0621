"""The outbox document of a repair's tombstone batch (ADR 0022): what a restore needs to stage the
batch's tombstones again, without asking the SaaS.

A deletion event leaves its raw page in the outbox, and a restore replays it. The repair's tombstones
come from lookups by id (ADR 0020), which leave no page; so the batch writes this document to the
outbox instead, in its own transaction, under the mode `TOMBSTONE_MODE`. The drain backs it up and
lists it in its run's manifest as it does a page, and the restore, after the manifest's size and
SHA-256 checks, decodes it here before it writes anything.

    {"format": "erp-sync-repair-tombstones/1", "source_system": ..., "stream": ..., "table": ...,
     "child_tables": [...], "report_id": 42, "looked_up_at": "<ISO, UTC>", "version": <unix s>,
     "input_sha256": <tombstone_input_sha256 of the gone ids>,
     "gone": [{"source_id": ..., "evidence": "resource_missing"|"deleted_stub", "api_message": ...}]}

The bytes depend only on what the repair asked and was answered (keys sorted, records sorted by id),
so the restore's re-staged batch writes the very document it read, and its outbox row is marked with
the verified remote copy instead of being uploaded again. `version` and `input_sha256` follow from the
other fields; they are stored for a reader of the file and checked on decoding.

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from erp_sync.core.tombstones import Evidence, GoneRecord, distinct_gone, tombstone_input_sha256

TOMBSTONE_MODE = "repair_tombstones"  # the outbox row's page_meta mode
FORMAT = "erp-sync-repair-tombstones/1"
_FIELDS = frozenset(
    {
        "format", "source_system", "stream", "table", "child_tables", "report_id", "looked_up_at",
        "version", "input_sha256", "gone",
    }
)  # fmt: skip
_GONE_FIELDS = frozenset({"source_id", "evidence", "api_message"})


class TombstoneDocumentError(ValueError):
    """A tombstone document that does not hold together; the message names where it was read."""


@dataclass(frozen=True)
class TombstoneDocument:
    """One stream's gone records as the repair staged them: the report, when it asked, what it heard."""

    source_system: str
    stream: str
    primary_table: str
    child_tables: tuple[str, ...]
    report_id: int
    looked_up_at: datetime
    gone: tuple[GoneRecord, ...]

    @property
    def version(self) -> int:
        """The tombstones' source_version: when the lookups began, in unix seconds."""
        return int(self.looked_up_at.timestamp())

    @property
    def input_sha256(self) -> str:
        """The digest the repair keyed its batch by (`core.tombstones.tombstone_input_sha256`)."""
        return tombstone_input_sha256(
            self.source_system, self.stream, self.primary_table, (g.source_id for g in self.gone)
        )

    @property
    def record_count(self) -> int:
        return len(distinct_gone(self.gone))


def encode_document(document: TombstoneDocument) -> bytes:
    """Stable bytes: the same records, however ordered or repeated, give the same document."""
    if document.looked_up_at.tzinfo is None:
        raise TombstoneDocumentError("looked_up_at must be timezone-aware")
    content = {
        "format": FORMAT,
        "source_system": document.source_system,
        "stream": document.stream,
        "table": document.primary_table,
        "child_tables": list(document.child_tables),
        "report_id": document.report_id,
        "looked_up_at": document.looked_up_at.astimezone(UTC).isoformat(),
        "version": document.version,
        "input_sha256": document.input_sha256,
        "gone": [
            {"source_id": g.source_id, "evidence": g.evidence.value, "api_message": g.api_message}
            for g in distinct_gone(document.gone)
        ],
    }
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_document(data: bytes, where: str) -> TombstoneDocument:
    """The document in `data`, checked whole; `TombstoneDocumentError` naming `where` says what is wrong."""
    content = _json_object(data, where)
    if content.get("format") != FORMAT:
        raise TombstoneDocumentError(f"{where}: not an {FORMAT} document (format {content.get('format')!r})")
    missing = _FIELDS - content.keys()
    if missing:
        raise TombstoneDocumentError(f"{where}: tombstone document lacks {sorted(missing)}")
    document = TombstoneDocument(
        source_system=_text(content, "source_system", where),
        stream=_text(content, "stream", where),
        primary_table=_text(content, "table", where),
        child_tables=_texts(content, "child_tables", where),
        report_id=_integer(content, "report_id", where),
        looked_up_at=_aware_time(content, "looked_up_at", where),
        gone=_gone_records(content.get("gone"), where),
    )
    _check_derived(document, content, where)
    return document


def _json_object(data: bytes, where: str) -> Mapping[str, Any]:
    try:
        content = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TombstoneDocumentError(f"{where}: not a JSON tombstone document ({exc})") from exc
    if not isinstance(content, dict):
        raise TombstoneDocumentError(
            f"{where}: a tombstone document is a JSON object, not {type(content).__name__}"
        )
    return content


def _text(content: Mapping[str, Any], name: str, where: str) -> str:
    value = content.get(name)
    if not isinstance(value, str) or not value:
        raise TombstoneDocumentError(f"{where}: {name} must be a non-empty string, not {value!r}")
    return value


def _texts(content: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = content.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TombstoneDocumentError(f"{where}: {name} must be a list of table names, not {value!r}")
    return tuple(value)


def _integer(content: Mapping[str, Any], name: str, where: str) -> int:
    value = content.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TombstoneDocumentError(f"{where}: {name} must be an integer, not {value!r}")
    return value


def _aware_time(content: Mapping[str, Any], name: str, where: str) -> datetime:
    value = content.get(name)
    wrong = TombstoneDocumentError(f"{where}: {name} must be a timezone-aware ISO timestamp, not {value!r}")
    if not isinstance(value, str):
        raise wrong
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise wrong from None
    if parsed.tzinfo is None:
        raise wrong
    return parsed.astimezone(UTC)


def _gone_records(value: Any, where: str) -> tuple[GoneRecord, ...]:
    if not isinstance(value, list) or not value:
        raise TombstoneDocumentError(f"{where}: gone must be a non-empty list of records")
    records = tuple(_gone_record(item, where) for item in value)
    repeated = _repeated(g.source_id for g in records)
    if repeated:
        raise TombstoneDocumentError(f"{where}: gone lists {sorted(repeated)[:5]} more than once")
    return records


def _gone_record(item: Any, where: str) -> GoneRecord:
    if not isinstance(item, dict) or item.keys() != _GONE_FIELDS:
        raise TombstoneDocumentError(
            f"{where}: a gone record has exactly {sorted(_GONE_FIELDS)}, not {item!r}"
        )
    source_id, evidence, message = item["source_id"], item["evidence"], item["api_message"]
    if not isinstance(source_id, str) or not source_id:
        raise TombstoneDocumentError(
            f"{where}: a gone record's source_id must be a non-empty string: {item!r}"
        )
    known = [e.value for e in Evidence]
    if evidence not in known:
        raise TombstoneDocumentError(
            f"{where}: gone record {source_id}: evidence {evidence!r} is none of {known}"
        )
    if message is not None and not isinstance(message, str):
        raise TombstoneDocumentError(
            f"{where}: gone record {source_id}: api_message must be a string or null"
        )
    return GoneRecord(source_id, Evidence(evidence), message)


def _repeated(values: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    repeated: set[str] = set()
    for value in values:
        (repeated if value in seen else seen).add(value)
    return repeated


def _check_derived(document: TombstoneDocument, content: Mapping[str, Any], where: str) -> None:
    """The stored version and digest must follow from the rest: a document edited by hand, or read
    wrong, does not."""
    version = _integer(content, "version", where)
    if version != document.version:
        raise TombstoneDocumentError(
            f"{where}: version {version} is not looked_up_at {content['looked_up_at']} ({document.version})"
        )
    if content["input_sha256"] != document.input_sha256:
        raise TombstoneDocumentError(
            f"{where}: input_sha256 {content['input_sha256']!r} does not match its gone ids, stream and "
            f"table ({document.input_sha256})"
        )
