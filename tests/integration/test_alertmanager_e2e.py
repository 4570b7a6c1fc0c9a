"""Alerting end to end with real parts: the exporter, the real Prometheus and the real Alertmanager.

The exporter gets an error episode over its HTTP API (one tenant, one model, half of the requests
failing); Prometheus scrapes it every second and evaluates the project's recording rules and alerts;
Alertmanager runs the project's ``prometheus/alertmanager.yml`` (routes and inhibitions unchanged)
and notifies a webhook receiver in this test. We assert what a paging integration would get: the
critical ``LLMTenantHighErrorRatio`` for the tenant, routed to ``tenant-critical``, with its
``runbook_url``; and that the warning variant of the same alert, although firing in Prometheus, is
inhibited by Alertmanager and never notified.

Only two things are changed for the test, both in copies written to ``tmp_path``:

* the rules' ``for:`` durations are divided by 150 (5m -> 2s, 15m -> 6s): the expressions, windows
  and thresholds are exactly the committed ones, and the warning still fires later than the critical
  alert, as in production (a 5m ``rate()`` works with a few seconds of 1s-scraped samples);
* Alertmanager's ``group_wait``/``group_interval`` (30s/5m) become 1s/2s, or the first notification
  would come 30s after the alert, and every webhook URL points at the test's receiver.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from harness import REPO, RULES_DIR, ExporterProcess, PrometheusProcess, ServerProcess, wait_until

ALERTMANAGER_YML = REPO / "prometheus" / "alertmanager.yml"
RUNBOOK = REPO / "docs" / "runbook.md"

FOR_DIVISOR = 150            # 5m -> 2s, 15m -> 6s
GROUP_WAIT_S = 1             # instead of 30s: first notification of a new group
GROUP_INTERVAL_S = 2         # instead of 5m: next notification when a group changes

TENANT = "e2e-errors"
MODEL = "gpt-4o"
ALERT = "LLMTenantHighErrorRatio"
MODEL_ALERT = "LLMModelHighErrorRatio"


# ------------------------------------------------------------------------------ rule files


def shorten(duration: str) -> str:
    """A Prometheus duration divided by FOR_DIVISOR, in whole seconds (at least 1s)."""
    units = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|[wdhms])", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    seconds = sum(int(n) * units[u] for n, u in parts)
    return f"{max(1, round(seconds / FOR_DIVISOR))}s"


def fast_rule_files(directory: Path) -> list[Path]:
    """The committed rule files, copied into ``directory``; alerting rules get shortened ``for:``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(source.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = shorten(str(rule["for"]))
        target = directory / source.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        paths.append(target)
    return paths


# ------------------------------------------------------------------------ webhook receiver


class WebhookReceiver:
    """Records the JSON bodies Alertmanager POSTs, on a free loopback port, in a thread."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsable": body.decode(errors="replace")}
                payload["_path"] = self.path
                with receiver.lock:
                    receiver.payloads.append(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def notified(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(payload, alert) for every alert in every notification so far."""
        with self.lock:
            return [(p, a) for p in self.payloads for a in p.get("alerts", [])]

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- alertmanager


def alertmanager_binary() -> str:
    # Debian's prometheus-alertmanager package installs /usr/bin/prometheus-alertmanager;
    # upstream tarballs and Docker images call it alertmanager.
    for name in ("alertmanager", "prometheus-alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("`alertmanager` is not installed: run `apt-get install -y prometheus-alertmanager` (.ci/run does this)")


def derived_alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """prometheus/alertmanager.yml with its routes and inhibit rules untouched, every receiver
    notifying ``webhook_url``, and short group timers."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))

    def short_timers(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", GROUP_WAIT_S), ("group_interval", GROUP_INTERVAL_S)):
            if key in route or route is cfg["route"]:
                route[key] = f"{value}s"
        for child in route.get("routes", []):
            short_timers(child)

    short_timers(cfg["route"])
    for receiver in cfg["receivers"]:
        integrations = [k for k in receiver if k.endswith("_configs")]
        # Real channels (Slack, PagerDuty, ...) are replaced too: a test must never page anybody.
        for key in integrations:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return cfg


class AlertmanagerProcess(ServerProcess):
    name = "alertmanager"

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.address = f"127.0.0.1:{self.port}"
        self.config_path = self.workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def command(self) -> list[str]:
        return [alertmanager_binary(), f"--config.file={self.config_path}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}", "--cluster.listen-address=", "--log.level=info"]

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Alertmanager's view of the alerts matching ``labels`` (active, silenced and inhibited)."""
        params = [("filter", f'{k}="{v}"') for k, v in labels.items()]
        response = self.client.get("/api/v2/alerts", params=params, timeout=5)
        response.raise_for_status()
        return response.json()


# ------------------------------------------------------------------------------ traffic


class ErrorEpisode:
    """Posts batches for TENANT/MODEL, half of them failed, until stopped (a real client's traffic)."""

    def __init__(self, exporter: ExporterProcess) -> None:
        self.exporter = exporter
        self.stop_event = threading.Event()
        self.ids = itertools.count()
        self.problems: list[str] = []
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="error-episode", daemon=True)

    def _batch(self) -> list[dict[str, Any]]:
        events = []
        for i in range(4):
            event = {"id": f"e2e-{next(self.ids)}", "timestamp": time.time(), "tenant": TENANT,
                     "customer": "cust-1", "model": MODEL, "input_tokens": 1200, "output_tokens": 300,
                     "duration_ms": 900, "status": "ok"}
            if i % 2:
                event.update(status="error", error_type="server_error")
            events.append(event)
        return events

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                response = self.exporter.post(self._batch())
                body = response.json()
                if response.status_code != 200 or body["accepted"] != 4:
                    self.problems.append(f"HTTP {response.status_code}: {response.text[:300]}")
                else:
                    self.sent += 4
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self.problems.append(repr(exc))
            self.stop_event.wait(0.25)

    def __enter__(self) -> "ErrorEpisode":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


# --------------------------------------------------------------------------------- test


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings (the alert names, in lower case)."""
    return {m.group(1).strip().lower().replace(" ", "-")
            for m in re.finditer(r"^#+\s+(.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)}


def prometheus_alert(prom: PrometheusProcess, alertname: str, severity: str, state: str | None = None,
                     **labels: str) -> list[dict[str, Any]]:
    alerts = prom._api("/api/v1/alerts", {})["alerts"]
    return [a for a in alerts
            if a["labels"].get("alertname") == alertname and a["labels"].get("severity") == severity
            and (state is None or a["state"] == state)
            and all(a["labels"].get(k) == v for k, v in labels.items())]


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[tuple[WebhookReceiver, AlertmanagerProcess, ExporterProcess, PrometheusProcess]]:
    rules = fast_rule_files(tmp_path / "rules")
    with WebhookReceiver() as webhook, \
            AlertmanagerProcess(tmp_path / "alertmanager", derived_alertmanager_config(webhook.url)) as am, \
            ExporterProcess(tmp_path / "exporter") as exporter, \
            PrometheusProcess(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"], rules,
                              alertmanager=am.address) as prom:
        yield webhook, am, exporter, prom


def test_error_episode_pages_tenant_critical_and_inhibits_warning(stack) -> None:
    webhook, am, exporter, prom = stack

    def notified(alertname: str, severity: str, **labels: str) -> list[tuple[dict, dict]]:
        return [(p, a) for p, a in webhook.notified()
                if a["labels"].get("alertname") == alertname and a["labels"].get("severity") == severity
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    with ErrorEpisode(exporter) as episode:
        # 1. The critical alert reaches the receiver through the tenant-critical route.
        hits = wait_until(lambda: notified(ALERT, "critical", tenant=TENANT), timeout=45,
                          what=f"a webhook notification of {ALERT} critical for {TENANT}; "
                               f"payloads: {webhook.payloads}; posting problems: {episode.problems}; "
                               f"logs: {prom.log_path}, {am.log_path}")
        payload, alert = hits[0]
        assert payload["status"] == "firing"
        assert alert["status"] == "firing"
        assert payload["receiver"] == "tenant-critical", payload
        assert payload["groupLabels"] == {"alertname": ALERT, "tenant": TENANT}, payload["groupLabels"]
        assert alert["labels"] == {"alertname": ALERT, "severity": "critical", "tenant": TENANT}, alert["labels"]
        runbook_url = alert["annotations"]["runbook_url"]
        page, _, anchor = runbook_url.partition("#")
        assert page.endswith("/docs/runbook.md"), runbook_url
        assert anchor == ALERT.lower() and anchor in runbook_anchors(), runbook_url
        assert "threshold 20%" in alert["annotations"]["description"], alert["annotations"]
        assert alert["annotations"]["summary"]

        # The same outage seen per model: critical to platform-critical (no tenant label).
        model_hits = wait_until(lambda: notified(MODEL_ALERT, "critical", model=MODEL), timeout=20,
                                what=f"{MODEL_ALERT} critical for {MODEL}; payloads: {webhook.payloads}")
        assert model_hits[0][0]["receiver"] == "platform-critical", model_hits[0][0]

        # 2. The warning variants fire in Prometheus too (50% > 5%, after their longer `for`)
        #    and reach Alertmanager, which marks them inhibited by the critical ones.
        for name, labels in ((ALERT, {"tenant": TENANT}), (MODEL_ALERT, {"model": MODEL})):
            wait_until(lambda: prometheus_alert(prom, name, "warning", "firing", **labels), timeout=20,
                       what=f"{name} warning {labels} firing in Prometheus")
            suppressed = wait_until(
                lambda: [a for a in am.alerts(alertname=name, severity="warning", **labels)
                         if a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]],
                timeout=15, what=f"{name} warning {labels} to be inhibited in Alertmanager: "
                                 f"{am.alerts(alertname=name)}")
            assert suppressed[0]["status"]["silencedBy"] == []
        inhibited_seen = time.monotonic()

        # 3. Inhibited means never notified: the warnings' groups flush after group_wait and again
        #    every group_interval; watch the receiver over that whole span (plus margin) for them.
        #    (A negative can only be observed over a bounded window.)
        window = GROUP_WAIT_S + 2 * GROUP_INTERVAL_S + 2
        while time.monotonic() < inhibited_seen + window:
            leaked = notified(ALERT, "warning", tenant=TENANT) + notified(MODEL_ALERT, "warning", model=MODEL)
            assert not leaked, f"inhibited warning was notified: {leaked}"
            time.sleep(0.2)
        assert not episode.problems, episode.problems

    # Every notification was a firing, critical one (no warning got through at all), and the
    # critical alert still fires in Alertmanager (so the inhibition held throughout). Other
    # criticals are tolerated: on a very slow machine LLMExporterDown can fire at startup when the
    # first scrape takes longer than its 2s `for`.
    names = {(a["labels"]["alertname"], a["labels"]["severity"]) for _, a in webhook.notified()}
    assert {(ALERT, "critical"), (MODEL_ALERT, "critical")} <= names, names
    assert {severity for _, severity in names} == {"critical"}, names
    assert all(p["status"] == "firing" for p in webhook.payloads), webhook.payloads
    assert all(p["_path"] == "/alerts" for p in webhook.payloads)
    assert [a for a in am.alerts(alertname=ALERT, severity="critical", tenant=TENANT)
            if a["status"]["state"] == "active"]
