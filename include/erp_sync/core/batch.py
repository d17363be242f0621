"""The values that flow between the pipeline's stages (extract -> validate -> transform -> load).

Extract yields `Page`s; validation and transform turn a run of pages into a `MappedBatch`; the loader
commits a `MappedBatch` in one transaction and answers with a `BatchResult`. Counting is per source
record (one invoice with 40 lines is one record): the conservation law is
`extracted == loaded_new + loaded_changed + skipped_unchanged + rejected`, where
`skipped_unchanged` also counts older copies of a record superseded by a newer one in the same batch.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the client imports this module; only `MappedBatch` needs pandas (~1.5 s to import)
    import pandas as pd

# Columns every staging row carries besides its business columns (the loader adds
# sync_batch_id, interface_status and loaded_at).
CONTROL_COLUMNS = ("source_system", "source_id", "source_version", "row_sha256")
# A header's digest of its child rows as loaded with it (ADR 0027), on mappings that declare it:
# the loader looks for removed child rows only where it changed.
CHILDREN_SHA256 = "children_sha256"


@dataclass(frozen=True)
class Rejection:
    """A record that could not be understood; stored in erp_sync.rejections, never dropped."""

    stream: str
    reason_code: str  # e.g. MISSING_ID, INVALID_FIELD, UNKNOWN_CURRENCY, NOT_AN_OBJECT, BAD_JSON
    message: str
    raw_payload: str  # exactly what arrived (JSON text of the record, or the raw body)
    source_id: str | None = None
    rejection_id: int | None = None  # set when replaying a stored rejection
    # The record came from a deletion event: its replay stages a tombstone, not a live row (ADR 0015).
    deleted: bool = False


@dataclass
class Page:
    """One HTTP page of one stream, as the client read it."""

    stream: str
    page_no: int
    url: str
    body: bytes  # the raw response body, exactly as received
    records: list[dict[str, Any]]  # selected records; for events, the event's data.object
    versions: list[int]  # per record: event `created`, the record's version field, or listing start
    problems: list[Rejection] = field(default_factory=list)  # records the client could not select
    # Older snapshots of an event listing the client dropped (`clients.pages.drop_superseded`): in
    # `body`, counted as extracted, never in `records`.
    superseded: int = 0
    # Keys whose record on this page is a deletion (an event of `IncrementalSpec.delete_event_types`):
    # staged as tombstones; their child lists are emptied, never fetched (ADR 0015).
    deleted_ids: frozenset[str] = frozenset()
    fetched_at: datetime | None = None
    # What the client fetched beyond the embedded heads of truncated child lists, as JSON pieces whose
    # concatenation is one list with an entry per completed list (empty: nothing fetched); with `body`
    # and `url`, what identifies the batch's input (`input_sha256`). The client hands over the
    # continuation pages as received, unjoined (`json_list_pieces`): joining copies megabytes a batch,
    # which a batch found committed (every batch of a replay) never needs; a stored page gives one
    # piece. `child_pages`: each entry is the list's continuation pages as received (raw bodies, never
    # re-serialised); False: the tail items themselves (pages stored before session 7).
    fetched_children: Sequence[bytes] = ()
    child_pages: bool = True
    # Set when `records` hold only what the stream's model reads (the client decodes pages narrow):
    # rebuilds the page's records whole from `stored_body()`, for what a rejection keeps.
    rebuild_whole: Callable[[bytes], list[dict[str, Any]]] | None = field(
        default=None, repr=False, compare=False
    )
    # Set when `records` hold only what the walk reads (keys, versions, child-list ids): the client
    # decoded the page for navigation only, as it does while a replay finds its batches committed.
    # `decode_records()` decodes the records the mapping reads from `stored_body()`.
    rebuild_records: Callable[[bytes], list[dict[str, Any]]] | None = field(
        default=None, repr=False, compare=False
    )
    _compressed: tuple[int, bytes, str] | None = field(default=None, init=False, repr=False, compare=False)
    _whole: list[dict[str, Any]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def extracted(self) -> int:
        return len(self.records) + len(self.problems) + self.superseded

    def whole_record(self, position: int) -> Any:
        """`records[position]` with every field it arrived with (decoded again from the stored body
        when the page was decoded narrow): a rejected record's raw payload loses nothing."""
        if self.rebuild_whole is None:
            return self.records[position]
        if self._whole is None:
            self._whole = self.rebuild_whole(self.stored_body())
        return self._whole[position]

    def decode_records(self) -> list[dict[str, Any]]:
        """`records` with what the stream's model reads, decoded now if the client decoded the page
        for navigation only (`rebuild_records`); the same records, in the same order."""
        if self.rebuild_records is not None:
            records = self.rebuild_records(self.stored_body())
            if len(records) != len(self.records):
                raise ValueError(
                    f"page {self.page_no} of {self.stream}: decoded {len(records)} records from its"
                    f" stored body, {len(self.records)} when it was read"
                )
            self.records, self.rebuild_records = records, None
        return self.records

    def stored_body(self) -> bytes:
        """What the outbox and the SFTP backups keep: `body`, or -- when the client completed
        truncated child lists -- `body` and the fetched tails in a page envelope (`envelope`), so a
        restore sees every line. Bytes are joined, nothing is re-serialised: rendering the completed
        page with orjson was 10% of a cold sync's CPU."""
        if not self.fetched_children:
            return self.body
        return envelope(self.body, self.fetched_children, child_pages=self.child_pages)

    def compressed(self, level: int) -> tuple[bytes, str]:
        """`stored_body()` gzipped at `level` (no timestamp: the same page gives the same bytes) and
        its sha256, computed once: the pipeline's map thread does it ahead of the load."""
        if self._compressed is None or self._compressed[0] != level:
            self._compressed = (level, *outbox_content(self.stored_body(), level))
        return self._compressed[1], self._compressed[2]


def outbox_content(raw: bytes, level: int) -> tuple[bytes, str]:
    """What the outbox keeps of `raw`: gzipped at `level` without a timestamp (the same bytes give the
    same file), and the sha256 of `raw` itself."""
    return gzip.compress(raw, compresslevel=level, mtime=0), hashlib.sha256(raw).hexdigest()


# A stored page whose child lists the client completed: the body exactly as received, then what it
# fetched for each truncated list, in the order `clients.pages.truncated_child_lists` visits them.
# Version 2 holds each list's continuation pages as received; version 1 (before session 7) held the
# tail items, re-serialised. The body's length is stated up front so the exact bytes come back.
_ENVELOPE_HEAD = b'{"erp_sync_page_envelope":'
ENVELOPE_KEY = _ENVELOPE_HEAD + b'1,"body_length":'
ENVELOPE_KEY_PAGES = _ENVELOPE_HEAD + b'2,"body_length":'
_ENVELOPE_BODY = b',"body":'
_ENVELOPE_TAILS = b',"fetched_children":'
_ENVELOPE_PAGES = b',"fetched_child_pages":'


def envelope(body: bytes, fetched_children: bytes | Sequence[bytes], *, child_pages: bool = False) -> bytes:
    """`body` (JSON, as received) and `fetched_children` (JSON, or pieces whose concatenation it is)
    as one JSON document: version 2 when `fetched_children` holds continuation pages
    (`child_pages`), else version 1."""
    key, label = (ENVELOPE_KEY_PAGES, _ENVELOPE_PAGES) if child_pages else (ENVELOPE_KEY, _ENVELOPE_TAILS)
    children = (fetched_children,) if isinstance(fetched_children, bytes) else fetched_children
    return b"".join((key, str(len(body)).encode(), _ENVELOPE_BODY, body, label, *children, b"}"))


def open_envelope(stored: bytes) -> tuple[bytes, bytes, bool] | None:
    """(body, fetched_children, child_pages) of an `envelope`; None when `stored` is a plain page
    body."""
    if stored.startswith(ENVELOPE_KEY_PAGES):
        key, label, child_pages = ENVELOPE_KEY_PAGES, _ENVELOPE_PAGES, True
    elif stored.startswith(ENVELOPE_KEY):
        key, label, child_pages = ENVELOPE_KEY, _ENVELOPE_TAILS, False
    else:
        return None
    length_end = stored.find(b",", len(key))
    length_text = stored[len(key) : length_end]
    start = length_end + len(_ENVELOPE_BODY)
    if length_end < 0 or not length_text.isdigit() or stored[length_end:start] != _ENVELOPE_BODY:
        raise ValueError("damaged page envelope: no body length")
    end = start + int(length_text)
    children_start = end + len(label)
    if stored[end:children_start] != label or not stored.endswith(b"}"):
        raise ValueError("damaged page envelope: the body length does not match its contents")
    return stored[start:end], stored[children_start:-1], child_pages


def join_json_lists(lists: list[list[bytes]]) -> bytes:
    """`[[a, b], [c]]` of JSON documents as one JSON array of arrays, by joining bytes."""
    return b"".join(json_list_pieces(lists))


def json_list_pieces(lists: list[list[bytes]]) -> list[bytes]:
    """The pieces of `join_json_lists(lists)`, the documents themselves not copied."""
    pieces = [b"["]
    for position, items in enumerate(lists):
        pieces.append(b",[" if position else b"[")
        for index, item in enumerate(items):
            if index:
                pieces.append(b",")
            pieces.append(item)
        pieces.append(b"]")
    pieces.append(b"]")
    return pieces


@dataclass
class MappedBatch:
    """Rows ready to load, one DataFrame per erp_staging table.

    `primary_table` holds exactly one row per accepted record (after in-batch dedupe); child tables
    (invoice lines) hang off it. Each DataFrame has the table's business columns plus
    CONTROL_COLUMNS (a header that keeps its children's digest has `CHILDREN_SHA256` between them);
    money columns hold `decimal.Decimal`, timestamps are tz-aware UTC.
    """

    source_system: str
    stream: str
    primary_table: str
    tables: dict[str, pd.DataFrame]
    rejections: list[Rejection]
    extracted: int  # records in the pages (accepted + superseded + rejected)
    superseded: int  # older in-batch copies dropped in favour of a newer version
    # Accepted records whose newest snapshot is a deletion: their primary rows are staged with
    # interface_status 'DELETED' and a tombstone row_sha256 (`tombstone_sha256`), no child rows.
    deleted_ids: frozenset[str] = frozenset()

    @property
    def accepted(self) -> int:
        return len(self.tables[self.primary_table])


@dataclass(frozen=True)
class BatchKey:
    """What makes a batch the same batch when a retried task rebuilds it."""

    run_id: str
    source_system: str
    stream: str
    window_start: datetime | None
    window_end: datetime | None
    input_sha256: str  # SHA-256 over the batch's raw page bodies in order


@dataclass(frozen=True)
class BatchResult:
    batch_id: int
    extracted: int
    loaded_new: int
    loaded_changed: int
    skipped_unchanged: int
    rejected: int
    rows_by_table: dict[str, int]  # rows actually written per table
    already_committed: bool = False  # a retry found this batch committed and returned its record

    def check_conservation(self) -> None:
        total = self.loaded_new + self.loaded_changed + self.skipped_unchanged + self.rejected
        if total != self.extracted:
            raise ConservationError(
                f"batch {self.batch_id}: extracted {self.extracted} != new {self.loaded_new} + changed "
                f"{self.loaded_changed} + unchanged {self.skipped_unchanged} + rejected {self.rejected}"
            )


class ConservationError(RuntimeError):
    """The batch's counts do not add up: something was lost or counted twice."""
