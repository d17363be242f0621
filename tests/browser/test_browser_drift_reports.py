"""An auditor's walk through the Drift reports UI in Debian's headless Chromium.

Against a real Airflow api-server (SimpleAuthManager, the repo's plugins/ folder, a seeded Postgres):
log in on Airflow's own login page, open "Drift reports" from the navigation, see the seeded reports
and the trend chart, open a report, page through discrepancies, download the CSV and compare it
with the database. Screenshots land in test-output/screenshots/.
"""

from __future__ import annotations

import csv
import json
import time
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.airflow_server import AirflowServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_S = 60  # how long to wait for the UI (a wait, not an assertion on speed)
TIMINGS = Path(__file__).resolve().parents[2] / "test-output" / "ui-timings.json"


def _wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, WAIT_S)


def _navigation_tolerant_wait(driver: WebDriver) -> WebDriverWait:
    """The UI sends an anonymous visitor on to /auth/login in the browser; while that navigation is in
    flight a lookup can fail with "aborted by navigation", so this wait shrugs that off and retries."""
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(WebDriverException,))


def _login(driver: WebDriver, server: AirflowServer, user: str = "auditor") -> None:
    driver.get(server.base_url + "/")
    wait = _navigation_tolerant_wait(driver)
    wait.until(lambda d: "/auth/login" in d.current_url)
    username = wait.until(ec.element_to_be_clickable((By.NAME, "username")))
    username.send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(server.password(user))
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
    wait.until(lambda d: "/auth/login" not in d.current_url)
    wait.until(lambda d: d.get_cookie("_token") is not None)


def _full_page_screenshot(driver: WebDriver, path: Path) -> None:
    """Resize the window to the document so the PNG shows the whole page, then restore it."""
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], min(int(height) + 140, 6000))
    driver.save_screenshot(str(path))
    driver.set_window_size(size["width"], size["height"])


def _open_from_navigation(driver: WebDriver) -> None:
    wait = _wait(driver)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label=Browse]"))).click()
    wait.until(ec.element_to_be_clickable((By.XPATH, "//a[normalize-space()='Drift reports']"))).click()
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe[title='Drift reports']")))
    wait.until(ec.presence_of_element_located((By.ID, "operations")))


def _listed_report_ids(driver: WebDriver) -> list[int]:
    rows = driver.find_elements(By.CSS_SELECTOR, "table#reports tbody tr")
    return [int(r.get_attribute("data-report-id")) for r in rows]


def _db(server: AirflowServer, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(server.pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def _wait_for_download(folder: Path, name: str) -> Path:
    target = folder / name
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if target.exists() and not list(folder.glob("*.crdownload")):
            return target
        time.sleep(0.2)
    raise AssertionError(f"{name} was not downloaded; folder has {sorted(p.name for p in folder.iterdir())}")


def test_auditor_logs_in_and_reads_reports_from_the_navigation(
    browser: WebDriver, airflow_server: AirflowServer, screenshots: Path, download_dir: Path
) -> None:
    driver = browser
    driver.execute_cdp_cmd(  # let the sandboxed plugin iframe save downloads into our folder
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
    )
    driver.get(airflow_server.base_url + "/")
    _navigation_tolerant_wait(driver).until(ec.presence_of_element_located((By.NAME, "username")))
    driver.save_screenshot(str(screenshots / "01-airflow-login.png"))
    _login(driver, airflow_server)

    _open_from_navigation(driver)
    expected = [
        r[0]
        for r in _db(airflow_server, "SELECT report_id FROM erp_sync.drift_reports ORDER BY created_at DESC")
    ]
    assert _listed_report_ids(driver) == expected
    badges = {b.text for b in driver.find_elements(By.CSS_SELECTOR, "table#reports .badge")}
    assert badges == {"OK", "DRIFT", "ERROR"}
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.trend")
    assert sorted(c.get_attribute("id") for c in charts) == ["trend-JPY", "trend-KWD", "trend-USD"]
    assert all(c.size["height"] > 50 for c in charts)  # drawn, not collapsed
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.trend circle.pt")) == 3 * 2 * 5
    driver.switch_to.default_content()
    driver.save_screenshot(str(screenshots / "02-drift-reports-in-airflow-nav.png"))

    # Open the 12-item DRIFT report from the list inside the Airflow UI.
    report = airflow_server.seeded.by_status("DRIFT")[0]
    _wait(driver).until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe")))
    driver.find_element(By.LINK_TEXT, f"#{report.report_id}").click()
    _wait(driver).until(ec.presence_of_element_located((By.ID, "items")))
    assert driver.find_element(By.ID, "report-status").text == "DRIFT"
    assert driver.find_element(By.ID, "sha256").text == report.content_sha256
    assert driver.find_element(By.ID, "backup-path").text == report.backup_path
    rows = driver.find_elements(By.CSS_SELECTOR, "table#items tbody tr")
    assert len(rows) == report.item_count
    first = rows[0].find_elements(By.TAG_NAME, "td")
    db_first = _db(
        airflow_server,
        "SELECT source_id, kind, erp_batch_id FROM erp_sync.drift_report_items WHERE report_id = %s"
        " AND item_no = 1",
        (report.report_id,),
    )[0]
    assert (first[2].text, first[3].text, first[12].text) == (
        db_first[0],
        db_first[1],
        str(db_first[2] or "—"),
    )
    verify = driver.find_element(By.ID, "sha-verify")
    _wait(driver).until(lambda d: verify.get_attribute("data-verified"))
    assert verify.get_attribute("data-verified") == "yes", verify.text
    assert "matches the stored totals and items" in verify.text
    driver.switch_to.default_content()
    driver.save_screenshot(str(screenshots / "03-report-in-airflow-ui.png"))

    # Download the CSV from inside the iframe and check every row against the database.
    _wait(driver).until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe")))
    driver.find_element(By.ID, "download-csv").click()
    downloaded = _wait_for_download(download_dir, f"drift-report-{report.report_id}.csv")
    with downloaded.open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    db_rows = _db(
        airflow_server,
        "SELECT item_no, stream, source_id, kind, currency_code, saas_amount, erp_amount, difference,"
        " saas_status, erp_status, erp_batch_id FROM erp_sync.drift_report_items WHERE report_id = %s"
        " ORDER BY item_no",
        (report.report_id,),
    )
    assert len(csv_rows) == len(db_rows) == report.item_count
    for row, db_row in zip(csv_rows, db_rows, strict=True):
        item_no, stream, source_id, kind, currency, saas, erp, diff, s_status, e_status, batch = db_row
        assert int(row["item_no"]) == item_no and int(row["report_id"]) == report.report_id
        assert (row["stream"], row["source_id"], row["kind"], row["currency_code"]) == (
            stream,
            source_id,
            kind,
            currency,
        )
        for field, value in (("saas_amount", saas), ("erp_amount", erp), ("difference", diff)):
            assert (Decimal(row[field]) if row[field] else None) == value, (item_no, field)
        assert (row["saas_status"] or None, row["erp_status"] or None) == (s_status, e_status)
        assert (int(row["erp_batch_id"]) if row["erp_batch_id"] else None) == batch


def test_report_with_ten_thousand_discrepancies_pages_through(
    browser: WebDriver, airflow_server: AirflowServer, screenshots: Path
) -> None:
    driver = browser
    _login(driver, airflow_server)
    big = airflow_server.seeded.big
    url = f"{airflow_server.base_url}/drift-reports/reports/{big.report_id}"
    driver.get(url)
    _wait(driver).until(ec.presence_of_element_located((By.ID, "items")))
    timing = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {ttfb: n.responseStart, response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd,"
        " load: n.loadEventEnd, transfer_bytes: n.transferSize};"
    )
    numbers = [
        int(r.get_attribute("data-item-no"))
        for r in driver.find_elements(By.CSS_SELECTOR, "table#items tbody tr")
    ]
    assert numbers == list(range(1, 101))
    assert "of 10,000" in driver.find_element(By.CSS_SELECTOR, "#pager-top .info").text
    _full_page_screenshot(driver, screenshots / "04-report-10000-items-page-1.png")

    driver.find_element(By.CSS_SELECTOR, "#pager-top a[rel=next]").click()
    _wait(driver).until(lambda d: "page=2" in d.current_url)
    numbers = [
        int(r.get_attribute("data-item-no"))
        for r in driver.find_elements(By.CSS_SELECTOR, "table#items tbody tr")
    ]
    assert numbers == list(range(101, 201))

    # Jump to the last page through the pager's last link.
    driver.find_elements(By.CSS_SELECTOR, "#pager-top a:not([rel])")[-1].click()
    _wait(driver).until(lambda d: "page=100" in d.current_url)
    last = driver.find_elements(By.CSS_SELECTOR, "table#items tbody tr")
    assert int(last[-1].get_attribute("data-item-no")) == 10_000

    # One measurement for the benchmark harness to pick up; not asserted (no timed assertions).
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps({"report_10000_items_page_1_ms": timing, "url": url}, indent=2) + "\n")
    print(f"10,000-item report page 1 navigation timing (ms): {timing}")


def test_list_and_report_pages_render_for_screenshots(
    browser: WebDriver, airflow_server: AirflowServer, screenshots: Path
) -> None:
    """Full-page captures of the list (chart, filters, operations) and a small DRIFT report."""
    driver = browser
    _login(driver, airflow_server)
    driver.get(f"{airflow_server.base_url}/drift-reports/")
    _wait(driver).until(ec.presence_of_element_located((By.ID, "operations")))
    queues = {
        q.get_attribute("data-queue"): q.find_element(By.CSS_SELECTOR, ".count").text
        for q in driver.find_elements(By.CSS_SELECTOR, "#operations .queue")
    }
    assert queues["Rejections awaiting replay"] == str(airflow_server.seeded.pending_rejections)
    assert queues["Raw pages awaiting backup"] == str(airflow_server.seeded.pending_outbox)
    _full_page_screenshot(driver, screenshots / "05-list-full-page.png")

    driver.find_element(By.ID, "filter-status").click()
    driver.find_element(By.CSS_SELECTOR, "#filter-status option[value=DRIFT]").click()  # auto-submits
    _wait(driver).until(lambda d: "status=DRIFT" in d.current_url)
    assert set(_listed_report_ids(driver)) == {r.report_id for r in airflow_server.seeded.by_status("DRIFT")}

    report = airflow_server.seeded.by_status("DRIFT")[-1]
    driver.get(f"{airflow_server.base_url}/drift-reports/reports/{report.report_id}")
    _wait(driver).until(ec.presence_of_element_located((By.ID, "totals")))
    assert len(driver.find_elements(By.CSS_SELECTOR, "table#totals tbody tr")) == 2 * 3 * 2
    _full_page_screenshot(driver, screenshots / "06-report-full-page.png")
