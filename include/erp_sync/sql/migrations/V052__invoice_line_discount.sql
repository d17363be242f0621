-- V052: an invoice line's item-level discount, so that the lines can be checked against the subtotal.
-- A Stripe line's `amount` is gross: before its own (item-level) discounts. The invoice's subtotal is
-- after them (and before invoice-level discounts and exclusive tax), so the line-sum invariant failed
-- for every invoice with a line-item coupon (ADR 0019). `discount_amount` is what the line's own
-- discounts took off (the sum of its `discount_amounts` for the discounts in its `discounts`); the
-- invariant holds the sum of `amount - coalesce(discount_amount, 0)` to the subtotal.
-- Nullable: lines staged before this migration, and sources that state no discount amounts, have
-- none; a line that states them and has no discount of its own has 0. A line's row hash now covers
-- it, so the first run after this migration rewrites each line it reads once (and its invoice
-- header, whose hash covers its lines' hashes) and stages them PENDING again.
-- The loader's grants are per table (V002), so they cover the new column; the loader's column lists
-- are the mapped frame's columns.

ALTER TABLE erp_staging.ar_invoice_lines ADD COLUMN IF NOT EXISTS discount_amount numeric(20,3);
