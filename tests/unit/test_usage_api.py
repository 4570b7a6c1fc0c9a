"""The read API behind /usage: tenants the caller may see, per-day rollups, and the page's files."""

from __future__ import annotations

import time

import pytest

from helpers import ev
from test_app import TOKEN_A, TOKEN_B, auth_client, client, post  # noqa: F401  (fixtures)

DAY = 86400


def test_daily_rollup_per_tenant_and_customer(client):
    today = int(time.time() // DAY)
    yesterday = (today - 1) * DAY + 3600
    events = [ev(customer="c1", timestamp=time.time() - 10), ev(customer="c2", timestamp=time.time() - 10,
                                                                status="error", error_type="timeout"),
              ev(customer="c1", timestamp=max(yesterday, time.time() - 23 * 3600))]
    assert post(client, events).json()["accepted"] == 3
    rows = client.get("/v1/tenants/acme/usage/daily", params={"days": 3}).json()
    assert [d["day"] for d in rows["daily"]] == [time.strftime("%Y-%m-%d", time.gmtime((today - i) * DAY))
                                                 for i in (2, 1, 0)]
    by_day: dict[int, int] = {}
    for event in events:
        by_day[int(event["timestamp"] // DAY)] = by_day.get(int(event["timestamp"] // DAY), 0) + 1
    assert [d["events"] for d in rows["daily"]] == [by_day.get(today - i, 0) for i in (2, 1, 0)]
    assert sum(d["errors"] for d in rows["daily"]) == 1
    customers = client.get("/v1/tenants/acme/customers").json()["customers"]
    total_cost = sum(c["cost_usd"] for c in customers)
    assert sum(d["cost_usd"] for d in rows["daily"]) == pytest.approx(total_cost, abs=1e-9)
    c2 = client.get("/v1/tenants/acme/usage/daily", params={"days": 3, "customer": "c2"}).json()["daily"]
    assert [d["events"] for d in c2] == [0, 0, 1] and c2[-1]["input_tokens"] == 1000
    assert client.get("/v1/tenants").json()["tenants"] == [{"tenant": "acme", "budget_usd_per_day": None}]


@pytest.mark.parametrize("days", ["0", "41", "x", "-1", "9" * 12])
def test_days_out_of_range_is_400(client, days):
    response = client.get("/v1/tenants/acme/usage/daily", params={"days": days})
    assert response.status_code == 400 and "days must be an integer from 1 to 40" in response.json()["error"]


def test_auth_scopes_the_usage_read_api(auth_client):
    assert post(auth_client, [ev(tenant="globex")], TOKEN_B).json()["accepted"] == 1
    assert auth_client.get("/v1/tenants").status_code == 401
    assert auth_client.get("/v1/tenants/acme/usage/daily").status_code == 401
    acme = {"Authorization": f"Bearer {TOKEN_A}"}
    assert auth_client.get("/v1/tenants", headers=acme).json()["tenants"] == [
        {"tenant": "acme", "budget_usd_per_day": 100}]
    assert auth_client.get("/v1/tenants/globex/usage/daily", headers=acme).status_code == 403
    daily = auth_client.get("/v1/tenants/acme/usage/daily", headers=acme).json()
    assert daily["budget_usd_per_day"] == 100 and len(daily["daily"]) == 30


def test_page_files_are_package_data_with_a_strict_policy(client):
    page = client.get("/usage")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/usage/usage.js">' in page.text and "http" not in page.text.split("<body>")[1]
    assert client.get("/usage/usage.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/usage/usage.css").status_code == 200
    assert client.get("/usage/../app.py").status_code == 404
    assert client.get("/usage/nope.js").status_code == 404
