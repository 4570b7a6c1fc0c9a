"""Re-render docs/snapshots/usage-page.png: the /usage page of an exporter started on STATE (for
example the state bench/import_history.py leaves behind: 30 days of imported traffic), in Debian's
headless chromium.

    .venv/bin/python tools/usage_snapshot.py STATE [--tenant acme] [--out docs/snapshots/usage-page.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

from harness import ExporterProcess, wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state")
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--out", default=str(REPO / "docs" / "snapshots" / "usage-page.png"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="usage-snapshot-"))
    copy = work / "state.db"
    for suffix in ("", "-wal"):  # never write to the caller's state
        if Path(args.state + suffix).exists():
            shutil.copy(args.state + suffix, str(copy) + suffix)
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1500", f"--user-data-dir={work / 'profile'}"):
        options.add_argument(flag)
    with ExporterProcess(work, storage=copy) as exporter:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"{exporter.url}/usage?tenant={args.tenant}&sort=cost_usd&order=desc")
            wait_until(lambda: driver.find_element("id", "status").get_attribute("data-state") == "ok"
                       and driver.find_elements("css selector", "#customers tbody tr"), what="the page")
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
