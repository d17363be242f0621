-- V020: what a drift report needs beyond V001's tables, and the rule that reports never change.
-- Only additive: the Drift Reports UI reads V001's columns unchanged.

-- Which amount an amount_mismatch item is about (receipts compare amount and amount_refunded),
-- the ERP row's currency when it differs from the SaaS record's, and whether the item alone is
-- beyond the configured tolerance.
ALTER TABLE erp_sync.drift_report_items
    ADD COLUMN metric            text,
    ADD COLUMN erp_currency_code char(3),
    ADD COLUMN exceeds_tolerance boolean NOT NULL DEFAULT true;

-- How the report was produced: the tolerances applied, the table invariants checked, what each
-- side was read from, and the report a repair run followed.
ALTER TABLE erp_sync.drift_reports
    ADD COLUMN tolerances         jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN invariants         jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN sources            jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN repair_of_report_id bigint REFERENCES erp_sync.drift_reports;

CREATE INDEX drift_reports_period ON erp_sync.drift_reports (period_start, period_end, created_at DESC);
CREATE INDEX drift_report_items_source ON erp_sync.drift_report_items (stream, source_id);

-- Reports are immutable evidence. The only change allowed is recording where the backup copy went
-- (backup_path, set once, after the files were uploaded). Deleting is refused too.
CREATE FUNCTION erp_sync.drift_report_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'drift_reports'
       AND OLD.backup_path IS NULL
       AND (to_jsonb(NEW) - 'backup_path') = (to_jsonb(OLD) - 'backup_path') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'erp_sync.% rows are immutable (% refused); write a new report version instead',
        TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER drift_reports_immutable BEFORE UPDATE OR DELETE ON erp_sync.drift_reports
    FOR EACH ROW EXECUTE FUNCTION erp_sync.drift_report_immutable();
CREATE TRIGGER drift_report_totals_immutable BEFORE UPDATE OR DELETE ON erp_sync.drift_report_totals
    FOR EACH ROW EXECUTE FUNCTION erp_sync.drift_report_immutable();
CREATE TRIGGER drift_report_items_immutable BEFORE UPDATE OR DELETE ON erp_sync.drift_report_items
    FOR EACH ROW EXECUTE FUNCTION erp_sync.drift_report_immutable();
