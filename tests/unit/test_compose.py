"""Static checks of docker-compose.yml, the Dockerfile and .dockerignore (no Docker needed).

They catch what makes `docker compose up` fail or drift: floating image tags, a mount of a file
that is not in the repo, two services on one host port, a health check on a route the exporter
does not serve, a root container, and config files that disagree about paths and names.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-.][\w.]+)?$")


def volume_specs(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume, short or long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            out.append((source, rest.split(":")[0]))
        else:
            out.append((volume.get("source", ""), volume["target"]))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~", "$"))


def host_ports(service: dict[str, Any]) -> list[str]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(str(port["published"]))
        else:
            parts = str(port).split(":")
            assert len(parts) >= 2, f"port {port!r} has no fixed host port"
            ports.append(parts[-2])
    return ports


def test_core_services_present() -> None:
    assert {"exporter", "prometheus", "alertmanager", "grafana"} <= SERVICES.keys()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_pinned_to_exact_versions(name: str) -> None:
    service = SERVICES[name]
    if "image" not in service:
        assert "build" in service, f"{name}: neither image nor build"
        return
    image = service["image"]
    repository, _, tag = image.split("@")[0].rpartition(":")
    assert repository and "/" not in tag, f"{name}: {image} has no tag"
    assert tag != "latest" and EXACT_VERSION.match(tag), f"{name}: {image} is not pinned to an exact version"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_bind_mounts_exist_and_named_volumes_are_declared(name: str) -> None:
    declared = set((COMPOSE.get("volumes") or {}).keys())
    for source, target in volume_specs(SERVICES[name]):
        assert target.startswith("/"), f"{name}: relative mount target {target}"
        if is_bind(source):
            assert source.startswith("./") or source == ".", f"{name}: bind mount {source} is outside the repo"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist in the repository"
        else:
            assert source in declared, f"{name}: named volume {source} is not declared under volumes:"


def test_host_ports_unique() -> None:
    ports = [port for service in SERVICES.values() for port in host_ports(service)]
    assert len(ports) == len(set(ports)), f"host ports used twice: {ports}"


def test_exporter_service() -> None:
    exporter = SERVICES["exporter"]
    assert exporter["build"] in (".", "./") or exporter["build"].get("context") in (".", "./")
    assert "9477" in host_ports(exporter)
    assert any(target == "/data" and not is_bind(source) for source, target in volume_specs(exporter))
    check = " ".join(exporter["healthcheck"]["test"])
    assert "/healthz" in check and "9477" in check
    assert '"/healthz"' in (ROOT / "exporter" / "server" / "app.py").read_text(encoding="utf-8"), \
        "the health check probes /healthz, which exporter/server/app.py must serve"


def test_prometheus_service_matches_its_config() -> None:
    prometheus = SERVICES["prometheus"]
    mounts = dict((target, source) for source, target in volume_specs(prometheus))
    config_target = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert mounts[config_target] == "./prometheus/prometheus.yml"
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    config_dir = Path(config_target).parent
    for pattern in config.get("rule_files", []):
        rule_dir = str((config_dir / pattern).parent)
        assert mounts.get(rule_dir) == "./prometheus/rules", f"rule_files {pattern} is not under a mounted rules dir"
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert "exporter:9477" in targets, "Prometheus must scrape the exporter service by its compose name"


def test_alertmanager_service() -> None:
    alertmanager = SERVICES["alertmanager"]
    sources = [source for source, _ in volume_specs(alertmanager)]
    assert "./prometheus/alertmanager.yml" in sources


def test_grafana_service_matches_provisioning() -> None:
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"]), \
        "the admin password must be settable from the environment, with a documented default"
    mounts = dict((target, source) for source, target in volume_specs(grafana))
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/llm-usage.yml").read_text(encoding="utf-8"))
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == "./grafana/dashboards"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home.startswith(dashboards_path + "/")
        assert (ROOT / "grafana" / "dashboards" / Path(home).name).exists()


def test_backfill_is_opt_in() -> None:
    if "backfill" in SERVICES:
        assert SERVICES["backfill"].get("profiles") == ["backfill"]


# --- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_base_image_pinned() -> None:
    bases = dockerfile_instructions("FROM")
    assert bases
    for base in bases:
        image = base.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), f"base image {image} is not an exact 3.11 slim"


def test_dockerfile_runs_as_non_root() -> None:
    users = dockerfile_instructions("USER")
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {users[-1]}"


def test_dockerfile_entrypoint_healthcheck_and_default_command() -> None:
    assert dockerfile_instructions("ENTRYPOINT") == ['["llm-usage-exporter"]']
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "llm-usage-exporter" in scripts, "ENTRYPOINT names a console script pyproject.toml does not define"
    (cmd,) = dockerfile_instructions("CMD")
    for flag in ("--simulator.enabled=true", "--web.listen-address=:9477", "--storage.path=/data/demo.db",
                 "--auth.mode=off"):
        assert f'"{flag}"' in cmd
    (healthcheck,) = dockerfile_instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck and "9477" in healthcheck and "urllib" in healthcheck
    assert "pip install" in DOCKERFILE


def _glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: ``*`` within a path segment, ``**/`` any directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return f"^{out}$"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _glob_regex((raw[1:] if negate else raw).strip("/"))
        if any(re.match(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"].get("readme")
    copied = [source for args in dockerfile_instructions("COPY") if not args.startswith("--from")
              for source in args.split()[:-1]]
    assert {"pyproject.toml", "MANIFEST.in", "exporter"} <= set(copied)
    for needed in (*copied, "exporter/__init__.py", "exporter/core/pricing/book.py", readme):
        if needed:
            assert not _dockerignored(needed, patterns), f"{needed} is needed by `pip install .` but ignored"
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/unit/test_compose.py", "exporter/__pycache__/x.pyc",
                    "exporter/__pycache__", "data/llm-exporter.db", "grafana/dashboards/llm-overview.json"):
        assert _dockerignored(dropped, patterns), f"{dropped} would be sent to the Docker build"
