-- V060: a drift report can be restored from its backup into a database that does not hold the report
-- its repair followed (ADR 0025).
-- A restored report keeps every column it had, `repair_of_report_id` included: the id of the report
-- its repair ran from, in the database both were written in. A restore selects reports by the day they
-- were written (or by run), so that report may be outside the selection or, older than every backup,
-- nowhere; the foreign key would refuse the restored report. The ids themselves are kept by the
-- restore, so where both are restored the reference still holds. As V054 did for the repair's
-- tombstone evidence.

ALTER TABLE erp_sync.drift_reports DROP CONSTRAINT IF EXISTS drift_reports_repair_of_report_id_fkey;
