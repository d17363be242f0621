"""Fixtures for the browser tests: the shared api-server and a headless Debian Chromium."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.airflow_server import AirflowServer, shared_server

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1000",
)


@pytest.fixture(scope="session")
def airflow_server(request: pytest.FixtureRequest) -> AirflowServer:
    return shared_server(request)


@pytest.fixture
def download_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="erp-ui-downloads-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def browser(download_dir: Path) -> Iterator[object]:
    """Debian's Chromium driven by Debian's chromedriver, fresh profile, no network side-traffic."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        # fail, not skip: a skipped browser test would let a missing install step pass CI
        pytest.fail(
            "Chromium/chromedriver are not installed: run scripts/browser_setup.sh (or -m 'not browser')"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="erp-ui-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
