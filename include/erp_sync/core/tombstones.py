"""What proves a record gone from the SaaS, and when the repair must refuse to act on it (ADR 0020).

The repair asks the SaaS by id for each record a drift report found `missing_in_saas`. Two answers
prove the record gone: a 404 whose error code is one the stream declares gone (its
`GoneAnswerSpec`; Stripe's `resource_missing`, "No such invoice: 'in_...'", by default, ADR 0029),
and Stripe's stub for a deleted object (`{"id": ..., "deleted": true}`, answered for a deleted
customer). A record that comes back is left as ADR 0017 handles it. A 404 without such a code
proves nothing: a wrong base URL answers "Unrecognized request URL" with a 404 too. Every other
failure (5xx after the retries, a timeout, refused credentials) raises in the client and never
reaches this module.

A connection to the wrong account answers `resource_missing` for every id, so the gone records of a
stream are bounded: more than `max_per_stream`, or more than `max_share` of the ERP records the
report compared for the stream, and the repair refuses before it writes anything.

Pure: no I/O, no Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from erp_sync.streams.spec import STRIPE_GONE_CODE

DEFAULT_MAX_TOMBSTONES = 1_000
DEFAULT_MAX_TOMBSTONE_SHARE = Decimal("0.5")
# How many ids a summary, a log line or an error message names; the rest are counted.
IDS_SHOWN = 20


class Verdict(StrEnum):
    """What one lookup by id says about a record the ERP holds and the SaaS side lacked."""

    GONE = "gone"  # the SaaS confirms it no longer exists: stage a tombstone
    EXISTS = "exists"  # it is there (outside the period, say): ADR 0017's case, left alone
    UNCONFIRMED = "unconfirmed"  # a 404 that does not say the record is missing: left alone


class Evidence(StrEnum):
    """Why a record counts as gone (stored with its tombstone)."""

    # A 404 with an error code the stream declares gone (the value is Stripe's code, as stored since
    # ADR 0020, whatever code the stream's API used).
    RESOURCE_MISSING = "resource_missing"
    DELETED_STUB = "deleted_stub"  # 200 with `"deleted": true`


@dataclass(frozen=True)
class GoneRecord:
    """A record the SaaS answered as gone, with what it answered."""

    source_id: str
    evidence: Evidence
    api_message: str | None = None


def distinct_gone(gone: Iterable[GoneRecord]) -> list[GoneRecord]:
    """One record per source id (the last one given wins), sorted by id: what a batch records."""
    return sorted({g.source_id: g for g in gone}.values(), key=lambda g: g.source_id)


@dataclass(frozen=True)
class LookupAnswer:
    """What `GET {path}/{id}` answered: the record (200), or the 404 and its error code, with the
    codes that prove a record gone for the stream asked (`GoneAnswerSpec.codes`)."""

    source_id: str
    http_status: int
    record: Mapping[str, Any] | None = None
    error_code: str | None = None
    message: str | None = None
    gone_codes: tuple[str, ...] = (STRIPE_GONE_CODE,)

    @property
    def says_gone(self) -> bool:
        """A 404 whose error code is one the stream declares gone."""
        return self.http_status == 404 and self.error_code is not None and self.error_code in self.gone_codes


def evidence_of(answer: LookupAnswer) -> Evidence | None:
    """The answer's proof that the record is gone, or None."""
    if answer.http_status == 404:
        return Evidence.RESOURCE_MISSING if answer.says_gone else None
    if answer.record is not None and answer.record.get("deleted") is True:
        return Evidence.DELETED_STUB
    return None


def verdict_of(answer: LookupAnswer) -> Verdict:
    if evidence_of(answer) is not None:
        return Verdict.GONE
    return Verdict.UNCONFIRMED if answer.http_status == 404 else Verdict.EXISTS


@dataclass(frozen=True)
class TombstonePolicy:
    """The repair's tombstone settings (DAG params `repair_tombstones`, `max_tombstones`,
    `max_tombstone_share`)."""

    enabled: bool = True
    max_per_stream: int = DEFAULT_MAX_TOMBSTONES
    max_share: Decimal = DEFAULT_MAX_TOMBSTONE_SHARE

    def exceeded_by(self, gone: int, erp_records: int) -> str | None:
        """The param a stream's `gone` records exceed (checked in this order), or None.

        `erp_records` is how many ERP records the report compared for the stream; gone records are
        a subset of them, so a report that counted none makes every gone record 100%.
        """
        if gone > self.max_per_stream:
            return "max_tombstones"
        if gone and Decimal(gone) > self.max_share * max(erp_records, 0):
            return "max_tombstone_share"
        return None


class TombstoneLimitError(RuntimeError):
    """The SaaS answered more of a stream's records as gone than the repair may tombstone."""

    def __init__(self, stream: str, gone: int, param: str, message: str) -> None:
        super().__init__(message)
        self.stream = stream
        self.gone = gone
        self.param = param


def limit_error(
    stream: str,
    *,
    param: str,
    gone_ids: list[str],
    asked: int,
    candidates: int,
    erp_records: int,
    policy: TombstonePolicy,
) -> TombstoneLimitError:
    """The refusal, saying which stream, how many, which limit and what to do."""
    gone = len(gone_ids)
    so_far = "" if asked >= candidates else f" (stopped after {asked} of {candidates} lookups)"
    share = f"{Decimal(gone) / erp_records:.0%}" if erp_records else "all"
    limit = (
        f"max_tombstones={policy.max_per_stream}"
        if param == "max_tombstones"
        else f"max_tombstone_share={policy.max_share} of the {erp_records} ERP records the report compared"
    )
    message = (
        f"repair refused before any write: stream {stream}: the SaaS answers {gone} of the records the "
        f"report found missing in the SaaS as gone{so_far} ({share} of the period's ERP records), over "
        f"{limit}. A connection to the wrong account or base URL answers every lookup this way: check "
        f"the stream's connection. If the deletions are real, raise {param} for this run, or set "
        f"repair_tombstones=false to repair without tombstones. First ids: {shown(gone_ids)}"
    )
    return TombstoneLimitError(stream, gone, param, message)


def tombstone_input_sha256(source_system: str, stream: str, table: str, ids: Iterable[str]) -> str:
    """The batch digest of a repair's tombstones: the same gone ids give the same digest, however
    they were ordered or repeated, so a retried repair finds its batch committed."""
    text = "\n".join(["erp_sync:repair-tombstones:v1", source_system, stream, table, *sorted(set(ids))])
    return hashlib.sha256(text.encode()).hexdigest()


def shown(ids: Iterable[str], cap: int = IDS_SHOWN) -> list[str]:
    """The first `cap` ids, sorted."""
    return sorted(ids)[:cap]
