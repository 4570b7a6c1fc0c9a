"""/usage in a real browser (Debian's chromium through chromedriver): a live exporter fed by the
simulator; the page refreshes itself, shows the error state while the exporter is down and clears
it when it is back; then, on frozen data, every table cell equals the read API's answer, sorting by
each column follows the API's order and lands in the URL, the bars equal the daily endpoint; with
auth on, nothing is shown without a token.

No browser is downloaded: the binaries are the system's, passed explicitly, and Selenium Manager is
made to fail if anything calls it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from harness import REPO, ExporterProcess, free_port, wait_until

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common import driver_finder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1400")
COLUMNS = ("customer", "events", "input_tokens", "output_tokens", "cost_usd", "errors", "latest_timestamp")
SNAPSHOT = REPO / "docs" / "snapshots" / "usage-page.png"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(binary):
            pytest.fail(f"{binary} is not installed: apt-get install -y chromium chromium-driver")

    def no_downloads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager must not run: the driver path is given explicitly")

    monkeypatch.setattr(driver_finder.SeleniumManager, "binary_paths", no_downloads)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def status(driver: Any) -> tuple[str, str]:
    element = driver.find_element(By.ID, "status")
    return element.get_attribute("data-state"), element.text


def table(driver: Any) -> list[dict[str, str]]:
    """The customers table as the page shows it, one dict of data-value attributes per row."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#customers tbody tr'), tr =>
            Object.fromEntries(Array.from(tr.cells, (td, i) => [arguments[0][i], td.dataset.value])));""",
                                 list(COLUMNS))


def bar_values(driver: Any, container: str) -> list[tuple[str, float]]:
    return [(day, float(value)) for day, value in driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{container} .bar'), b => [b.dataset.day, b.dataset.value]);")]


def api_rows(client: httpx.Client, sort: str, order: str) -> list[dict[str, str]]:
    rows = client.get("/v1/tenants/acme/customers", params={"sort": sort, "order": order, "limit": 1000}).json()
    return [{key: str(row[key]) if key != "cost_usd" and key != "latest_timestamp" else row[key] for key in COLUMNS}
            for row in rows["customers"]]


def as_numbers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JavaScript prints numbers its own way (1e-7, 0.1): compare numeric columns as floats."""
    return [{k: (v if k == "customer" else float(v)) for k, v in row.items()} for row in rows]


def test_usage_page_live_sorted_and_recovering(tmp_path, browser):
    config = tmp_path / "config.yaml"
    config.write_text("tenants:\n  acme: {budget_usd_per_day: 50}\n  globex: {budget_usd_per_day: 20}\n")
    port = free_port()
    state = tmp_path / "state.db"
    live = ExporterProcess(tmp_path / "live", "--simulator.enabled=true", "--simulator.rate=200",
                           "--simulator.speed=60", f"--config.file={config}", port=port, storage=state)
    with live:
        wait_until(lambda: len(live.client.get("/v1/tenants/acme/customers").json()["customers"]) >= 5,
                   what="simulated customers of acme")
        browser.get(f"{live.url}/usage?tenant=acme&refresh=1")
        wait_until(lambda: status(browser)[0] == "ok" and table(browser), timeout=15, what="the page's first render")
        first = sum(float(row["events"]) for row in table(browser))
        wait_until(lambda: sum(float(row["events"]) for row in table(browser)) > first, timeout=15,
                   what="the page refreshing itself with new simulated traffic")
        assert "of $50.00 daily budget" in browser.find_element(By.ID, "today-budget").text
    # The exporter is down: the page says so and keeps its last figures.
    wait_until(lambda: status(browser)[0] == "error", timeout=15, what="the error state")
    assert "unreachable" in status(browser)[1] and table(browser)

    # Back up (simulator off, so the figures hold still while they are compared; the state is a demo,
    # so mixing is allowed explicitly).
    frozen = ExporterProcess(tmp_path / "frozen", f"--config.file={config}", "--storage.allow-mixed-sources=true",
                             port=port, storage=state)
    with frozen:
        wait_until(lambda: status(browser)[0] == "ok", timeout=15, what="the error state to clear")
        client = frozen.client
        for key in COLUMNS:
            for order in (("asc", "desc") if key == "customer" else ("desc", "asc")):
                header = browser.find_element(By.CSS_SELECTOR, f'#customers th[data-sort="{key}"]')
                header.click()
                wait_until(lambda: f"sort={key}&order={order}" in browser.current_url
                           and header.get_attribute("aria-sort") == ("ascending" if order == "asc" else "descending")
                           and as_numbers(table(browser)) == as_numbers(api_rows(client, key, order)),
                           timeout=10, what=f"the table sorted by {key} {order}")
        shown = table(browser)
        expected = api_rows(client, "latest_timestamp", "asc")
        assert as_numbers(shown) == as_numbers(expected) and len(shown) >= 5

        daily = client.get("/v1/tenants/acme/usage/daily", params={"days": 30}).json()["daily"]
        assert bar_values(browser, "tenant-bars") == [(d["day"], d["cost_usd"]) for d in daily]
        assert float(browser.find_element(By.ID, "today-spend").get_attribute("data-value")) == daily[-1]["cost_usd"]

        # A link reproduces the view: a fresh load of the URL keeps the sort.
        browser.get(browser.current_url)
        wait_until(lambda: status(browser)[0] == "ok" and table(browser), timeout=10, what="the reloaded page")
        assert as_numbers(table(browser)) == as_numbers(expected)

        # Per customer: daily bars and table equal the endpoint, recent errors equal the errors API's.
        customer = max(expected, key=lambda row: float(row["errors"]))["customer"]
        browser.find_element(By.CSS_SELECTOR, f'#customers tr[data-customer="{customer}"] a').click()
        wait_until(lambda: f"customer={customer}" in browser.current_url
                   and browser.find_element(By.ID, "customer").is_displayed(), timeout=10, what="the customer view")
        mine = client.get("/v1/tenants/acme/usage/daily", params={"days": 30, "customer": customer}).json()["daily"]
        wait_until(lambda: bar_values(browser, "customer-bars") == [(d["day"], d["cost_usd"]) for d in mine],
                   timeout=10, what="the customer's bars")
        rows = browser.execute_script("""return Array.from(document.querySelectorAll('#customer-daily tbody tr'),
            tr => Array.from(tr.cells, td => td.dataset.value));""")
        assert rows == [[d["day"], str(d["events"]), str(d["input_tokens"]), str(d["output_tokens"]),
                         rows[i][4], str(d["errors"])] for i, d in enumerate(reversed(mine))]
        assert [float(r[4]) for r in rows] == [d["cost_usd"] for d in reversed(mine)]
        errors = [e for e in client.get("/v1/tenants/acme/errors", params={"limit": 100}).json()["errors"]
                  if e["customer"] == customer]
        shown_errors = browser.execute_script("""return Array.from(document.querySelectorAll(
            '#customer-errors tbody tr'), tr => tr.cells[2].textContent);""")
        assert shown_errors == [e["error_type"] for e in errors]
        if os.environ.get("UPDATE_SNAPSHOTS"):
            browser.find_element(By.ID, "close-customer").click()
            wait_until(lambda: not browser.find_element(By.ID, "customer").is_displayed(), timeout=10, what="close")
            browser.save_screenshot(str(SNAPSHOT))


def test_usage_page_asks_for_a_token_and_shows_only_that_tenant(tmp_path, browser):
    (tmp_path / "acme.token").write_text("acme-token-of-sufficient-length\n")
    (tmp_path / "globex.token").write_text("globex-token-of-sufficient-length\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"tenants:\n  acme: {{token_file: {tmp_path / 'acme.token'}}}\n"
                      f"  globex: {{token_file: {tmp_path / 'globex.token'}}}\n")
    with ExporterProcess(tmp_path / "exporter", f"--config.file={config}") as exporter:
        event = {"id": "a1", "timestamp": time.time(), "tenant": "globex", "customer": "secret-customer",
                 "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5, "duration_ms": 100, "status": "ok"}
        assert exporter.post([event], token="globex-token-of-sufficient-length").json()["accepted"] == 1
        event = dict(event, id="a2", tenant="acme", customer="acme-customer")
        assert exporter.post([event], token="acme-token-of-sufficient-length").json()["accepted"] == 1

        browser.get(f"{exporter.url}/usage?refresh=1")
        wait_until(lambda: browser.find_element(By.ID, "login").is_displayed(), timeout=10, what="the token form")
        assert not browser.find_element(By.ID, "content").is_displayed()
        assert "secret-customer" not in browser.page_source and "acme-customer" not in browser.page_source

        browser.find_element(By.ID, "token").send_keys("wrong-token-of-sufficient-length")
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        wait_until(lambda: "unknown token" in browser.find_element(By.ID, "login-error").text, timeout=10,
                   what="the refusal of a wrong token")
        browser.find_element(By.ID, "token").send_keys("acme-token-of-sufficient-length")
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        wait_until(lambda: status(browser)[0] == "ok" and table(browser), timeout=10, what="acme's usage")
        assert [row["customer"] for row in table(browser)] == ["acme-customer"]
        options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#tenant option")]
        assert options == ["acme"] and "secret-customer" not in browser.page_source
