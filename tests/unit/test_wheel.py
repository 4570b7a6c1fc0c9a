"""The installed package is the product: build the wheels, install them into new virtualenvs
outside the checkout, and run them from there.

The server wheel is built from exactly what the Dockerfile's build stage copies, so what runs
here is what the image runs: its ENTRYPOINT + CMD and its HEALTHCHECK are executed against the
wheel's install. The client wheel is installed alone and must work without the server's
dependencies. pip's cache is reused; the slowest unit test of the suite, by design.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import exporter
from harness import REPO, ExporterProcess, dockerfile_instructions, require_binary, wait_until

# What never ships (MANIFEST.in's global-exclude): bytecode, caches, local databases.
LEFTOVER_SUFFIXES = (".pyc", ".pyo", ".pyd", ".db", ".sqlite", "~")
SERVER_ONLY = ("starlette", "uvicorn", "protobuf", "prometheus-client", "opentelemetry-proto", "msgspec")


def _is_leftover(path: Path) -> bool:
    return "__pycache__" in path.parts or path.name.endswith(LEFTOVER_SUFFIXES) or ".db-" in path.name


def _copy_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, ignore=lambda d, names: [
            n for n in names if _is_leftover(Path(d) / n)])
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _run(*cmd: str | Path, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` of a source tree (pip's build isolation, like the image's build stage)."""
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", out, source, cwd=source)
    (wheel,) = out.glob("*.whl")
    return wheel


def _venv_with(wheel: Path, where: Path) -> Path:
    """A new virtualenv holding ``wheel`` and its dependencies; returns its bin/ directory."""
    venv.EnvBuilder(with_pip=False, clear=True).create(where)  # this pip installs into it: no ensurepip
    _pip(where / "bin", "install", "--quiet", wheel)
    return where / "bin"


def _pip(bin_dir: Path, *args: str | Path) -> str:
    return _run(sys.executable, "-m", "pip", "--python", bin_dir / "python", *args, cwd=bin_dir).stdout


def _installed(bin_dir: Path) -> set[str]:
    return {p["name"].lower().replace("_", "-") for p in json.loads(_pip(bin_dir, "list", "--format=json"))}


@dataclass
class Installed:
    wheel: Path
    bin: Path
    workdir: Path  # outside the checkout: nothing there is importable as `exporter`


def docker_build_inputs() -> list[str]:
    """The paths the Dockerfile's wheel stage copies from the build context."""
    return [source for args in dockerfile_instructions("COPY") if not args.startswith("--from")
            for source in args.split()[:-1]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("server-wheel")
    for name in docker_build_inputs():
        _copy_tree(REPO / name, root / "src" / name)
    wheel = _wheel(root / "src", root / "dist")
    bin_dir = _venv_with(wheel, root / "venv")
    workdir = root / "run"
    workdir.mkdir()
    return Installed(wheel, bin_dir, workdir)


def test_wheel_ships_every_file_of_the_exporter_tree(server: Installed) -> None:
    checkout = {p.relative_to(REPO).as_posix() for p in (REPO / "exporter").rglob("*")
                if p.is_file() and not _is_leftover(p.relative_to(REPO))}
    with zipfile.ZipFile(server.wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("exporter/")}
    assert {"exporter/core/pricing/book.py", "exporter/demo/scenarios/default.yaml"} <= shipped
    assert shipped == checkout, (f"missing from the wheel: {sorted(checkout - shipped)}; "
                                 f"in the wheel only: {sorted(shipped - checkout)}")


def test_wheel_metadata_is_publishing_ready(server: Installed) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(server.wheel) as archive:
        info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        names = archive.namelist()
    assert f"Version: {exporter.__version__}\n" in metadata, "the version comes from exporter/__init__.py"
    assert "llm-usage-exporter = exporter.cli:main" in entry_points
    requires = sorted(line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")
                      and "extra ==" not in line)
    assert requires == sorted(project["dependencies"]), "every dependency pinned exactly, as in pyproject.toml"
    assert all("==" in r for r in requires)
    assert "Classifier: License :: OSI Approved :: Apache Software License" in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    runbook = yaml.safe_load((REPO / "prometheus" / "thresholds.yml").read_text())["runbook_url"]
    assert f"Project-URL: Runbook, {runbook}" in metadata, "the same runbook the alerts link to"
    assert f"{info}/licenses/LICENSE" in names
    version = _run(server.bin / "llm-usage-exporter", "--version", cwd=server.workdir).stdout
    assert exporter.__version__ in version


def test_docker_image_needs_only_what_the_wheel_ships(server: Installed) -> None:
    """The image's ENTRYPOINT is the wheel's console script; its CMD's scenario and the default
    pricing package are in the wheel (running them is the next test)."""
    (entrypoint,) = dockerfile_instructions("ENTRYPOINT")
    (script,) = json.loads(entrypoint)
    assert (server.bin / script).is_file(), f"ENTRYPOINT {script} is not a console script of the wheel"
    flags = dict(f.lstrip("-").split("=", 1) for f in json.loads(dockerfile_instructions("CMD")[0]))
    scenario = flags.get("simulator.scenario", "default")
    with zipfile.ZipFile(server.wheel) as archive:
        names = set(archive.namelist())
    assert f"exporter/demo/scenarios/{scenario}.yaml" in names
    assert "exporter/core/pricing/book.py" in names
    assert any("COPY --from=wheel" in line for line in (REPO / "Dockerfile").read_text().splitlines()), \
        "the image installs the wheel its build stage built"


class InstalledExporter(ExporterProcess):
    """The wheel's console script, run from a directory outside the checkout."""

    def __init__(self, installed: Installed, *flags: str) -> None:
        super().__init__(installed.workdir / "exporter", *flags)
        self.bin = installed.bin
        self.env.pop("PYTHONPATH", None)

    def command(self) -> list[str]:
        return [str(self.bin / "llm-usage-exporter"), *self.flags]


def _sum(text: str, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_installed_wheel_runs_the_image_command_healthcheck_and_loadgen(server: Installed) -> None:
    where = _run(server.bin / "python", "-c", "import exporter; print(exporter.__file__)", cwd=server.workdir).stdout
    assert str(server.bin.parent) in where and str(REPO) not in where, f"imported {where}"
    cmd = [f for f in json.loads(dockerfile_instructions("CMD")[0])
           if not f.startswith(("--web.listen-address=", "--storage.path="))]
    with InstalledExporter(server, *cmd) as process:
        wait_until(lambda: _sum(process.metrics_text(), "llm_cost_usd_total") > 0, timeout=60,
                   what="the simulator's cost on /metrics")
        (healthcheck,) = dockerfile_instructions("HEALTHCHECK")
        probe = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
        probe = [server.bin / "python" if arg == "python" else arg.replace(":9477", f":{process.port}")
                 for arg in probe]
        _run(*probe, cwd=server.workdir)

        report = _run(server.bin / "llm-usage-exporter", "loadgen", "--url", process.url, "--duration", "1", "--rate", "500",
                      "--batch", "50", "--concurrency", "1", "--json", cwd=server.workdir).stdout
        load = json.loads(report)
        assert load["non_2xx"] == 0 and load["accepted"] > 0, load
        accepted = _sum(process.metrics_text(), "llm_exporter_events_total", source="api", result="accepted")
        assert accepted == load["accepted"], (accepted, load)


def test_installed_wheel_backfills_and_checks_the_example_config(server: Installed) -> None:
    require_binary("promtool")
    out = server.workdir / "backfill"
    _run(server.bin / "llm-usage-exporter", "backfill", "--days", "0.05", "--out", out, "--no-progress",
         f"--storage.path={server.workdir / 'backfill.db'}", cwd=server.workdir)
    assert [p for p in out.iterdir() if p.is_dir()], "promtool wrote no TSDB block"
    checked = _run(server.bin / "llm-usage-exporter", "check-config", f"--config.file={REPO / 'config.example.yaml'}",
                   cwd=server.workdir)
    assert "configuration OK" in checked.stdout


# --- the light client distribution ------------------------------------------------------------

def test_client_pins_the_same_httpx_as_the_server() -> None:
    server = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    client = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert client == [d for d in server if d.startswith("httpx==")]


@pytest.fixture(scope="module")
def client_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("client-wheel")
    for name in ("client", "exporter"):  # client/setup.py copies its shared modules from ../exporter
        _copy_tree(REPO / name, root / "src" / name)
    for generated in ("_version.py", "client.py", "formats"):
        shutil.rmtree(root / "src" / "client" / "llm_usage_client" / generated, ignore_errors=True)
        (root / "src" / "client" / "llm_usage_client" / generated).unlink(missing_ok=True)
    wheel = _wheel(root / "src" / "client", root / "dist")
    yield _venv_with(wheel, root / "venv")


def test_client_installs_without_the_server(client_bin: Path, tmp_path: Path) -> None:
    installed = _installed(client_bin)
    assert "llm-usage-client" in installed
    assert not installed & set(SERVER_ONLY), f"the client pulled in {sorted(installed & set(SERVER_ONLY))}"
    assert "llm-usage-exporter" not in installed
    with ExporterProcess(tmp_path) as process:
        fixture = REPO / "tests" / "fixtures" / "openai_chat_completion.json"
        script = (
            "import json, sys\n"
            "from llm_usage_client import UsageClient, __version__\n"
            f"assert __version__ == {exporter.__version__!r}\n"
            f"with UsageClient({process.url!r}) as usage:\n"
            "    usage.record(tenant='light', customer='c1', model='gpt-4o', input_tokens=1000, output_tokens=10,\n"
            "                 duration_ms=500, status='ok')\n"
            f"    usage.record_openai(json.load(open({str(fixture)!r})), tenant='light', customer='c1', duration_ms=900)\n"
            "    assert usage.flush(30)\n"
            "print(usage.accepted, usage.rejected, usage.dropped)\n"
            "for name in ('starlette', 'uvicorn', 'google.protobuf', 'exporter'):\n"
            "    try:\n"
            "        __import__(name)\n"
            "    except ImportError:\n"
            "        continue\n"
            "    sys.exit(f'{name} is importable next to the light client')\n")
        result = _run(client_bin / "python", "-c", script, cwd=tmp_path)
        assert result.stdout.split() == ["2", "0", "0"]
        fixture_usage = json.loads(fixture.read_text())["usage"]
        text = process.metrics_text()
        assert _sum(text, "llm_tokens_total", tenant="light", token_type="input") == 1000 + fixture_usage["prompt_tokens"]
        assert _sum(text, "llm_token_details_total", tenant="light", token_type="cache_read") == \
            fixture_usage["prompt_tokens_details"]["cached_tokens"]
