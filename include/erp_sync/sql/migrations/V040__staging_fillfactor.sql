-- V040: room on each heap page for in-place (HOT) updates of staging headers.
-- A delta mostly rewrites headers whose indexed columns (the key, issued_at) do not change: a paid
-- invoice gets a new status and amounts. With full pages (the default fillfactor 100 after a COPY)
-- every such update goes to another page and adds an entry to every index; with room on the page it
-- stays there and touches no index. Measured on 1,000,000 invoices: 3,300 random header upserts took
-- 0.09-0.36 s at fillfactor 100 and 0.04 s at 85 (all HOT). Lines are mostly appended, so they keep
-- full pages. The setting applies to pages written from now on; an existing table is repacked only by
-- an operator's VACUUM FULL or CLUSTER (it takes an exclusive lock, so no migration does it).

ALTER TABLE erp_staging.ar_invoices SET (fillfactor = 85);
ALTER TABLE erp_staging.customers SET (fillfactor = 85);
ALTER TABLE erp_staging.ar_receipts SET (fillfactor = 85);
ALTER TABLE erp_staging.ar_refunds SET (fillfactor = 85);
ALTER TABLE erp_staging.ar_credit_memos SET (fillfactor = 85);
ALTER TABLE erp_staging.sales_orders SET (fillfactor = 85);
