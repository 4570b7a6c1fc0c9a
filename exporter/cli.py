"""Command line: Prometheus-style flags built from the one config schema, and subcommands.

``llm-usage-exporter`` (or ``python -m exporter``) serves; ``llm-usage-exporter check-config``
validates a configuration without starting anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .config import OPTIONS, Config, ConfigError, load_config, read_yaml_file
from .pricing import PriceTable, PricingError, load_price_table


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config.file", metavar="PATH",
                        help="YAML config file (env LLM_EXPORTER_CONFIG_FILE); see config.example.yaml.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        section = option.name.split(".", 1)[0]
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(f"{section} flags"))
        group.add_argument(f"--{option.name}", dest=option.name, metavar=option.metavar, default=argparse.SUPPRESS,
                           help=f"{option.help} (default {option.default!r}; env {option.env})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-usage-exporter",
        description="Prometheus exporter for the usage and cost of LLM applications and AI agents.")
    _add_option_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the exporter (the default)")
    _add_option_flags(serve)
    check = sub.add_parser("check-config", help="validate the configuration and price table, then exit")
    _add_option_flags(check)
    return parser


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config.file") and v is not None}
    path = getattr(args, "config.file", None) or environ.get("LLM_EXPORTER_CONFIG_FILE")
    yaml_data = read_yaml_file(path) if path else {}
    return load_config(flags, environ, yaml_data)


def serve(config: Config, prices: PriceTable) -> int:
    import uvicorn

    from .app import create_app

    app = create_app(config, prices=prices)
    host = config.listen_host
    logging.getLogger("exporter").info(
        "listening on %s (auth %s)", config.web_listen_address,
        "required" if config.auth_required else "off: loopback only, no tokens configured"
        if config.auth_mode == "auto" else "off")
    uvicorn.run(app, host=host, port=config.listen_port, log_level=config.log_level, access_log=False,
                server_header=False, timeout_graceful_shutdown=5)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        prices = load_price_table(config.pricing_file)
    except (ConfigError, PricingError) as exc:
        print(f"llm-usage-exporter: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check-config":
        print(f"configuration OK: {len(config.tenants)} tenant(s), auth "
              f"{'required' if config.auth_required else 'off'}")
        return 0
    return serve(config, prices)

