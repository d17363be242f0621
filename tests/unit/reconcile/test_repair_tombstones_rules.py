"""The repair's tombstone rules (ADR 0020), pure: what proves a record gone, the limits and their
refusal, the batch digest, the params, what becomes of each gone record, and the summary's cap."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from erp_sync.core.params import InvalidParamError
from erp_sync.core.tombstones import (
    DEFAULT_MAX_TOMBSTONE_SHARE,
    DEFAULT_MAX_TOMBSTONES,
    IDS_SHOWN,
    Evidence,
    LookupAnswer,
    TombstonePolicy,
    Verdict,
    evidence_of,
    limit_error,
    tombstone_input_sha256,
    verdict_of,
)
from erp_sync.reconcile_run import PARAM_NAMES, parse_request
from erp_sync.store.tombstones import _outcomes
from erp_sync.tombstone_repair import StreamTombstones, erp_records_compared

NOW = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.mark.parametrize(
    ("answer", "verdict", "evidence"),
    [
        (LookupAnswer("in_1", 404, error_code="resource_missing"), Verdict.GONE, Evidence.RESOURCE_MISSING),
        (LookupAnswer("in_1", 404), Verdict.UNCONFIRMED, None),
        (LookupAnswer("in_1", 404, error_code="url_invalid"), Verdict.UNCONFIRMED, None),
        # The stream's declared codes decide (ADR 0029), not Stripe's.
        (
            LookupAnswer("o_1", 404, error_code="not_found", gone_codes=("not_found",)),
            Verdict.GONE,
            Evidence.RESOURCE_MISSING,
        ),
        (
            LookupAnswer("o_1", 404, error_code="resource_missing", gone_codes=("not_found",)),
            Verdict.UNCONFIRMED,
            None,
        ),
        (
            LookupAnswer("cus_1", 200, record={"id": "cus_1", "deleted": True}),
            Verdict.GONE,
            Evidence.DELETED_STUB,
        ),
        (LookupAnswer("cus_1", 200, record={"id": "cus_1", "deleted": "true"}), Verdict.EXISTS, None),
        (LookupAnswer("cus_1", 200, record={"id": "cus_1", "deleted": False}), Verdict.EXISTS, None),
        (LookupAnswer("in_1", 200, record={"id": "in_1", "status": "open"}), Verdict.EXISTS, None),
    ],
)
def test_only_resource_missing_and_the_deleted_stub_prove_a_record_gone(
    answer: LookupAnswer, verdict: Verdict, evidence: Evidence | None
) -> None:
    assert verdict_of(answer) is verdict
    assert evidence_of(answer) == evidence


@pytest.mark.parametrize(
    ("gone", "erp_records", "exceeded"),
    [
        (0, 0, None),
        (3, 100, None),
        (5, 10, None),  # exactly the share is allowed
        (6, 10, "max_tombstone_share"),
        (1, 1, "max_tombstone_share"),  # every record of the period gone: what a wrong account looks like
        (1, 0, "max_tombstone_share"),  # a report that compared nothing cannot vouch for any
        (10, 1_000, None),
        (11, 1_000, "max_tombstones"),  # the count is checked first
    ],
)
def test_limits(gone: int, erp_records: int, exceeded: str | None) -> None:
    policy = TombstonePolicy(max_per_stream=10, max_share=Decimal("0.5"))
    assert policy.exceeded_by(gone, erp_records) == exceeded


def test_the_defaults_are_a_thousand_and_half() -> None:
    policy = TombstonePolicy()
    assert (policy.enabled, policy.max_per_stream, policy.max_share) == (True, 1_000, Decimal("0.5"))
    assert policy.exceeded_by(1_000, 2_000) is None
    assert policy.exceeded_by(1_001, 10_000) == "max_tombstones"


def test_the_refusal_names_the_stream_the_count_the_param_and_the_way_out() -> None:
    gone = [f"in_{i:03d}" for i in range(30)]
    error = limit_error(
        "invoices", param="max_tombstone_share", gone_ids=gone, asked=100, candidates=240, erp_records=40,
        policy=TombstonePolicy(),
    )  # fmt: skip
    text = str(error)
    assert (error.stream, error.gone, error.param) == ("invoices", 30, "max_tombstone_share")
    assert "stream invoices" in text and "30 of the records" in text
    assert "stopped after 100 of 240 lookups" in text and "75%" in text
    assert "max_tombstone_share=0.5 of the 40 ERP records" in text
    assert "raise max_tombstone_share" in text and "repair_tombstones=false" in text
    assert "in_019" in text and "in_020" not in text  # the first ids, capped
    whole = limit_error(
        "charges", param="max_tombstones", gone_ids=gone, asked=240, candidates=240, erp_records=500,
        policy=TombstonePolicy(max_per_stream=20),
    )  # fmt: skip
    assert "over max_tombstones=20" in str(whole) and "stopped" not in str(whole)


def test_the_batch_digest_covers_the_set_of_gone_ids_and_where_they_are() -> None:
    digest = tombstone_input_sha256("stripe", "invoices", "ar_invoices", ["in_2", "in_1"])
    assert digest == tombstone_input_sha256("stripe", "invoices", "ar_invoices", ["in_1", "in_2", "in_1"])
    assert len(digest) == 64
    others = {
        tombstone_input_sha256("stripe", "invoices", "ar_invoices", ["in_1"]),
        tombstone_input_sha256("stripe", "invoices", "ar_invoices", ["in_1", "in_2", "in_3"]),
        tombstone_input_sha256("stripe", "charges", "ar_invoices", ["in_1", "in_2"]),
        tombstone_input_sha256("orders_api", "invoices", "ar_invoices", ["in_1", "in_2"]),
    }
    assert digest not in others and len(others) == 4


def test_the_params_default_to_the_policy_defaults() -> None:
    assert {"repair_tombstones", "max_tombstones", "max_tombstone_share"} <= PARAM_NAMES
    policy = parse_request({}, now=NOW).tombstones
    assert policy == TombstonePolicy(True, DEFAULT_MAX_TOMBSTONES, DEFAULT_MAX_TOMBSTONE_SHARE)


def test_the_params_are_parsed_exactly() -> None:
    conf = {"repair_tombstones": False, "max_tombstones": 5, "max_tombstone_share": 0.1}
    policy = parse_request(conf, now=NOW).tombstones
    assert policy == TombstonePolicy(False, 5, Decimal("0.1"))
    assert parse_request({"max_tombstone_share": 1}, now=NOW).tombstones.max_share == Decimal(1)
    assert parse_request({"max_tombstone_share": "0.25"}, now=NOW).tombstones.max_share == Decimal("0.25")


@pytest.mark.parametrize(
    ("conf", "name"),
    [
        ({"repair_tombstones": "no"}, "repair_tombstones"),
        ({"max_tombstones": 0}, "max_tombstones"),
        ({"max_tombstones": -1}, "max_tombstones"),
        ({"max_tombstones": "10"}, "max_tombstones"),
        ({"max_tombstones": True}, "max_tombstones"),
        ({"max_tombstones": 2.5}, "max_tombstones"),
        ({"max_tombstone_share": 0}, "max_tombstone_share"),
        ({"max_tombstone_share": 1.5}, "max_tombstone_share"),
        ({"max_tombstone_share": -0.1}, "max_tombstone_share"),
        ({"max_tombstone_share": "half"}, "max_tombstone_share"),
        ({"max_tombstone_share": "NaN"}, "max_tombstone_share"),
        ({"max_tombstone_share": True}, "max_tombstone_share"),
        ({"max_tombstone_share": [0.5]}, "max_tombstone_share"),
    ],
)
def test_a_bad_param_is_refused_by_name(conf: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidParamError) as refused:
        parse_request(conf, now=NOW)
    assert refused.value.name == name and name in str(refused.value)


def test_max_tombstones_zero_points_at_the_opt_out() -> None:
    with pytest.raises(InvalidParamError, match="repair_tombstones=false"):
        parse_request({"max_tombstones": 0}, now=NOW)


def test_each_gone_record_is_tombstoned_only_when_staged_live_and_not_newer() -> None:
    stored = {
        "in_live": ("a" * 64, 1_000, "PENDING"),
        "in_same_second": ("b" * 64, 2_000, "PENDING"),
        "in_newer": ("c" * 64, 2_001, "PENDING"),
        "in_deleted": ("d" * 64, 1_500, "DELETED"),
    }
    ids = ["in_deleted", "in_live", "in_newer", "in_not_staged", "in_same_second"]
    assert _outcomes(ids, stored, version=2_000) == {
        "in_deleted": "already_deleted",
        "in_live": "tombstoned",
        "in_newer": "newer_version",
        "in_not_staged": "not_staged",
        "in_same_second": "tombstoned",
    }


def test_the_summary_names_the_first_ids_and_counts_them_all() -> None:
    tombstoned = [f"in_{i:04d}" for i in range(IDS_SHOWN + 5, 0, -1)]
    summary = StreamTombstones(
        "invoices", asked=40, gone=len(tombstoned), still_in_saas=3, unconfirmed=1, tombstoned=tombstoned,
        not_tombstoned={"already_deleted": 2}, batch_id=77,
    ).summary()  # fmt: skip
    assert summary["tombstoned"] == IDS_SHOWN + 5
    assert summary["tombstoned_ids"] == sorted(tombstoned)[:IDS_SHOWN]
    assert summary["not_tombstoned"] == {"already_deleted": 2} and summary["batch_id"] == 77


def test_the_share_counts_against_the_erp_records_the_report_compared() -> None:
    report = {"summary": {"records": {"invoices": {"saas": 10, "erp": 12}}}}
    assert erp_records_compared(report, "invoices") == 12
    assert erp_records_compared(report, "charges") == 0
    assert erp_records_compared({"summary": None}, "invoices") == 0
