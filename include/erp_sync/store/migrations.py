"""Versioned SQL migrations: `include/erp_sync/sql/migrations/VNNN__name.sql`, applied in order.

Each file runs in its own transaction together with its row in `erp_sync.schema_migrations`, so a
file is either applied and recorded or neither. A session-level advisory lock serialises concurrent
runners (two workers starting at once); advisory locks are per database, so parallel test databases
do not wait for each other. An applied file whose SHA-256 has changed is an error: fix forward with a
new file instead of editing history.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg2.extensions import TRANSACTION_STATUS_IDLE

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql" / "migrations"
_FILE_RE = re.compile(r"^V(\d{3})__([a-z0-9_]+)\.sql$")
# Arbitrary constant: "erp_sync migrations" for pg_advisory_lock(bigint).
MIGRATION_LOCK_KEY = 0x4552_5053_5943_4D01

_CREATE_TABLE = """
CREATE SCHEMA IF NOT EXISTS erp_sync;
CREATE TABLE IF NOT EXISTS erp_sync.schema_migrations (
    version     integer     PRIMARY KEY,
    filename    text        NOT NULL,
    checksum    char(64)    NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(RuntimeError):
    """The migrations on disk and the ones recorded in the database disagree."""


class SchemaMismatchError(MigrationError):
    """A writer's code and the database's schema are not the same release (ADR 0028)."""


@dataclass(frozen=True)
class Migration:
    version: int
    filename: str
    sql: str
    checksum: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in `directory`, ordered by version; other files are ignored."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("V*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"badly named migration file {path.name} (want VNNN__lower_snake.sql)")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations share version {version}: {found[version].filename}, {path.name}"
            )
        raw = path.read_bytes()
        found[version] = Migration(version, path.name, raw.decode("utf-8"), hashlib.sha256(raw).hexdigest())
    return [found[v] for v in sorted(found)]


def _applied(cur: Any) -> dict[int, tuple[str, str]]:
    cur.execute("SELECT to_regclass('erp_sync.schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return {}
    cur.execute("SELECT version, filename, checksum FROM erp_sync.schema_migrations")
    return {int(v): (f, c) for v, f, c in cur.fetchall()}


def _check_history(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, (filename, checksum) in sorted(applied.items()):
        current = by_version.get(version)
        if current is None:
            raise MigrationError(
                f"migration {filename} is applied but this code has no such file: the database was "
                "migrated by a newer release of erp_sync; upgrade this worker's code"
            )
        if current.checksum != checksum.strip():
            raise MigrationError(
                f"migration {current.filename} changed after it was applied "
                f"(recorded {checksum.strip()[:12]}, file {current.checksum[:12]}); "
                "add a new migration instead"
            )


def pending_migrations(conn: Any, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """File names of the migrations not applied yet, in order. Reads only; ends its transaction."""
    migrations = discover(directory)
    try:
        with conn.cursor() as cur:
            applied = _applied(cur)
    finally:
        conn.rollback()
    _check_history(migrations, applied)
    return [m.filename for m in migrations if m.version not in applied]


@functools.cache
def _known(directory: Path) -> dict[int, str]:
    return {m.version: m.filename for m in discover(directory)}


def require_current_schema(conn: Any, directory: Path = MIGRATIONS_DIR) -> None:
    """Raise `SchemaMismatchError` unless the database holds exactly the migrations this code has.

    Every writer calls it (through `stream_lock`) before its first write, because a worker must not
    write to a schema of another release: older code does not fill what a newer migration added (a
    stale `children_sha256` would keep a removed line live, ADR 0027), and newer code writes columns an
    unmigrated database lacks. Reads only; ends its transaction. The files are read once a process.
    """
    known = _known(directory)
    try:
        with conn.cursor() as cur:
            applied = {version: filename for version, (filename, _) in _applied(cur).items()}
    finally:
        conn.rollback()
    newer = [applied[v] for v in sorted(applied) if v not in known]
    if newer:
        raise SchemaMismatchError(
            f"the ERP staging database has migrations this code does not have ({', '.join(newer)}): a newer "
            "release of erp_sync migrated it. Upgrade this worker's code before it writes (ADR 0028)."
        )
    missing = [known[v] for v in sorted(known) if v not in applied]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise SchemaMismatchError(
            f"the ERP staging database lacks migrations {shown}: apply them before writing (the "
            "saas_to_erp_sync DAG's apply_migrations task does)."
        )


def apply_migrations(conn: Any, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in order, each in its own transaction; return the file names applied.

    `conn` must not be inside a transaction (its work would be committed with the first migration).
    """
    if conn.autocommit or conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
        raise MigrationError(
            "apply_migrations needs a connection with autocommit off and no open transaction"
        )
    migrations = discover(directory)
    done: list[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.commit()
        try:
            cur.execute(_CREATE_TABLE)
            conn.commit()
            applied = _applied(cur)
            _check_history(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                _apply_one(conn, cur, migration)
                done.append(migration.filename)
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            conn.commit()
    return done


def _apply_one(conn: Any, cur: Any, migration: Migration) -> None:
    try:
        cur.execute(migration.sql)
        cur.execute(
            "INSERT INTO erp_sync.schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.filename, migration.checksum),
        )
        conn.commit()
    except Exception as exc:
        conn.rollback()
        raise MigrationError(f"migration {migration.filename} failed: {exc}") from exc
