"""A seeded fleet simulator: tenants, customers, models, daily cycles, bursts, incidents, agent runs.

It produces the same raw event dicts a client would POST and feeds them to the one ingest function,
so the whole stack (rules, alerts, dashboards) runs with no data source. Bursts and incidents are
drawn per hour slot from ``(seed, slot)``, so the same seed gives the same fleet whatever the
chunking of time; the :class:`Ledger` records exactly what was generated, as ground truth.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from itertools import accumulate
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

log = logging.getLogger("exporter.demo.simulator")

ERROR_TYPES_BACKGROUND = (("server_error", 0.35), ("timeout", 0.25), ("invalid_request", 0.2),
                          ("content_filter", 0.1), ("rate_limited", 0.1))


@dataclass(frozen=True)
class ModelProfile:
    name: str
    input: float
    output: float
    sigma: float
    ttft_ms: float
    tpot_ms: float
    output_sigma: float = 0.6  # answers vary less than prompts; keeps chat p95 under the 30 s alert
    cache_share: float = 0.0
    cache_write_share: float = 0.0
    reasoning_share: float = 0.0
    error_rate: float = 0.01
    operation: str = "chat"
    base_ms: float = 0.0


@dataclass(frozen=True)
class TenantProfile:
    name: str
    weight: float
    customers: tuple[str, ...]
    customer_weights: tuple[float, ...]
    models: tuple[str, ...]
    model_weights: tuple[float, ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    tenants: tuple[TenantProfile, ...]
    models: Mapping[str, ModelProfile]
    base_rate: float = 1.0
    diurnal_amplitude: float = 0.5
    peak_hour_utc: float = 15
    weekend_factor: float = 0.5
    bursts_per_day: float = 4
    burst_minutes: float = 8
    burst_multiplier: float = 3.0
    incidents_per_day: float = 1
    incident_minutes: float = 20
    incident_error_rate: float = 0.3
    incident_latency_factor: float = 2.0
    agent_share: float = 0.05
    agent_success_rate: float = 0.85


_SCALARS = {"base_rate", "diurnal_amplitude", "peak_hour_utc", "weekend_factor", "bursts_per_day", "burst_minutes",
            "burst_multiplier", "incidents_per_day", "incident_minutes", "incident_error_rate",
            "incident_latency_factor", "agent_share", "agent_success_rate"}


def _read_scenario_document(name: str) -> dict[str, Any]:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        resource = resources.files("exporter").joinpath(f"demo/scenarios/{name}.yaml")
        if not resource.is_file():
            available = sorted(p.name[:-5] for p in resources.files("exporter").joinpath("demo/scenarios").iterdir()
                               if p.name.endswith(".yaml"))
            raise ValueError(f"unknown scenario {name!r}; available: {', '.join(available)} or a path to a YAML file")
        text = resource.read_text(encoding="utf-8")
    document = yaml.safe_load(text) or {}
    parent = document.pop("extends", None)
    if parent:
        merged = _read_scenario_document(parent)
        merged.update(document)
        return merged
    return document


def load_scenario(name: str) -> Scenario:
    """A shipped scenario by name (``default``, ``steady``, ``incident``, ``agent-heavy``) or a YAML path."""
    doc = _read_scenario_document(name)
    unknown = set(doc) - _SCALARS - {"tenants", "models"}
    if unknown:
        raise ValueError(f"scenario {name}: unknown keys {sorted(unknown)}")
    models = {model: ModelProfile(name=model, **spec) for model, spec in doc["models"].items()}
    tenants = []
    for tenant, spec in doc["tenants"].items():
        count, s = int(spec["customers"]), float(spec.get("zipf", 1.0))
        missing = set(spec["models"]) - set(models)
        if missing:
            raise ValueError(f"scenario {name}: tenant {tenant} uses models without a profile: {sorted(missing)}")
        tenants.append(TenantProfile(
            name=tenant, weight=float(spec["weight"]),
            customers=tuple(f"{tenant}-cust-{i:03d}" for i in range(1, count + 1)),
            # Cumulative weights (random.choices would re-add them on every draw). Zipf: a few whales.
            customer_weights=tuple(accumulate(1.0 / (i ** s) for i in range(1, count + 1))),
            models=tuple(spec["models"]), model_weights=tuple(accumulate(float(w) for w in spec["models"].values())),
        ))
    return Scenario(name=name, tenants=tuple(tenants), models=models,
                    **{key: float(doc[key]) for key in _SCALARS if key in doc})


@dataclass
class Ledger:
    """What the simulator generated: the ground truth accuracy tests compare Prometheus against."""

    totals: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)
    events: int = 0

    def record(self, event: Mapping[str, Any]) -> None:
        key = (event["tenant"], event["customer"], event["model"])
        row = self.totals.get(key)
        if row is None:
            row = self.totals[key] = {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0,
                                      "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
        row["requests"] += 1
        row["errors"] += event["status"] == "error"
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
            row[name] += event.get(name, 0)
        self.durations.setdefault(event["model"], []).append(event["duration_ms"] / 1000.0)
        self.events += 1

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events,
                "totals": [{"tenant": t, "customer": c, "model": mo, **row} for (t, c, mo), row in self.totals.items()],
                "durations": self.durations}


class Simulator:
    """Generates events for any time window; ``rate`` is events per second at the cycle's mean."""

    def __init__(self, scenario: Scenario, seed: int, rate: float, run_id: str = "", ledger: Ledger | None = None):
        self.scenario = scenario
        self.seed = seed
        self.rate = rate * scenario.base_rate
        self.rng = random.Random(seed)
        self.run_id = run_id or str(seed)
        self.ledger = ledger
        self.counter = 0
        self._tenant_weights = list(accumulate(t.weight for t in scenario.tenants))
        self._slots: dict[int, tuple[float, float, float, float, str]] = {}

    # --- shape of traffic over time -------------------------------------------------------------
    def _slot(self, hour: int) -> tuple[float, float, float, float, str]:
        """(burst start, burst end, incident start, incident end, incident model) within an hour slot."""
        cached = self._slots.get(hour)
        if cached is None:
            s, rng = self.scenario, random.Random(f"{self.seed}:{hour}")
            burst = rng.random() < s.bursts_per_day / 24
            incident = rng.random() < s.incidents_per_day / 24
            b0 = hour * 3600 + rng.uniform(0, 3600) if burst else -1.0
            i0 = hour * 3600 + rng.uniform(0, 3600) if incident else -1.0
            model = rng.choice(sorted(s.models))
            cached = (b0, b0 + s.burst_minutes * 60, i0, i0 + s.incident_minutes * 60, model)
            if len(self._slots) > 10_000:
                self._slots.clear()
            self._slots[hour] = cached
        return cached

    def _active(self, t: float, which: int) -> str | None:
        """The incident model (which=2) or "burst" (which=0) active at time t, looking back one slot."""
        hour = int(t // 3600)
        for slot in (hour, hour - 1):
            info = self._slot(slot)
            if info[which] <= t < info[which + 1]:
                return info[4] if which == 2 else "burst"
        return None

    def intensity(self, t: float) -> float:
        """Relative traffic at Unix time t: daily sine, weekly dip, bursts."""
        s = self.scenario
        hour_of_day = (t % 86400) / 3600
        daily = 1 + s.diurnal_amplitude * math.cos((hour_of_day - s.peak_hour_utc) / 24 * 2 * math.pi)
        weekday = time.gmtime(t).tm_wday
        weekly = s.weekend_factor if weekday >= 5 else 1.0
        burst = s.burst_multiplier if self._active(t, 0) else 1.0
        return daily * weekly * burst

    # --- events ---------------------------------------------------------------------------------
    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 50:
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        threshold, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= threshold:
                return k
            k += 1

    def _lognormal(self, median: float, sigma: float) -> int:
        """Log-normal around ``median`` (gauss is the fastest normal draw in ``random``)."""
        return int(math.exp(self.rng.gauss(math.log(max(median, 1.0)), sigma))) if median > 0 else 0

    def events_between(self, start: float, end: float, stamp: float | None = None) -> list[dict[str, Any]]:
        """Events for the simulated window [start, end). Timestamps are simulated time, or ``stamp``
        (the real clock) in live mode where the simulated clock only shapes the traffic."""
        events: list[dict[str, Any]] = []
        step = 60.0
        t = start
        while t < end:
            width = min(step, end - t)
            count = self._poisson(self.rate * self.intensity(t) * width)
            for _ in range(count):
                at = t + self.rng.random() * width
                events.append(self.event(at, at if stamp is None else stamp))
            t += width
        events.sort(key=lambda e: e["timestamp"])
        return events

    def event(self, sim_t: float, stamp: float) -> dict[str, Any]:
        s, rng = self.scenario, self.rng
        tenant = rng.choices(s.tenants, cum_weights=self._tenant_weights)[0]
        customer = rng.choices(tenant.customers, cum_weights=tenant.customer_weights)[0]
        model = s.models[rng.choices(tenant.models, cum_weights=tenant.model_weights)[0]]
        incident = self._active(sim_t, 2) == model.name
        burst = self._active(sim_t, 0) is not None
        agent = model.operation == "chat" and rng.random() < s.agent_share
        calls = rng.randint(2, 12) if agent else 1
        input_tokens = sum(self._lognormal(model.input, model.sigma) for _ in range(calls))
        output_tokens = sum(self._lognormal(model.output, model.output_sigma) for _ in range(calls))
        cache_read = int(input_tokens * model.cache_share * rng.uniform(0.5, 1.5)) if model.cache_share else 0
        cache_write = int(input_tokens * model.cache_write_share * rng.uniform(0.5, 1.5)) if model.cache_write_share else 0
        cache_read = min(cache_read, input_tokens - cache_write)
        reasoning = int(output_tokens * model.reasoning_share * rng.uniform(0.6, 1.2)) if model.reasoning_share else 0
        reasoning = min(reasoning, output_tokens)
        slow = s.incident_latency_factor if incident else 1.0
        ttft_ms = model.ttft_ms * rng.lognormvariate(0, 0.35) * slow if model.ttft_ms else None
        gen_ms = (output_tokens / calls) * model.tpot_ms * rng.lognormvariate(0, 0.2) * slow
        duration_ms = (model.base_ms * rng.lognormvariate(0, 0.3) + (ttft_ms or 0) + gen_ms) * (
            calls + rng.uniform(0, calls) if agent else 1)

        error_rate = s.incident_error_rate if incident else model.error_rate
        if burst:
            error_rate += 0.04
        if agent:
            error_rate = max(error_rate, 1 - s.agent_success_rate)
        status, error_type = "ok", None
        if rng.random() < error_rate:
            status = "error"
            if burst and rng.random() < 0.6:
                error_type = "rate_limited"
            elif incident:
                error_type = "server_error" if rng.random() < 0.6 else "timeout"
            else:
                error_type = rng.choices([e for e, _ in ERROR_TYPES_BACKGROUND],
                                         [w for _, w in ERROR_TYPES_BACKGROUND])[0]
            if error_type == "timeout":
                duration_ms = max(duration_ms, 30_000 * rng.uniform(1.0, 2.0))
            elif not agent:  # a failed call returns early and produces little output
                output_tokens, reasoning = output_tokens // 10, reasoning // 10
                duration_ms = (ttft_ms or 0) + output_tokens * model.tpot_ms + model.base_ms
        if ttft_ms is not None and ttft_ms > duration_ms:
            ttft_ms = duration_ms
        self.counter += 1
        event: dict[str, Any] = {
            "id": f"sim-{self.run_id}-{self.counter}", "timestamp": stamp, "tenant": tenant.name,
            "customer": customer, "model": model.name,
            "operation": "agent_run" if agent else model.operation,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "duration_ms": round(duration_ms, 3), "status": status,
        }
        if cache_read:
            event["cache_read_tokens"] = cache_read
        if cache_write:
            event["cache_write_tokens"] = cache_write
        if reasoning:
            event["reasoning_tokens"] = reasoning
        if ttft_ms is not None and not agent:
            event["ttft_ms"] = round(ttft_ms, 3)
        if error_type:
            event["error_type"] = error_type
            event["error_message"] = f"simulated {error_type.replace('_', ' ')}"
        if agent:
            event["llm_calls"] = calls
            event["tool_calls"] = rng.randint(0, calls * 2)
        if self.ledger is not None:
            self.ledger.record(event)
        return event


async def run_live_simulator(aggregator: Any, config: Any, tick: float = 0.5) -> None:
    """Feed the live exporter: real timestamps; the simulated clock runs ``speed`` times faster and
    only shapes the traffic (daily cycle, bursts, incidents)."""
    scenario = load_scenario(config.simulator_scenario)
    sim = Simulator(scenario, config.simulator_seed, config.simulator_rate, run_id=f"{int(time.time() * 1000):x}")
    real_start = time.time()
    last = real_start
    log.info("simulator: scenario %s, %.1f events/s, speed x%g", scenario.name, sim.rate, config.simulator_speed)
    while True:
        await asyncio.sleep(tick)
        now = time.time()
        sim_start = real_start + (last - real_start) * config.simulator_speed
        sim_end = real_start + (now - real_start) * config.simulator_speed
        # Scale the rate so real-time events/s stay at --simulator.rate whatever the speed.
        sim.rate = config.simulator_rate * scenario.base_rate / config.simulator_speed
        events = sim.events_between(sim_start, sim_end, stamp=now)
        last = now
        if events:
            try:
                aggregator.ingest(events, "simulator", now)
            except Exception:  # the store may be down; the simulator keeps going, like a client would retry
                log.exception("simulator: ingest failed")
