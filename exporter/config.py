"""Configuration: one schema shared by command-line flags, ``LLM_EXPORTER_*`` variables and YAML.

Precedence is flag > environment > YAML file > default, the order operators expect from
Prometheus-style daemons. Parsing is pure: :func:`load_config` returns a frozen :class:`Config`
or raises :class:`ConfigError` listing *every* problem at once, so a bad deployment is fixed in
one round trip instead of one error per restart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Prometheus-style duration (``90s``, ``5m``, ``24h``) or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must be >= 0, got {value}")
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"not a duration (use e.g. 30s, 5m, 24h): {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds as an operator writes them (``86400`` → ``24h``, ``300`` → ``5m``): the inverse of
    :func:`parse_duration` for help texts and messages, in the largest unit that is exact."""
    for unit in ("h", "m", "s"):
        count = seconds / _UNIT_SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds * 1000:g}ms"


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean (true/false): {value!r}")


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    number = int(str(value).replace("_", ""))
    if number <= 0:
        raise ValueError(f"must be > 0, got {number}")
    return number


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a finite number > 0, got {value!r}")
    return number


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}; got {value!r}")
        return text

    return parse


def _listen_address(value: Any) -> str:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be [host]:port, e.g. :9477 or 127.0.0.1:9477; got {value!r}")
    return str(value)


@dataclass(frozen=True)
class Option:
    """One setting: its flag name (``web.listen-address``), parser, default and help."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"

    @property
    def default_text(self) -> str:
        """The default as a user would write it in a flag or the YAML file."""
        if self.parse is parse_duration:
            return format_duration(self.default)
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return repr(self.default) if isinstance(self.default, str) else str(self.default)

    @property
    def env(self) -> str:
        return "LLM_EXPORTER_" + re.sub(r"[.-]", "_", self.name).upper()

    @property
    def attr(self) -> str:
        return re.sub(r"[.-]", "_", self.name)


OPTIONS: tuple[Option, ...] = (
    Option("web.listen-address", _listen_address, ":9477", "Address to listen on for the API and /metrics."),
    Option("web.max-body-bytes", _positive_int, 10 * 1024 * 1024, "Largest accepted request body (413 above).", "BYTES"),
    Option("web.max-batch-events", _positive_int, 10_000, "Most events in one POST (413 above).", "N"),
    Option("web.header-timeout", parse_duration, 10.0,
           "A connection whose request headers are not complete this long after its first byte is closed "
           "(slow-loris clients).", "DURATION"),
    Option("web.body-timeout", parse_duration, 30.0,
           "A request body not received completely within this long is refused with 408.", "DURATION"),
    Option("web.idle-timeout", parse_duration, 5.0, "Idle keep-alive connections are closed after this long.",
           "DURATION"),
    Option("web.max-connections", _positive_int, 1024,
           "Most concurrent connections (and requests); past it new requests get 503 at once.", "N"),
    Option("web.enable-lifecycle", parse_bool, False,
           "Serve POST /-/reload, which re-reads tokens, prices, budgets and limits like SIGHUP "
           "(Prometheus' flag of the same name; anyone who reaches the port can then trigger it).", "BOOL"),
    Option("auth.mode", _choice("auto", "required", "off"), "auto",
           "auto: require tenant tokens unless listening on loopback with no tokens configured; "
           "required: always; off: never (trusted networks only)."),
    Option("storage.path", str, "./data/llm-exporter.db",
           "SQLite file that keeps totals and the dedupe window across restarts (':memory:' keeps nothing).", "PATH"),
    Option("storage.allow-mixed-sources", parse_bool, False,
           "Let simulated (simulator, backfill) and real (api, otlp, import) events share one state file; "
           "off, the exporter, import and backfill refuse a state holding the other kind.", "BOOL"),
    Option("storage.sync", _choice("normal", "full"), "normal",
           "SQLite synchronous mode in WAL: normal survives a process crash, full also survives power loss."),
    Option("ingest.max-age", parse_duration, 24 * 3600.0, "Reject events older than this (load past events with `import`).", "DURATION"),
    Option("ingest.max-future", parse_duration, 300.0, "Reject events further in the future than this.", "DURATION"),
    Option("dedupe.max-entries", _positive_int, 1_000_000,
           "Most (tenant, id) pairs remembered for idempotency, all tenants together; past it the largest "
           "tenant window forgets its oldest ids.", "N"),
    Option("dedupe.max-entries-per-tenant", _positive_int, 500_000,
           "Most ids remembered per tenant (tenants.<name>.dedupe_max_entries overrides it): a tenant "
           "flooding new ids forgets its own oldest, never another tenant's.", "N"),
    Option("dedupe.max-age", parse_duration, 25 * 3600.0,
           "How long an id is remembered (tenants.<name>.dedupe_max_age overrides it); keep it >= "
           "ingest.max-age so every acceptable retry is caught.", "DURATION"),
    Option("limits.max-tenants", _positive_int, 100, "Distinct tenants kept when auth is off (rest become __other__).", "N"),
    Option("limits.max-customers-per-tenant", _positive_int, 1000, "Distinct customers per tenant (rest become __other__).", "N"),
    Option("limits.max-combinations-per-tenant", _positive_int, 10_000,
           "(customer, model, provider) combinations kept per tenant; new ones beyond it count under customer "
           "__other__, so per-label caps cannot multiply into millions of series.", "N"),
    Option("limits.max-unknown-models", _positive_int, 50, "Distinct models missing from the price table (rest become __other__).", "N"),
    Option("limits.max-label-length", _positive_int, 128, "Longest tenant/customer/model/provider/error_type value.", "CHARS"),
    Option("usage.daily-days", _positive_int, 40,
           "Days of per-customer daily rollups kept for /usage and /v1/tenants/{t}/usage/daily.", "N"),
    Option("errors.ring-size", _positive_int, 100, "Recent errors kept per tenant for /v1/tenants/{t}/errors.", "N"),
    Option("pricing.file", str, "", "YAML price table merged over the shipped default.", "PATH"),
    Option("simulator.enabled", parse_bool, False, "Generate a simulated fleet's usage into the exporter.", "BOOL"),
    Option("simulator.seed", int, 42, "Seed of the simulator; same seed, same events.", "INT"),
    Option("simulator.rate", _positive_float, 20.0, "Mean simulated events per second (before daily cycles).", "EPS"),
    Option("simulator.speed", _positive_float, 1.0, "Simulated seconds per real second (24 = one day per hour).", "X"),
    Option("simulator.scenario", str, "default", "Scenario name under exporter/demo/scenarios or a YAML path.", "NAME"),
    Option("log.level", _choice("debug", "info", "warning", "error"), "info", "Log level."),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class TenantConfig:
    """A configured tenant: its accepted bearer tokens (from files or env, never inline) and budget."""

    name: str
    tokens: tuple[str, ...] = ()
    budget_usd_per_day: float | None = None
    rate_limit_events_per_second: float | None = None
    dedupe_max_entries: int | None = None  # None: dedupe.max-entries-per-tenant
    dedupe_max_age: float | None = None  # None: dedupe.max-age


@dataclass(frozen=True)
class Config:
    web_listen_address: str = ":9477"
    web_max_body_bytes: int = 10 * 1024 * 1024
    web_max_batch_events: int = 10_000
    web_header_timeout: float = 10.0
    web_body_timeout: float = 30.0
    web_idle_timeout: float = 5.0
    web_max_connections: int = 1024
    web_enable_lifecycle: bool = False
    auth_mode: str = "auto"
    storage_path: str = "./data/llm-exporter.db"
    storage_allow_mixed_sources: bool = False
    storage_sync: str = "normal"
    ingest_max_age: float = 24 * 3600.0
    ingest_max_future: float = 300.0
    dedupe_max_entries: int = 1_000_000
    dedupe_max_entries_per_tenant: int = 500_000
    dedupe_max_age: float = 25 * 3600.0
    limits_max_tenants: int = 100
    limits_max_customers_per_tenant: int = 1000
    limits_max_combinations_per_tenant: int = 10_000
    limits_max_unknown_models: int = 50
    limits_max_label_length: int = 128
    usage_daily_days: int = 40
    errors_ring_size: int = 100
    pricing_file: str = ""
    simulator_enabled: bool = False
    simulator_seed: int = 42
    simulator_rate: float = 20.0
    simulator_speed: float = 1.0
    simulator_scenario: str = "default"
    log_level: str = "info"
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)

    @property
    def listen_host(self) -> str:
        host = self.web_listen_address.rpartition(":")[0].strip("[]")
        return host or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.web_listen_address.rpartition(":")[2])

    @property
    def loopback_only(self) -> bool:
        return self.listen_host in ("127.0.0.1", "localhost", "::1") or self.listen_host.startswith("127.")

    @property
    def auth_required(self) -> bool:
        """Auth is off by default only on loopback with no tokens; anything else must present one."""
        if self.auth_mode == "auto":
            has_tokens = any(t.tokens for t in self.tenants.values())
            return has_tokens or not self.loopback_only
        return self.auth_mode == "required"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"web": {"listen-address": x}}`` → ``{"web.listen-address": x}``; underscores accepted too."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{str(key).replace('_', '-')}"
        if isinstance(value, Mapping) and name != "tenants":
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read_token_source(tenant: str, spec: Mapping[str, Any], environ: Mapping[str, str], problems: list[str]) -> tuple[str, ...]:
    """Tokens come from a file (one per line, so rotation is adding a line) or an env variable."""
    tokens: list[str] = []
    if "token" in spec:
        problems.append(f"tenants.{tenant}.token: inline tokens are not allowed; use token_file or token_env")
    if spec.get("token_file"):
        try:
            lines = Path(str(spec["token_file"])).read_text(encoding="utf-8").splitlines()
            tokens += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        except OSError as exc:
            problems.append(f"tenants.{tenant}.token_file: cannot read: {exc.strerror}")
    if spec.get("token_env"):
        value = environ.get(str(spec["token_env"]), "")
        if not value:
            problems.append(f"tenants.{tenant}.token_env: variable {spec['token_env']} is empty or unset")
        tokens += [t.strip() for t in value.split(",") if t.strip()]
    for token in tokens:
        if len(token) < 16:
            problems.append(f"tenants.{tenant}: a token is shorter than 16 characters")
            break
    return tuple(tokens)


def _parse_tenants(raw: Any, environ: Mapping[str, str], problems: list[str]) -> dict[str, TenantConfig]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append("tenants: must be a mapping of tenant name to settings")
        return {}
    tenants: dict[str, TenantConfig] = {}
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, Mapping):
            problems.append(f"tenants.{name}: must be a mapping")
            continue
        unknown = set(spec) - {"token_file", "token_env", "token", "budget_usd_per_day", "rate_limit_events_per_second",
                               "dedupe_max_entries", "dedupe_max_age"}
        if unknown:
            problems.append(f"tenants.{name}: unknown keys {sorted(unknown)}")
        budget = spec.get("budget_usd_per_day")
        if budget is not None:
            try:
                budget = _positive_float(budget)
            except (TypeError, ValueError) as exc:
                problems.append(f"tenants.{name}.budget_usd_per_day: {exc}")
                budget = None
        rate = spec.get("rate_limit_events_per_second")
        if rate is not None:
            try:
                rate = _positive_float(rate)
            except (TypeError, ValueError) as exc:
                problems.append(f"tenants.{name}.rate_limit_events_per_second: {exc}")
                rate = None
        window: dict[str, Any] = {}
        for key, parse in (("dedupe_max_entries", _positive_int), ("dedupe_max_age", parse_duration)):
            if spec.get(key) is not None:
                try:
                    window[key] = parse(spec[key])
                except (TypeError, ValueError) as exc:
                    problems.append(f"tenants.{name}.{key}: {exc}")
        tokens = _read_token_source(str(name), spec, environ, problems)
        tenants[str(name)] = TenantConfig(str(name), tokens, budget, rate, **window)
    return tenants


def read_yaml_file(path: str) -> dict[str, Any]:
    """Read the config file; a missing or malformed file is a :class:`ConfigError`."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"config.file: cannot read {path}: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"config.file: {path} is not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config.file: {path} must hold a mapping at the top level"])
    return data


def load_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    yaml_data: Mapping[str, Any] | None = None,
) -> Config:
    """Merge the three sources over the defaults and validate every value.

    ``flags`` maps option names (``"web.listen-address"``) to raw values; unset flags are absent.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    yaml_data = dict(yaml_data or {})
    problems: list[str] = []
    tenants = _parse_tenants(yaml_data.pop("tenants", None), environ, problems)
    from_yaml = _flatten(yaml_data)
    for name in sorted(set(from_yaml) - set(OPTIONS_BY_NAME)):
        problems.append(f"{name}: unknown setting (see config.example.yaml)")
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.name in flags:
            raw, where = flags[option.name], f"--{option.name}"
        elif option.env in environ:
            raw, where = environ[option.env], option.env
        elif option.name in from_yaml:
            raw, where = from_yaml[option.name], f"{option.name} (config file)"
        else:
            values[option.attr] = option.default
            continue
        try:
            values[option.attr] = option.parse(raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: {exc}")
    if not problems and values["dedupe_max_age"] < values["ingest_max_age"]:
        problems.append("dedupe.max-age must be >= ingest.max-age, or retries of old events could count twice")
    for tenant in tenants.values():
        if not problems and tenant.dedupe_max_age is not None and tenant.dedupe_max_age < values["ingest_max_age"]:
            problems.append(f"tenants.{tenant.name}.dedupe_max_age must be >= ingest.max-age, or retries of old "
                            "events could count twice")
    if problems:
        raise ConfigError(problems)
    return Config(tenants=tenants, **values)
