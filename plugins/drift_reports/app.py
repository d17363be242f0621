"""The Drift reports FastAPI app, mounted on the Airflow api-server at `/drift-reports`.

Every route sits behind Airflow's own authentication and authorisation: the app-level dependency
resolves the caller from the Bearer JWT or the `_token` session cookie (401/403 otherwise) and asks
the auth manager whether they may read DAG runs. The OpenAPI/docs routes are switched off so that
nothing is served anonymously.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg2
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg2.extensions import connection as PgConnection

from erp_sync.reports.render import csv_cell

from . import data, views

CONN_ID = "erp_staging"
URL_PREFIX = "/drift-reports"
# The DAG that writes the reports: reading a report is reading one of its runs.
REPORTS_DAG_ID = "erp_drift_reconciliation"
REPORTS_PER_PAGE = 25
ITEMS_PER_PAGE = 100
MAX_ITEMS_PER_PAGE = 1000

ConnectFn = Callable[[], PgConnection]
# Connection extras passed through to libpq (TLS verification and time-outs among them).
_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "connect_timeout", "options")

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["money"] = views.format_money
_templates.filters["count"] = views.format_count
_templates.filters["plain"] = views.plain
_templates.filters["utc"] = lambda d: d.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if d else "—"
_templates.filters["day"] = lambda d: d.astimezone(UTC).strftime("%Y-%m-%d") if d else "—"


def connect_erp_staging() -> PgConnection:
    """A read-only connection from the `erp_staging` Airflow connection.

    Imported lazily so the data and view modules stay Airflow-free. In the api-server
    (`_AIRFLOW_PROCESS_CONTEXT=server`) DB-stored connections resolve too; env-var ones always do.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    # The hook's own get_conn() hands out psycopg3 when SQLAlchemy 2 is installed; the queries here
    # are psycopg2 (as the rest of erp_sync), so connect with the hook's resolved Connection.
    airflow_conn = PostgresHook(postgres_conn_id=CONN_ID).get_connection(CONN_ID)
    extra = airflow_conn.extra_dejson
    options = {key: extra[key] for key in _LIBPQ_EXTRAS if key in extra}
    options.setdefault("connect_timeout", 10)
    conn = psycopg2.connect(
        host=airflow_conn.host or "127.0.0.1",
        port=airflow_conn.port or 5432,
        user=airflow_conn.login,
        password=airflow_conn.password,
        dbname=airflow_conn.schema,
        application_name="erp_sync_drift_reports_ui",
        **options,
    )
    conn.set_session(readonly=True, autocommit=True)
    return conn


def _airflow_auth_dependencies() -> list[Any]:
    """Airflow's own check: a valid session/token AND permission to read the runs of the DAG that
    writes the reports. Asked for that DAG by id, so an auth manager that grants DAGs one by one
    (FAB, Keycloak) lets in whoever may read the reconciliation, and no one who may only read others."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return [
        Depends(
            requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN, param_dag_id=REPORTS_DAG_ID)
        )
    ]


def _db(request: Request) -> Iterator[PgConnection]:
    try:
        conn = request.app.state.connect()
    except Exception as exc:  # the page says the database is down; the log gets the details
        raise HTTPException(status_code=503, detail="The erp_staging database is not reachable.") from exc
    try:
        yield conn
    finally:
        conn.close()


Db = Annotated[PgConnection, Depends(_db)]


def _base(request: Request) -> str:
    """The mount prefix as seen by the browser (links work under any `url_prefix`)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _render(request: Request, template: str, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(base=_base(request), now=datetime.now(UTC), **context)
    return HTMLResponse(html)


def _parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"Not a date (YYYY-MM-DD): {value!r}") from exc


def _filters(
    status: str | None, stream: str | None, period_from: str | None, period_to: str | None
) -> data.ReportFilters:
    if status and status not in data.REPORT_STATUSES:
        raise HTTPException(status_code=400, detail=f"Unknown status {status!r}")
    return data.ReportFilters(
        status=status or None,
        stream=stream or None,
        period_from=_parse_day(period_from),
        period_to=_parse_day(period_to),
    )


def index(
    request: Request,
    db: Db,
    status: str | None = None,
    stream: str | None = None,
    period_from: str | None = None,
    period_to: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    """Reports newest first with filters, the drift trend and the operations panel."""
    filters = _filters(status, stream, period_from, period_to)
    _, total = data.list_reports(db, filters, limit=0, offset=0)
    pager = views.make_pager(page, REPORTS_PER_PAGE, total)
    reports, _ = data.list_reports(db, filters, limit=pager.per_page, offset=pager.offset)
    charts = views.build_trend_charts(data.trend_points(db, filters))
    return _render(
        request,
        "index.html",
        reports=reports,
        pager=pager,
        filters=filters,
        statuses=data.REPORT_STATUSES,
        streams=data.known_streams(db),
        charts=charts,
        legend=views.chart_legend(charts),
        queues=data.operations_queues(db),
        format_age=views.format_age,
    )


def _report_or_404(db: PgConnection, report_id: int) -> dict[str, Any]:
    report = data.get_report(db, report_id)
    if report is None:
        raise HTTPException(status_code=404, detail=f"No drift report {report_id}")
    return report


def report_page(
    request: Request,
    db: Db,
    report_id: int,
    kind: str | None = None,
    stream: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=10, le=MAX_ITEMS_PER_PAGE)] = ITEMS_PER_PAGE,
) -> HTMLResponse:
    """One report: totals side by side, conservation, provenance, and a page of discrepancies."""
    if kind and kind not in data.ITEM_KINDS:
        raise HTTPException(status_code=400, detail=f"Unknown discrepancy kind {kind!r}")
    report = _report_or_404(db, report_id)
    _, total = data.report_items(db, report_id, limit=0, offset=0, kind=kind, stream=stream)
    pager = views.make_pager(page, per_page, total)
    items, _ = data.report_items(
        db, report_id, limit=pager.per_page, offset=pager.offset, kind=kind, stream=stream or None
    )
    columns, conservation = views.conservation_rows(report["conservation"] or {})
    return _render(
        request,
        "report.html",
        report=report,
        totals=data.report_totals(db, report_id),
        items=items,
        pager=pager,
        kind=kind or "",
        stream=stream or "",
        per_page=per_page,
        breakdown=data.item_breakdown(db, report_id),
        cons_columns=columns,
        cons_rows=[(name, figs, views.conservation_holds(figs, columns)) for name, figs in conservation],
        summary=report["summary"] or {},
    )


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([csv_cell(v) for v in values])
    return buffer.getvalue()


def report_csv(request: Request, report_id: int) -> StreamingResponse:
    """Every discrepancy as CSV, amounts exactly as stored (no rounding), streamed in chunks."""
    conn = request.app.state.connect()
    try:
        _report_or_404(conn, report_id)
    except HTTPException:
        conn.close()
        raise

    def rows() -> Iterator[str]:
        try:
            yield _csv_line(["report_id", *data.ITEM_COLUMNS])
            for item in data.iter_report_items(conn, report_id):
                yield _csv_line([report_id, *(item[c] for c in data.ITEM_COLUMNS)])
        finally:
            conn.close()

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="drift-report-{report_id}.csv"'},
    )


def report_json(request: Request, report_id: int) -> StreamingResponse:
    """The whole report (header, totals, items) as JSON; money as decimal strings, never floats."""
    conn = request.app.state.connect()
    try:
        report = _report_or_404(conn, report_id)
        head = data.report_as_json_ready(report, data.report_totals(conn, report_id))
    except HTTPException:
        conn.close()
        raise

    def body() -> Iterator[str]:
        try:
            yield json.dumps(head, indent=1)[:-2] + ',\n "items": ['
            for n, item in enumerate(data.iter_report_items(conn, report_id)):
                yield ("," if n else "") + "\n  " + json.dumps(data.item_json_ready(item))
            yield "\n ]\n}\n"
        finally:
            conn.close()

    return StreamingResponse(
        body(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="drift-report-{report_id}.json"'},
    )


def report_verify(db: Db, report_id: int) -> JSONResponse:
    """Recompute the report's content SHA-256 from its stored rows (erp_sync.store.drift) and compare."""
    report = _report_or_404(db, report_id)
    from erp_sync.store.drift import verify_report

    return JSONResponse(
        {
            "report_id": report_id,
            "content_sha256": str(report["content_sha256"]).strip(),
            "verified": verify_report(db, report_id),
        }
    )


def create_app(connect: ConnectFn = connect_erp_staging) -> FastAPI:
    """Build the app; `connect` opens a connection to the erp_staging database for one request."""
    app = FastAPI(
        title="Drift reports",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=_airflow_auth_dependencies(),
    )
    app.state.connect = connect
    app.add_api_route("/", index, methods=["GET"], response_class=HTMLResponse, name="index")
    app.add_api_route(
        "/reports/{report_id}", report_page, methods=["GET"], response_class=HTMLResponse, name="report"
    )
    app.add_api_route("/reports/{report_id}/items.csv", report_csv, methods=["GET"], name="report_csv")
    app.add_api_route("/reports/{report_id}/report.json", report_json, methods=["GET"], name="report_json")
    app.add_api_route("/reports/{report_id}/verify", report_verify, methods=["GET"], name="report_verify")
    return app
