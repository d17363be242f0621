# The front door. `make demo` runs the nightly job end to end; `make test` runs every test.
# Each target does its own idempotent set-up (venv from the lock, Airflow init, services).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ENV := source scripts/env.sh
CONF ?= {}
PYTEST_ARGS ?=

.PHONY: help setup venv airflow-init services demo test test-unit test-integration lint ui sync \
        reconcile replay restore bench sandbox sftp clean

help:
	@echo "make demo       run the nightly job end to end against the local sandbox, then summarise"
	@echo "make test       lint + unit, DAG, integration and browser tests against real services"
	@echo "make ui         start Airflow on http://127.0.0.1:8080 (login printed)"
	@echo "make sync       run saas_to_erp_sync once (CONF='{\"full_refresh\": true}')"
	@echo "make reconcile  run erp_drift_reconciliation once (CONF='{\"period_start\": ...}')"
	@echo "make bench      the benchmark harness (BENCH_INVOICES=1000000)"

venv:
	@scripts/setup_venv.sh

airflow-init: venv
	@scripts/airflow_init.sh

services: venv
	@scripts/services.sh

sftp: venv
	@scripts/sftp_server.sh start

setup: venv airflow-init services

demo: setup sftp
	@scripts/demo.sh

lint: venv
	@$(ENV); ruff check dags plugins include tests bench
	@$(ENV); ruff format --check dags plugins include tests bench || \
	  { echo "run: .venv/bin/ruff format dags plugins include tests bench"; exit 1; }
	@$(ENV); mypy
	@$(ENV); mypy bench tests/unit/bench

test: setup lint
	@scripts/test.sh $(PYTEST_ARGS)

test-unit: venv
	@$(ENV); python -m pytest tests/unit tests/dags -q $(PYTEST_ARGS)

ui: setup sftp
	@scripts/ui.sh

sync: setup
	@$(ENV); sftp_conn_default; airflow dags test saas_to_erp_sync -c '$(CONF)'

reconcile: setup
	@$(ENV); sftp_conn_default; airflow dags test erp_drift_reconciliation -c '$(CONF)'

replay: setup
	@$(ENV); airflow dags test erp_rejections_replay -c '$(CONF)'

restore: setup sftp
	@$(ENV); sftp_conn_default; airflow dags test erp_restore_from_backup -c '$(CONF)'

bench: setup
	@scripts/bench.sh

clean:
	@-scripts/sftp_server.sh stop
	@-[ -f .run/sandbox.pid ] && kill $$(cat .run/sandbox.pid) 2>/dev/null; true
	rm -rf .run .airflow test-output
