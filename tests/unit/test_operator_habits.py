"""What operators expect of any Prometheus exporter: --version, --help in their own units, the
standard process_*/python_* series, gzip when the scraper asks, a landing page for browsers and a
JSON index for API clients."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import exporter
from exporter.config import OPTIONS, Config, format_duration, parse_duration
from exporter.server.app import accepts_gzip, create_app, wants_html

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
PROMETHEUS_ACCEPT_ENCODING = "gzip"


@pytest.fixture()
def client(tmp_path) -> TestClient:
    app = create_app(Config(storage_path=str(tmp_path / "state.db"), web_listen_address="127.0.0.1:9477"))
    with TestClient(app) as test_client:
        yield test_client


def test_version_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"llm-usage-exporter {exporter.__version__} ")


def test_help_shows_durations_as_users_write_them() -> None:
    out = subprocess.run([sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "400"}).stdout
    for option in OPTIONS:
        if option.parse is parse_duration:
            assert f"(default {format_duration(option.default)};" in out, option.name
    assert "(default 24h;" in out and "(default 5m;" in out and "86400" not in out


@pytest.mark.parametrize("seconds", [0.25, 1, 59, 60, 300, 3600, 86400, 90000, 604800, 5400])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_standard_process_and_python_metrics(client: TestClient) -> None:
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds", "process_start_time_seconds",
            "python_info", "python_gc_collections"} <= families
    assert {"llm_exporter_config_last_reload_successful",
            "llm_exporter_config_last_reload_success_timestamp_seconds"} <= families


def test_metrics_are_gzipped_when_the_scraper_asks(client: TestClient) -> None:
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = client.get("/metrics", headers={"Accept-Encoding": PROMETHEUS_ACCEPT_ENCODING})
    assert zipped.headers["content-encoding"] == "gzip" and "Accept-Encoding" in zipped.headers["vary"]
    # httpx decodes transparently: the decoded text is the plain one
    families = lambda text: {f.name for f in text_string_to_metric_families(text)}  # noqa: E731
    assert families(zipped.text) == families(plain.text)
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2


def test_gzip_body_is_gzip_on_the_wire(client: TestClient) -> None:
    with client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        wire = b"".join(response.iter_raw())
    assert wire[:2] == b"\x1f\x8b" and b"llm_exporter_build_info" in gzip.decompress(wire)


@pytest.mark.parametrize("header,expected", [("gzip", True), ("gzip, deflate, br", True), ("*", True),
                                             ("gzip;q=0", False), ("identity", False), ("", False),
                                             ("deflate, gzip;q=0.5", True), ("br", False)])
def test_accept_encoding_parsing(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_landing_page_is_html_for_browsers_and_json_for_api_clients(client: TestClient) -> None:
    page = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.headers["content-type"].startswith("text/html")
    for href in ("/metrics", "/healthz", "/readyz", "/version"):
        assert f'href="{href}"' in page.text
        assert client.get(href).status_code == 200, href
    assert exporter.__version__ in page.text
    for accept in ("application/json", "*/*", ""):
        index = client.get("/", headers={"Accept": accept} if accept else {})
        assert index.headers["content-type"] == "application/json", accept
        assert index.json()["metrics"] == "/metrics" and index.json()["version"] == exporter.__version__
    assert client.get("/?format=json", headers={"Accept": BROWSER_ACCEPT}).json()["name"] == "llm-usage-exporter"
    assert client.get("/version").json()["version"] == exporter.__version__


@pytest.mark.parametrize("accept,expected", [(BROWSER_ACCEPT, True), ("application/json", False),
                                             ("application/json, text/html", False), ("*/*", False)])
def test_accept_negotiation(accept: str, expected: bool) -> None:
    assert wants_html(accept) is expected


def test_reload_endpoint_is_off_without_the_lifecycle_flag(client: TestClient) -> None:
    response = client.post("/-/reload")
    assert response.status_code == 403 and "--web.enable-lifecycle" in response.json()["error"]
