-- V054: a repair's tombstone evidence can be restored into a database that never held its report
-- (ADR 0022).
-- The restore stages a repair's tombstones again from the batch's backed-up document, with one
-- evidence row per record naming the drift report that found it. Drift reports are backed up as files
-- (reports/{YYYY}/{MM}/...), not restored into `erp_sync.drift_reports`, so a staging rebuilt into an
-- empty database has none of them: the foreign key would refuse the evidence of every restored
-- tombstone. `report_id` keeps naming the report of the database the repair ran in, as the backed-up
-- document does; the batch (`batch_id`, still a foreign key) is always this database's.

ALTER TABLE erp_sync.repair_tombstones DROP CONSTRAINT IF EXISTS repair_tombstones_report_id_fkey;
