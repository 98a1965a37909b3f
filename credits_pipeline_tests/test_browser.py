"""The Dagster UI as a data engineer meets it, driven through headless Chromium.

The other tests prove what the pipeline computes; this one proves that a person can *see* it: after
a full materialization of the `--anomalies` demo, the webserver shows the asset graph in the order
the data flows, the lineage from the raw ledger down to the reconciliation, the reconciliation's
story (summary and the weekly anomaly chart inline, the non-ok users with most credits at stake,
the chart per rule) and its failing ledger-rule checks; the run carries its failed check counts
as tags (in the runs list and on the run's page), and the source ledger is observed (its row
count, not "Missing"). It walks those pages the way a person would — asset page, lineage, click
through to the reconciliation, its checks, the run — waits on text rather than time, and leaves a
screenshot of each page in `docs/screenshots/` for the README. Debian's Chromium and chromedriver
are used as installed (`.ci/install-browser`); Selenium Manager is kept offline.
"""

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from credits_pipeline import settings
from credits_pipeline.extract.column_docs import raw_column_descriptions
from credits_pipeline.extract.observe import NEWEST_CREATED_AT_METADATA
from credits_pipeline.ledger import report
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.assets import (
    FAILING_RULES_METADATA_KEY,
    NON_OK_METADATA_KEY,
    TREND_METADATA_KEY,
    WEEKLY_CHART_METADATA_KEY,
)
from credits_pipeline.run_tags import FAILED_ERROR_CHECKS_TAG, FAILED_WARN_CHECKS_TAG

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1400, 900
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    f"--window-size={VIEWPORT_WIDTH},{VIEWPORT_HEIGHT}",
)

DEMO_USERS = 90
DEMO_SEED = 11
DEMO_MONTHS = 6
PARTITION_DAYS = 100
MATERIALIZE_TIMEOUT_S = 600
SERVER_START_TIMEOUT_S = 180
PAGE_TIMEOUT_S = 60
# Downstream hops from raw/credit_histories to the reconciliation (via credits/credit_histories).
LINEAGE_DEPTH = 2

LEDGER_PATH = "raw/credit_histories"
SOURCE_LEDGER_PATH = "syllaby_v2/credit_histories"
RECONCILIATION_PATH = f"{rc.MARTS_SCHEMA}/{rc.RECONCILIATION_TABLE}"
# The reconciliation relation's checks; the --anomalies demo breaks chains and drifts balances.
FAILING_RECONCILIATION_CHECKS = (rc.CHECK_CHAIN_BREAK, rc.CHECK_BALANCE_DRIFT)
TREND_HEADING = f"Anomalies per week, last {report.TREND_WEEKS} weeks"
NON_OK_HEADING = "user(s) not ok"
# The UI's "join the community" prompt (shown on 127.0.0.1) is dismissed through its own flag.
COMMUNITY_PROMPT_STORAGE_KEY = "communityNux"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pipeline_env(tmp_path: Path, source_url: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    today = dt.datetime.now(dt.UTC).date()
    return {
        **os.environ,
        settings.SOURCE_URL_VAR: source_url,
        settings.WAREHOUSE_PATH_VAR: str(tmp_path / "warehouse.duckdb"),
        settings.LEDGER_START_DATE_VAR: (today - dt.timedelta(days=PARTITION_DAYS)).isoformat(),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


@dataclass(frozen=True)
class Materialized:
    """The webserver's address, and the CLI's run it shows with the counts the CLI printed."""

    base: str
    run_id: str
    failed_error_checks: int
    failed_warn_checks: int
    source_ledger_rows: int


def _cli_run(stdout: str) -> tuple[str, int, int, int]:
    """The run id, the failed ERROR/WARN check counts and the observed ledger rows the CLI
    printed."""
    run_id = re.search(r"run id: ([0-9a-f-]{36})", stdout)
    failed = re.search(r"checks failed: \d+ \((\d+) ERROR, (\d+) WARN\)", stdout)
    observed = re.search(r"observed syllaby_v2: \d+ tables, ([\d,]+) ledger rows", stdout)
    assert run_id and failed and observed, stdout[-3000:]
    return (
        run_id.group(1),
        int(failed.group(1)),
        int(failed.group(2)),
        int(observed.group(1).replace(",", "")),
    )


@pytest.fixture(scope="module")
def ui() -> Iterator[Materialized]:
    """A webserver on a free port over an instance holding one full run of the --anomalies demo.

    The webserver starts while the materialization runs (both only read the definitions; the
    webserver reads the instance live), which saves its start-up time.
    """
    from credits_pipeline.source.demo import generate

    tmp_path = Path(tempfile.mkdtemp(prefix="credits_browser_"))
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    generate(url, users=DEMO_USERS, seed=DEMO_SEED, months=DEMO_MONTHS, anomalies=True)
    env = _pipeline_env(tmp_path, url)
    port = _free_port()
    log_path = tmp_path / "webserver.log"
    webserver = Path(sys.executable).parent / "dagster-webserver"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code-server child goes down with it
        )
    try:
        run = subprocess.run(
            [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=MATERIALIZE_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(base, server, log_path)
        yield Materialized(base, *_cli_run(run.stdout))
    finally:
        _stop(server)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def ui_url(ui: Materialized) -> str:
    return ui.base


def _wait_for_server(base: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"dagster-webserver exited with {server.returncode}:\n"
                f"{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)  # polling a port, not waiting on the page: nothing to wait on yet
    pytest.fail(
        f"dagster-webserver did not answer in {SERVER_START_TIMEOUT_S} s:\n"
        f"{log_path.read_text()[-3000:]}"
    )


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(ui_url: str) -> Iterator:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if _ci():
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} missing in CI: run .ci/install-browser")
        pytest.skip("Chromium and chromedriver are not installed (.ci/install-browser)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="credits_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        # the screenshot is the viewport: make it exactly 1400x900, whatever the window chrome
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": VIEWPORT_WIDTH,
                "height": VIEWPORT_HEIGHT,
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        driver.get(f"{ui_url}/server_info")  # same origin: settle the community prompt up front
        driver.execute_script(
            "window.localStorage.setItem(arguments[0], JSON.stringify('1'));",
            COMMUNITY_PROMPT_STORAGE_KEY,
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """Waits on what a person would look for, and saves what they would see."""

    def __init__(self, driver, base: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.base, self.By = driver, base, By
        self.wait = WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.2)

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base}{path}")

    def body_text(self) -> str:
        return self.driver.find_element(self.By.TAG_NAME, "body").text

    def wait_for_text(self, *texts: str) -> None:
        def all_present(driver) -> bool:
            body = driver.find_element(self.By.TAG_NAME, "body").text
            return all(t in body for t in texts)

        from selenium.common.exceptions import TimeoutException

        try:
            self.wait.until(all_present, f"{texts} not on {self.driver.current_url}")
        except TimeoutException:
            missing = [t for t in texts if t not in self.body_text()]
            pytest.fail(f"{missing} not on {self.driver.current_url}:\n{self.body_text()[:3000]}")

    def wait_for_nodes(self, *names: str) -> None:
        """Graph nodes by name; a zoomed-out graph shortens long names to "<head>…<tail>"."""

        def shortened(line: str, name: str) -> bool:
            head, _, tail = line.partition("…")
            return (
                line.count("…") == 1
                and name.startswith(head)
                and name.endswith(tail)
                and len(line) < len(name)
            )

        def shown(body: str, name: str) -> bool:
            return name in body or any(shortened(line, name) for line in body.splitlines())

        self.wait.until(
            lambda d: all(shown(d.find_element(self.By.TAG_NAME, "body").text, n) for n in names),
            f"graph nodes {names} not on {self.driver.current_url}",
        )

    def wait_until_loaded(self) -> None:
        """No "Loading…" placeholder left (graph nodes fill in their status asynchronously)."""
        self.wait.until(lambda d: "Loading" not in d.find_element(self.By.TAG_NAME, "body").text)

    def click(self, xpath: str) -> None:
        from selenium.webdriver.support import expected_conditions as ec

        self.wait.until(ec.element_to_be_clickable((self.By.XPATH, xpath))).click()

    def screenshot(self, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        return path


def _asset_tab(label: str) -> str:
    """The tab of an asset page (the navigation bar has links of the same names)."""
    return f"//a[normalize-space()='{label}' and contains(@href, '/assets/')]"


def test_a_data_engineer_follows_the_raw_ledger_to_the_failing_reconciliation_checks(
    browser, ui_url, ui
):
    page = Page(browser, ui_url)

    # 1. the asset graph: the five groups, in the order the data flows
    page.open("/asset-groups")
    page.wait_for_text("syllaby_v2", "raw", "credits", "marts", "reconciliation")
    page.wait_until_loaded()
    page.screenshot("01-asset-graph")

    # 2. the raw ledger's asset page: description, kinds, owners, columns with their meaning
    # (from the dbt sources YAML; this one has no markup the UI would render)
    page.open(f"/assets/{LEDGER_PATH}")
    page.wait_for_text(
        "Closed days of the credit ledger",
        "data-engineering",
        "DuckDB",
        "Pandera",
        "created_at",
        raw_column_descriptions()["credit_histories"]["previous_amount"],
    )
    page.screenshot("02-raw-credit-histories")

    # 3. its lineage, downstream far enough to reach the reconciliation
    page.click(_asset_tab("Lineage"))
    page.click("//button[contains(normalize-space(), 'Downstream')]")
    for _ in range(LINEAGE_DEPTH):
        if f"lineageDepth={LINEAGE_DEPTH}" in browser.current_url:
            break
        page.click("//button[.//*[@aria-label='add']]")
    page.wait.until(
        lambda d: f"lineageDepth={LINEAGE_DEPTH}" in d.current_url, "graph depth not raised"
    )
    page.wait_for_nodes(rc.RECONCILIATION_TABLE, rc.ANOMALIES_TABLE, "int_credit_replay")
    page.wait_until_loaded()
    page.screenshot("03-lineage-raw-ledger-to-reconciliation")

    # 4. click through to the reconciliation: its story in the materialization metadata
    # the node, by its full or its shortened name ("user_bal…ciliation")
    head, tail = rc.RECONCILIATION_TABLE[:8], rc.RECONCILIATION_TABLE[-9:]
    page.click(
        f"//*[text()='{rc.RECONCILIATION_TABLE}' or (starts-with(text(), '{head}') "
        f"and contains(text(), '…{tail}'))]"
    )
    page.wait.until(
        lambda d: d.current_url.split("?")[0].endswith(f"/assets/{RECONCILIATION_PATH}"),
        "clicking the reconciliation node did not open its asset page",
    )
    page.click(_asset_tab("Events"))  # the latest materialization, its metadata at full width
    page.wait_for_text(
        "Users:",
        "drifting",
        "broken chain",
        "Credits at stake",
        FAILING_RULES_METADATA_KEY,
        rc.CHAIN_BREAK,
        WEEKLY_CHART_METADATA_KEY,
        "undated",
        NON_OK_METADATA_KEY,
        TREND_METADATA_KEY,
    )
    summary = browser.find_element(page.By.XPATH, "//tr[.//*[normalize-space()='summary']]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", summary)
    # the weekly chart is inline, next to the summary: no click needed
    weekly = f"//tr[.//*[normalize-space()='{WEEKLY_CHART_METADATA_KEY}']]"
    page.wait.until(
        lambda d: any(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            for img in d.find_elements(
                page.By.XPATH, f"{weekly}//img[starts-with(@src, 'data:image/svg+xml')]"
            )
        ),
        "the weekly anomaly chart is not shown inline",
    )
    page.screenshot("04-reconciliation-summary")

    # 5. the weekly anomalies per rule over the last 12 months, undated apart: a chart the UI
    # renders
    row = f"//tr[.//*[normalize-space()='{TREND_METADATA_KEY}']]"
    page.click(f"{row}//a[normalize-space()='[Show Markdown]']")
    page.wait_for_text(TREND_HEADING, "undated")
    chart = page.wait.until(
        lambda d: next(
            (
                img
                for img in d.find_elements(
                    page.By.XPATH, "//img[starts-with(@src, 'data:image/svg+xml')]"
                )
                if d.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth", img
                )
            ),
            None,
        ),
        "the anomaly chart did not render",
    )
    assert chart.size["width"] > 0
    page.screenshot("05-reconciliation-anomaly-trend")
    page.click("//button[normalize-space()='Close']")
    page.wait.until(
        lambda d: TREND_HEADING not in page.body_text(), "the chart dialog did not close"
    )

    # 5b. who is off and by how much: the non-ok users, most credits at stake first
    # (inline when short; behind "[Show Markdown]" when it lists many users)
    row = f"//tr[.//*[normalize-space()='{NON_OK_METADATA_KEY}']]"
    show = browser.find_elements(page.By.XPATH, f"{row}//a[normalize-space()='[Show Markdown]']")
    if show:
        page.click(f"{row}//a[normalize-space()='[Show Markdown]']")
    else:
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'start'});",
            browser.find_element(page.By.XPATH, row),
        )
    page.wait_for_text(NON_OK_HEADING, "credits at stake", "expected", "actual", rc.CHAIN_BREAK)
    # the users table itself (not the metadata table around it): its own header names the pool
    users_table = "//table[thead/tr/th[normalize-space()='pool']]"
    rows = browser.find_element(page.By.XPATH, users_table).find_elements(
        page.By.XPATH, "./tbody/tr"
    )
    stakes = [
        int(
            row.find_elements(page.By.XPATH, "./td")[-1]
            .get_attribute("textContent")
            .replace(",", "")
        )
        for row in rows
    ]
    assert stakes and stakes == sorted(stakes, reverse=True), stakes  # largest drift first
    page.screenshot("07-reconciliation-non-ok-users")
    if show:
        page.click("//button[normalize-space()='Close']")
        page.wait.until(
            lambda d: not d.find_elements(page.By.XPATH, "//button[normalize-space()='Close']"),
            "the users dialog did not close",
        )

    # 6. the checks tab: the ledger rules the --anomalies demo breaks have failed
    page.click(_asset_tab("Checks"))
    page.wait_for_text(*FAILING_RECONCILIATION_CHECKS, "Failed")
    page.click(f"//*[normalize-space()='{rc.CHECK_CHAIN_BREAK}']")
    page.wait_for_text("chain_break violation(s) involving", "worst_users")
    checks_list = page.body_text()
    for check in FAILING_RECONCILIATION_CHECKS:
        assert check in checks_list
    page.screenshot("06-reconciliation-failing-checks")

    # 7. the run itself says how many checks failed: its tags, in the runs list and on its page
    errors = f"{FAILED_ERROR_CHECKS_TAG}: {ui.failed_error_checks}"
    warns = f"{FAILED_WARN_CHECKS_TAG}: {ui.failed_warn_checks}"
    assert ui.failed_error_checks > 0  # the --anomalies demo breaks money rules
    page.open("/runs")
    page.wait_for_text(ui.run_id[:8], errors, warns)
    page.wait_until_loaded()
    page.screenshot("08-runs-failed-check-tags")
    page.open(f"/runs/{ui.run_id}")
    page.click("//button[normalize-space()='View tags and config']")
    page.wait_for_text(ui.run_id[:8], "Tags", errors, warns)
    page.screenshot("09-run-failed-check-tags")
    page.click("//button[normalize-space()='OK']")

    # 8. the source ledger is observed, not "Missing": its row count as the CLI's observation saw it
    page.open(f"/assets/{SOURCE_LEDGER_PATH}")
    page.wait_for_text(
        "Latest observation", "Row count", f"{ui.source_ledger_rows:,}", NEWEST_CREATED_AT_METADATA
    )
    page.screenshot("10-source-ledger-observed")
