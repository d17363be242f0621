-- V051: a quarantined deletion stays a deletion.
-- A record from a deletion event (`customer.deleted`, `invoice.deleted`) whose snapshot fails
-- validation is quarantined like any other; replaying it used to load the snapshot as a live row,
-- because the rejection kept the record but not that it had been deleted (ADR 0015). `deleted` keeps
-- that, and the replay stages the record as a tombstone.

ALTER TABLE erp_sync.rejections ADD COLUMN IF NOT EXISTS deleted boolean NOT NULL DEFAULT false;
