"""Config: one schema for flags, env and YAML; precedence; every error reported at once."""

from __future__ import annotations

import pytest

from exporter.cli import build_parser, config_from_args
from exporter.config import OPTIONS, Config, ConfigError, load_config, parse_duration


def test_defaults_match_the_dataclass():
    config = load_config({}, {}, {})
    for option in OPTIONS:
        assert getattr(config, option.attr) == option.default == getattr(Config(), option.attr), option.name


def test_precedence_flag_over_env_over_yaml():
    yaml_data = {"web": {"listen-address": "127.0.0.1:1"}, "simulator": {"rate": 5}}
    env = {"LLM_EXPORTER_WEB_LISTEN_ADDRESS": "127.0.0.1:2", "LLM_EXPORTER_SIMULATOR_RATE": "7"}
    config = load_config({"web.listen-address": "127.0.0.1:3"}, env, yaml_data)
    assert config.web_listen_address == "127.0.0.1:3"
    assert config.simulator_rate == 7.0
    assert load_config({}, {}, yaml_data).simulator_rate == 5.0


def test_yaml_accepts_underscores_and_durations():
    config = load_config({}, {}, {"ingest": {"max_age": "2h"}, "dedupe": {"max-age": "3h"}})
    assert config.ingest_max_age == 7200 and config.dedupe_max_age == 10800


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("24h", 86400), ("1w", 604800),
                                               ("250ms", 0.25), (30, 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config({"web.listen-address": "nowhere", "simulator.rate": "-1"}, {"LLM_EXPORTER_AUTH_MODE": "maybe"},
                    {"colour": "blue", "storage": {"sync": "sometimes"}})
    text = str(info.value)
    for needle in ("--web.listen-address", "--simulator.rate", "LLM_EXPORTER_AUTH_MODE", "colour", "storage.sync"):
        assert needle in text
    assert len(info.value.problems) == 5


def test_dedupe_window_must_cover_ingest_window():
    with pytest.raises(ConfigError, match="dedupe.max-age"):
        load_config({"ingest.max-age": "48h"}, {}, {})


def test_tenants_tokens_from_file_and_env_never_inline(tmp_path):
    token_file = tmp_path / "acme.token"
    token_file.write_text("# rotated 2026-11\nacme-token-aaaaaaaaaaaa\nacme-token-bbbbbbbbbbbb\n")
    config = load_config({}, {"GLOBEX_TOKEN": "globex-token-cccccccccc"}, {"tenants": {
        "acme": {"token_file": str(token_file), "budget_usd_per_day": 50},
        "globex": {"token_env": "GLOBEX_TOKEN"},
    }})
    assert config.tenants["acme"].tokens == ("acme-token-aaaaaaaaaaaa", "acme-token-bbbbbbbbbbbb")
    assert config.tenants["acme"].budget_usd_per_day == 50
    assert config.tenants["globex"].tokens == ("globex-token-cccccccccc",)
    with pytest.raises(ConfigError) as info:
        load_config({}, {}, {"tenants": {"a": {"token": "inline-secret-1234567"}, "b": {"token_file": "/nonexistent"},
                                         "c": {"token_env": "UNSET_VAR"}, "d": {"budget_usd_per_day": -5}}})
    assert len(info.value.problems) == 4
    assert "inline-secret" not in str(info.value)


@pytest.mark.parametrize(("address", "mode", "tokens", "required"), [
    ("127.0.0.1:9477", "auto", False, False),
    ("localhost:9477", "auto", False, False),
    (":9477", "auto", False, True),
    ("0.0.0.0:9477", "auto", False, True),
    ("127.0.0.1:9477", "auto", True, True),
    (":9477", "off", True, False),
    ("127.0.0.1:9477", "required", False, True),
])
def test_auth_off_by_default_only_on_loopback(tmp_path, address, mode, tokens, required):
    token_file = tmp_path / "t"
    token_file.write_text("a-sufficiently-long-token\n")
    tenants = {"acme": {"token_file": str(token_file)}} if tokens else {}
    config = load_config({"web.listen-address": address, "auth.mode": mode}, {}, {"tenants": tenants})
    assert config.auth_required is required


def test_cli_flags_env_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("simulator:\n  enabled: true\n  seed: 7\n")
    args = build_parser().parse_args(["--config.file", str(path), "--simulator.seed=9"])
    config = config_from_args(args, {"LLM_EXPORTER_LOG_LEVEL": "debug"})
    assert (config.simulator_enabled, config.simulator_seed, config.log_level) == (True, 9, "debug")


def test_cli_reports_bad_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("[unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_from_args(build_parser().parse_args(["--config.file", str(path)]), {})


def test_config_example_documents_every_option_with_its_default(tmp_path, monkeypatch):
    import yaml

    from exporter.config import _flatten
    from harness import REPO

    text = (REPO / "config.example.yaml").read_text()
    document = yaml.safe_load(text)
    assert "tenants" not in document, "as shipped the example has no tenants, so check-config passes on it"
    # The commented-out tenants block, uncommented, is a valid tenants section.
    block = text[text.index("# tenants:"):]
    tenants = yaml.safe_load("\n".join(line.removeprefix("# ") for line in block.splitlines()))["tenants"]
    assert set(_flatten(document)) == {o.name for o in OPTIONS}
    assert load_config({}, {}, document) == Config(), "the example shows the defaults"
    token = tmp_path / "acme.token"
    token.write_text("an-acme-token-of-sufficient-length\n")
    tenants["acme"]["token_file"] = str(token)
    config = load_config({}, {"GLOBEX_TOKEN": "a-globex-token-of-sufficient-length"}, {"tenants": tenants})
    assert config.tenants["acme"].rate_limit_events_per_second == 2000


def test_check_config_passes_on_the_shipped_example(capsys):
    from exporter.cli import main
    from harness import REPO

    assert main(["check-config", f"--config.file={REPO / 'config.example.yaml'}"]) == 0
    assert "configuration OK" in capsys.readouterr().out
