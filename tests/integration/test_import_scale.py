"""The 1M-event import (bench/import_history.py) as a slow test: `make test-slow` runs it (~20 min on
two shared cores); `make test` runs the six-hour version in test_import.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import REPO, require_binary


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_one_million_events_then_live_without_reset(tmp_path):
    require_binary("promtool")
    result = subprocess.run([sys.executable, "bench/import_history.py", "--events", "1000000", "--days", "30",
                             "--workdir", str(tmp_path), "--json", str(tmp_path / "figures.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=3500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
