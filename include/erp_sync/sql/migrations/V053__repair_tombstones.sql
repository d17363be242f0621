-- V053: why the repair staged a record as deleted (ADR 0020).
-- A record a drift report found missing in the SaaS, and that the SaaS then answered as gone (a 404
-- `resource_missing`, or a `"deleted": true` stub), is staged as a tombstone by the repair in one
-- recorded batch (`sync_batches`). A deletion event leaves its raw page in the outbox; a lookup by id
-- leaves no page, so each record of the batch keeps its evidence here: the report that found it, what
-- the SaaS answered and when, and what the batch did with it (`tombstoned`, or why not).
-- Written by the loader's role in the batch's transaction; rows are never changed afterwards.

CREATE TABLE IF NOT EXISTS erp_sync.repair_tombstones (
    batch_id       bigint      NOT NULL REFERENCES erp_sync.sync_batches (batch_id),
    source_system  text        NOT NULL,
    stream         text        NOT NULL,
    source_id      text        NOT NULL,
    report_id      bigint      NOT NULL REFERENCES erp_sync.drift_reports (report_id),
    evidence       text        NOT NULL CHECK (evidence IN ('resource_missing', 'deleted_stub')),
    api_message    text,
    looked_up_at   timestamptz NOT NULL,
    outcome        text        NOT NULL
                   CHECK (outcome IN ('tombstoned', 'already_deleted', 'newer_version', 'not_staged')),
    PRIMARY KEY (batch_id, source_system, source_id)
);
CREATE INDEX IF NOT EXISTS repair_tombstones_record
    ON erp_sync.repair_tombstones (source_system, stream, source_id);

GRANT SELECT, INSERT ON erp_sync.repair_tombstones TO erp_loader;
REVOKE UPDATE ON erp_sync.repair_tombstones FROM erp_loader;
