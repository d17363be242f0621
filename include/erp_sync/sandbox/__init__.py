"""A Stripe-compatible SaaS sandbox for the demo, the tests and the benchmark.

- `python -m erp_sync.sandbox serve --port 0 --invoices N --seed S --secret-key sk_test_...
  [--oauth] [--faults JSON] [--history-days D]` prints `SANDBOX READY http://127.0.0.1:PORT`.
- `erp_sync.sandbox.testing.running_sandbox(...)` starts one as a subprocess for tests and the demo;
  its `.admin` (`AdminClient`) reads the ground truth, applies mutations, sets faults, counts requests.
- `erp_sync.sandbox.pytest_plugin` has `sandbox` / `oauth_sandbox` fixtures.
- `python -m erp_sync.sandbox.bench_server` measures list requests per second.

Modules: `world` (seeded data, state, rendering, mutations, truth), `app` (HTTP semantics, auth,
faults, admin routes), `server` (asyncio/httptools transport), `templates` (Stripe fixture shapes),
`faults`, `ids`, `columns`.
"""
