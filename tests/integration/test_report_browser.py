"""A real browser opens the report: headless Chromium, no console errors, a screenshot.

The report is rendered from a simulated rollout judged by the real judge, with
Evidently's drift report embedded, so the browser runs Evidently's scripts too (in
their sandboxed iframe, under the report's Content-Security-Policy, which forbids any
network load: a fetch would be a console error). The screenshot is saved as
``report.png`` in the test's tmp folder.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcanary.report import Rollout, write_report
from modelcanary.report.extras import evidently_html
from tests.simulated_rollout import GOOD, decision_dicts, simulate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "headless Chromium is not installed: `apt-get install -y chromium chromium-driver`"
            " (.ci/run does it)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    simulation = simulate("browser-model", GOOD)
    drift = evidently_html(simulation.evidence, simulation.mode, simulation.policy.drift)
    assert drift is not None
    rollout = Rollout.from_decisions(
        decision_dicts(simulation), run_ids=[], attachments={"drift.html": drift}
    )
    return write_report(rollout, tmp_path_factory.mktemp("report") / "report.html")


def _wait(condition, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_report_opens_without_console_errors(browser, report_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(report_file.as_uri())
    headline = driver.find_element(By.CSS_SELECTOR, "header h1").text
    assert "PROMOTED" in headline and "champion: version 1" in headline
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) >= 10
    assert all(c.size["width"] > 200 and c.size["height"] > 40 for c in charts)

    # Evidently renders its report with its own scripts inside the iframe
    frame = driver.find_element(By.CSS_SELECTOR, "iframe.evidently")
    driver.execute_script("arguments[0].scrollIntoView()", frame)
    driver.switch_to.frame(frame)
    rendered = _wait(lambda: "Dataset Drift" in driver.execute_script(
        "return document.body ? document.body.innerText : ''"
    ))  # fmt: skip
    driver.switch_to.default_content()
    assert rendered, "Evidently's report did not render inside the iframe"

    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1100, min(int(height) + 80, 16000))
    screenshot = tmp_path / "report.png"
    assert driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 50_000
    print(f"screenshot: {screenshot}")

    problems = [
        entry
        for entry in driver.get_log("browser")
        if entry.get("level") in ("SEVERE", "ERROR") or "Content Security" in entry["message"]
    ]
    assert problems == [], problems
