-- V061: an invoice header's digest of its lines as loaded with it (ADR 0027).
-- After every header upsert the loader looked for lines the new version no longer has, under every
-- rewritten invoice: a probe of the lines' parent index and their heap pages per invoice, the
-- largest statement of a 1% delta, although a paid or voided invoice keeps its lines. The header
-- now stores the combined digest of its lines' row hashes (the one its row_sha256 already covers),
-- and the loader looks only under headers whose digest the upsert changed, and under tombstones.
-- Nullable: headers staged before this migration have none, which counts as changed, so their
-- next rewrite looks as before. No header is rewritten by this migration: the row hashes do not
-- change. The loader's grants are per table (V002), so they cover the new column.

ALTER TABLE erp_staging.ar_invoices ADD COLUMN IF NOT EXISTS children_sha256 char(64);
