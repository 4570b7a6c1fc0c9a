"""Command line: Prometheus-style flags built from the one config schema, and subcommands.

``llm-usage-exporter`` (or ``python -m exporter``) serves; ``llm-usage-exporter check-config``
validates a configuration without starting anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from typing import Sequence

from . import __version__
from .config import OPTIONS, Config, ConfigError, load_config, read_yaml_file
from .core import sources
from .core.pricing import PriceBook, PricingError, load_price_book


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config.file", metavar="PATH",
                        help="YAML config file (env LLM_EXPORTER_CONFIG_FILE); see config.example.yaml.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        section = option.name.split(".", 1)[0]
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(f"{section} flags"))
        group.add_argument(f"--{option.name}", dest=option.name, metavar=option.metavar, default=argparse.SUPPRESS,
                           help=f"{option.help} (default {option.default_text}; env {option.env})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-usage-exporter",
        description="Prometheus exporter for the usage and cost of LLM applications and AI agents.")
    parser.add_argument("--version", action="version",
                        version=f"llm-usage-exporter {__version__} (python {platform.python_version()})")
    _add_option_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the exporter (the default)")
    _add_option_flags(serve)
    check = sub.add_parser("check-config", help="validate the configuration and price table, then exit")
    _add_option_flags(check)

    prices = sub.add_parser("prices", help="show a model's prices, or explain one request's cost")
    prices_sub = prices.add_subparsers(dest="prices_command", metavar="ACTION", required=True)
    for name, text in (("show", "the model the name resolves to and its prices"),
                       ("explain", "each cost component of one request and the total")):
        action = prices_sub.add_parser(name, help=text)
        _add_option_flags(action)
        action.add_argument("model")
        action.add_argument("--provider", help="provider label (gen_ai.provider.name), e.g. aws.bedrock")
        if name == "explain":
            for flag in ("input", "output", "cache-read", "cache-write", "cache-write-1h", "reasoning",
                         "audio-input", "audio-output"):
                action.add_argument(f"--{flag}", type=int, default=0, metavar="N", help=f"{flag} tokens")
            action.add_argument("--service-tier", default="default", help="default, flex, batch, priority")
            action.add_argument("--operation", default="chat", help="operation (billing rules may depend on it)")
            action.add_argument("--at", help="date or RFC 3339 time the request was made (default: now)")

    backfill = sub.add_parser("backfill", help="simulate past days into Prometheus TSDB blocks (and the state store)")
    _add_option_flags(backfill)
    backfill.add_argument("--days", type=float, default=30, help="days of history to create (default 30)")
    backfill.add_argument("--scenario", default="default", help="simulator scenario (default: default)")
    backfill.add_argument("--rate", type=float, default=2.0, help="mean simulated events per second (default 2)")
    backfill.add_argument("--seed", type=int, default=42, help="simulator seed (default 42)")
    backfill.add_argument("--step", default="5m", help="scrape interval of the history (default 5m)")
    backfill.add_argument("--out", required=True, help="directory for the TSDB blocks")
    backfill.add_argument("--job", default="llm-usage-exporter",
                          help="job label of the live scrape, so history and live are one series")
    backfill.add_argument("--instance", default="exporter:9477",
                          help="instance label of the live scrape (host:port Prometheus scrapes)")
    backfill.add_argument("--ledger", help="write the simulator's ground-truth ledger to this JSON file")
    backfill.add_argument("--keep-openmetrics", action="store_true", help="keep the intermediate .om files")
    backfill.add_argument("--no-progress", action="store_true", help="no progress bar")

    imp = sub.add_parser("import", help="import real past events (NDJSON/JSON/OTLP JSON) into TSDB blocks and the state",
                         description="Count real past events through the live ingest rules into the state store, and "
                                     "write what Prometheus would have scraped as TSDB blocks. Stop the exporter first.")
    _add_option_flags(imp)
    imp.add_argument("files", nargs="+", metavar="FILE",
                     help="NDJSON (.gz too): one event, {\"events\": [...]} batch or OTLP/JSON request per line; "
                          "or a JSON array / object")
    imp.add_argument("--out", required=True, help="directory for the TSDB blocks")
    imp.add_argument("--step", default="5m", help="scrape interval of the history (default 5m; use the live one)")
    imp.add_argument("--job", default="llm-usage-exporter",
                     help="job label of the live scrape, so history and live are one series")
    imp.add_argument("--instance", default="exporter:9477",
                     help="instance label of the live scrape (host:port Prometheus scrapes)")
    imp.add_argument("--report", help="where rejected lines are listed (default OUT/import-rejected.ndjson)")
    imp.add_argument("--work-dir", help="temporary space for sorting by time, about the input's size (default OUT)")
    imp.add_argument("--keep-openmetrics", action="store_true", help="keep the intermediate .om files")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")

    loadgen = sub.add_parser("loadgen", help="POST simulated events to an exporter and report throughput")
    loadgen.add_argument("--url", default="http://127.0.0.1:9477", help="exporter base URL")
    loadgen.add_argument("--rate", type=float, default=0.0, help="events/s to offer (0 = as fast as possible)")
    loadgen.add_argument("--batch", type=int, default=500, help="events per POST (default 500)")
    loadgen.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    loadgen.add_argument("--concurrency", type=int, default=4, help="keep-alive connections (default 4)")
    loadgen.add_argument("--token-env", help="environment variable holding the bearer token (never a flag)")
    loadgen.add_argument("--scenario", default="steady", help="simulator scenario for the events")
    loadgen.add_argument("--max-events", type=int, default=2_000_000, help="cap on pre-built events (memory)")
    loadgen.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def backfill_command(args: argparse.Namespace, config: Config, prices: PriceBook) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from .server.app import build_exporter
    from .config import parse_duration
    from .demo.simulator import Ledger

    # Backfilled events are old by design: the ingest window must cover the whole history.
    # Offline, so no auth: configured tenants must not turn every other simulated tenant into __other__.
    config = dataclasses.replace(config, auth_mode="off", ingest_max_age=(args.days + 1) * 86400,
                                 dedupe_max_age=max(config.dedupe_max_age, config.ingest_max_age))
    exporter = build_exporter(config, CollectorRegistry(auto_describe=False), prices)
    exporter.aggregator.load()
    try:
        sources.check(exporter.aggregator.sources, True, config.storage_path, "backfill",
                      config.storage_allow_mixed_sources)
    except sources.MixedSources as exc:
        exporter.store.close()
        print(f"llm-usage-exporter backfill: {exc}", file=sys.stderr)
        return 2
    ledger = Ledger() if args.ledger else None
    from .demo.backfill import run_backfill

    out = Path(args.out)
    report = run_backfill(exporter.aggregator, args.scenario, args.days, out, args.rate, args.seed,
                          step=parse_duration(args.step), ledger=ledger, keep_openmetrics=args.keep_openmetrics,
                          progress=not args.no_progress, target_labels={"job": args.job, "instance": args.instance})
    exporter.store.close()
    if ledger is not None:
        Path(args.ledger).write_text(json.dumps(ledger.as_dict()))
    print(f"backfilled {report.days:g} days: {report.events:,} events, {report.samples:,} samples "
          f"in {report.seconds:.0f}s -> TSDB blocks in {out}/")
    print("To load them: stop Prometheus, move the block directories (01...) into its --storage.tsdb.path,\n"
          f"  e.g. `mv {out}/01* /var/lib/prometheus/metrics2/`, and start it again; or run `make stack-backfill`.\n"
          f"State store {config.storage_path} now holds the backfilled totals: start the exporter on it so\n"
          "  live counters continue from them.")
    return 0


def import_command(args: argparse.Namespace, config: Config, prices: PriceBook) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from .config import parse_duration
    from .core.store import StoreUnavailable
    from .history.importer import rfc3339, run_import
    from .server.app import build_exporter

    step = parse_duration(args.step)
    paths = [Path(f) for f in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"llm-usage-exporter import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    # Events are fed step by step with `now` at the step's end, so the ingest window only has to
    # cover one step; everything else (pricing, caps, dedupe window, tenants) is the live config's.
    max_age = max(config.ingest_max_age, 2 * step)
    config = dataclasses.replace(config, ingest_max_age=max_age, dedupe_max_age=max(config.dedupe_max_age, max_age))
    exporter = build_exporter(config, CollectorRegistry(auto_describe=False), prices)
    try:
        exporter.aggregator.load()
        sources.check(exporter.aggregator.sources, False, config.storage_path, "import",
                      config.storage_allow_mixed_sources)
        report = run_import(exporter.aggregator, paths, Path(args.out), step=step,
                            target_labels={"job": args.job, "instance": args.instance},
                            report_path=Path(args.report) if args.report else None,
                            work_dir=Path(args.work_dir) if args.work_dir else None, progress=not args.no_progress,
                            keep_openmetrics=args.keep_openmetrics)
    except StoreUnavailable as exc:
        print(f"llm-usage-exporter import: {exc} (is an exporter running on it? stop it first)", file=sys.stderr)
        return 2
    except (sources.MixedSources, RuntimeError) as exc:
        print(f"llm-usage-exporter import: {exc}", file=sys.stderr)
        return 2
    finally:
        exporter.store.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.already_imported:
        print(f"already imported: every file's content is recorded in {config.storage_path}; nothing to do")
    else:
        rate = report.events / report.seconds if report.seconds else 0.0
        span = f"{rfc3339(report.first)} .. {rfc3339(report.last)}" if report.first is not None else "no events"
        print(f"imported {report.accepted:,} of {report.events:,} events ({report.duplicates:,} duplicates, "
              f"{report.rejected:,} rejected) from {report.files} file(s) in {report.seconds:.1f}s "
              f"({rate:,.0f} events/s); {span}")
        if report.rejected:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(report.reasons.items()))
            print(f"rejected ({reasons}): one line each with file, line and reason in {report.rejected_report}")
        if report.accepted:
            print(f"{report.blocks} TSDB block(s), {report.samples:,} samples in {args.out}/\n"
                  "To load them: stop Prometheus, move the block directories (01...) into its --storage.tsdb.path\n"
                  f"  (retention must reach {rfc3339(report.first or 0)}: --storage.tsdb.retention.time), start it.\n"
                  f"State {config.storage_path} holds the imported totals (history until "
                  f"{rfc3339(report.history_until)}): start the exporter on it and live counters continue from them.")
    return 0 if report.accepted or report.already_imported else 1


def check_state_sources(config: Config) -> None:
    """Refuse to serve a state holding the other kind of events (simulated vs real): see core/sources.py."""
    from pathlib import Path

    from .core.store import StateStore, StoreUnavailable

    if config.storage_path == ":memory:" or not Path(config.storage_path).exists():
        return
    store = StateStore(config.storage_path)
    try:
        held = store.read_meta().get("sources", ())
    except StoreUnavailable:
        return  # the exporter's own start-up reports an unusable store
    finally:
        store.close()
    who = "the exporter with --simulator.enabled=true" if config.simulator_enabled else \
        "the exporter (API and OTLP ingest, simulator off)"
    sources.check(held, config.simulator_enabled, config.storage_path, who, config.storage_allow_mixed_sources)


def loadgen_command(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .demo.loadgen import make_bodies, run_load

    token = os.environ.get(args.token_env, "") if args.token_env else None
    count = max(1, min(int(args.max_events // args.batch),
                       int((args.rate or 1e9) * args.duration / args.batch) + args.concurrency))
    bodies = make_bodies(count, args.batch, args.scenario)
    report = asyncio.run(run_load(args.url, bodies, args.batch, args.duration, args.rate, args.concurrency, token))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.table())
    return 0 if report.non_2xx == 0 and report.errors == 0 else 1


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config.file") and v is not None}
    path = getattr(args, "config.file", None) or environ.get("LLM_EXPORTER_CONFIG_FILE")
    yaml_data = read_yaml_file(path) if path else {}
    return load_config(flags, environ, yaml_data)


def load_all(args: argparse.Namespace) -> tuple[Config, PriceBook]:
    """Configuration and price book from flags, environment and files: what start-up loads, and
    what a reload (SIGHUP, POST /-/reload) loads again."""
    config = config_from_args(args)
    return config, load_price_book(config.pricing_file)


def serve(args: argparse.Namespace, config: Config, prices: PriceBook) -> int:
    from .server import serving
    from .server.app import create_app

    try:
        serving.check_storage(config.storage_path)
        check_state_sources(config)
        sock = serving.bind(config)
    except (serving.StartupError, sources.MixedSources) as exc:
        print(f"llm-usage-exporter: {exc}", file=sys.stderr)
        return 2
    app = create_app(config, prices=prices, reload=lambda: load_all(args))
    auth = "required" if config.auth_required else "off: loopback only, no tokens configured" \
        if config.auth_mode == "auto" else "off"
    serving.serve(app, config, sock, logging.getLogger("exporter"),
                  f"listening on {config.web_listen_address} (auth {auth})")
    return 0


def prices_command(args: argparse.Namespace, prices: PriceBook) -> int:
    from datetime import UTC, datetime

    from .core.pricing.explain import explain, show

    if args.prices_command == "show":
        print(show(prices, args.model, args.provider))
        return 0 if prices.resolve(args.model, args.provider) else 1
    at = None
    if args.at:
        try:
            parsed = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError:
            print(f"llm-usage-exporter: --at {args.at!r} is not a date or RFC 3339 time", file=sys.stderr)
            return 2
        at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    fields = {"input_tokens": args.input, "output_tokens": args.output, "cache_read_tokens": args.cache_read,
              "cache_write_tokens": args.cache_write, "cache_write_1h_tokens": args.cache_write_1h,
              "reasoning_tokens": args.reasoning, "audio_input_tokens": args.audio_input,
              "audio_output_tokens": args.audio_output}
    from .core.events import token_part_violations

    problems = token_part_violations(fields.__getitem__)
    if any(value < 0 for value in fields.values()) or problems:
        print(f"llm-usage-exporter: {problems[0].message if problems else 'token counts must be >= 0'}",
              file=sys.stderr)
        return 2
    print(explain(prices, args.model, fields, args.service_tier, at, args.provider, args.operation))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "loadgen":
        return loadgen_command(args)
    try:
        config, prices = load_all(args)
    except (ConfigError, PricingError) as exc:
        print(f"llm-usage-exporter: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check-config":
        from .server.serving import StartupError, check_storage

        try:
            check_storage(config.storage_path)
        except StartupError as exc:
            print(f"llm-usage-exporter: {exc}", file=sys.stderr)
            return 2
        print(f"configuration OK: {len(config.tenants)} tenant(s), auth "
              f"{'required' if config.auth_required else 'off'}")
        return 0
    if args.command == "prices":
        return prices_command(args, prices)
    if args.command == "backfill":
        return backfill_command(args, config, prices)
    if args.command == "import":
        return import_command(args, config, prices)
    return serve(args, config, prices)

