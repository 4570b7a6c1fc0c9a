"""Real parts for integration tests: the exporter as a process, and the real ``prometheus`` binary.

Both listen on free loopback ports and are polled for readiness (never a fixed sleep); both are
stopped by their context managers even when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx
import orjson
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "prometheus" / "rules"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``check`` until it returns a truthy value; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError, KeyError, IndexError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: `make test` installs the Debian packages the tests need "
                    "(see TEST_PACKAGES in the Makefile)")
    return path


class ServerProcess:
    """A server on a free loopback port, with the lifecycle every real part in these tests shares:
    start, poll ``ready_path`` until it answers 200 (failing with the log tail if the process exits),
    stop with ``stop_signal`` (killed if it does not exit within 20 s), and a context manager."""

    name = "server"
    ready_path = "/-/ready"
    ready_timeout = 30.0
    stop_signal = signal.SIGTERM

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, **popen: Any) -> Any:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, **popen)
        wait_until(self._ready, timeout=self.ready_timeout, what=f"{self.name} on {self.url}; log: {self.log_path}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
        return httpx.get(self.url + self.ready_path, timeout=1).status_code == 200

    def stop(self, sig: int | None = None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig or self.stop_signal)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.client.close()


class ExporterProcess(ServerProcess):
    """``python -m exporter`` on a free loopback port, with its own state file."""

    name = "exporter"
    ready_path = "/readyz"

    def __init__(self, workdir: Path, *flags: str, env: dict[str, str] | None = None, port: int | None = None,
                 storage: Path | str | None = None) -> None:
        super().__init__(workdir, port)
        self.log_path = self.workdir / f"exporter-{self.port}.log"
        self.storage = str(storage or self.workdir / "state.db")
        self.flags = [f"--web.listen-address=127.0.0.1:{self.port}", f"--storage.path={self.storage}", *flags]
        self.env = {**os.environ, **(env or {})}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "exporter", *self.flags]

    def start(self) -> "ExporterProcess":  # type: ignore[override]
        return super().start(cwd=self.workdir, env=self.env)

    def post(self, events: list[Any], token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        return self.client.post("/v1/events", content=orjson.dumps({"events": events}), headers=headers, **kwargs)

    def metrics_text(self) -> str:
        response = self.client.get("/metrics")
        response.raise_for_status()
        return response.text

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class PrometheusProcess(ServerProcess):
    """The real Prometheus server with a generated config scraping ``targets``."""

    name = "prometheus"
    ready_timeout = 60.0

    def __init__(self, workdir: Path, targets: Iterable[str], rule_files: Iterable[Path] = (),
                 scrape_interval: str = "1s", evaluation_interval: str = "1s",
                 alertmanager: str | None = None, extra_args: Iterable[str] = ()) -> None:
        super().__init__(workdir)
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
            "scrape_configs": [{"job_name": "llm-usage-exporter", "static_configs": [{"targets": list(targets)}]}],
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        return [require_binary("prometheus"), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle", "--log.level=warn", *self.extra_args]

    def _api(self, path: str, params: dict[str, Any]) -> Any:
        response = self.client.get(path, params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {response.status_code}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self._api("/api/v1/query", params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._api("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})["result"]

    def scalar(self, expr: str, at: float | None = None) -> float:
        """The value of a query that returns exactly one sample."""
        result = self.query(expr, at)
        if len(result) != 1:
            raise AssertionError(f"{expr}: expected one sample, got {len(result)}: {result[:3]}")
        return float(result[0]["value"][1])

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def wait_for_scrape_after(self, moment: float, timeout: float = 30) -> None:
        """Wait until every target was scraped after ``moment`` (a time.time() value) *and* that
        scrape's samples are queryable. ``up`` is committed with the scrape's samples, so its sample
        timestamp is the proof; the targets API's lastScrape is set when a scrape starts."""
        def scraped() -> bool:
            targets = self._api("/api/v1/targets", {})["activeTargets"]
            if not targets or any(t["health"] != "up" for t in targets):
                return False
            stamps = self.query("timestamp(up)")
            return len(stamps) == len(targets) and all(float(r["value"][1]) > moment for r in stamps)
        wait_until(scraped, timeout=timeout, what="a committed scrape of every target")


def rfc3339_to_unix(text: str) -> float:
    """Prometheus' RFC 3339 with nanoseconds (``2026-11-25T11:40:00.123456789Z``) → Unix seconds."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if match is None:
        raise ValueError(f"not RFC 3339: {text!r}")
    offset = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + offset).timestamp() + float(match.group(2) or 0)


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction (``COPY``, ``CMD``...) of the Dockerfile, continuations joined."""
    joined = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    return [line.split(None, 1)[1].strip() for line in joined.splitlines()
            if line.strip().upper().startswith(name + " ")]


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))
