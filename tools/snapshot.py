#!/usr/bin/env python3
"""Render every Grafana dashboard to a PNG from the dashboards' own PromQL, without Grafana.

    python tools/snapshot.py                       # build a simulated stack, write docs/snapshots/<uid>.png
    python tools/snapshot.py --prometheus-url URL  # render from your Prometheus into ./snapshots/ (no Grafana)
    python tools/snapshot.py --workdir DIR         # keep the stack's files in DIR for a look afterwards

The stack (``make snapshot``), all on 127.0.0.1 in a temporary directory:

1. ``python -m exporter backfill`` simulates ``--days`` + 1 days of the ``default`` scenario at
   ``--rate`` events/s into TSDB blocks and a state store (the extra day fills the 1-day windows
   of the first rendered day). The budget gauge is not part of the backfill, so its history is
   written here too, as the scrapes of an exporter with ``BUDGETS`` would have seen it.
2. Prometheus starts on those blocks with ``prometheus/rules/*.yml`` and scrapes the live exporter,
   started on the same state and port, so history and live traffic are one series.
3. The recording rules the dashboards read are backfilled over the history with
   ``promtool tsdb create-blocks-from rules`` (rules read by other rules first), and Prometheus is
   restarted on the new blocks: Prometheus only evaluates rules from the moment it runs.
4. Each dashboard is rendered with matplotlib: the usage dashboards over the last ``--days``
   days, the exporter-health dashboard (self-metrics are not backfilled) over the live minutes.

Template variables are at "All" (``job`` at its default). ``$__interval`` is the range divided by
about 340 points, rounded like Grafana; ``$__rate_interval`` is Grafana's
``max($__interval + scrape interval, 4 x scrape interval)`` with the scrape interval of the data
drawn: 5 minutes for the backfilled history, 5 seconds for the live window. Range queries are
aligned to their step like Grafana's. Panels: time series as lines, stacked areas or stacked bars
(with threshold lines and a right axis where the dashboard has one); stat and gauge as big
numbers (gauge with its threshold arc); bar gauges and bar charts as horizontal bars; tables as
text tables (merged queries, renamed and ordered columns, threshold-coloured cells); the heatmap
with imshow. Units come from the panels' field config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import grafana_vars  # noqa: E402  (Grafana's variable interpreter, test tooling: substitute, ALL)
from exporter.config import parse_duration  # noqa: E402
from mixin import promql  # noqa: E402
from mixin.dashboards import iter_queries  # noqa: E402

try:
    import matplotlib
except ImportError:  # pragma: no cover
    sys.exit("snapshot: matplotlib is missing: pip install 'matplotlib==3.11.2' (`make snapshot` does)")

matplotlib.use("Agg")
matplotlib.rcParams["text.parse_math"] = False  # "$" is a currency and a Grafana variable here, not TeX
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, PowerNorm  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Rectangle, Wedge  # noqa: E402
from matplotlib.ticker import FuncFormatter, Locator, MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402  (a dependency of matplotlib)

JOB = "llm-usage-exporter"
HISTORY_STEP = 300          # seconds between the backfilled "scrapes" (backfill --step default)
LIVE_SCRAPE = 5             # seconds between the live scrapes of the snapshot's Prometheus
# Daily budgets (USD) for some simulated tenants, sized for --rate 1 (a weekday costs about acme
# 165-195, globex 410-500, initech 65, hooli 70 USD): one well under, one near the warning, one
# around 100 %, one over.
BUDGETS = {"acme": 250, "globex": 450, "initech": 120, "hooli": 60}
USAGE_POINTS = 340          # points per line over the range (Grafana: about the panel's width in px)


def log(message: str) -> None:
    print(f"[snapshot {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ============================================================================================
# The stack
# ============================================================================================

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log_path: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}" + (f" (log: {log_path})" if log_path else ""))


class Process:
    """A child process with its output in a log file, stopped (by its pid) on exit."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path = ROOT) -> None:
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(list(argv), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def run(argv: Sequence[str], what: str, timeout: float) -> str:
    result = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:] or result.stdout[-3000:]}")
    return result.stdout


class Stack:
    """Backfilled history + live exporter + Prometheus, in ``workdir``."""

    def __init__(self, workdir: Path, days: float, rate: float, python: str) -> None:
        self.workdir, self.days, self.rate, self.python = workdir, days, rate, python
        self.port = free_port()
        self.prom_port = free_port()
        self.instance = f"127.0.0.1:{self.port}"
        self.tsdb = workdir / "prometheus"
        self.state = workdir / "state.db"
        self.config = workdir / "config.yaml"
        self.prom_config = workdir / "prometheus.yml"
        self.exporter: Process | None = None
        self.prometheus: Process | None = None
        self.live_since = 0.0
        self.timings: dict[str, float] = {}

    @property
    def prom_url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tsdb.mkdir(exist_ok=True)
        self.config.write_text(yaml.safe_dump({"tenants": {t: {"budget_usd_per_day": b} for t, b in BUDGETS.items()}}))
        started = time.monotonic()
        history_days = self.days + 1
        log(f"backfilling {history_days:g} simulated days at {self.rate:g} events/s (the slow part) ...")
        out = run([self.python, "-m", "exporter", "backfill", "--days", str(history_days), "--rate", str(self.rate),
                   "--scenario", "default", "--out", str(self.tsdb), f"--storage.path={self.state}",
                   f"--config.file={self.config}", f"--web.listen-address={self.instance}",
                   "--instance", self.instance, "--job", JOB, "--no-progress"], "backfill", timeout=3600)
        log(out.splitlines()[0] if out else "backfill done")
        self.history_end = time.time() // HISTORY_STEP * HISTORY_STEP
        self._write_budget_history(self.history_end - history_days * 86400, self.history_end)
        self._timed("backfill", started)

        started = time.monotonic()
        self.exporter = Process("exporter", [
            self.python, "-m", "exporter", f"--web.listen-address={self.instance}", f"--storage.path={self.state}",
            f"--config.file={self.config}", "--simulator.enabled=true", "--simulator.scenario=default",
            f"--simulator.rate={self.rate}", "--log.level=warning"], self.workdir / "exporter.log")
        wait_for(lambda: httpx.get(f"http://{self.instance}/readyz", timeout=2).status_code == 200, 60,
                 "the live exporter", self.exporter.proc, self.exporter.log_path)
        self.prom_config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": f"{LIVE_SCRAPE}s", "evaluation_interval": "15s"},
            "rule_files": [str(p) for p in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [self.instance]}]}],
        }))
        self._start_prometheus()
        self.live_since = time.time()
        self._timed("start", started)

        started = time.monotonic()
        self._backfill_rules()
        self._timed("rules backfill", started)

    def _write_budget_history(self, start: float, end: float) -> None:
        """``llm_budget_limit_usd`` as every backfilled scrape of an exporter with BUDGETS would have seen it."""
        path = self.workdir / "budgets.om"
        with path.open("w") as out:
            out.write("# HELP llm_budget_limit_usd Configured daily budget per tenant in USD.\n"
                      "# TYPE llm_budget_limit_usd gauge\n")
            for tenant, budget in sorted(BUDGETS.items()):
                labels = f'instance="{self.instance}",job="{JOB}",tenant="{tenant}"'
                t = start
                while t <= end:
                    out.write(f"llm_budget_limit_usd{{{labels}}} {budget} {t:.3f}\n")
                    t += HISTORY_STEP
            out.write("# EOF\n")
        run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path), str(self.tsdb)],
            "promtool (budget history)", timeout=300)
        path.unlink()

    def _start_prometheus(self) -> None:
        self.prometheus = Process("prometheus", [
            shutil.which("prometheus") or "prometheus", f"--config.file={self.prom_config}",
            f"--storage.tsdb.path={self.tsdb}", f"--web.listen-address=127.0.0.1:{self.prom_port}",
            "--storage.tsdb.retention.time=60d", "--log.level=warn"], self.workdir / "prometheus.log")
        wait_for(lambda: httpx.get(f"{self.prom_url}/-/ready", timeout=2).status_code == 200, 120,
                 "Prometheus", self.prometheus.proc, self.prometheus.log_path)

    def _backfill_rules(self) -> None:
        """Backfill the recording rules the dashboards read (and the rules those read), a level
        at a time: promtool evaluates rules against Prometheus, which must hold the level below."""
        needed = dashboard_recording_rules()
        rules = {r["record"]: r for r in recording_rule_definitions()}
        todo: set[str] = set()
        stack = list(needed)
        while stack:
            name = stack.pop()
            if name in todo:
                continue
            todo.add(name)
            stack += [n for n in expr_names(rules[name]["expr"]) if n in rules]
        level = 0
        done: set[str] = set()
        start, end = self.history_end - self.days * 86400 - 86400, time.time()
        while todo - done:
            ready = sorted(n for n in todo - done
                           if all(d in done for d in expr_names(rules[n]["expr"]) if d in rules))
            rule_file = self.workdir / f"rules-level{level}.yml"
            rule_file.write_text(yaml.safe_dump({"groups": [{
                "name": f"snapshot-backfill-{level}", "interval": f"{HISTORY_STEP}s",
                "rules": [{k: v for k, v in rules[n].items() if k in ("record", "expr", "labels")} for n in ready]}]}))
            out_dir = self.workdir / f"rules-level{level}"
            log(f"backfilling recording rules ({', '.join(ready)}) ...")
            run(["promtool", "tsdb", "create-blocks-from", "rules", f"--start={int(start)}", f"--end={int(end)}",
                 f"--url={self.prom_url}", f"--output-dir={out_dir}", f"--eval-interval={HISTORY_STEP}s",
                 str(rule_file)], "promtool (rules backfill)", timeout=1800)
            assert self.prometheus is not None
            self.prometheus.stop()
            for block in out_dir.iterdir():
                if block.is_dir():
                    shutil.move(str(block), self.tsdb / block.name)
            self._start_prometheus()
            done |= set(ready)
            level += 1

    def wait_for_live_data(self, timeout: float = 120) -> None:
        prom = Prometheus(self.prom_url)
        wait_for(lambda: prom.query(f'up{{job="{JOB}"}} == 1', time.time()), timeout, "a live scrape")

    def stop(self) -> None:
        for process in (self.prometheus, self.exporter):
            if process is not None:
                process.stop()


def recording_rule_definitions() -> list[dict[str, Any]]:
    out = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            out += [r for r in group.get("rules", []) if "record" in r]
    return out


def expr_names(expr: str) -> set[str]:
    return set(promql.metrics_in(expr))


def dashboard_recording_rules() -> set[str]:
    names: set[str] = set()
    for dash in load_dashboards():
        for _where, expr in iter_queries(dash):
            names |= {n for n in promql.metrics_in(expr) if ":" in n}
    return names


def load_dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))]


# ============================================================================================
# Prometheus queries
# ============================================================================================

class Prometheus:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=120)

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        response = self.client.post(path, data=dict(params))
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params.get('query')}: {body.get('error', body)}")
        return body["data"]["result"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": expr, "time": at})

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})


def grafana_round_interval(seconds: float) -> float:
    """Grafana's ``rangeutil.roundInterval``: snap a computed interval to a human-friendly one."""
    bounds = [(0.015, 0.01), (0.035, 0.02), (0.075, 0.05), (0.15, 0.1), (0.35, 0.2), (0.75, 0.5), (1.5, 1),
              (3.5, 2), (7.5, 5), (12.5, 10), (17.5, 15), (25, 20), (45, 30), (90, 60), (150, 120), (270, 300),
              (450, 300), (750, 600), (1050, 900), (1500, 1200), (2700, 1800), (5400, 3600), (9000, 7200),
              (16200, 10800), (32400, 21600), (86400, 43200), (604800, 86400)]
    for bound, value in bounds:
        if seconds < bound:
            return value
    return 604800


def duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


class TimeRange:
    """A dashboard time range and Grafana's built-in variables for it."""

    def __init__(self, start: float, end: float, scrape: float, label: str) -> None:
        self.start, self.end, self.scrape, self.label = start, end, scrape, label
        self.interval = max(scrape, grafana_round_interval((end - start) / USAGE_POINTS))
        self.rate_interval = max(self.interval + scrape, 4 * scrape)

    def builtins(self) -> dict[str, str]:
        return {"__range": duration_text(round(self.end - self.start)), "__interval": duration_text(self.interval),
                "__rate_interval": duration_text(self.rate_interval)}


# ============================================================================================
# Formatting: units, colours
# ============================================================================================

BG = "#111217"
PANEL_BG = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
GRID = "#2c3235"
NAMED_COLORS = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A", "blue": "#5794F2",
                "purple": "#B877D9", "dark-orange": "#FA6400", "dark-red": "#C4162A", "dark-green": "#37872D",
                "text": TEXT, "transparent": "#00000000"}
CLASSIC = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642",
           "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477", "#B7DBAB", "#F4D598",
           "#70DBED", "#F9BA8F", "#F29191", "#82B5D8", "#E5A8E2", "#AEA2E0"]

UNIT_AXIS = {"currencyUSD": "USD", "percentunit": "percent", "s": "seconds", "reqps": "requests / s",
             "count:tok/s": "tokens / s", "count:ev/s": "events / s", "count:runs/s": "runs / s", "short": "count",
             "none": ""}
UNIT_SUFFIX = {"reqps": " req/s", "count:tok/s": " tok/s", "count:ev/s": " ev/s", "count:runs/s": " runs/s"}


def color(name: str | None) -> str:
    if not name:
        return TEXT
    return NAMED_COLORS.get(name, name)


def si(value: float, decimals: int | None = None) -> str:
    magnitude = abs(value)
    for size, suffix in ((1e12, " T"), (1e9, " B"), (1e6, " Mil"), (1e3, " K")):
        if magnitude >= size:
            d = 1 if decimals is None else decimals
            return f"{value / size:.{d}f}{suffix}"
    if decimals is None:
        decimals = 0 if magnitude >= 100 or float(value).is_integer() else (1 if magnitude >= 10 else 2)
    return f"{value:.{decimals}f}"


def fmt(value: float | None, unit: str, decimals: int | None = None) -> str:
    """A value as Grafana would display it in a stat or table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "currencyUSD":
        if abs(value) >= 1e5:
            return "$" + si(value, 1).replace(" ", "")
        d = decimals if decimals is not None else (0 if abs(value) >= 1000 else 2)
        return f"${value:,.{d}f}"
    if unit == "s":
        magnitude = abs(value)
        if magnitude == 0:
            return "0 s"
        if magnitude < 1:
            return f"{value * 1000:.{0 if magnitude >= 0.1 else 1}f} ms"
        if magnitude < 60:
            return f"{value:.{2 if decimals is None else decimals}f} s"
        if magnitude < 3600:
            return f"{value / 60:.1f} min"
        if magnitude < 86400:
            return f"{value / 3600:.1f} hour"
        return f"{value / 86400:.1f} day"
    return si(value, decimals) + UNIT_SUFFIX.get(unit, "")


def axis_formatter(unit: str) -> FuncFormatter:
    def tick(value: float, _pos: Any) -> str:
        if unit == "percentunit":
            return f"{value * 100:.0f}%" if abs(value) >= 0.1 or value == 0 else f"{value * 100:.1f}%"
        if unit == "currencyUSD":
            if abs(value) >= 1000:
                return "$" + si(value, 1).replace(" ", "")
            if 0 < abs(value) < 10:  # as many decimals as the tick needs: $0.005, $0.01, $0.015, $2.5
                return "$" + f"{value:.4f}".rstrip("0").rstrip(".")
            return f"${value:.0f}"
        if unit == "s":
            if 1 <= abs(value) < 120:
                return f"{value:.0f} s" if float(value).is_integer() else f"{value:.1f} s"
            return fmt(value, "s", 1 if abs(value) < 60 else None).replace(".0 ", " ")
        return si(value).replace(" ", "")
    return FuncFormatter(tick)


class DurationLocator(Locator):
    """Ticks at round durations (100 ms, 15 s, 2 min, 1 h ...), not at round numbers of seconds."""

    STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300,
             600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

    def __call__(self) -> list[float]:
        low, high = self.axis.get_view_interval()
        return self.tick_values(low, high)

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        span = max(vmax - vmin, 1e-9)
        step = next((s for s in self.STEPS if span / s <= 5), self.STEPS[-1])
        first = math.ceil(vmin / step) * step
        return [first + i * step for i in range(int((vmax - first) / step) + 1)]


def threshold_color(value: float | None, thresholds: Mapping[str, Any] | None) -> str:
    steps = (thresholds or {}).get("steps") or [{"color": "green", "value": None}]
    chosen = steps[0]["color"]
    if value is not None and not math.isnan(value):
        for step in steps:
            if step.get("value") is None or value >= step["value"]:
                chosen = step["color"]
    return color(chosen)


def name_hash_color(name: str) -> str:
    digest = int(hashlib.md5(name.encode()).hexdigest(), 16)
    return CLASSIC[digest % len(CLASSIC)]


def js_regex(pattern: str) -> re.Pattern[str]:
    match = re.fullmatch(r"/(.*)/([a-z]*)", pattern)
    if match is None:
        return re.compile(re.escape(pattern))
    return re.compile(match.group(1), re.IGNORECASE if "i" in match.group(2) else 0)


def override_props(panel: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The field-config override properties that apply to a series name, in Grafana's order."""
    props: dict[str, Any] = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        if matcher.get("id") == "byName":
            matched = matcher.get("options") == name
        elif matcher.get("id") == "byRegexp":
            matched = js_regex(str(matcher.get("options", ""))).search(name) is not None
        else:
            matched = False
        if matched:
            for prop in override.get("properties", []):
                props[prop["id"]] = prop.get("value")
    return props


def series_color(panel: Mapping[str, Any], name: str, index: int) -> str:
    props = override_props(panel, name)
    value = props.get("color")
    if isinstance(value, dict) and value.get("mode") == "fixed" and value.get("fixedColor"):
        return color(value["fixedColor"])
    mode = panel.get("fieldConfig", {}).get("defaults", {}).get("color", {}).get("mode", "palette-classic")
    by_name = isinstance(value, dict) and value.get("mode") == "palette-classic-by-name"
    if mode == "palette-classic-by-name" or by_name:
        return name_hash_color(name)
    return CLASSIC[index % len(CLASSIC)]


# ============================================================================================
# Data
# ============================================================================================

_LEGEND = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def legend_name(target: Mapping[str, Any], metric: Mapping[str, str], expr: str) -> str:
    legend = target.get("legendFormat") or "__auto"
    if legend == "__auto":
        labels = {k: v for k, v in metric.items() if k != "__name__"}
        if not labels:
            return metric.get("__name__", expr)
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return _LEGEND.sub(lambda m: metric.get(m.group(1), ""), legend).strip()


def to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class Series:
    def __init__(self, name: str, metric: Mapping[str, str], times: list[float], values: list[float], ref: str) -> None:
        self.name, self.metric, self.times, self.values, self.ref = name, dict(metric), times, values, ref

    def finite(self) -> list[float]:
        return [v for v in self.values if not math.isnan(v) and not math.isinf(v)]

    def calc(self, name: str) -> float:
        values = self.finite()
        if not values:
            return math.nan
        if name == "mean":
            return sum(values) / len(values)
        if name == "max":
            return max(values)
        if name == "sum":
            return sum(values)
        return values[-1]  # lastNotNull


class Renderer:
    """Queries and draws the panels of one dashboard."""

    def __init__(self, prom: Prometheus, dashboard: Mapping[str, Any], window: TimeRange) -> None:
        self.prom, self.dash, self.window = prom, dashboard, window
        variables: dict[str, Any] = {}
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            if variable.get("includeAll") and variable.get("allValue"):
                variables[variable["name"]] = grafana_vars.ALL
            else:
                variables[variable["name"]] = (variable.get("current") or {}).get("value") or JOB
        self.variables = {**variables, **window.builtins()}
        self.queries = 0

    def expr(self, target: Mapping[str, Any]) -> str:
        return grafana_vars.substitute(target["expr"], self.variables, dashboard=self.dash)

    def step(self, panel: Mapping[str, Any], target: Mapping[str, Any]) -> float:
        interval = target.get("interval") or panel.get("interval")
        minimum = parse_duration(interval) if interval else 0
        return max(self.window.interval, minimum)

    def range_series(self, panel: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[list[Series], float]:
        step = self.step(panel, target)
        start = math.floor(self.window.start / step) * step  # Grafana aligns the range to the step
        end = math.floor(self.window.end / step) * step
        expr = self.expr(target)
        self.queries += 1
        out = []
        for item in self.prom.query_range(expr, start, end, step):
            times = [float(t) for t, _ in item["values"]]
            values = [to_float(v) for _, v in item["values"]]
            out.append(Series(legend_name(target, item["metric"], expr), item["metric"], times, values,
                              target.get("refId", "A")))
        return out, step

    def instant_series(self, target: Mapping[str, Any]) -> list[Series]:
        expr = self.expr(target)
        self.queries += 1
        return [Series(legend_name(target, item["metric"], expr), item["metric"], [float(item["value"][0])],
                       [to_float(item["value"][1])], target.get("refId", "A"))
                for item in self.prom.query(expr, self.window.end)]

    def values(self, panel: Mapping[str, Any]) -> list[Series]:
        """Every target of a stat-like panel: instant or range as the target says."""
        out: list[Series] = []
        for target in panel.get("targets", []):
            if target.get("instant") and not target.get("range"):
                out += self.instant_series(target)
            else:
                out += self.range_series(panel, target)[0]
        return out


# ============================================================================================
# Drawing
# ============================================================================================

UNIT_IN = 0.5        # inches per Grafana grid row unit (30 px in Grafana)
WIDTH_IN = 24.0      # inches for Grafana's 24 columns
HEADER_IN = 1.05
GAP_IN = 0.09
DPI = 90


class Canvas:
    def __init__(self, height_units: int) -> None:
        self.height = HEADER_IN + height_units * UNIT_IN + 0.25
        self.fig = plt.figure(figsize=(WIDTH_IN + 0.3, self.height), dpi=DPI, facecolor=BG)

    def rect(self, x: float, y: float, w: float, h: float) -> list[float]:
        """Inches from the top-left corner to figure fractions for add_axes."""
        return [(x + 0.15) / (WIDTH_IN + 0.3), 1 - (y + h) / self.height, w / (WIDTH_IN + 0.3), h / self.height]

    def axes(self, x: float, y: float, w: float, h: float, **kwargs: Any) -> Any:
        ax = self.fig.add_axes(self.rect(x, y, w, h), **kwargs)
        ax.set_facecolor("none")
        return ax

    def text(self, x: float, y: float, text: str, **kwargs: Any) -> None:
        fx, fy, _, _ = self.rect(x, y, 0, 0)
        self.fig.text(fx, fy, text, **kwargs)


def panel_box(canvas: Canvas, panel: Mapping[str, Any]) -> tuple[float, float, float, float]:
    pos = panel["gridPos"]
    x = pos["x"] * WIDTH_IN / 24 + GAP_IN / 2
    y = HEADER_IN + pos["y"] * UNIT_IN + GAP_IN / 2
    w = pos["w"] * WIDTH_IN / 24 - GAP_IN
    h = pos["h"] * UNIT_IN - GAP_IN
    return x, y, w, h


def draw_frame(canvas: Canvas, panel: Mapping[str, Any], box: tuple[float, float, float, float],
               background: str = PANEL_BG) -> None:
    x, y, w, h = box
    ax = canvas.axes(x, y, w, h, zorder=-5)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.002, 0.004), 0.996, 0.992, boxstyle="round,pad=0,rounding_size=0.008",
                                transform=ax.transAxes, facecolor=background, edgecolor=BORDER, linewidth=0.8))
    title = panel.get("title", "")
    max_chars = int(w * 13)
    if len(title) > max_chars:
        title = title[:max_chars - 1] + "…"
    canvas.text(x + 0.12, y + 0.2, title, color=TEXT, fontsize=10.5, fontweight="bold", va="center", ha="left")


def no_data(canvas: Canvas, panel: Mapping[str, Any], box: tuple[float, float, float, float]) -> None:
    x, y, w, h = box
    text = panel.get("fieldConfig", {}).get("defaults", {}).get("noValue") or "No data"
    canvas.text(x + w / 2, y + h / 2 + 0.1, text, color=MUTED, fontsize=13, ha="center", va="center")


def style_axes(ax: Any, unit: str, label: str | None = None) -> None:
    ax.tick_params(colors=MUTED, labelsize=8, length=0, pad=3)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_formatter(axis_formatter(unit))
    ax.yaxis.set_major_locator(DurationLocator() if unit == "s" else MaxNLocator(5))
    if label is None:
        label = UNIT_AXIS.get(unit, unit)
    if label:
        ax.set_ylabel(label, color=MUTED, fontsize=8.5, labelpad=4)


def time_axis(ax: Any, window: TimeRange) -> None:
    span = window.end - window.start
    ax.set_xlim(dt.datetime.fromtimestamp(window.start, dt.timezone.utc),
                dt.datetime.fromtimestamp(window.end, dt.timezone.utc))
    if span > 2 * 86400:
        ax.xaxis.set_major_locator(mdates.DayLocator(tz=dt.timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b", tz=dt.timezone.utc))
    else:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=8, tz=dt.timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=dt.timezone.utc))


def as_dates(times: Sequence[float]) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in times]


def draw_thresholds(ax: Any, defaults: Mapping[str, Any], mode: str) -> None:
    if mode in ("off", "", None):
        return
    steps = (defaults.get("thresholds") or {}).get("steps", [])
    lows, highs = ax.get_ylim()
    for i, step in enumerate(steps):
        value = step.get("value")
        if mode == "line+area":
            upper = steps[i + 1]["value"] if i + 1 < len(steps) else highs
            lower = value if value is not None else lows
            ax.axhspan(lower, upper, color=color(step["color"]), alpha=0.09, linewidth=0, zorder=0)
        if value is not None and lows <= value <= highs * 1.0001:
            ax.axhline(value, color=color(step["color"]), linewidth=1.1, alpha=0.9,
                       linestyle=(0, (6, 4)) if mode == "dashed" else "-", zorder=1)
    ax.set_ylim(lows, highs)


def legend_columns(entries: Sequence[tuple[str, str, str]], w: float) -> int:
    """How many legend columns fit: each must hold the longest name and the longest stats."""
    name = max((len(label) for _, label, _ in entries), default=0)
    stats = max((len(text) for _, _, text in entries), default=0)
    needed = 0.3 + name * 0.062 + (0.25 + stats * 0.056 if stats else 0)
    return max(1, int(w // needed))


def draw_legend(canvas: Canvas, entries: list[tuple[str, str, str]], box: tuple[float, float, float, float]) -> None:
    """A legend table below the plot: colour, name, the legend's calcs."""
    x, y, w, h = box
    if not entries:
        return
    ax = canvas.axes(x, y, w, h)
    ax.axis("off")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ncol = legend_columns(entries, w)
    line_h = 0.2
    visible = max(1, int(round(h / line_h))) * ncol
    if len(entries) > visible:
        entries = entries[:visible - 1] + [("", f"+ {len(entries) - visible + 1} more", "")]
    rows = math.ceil(len(entries) / ncol)
    for i, (name, label, stats) in enumerate(entries):
        col, row = divmod(i, rows)
        cx, cy = col * (w / ncol), row * line_h + line_h / 2
        if name:
            ax.add_patch(Rectangle((cx + 0.02, cy - 0.025), 0.16, 0.05, color=name, linewidth=0))
        ax.text(cx + 0.24, cy, label, color=TEXT if name else MUTED, fontsize=7.5, va="center", ha="left",
                clip_on=True)
        if stats:
            ax.text(cx + w / ncol - 0.12, cy, stats, color=MUTED, fontsize=7, va="center", ha="right")


CALC_NAMES = {"mean": "mean", "max": "max", "lastNotNull": "last", "sum": "total"}


def draw_timeseries(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
                    box: tuple[float, float, float, float]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    unit = defaults.get("unit", "short")
    series: list[Series] = []
    step = renderer.window.interval
    for target in panel["targets"]:
        got, step = renderer.range_series(panel, target)
        series += got
    series = [s for s in series if s.finite()]
    if not series:
        no_data(canvas, panel, box)
        return
    legend = panel.get("options", {}).get("legend", {})
    calcs = legend.get("calcs", [])
    sort_calc = calcs[0] if calcs else "mean"
    series.sort(key=lambda s: -(s.calc(sort_calc) if not math.isnan(s.calc(sort_calc)) else -1e300))

    x, y, w, h = box
    right = [s for s in series if override_props(panel, s.name).get("custom.axisPlacement") == "right"]
    left = [s for s in series if s not in right]
    colors = {s.name: series_color(panel, s.name, i) for i, s in enumerate(series)}
    entries = []
    for s in series:
        sunit = override_props(panel, s.name).get("unit", unit)
        stats = "  ".join(f"{CALC_NAMES.get(c, c)} {fmt(s.calc(c), sunit, defaults.get('decimals'))}" for c in calcs)
        entries.append((colors[s.name], s.name, stats))
    per_row = legend_columns(entries, w - 0.45)
    legend_rows = min(math.ceil(len(series) / per_row), max(1, int((h * 0.34) / 0.2)))
    legend_h = legend_rows * 0.2 + 0.04
    plot = (x + 0.85, y + 0.42, w - 0.85 - (0.85 if right else 0.2), h - 0.42 - 0.36 - legend_h)
    ax = canvas.axes(*plot)
    style_axes(ax, unit)
    bars = custom.get("drawStyle") == "bars"
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    alignment = custom.get("barAlignment", 0)

    def plot_group(axis: Any, group: list[Series], stack: bool) -> None:
        if not group:
            return
        times = sorted({t for s in group for t in s.times})
        index = {t: i for i, t in enumerate(times)}
        base = [0.0] * len(times)
        for s in (group if stack else group):
            values = [math.nan] * len(times)
            for t, v in zip(s.times, s.values):
                values[index[t]] = v
            props = override_props(panel, s.name)
            dash = props.get("custom.lineStyle", {}) or {}
            linestyle = "-"
            if dash.get("fill") == "dash":
                linestyle = (0, (5, 3))
            elif dash.get("fill") == "dot":
                linestyle = (0, (1, 2))
            c = colors[s.name]
            if bars:
                offset = {-1: -step / 2, 1: step / 2}.get(alignment, 0)
                centers = as_dates([t + offset for t in times])
                clean = [0.0 if math.isnan(v) else v for v in values]
                axis.bar(centers, clean, width=step / 86400 * 0.92, bottom=base if stack else None, color=c,
                         linewidth=0, alpha=0.9)
                if stack:
                    base = [b + v for b, v in zip(base, clean)]
            elif stack:
                clean = [0.0 if math.isnan(v) else v for v in values]
                top = [b + v for b, v in zip(base, clean)]
                axis.fill_between(as_dates(times), base, top, color=c, alpha=0.55, linewidth=0)
                axis.plot(as_dates(times), top, color=c, linewidth=0.9)
                base = top
            else:
                axis.plot(as_dates(times), values, color=c, linewidth=1.3, linestyle=linestyle,
                          marker="o" if len(times) <= 3 else None, markersize=3)
                fill = props.get("custom.fillOpacity", custom.get("fillOpacity", 0))
                if fill and len(group) <= 3:
                    axis.fill_between(as_dates(times), 0, [0 if math.isnan(v) else v for v in values],
                                      color=c, alpha=min(0.25, fill / 100), linewidth=0)

    plot_group(ax, left, stacked)
    if defaults.get("min") is not None:
        ax.set_ylim(bottom=defaults["min"])
    if defaults.get("max") is not None:
        ax.set_ylim(top=defaults["max"])
    lows, highs = ax.get_ylim()
    if highs <= lows:
        ax.set_ylim(lows, lows + 1)
    draw_thresholds(ax, defaults, custom.get("thresholdsStyle", {}).get("mode", "off"))
    if defaults.get("max") is None:
        ax.set_ylim(top=ax.get_ylim()[1] * 1.04 if ax.get_ylim()[1] > 0 else ax.get_ylim()[1])
    time_axis(ax, renderer.window)
    if right:
        runit = override_props(panel, right[0].name).get("unit", unit)
        ax2 = ax.twinx()
        plot_group(ax2, right, False)
        style_axes(ax2, runit)
        ax2.grid(False)
        ax2.set_ylim(bottom=0)
        ax2.yaxis.set_label_position("right")
    draw_legend(canvas, entries, (x + 0.3, y + h - legend_h - 0.06, w - 0.45, legend_h - 0.04))


def draw_stat(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
              box: tuple[float, float, float, float]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    series = renderer.values(panel)
    if not series:
        no_data(canvas, panel, box)
        return
    mode = panel.get("options", {}).get("colorMode", "value")
    x, y, w, h = box
    n = len(series)
    cell_w = (w - 0.2) / n
    for i, s in enumerate(series):
        props = override_props(panel, s.name)
        value = s.calc("lastNotNull")
        thresholds = props.get("thresholds", defaults.get("thresholds"))
        c = threshold_color(value, thresholds)
        cx = x + 0.1 + i * cell_w
        cell = (cx, y + 0.4, cell_w, h - 0.5)
        text_color = c
        if mode == "background":
            bg = canvas.axes(*cell, zorder=-1)
            bg.axis("off")
            bg.add_patch(FancyBboxPatch((0.02, 0.03), 0.96, 0.94, boxstyle="round,pad=0,rounding_size=0.03",
                                        transform=bg.transAxes, facecolor=c, edgecolor="none", alpha=0.85))
            text_color = "#ffffff"
        sparkline = len(s.times) > 1 and panel.get("options", {}).get("graphMode") == "area"
        if sparkline:
            spark = canvas.axes(cx + 0.05, y + h * 0.62, cell_w - 0.1, h * 0.34)
            spark.axis("off")
            spark.fill_between(range(len(s.values)), [0 if math.isnan(v) else v for v in s.values],
                               color=c, alpha=0.18, linewidth=0)
            spark.plot(range(len(s.values)), s.values, color=c, linewidth=1.1, alpha=0.8)
            spark.set_ylim(bottom=0)
        text = fmt(value, unit, defaults.get("decimals"))
        size = min(34.0, max(14.0, (h - 0.6) * 22), cell_w * 72 / max(4, len(text)) * 1.45)
        name_shown = n > 1 or s.name not in ("", panel.get("title"))
        center_y = y + 0.4 + (h - 0.5) * (0.38 if sparkline else 0.5 if not name_shown else 0.55)
        canvas.text(cx + cell_w / 2, center_y, text, color=text_color, fontsize=size, fontweight="bold",
                    ha="center", va="center")
        if name_shown and n > 1:
            canvas.text(cx + cell_w / 2, center_y - size / 72 * 0.85, s.name, color=TEXT if mode != "background"
                        else "#ffffff", fontsize=8.5, ha="center", va="center")


def draw_gauge(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
               box: tuple[float, float, float, float]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    series = renderer.values(panel)
    if not series:
        no_data(canvas, panel, box)
        return
    value = series[0].calc("lastNotNull")
    lo, hi = float(defaults.get("min", 0)), float(defaults.get("max", 1))
    x, y, w, h = box
    size = min(w - 0.3, (h - 0.45) * 1.7)
    ax = canvas.axes(x + (w - size) / 2, y + 0.38, size, h - 0.45)
    ax.axis("off")
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-0.35, 1.1)
    ax.set_aspect("equal", adjustable="box")

    def angle(v: float) -> float:
        frac = 0.0 if hi == lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
        return 180 - 180 * frac

    steps = (defaults.get("thresholds") or {}).get("steps", [])
    for i, step in enumerate(steps):
        start_v = lo if step.get("value") is None else step["value"]
        end_v = steps[i + 1]["value"] if i + 1 < len(steps) else hi
        ax.add_patch(Wedge((0, 0), 1.0, angle(end_v), angle(start_v), width=0.07, color=color(step["color"])))
    c = threshold_color(value, defaults.get("thresholds"))
    ax.add_patch(Wedge((0, 0), 0.88, 0, 180, width=0.22, color="#2c3235"))
    if not math.isnan(value):
        ax.add_patch(Wedge((0, 0), 0.88, angle(value), 180, width=0.22, color=c))
    ax.text(0, 0.12, fmt(value, unit, defaults.get("decimals")), color=c, fontsize=26, fontweight="bold",
            ha="center", va="center")
    ax.text(-0.88, -0.12, fmt(lo, unit, 0), color=MUTED, fontsize=7.5, ha="center")
    ax.text(0.88, -0.12, fmt(hi, unit, 0), color=MUTED, fontsize=7.5, ha="center")


def draw_bargauge(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
                  box: tuple[float, float, float, float]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    series = [s for s in renderer.values(panel) if s.finite()]
    if not series:
        no_data(canvas, panel, box)
        return
    x, y, w, h = box
    values = [s.calc("lastNotNull") for s in series]
    hi = defaults.get("max")
    hi = max(hi if hi is not None else 0, max(values)) or 1
    lo = defaults.get("min") or 0
    mode = defaults.get("color", {}).get("mode")
    ax = canvas.axes(x + 0.15, y + 0.42, w - 0.3, h - 0.52)
    ax.axis("off")
    n = len(series)
    ax.set_xlim(0, 1)
    ax.set_ylim(n, 0)
    name_w = 0.22
    value_w = 0.16
    for i, (s, v) in enumerate(zip(series, values)):
        c = series_color(panel, s.name, i) if mode == "palette-classic-by-name" else threshold_color(
            v, defaults.get("thresholds"))
        frac = 0 if hi == lo else max(0.0, min(1.0, (v - lo) / (hi - lo)))
        bar_w = 1 - name_w - value_w
        ax.add_patch(Rectangle((name_w, i + 0.15), bar_w, 0.7, color="#22252b", linewidth=0))
        ax.add_patch(Rectangle((name_w, i + 0.15), bar_w * frac, 0.7, color=c, linewidth=0, alpha=0.9))
        ax.text(name_w - 0.01, i + 0.5, s.name, color=TEXT, fontsize=8.5, ha="right", va="center")
        ax.text(1, i + 0.5, fmt(v, unit, defaults.get("decimals")), color=c, fontsize=10, fontweight="bold",
                ha="right", va="center")


def table_rows(renderer: Renderer, panel: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Grafana's merge + organize transformations over instant table queries."""
    targets = [t for t in panel.get("targets", [])]
    rows: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    single = len(targets) == 1
    for target in targets:
        for s in renderer.instant_series(target):
            key = tuple(sorted((k, v) for k, v in s.metric.items() if k != "__name__"))
            row = rows.setdefault(key, dict(key))
            row["Value" if single else f"Value #{s.ref}"] = s.values[0]
    organize: dict[str, Any] = {}
    for transformation in panel.get("transformations", []):
        if transformation.get("id") == "organize":
            organize = transformation.get("options", {})
    excluded = {k for k, v in organize.get("excludeByName", {}).items() if v}
    order = organize.get("indexByName", {})
    rename = organize.get("renameByName", {})
    fields: list[str] = []
    for row in rows.values():
        fields += [f for f in row if f not in fields and f not in excluded]
    fields.sort(key=lambda f: (order.get(f, 1000), f))
    headers = [rename.get(f, f) for f in fields]
    out = [{rename.get(f, f): row.get(f) for f in fields} for row in rows.values()]
    return headers, out


def column_props(panel: Mapping[str, Any], header: str) -> dict[str, Any]:
    return override_props(panel, header)


def draw_table(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
               box: tuple[float, float, float, float]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    headers, rows = table_rows(renderer, panel)
    if not rows:
        no_data(canvas, panel, box)
        return
    sort_by = (panel.get("options", {}).get("sortBy") or [{}])[0]
    if sort_by.get("displayName") in headers:
        key = sort_by["displayName"]
        rows.sort(key=lambda r: (r.get(key) is None or (isinstance(r.get(key), float) and math.isnan(r[key])),
                                 -(r[key] if isinstance(r.get(key), float) and not math.isnan(r[key]) else 0)
                                 if sort_by.get("desc") else (r.get(key) or 0)))
    x, y, w, h = box
    row_h = 0.24
    fits = max(1, int((h - 0.5 - row_h) // row_h))
    hidden = max(0, len(rows) - fits)
    if hidden:
        rows = rows[:fits - 1]
    total_rows = len(rows) + 1 + (1 if hidden else 0)
    ax = canvas.axes(x + 0.1, y + 0.38, w - 0.2, min(h - 0.45, total_rows * row_h))
    ax.axis("off")
    ax.set_xlim(0, w - 0.2)
    ax.set_ylim(total_rows * row_h, 0)
    numeric = {hd: any(isinstance(r.get(hd), float) for r in rows) for hd in headers}
    widths = []
    for hd in headers:
        cells = [hd] + [fmt_cell(panel, defaults, hd, r.get(hd)) for r in rows]
        widths.append(max(len(c) for c in cells) * 0.075 + 0.3)
    scale = (w - 0.2) / sum(widths)
    widths = [wd * scale for wd in widths]
    cx = 0.0
    ax.add_patch(Rectangle((0, 0), w - 0.2, row_h, color="#22252b", linewidth=0))
    for hd, wd in zip(headers, widths):
        ha, tx = ("right", cx + wd - 0.08) if numeric[hd] else ("left", cx + 0.08)
        ax.text(tx, row_h / 2, hd, color=TEXT, fontsize=8.5, fontweight="bold", ha=ha, va="center")
        cx += wd
    for i, row in enumerate(rows):
        cy = (i + 1) * row_h
        if i % 2:
            ax.add_patch(Rectangle((0, cy), w - 0.2, row_h, color="#1e2126", linewidth=0))
        cx = 0.0
        for hd, wd in zip(headers, widths):
            value = row.get(hd)
            props = column_props(panel, hd)
            text_color = TEXT
            if "thresholds" in props and isinstance(value, float) and not math.isnan(value):
                fill = threshold_color(value, props["thresholds"])
                if fill != NAMED_COLORS["transparent"]:
                    ax.add_patch(Rectangle((cx + 0.01, cy + 0.015), wd - 0.02, row_h - 0.03, color=fill,
                                           alpha=0.85, linewidth=0))
                    text_color = "#ffffff"
            ha, tx = ("right", cx + wd - 0.08) if numeric[hd] else ("left", cx + 0.08)
            ax.text(tx, cy + row_h / 2, fmt_cell(panel, defaults, hd, value), color=text_color, fontsize=8,
                    ha=ha, va="center", clip_on=True)
            cx += wd
    if hidden:
        ax.text(0.08, (len(rows) + 1.5) * row_h, f"… {hidden + 1} more rows (sorted by {sort_by.get('displayName')})",
                color=MUTED, fontsize=8, va="center")


def fmt_cell(panel: Mapping[str, Any], defaults: Mapping[str, Any], header: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    props = column_props(panel, header)
    return fmt(value, props.get("unit", defaults.get("unit", "short")), props.get("decimals", defaults.get("decimals")))


def draw_barchart(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
                  box: tuple[float, float, float, float]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    x_field = panel.get("options", {}).get("xField", "model")
    series = [s for target in panel["targets"] for s in renderer.instant_series(target) if s.finite()]
    if not series:
        no_data(canvas, panel, box)
        return
    series.sort(key=lambda s: -s.values[0])
    x, y, w, h = box
    ax = canvas.axes(x + 1.45, y + 0.45, w - 1.7, h - 0.85)
    style_axes(ax, unit, label="")
    ax.grid(True, axis="x", color=GRID)
    ax.grid(False, axis="y")
    names = [s.metric.get(x_field, s.name) for s in series]
    values = [s.values[0] for s in series]
    ax.barh(range(len(series)), values, color=CLASSIC[0], height=0.7)  # one value field: one colour, as Grafana
    ax.set_yticks(range(len(series)), names, fontsize=8, color=TEXT)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(axis_formatter(unit))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    for i, v in enumerate(values):
        ax.text(v, i, " " + fmt(v, unit, defaults.get("decimals")), color=TEXT, fontsize=7.5, va="center")
    ax.set_xlim(0, max(values) * 1.3)
    ax.set_xlabel(UNIT_AXIS.get(unit, unit), color=MUTED, fontsize=8.5)


def draw_heatmap(canvas: Canvas, renderer: Renderer, panel: Mapping[str, Any],
                 box: tuple[float, float, float, float]) -> None:
    import numpy as np

    defaults = panel["fieldConfig"]["defaults"]
    options = panel.get("options", {})
    unit = options.get("cellValues", {}).get("unit", defaults.get("unit", "short"))
    y_unit = options.get("yAxis", {}).get("unit", "short")
    series, step = renderer.range_series(panel, panel["targets"][0])
    if not series:
        no_data(canvas, panel, box)
        return
    series.sort(key=lambda s: float(s.metric.get("le", "inf")))
    times = sorted({t for s in series for t in s.times})
    index = {t: i for i, t in enumerate(times)}
    cumulative = np.full((len(series), len(times)), np.nan)
    for row, s in enumerate(series):
        for t, v in zip(s.times, s.values):
            cumulative[row, index[t]] = v
    counts = np.diff(np.nan_to_num(cumulative), axis=0, prepend=0)  # Prometheus buckets are cumulative
    counts[counts <= 1e-9] = np.nan  # options.filterValues: hide empty cells
    bounds = [s.metric.get("le", "") for s in series]
    used = [i for i in range(len(bounds)) if not np.all(np.isnan(counts[i]))]
    if not used:
        no_data(canvas, panel, box)
        return
    lo_row, hi_row = used[0], used[-1]
    counts = counts[lo_row:hi_row + 1]
    bounds = bounds[lo_row:hi_row + 1]
    x, y, w, h = box
    ax = canvas.axes(x + 0.95, y + 0.42, w - 0.95 - 1.0, h - 0.42 - 0.45)
    start = mdates.date2num(as_dates([times[0] - step])[0])
    end = mdates.date2num(as_dates([times[-1]])[0])
    scheme = options.get("color", {})
    # Grafana's "Oranges" scheme on a dark theme: dark for few requests, bright for many.
    cmap = LinearSegmentedColormap.from_list("grafana-oranges-dark", ["#3b1d08", "#a63f00", "#fa6400", "#ffb357",
                                                                      "#ffe8cc"])
    cmap.set_bad((0, 0, 0, 0))
    image = ax.imshow(counts, aspect="auto", origin="lower", interpolation="nearest", cmap=cmap,
                      norm=PowerNorm(gamma=float(scheme.get("exponent", 0.5))),
                      extent=(start, end, -0.5, len(bounds) - 0.5))
    style_axes(ax, "short", label="request duration (bucket upper bound)")
    ax.grid(False)
    labels = [fmt(float(b), y_unit).replace(".00 s", " s") if b not in ("+Inf", "inf") else "+Inf" for b in bounds]
    ax.set_yticks(range(len(bounds)), labels, fontsize=7.5)
    ax.xaxis_date(tz=dt.timezone.utc)
    time_axis(ax, renderer.window)
    bar_ax = canvas.axes(x + w - 0.85, y + 0.5, 0.12, h - 0.5 - 0.55)
    cbar = canvas.fig.colorbar(image, cax=bar_ax)
    cbar.ax.tick_params(colors=MUTED, labelsize=7, length=0)
    cbar.outline.set_visible(False)
    cbar.ax.yaxis.set_major_formatter(axis_formatter(unit))
    cbar.set_label(UNIT_AXIS.get(unit, unit), color=MUTED, fontsize=8)


DRAW = {"timeseries": draw_timeseries, "stat": draw_stat, "gauge": draw_gauge, "bargauge": draw_bargauge,
        "table": draw_table, "barchart": draw_barchart, "heatmap": draw_heatmap}


def render_dashboard(prom: Prometheus, dash: Mapping[str, Any], window: TimeRange, out: Path, note: str) -> int:
    panels = list(dash["panels"])
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    canvas = Canvas(height)
    renderer = Renderer(prom, dash, window)
    canvas.text(0.1, 0.38, dash["title"], color="#ffffff", fontsize=19, fontweight="bold", va="center")
    start = dt.datetime.fromtimestamp(window.start, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    end = dt.datetime.fromtimestamp(window.end, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    builtins = window.builtins()
    canvas.text(0.1, 0.78, f"{window.label}: {start} – {end}   ·   variables: All   ·   $__interval "
                f"{builtins['__interval']}, $__rate_interval {builtins['__rate_interval']}   ·   {note}",
                color=MUTED, fontsize=9.5, va="center")
    for panel in panels:
        box = panel_box(canvas, panel)
        if panel.get("type") == "row":
            x, y, w, h = box
            canvas.text(x + 0.02, y + h / 2, panel.get("title", ""), color=TEXT, fontsize=12.5, fontweight="bold",
                        va="center")
            continue
        draw_frame(canvas, panel, box)
        drawer = DRAW.get(panel.get("type", ""))
        if drawer is None:
            no_data(canvas, panel, box)
            continue
        try:
            drawer(canvas, renderer, panel, box)
        except Exception as exc:  # one broken panel must not hide the others; the PNG shows it
            canvas.text(box[0] + box[2] / 2, box[1] + box[3] / 2, f"error: {exc}"[:120], color=NAMED_COLORS["red"],
                        fontsize=9, ha="center", va="center")
            log(f"{dash['uid']}: panel {panel.get('title')!r} failed: {exc}")
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    canvas.fig.savefig(buffer, dpi=DPI, facecolor=BG, format="png")
    plt.close(canvas.fig)
    # 256 colours are plenty for flat panels and lines, and make the committed PNGs ~3x smaller.
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                       dither=Image.Dither.NONE)
    image.save(out, optimize=True)
    return renderer.queries


# ============================================================================================
# Main
# ============================================================================================

LIVE_DASHBOARDS = {"llm-exporter"}  # self-metrics (HTTP, scrapes, dedupe...) exist only while live


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, help="PNG directory (default: docs/snapshots for the simulated stack, "
                        "./snapshots with --prometheus-url, so your data never overwrites the docs' images)")
    parser.add_argument("--days", type=float, default=7, help="days rendered (history: one more) (%(default)s)")
    parser.add_argument("--rate", type=float, default=1.0, help="simulated events per second (%(default)s)")
    parser.add_argument("--live-seconds", type=float, default=120,
                        help="least live time before the exporter dashboard is drawn (%(default)s)")
    parser.add_argument("--workdir", type=Path, help="a new directory for the stack's files, kept afterwards "
                        "(default: a temporary directory, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--prometheus-url", help="render from this Prometheus instead of building a stack")
    parser.add_argument("--only", action="append", help="render only this dashboard uid (repeatable)")
    parser.add_argument("--scrape-interval", type=float, default=15,
                        help="with --prometheus-url: its scrape interval in seconds (%(default)s)")
    parser.add_argument("--history-step", type=float,
                        help="with --prometheus-url: seconds between samples of backfilled history (default: the "
                             "scrape interval; 300 for `tools/stack.sh --backfill`)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("snapshots") if args.prometheus_url else ROOT / "docs" / "snapshots"

    began = time.monotonic()
    dashboards = [d for d in load_dashboards() if not args.only or d["uid"] in args.only]
    with ExitStack() as cleanup:
        stack: Stack | None = None
        if args.prometheus_url:
            url, live_since = args.prometheus_url, time.time() - args.live_seconds
            live_scrape, history_scrape = args.scrape_interval, args.history_step or args.scrape_interval
        else:
            for tool in ("prometheus", "promtool"):
                if shutil.which(tool) is None:
                    print(f"snapshot: {tool} not found: apt-get install prometheus", file=sys.stderr)
                    return 1
            if args.workdir is not None:  # the caller's directory: must be new or empty, and is kept
                if args.workdir.exists() and any(args.workdir.iterdir()):
                    print(f"snapshot: {args.workdir} is not empty", file=sys.stderr)
                    return 1
                workdir = args.workdir
            else:
                workdir = Path(tempfile.mkdtemp(prefix="llm-snapshot-"))
                if not args.keep:
                    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
            stack = Stack(workdir, args.days, args.rate, sys.executable)
            cleanup.callback(stack.stop)
            stack.build()
            stack.wait_for_live_data()
            url, live_since, live_scrape, history_scrape = stack.prom_url, stack.live_since, LIVE_SCRAPE, HISTORY_STEP
        prom = Prometheus(url)
        total_queries = 0
        render_started = time.monotonic()
        for dash in sorted(dashboards, key=lambda d: d["uid"] in LIVE_DASHBOARDS):
            out = args.out / f"{dash['uid']}.png"
            if dash["uid"] in LIVE_DASHBOARDS:
                wait = live_since + args.live_seconds - time.time()
                if wait > 0:
                    log(f"waiting {wait:.0f}s so the live window holds {args.live_seconds:g}s of scrapes ...")
                    time.sleep(wait)
                end = time.time()
                window = TimeRange(live_since, end, live_scrape,
                                   f"live, last {round((end - live_since) / 60)} minutes")
                note = "self-metrics are not backfilled: live scrapes only"
            else:
                end = time.time()
                window = TimeRange(end - args.days * 86400, end, history_scrape, f"last {args.days:g} days")
                note = "simulated fleet (scenario default), backfilled history + live exporter"
            if args.prometheus_url:  # the user's own data: say where it came from, claim nothing more
                note = f"from {args.prometheus_url}"
            started = time.monotonic()
            queries = render_dashboard(prom, dash, window, out, note)
            total_queries += queries
            log(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
                f"({queries} queries, {time.monotonic() - started:.1f}s)")
        if stack is not None:
            stack.timings["render"] = time.monotonic() - render_started
            log("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in stack.timings.items())
                + f"; total {time.monotonic() - began:.0f}s")
            if args.keep or args.workdir is not None:
                log(f"kept {stack.workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
