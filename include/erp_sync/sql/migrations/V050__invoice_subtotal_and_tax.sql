-- V050: an invoice header's subtotal and tax, so that its lines can be checked against it.
-- An invoice's lines add up to its subtotal: the amount before invoice-level discounts and exclusive
-- tax. Its total adds the exclusive tax and takes off those discounts, so the line-sum invariant,
-- which compared the lines with the total, failed for every taxed or discounted invoice (ADR 0016).
-- Both columns are nullable: rows staged before this migration, and sources that state no subtotal or
-- tax, have none; the invariant then falls back to the total. A header's row hash now covers both, so
-- the first full refresh after this migration rewrites each invoice header once (a delta, only those
-- it reads).

ALTER TABLE erp_staging.ar_invoices ADD COLUMN IF NOT EXISTS subtotal_amount numeric(20,3);
ALTER TABLE erp_staging.ar_invoices ADD COLUMN IF NOT EXISTS tax_amount numeric(20,3);
