-- V030: what the SFTP backup needs from the outbox.
-- The drain groups pending pages by run (one manifest per run), so it looks rows up by run_id; and it
-- records the SHA-256 of the gzip it verified on the server, so an auditor can match a staging row's
-- batch to the exact remote file without downloading it.

CREATE INDEX IF NOT EXISTS outbox_run ON erp_sync.outbox (run_id, batch_id, page_no);

ALTER TABLE erp_sync.outbox ADD COLUMN IF NOT EXISTS backup_sha256 char(64);  -- of content_gzip, verified remotely
