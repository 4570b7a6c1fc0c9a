"""Traffic shapes for the benchmarks: how many label sets a batch touches decides what ingest costs.

The simulator's scenarios are shaped for dashboards (Zipf customers, a handful of label sets per
batch); per-label-set costs hide there. A :class:`Shape` is a few numbers a user can set from the
command line (``--shape 'tenants=3,customers=2000,models=8,dist=zipf'``) so anyone can run their
own held-out traffic against both servers. Every event carries what a real client sends: tokens
(some cached), duration, TTFT, a priced model, and errors at ``error_rate``.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from dataclasses import dataclass, fields, replace
from itertools import accumulate
from typing import Any

import orjson

# Priced chat models from the shipped price table, with their providers: the cost is computed by
# the exporter (the work the shape measures), never sent by the client unless cost_usd=1.
MODELS = (("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("claude-sonnet-4", "anthropic"),
          ("gemini-2.5-flash", "gcp.gemini"), ("gpt-4.1", "openai"), ("claude-haiku-4-5", "anthropic"),
          ("gpt-5-mini", "openai"), ("gemini-2.5-pro", "gcp.gemini"), ("deepseek-chat", "deepseek"),
          ("gpt-4.1-mini", "openai"), ("claude-opus-4-5", "anthropic"), ("o4-mini", "openai"))
ERROR_TYPES = ("timeout", "rate_limited", "server_error")
# A fixed-width run marker inside every id, swapped per run with bytes.replace: one pool of bodies
# serves every run and both servers without any id ever repeating on one server.
_MARK = b"RUN0000"


@dataclass(frozen=True)
class Shape:
    """``tenants`` × ``customers`` (per tenant) × ``models`` label sets, drawn uniformly or Zipf."""

    name: str = "uniform"
    tenants: int = 7
    customers: int = 100
    models: int = 4
    dist: str = "uniform"  # uniform | zipf (customers ranked, weight 1/rank^s)
    s: float = 1.1
    error_rate: float = 0.02
    cache_share: float = 0.3  # events that read from the prompt cache
    cost_usd: int = 0  # 1: events carry their own cost_usd (no price lookup)
    seed: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shape":
        """``[name:]key=value,...``; unknown keys are refused with the list of known ones."""
        name, _, spec = text.partition(":") if ":" in text.split("=", 1)[0] else ("", "", text)
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, _, value = item.partition("=")
            if key not in types or key == "name":
                raise ValueError(f"shape key {key!r}; known: {', '.join(k for k in types if k != 'name')}")
            values[key] = {"int": int, "float": float}.get(str(types[key]), str)(value)
        shape = replace(cls(), **values)
        if shape.dist not in ("uniform", "zipf"):
            raise ValueError("dist must be uniform or zipf")
        if not 1 <= shape.models <= len(MODELS):
            raise ValueError(f"models must be 1-{len(MODELS)}")
        return replace(shape, name=name or f"{shape.dist} {shape.tenants}x{shape.customers}x{shape.models}")

    @property
    def label_sets(self) -> int:
        return self.tenants * self.customers * self.models

    def describe(self) -> str:
        dist = f"zipf s={self.s:g}" if self.dist == "zipf" else "uniform"
        return (f"{self.tenants} tenants x {self.customers} customers x {self.models} models = "
                f"{self.label_sets:,} label sets, {dist}")


UNIFORM = Shape()
ZIPF = Shape(name="zipf 7x100x4", dist="zipf")


class Generator:
    """Seeded events of one shape, as dicts or as pre-serialised JSON bodies."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.counter = 0
        self.tenants = [f"tenant-{t}" for t in range(shape.tenants)]
        self.customers = [f"cust-{c:04d}" for c in range(shape.customers)]
        self.models = MODELS[:shape.models]
        self.cum = list(accumulate(1.0 / (rank ** shape.s) for rank in range(1, shape.customers + 1)))

    def _customer(self) -> str:
        if self.shape.dist == "uniform":
            return self.customers[self.rng.randrange(len(self.customers))]
        return self.customers[bisect_left(self.cum, self.rng.random() * self.cum[-1])]

    def event(self, now: float) -> dict[str, Any]:
        rng, shape = self.rng, self.shape
        model, provider = self.models[rng.randrange(len(self.models))]
        input_tokens = int(rng.lognormvariate(6.5, 0.8)) + 1
        output_tokens = int(rng.lognormvariate(5.0, 0.6)) + 1
        ttft = rng.uniform(150, 900)
        duration = ttft + output_tokens * rng.uniform(8, 25)
        self.counter += 1
        event: dict[str, Any] = {
            "id": f"{_MARK.decode()}-{self.counter}", "timestamp": now, "tenant": self.tenants[rng.randrange(shape.tenants)],
            "customer": self._customer(), "model": model, "provider": provider, "operation": "chat",
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "duration_ms": round(duration, 3), "ttft_ms": round(ttft, 3), "status": "ok",
        }
        if rng.random() < shape.cache_share:
            event["cache_read_tokens"] = input_tokens // 2
        if rng.random() < shape.error_rate:
            event["status"] = "error"
            event["error_type"] = ERROR_TYPES[rng.randrange(len(ERROR_TYPES))]
        if shape.cost_usd:
            event["cost_usd"] = round((input_tokens * 2.5 + output_tokens * 10) / 1e6, 9)
        return event

    def events(self, count: int, now: float) -> list[dict[str, Any]]:
        return [self.event(now) for _ in range(count)]

    def bodies(self, count: int, batch: int, now: float) -> list[bytes]:
        """``count`` ``{"events": [...]}`` bodies of ``batch`` events; ids carry the run marker."""
        return [orjson.dumps({"events": self.events(batch, now)}) for _ in range(count)]


def for_run(bodies: list[bytes], run: int) -> list[bytes]:
    """The same bodies with ids unique to ``run`` (0-9999), so a server never sees an id twice."""
    mark = b"RUN%04d" % run
    return [body.replace(b'"id":"' + _MARK, b'"id":"' + mark) for body in bodies]
