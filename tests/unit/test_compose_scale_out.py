"""Static checks of the scale-out override (docker-compose.scale-out.yml), its Prometheus config and
the VictoriaMetrics datasource (no Docker needed).

The override is applied as ``docker compose -f docker-compose.yml -f docker-compose.scale-out.yml``;
these tests catch what makes that fail or silently drift: a floating image tag, a mount of a file
that is not in the repo, a host port used twice across the two files, Prometheus writing to a host
or port where VictoriaMetrics does not listen, a scale-out Prometheus config that no longer matches
prometheus.yml, and a datasource uid that moves (dashboards links and users' bookmarks carry it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
OVERRIDE = yaml.safe_load((ROOT / "docker-compose.scale-out.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = OVERRIDE["services"]
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
VM_DATASOURCE = yaml.safe_load((DATASOURCES / "victoriametrics.yml").read_text(encoding="utf-8"))
PROM_CONFIG = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
SCALE_OUT_CONFIG = yaml.safe_load((ROOT / "prometheus" / "prometheus.scale-out.yml").read_text(encoding="utf-8"))
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


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` / ``-name=value`` in a command list."""
    values = [arg.split("=", 1)[1] for arg in command if arg.lstrip("-").split("=", 1)[0] == name and "=" in arg]
    assert len(values) == 1, f"{name} given {len(values)} times in {command}"
    return values[0]


def merged_volumes(name: str) -> dict[str, str]:
    """target -> source of a service after the override (compose merges volumes by target)."""
    mounts = {target: source for source, target in volume_specs(BASE["services"].get(name, {}))}
    mounts.update({target: source for source, target in volume_specs(SERVICES[name])})
    return mounts


def test_override_adds_victoriametrics_and_changes_only_prometheus() -> None:
    assert OVERRIDE.get("name") == BASE.get("name"), "both files must name the same project"
    assert "victoriametrics" in SERVICES and "victoriametrics" not in BASE["services"]
    assert set(SERVICES) == {"prometheus", "victoriametrics"}, set(SERVICES)
    assert SERVICES["victoriametrics"]["image"].startswith("victoriametrics/victoria-metrics:v")
    assert "profiles" not in SERVICES["victoriametrics"], \
        "the override file is the switch; a profile would leave Prometheus writing to a service that is not up"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_pinned_to_exact_versions(name: str) -> None:
    service = {**BASE["services"].get(name, {}), **SERVICES[name]}
    image = service.get("image")
    assert image or "build" in service, f"{name}: neither image nor build"
    if image:
        repository, _, tag = image.split("@")[0].rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and EXACT_VERSION.match(tag), f"{name}: {image} is not pinned to an exact version"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_paths_exist_and_named_volumes_are_declared(name: str) -> None:
    declared = set(BASE.get("volumes") or {}) | set(OVERRIDE.get("volumes") or {})
    for source, target in volume_specs(SERVICES[name]):
        assert target.startswith("/"), f"{name}: relative mount target {target}"
        if is_bind(source):
            assert source.startswith("./"), f"{name}: bind mount {source} is outside the repo"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist in the repository"
        else:
            assert source in declared, f"{name}: named volume {source} is not declared under volumes:"


def test_host_ports_unique_across_both_files() -> None:
    owner: dict[str, str] = {}
    for services in (BASE["services"], SERVICES):
        for name, service in services.items():
            for port in host_ports(service):
                assert owner.setdefault(port, name) == name, f"host port {port} used by {owner[port]} and {name}"
    assert owner.get("8428") == "victoriametrics"


def test_prometheus_keeps_its_flags_and_reads_the_scale_out_config() -> None:
    base, override = BASE["services"]["prometheus"]["command"], SERVICES["prometheus"]["command"]
    config_path = flag(override, "config.file")
    assert [a for a in base if not a.startswith("--config.file=")] == \
        [a for a in override if not a.startswith("--config.file=")], "only --config.file may differ"
    mounts = merged_volumes("prometheus")
    assert mounts[config_path] == "./prometheus/prometheus.scale-out.yml"
    config_dir = Path(config_path).parent
    for pattern in SCALE_OUT_CONFIG["rule_files"]:
        assert mounts.get(str((config_dir / pattern).parent)) == "./prometheus/rules", \
            f"rule_files {pattern} is not under the mounted rules directory"
    assert mounts[flag(override, "storage.tsdb.path")] == "prometheus-data", "the TSDB volume must stay the same"
    assert "victoriametrics" in SERVICES["prometheus"]["depends_on"]


def test_scale_out_config_is_prometheus_yml_plus_remote_write() -> None:
    assert {k: v for k, v in SCALE_OUT_CONFIG.items() if k != "remote_write"} == PROM_CONFIG, \
        "prometheus.scale-out.yml drifted from prometheus.yml: change both together"
    (remote,) = SCALE_OUT_CONFIG["remote_write"]
    url = urlsplit(remote["url"])
    vm = SERVICES["victoriametrics"]
    listen = flag(vm["command"], "httpListenAddr")
    assert url.scheme == "http" and url.hostname == "victoriametrics" and url.path == "/api/v1/write"
    assert str(url.port) == listen.rsplit(":", 1)[1], \
        f"remote_write to port {url.port}, VictoriaMetrics listens on {listen}"


def test_victoriametrics_service() -> None:
    vm = SERVICES["victoriametrics"]
    data_dir = flag(vm["command"], "storageDataPath")
    mounts = dict((target, source) for source, target in volume_specs(vm))
    assert not is_bind(mounts[data_dir]), "VictoriaMetrics' data belongs in a named volume"
    assert re.fullmatch(r"(\$\{\w+:-)?\d+[hdwy]?\}?", flag(vm["command"], "retentionPeriod"))
    check = " ".join(vm["healthcheck"]["test"])
    assert "/health" in check and flag(vm["command"], "httpListenAddr").rsplit(":", 1)[1] in check
    assert flag(vm["command"], "dedup.minScrapeInterval") == SCALE_OUT_CONFIG["global"]["scrape_interval"]


def test_victoriametrics_datasource_has_a_fixed_uid() -> None:
    (ds,) = VM_DATASOURCE["datasources"]
    assert ds["uid"] == "victoriametrics" and ds["type"] == "prometheus" and ds["access"] == "proxy"
    assert ds["url"] == "http://victoriametrics:8428"
    assert ds.get("isDefault") is False, "Prometheus stays the default datasource"
    assert ds["jsonData"]["timeInterval"] == SCALE_OUT_CONFIG["global"]["scrape_interval"] == "15s", \
        "timeInterval must equal the scrape interval, or $__rate_interval is wrong"
    vm = SERVICES["victoriametrics"]
    assert str(urlsplit(ds["url"]).port) == flag(vm["command"], "httpListenAddr").rsplit(":", 1)[1]


def test_datasource_uids_and_names_unique() -> None:
    uids, names = [], []
    for path in sorted(DATASOURCES.glob("*.yml")):
        for ds in yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", []):
            uids.append(ds["uid"])
            names.append(ds["name"])
    assert "victoriametrics" in uids and "prometheus" in uids
    assert len(uids) == len(set(uids)), f"datasource uids used twice: {uids}"
    assert len(names) == len(set(names)), f"datasource names used twice: {names}"
