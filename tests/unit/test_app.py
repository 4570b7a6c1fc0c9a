"""HTTP API through Starlette's test client: status codes, partial success, auth, limits, /metrics."""

from __future__ import annotations

import shutil
import subprocess

import orjson
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from exporter.server.app import create_app
from helpers import ev, make_exporter, sample

TOKEN_A = "acme-secret-token-0123456789"
TOKEN_B = "globex-secret-token-0123456789"


@pytest.fixture
def client():
    ex = make_exporter()
    with TestClient(create_app(ex.config, exporter=ex)) as c:
        c.exporter = ex
        yield c


@pytest.fixture
def auth_client(tmp_path):
    (tmp_path / "a").write_text(TOKEN_A + "\n")
    (tmp_path / "b").write_text(TOKEN_B + "\n")
    ex = make_exporter(auth_mode="required", yaml={"tenants": {
        "acme": {"token_file": str(tmp_path / "a"), "budget_usd_per_day": 100},
        "globex": {"token_file": str(tmp_path / "b")}}})
    with TestClient(create_app(ex.config, exporter=ex)) as c:
        c.exporter = ex
        yield c


def post(client, events, token=None, content_type="application/json", body=None):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/v1/events", content=body if body is not None else orjson.dumps({"events": events}),
                       headers=headers)


def accepted_total(client) -> float:
    return sample(client.exporter, "llm_exporter_events_total", source="api", result="accepted") or 0.0


def test_partial_success_response_shape(client):
    response = post(client, [ev(id="a"), ev(id="b", status="bogus"), ev(id="a")])
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 1, "rejected": 1, "errors": [
        {"index": 1, "id": "b", "field": "status", "message": 'must be "ok" or "error"'}], "warnings": []}


def test_warnings_name_the_accepted_events_priced_with_a_caveat(client):
    response = post(client, [ev(id="w0"), ev(id="w1", model="no-such-model-xyz"), ev(id="w2", service_tier="turbo"),
                             ev(id="w3", status="bogus")])
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert [(w["index"], w["id"], w["field"]) for w in body["warnings"]] == [(1, "w1", "model"),
                                                                           (2, "w2", "service_tier")]
    assert all(w["message"] for w in body["warnings"])


def test_ndjson_is_accepted(client):
    body = b"\n".join(orjson.dumps(e) for e in [ev(), ev(), ev()]) + b"\n"
    response = post(client, None, content_type="application/x-ndjson", body=body)
    assert response.json()["accepted"] == 3


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"events": {"a": 1}}', "application/json", 400),
    (b'{"events": [NaN]}', "application/json", 400),
    (b"{}\nnot json\n", "application/x-ndjson", 400),
    (b'{"events": []}', "text/plain", 415),
    (b'{"events": []}', "", 415),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
])
def test_bad_bodies_get_4xx_and_count_nothing(client, body, content_type, status):
    response = post(client, None, content_type=content_type, body=body)
    assert response.status_code == status
    assert "error" in response.json()
    assert accepted_total(client) == 0


def test_huge_integers_are_a_field_error_not_a_crash(client):
    body = b'{"events": [' + orjson.dumps(ev(id="ok")) + b', {"id": "big", "input_tokens": ' + b"9" * 400 + b"}]}"
    response = post(client, None, body=body)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1 and response.json()["rejected"] == 1


def test_body_and_batch_limits():
    ex = make_exporter(web_max_batch_events=3, web_max_body_bytes=2000)
    with TestClient(create_app(ex.config, exporter=ex)) as c:
        assert post(c, [ev() for _ in range(4)]).status_code == 413
        ndjson = b"\n".join(orjson.dumps(ev()) for _ in range(4))
        assert post(c, None, content_type="application/x-ndjson", body=ndjson).status_code == 413
        response = post(c, None, body=b'{"events": [' + b" " * 2001 + b"]}")
        assert response.status_code == 413 and "limit of 2000 bytes" in response.json()["error"]
        assert post(c, [ev() for _ in range(3)]).json()["accepted"] == 3
    assert sample(ex, "llm_exporter_rejections_total", reason="too_large", tenant="") == 2
    assert sample(ex, "llm_exporter_rejections_total", reason="too_large", tenant="acme") == 1


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Basic YWJjOmRlZg=="}, 401),
    ({"Authorization": "Bearer"}, 401),
    ({"Authorization": "Bearer wrong-token-0123456789"}, 401),
    ({"Authorization": f"Bearer {TOKEN_B}"}, 403),
    ({"Authorization": f"Bearer {TOKEN_A}"}, 200),
    ({"Authorization": f"bearer {TOKEN_A}"}, 200),
])
def test_auth_table(auth_client, headers, status):
    response = auth_client.post("/v1/events", content=orjson.dumps({"events": [ev(tenant="acme")]}),
                                headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    assert TOKEN_A not in response.text and TOKEN_B not in response.text


def test_token_in_query_string_refused(auth_client):
    response = auth_client.post(f"/v1/events?access_token={TOKEN_A}", content=b'{"events": []}',
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 401


def test_a_tenant_cannot_write_or_read_another(auth_client):
    assert post(auth_client, [ev(tenant="acme"), ev(tenant="globex")], TOKEN_A).status_code == 403
    assert sample(auth_client.exporter, "llm_exporter_events_total", source="api", result="accepted") is None
    assert post(auth_client, [ev(tenant="globex")], TOKEN_B).json()["accepted"] == 1
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    assert auth_client.get("/v1/tenants/globex/customers", headers=headers).status_code == 403
    assert auth_client.get("/v1/tenants/globex/errors", headers=headers).status_code == 403
    assert auth_client.get("/v1/tenants/acme/customers", headers=headers).status_code == 200


def test_budget_gauge_from_config(auth_client):
    assert sample(auth_client.exporter, "llm_budget_limit_usd", tenant="acme") == 100


def test_auth_required_without_tokens_explains_itself():
    ex = make_exporter(web_listen_address="0.0.0.0:9477")
    with TestClient(create_app(ex.config, exporter=ex)) as c:
        response = post(c, [ev()])
    assert response.status_code == 401 and "--auth.mode=off" in response.json()["error"]


def test_customers_api_sorts_and_limits(client):
    post(client, [ev(customer="small", input_tokens=10, output_tokens=1), ev(customer="big", input_tokens=10_000),
                  ev(customer="big"), ev(customer="mid", input_tokens=5000, status="error", error_type="timeout")])
    rows = client.get("/v1/tenants/acme/customers?sort=cost_usd&order=desc&limit=2").json()["customers"]
    assert [r["customer"] for r in rows] == ["big", "mid"]
    assert rows[0]["events"] == 2 and rows[1]["errors"] == 1
    rows = client.get("/v1/tenants/acme/customers?sort=events&order=asc").json()["customers"]
    assert rows[-1]["customer"] == "big"
    for query in ("sort=colour", "order=up", "limit=0", "limit=abc"):
        assert client.get(f"/v1/tenants/acme/customers?{query}").status_code == 400


def test_errors_api(client):
    post(client, [ev(status="error", error_type="rate_limited", error_message="slow down")])
    errors = client.get("/v1/tenants/acme/errors?limit=5").json()["errors"]
    assert errors[0]["error_type"] == "rate_limited" and errors[0]["error_message"] == "slow down"


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_metrics_content_negotiation_and_route_templates(client):
    post(client, [ev(customer='we"ird\\cust\nomer')])
    client.get("/v1/tenants/acme/customers")
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text.text)}
    routes = {s.labels["route"] for s in families["llm_exporter_http_requests"].samples}
    assert "/v1/tenants/{tenant}/customers" in routes and "/v1/tenants/acme/customers" not in routes
    customers = {s.labels["customer"] for s in families["llm_requests"].samples}
    assert 'we"ird\\cust\nomer' in customers, "label escaping round-trips"
    assert "_created" not in text.text


def test_metrics_gzip_as_prometheus_asks_shows_each_scrapes_state(client):
    """The cached, compressed blocks over HTTP: gzip only when asked, and a later scrape sees the change."""
    scrape_headers = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
                      "Accept-Encoding": "gzip"}

    def requests_ok(response) -> float:
        om = response.headers["content-type"].startswith("application/openmetrics-text")
        parse = parse_openmetrics if om else text_string_to_metric_families
        return next(s.value for f in parse(response.text) if f.name == "llm_requests"
                    for s in f.samples if s.labels["customer"] == "zipped" and s.name == "llm_requests_total")

    post(client, [ev(customer="zipped")])
    first = client.get("/metrics", headers=scrape_headers)
    assert first.headers["content-encoding"] == "gzip" and first.headers["vary"] == "Accept-Encoding"
    assert first.text.endswith("# EOF\n") and requests_ok(first) == 1
    post(client, [ev(customer="zipped"), ev(customer="zipped")])
    assert requests_ok(client.get("/metrics", headers=scrape_headers)) == 3
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and requests_ok(plain) == 3


def test_metrics_pass_promtool_check(client):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    post(client, [ev(customer=f"c{i}", status="error" if i % 3 else "ok", error_type="timeout", ttft_ms=100,
                     cache_read_tokens=100, reasoning_tokens=50, operation="agent_run" if i % 5 == 0 else "chat",
                     llm_calls=3, tool_calls=2) for i in range(20)])
    text = client.get("/metrics").content
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_rate_limit_per_tenant_returns_429_with_retry_after_and_spares_others():
    ex = make_exporter(yaml={"tenants": {"acme": {"rate_limit_events_per_second": 5}, "globex": {}}})
    with TestClient(create_app(ex.config, exporter=ex)) as c:
        assert post(c, [ev() for _ in range(10)]).status_code == 200  # the 2 s burst
        refused = post(c, [ev() for _ in range(5)])
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert post(c, [ev(tenant="globex") for _ in range(50)]).json()["accepted"] == 50
    assert sample(ex, "llm_exporter_rejections_total", reason="rate_limited", tenant="acme") == 1
    assert sample(ex, "llm_exporter_events_total", source="api", result="accepted") == 60
