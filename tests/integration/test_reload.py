"""Reload without restart, end to end on the real exporter process: SIGHUP and POST /-/reload
re-read token files, budgets, rate limits and the price table; a bad file keeps the running
configuration and says so; token rotation and revocation work as README and SECURITY.md say."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ExporterProcess, wait_until

OLD, NEW = "old-acme-token-0123456789", "new-acme-token-9876543210"
MODEL = "house-model"  # priced only by the test's own price table


def metric(exporter: ExporterProcess, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(exporter.metrics_text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def event(n: int, input_tokens: int = 1_000_000) -> dict[str, Any]:
    return {"id": f"reload-{n}", "timestamp": time.time(), "tenant": "acme", "customer": "c1", "model": MODEL,
            "input_tokens": input_tokens, "output_tokens": 0, "duration_ms": 100, "status": "ok"}


def write_config(path: Path, tokens: Path, prices: Path, budget: float, rate: float = 1000) -> None:
    path.write_text(f"pricing: {{file: {prices}}}\n"
                    f"tenants:\n  acme: {{token_file: {tokens}, budget_usd_per_day: {budget}, "
                    f"rate_limit_events_per_second: {rate}}}\n")


def write_prices(path: Path, input_usd_per_mtok: float) -> None:
    path.write_text(f"models:\n  {MODEL}: {{provider: openai, input: {input_usd_per_mtok}, output: 1, "
                    f"cache_read: 0.1, cache_write: {input_usd_per_mtok}}}\n")


def reloaded(exporter: ExporterProcess, before: float, trigger: Any) -> None:
    """Trigger a reload and wait until the exporter reports one newer than ``before``."""
    trigger()
    wait_until(lambda: (metric(exporter, "llm_exporter_config_last_reload_success_timestamp_seconds") or 0) > before,
               timeout=20, what="a successful reload")


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"config": tmp_path / "config.yaml", "tokens": tmp_path / "acme.token", "prices": tmp_path / "prices.yaml"}
    paths["tokens"].write_text(OLD + "\n")
    write_prices(paths["prices"], 1.0)
    write_config(paths["config"], paths["tokens"], paths["prices"], budget=10)
    return paths


def test_rotation_revocation_budgets_prices_and_a_bad_file(tmp_path: Path, files: dict[str, Path]) -> None:
    flags = (f"--config.file={files['config']}", "--web.enable-lifecycle=true")
    with ExporterProcess(tmp_path / "run", *flags) as exporter:
        assert exporter.post([event(1)], token=OLD).status_code == 200
        assert exporter.post([event(2)], token=NEW).status_code == 401
        assert metric(exporter, "llm_budget_limit_usd", tenant="acme") == 10
        assert metric(exporter, "llm_exporter_config_last_reload_successful") == 1
        cost = metric(exporter, "llm_cost_usd_total", tenant="acme", model=MODEL)
        assert cost == pytest.approx(1.0)

        # Rotation, step 1: add the new token, SIGHUP; both tokens work while clients move over.
        files["tokens"].write_text(f"{OLD}\n{NEW}\n")
        write_config(files["config"], files["tokens"], files["prices"], budget=25)
        write_prices(files["prices"], 3.0)
        stamp = metric(exporter, "llm_exporter_config_last_reload_success_timestamp_seconds")
        reloaded(exporter, stamp, lambda: exporter.proc.send_signal(signal.SIGHUP))
        assert exporter.post([event(3)], token=OLD).status_code == 200
        assert exporter.post([event(4)], token=NEW).status_code == 200
        assert metric(exporter, "llm_budget_limit_usd", tenant="acme") == 25
        # Prices: events after the reload at 3 USD/Mtok, the one before stays at 1.
        assert metric(exporter, "llm_cost_usd_total", tenant="acme", model=MODEL) == pytest.approx(1 + 3 + 3)

        # Rotation, step 2 (revocation): remove the old line, POST /-/reload; the old token is refused.
        files["tokens"].write_text(NEW + "\n")
        response = exporter.client.post("/-/reload")
        assert response.status_code == 200 and response.json()["status"] == "success", response.text
        assert exporter.post([event(5)], token=OLD).status_code == 401
        assert exporter.post([event(6)], token=NEW).status_code == 200

        # A bad file: the running configuration stays (NEW still works), the error is reported.
        good_stamp = metric(exporter, "llm_exporter_config_last_reload_success_timestamp_seconds")
        files["config"].write_text("tenants: [not, a, mapping\n")
        response = exporter.client.post("/-/reload")
        assert response.status_code == 500 and "not valid YAML" in response.json()["error"]
        assert metric(exporter, "llm_exporter_config_last_reload_successful") == 0
        assert metric(exporter, "llm_exporter_config_last_reload_success_timestamp_seconds") == good_stamp
        exporter.proc.send_signal(signal.SIGHUP)  # the same through the signal: logged, nothing changes
        wait_until(lambda: "reload failed" in exporter.log_path.read_text(), timeout=20, what="the reload error log")
        assert exporter.post([event(7)], token=NEW).status_code == 200
        assert exporter.post([event(8)], token=OLD).status_code == 401
        assert metric(exporter, "llm_budget_limit_usd", tenant="acme") == 25

        # A missing token file is an error too (not "no tokens": that would open the door).
        write_config(files["config"], tmp_path / "missing.token", files["prices"], budget=25)
        assert exporter.client.post("/-/reload").status_code == 500
        assert exporter.post([event(9)], token=NEW).status_code == 200

        # Fixed: the next reload succeeds and says which settings need a restart.
        write_config(files["config"], files["tokens"], files["prices"], budget=25)
        files["config"].write_text(files["config"].read_text() + "web: {max-body-bytes: 2048}\n")
        response = exporter.client.post("/-/reload")
        assert response.json() == {"status": "success", "restart_needed": ["web.max-body-bytes"]}
        assert metric(exporter, "llm_exporter_config_last_reload_successful") == 1
        assert "take effect only after a restart: web.max-body-bytes" in exporter.log_path.read_text()


def test_reload_applies_rate_limits(tmp_path: Path, files: dict[str, Path]) -> None:
    with ExporterProcess(tmp_path / "run", f"--config.file={files['config']}") as exporter:
        batch = [event(100 + i, input_tokens=1) for i in range(50)]
        assert exporter.post(batch, token=OLD).status_code == 200
        write_config(files["config"], files["tokens"], files["prices"], budget=10, rate=1)
        stamp = metric(exporter, "llm_exporter_config_last_reload_success_timestamp_seconds")
        reloaded(exporter, stamp, lambda: exporter.proc.send_signal(signal.SIGHUP))
        first = exporter.post([event(200 + i, input_tokens=1) for i in range(5)], token=OLD)
        refused = exporter.post([event(300 + i, input_tokens=1) for i in range(5)], token=OLD)
        assert first.status_code == 200 and refused.status_code == 429, (first.text, refused.text)
        assert exporter.client.post("/-/reload").status_code == 403, "the lifecycle API is off without the flag"
