"""Builders shared by the unit tests: a fresh exporter per test, and event dicts."""

from __future__ import annotations

import itertools
import time
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.server.app import Exporter, build_exporter
from exporter.config import load_config

_ids = itertools.count()


def make_exporter(tmp_path=None, **settings: Any) -> Exporter:
    """An exporter on a fresh registry; ``settings`` use option names with underscores for dots/dashes,
    e.g. ``limits_max_customers_per_tenant=2``; YAML-only keys go in ``yaml``."""
    yaml_data = settings.pop("yaml", {})
    flags = {"storage.path": str(tmp_path / "state.db") if tmp_path else ":memory:",
             "web.listen-address": "127.0.0.1:9477"}
    for key, value in settings.items():
        section, _, rest = key.partition("_")
        flags[f"{section}.{rest.replace('_', '-')}"] = value
    exporter = build_exporter(load_config(flags, {}, yaml_data), CollectorRegistry(auto_describe=False))
    exporter.aggregator.load()
    return exporter


def ev(**overrides: Any) -> dict[str, Any]:
    event = {"id": f"e{next(_ids)}", "timestamp": time.time() - 5, "tenant": "acme", "customer": "c1",
             "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500, "duration_ms": 1200, "status": "ok"}
    event.update(overrides)
    return event


def sample(exporter: Exporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)
