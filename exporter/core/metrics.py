"""The metric contract in one place: names, types, labels, help and buckets.

Aggregation, exposition, the README table and the tests all read this module, so a rename is one
edit here and a failing test everywhere a dashboard or rule still uses the old name.
"""

from __future__ import annotations

from dataclasses import dataclass


def _doubling(start: float, count: int) -> tuple[float, ...]:
    return tuple(round(start * 2**i, 6) for i in range(count))


# OpenTelemetry GenAI semantic-convention buckets, extended to 655 s for long agent runs.
DURATION_BUCKETS = _doubling(0.01, 17)  # 0.01 … 81.92, 163.84, 327.68, 655.36
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1 … 67,108,864


# Money is kept as exact integer atto-dollars (1e-18 USD; see exporter/core/pricing/rates.py) and
# divided once, here, at exposition: int / int is correctly rounded, so /metrics and the read API agree.
USD_UNITS = 10**18
# Histogram sums of seconds are kept as exact integer nanoseconds for the same reason: an integer sum is
# the same whatever order and grouping the events were added in (exporter/core/fold.py counts rows in
# bulk; a restart replays them grouped differently), so a _sum never moves backwards by a rounding.
NANOS = 10**9


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without the _total suffix for counters, as prometheus-client expects
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    divisor: int = 1  # exposed value (a histogram's _sum) = stored value / divisor: atto-USD, nanoseconds

    def exposed(self, stored: int | float) -> int | float:
        """The exposed value of a stored counter or gauge, or of a histogram's stored ``_sum``."""
        return stored / self.divisor if self.divisor != 1 else stored

    @property
    def exposed_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


REQUESTS = MetricSpec("llm_requests", "counter", ("tenant", "customer", "model", "provider", "operation", "status"),
                      "LLM requests (and agent runs / tool calls) by outcome.")
ERRORS = MetricSpec("llm_request_errors", "counter", ("tenant", "model", "provider", "operation", "error_type"),
                    "Failed LLM requests by error type (unknown types are exported as _OTHER).")
TOKENS = MetricSpec("llm_tokens", "counter", ("tenant", "customer", "model", "provider", "token_type"),
                    "Tokens processed; token_type input includes cached tokens, output includes reasoning tokens.")
TOKEN_DETAILS = MetricSpec("llm_token_details", "counter", ("tenant", "model", "provider", "token_type"),
                           "Parts of input (cache_read, cache_write) and output (reasoning) tokens; not additional.")
COST = MetricSpec("llm_cost_usd", "counter", ("tenant", "customer", "model", "provider"),
                  "Cost in USD from the price table, or the cost_usd the event carried.", divisor=USD_UNITS)
CACHE_SAVINGS = MetricSpec("llm_cache_savings_usd", "counter", ("tenant", "model", "provider"),
                           "What cache reads saved: cache-read tokens x (input price - cache-read price), at the "
                           "prices the events were billed at. Net saving = this - llm_cache_write_premium_usd_total.",
                           divisor=USD_UNITS)
CACHE_WRITE_PREMIUM = MetricSpec("llm_cache_write_premium_usd", "counter", ("tenant", "model", "provider"),
                                 "What cache writes cost on top of the input price: cache-write tokens x "
                                 "(cache-write price - input price), 5-minute and 1-hour writes together.",
                                 divisor=USD_UNITS)
AGENT_RUN_COST = MetricSpec("llm_agent_run_cost_usd", "counter", ("tenant", "model", "status"),
                            "Cost in USD of agent_run events, by run outcome (cost per run = this / runs).",
                            divisor=USD_UNITS)
AGENT_CALLS = MetricSpec("llm_agent_calls", "counter", ("tenant", "model", "call_type"),
                         "LLM and tool calls made inside agent runs.")
DURATION = MetricSpec("llm_request_duration_seconds", "histogram", ("tenant", "model", "provider", "operation"),
                      "End-to-end request (or agent run) duration.", DURATION_BUCKETS, NANOS)
TTFT = MetricSpec("llm_time_to_first_token_seconds", "histogram", ("tenant", "model", "provider"),
                  "Time to first token of streamed responses.", TTFT_BUCKETS, NANOS)
TPOT = MetricSpec("llm_time_per_output_token_seconds", "histogram", ("tenant", "model", "provider"),
                  "Time per output token after the first: (duration - ttft) / (output_tokens - 1).", TPOT_BUCKETS,
                  NANOS)
REQUEST_TOKENS = MetricSpec("llm_request_tokens", "histogram", ("tenant", "model", "provider", "token_type"),
                            "Input and output tokens per request.", TOKEN_BUCKETS)
LAST_EVENT = MetricSpec("llm_last_event_timestamp_seconds", "gauge", ("tenant",),
                        "Unix time of the newest accepted event per tenant.")

# Usage series: aggregated from events and persisted, so they survive restarts.
USAGE_METRICS: tuple[MetricSpec, ...] = (REQUESTS, ERRORS, TOKENS, TOKEN_DETAILS, COST, CACHE_SAVINGS,
                                         CACHE_WRITE_PREMIUM, AGENT_RUN_COST, AGENT_CALLS, DURATION, TTFT, TPOT,
                                         REQUEST_TOKENS, LAST_EVENT)
USAGE_BY_NAME = {spec.name: spec for spec in USAGE_METRICS}
# Histograms whose stored _sum is integer nanoseconds (state schema 4; float seconds before): name → divisor.
NANO_SUMS = {spec.name: spec.divisor for spec in USAGE_METRICS if spec.kind == "histogram" and spec.divisor != 1}

# Self-metrics: process-lifetime prometheus-client metrics (they reset on restart like any process's).
BUDGET = MetricSpec("llm_budget_limit_usd", "gauge", ("tenant",), "Configured daily budget per tenant in USD.")
EVENTS = MetricSpec("llm_exporter_events", "counter", ("source", "result"),
                    "Events received by source (api, simulator, backfill) and result (accepted, duplicate, rejected).")
REJECTIONS = MetricSpec("llm_exporter_rejections", "counter", ("reason", "tenant"),
                        "Rejections by reason: one per rejected event, or one per request refused as a whole; "
                        "tenant is the caller's (or the batch's) when known, capped like the usage series' "
                        "tenant label, empty when unknown.")
# Reasons of whole requests refused at the front door (the others are per-event).
REQUEST_REFUSAL_REASONS = ("bad_request", "unauthenticated", "forbidden", "body_timeout", "too_large",
                           "unsupported_media_type", "rate_limited", "store_unavailable")
OVERFLOW = MetricSpec("llm_exporter_overflow", "counter", ("label",),
                      "Events whose label value was replaced by __other__ because the label (or, for "
                      "label=series, the tenant's customer/model/provider combinations) hit its cap.")
UNPRICED = MetricSpec("llm_exporter_unpriced_events", "counter", ("model",),
                      "Events for models missing from the price table (counted with cost 0).")
PRICE_TABLE_INFO = MetricSpec("llm_exporter_price_table_info", "gauge", ("source", "version"),
                              "Always 1; where prices come from (source=genai-prices, version=its package "
                              "version; a second series source=<override file> when pricing.file is set).")
PRICED_MODELS = MetricSpec("llm_exporter_priced_models", "gauge", (),
                           "Canonical models with a token price (price source plus override file).")
HTTP_REQUESTS = MetricSpec("llm_exporter_http_requests", "counter", ("route", "method", "code"),
                           "HTTP requests served, by route template.")
HTTP_DURATION = MetricSpec("llm_exporter_http_request_duration_seconds", "histogram", ("route", "method"),
                           "HTTP request latency by route template.",
                           (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
IN_FLIGHT = MetricSpec("llm_exporter_http_requests_in_flight", "gauge", (), "HTTP requests being served.")
BUILD_INFO = MetricSpec("llm_exporter_build_info", "gauge", ("version", "python_version"), "Always 1; build facts.")
DEDUPE_ENTRIES = MetricSpec("llm_exporter_dedupe_window_entries", "gauge", (),
                            "(tenant, id) pairs remembered for idempotency.")
DEDUPE_EVICTIONS = MetricSpec("llm_exporter_dedupe_evictions", "counter", ("tenant", "reason"),
                              "Ids forgotten by a tenant's dedupe window (tenant capped like other labels; "
                              "__other__ is the shared window): reason=age (normal) or size (window too small: "
                              "a retry of an evicted id would count twice).")
STORE_UP = MetricSpec("llm_exporter_store_up", "gauge", (), "1 when the last state-store write succeeded.")
# Named as Prometheus names its own (prometheus_config_last_reload_*), so the same alerts apply.
RELOAD_OK = MetricSpec("llm_exporter_config_last_reload_successful", "gauge", (),
                       "1 when the last configuration (re)load succeeded; 0: the previous configuration is still "
                       "in force.")
RELOAD_TIME = MetricSpec("llm_exporter_config_last_reload_success_timestamp_seconds", "gauge", (),
                         "Unix time of the last successful configuration (re)load.")

SELF_METRICS: tuple[MetricSpec, ...] = (BUDGET, EVENTS, REJECTIONS, OVERFLOW, UNPRICED, PRICE_TABLE_INFO,
                                        PRICED_MODELS, HTTP_REQUESTS, HTTP_DURATION,
                                        IN_FLIGHT, BUILD_INFO, DEDUPE_ENTRIES, DEDUPE_EVICTIONS, STORE_UP,
                                        RELOAD_OK, RELOAD_TIME)
ALL_METRICS = USAGE_METRICS + SELF_METRICS
