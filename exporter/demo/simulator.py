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
# NormalDist.inv_cdf's kernel (C-accelerated in CPython; a pure-Python fallback of the same name
# elsewhere): a normal by inversion in one call, ~2.5x cheaper than random.gauss.
from statistics import _normal_dist_inv_cdf
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
            customer_weights=tuple(1.0 / (i ** s) for i in range(1, count + 1)),  # Zipf: a few whales
            models=tuple(spec["models"]), model_weights=tuple(float(w) for w in spec["models"].values()),
        ))
    return Scenario(name=name, tenants=tuple(tenants), models=models,
                    **{key: float(doc[key]) for key in _SCALARS if key in doc})


_LEDGER_OPTIONAL_TOKENS = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
_LEDGER_TOKENS = ("input_tokens", "output_tokens", *_LEDGER_OPTIONAL_TOKENS)


@dataclass
class Ledger:
    """What the simulator generated: the ground truth accuracy tests compare Prometheus against.

    It is computed from the event dicts themselves (not from the generator's intermediate values),
    so it is exactly what a client would have sent."""

    totals: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)
    events: int = 0

    def record_all(self, events: list[dict[str, Any]]) -> None:
        """Add a batch of generated events (one call per batch: the generator's hot loop stays free of it)."""
        totals, durations = self.totals, self.durations
        for event in events:
            key = (event["tenant"], event["customer"], event["model"])
            row = totals.get(key)
            if row is None:
                row = totals[key] = {"requests": 0, "errors": 0, **dict.fromkeys(_LEDGER_TOKENS, 0)}
            row["requests"] += 1
            if event["status"] == "error":
                row["errors"] += 1
            row["input_tokens"] += event["input_tokens"]
            row["output_tokens"] += event["output_tokens"]
            for name in _LEDGER_OPTIONAL_TOKENS:  # present only when non-zero
                if name in event:
                    row[name] += event[name]
            seconds = durations.get(event["model"])
            if seconds is None:
                seconds = durations[event["model"]] = []
            seconds.append(event["duration_ms"] / 1000.0)
        self.events += len(events)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events,
                "totals": [{"tenant": t, "customer": c, "model": mo, **row} for (t, c, mo), row in self.totals.items()],
                "durations": self.durations}


_ERROR_NAMES = tuple(name for name, _ in ERROR_TYPES_BACKGROUND)
_ERROR_CUM_WEIGHTS = tuple(accumulate(weight for _, weight in ERROR_TYPES_BACKGROUND))
_ERROR_MESSAGES = {name: f"simulated {name.replace('_', ' ')}"
                   for name in (*_ERROR_NAMES, "rate_limited", "server_error", "timeout")}


def _mix(scenario: Scenario) -> tuple[list[tuple[Any, ...]], list[float]]:
    """Every (tenant, customer, model) with its joint probability P(tenant)·P(customer|tenant)·P(model|tenant),
    as cumulative weights: one ``choices(k=n)`` then draws a whole window's label sets, and each entry
    carries its model's constants precomputed (log-medians, shares), so the per-event loop only draws
    the random numbers. The fields are unpacked in :meth:`Simulator._generate`."""
    entries: list[tuple[Any, ...]] = []
    weights: list[float] = []
    tenant_total = sum(t.weight for t in scenario.tenants)
    for tenant in scenario.tenants:
        customer_total, model_total = sum(tenant.customer_weights), sum(tenant.model_weights)
        for model_name, model_weight in zip(tenant.models, tenant.model_weights):
            m = scenario.models[model_name]
            constants = (
                m.name, m.operation, m.operation == "chat",
                math.log(max(m.input, 1.0)) if m.input > 0 else None, m.sigma,
                math.log(max(m.output, 1.0)) if m.output > 0 else None, m.output_sigma,
                m.cache_share, m.cache_write_share, m.reasoning_share, m.ttft_ms, m.tpot_ms, m.base_ms, m.error_rate)
            for customer, customer_weight in zip(tenant.customers, tenant.customer_weights):
                entries.append((tenant.name, customer, *constants))
                weights.append(tenant.weight / tenant_total * customer_weight / customer_total
                               * model_weight / model_total)
    return entries, list(accumulate(weights))


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
        self._mix, self._mix_cum_weights = _mix(scenario)
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

    def _episodes(self, lo: float, hi: float) -> tuple[list[tuple[float, float]], list[tuple[float, float, str]]]:
        """Bursts (start, end) and incidents (start, end, model) that may be active at a time in [lo, hi].

        A slot's episode is seen during its own hour and the next one only (its end is cut at the end
        of the next hour); incidents come newest slot first: when two overlap, the newer one's model
        is the degraded one."""
        bursts, incidents = [], []
        for hour in range(int(hi // 3600), int(lo // 3600) - 2, -1):
            b0, b1, i0, i1, model = self._slot(hour)
            horizon = (hour + 2) * 3600
            if b0 <= hi and min(b1, horizon) > lo:
                bursts.append((b0, min(b1, horizon)))
            if i0 <= hi and min(i1, horizon) > lo:
                incidents.append((i0, min(i1, horizon), model))
        return bursts, incidents

    def intensity(self, t: float) -> float:
        """Relative traffic at Unix time t: daily sine, weekly dip, bursts."""
        s = self.scenario
        hour_of_day = (t % 86400) / 3600
        daily = 1 + s.diurnal_amplitude * math.cos((hour_of_day - s.peak_hour_utc) / 24 * 2 * math.pi)
        weekday = time.gmtime(t).tm_wday
        weekly = s.weekend_factor if weekday >= 5 else 1.0
        bursting = any(b0 <= t < b1 for b0, b1 in self._episodes(t, t)[0])
        return daily * weekly * (s.burst_multiplier if bursting else 1.0)

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

    def events_between(self, start: float, end: float, stamp: float | None = None) -> list[dict[str, Any]]:
        """Events for the simulated window [start, end), in time order. Timestamps are simulated time,
        or ``stamp`` (the real clock) in live mode where the simulated clock only shapes the traffic."""
        random_ = self.rng.random
        events: list[dict[str, Any]] = []
        step = 60.0
        t = start
        while t < end:
            width = min(step, end - t)
            count = self._poisson(self.rate * self.intensity(t) * width)
            if count:
                times = [t + random_() * width for _ in range(count)]
                times.sort()  # windows follow each other, so the whole list is in time order
                events += self._generate(times, stamp)
            t += width
        return events

    def events_at(self, t: float, count: int, stamp: float | None = None) -> list[dict[str, Any]]:
        """``count`` events at simulated time ``t`` (the load generator's batches)."""
        return self._generate([t] * count, stamp)

    def _generate(self, times: list[float], stamp: float | None) -> list[dict[str, Any]]:
        """One event per simulated time in ``times`` (sorted), stamped with it or with ``stamp``.

        The hot loop: label sets come from one bulk draw; bursts and incidents are looked up only when
        one overlaps the batch; a log-normal is ``exp(inv_cdf(u, mu, sigma))`` (the normal by inversion,
        one C call instead of ``random.gauss``; ``u = random() or 0.5`` as the inverse CDF is defined on
        (0, 1) only); a draw whose value would be multiplied by zero is skipped."""
        if not times:
            return []
        s, rng = self.scenario, self.rng
        random_, randint, exp, normal = rng.random, rng.randint, math.exp, _normal_dist_inv_cdf
        bursts, incidents = self._episodes(times[0], times[-1])
        agent_share, agent_failure = s.agent_share, 1 - s.agent_success_rate
        incident_error_rate, incident_factor = s.incident_error_rate, s.incident_latency_factor
        prefix, counter = f"sim-{self.run_id}-", self.counter
        events: list[dict[str, Any]] = []
        append = events.append

        def lognormal_sum(calls: int, mu: float, sigma: float) -> int:
            """Tokens of ``calls`` model calls (1 for a plain request), each a whole log-normal draw."""
            if calls == 1:
                return int(exp(normal(random_() or 0.5, mu, sigma)))
            return sum(int(exp(normal(random_() or 0.5, mu, sigma))) for _ in range(calls))

        mixes = rng.choices(self._mix, cum_weights=self._mix_cum_weights, k=len(times))
        for at, (tenant, customer, model, operation, chat, mu_in, sigma_in, mu_out, sigma_out, cache_share,
                 cache_write_share, reasoning_share, ttft_base, tpot_ms, base_ms, error_rate) in zip(times, mixes):
            burst = False
            if bursts:
                for b0, b1 in bursts:
                    if b0 <= at < b1:
                        burst = True
                        break
            incident = False
            if incidents:
                for i0, i1, degraded in incidents:
                    if i0 <= at < i1:
                        incident = degraded == model
                        break
            agent = chat and random_() < agent_share
            calls = randint(2, 12) if agent else 1
            input_tokens = 0 if mu_in is None else lognormal_sum(calls, mu_in, sigma_in)
            output_tokens = 0 if mu_out is None else lognormal_sum(calls, mu_out, sigma_out)
            cache_read = int(input_tokens * cache_share * (0.5 + random_())) if cache_share else 0
            cache_write = int(input_tokens * cache_write_share * (0.5 + random_())) if cache_write_share else 0
            if cache_read > input_tokens - cache_write:
                cache_read = input_tokens - cache_write
            reasoning = int(output_tokens * reasoning_share * (0.6 + 0.6 * random_())) if reasoning_share else 0
            if reasoning > output_tokens:
                reasoning = output_tokens
            slow = incident_factor if incident else 1.0
            ttft_ms = ttft_base * exp(normal(random_() or 0.5, 0.0, 0.35)) * slow if ttft_base else None
            gen_ms = 0.0
            if tpot_ms and output_tokens:
                gen_ms = output_tokens / calls * tpot_ms * exp(normal(random_() or 0.5, 0.0, 0.2)) * slow
            duration_ms = (ttft_ms or 0) + gen_ms
            if base_ms:
                duration_ms += base_ms * exp(normal(random_() or 0.5, 0.0, 0.3))
            if agent:
                duration_ms *= calls + calls * random_()

            rate = incident_error_rate if incident else error_rate
            if burst:
                rate += 0.04
            if agent and rate < agent_failure:
                rate = agent_failure
            status, error_type = "ok", None
            if random_() < rate:
                status = "error"
                if burst and random_() < 0.6:
                    error_type = "rate_limited"
                elif incident:
                    error_type = "server_error" if random_() < 0.6 else "timeout"
                else:
                    error_type = rng.choices(_ERROR_NAMES, cum_weights=_ERROR_CUM_WEIGHTS)[0]
                if error_type == "timeout":
                    duration_ms = max(duration_ms, 30_000 * (1.0 + random_()))
                elif not agent:  # a failed call returns early and produces little output
                    output_tokens, reasoning = output_tokens // 10, reasoning // 10
                    duration_ms = (ttft_ms or 0) + output_tokens * tpot_ms + base_ms
            if ttft_ms is not None and ttft_ms > duration_ms:
                ttft_ms = duration_ms
            counter += 1
            # round(x * 1000) / 1000: 3 decimals, as round(x, 3) gives, at a fifth of its cost.
            event: dict[str, Any] = {
                "id": f"{prefix}{counter}", "timestamp": at if stamp is None else stamp, "tenant": tenant,
                "customer": customer, "model": model, "operation": "agent_run" if agent else operation,
                "input_tokens": input_tokens, "output_tokens": output_tokens,
                "duration_ms": round(duration_ms * 1000) / 1000, "status": status,
            }
            if cache_read:
                event["cache_read_tokens"] = cache_read
            if cache_write:
                event["cache_write_tokens"] = cache_write
            if reasoning:
                event["reasoning_tokens"] = reasoning
            if ttft_ms is not None and not agent:
                event["ttft_ms"] = round(ttft_ms * 1000) / 1000
            if error_type:
                event["error_type"] = error_type
                event["error_message"] = _ERROR_MESSAGES[error_type]
            if agent:
                event["llm_calls"] = calls
                event["tool_calls"] = randint(0, calls * 2)
            append(event)
        self.counter = counter
        if self.ledger is not None:
            self.ledger.record_all(events)
        return events


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
