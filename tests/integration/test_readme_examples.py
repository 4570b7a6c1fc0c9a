"""The README's examples work when pasted: the curl ingest example (with its current timestamp)
against a real exporter, and `make run`'s overrides and separate demo state file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.config import Config
from harness import REPO, ExporterProcess

README = (REPO / "README.md").read_text()


def _curl_example() -> str:
    blocks = re.findall(r"```sh\n(curl -s localhost:9477/v1/events .*?)```", README, re.S)
    assert len(blocks) == 1, "the README has one curl ingest example"
    return blocks[0]


def test_curl_example_is_accepted_whenever_pasted(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed: `make test` installs it (TEST_PACKAGES in the Makefile)")
    example = _curl_example()
    answers = [json.loads(line.lstrip("# ")) for line in example.splitlines() if line.startswith("# {")]
    with ExporterProcess(tmp_path) as exporter:
        script = example.replace("localhost:9477", f"127.0.0.1:{exporter.port}")
        first = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
        assert json.loads(first.stdout) == answers[0]
        again = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
        assert (json.loads(again.stdout)["accepted"], json.loads(again.stdout)["duplicates"]) == (0, 1)


def test_make_run_takes_port_and_host_and_keeps_demo_state_apart() -> None:
    dry = subprocess.run(["make", "-s", "-n", "run", "PORT=19477", "HOST=0.0.0.0"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    (line,) = [line for line in dry.splitlines() if "-m exporter" in line]
    assert "--web.listen-address=0.0.0.0:19477" in line and "--simulator.enabled=true" in line
    storage = re.search(r"--storage\.path=(\S+)", line).group(1)
    assert Path(storage) != Path(Config().storage_path), "the demo must not write the production default state"
