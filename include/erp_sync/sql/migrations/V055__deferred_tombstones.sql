-- V055: a restored tombstone whose record is not staged yet waits for it (ADR 0026).
-- A restore stages a repair's tombstone document again (ADR 0022). Restored before the runs that staged
-- its records (a disaster recovery run by run, in another order), it finds no row to mark
-- (`not_staged`). Such records wait here, with the document they come from, and every restore ends by
-- applying the waiting tombstones whose records are staged by then, with the repair's rules
-- (`store.tombstones.stage_tombstones`), so the end state does not depend on the order runs are
-- restored in.
-- Written by the loader's role in the tombstone batch's transaction. A row is never deleted: once its
-- record is staged it is resolved (what the tombstone did, and the batch that did it).

CREATE TABLE IF NOT EXISTS erp_sync.deferred_tombstone_documents (
    source_system  text        NOT NULL,
    stream         text        NOT NULL,
    input_sha256   char(64)    NOT NULL,  -- the document's digest of its gone ids (ADR 0020)
    document       text        NOT NULL,  -- the document as backed up (`core.tombstone_document`)
    window_start   timestamptz,           -- the original batch's window: the report's period
    window_end     timestamptz,
    remote_path    text        NOT NULL,  -- the verified backup of the document
    backup_sha256  char(64)    NOT NULL,
    sha256         char(64)    NOT NULL,
    in_outbox      boolean     NOT NULL,  -- a batch of this database wrote the document to the outbox
    deferred_by    text        NOT NULL,  -- the restore's run id
    deferred_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, stream, input_sha256)
);

CREATE TABLE IF NOT EXISTS erp_sync.deferred_tombstones (
    source_system  text        NOT NULL,
    stream         text        NOT NULL,
    input_sha256   char(64)    NOT NULL,
    source_id      text        NOT NULL,
    outcome        text        CHECK (outcome IN ('tombstoned', 'already_deleted', 'newer_version')),
    batch_id       bigint      REFERENCES erp_sync.sync_batches (batch_id),  -- the batch that resolved it, if one was written
    resolved_at    timestamptz,
    PRIMARY KEY (source_system, stream, input_sha256, source_id),
    FOREIGN KEY (source_system, stream, input_sha256)
        REFERENCES erp_sync.deferred_tombstone_documents (source_system, stream, input_sha256),
    CHECK ((outcome IS NULL) = (resolved_at IS NULL)),
    CHECK (batch_id IS NULL OR outcome IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS deferred_tombstones_waiting
    ON erp_sync.deferred_tombstones (source_system, stream) WHERE outcome IS NULL;

GRANT SELECT, INSERT, UPDATE ON erp_sync.deferred_tombstone_documents, erp_sync.deferred_tombstones
    TO erp_loader;
