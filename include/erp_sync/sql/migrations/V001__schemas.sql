-- V001: the ERP staging tables and the sync's control tables.
-- Applied once per database by erp_sync.store.migrations (recorded in erp_sync.schema_migrations).
-- Every staging row carries the same control columns; keys are (source_system, source_id) per table.

CREATE SCHEMA IF NOT EXISTS erp_staging;
CREATE SCHEMA IF NOT EXISTS erp_sync;

CREATE TABLE erp_staging.customers (
    source_system    text        NOT NULL,
    source_id        text        NOT NULL,
    name             text,
    email            text,
    currency_code    char(3),
    created_at       timestamptz NOT NULL,
    row_sha256       char(64)    NOT NULL,
    source_version   bigint      NOT NULL,
    sync_batch_id    bigint      NOT NULL,
    interface_status text        NOT NULL DEFAULT 'PENDING',
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);

CREATE TABLE erp_staging.ar_invoices (
    source_system    text          NOT NULL,
    source_id        text          NOT NULL,
    customer_ref     text,
    invoice_number   text,
    status           text          NOT NULL,
    currency_code    char(3)       NOT NULL,
    total_amount     numeric(20,3) NOT NULL,
    amount_paid      numeric(20,3) NOT NULL,
    amount_due       numeric(20,3) NOT NULL,
    issued_at        timestamptz   NOT NULL,
    due_at           timestamptz,
    row_sha256       char(64)      NOT NULL,
    source_version   bigint        NOT NULL,
    sync_batch_id    bigint        NOT NULL,
    interface_status text          NOT NULL DEFAULT 'PENDING',
    loaded_at        timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);
CREATE INDEX ar_invoices_issued_at ON erp_staging.ar_invoices (issued_at);

CREATE TABLE erp_staging.ar_invoice_lines (
    source_system     text          NOT NULL,
    source_id         text          NOT NULL,
    invoice_source_id text          NOT NULL,
    line_number       integer       NOT NULL,
    description       text,
    quantity          numeric(20,6),
    currency_code     char(3)       NOT NULL,
    amount            numeric(20,3) NOT NULL,
    row_sha256        char(64)      NOT NULL,
    source_version    bigint        NOT NULL,
    sync_batch_id     bigint        NOT NULL,
    interface_status  text          NOT NULL DEFAULT 'PENDING',
    loaded_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);
CREATE INDEX ar_invoice_lines_invoice ON erp_staging.ar_invoice_lines (source_system, invoice_source_id);

CREATE TABLE erp_staging.ar_receipts (
    source_system     text          NOT NULL,
    source_id         text          NOT NULL,
    invoice_source_id text,
    customer_ref      text,
    currency_code     char(3)       NOT NULL,
    amount            numeric(20,3) NOT NULL,
    amount_refunded   numeric(20,3) NOT NULL,
    status            text          NOT NULL,
    received_at       timestamptz   NOT NULL,
    row_sha256        char(64)      NOT NULL,
    source_version    bigint        NOT NULL,
    sync_batch_id     bigint        NOT NULL,
    interface_status  text          NOT NULL DEFAULT 'PENDING',
    loaded_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);
CREATE INDEX ar_receipts_received_at ON erp_staging.ar_receipts (received_at);

-- Stripe refunds (not in the original design table): one row per refund of a receipt.
CREATE TABLE erp_staging.ar_refunds (
    source_system     text          NOT NULL,
    source_id         text          NOT NULL,
    receipt_source_id text,
    currency_code     char(3)       NOT NULL,
    amount            numeric(20,3) NOT NULL,
    status            text          NOT NULL,
    reason            text,
    refunded_at       timestamptz   NOT NULL,
    row_sha256        char(64)      NOT NULL,
    source_version    bigint        NOT NULL,
    sync_batch_id     bigint        NOT NULL,
    interface_status  text          NOT NULL DEFAULT 'PENDING',
    loaded_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);

CREATE TABLE erp_staging.ar_credit_memos (
    source_system     text          NOT NULL,
    source_id         text          NOT NULL,
    invoice_source_id text,
    customer_ref      text,
    memo_number       text,
    status            text          NOT NULL,
    reason            text,
    currency_code     char(3)       NOT NULL,
    total_amount      numeric(20,3) NOT NULL,
    issued_at         timestamptz   NOT NULL,
    row_sha256        char(64)      NOT NULL,
    source_version    bigint        NOT NULL,
    sync_batch_id     bigint        NOT NULL,
    interface_status  text          NOT NULL DEFAULT 'PENDING',
    loaded_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);

-- Orders from a non-Stripe API (the declarative-stream example).
CREATE TABLE erp_staging.sales_orders (
    source_system     text          NOT NULL,
    source_id         text          NOT NULL,
    customer_ref      text,
    status            text          NOT NULL,
    currency_code     char(3)       NOT NULL,
    total_amount      numeric(20,3) NOT NULL,
    ordered_at        timestamptz   NOT NULL,
    row_sha256        char(64)      NOT NULL,
    source_version    bigint        NOT NULL,
    sync_batch_id     bigint        NOT NULL,
    interface_status  text          NOT NULL DEFAULT 'PENDING',
    loaded_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, source_id)
);

-- Control tables -----------------------------------------------------------------------------

CREATE TABLE erp_sync.sync_batches (
    batch_id          bigint      PRIMARY KEY,        -- from the Redis counter
    run_id            text        NOT NULL,
    source_system     text        NOT NULL,
    stream            text        NOT NULL,
    window_start      timestamptz,
    window_end        timestamptz,
    input_sha256      char(64)    NOT NULL,           -- hash of the batch's raw input
    extracted         integer     NOT NULL,
    loaded_new        integer     NOT NULL,
    loaded_changed    integer     NOT NULL,
    skipped_unchanged integer     NOT NULL,
    rejected          integer     NOT NULL,
    rows_by_table     jsonb       NOT NULL DEFAULT '{}',
    cursor_before     timestamptz,
    cursor_after      timestamptz,
    committed_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_system, stream, window_start, window_end, input_sha256),
    CHECK (extracted = loaded_new + loaded_changed + skipped_unchanged + rejected)
);
CREATE INDEX sync_batches_run ON erp_sync.sync_batches (run_id);

CREATE TABLE erp_sync.stream_state (
    source_system text        NOT NULL,
    stream        text        NOT NULL,
    cursor_value  timestamptz,                        -- exclusive end of the last fully committed window
    last_batch_id bigint,
    last_run_id   text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, stream)
);

CREATE TABLE erp_sync.rejections (
    rejection_id    bigserial   PRIMARY KEY,
    source_system   text        NOT NULL,
    stream          text        NOT NULL,
    source_id       text,
    reason_code     text        NOT NULL,
    message         text        NOT NULL,
    raw_payload     text        NOT NULL,             -- exactly what arrived, even when not JSON
    batch_id        bigint,
    status          text        NOT NULL DEFAULT 'PENDING',   -- PENDING | REPLAYED
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    replay_batch_id bigint
);
CREATE INDEX rejections_pending ON erp_sync.rejections (status, stream, reason_code);

-- Transactional outbox of raw extract pages, drained to SFTP by the backup task.
CREATE TABLE erp_sync.outbox (
    outbox_id      bigserial   PRIMARY KEY,
    batch_id       bigint      NOT NULL,
    run_id         text        NOT NULL,
    source_system  text        NOT NULL,
    stream         text        NOT NULL,
    page_no        integer     NOT NULL,
    url            text        NOT NULL,
    page_meta      jsonb       NOT NULL DEFAULT '{}', -- what rebuilding the Page needs: mode, default version
    record_count   integer     NOT NULL,
    content_gzip   bytea       NOT NULL,              -- gzip of the raw page bytes
    sha256         char(64)    NOT NULL,              -- of the uncompressed raw page
    created_at     timestamptz NOT NULL DEFAULT now(),
    backed_up_at   timestamptz,
    remote_path    text
);
CREATE INDEX outbox_pending ON erp_sync.outbox (backed_up_at) WHERE backed_up_at IS NULL;

CREATE TABLE erp_sync.drift_reports (
    report_id        bigserial   PRIMARY KEY,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    version          integer     NOT NULL,            -- 1, 2, ... per (period_start, period_end, streams)
    streams          text[]      NOT NULL,
    status           text        NOT NULL CHECK (status IN ('OK', 'DRIFT', 'ERROR')),
    dag_id           text,
    run_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    item_count       integer     NOT NULL DEFAULT 0,
    summary          jsonb       NOT NULL DEFAULT '{}',   -- free-form headline figures
    conservation     jsonb       NOT NULL DEFAULT '{}',   -- sums of the covered sync_batches
    content_sha256   char(64)    NOT NULL,
    backup_path      text,
    repair_command   text,
    error_message    text,
    UNIQUE (period_start, period_end, streams, version)
);

CREATE TABLE erp_sync.drift_report_totals (
    report_id       bigint        NOT NULL REFERENCES erp_sync.drift_reports,
    stream          text          NOT NULL,
    currency_code   char(3)       NOT NULL,
    status          text          NOT NULL,
    metric          text          NOT NULL,           -- total_amount | amount | amount_refunded | count
    saas_count      bigint        NOT NULL,
    erp_count       bigint        NOT NULL,
    saas_sum        numeric(24,3) NOT NULL,
    erp_sum         numeric(24,3) NOT NULL,
    difference      numeric(24,3) NOT NULL,           -- erp - saas, major units
    tolerance_abs   numeric(24,3) NOT NULL,
    tolerance_rel   numeric(12,9) NOT NULL,
    within_tolerance boolean      NOT NULL,
    PRIMARY KEY (report_id, stream, currency_code, status, metric)
);

CREATE TABLE erp_sync.drift_report_items (
    report_id       bigint        NOT NULL REFERENCES erp_sync.drift_reports,
    item_no         integer       NOT NULL,
    stream          text          NOT NULL,
    source_id       text          NOT NULL,
    kind            text          NOT NULL CHECK (kind IN
                        ('missing_in_erp', 'missing_in_saas', 'amount_mismatch', 'status_mismatch')),
    currency_code   char(3),
    saas_amount     numeric(24,3),
    erp_amount      numeric(24,3),
    saas_status     text,
    erp_status      text,
    difference      numeric(24,3),                    -- erp - saas, major units
    erp_batch_id    bigint,
    PRIMARY KEY (report_id, item_no)
);
CREATE INDEX drift_report_items_kind ON erp_sync.drift_report_items (report_id, kind, stream);
