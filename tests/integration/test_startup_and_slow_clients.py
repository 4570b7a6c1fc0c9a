"""Start-up failures are one line and a non-zero exit (no traceback), "listening on" comes only after
the bind, and slow clients are cut off by the header and body timeouts; all on the real process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ExporterProcess, free_port, wait_until


def run(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *flags], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    assert lines[0].startswith("llm-usage-exporter: ") and all(n in lines[0] for n in needles), lines[0]
    assert "listening on" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [[], ["check-config"]])
def test_unusable_storage_paths_are_one_line(tmp_path, command):
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    (tmp_path / "ro").mkdir(mode=0o500)
    port = f"--web.listen-address=127.0.0.1:{free_port()}"
    cases = [("dir.db", "is a directory"), ("junk.db", "not a database"),
             ("/proc/no/such/state.db", "cannot create directory")]
    if not _is_root():  # root writes anywhere
        cases.append(("ro/state.db", "not writable"))
    for path, needle in cases:
        assert_one_line(run(tmp_path, *command, f"--storage.path={path}", port), "storage.path", needle)


def test_locked_store_and_port_in_use_are_one_line(tmp_path):
    with ExporterProcess(tmp_path / "first") as first:
        wait_until(lambda: "listening on" in first.log_path.read_text(), what="the listening-on line")
        locked = run(tmp_path, f"--storage.path={first.storage}", f"--web.listen-address=127.0.0.1:{free_port()}")
        assert_one_line(locked, "locked by another process")
        in_use = run(tmp_path, f"--storage.path={tmp_path / 'other.db'}", f"--web.listen-address=127.0.0.1:{first.port}")
        assert_one_line(in_use, "Address already in use")
        assert first.client.get("/healthz").status_code == 200


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def test_slow_headers_and_bodies_are_cut_off(tmp_path):
    with ExporterProcess(tmp_path, "--web.header-timeout=1s", "--web.body-timeout=1s") as exporter:
        trickle = socket.create_connection(("127.0.0.1", exporter.port))
        trickle.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        silent = socket.create_connection(("127.0.0.1", exporter.port))  # sends nothing at all
        slow_body = socket.create_connection(("127.0.0.1", exporter.port))
        slow_body.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{")
        for sock in (trickle, silent, slow_body):
            sock.settimeout(20)
        assert trickle.recv(100) == b"" and silent.recv(100) == b"", "closed by the header timeout"
        assert slow_body.recv(200).startswith(b"HTTP/1.1 408")
        assert exporter.client.get("/healthz").status_code == 200
        text = exporter.metrics_text()
        assert 'llm_exporter_rejections_total{reason="body_timeout",tenant=""} 1.0' in text
