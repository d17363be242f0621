"""apply_migrations against real Postgres: order, checksums, idempotence, concurrency; the erp_loader role;
writers refusing a database of another release."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors

from erp_sync.store.migrations import (
    MIGRATIONS_DIR,
    MigrationError,
    SchemaMismatchError,
    apply_migrations,
    discover,
    pending_migrations,
)

pytestmark = pytest.mark.integration


def test_applies_every_file_once_in_order_with_checksums(pg_dsn):
    conn = psycopg2.connect(pg_dsn)
    files = [m.filename for m in discover()]
    assert files[:2] == ["V001__schemas.sql", "V002__loader_role.sql"]
    assert pending_migrations(conn) == files
    assert apply_migrations(conn) == files
    assert apply_migrations(conn) == []
    assert pending_migrations(conn) == []
    with conn.cursor() as cur:
        cur.execute("SELECT filename, checksum FROM erp_sync.schema_migrations ORDER BY version")
        assert cur.fetchall() == [(m.filename, m.checksum) for m in discover()]
    conn.close()


def test_a_changed_applied_file_is_an_error(pg_dsn, tmp_path: Path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path, dirs_exist_ok=True)
    conn = psycopg2.connect(pg_dsn)
    apply_migrations(conn, tmp_path)
    v001 = tmp_path / "V001__schemas.sql"
    v001.write_text(v001.read_text() + "\n-- edited after shipping\n")
    with pytest.raises(MigrationError, match=r"V001__schemas\.sql changed after it was applied"):
        apply_migrations(conn, tmp_path)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        pending_migrations(conn, tmp_path)
    conn.close()


def test_a_failing_migration_leaves_no_trace_and_later_files_wait(pg_dsn, tmp_path: Path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "V900__broken.sql").write_text("CREATE TABLE erp_sync.half (x int);\nSELECT 1/0;\n")
    (tmp_path / "V901__after.sql").write_text("CREATE TABLE erp_sync.after_broken (x int);\n")
    conn = psycopg2.connect(pg_dsn)
    with pytest.raises(MigrationError, match=r"V900__broken\.sql failed"):
        apply_migrations(conn, tmp_path)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('erp_sync.half'), to_regclass('erp_sync.after_broken')")
        assert cur.fetchone() == (None, None)
    conn.rollback()
    assert pending_migrations(conn, tmp_path) == ["V900__broken.sql", "V901__after.sql"]
    conn.close()


def test_concurrent_runners_apply_each_file_once(pg_dsn):
    applied: list[list[str]] = []
    failures: list[BaseException] = []

    def runner() -> None:
        conn = psycopg2.connect(pg_dsn)
        try:
            applied.append(apply_migrations(conn))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=runner) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert sorted(len(a) for a in applied) == [0, 0, len(discover())]


def test_migrations_in_two_databases_at_once_share_the_cluster_role(pg_dsn):
    """The role is cluster-wide: a second database migrating concurrently must not trip over it."""
    from store_factories import drop_database, make_database

    other = make_database()
    try:
        errors_seen: list[BaseException] = []

        def migrate(dsn: str) -> None:
            conn = psycopg2.connect(dsn)
            try:
                apply_migrations(conn)
            except BaseException as exc:  # pragma: no cover
                errors_seen.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=migrate, args=(d,)) for d in (pg_dsn, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors_seen
    finally:
        drop_database(other)


# -- the loader role -------------------------------------------------------------------------------


def _as_loader(conn, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SET LOCAL ROLE erp_loader")
        cur.execute(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM erp_staging.ar_invoices",
        "TRUNCATE erp_staging.ar_invoices",
        "DROP TABLE erp_staging.ar_invoices",
        "DROP TABLE erp_staging.customers",
        "ALTER TABLE erp_staging.ar_invoices ADD COLUMN x int",
        "CREATE TABLE erp_staging.sneaky (x int)",
        "DELETE FROM erp_sync.sync_batches",
        "UPDATE erp_sync.schema_migrations SET checksum = 'x'",
    ],
)
def test_loader_role_is_refused(conn, sql):
    with pytest.raises(errors.InsufficientPrivilege):
        _as_loader(conn, sql)
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('erp_staging.ar_invoices') IS NOT NULL")
        assert cur.fetchone()[0]


def test_loader_role_may_insert_update_and_write_control_tables(conn):
    with conn.cursor() as cur:
        cur.execute("SET LOCAL ROLE erp_loader")
        cur.execute(
            "INSERT INTO erp_staging.customers (source_system, source_id, name, created_at, row_sha256, "
            "source_version, sync_batch_id) VALUES ('stripe', 'cus_1', 'A', now(), repeat('a', 64), 1, 1)"
        )
        cur.execute("UPDATE erp_staging.customers SET name = 'B' WHERE source_id = 'cus_1'")
        cur.execute(
            "INSERT INTO erp_sync.rejections (source_system, stream, reason_code, message, raw_payload) "
            "VALUES ('stripe', 'customers', 'BAD_JSON', 'm', '{') RETURNING rejection_id"
        )
        cur.execute("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP")
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "erp_loader"
    conn.rollback()


def test_a_login_that_is_not_a_superuser_migrates_its_own_database_and_loads(redis_client, redis_namespace):
    """What an ERP's DBA grants: a login with CREATEROLE (for V002's erp_loader), owning its database,
    no superuser. Every migration applies, and a batch loads through SET LOCAL ROLE erp_loader."""
    import uuid

    from store_factories import expected_invoices, invoice_batch, sample_invoices, staging_invoices

    from erp_sync.store.counters import next_batch_id
    from erp_sync.store.ledger import RedisLedger
    from erp_sync.store.loader import load_batch
    from tests.conftest import PG_ADMIN_DSN, _admin_execute

    login = f"erp_migrator_{uuid.uuid4().hex[:8]}"
    database = f"erp_test_{uuid.uuid4().hex[:10]}"
    _admin_execute(f"CREATE ROLE {login} LOGIN NOSUPERUSER CREATEROLE NOCREATEDB")
    try:
        _admin_execute(f'CREATE DATABASE "{database}" OWNER {login}')
        admin = psycopg2.extensions.parse_dsn(PG_ADMIN_DSN)
        conn = psycopg2.connect(**{**admin, "user": login, "dbname": database, "password": ""})
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
                assert cur.fetchone() == (login, False)
            conn.rollback()
            assert apply_migrations(conn) == [m.filename for m in discover()]
            invoices = sample_invoices(3)
            ledger = RedisLedger(redis_client, namespace=redis_namespace)
            batch_id = next_batch_id(redis_client, redis_namespace, conn)
            result = load_batch(conn, ledger, *invoice_batch(invoices), batch_id=batch_id, cursor_after=None)
            assert result.loaded_new == 3
            assert staging_invoices(conn) == expected_invoices(invoices)
        finally:
            conn.close()
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        _admin_execute(f"DROP ROLE IF EXISTS {login}")


def _record_newer_release_migration(conn) -> None:
    """What a newer release's apply_migrations leaves behind: a version this code has no file for."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO erp_sync.schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
            (999, "V999__from_a_newer_release.sql", "0" * 64),
        )
    conn.commit()


def _nothing_staged_or_recorded(conn, ledger) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM erp_staging.ar_invoices)"
            " + (SELECT count(*) FROM erp_staging.ar_invoice_lines)"
            " + (SELECT count(*) FROM erp_sync.sync_batches)"
        )
        rows = cur.fetchone()[0]
    conn.rollback()
    return rows == 0 and not list(ledger.redis.scan_iter(match=f"{ledger.namespace}:*"))


def _load_one_batch(conn, ledger):
    from store_factories import invoice_batch, sample_invoices

    from erp_sync.store.loader import load_batch

    key, mapped, pages = invoice_batch(sample_invoices(3))
    return load_batch(conn, ledger, key, mapped, pages, batch_id=1, cursor_after=None)


def test_a_loader_refuses_a_database_a_newer_release_migrated_before_any_write(conn, ledger):
    _record_newer_release_migration(conn)
    with pytest.raises(SchemaMismatchError, match=r"V999__from_a_newer_release\.sql.*Upgrade this worker"):
        _load_one_batch(conn, ledger)
    assert _nothing_staged_or_recorded(conn, ledger)
    with pytest.raises(MigrationError, match=r"V999__from_a_newer_release\.sql .*newer release"):
        apply_migrations(conn)


def test_a_loader_refuses_a_database_missing_its_latest_migration_and_names_it(pg_dsn, ledger, tmp_path):
    newest = discover()[-1]
    shutil.copytree(MIGRATIONS_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / newest.filename).unlink()
    conn = psycopg2.connect(pg_dsn)
    apply_migrations(conn, tmp_path)  # the release before this one
    with pytest.raises(SchemaMismatchError, match=rf"lacks migrations {newest.filename}: apply them"):
        _load_one_batch(conn, ledger)
    assert _nothing_staged_or_recorded(conn, ledger)
    assert apply_migrations(conn) == [newest.filename]
    assert _load_one_batch(conn, ledger).loaded_new == 3  # the same code loads once migrated
    conn.close()


def test_the_stream_lock_is_released_when_the_schema_is_refused(conn):
    from erp_sync.store.locks import lock_holder, stream_lock, stream_lock_key

    _record_newer_release_migration(conn)
    with pytest.raises(SchemaMismatchError), stream_lock(conn, "stripe", "invoices"):
        pass
    assert lock_holder(conn, stream_lock_key("stripe", "invoices")) is None
