"""The repair's tombstones (ADR 0020): records a drift report found missing in the SaaS, and that the
SaaS confirms gone, are staged as deleted, as a deletion event would have staged them (ADR 0015).

    before the repair writes anything (`look_up_gone`), per stream of the report:
        GET its by-id path (header only) for each of its `missing_in_saas` ids, `child_concurrency` at
        once; a stream that declares none is not asked, and says so (ADR 0023)
        each answer: gone (a 404 with one of the stream's gone codes, or a `"deleted": true` stub),
        exists (ADR 0017's case: left alone) or unconfirmed (another 404: left alone); any other
        failure raises
        refuse (`TombstoneLimitError`) as soon as the gone pass `max_tombstones`, or
        `max_tombstone_share` of the ERP records the report compared for the stream
    then, per stream with gone records (`stage_gone`): one recorded batch
        (`store.tombstones.stage_tombstones`), found committed when a retry asks again

A full refresh cannot see a deletion (the object is simply not listed), and Stripe keeps deletion
events 30 days; without this, a record deleted while no delta read its events stays live in staging,
and every report of its period lists it missing in the SaaS.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from erp_sync.clients.sources import SourceClients
from erp_sync.core.batch import BatchKey
from erp_sync.core.batching import chunked, each_in_flight
from erp_sync.core.tombstones import (
    GoneRecord,
    LookupAnswer,
    TombstonePolicy,
    Verdict,
    evidence_of,
    limit_error,
    shown,
    tombstone_input_sha256,
    verdict_of,
)
from erp_sync.store import drift
from erp_sync.store.tombstones import TombstoneRequest, stage_tombstones
from erp_sync.streams import get_stream
from erp_sync.streams.spec import NO_BY_ID_LOOKUP, StreamSpec

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 100  # ids asked for between two checks of the limits


@dataclass
class StreamLookups:
    """What the lookups by id answered for one stream's `missing_in_saas` records."""

    stream: str
    candidates: int
    erp_records: int
    asked: int = 0
    gone: list[GoneRecord] = field(default_factory=list)
    exists: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    not_asked_because: str | None = None  # the stream declares no by-id path: none was asked

    @property
    def gone_ids(self) -> list[str]:
        return [g.source_id for g in self.gone]


@dataclass
class StreamTombstones:
    """One stream's tombstones: what was asked, what the SaaS answered, what was staged."""

    stream: str
    asked: int
    gone: int
    still_in_saas: int
    unconfirmed: int
    tombstoned: list[str] = field(default_factory=list)
    not_tombstoned: dict[str, int] = field(default_factory=dict)  # outcome -> count
    batch_id: int | None = None
    already_committed: bool = False

    def summary(self) -> dict[str, Any]:
        """Small and JSON-safe: the re-check report's summary and the task's XCom carry it."""
        return {
            "asked": self.asked,
            "gone": self.gone,
            "tombstoned": len(self.tombstoned),
            "tombstoned_ids": shown(self.tombstoned),
            "not_tombstoned": dict(self.not_tombstoned),
            "still_in_saas": self.still_in_saas,
            "unconfirmed": self.unconfirmed,
            "batch_id": self.batch_id,
        }


def missing_in_saas_ids(conn: Any, report_id: int) -> dict[str, list[str]]:
    """stream -> the ids report `report_id` found missing in the SaaS (sorted)."""
    found: dict[str, set[str]] = {}
    for item in drift.iter_items(conn, report_id):
        if item["kind"] == "missing_in_saas":
            found.setdefault(item["stream"], set()).add(item["source_id"])
    conn.rollback()
    return {stream: sorted(ids) for stream, ids in found.items()}


def erp_records_compared(report: Mapping[str, Any], stream: str) -> int:
    """How many ERP records the report compared for `stream` (0 when it does not say)."""
    records = (report.get("summary") or {}).get("records") or {}
    return int((records.get(stream) or {}).get("erp") or 0)


def look_up_gone(
    conn: Any, clients: SourceClients, report: Mapping[str, Any], policy: TombstonePolicy
) -> dict[str, StreamLookups]:
    """Ask the SaaS for every `missing_in_saas` record of the report, stream by stream, each through
    its source system's client; raises
    `TombstoneLimitError` as soon as a stream's gone records pass a limit. Writes nothing. A stream
    that declares no by-id path is not asked (`not_asked_because`)."""
    if not policy.enabled:
        return {}
    found: dict[str, StreamLookups] = {}
    for stream, ids in missing_in_saas_ids(conn, int(report["report_id"])).items():
        spec = get_stream(stream)
        lookups = StreamLookups(stream, len(ids), erp_records_compared(report, stream))
        found[stream] = lookups
        if not spec.looks_up_by_id:
            lookups.not_asked_because = NO_BY_ID_LOOKUP
            continue
        _look_up_stream(clients.for_spec(spec), spec, ids, lookups, policy)
        log.info(
            "repair tombstones %s: asked %d, gone %d, still in the SaaS %d, unconfirmed 404 %d",
            stream, lookups.asked, len(lookups.gone), len(lookups.exists), len(lookups.unconfirmed),
        )  # fmt: skip
    return found


def _look_up_stream(
    client: Any, spec: StreamSpec, ids: Sequence[str], lookups: StreamLookups, policy: TombstonePolicy
) -> None:
    header_spec = replace(spec, children=())  # the header answers the question; no line requests
    for chunk in chunked(ids, LOOKUP_CHUNK):
        for answer in lookup_records(client, header_spec, chunk):
            _classify(answer, lookups)
        lookups.asked += len(chunk)
        param = policy.exceeded_by(len(lookups.gone), lookups.erp_records)
        if param is not None:
            raise limit_error(
                spec.name, param=param, gone_ids=lookups.gone_ids, asked=lookups.asked,
                candidates=lookups.candidates, erp_records=lookups.erp_records, policy=policy,
            )  # fmt: skip


def _classify(answer: LookupAnswer, lookups: StreamLookups) -> None:
    evidence = evidence_of(answer)
    if evidence is not None:
        lookups.gone.append(GoneRecord(answer.source_id, evidence, answer.message))
    elif verdict_of(answer) is Verdict.UNCONFIRMED:
        lookups.unconfirmed.append(answer.source_id)
    else:
        lookups.exists.append(answer.source_id)


def lookup_records(client: Any, spec: StreamSpec, ids: Sequence[str]) -> list[LookupAnswer]:
    """`client.lookup_record` for each id, up to the client's `child_concurrency` in flight; the
    answers in the ids' order. The first failure (other than a 404) raises."""
    return each_in_flight(
        lambda source_id: client.lookup_record(spec, source_id),
        ids,
        int(getattr(client, "child_concurrency", 1)),
        "lookup-gone",
    )


def stage_gone(
    *,
    conn: Any,
    ledger: Any,
    redis_client: Any,
    namespace: str,
    lookups: Mapping[str, StreamLookups],
    report: Mapping[str, Any],
    run_id: str,
    looked_up_at: datetime,
    lock_timeout_s: float = 600.0,
) -> dict[str, StreamTombstones]:
    """Stage each stream's gone records as tombstones, one recorded batch per stream."""
    from erp_sync.store.counters import next_batch_id

    staged: dict[str, StreamTombstones] = {}
    for stream, found in sorted(lookups.items()):
        if found.not_asked_because is not None:
            continue  # reported with the repair's skipped streams
        outcome = StreamTombstones(
            stream, found.asked, len(found.gone), len(found.exists), len(found.unconfirmed)
        )
        staged[stream] = outcome
        if not found.gone:
            continue
        request = tombstone_request(get_stream(stream), found.gone, report, run_id, looked_up_at)
        batch = stage_tombstones(
            conn, ledger, request, batch_id=next_batch_id(redis_client, namespace, conn),
            lock_timeout_s=lock_timeout_s,
        )  # fmt: skip
        outcome.tombstoned = batch.tombstoned
        outcome.not_tombstoned = dict(Counter(o for o in batch.outcomes.values() if o != "tombstoned"))
        if batch.result is not None:
            outcome.batch_id = batch.result.batch_id
            outcome.already_committed = batch.result.already_committed
        log.info(
            "repair tombstones %s: batch %s%s: %d tombstoned %s, not tombstoned %s",
            stream, outcome.batch_id, " (committed before)" if outcome.already_committed else "",
            len(outcome.tombstoned), shown(outcome.tombstoned), outcome.not_tombstoned,
        )  # fmt: skip
    return staged


def tombstone_request(
    spec: StreamSpec,
    gone: Sequence[GoneRecord],
    report: Mapping[str, Any],
    run_id: str,
    looked_up_at: datetime,
) -> TombstoneRequest:
    """The batch of one stream's tombstones, keyed by the report's period and the gone ids."""
    table = spec.target_tables[0]
    digest = tombstone_input_sha256(spec.source_system, spec.name, table, (g.source_id for g in gone))
    key = BatchKey(
        run_id, spec.source_system, spec.name, report["period_start"], report["period_end"], digest
    )
    return TombstoneRequest(
        key=key,
        primary_table=table,
        child_tables=tuple(spec.target_tables[1:]),
        gone=tuple(gone),
        report_id=int(report["report_id"]),
        looked_up_at=looked_up_at,
    )
