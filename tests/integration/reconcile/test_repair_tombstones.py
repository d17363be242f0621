"""The repair tombstones records gone from the SaaS (ADR 0020), against real Postgres, Redis and the
sandbox. Draft invoices are deleted in the sandbox while no delta reads the deletion events (the only
syncs are full refreshes, which cannot see a deletion): the reconcile reports them missing in the SaaS,
the repair stages them as tombstones with their lines retired in one recorded batch, a retry and a
second run write nothing, and the next reconcile is clean. The limits refuse before any write (also
against a connection to the wrong account), a lookup that fails tombstones nothing, and a record that
exists outside the period is left as ADR 0017 handles it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import redis

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.errors import AuthenticationError, RetryExhaustedError, UnconfirmedNotFoundError
from erp_sync.clients.retry import RetryPolicy
from erp_sync.clients.sources import SourceClients
from erp_sync.core.hashing import tombstone_sha256
from erp_sync.core.tombstones import TombstoneLimitError, TombstonePolicy
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.reconcile_run import parse_request, repair_report, run_request
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store import drift
from erp_sync.store.ledger import RedisLedger
from erp_sync.streams import STREAMS
from erp_sync.streams.spec import GoneAnswerSpec
from tests.integration.reconcile.repair_checks import (
    control_rows,
    ledger_size,
    sql_rows,
    staging,
    unsync_a_paid_invoice,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYSTEM = "stripe"
WHOLE_HISTORY = "2020-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=120, seed=6) as handle:
        yield handle


def _client(sandbox: SandboxHandle, base_url: str | None = None, **kwargs: Any) -> SaaSClient:
    return SaaSClient(
        base_url or sandbox.base_url, BearerSecretKey(kwargs.pop("secret_key", sandbox.secret_key)),
        page_size=50, **kwargs,
    )  # fmt: skip


def _clients(sandbox: SandboxHandle) -> SourceClients:
    return SourceClients({"stripe": _client(sandbox)})


def _full_refresh(sandbox: SandboxHandle, conn: Any, redis_client: redis.Redis, ns: str) -> None:
    sync_stream(
        spec=STREAMS["invoices"], client=_client(sandbox), conn=conn, redis_client=redis_client,
        run_id=f"sync-{time.monotonic_ns()}", namespace=ns, batch_records=100,
        window=WindowRequest(full_refresh=True, window_end=datetime.now(UTC) + timedelta(days=1)),
    )  # fmt: skip


def _deleted_while_no_delta_read_it(
    sandbox: SandboxHandle, conn: Any, redis_client: redis.Redis, ns: str, n: int = 3
) -> list[str]:
    """Sync drafts, delete `n` of them in the SaaS, and sync again by full refresh only: staging keeps
    them live, as after a gap longer than the 30 days Stripe keeps events."""
    sandbox.admin.mutate(6, kinds=["new_draft_invoice"])
    time.sleep(1.1)
    _full_refresh(sandbox, conn, redis_client, ns)
    changes = sandbox.admin.mutate(n, kinds=["delete_draft_invoice"])["applied"]
    deleted = sorted(c["id"] for c in changes if c["kind"] == "delete_draft_invoice")
    assert len(deleted) == n, changes
    time.sleep(1.1)
    _full_refresh(sandbox, conn, redis_client, ns)
    assert _statuses(conn, "ar_invoices", "source_id", deleted) == {"PENDING": set(deleted)}
    return deleted


def _statuses(conn: Any, table: str, column: str, ids: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for status, source_id in sql_rows(
        conn, f"SELECT interface_status, source_id FROM erp_staging.{table} WHERE {column} = ANY(%s)", (ids,)
    ):
        found.setdefault(status, set()).add(source_id)
    return found


def _staged(conn: Any) -> dict[tuple[str, str], tuple[Any, ...]]:
    return staging(conn, ("ar_invoices", "ar_invoice_lines"))


def _ledger_entries(redis_client: redis.Redis, ns: str, table: str, ids: list[str]) -> list[str | None]:
    frame = pd.DataFrame({"source_system": [SYSTEM] * len(ids), "source_id": ids})
    return RedisLedger(redis_client, namespace=ns).lookup(table, frame)


def _run(
    conn: Any, client: SaaSClient, conf: dict[str, Any], redis_client: Any = None, ns: str = "erpsync"
) -> Any:
    return run_request(
        conn=conn, clients=SourceClients({"stripe": client}), request=parse_request(conf, now=datetime.now(UTC)),
        redis_client=redis_client, namespace=ns, run_id="reconcile-test",
    )  # fmt: skip


def _second(offset_s: int) -> datetime:
    """Now plus `offset_s`, on a whole second (windows end on one)."""
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).replace(microsecond=0)


def _whole_history() -> dict[str, Any]:
    end = datetime.now(UTC) + timedelta(days=1)
    return {"period_start": WHOLE_HISTORY, "period_end": end.isoformat(), "streams": ["invoices"]}


def _items(conn: Any, report_id: int) -> list[tuple[str, str]]:
    items = drift.get_items(conn, report_id, limit=10_000)
    conn.rollback()
    return sorted((i["kind"], i["source_id"]) for i in items)


def _lines_of(conn: Any, invoice_ids: list[str]) -> list[str]:
    return sorted(
        r[0]
        for r in sql_rows(
            conn,
            "SELECT source_id FROM erp_staging.ar_invoice_lines WHERE invoice_source_id = ANY(%s)",
            (invoice_ids,),
        )
    )


def test_repair_tombstones_records_deleted_while_no_delta_read_their_events(
    sandbox, conn, redis_client, redis_namespace
):
    ns = redis_namespace
    deleted = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns)
    period = _whole_history()
    found = _run(conn, _client(sandbox), period).reports[-1]
    assert _items(conn, found.report_id) == [("missing_in_saas", i) for i in deleted]
    lines = _lines_of(conn, deleted)
    assert lines and all(_ledger_entries(redis_client, ns, "ar_invoice_lines", lines))
    before = _staged(conn)
    batches_before = control_rows(conn)[0]

    repaired = _run(conn, _client(sandbox), {**period, "repair": True}, redis_client, ns)

    # Exactly the gone headers and their lines were rewritten: tombstones, in one recorded batch.
    after = _staged(conn)
    rewritten = {key for key, row in after.items() if before.get(key) != row}
    assert rewritten == {("ar_invoices", i) for i in deleted} | {("ar_invoice_lines", i) for i in lines}
    outcome = repaired.repair.tombstones["invoices"]
    assert (outcome.asked, outcome.gone, outcome.still_in_saas, outcome.unconfirmed) == (3, 3, 0, 0)
    assert outcome.tombstoned == deleted and not outcome.already_committed
    for table, ids in (("ar_invoices", deleted), ("ar_invoice_lines", lines)):
        for source_id in ids:
            _, status, _, version, batch_id = after[(table, source_id)]
            assert (status, batch_id) == ("DELETED", outcome.batch_id)
            assert version >= before[(table, source_id)][3]
    for source_id in deleted:  # the hash a deletion event would have staged (ADR 0015)
        assert after[("ar_invoices", source_id)][2] == tombstone_sha256(before[("ar_invoices", source_id)][2])
    batch = sql_rows(
        conn,
        "SELECT run_id, extracted, loaded_new, loaded_changed, skipped_unchanged, rejected, rows_by_table,"
        " window_start, window_end FROM erp_sync.sync_batches WHERE batch_id = %s",
        (outcome.batch_id,),
    )[0]
    assert batch[:7] == ("reconcile-test", 3, 0, 3, 0, 0, {"ar_invoices": 3, "ar_invoice_lines": len(lines)})
    assert (batch[7], batch[8]) == (
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime.fromisoformat(period["period_end"]),
    )
    assert control_rows(conn)[0] == batches_before + 1
    evidence = sql_rows(
        conn,
        "SELECT source_id, report_id, evidence, outcome, api_message FROM erp_sync.repair_tombstones"
        " WHERE batch_id = %s ORDER BY source_id",
        (outcome.batch_id,),
    )
    assert [row[:4] for row in evidence] == [
        (i, found.report_id, "resource_missing", "tombstoned") for i in deleted
    ]
    assert all(i in row[4] for i, row in zip(deleted, evidence, strict=True))  # "No such invoice: '...'"
    # The ledger forgets every row the batch wrote (it holds no DELETED row, as after a rebuild).
    assert _ledger_entries(redis_client, ns, "ar_invoices", deleted) == [None] * len(deleted)
    assert _ledger_entries(redis_client, ns, "ar_invoice_lines", lines) == [None] * len(lines)

    # The re-check says what was tombstoned, and is clean.
    recheck = repaired.reports[-1]
    assert recheck.status == "OK" and sum(recheck.item_counts.values()) == 0, recheck.message
    stored = drift.get_report(conn, recheck.report_id)
    conn.rollback()
    assert stored["repair_of_report_id"] == found.report_id and drift.verify_report(conn, recheck.report_id)
    summary = stored["summary"]["repair"]["tombstones"]["invoices"]
    assert (summary["tombstoned"], summary["tombstoned_ids"], summary["batch_id"]) == (
        3,
        deleted,
        outcome.batch_id,
    )
    assert repaired.xcom()["repair"]["tombstones"]["invoices"]["tombstoned"] == 3

    # A retry of the same repair (its task retried) finds the batch committed: nothing new.
    controls = control_rows(conn)
    retried = repair_report(
        conn=conn, redis_client=redis_client, clients=_clients(sandbox), report_id=found.report_id,
        run_id="reconcile-retry", namespace=ns,
    )  # fmt: skip
    again = retried.tombstones["invoices"]
    assert again.already_committed and again.batch_id == outcome.batch_id and again.tombstoned == deleted
    assert _staged(conn) == after and control_rows(conn) == controls

    # A second repair run starts from the clean re-check: nothing to look up, nothing written.
    second = _run(conn, _client(sandbox), {**period, "repair": True}, redis_client, ns)
    assert second.repair.tombstones == {} and second.reports[-1].status == "OK"
    assert _staged(conn) == after and control_rows(conn)[:2] == controls[:2]

    # The next reconcile of the period no longer reports them.
    assert _items(conn, _run(conn, _client(sandbox), period).reports[-1].report_id) == []

    # A delta that reads the deletion events after all stages nothing over the repair's tombstones.
    delta = sync_stream(
        spec=STREAMS["invoices"], client=_client(sandbox), conn=conn, redis_client=redis_client,
        run_id="late-delta", namespace=ns,
        window=WindowRequest(window_start=_second(-3_600), window_end=_second(5)),
    )  # fmt: skip
    assert delta.mode == "incremental" and delta.extracted >= len(deleted)
    assert delta.loaded_new + delta.loaded_changed == 0
    late = _staged(conn)
    assert {key: late[key] for key in rewritten} == {key: after[key] for key in rewritten}


def test_a_record_that_exists_outside_the_period_is_left_while_a_gone_one_is_tombstoned(
    sandbox, conn, redis_client, redis_namespace
):
    """ADR 0017's case: a record the ERP dates in the period that the SaaS has, dated elsewhere, stays
    missing_in_saas; the repair tombstones only what the SaaS answers as gone."""
    ns = redis_namespace
    [deleted] = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=1)
    start = datetime.now(UTC) - timedelta(days=1)
    [(moved,)] = sql_rows(
        conn,
        "UPDATE erp_staging.ar_invoices SET issued_at = now() - interval '1 hour' WHERE source_id ="
        " (SELECT min(source_id) FROM erp_staging.ar_invoices WHERE issued_at < %s - interval '3 days')"
        " RETURNING source_id",
        (start,),
    )
    period = {
        "period_start": start.isoformat(), "period_end": (start + timedelta(days=2)).isoformat(),
        "streams": ["invoices"],
    }  # fmt: skip
    found = _run(conn, _client(sandbox), period).reports[-1]
    assert _items(conn, found.report_id) == sorted([("missing_in_saas", deleted), ("missing_in_saas", moved)])
    before = _staged(conn)

    repaired = _run(conn, _client(sandbox), {**period, "repair": True}, redis_client, ns)

    outcome = repaired.repair.tombstones["invoices"]
    assert (outcome.asked, outcome.gone, outcome.still_in_saas, outcome.tombstoned) == (2, 1, 1, [deleted])
    assert _staged(conn)[("ar_invoices", moved)] == before[("ar_invoices", moved)]
    assert _items(conn, repaired.reports[-1].report_id) == [("missing_in_saas", moved)]


def test_the_opt_out_leaves_them_missing_in_the_saas(sandbox, conn, redis_client, redis_namespace):
    deleted = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, redis_namespace, n=2)
    period = _whole_history()
    _run(conn, _client(sandbox), period)
    before, controls = _staged(conn), control_rows(conn)
    repaired = _run(
        conn,
        _client(sandbox),
        {**period, "repair": True, "repair_tombstones": False},
        redis_client,
        redis_namespace,
    )
    assert repaired.repair.tombstones == {}
    assert _items(conn, repaired.reports[-1].report_id) == [("missing_in_saas", i) for i in deleted]
    assert _staged(conn) == before and control_rows(conn)[:2] == controls[:2]


def test_over_max_tombstones_the_repair_refuses_before_any_write(
    sandbox, conn, redis_client, redis_namespace
):
    ns = redis_namespace
    deleted = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=3)
    unsynced = unsync_a_paid_invoice(conn)  # the same repair would re-send it: it must not be either
    period = _whole_history()
    found = _run(conn, _client(sandbox), period).reports[-1]
    assert ("missing_in_erp", unsynced) in _items(conn, found.report_id)
    before, controls, ledger = _staged(conn), control_rows(conn), ledger_size(redis_client, ns)

    with pytest.raises(TombstoneLimitError) as refused:
        _run(conn, _client(sandbox), {**period, "repair": True, "max_tombstones": 2}, redis_client, ns)

    assert (refused.value.stream, refused.value.gone, refused.value.param) == (
        "invoices",
        3,
        "max_tombstones",
    )
    text = str(refused.value)
    assert "stream invoices" in text and "max_tombstones=2" in text and "raise max_tombstones" in text
    assert deleted[0] in text
    assert _staged(conn) == before and control_rows(conn) == controls  # no batch, no evidence, no report
    assert ledger_size(redis_client, ns) == ledger

    # The same repair within the limit goes through.
    repaired = _run(conn, _client(sandbox), {**period, "repair": True, "max_tombstones": 3}, redis_client, ns)
    assert repaired.repair.tombstones["invoices"].tombstoned == deleted
    assert repaired.reports[-1].status == "OK", repaired.reports[-1].message


def test_a_connection_to_the_wrong_account_is_refused_by_the_share(
    sandbox, conn, redis_client, redis_namespace
):
    """Another account's API answers every id of this one with 404 resource_missing; its listing is
    all missing in the ERP. The share of the period's ERP records refuses before any lookup-driven
    tombstone and before any re-send of the other account's records; the lookups stop early."""
    ns = redis_namespace
    _full_refresh(sandbox, conn, redis_client, ns)
    period = _whole_history()
    with running_sandbox(invoices=40, seed=7) as other:
        wrong = _client(other)
        found = _run(conn, wrong, period).reports[-1]
        kinds = {kind for kind, _ in _items(conn, found.report_id)}
        assert kinds == {"missing_in_erp", "missing_in_saas"}
        erp_records = drift.get_report(conn, found.report_id)["summary"]["records"]["invoices"]["erp"]
        conn.rollback()
        assert erp_records > 100
        before, controls = _staged(conn), control_rows(conn)
        other.admin.reset_counts()
        with pytest.raises(TombstoneLimitError) as refused:
            _run(conn, wrong, {**period, "repair": True}, redis_client, ns)
        lookups = other.admin.request_counts()["by_route"].get("GET /v1/invoices/{id}", 0)
    assert refused.value.param == "max_tombstone_share" and refused.value.gone == 100
    assert f"stopped after 100 of {erp_records} lookups" in str(refused.value)
    assert lookups == 100
    assert _staged(conn) == before and control_rows(conn) == controls


@pytest.mark.parametrize("failure", ["503", "credentials"])
def test_a_lookup_that_fails_tombstones_nothing(sandbox, conn, redis_client, redis_namespace, failure):
    ns = redis_namespace
    _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=2)
    found = _run(conn, _client(sandbox), _whole_history()).reports[-1]
    before, controls, ledger = _staged(conn), control_rows(conn), ledger_size(redis_client, ns)
    quick = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)
    if failure == "503":
        client, error = _client(sandbox, retry=quick), RetryExhaustedError
        sandbox.admin.set_faults(http_503_every=1)
    else:
        client, error = _client(sandbox, secret_key="sk_test_wrong", retry=quick), AuthenticationError
    try:
        with pytest.raises(error):
            repair_report(
                conn=conn, redis_client=redis_client, clients=SourceClients({"stripe": client}),
                report_id=found.report_id,
                run_id="reconcile-test", namespace=ns,
            )  # fmt: skip
    finally:
        sandbox.admin.reset_faults()
    assert _staged(conn) == before and control_rows(conn) == controls
    assert ledger_size(redis_client, ns) == ledger


def test_a_transient_5xx_is_retried_and_only_the_404_decides(sandbox, conn, redis_client, redis_namespace):
    ns = redis_namespace
    deleted = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=2)
    found = _run(conn, _client(sandbox), _whole_history()).reports[-1]
    sandbox.admin.set_faults(http_503_every=2)
    try:
        retried = repair_report(
            conn=conn, redis_client=redis_client,
            clients=SourceClients({"stripe": _client(sandbox, retry=RetryPolicy(base_delay_s=0.01, max_delay_s=0.02))}),
            report_id=found.report_id, run_id="reconcile-test", namespace=ns,
        )  # fmt: skip
        answered_503 = sandbox.admin.request_counts()["by_status"].get("503", 0)
    finally:
        sandbox.admin.reset_faults()
    assert answered_503 >= 1
    assert retried.tombstones["invoices"].tombstoned == deleted


def test_a_404_without_resource_missing_proves_nothing(sandbox, conn, redis_client, redis_namespace):
    """A wrong base URL: the sandbox answers "Unrecognized request URL", a 404 with no error code."""
    ns = redis_namespace
    _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=2)
    found = _run(conn, _client(sandbox), _whole_history()).reports[-1]
    before, controls = _staged(conn), control_rows(conn)
    repaired = repair_report(
        conn=conn, redis_client=redis_client,
        clients=SourceClients({"stripe": _client(sandbox, base_url=sandbox.base_url + "/api")}),
        report_id=found.report_id, run_id="reconcile-test", namespace=ns,
    )  # fmt: skip
    outcome = repaired.tombstones["invoices"]
    assert (outcome.asked, outcome.gone, outcome.unconfirmed, outcome.tombstoned) == (2, 0, 2, [])
    assert _staged(conn) == before and control_rows(conn) == controls


@pytest.mark.parametrize(
    ("gone_answer", "tombstoned"),
    [
        # Another API's code: the sandbox's `resource_missing` then proves nothing.
        (GoneAnswerSpec(codes=("not_found",)), False),
        # The code read where this stream says its API puts it (Stripe's `error.type` here).
        (GoneAnswerSpec(codes=("invalid_request_error",), code_path=("error", "type")), True),
    ],
    ids=["another-code", "another-path"],
)
def test_the_stream_s_gone_answer_decides_what_the_repair_tombstones(
    sandbox, conn, redis_client, redis_namespace, monkeypatch, gone_answer, tombstoned
):
    """ADR 0029: the repair reads the invoices stream's declared gone answer from the registry."""
    ns = redis_namespace
    deleted = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=2)
    found = _run(conn, _client(sandbox), _whole_history()).reports[-1]
    before, controls = _staged(conn), control_rows(conn)
    monkeypatch.setitem(STREAMS, "invoices", replace(STREAMS["invoices"], gone_answer=gone_answer))

    repaired = repair_report(
        conn=conn, redis_client=redis_client, clients=_clients(sandbox),
        report_id=found.report_id, run_id="reconcile-test", namespace=ns,
    )  # fmt: skip

    outcome = repaired.tombstones["invoices"]
    if tombstoned:
        assert (outcome.asked, outcome.gone, outcome.unconfirmed, outcome.tombstoned) == (2, 2, 0, deleted)
        assert _statuses(conn, "ar_invoices", "source_id", deleted) == {"DELETED": set(deleted)}
    else:
        assert (outcome.asked, outcome.gone, outcome.unconfirmed, outcome.tombstoned) == (2, 0, 2, [])
        assert _staged(conn) == before and control_rows(conn) == controls


def test_a_wrong_base_url_fails_the_re_sends_before_any_write_naming_it(
    sandbox, conn, redis_client, redis_namespace
):
    """The re-send's 404 has no `resource_missing` either: it is not "no such record" (nothing to
    re-send), and the repair fails naming the URL, with nothing written."""
    ns = redis_namespace
    _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=2)
    unsynced = unsync_a_paid_invoice(conn)  # a record the repair re-sends
    period = _whole_history()
    found = _run(conn, _client(sandbox), period).reports[-1]
    assert ("missing_in_erp", unsynced) in _items(conn, found.report_id)
    before, controls, ledger = _staged(conn), control_rows(conn), ledger_size(redis_client, ns)
    wrong = sandbox.base_url + "/api"

    with pytest.raises(UnconfirmedNotFoundError) as failed:
        _run(conn, _client(sandbox, base_url=wrong), {**period, "repair": True}, redis_client, ns)

    text = str(failed.value)
    assert f"GET {wrong}/v1/invoices/{unsynced}: HTTP 404: Unrecognized request URL" in text
    assert "does not say the record is missing" in text and "base URL" in text
    assert _staged(conn) == before and control_rows(conn) == controls  # no batch, no evidence, no report
    assert ledger_size(redis_client, ns) == ledger


def test_a_crash_before_commit_leaves_nothing_but_evicted_entries(
    sandbox, conn, redis_client, redis_namespace, monkeypatch
):
    ns = redis_namespace
    deleted = _deleted_while_no_delta_read_it(sandbox, conn, redis_client, ns, n=2)
    found = _run(conn, _client(sandbox), _whole_history()).reports[-1]
    before, controls = _staged(conn), control_rows(conn)

    def crash(name: str) -> None:
        if name == "before_commit":
            raise SystemExit("killed before COMMIT")

    monkeypatch.setattr("erp_sync.store.tombstones.crash_point", crash)
    repair = dict(
        conn=conn, redis_client=redis_client, clients=_clients(sandbox), report_id=found.report_id,
        run_id="reconcile-test", namespace=ns, tombstones=TombstonePolicy(),
    )  # fmt: skip
    with pytest.raises(SystemExit):
        repair_report(**repair)
    assert _staged(conn) == before and control_rows(conn) == controls
    # Evicted before COMMIT: missing entries (one no-op upsert later), never stale ones.
    assert _ledger_entries(redis_client, ns, "ar_invoices", deleted) == [None, None]

    monkeypatch.undo()
    retried = repair_report(**repair)
    assert retried.tombstones["invoices"].tombstoned == deleted
    assert _statuses(conn, "ar_invoices", "source_id", deleted) == {"DELETED": set(deleted)}
