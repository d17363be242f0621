"""Drift report renderings (JSON, CSV, self-contained HTML) and the repair command they print."""

from erp_sync.reports.render import (
    file_names,
    render_csv,
    render_html,
    render_json,
    render_totals_csv,
    repair_commands,
)

__all__ = ["file_names", "render_csv", "render_html", "render_json", "render_totals_csv", "repair_commands"]
