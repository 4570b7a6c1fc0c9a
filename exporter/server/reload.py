"""Reload without restart: SIGHUP and ``POST /-/reload`` re-read tokens, prices, budgets and limits.

A reload loads everything first (the YAML file, token files and variables, the price table) and
applies nothing unless all of it loaded, so a bad file leaves the running configuration whole and
says why (log line, ``llm_exporter_config_last_reload_successful`` 0). Applying is a few reference
swaps done on the event loop, between two steps of any request in flight: a request authenticated
before the swap is counted as it would have been a moment earlier, and events counted after the
swap (possibly the rest of a large batch in flight) use the new prices, caps and tenants. Nothing
is half-applied: there is no moment with new tokens and old budgets. Settings that shape state built at start
(listen address, storage, dedupe window, ingest window, simulator) need a restart: a reload that
changes them keeps the running values and logs which ones differ.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..config import OPTIONS, Config, ConfigError
from ..core.pricing import PriceBook, PricingError
from ..core.ratelimit import TenantRateLimits
from .http import TokenAuth

if TYPE_CHECKING:
    from .app import Exporter

log = logging.getLogger("exporter.reload")

# Options a reload applies; every other option keeps its start-up value until a restart.
RELOADABLE = frozenset({"auth.mode", "pricing.file", "limits.max-tenants", "limits.max-customers-per-tenant",
                        "limits.max-combinations-per-tenant", "limits.max-unknown-models",
                        "limits.max-label-length"})
Loader = Callable[[], tuple[Config, PriceBook]]


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    error: str = ""
    restart_needed: tuple[str, ...] = ()  # changed options a reload does not apply


class Reloader:
    """Re-runs the start-up loader (flags, ``LLM_EXPORTER_*``, the YAML file, token sources, price
    table) and swaps the result into a running :class:`Exporter`."""

    def __init__(self, exporter: Exporter, load: Loader) -> None:
        self.exporter = exporter
        self.load = load

    def reload(self) -> ReloadResult:
        ex = self.exporter
        try:
            loaded, prices = self.load()
        except (ConfigError, PricingError) as exc:
            message = str(exc)
            log.error("reload failed, the running configuration stays in force: %s", message)
            ex.telemetry.config_loaded(ok=False)
            return ReloadResult(False, message)
        running = ex.config
        keep = {o.attr: getattr(running, o.attr) for o in OPTIONS if o.name not in RELOADABLE}
        restart_needed = tuple(o.name for o in OPTIONS
                               if o.name not in RELOADABLE and getattr(loaded, o.attr) != getattr(running, o.attr))
        config = dataclasses.replace(loaded, **keep)
        self._apply(config, prices)
        ex.telemetry.config_loaded(ok=True)
        if restart_needed:
            log.warning("reloaded; these settings changed but take effect only after a restart: %s",
                        ", ".join(restart_needed))
        log.info("configuration reloaded: %d tenant(s), auth %s", len(config.tenants),
                 "required" if config.auth_required else "off")
        return ReloadResult(True, restart_needed=restart_needed)

    def _apply(self, config: Config, prices: PriceBook) -> None:
        """Everything that read the configuration at start, rebuilt from ``config`` (no await in here)."""
        ex = self.exporter
        auth = TokenAuth(config)
        rate_limits = TenantRateLimits({name: t.rate_limit_events_per_second for name, t in config.tenants.items()})
        ex.aggregator.reconfigure(config, prices)
        ex.config, ex.prices, ex.auth, ex.rate_limits = config, prices, auth, rate_limits
        ex.front_door.config, ex.front_door.auth, ex.front_door.rate_limits = config, auth, rate_limits
        set_budgets(ex, config)
        ex.telemetry.describe_prices(prices)


def set_budgets(ex: Exporter, config: Config) -> None:
    """``llm_budget_limit_usd`` per configured tenant; a tenant whose budget was removed loses its series."""
    ex.telemetry.budget.clear()
    for name, tenant in config.tenants.items():
        if tenant.budget_usd_per_day is not None:
            ex.telemetry.budget.labels(name).set(tenant.budget_usd_per_day)
