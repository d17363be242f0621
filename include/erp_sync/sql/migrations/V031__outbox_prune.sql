-- V031: a page's content leaves the outbox once its SFTP copy has been verified for a while.
-- Until now the outbox kept every page's gzip forever: ~335 MB of Postgres per million invoices of
-- cold sync, growing with every nightly delta. `erp_sync.store.outbox.prune_contents` now clears
-- `content_gzip` of pages whose backup was verified more than N days ago (the backup task, Variable
-- `erp_sync_outbox_keep_days`, default 30). What a later manifest of the same run must list about a
-- pruned page (its sizes) stays in the row. A page can only be pruned after its backup: the CHECK.

ALTER TABLE erp_sync.outbox ALTER COLUMN content_gzip DROP NOT NULL;
ALTER TABLE erp_sync.outbox ADD COLUMN IF NOT EXISTS backup_size integer;  -- bytes of the verified gzip
ALTER TABLE erp_sync.outbox ADD COLUMN IF NOT EXISTS raw_size integer;     -- bytes of the raw page
ALTER TABLE erp_sync.outbox ADD COLUMN IF NOT EXISTS content_pruned_at timestamptz;
ALTER TABLE erp_sync.outbox ADD CONSTRAINT outbox_pruned_only_after_backup CHECK (
    content_gzip IS NOT NULL
    OR (backed_up_at IS NOT NULL AND remote_path IS NOT NULL AND backup_sha256 IS NOT NULL
        AND backup_size IS NOT NULL AND raw_size IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS outbox_prunable ON erp_sync.outbox (backed_up_at)
    WHERE content_gzip IS NOT NULL AND backed_up_at IS NOT NULL;
